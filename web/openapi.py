"""GET /api/v1/openapi.json: an OpenAPI 3.1 description of Talk's JSON APIs (docs/api.md is the prose).

Request bodies come from the same pydantic models the endpoints validate with, so the document cannot drift from
what is accepted; responses are described by hand. Served without authentication: it holds no data.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from analytics.reports import DESCRIPTIONS
from analytics.reports.filters import CHANNELS, DEFAULT_LIMIT, MAX_DAYS, MAX_LIMIT
from analytics.validation import BrowserConversion, EventBatch, ServerConversion, SurveyIn
from talk.sessions import SESSION_COOKIE
from talk.webhooks import STATUSES
from web.sellers_api import EndpointIn

REF = "#/components/schemas/{model}"
READERS = [{"apiToken": []}, {"session": []}]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _models(*models: type[BaseModel]) -> dict[str, Any]:
    """JSON Schemas of pydantic models, nested definitions hoisted into components (OpenAPI 3.1 is JSON Schema)."""
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): {"$ref": f"#/components/responses/E{status}"} for status in statuses}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", **({"pattern": pattern} if pattern else {})}
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


NULLABLE_TEXT = {"type": ["string", "null"]}
PAGE_SIZE = _query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Page size")
TIME = {"type": ["string", "null"], "format": "date-time"}

CALL = {
    "type": "object",
    "properties": {
        "id": {"type": "string"}, "site": {"type": "string"}, "queue": {"type": "string"},
        "agent": {"type": ["object", "null"], "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                                                              "email": {"type": "string"}}},
        "state": {"type": "string", "enum": ["queued", "ringing", "connected", "ended"]},
        "end_reason": NULLABLE_TEXT, "created_at": TIME, "ringing_at": TIME, "answered_at": TIME, "ended_at": TIME,
        "page": {"type": "object", "properties": {"url": NULLABLE_TEXT, "title": NULLABLE_TEXT}},
        "visitor_id": NULLABLE_TEXT, "session_id": NULLABLE_TEXT, "disposition": NULLABLE_TEXT,
        "landing_url": NULLABLE_TEXT,
    },
    "required": ["id", "site", "queue", "state", "created_at"],
}
PAGE = {"type": "object", "properties": {"ts": TIME, "url": {"type": "string"}, "path": {"type": "string"},
                                         "title": {"type": "string"}, "referrer": NULLABLE_TEXT,
                                         "time_on_page": {"type": ["number", "null"]}}}
CONVERSION = {"type": "object", "properties": {"order_id": {"type": "string"}, "value": {"type": "number"},
                                               "currency": {"type": "string"}, "ts": TIME}}
CALL_DETAIL = {
    "allOf": [_ref("Call"), {"type": "object", "properties": {
        "pages_before": {"type": "array", "items": _ref("Page")},
        "pages_after": {"type": "array", "items": _ref("Page")},
        "source": {"type": ["object", "null"]},
        "survey": {"type": ["object", "null"], "properties": {"rating": {"type": "integer"},
                                                              "comment": NULLABLE_TEXT, "created_at": TIME}},
        "conversions": {"type": "array", "items": _ref("Conversion")},
    }}],
}
ENDPOINT = {
    "type": "object",
    "properties": {name: NULLABLE_TEXT for name in (
        "token", "seller", "public_name", "site", "listing", "label", "created_at", "expires_at", "revoked_at",
        "call_url", "qr_svg", "qr_png")} | {"status": {"type": "string", "enum": ["active", "revoked", "expired"]}},
}
DELIVERY = {
    "type": "object",
    "properties": {"id": {"type": "integer"}, "webhook_id": {"type": "integer"}, "event_id": {"type": "string"},
                   "event_type": {"type": "string"}, "status": {"type": "string", "enum": list(STATUSES)},
                   "attempts": {"type": "integer"}, "last_status_code": {"type": ["integer", "null"]},
                   "last_error": NULLABLE_TEXT, "created_at": TIME, "next_attempt_at": TIME, "delivered_at": TIME,
                   "payload": {"type": "object"}},
}
CELL = {"type": ["string", "number", "integer", "boolean", "null"]}
REPORT = {
    "type": "object",
    "properties": {
        "report": {"type": "string", "enum": list(DESCRIPTIONS)},
        "filters": {"type": "object", "properties": {
            "from": {"type": "string", "format": "date"}, "to": {"type": "string", "format": "date"},
            "tz": {"type": "string"}, "site": NULLABLE_TEXT, "queue": NULLABLE_TEXT, "channel": NULLABLE_TEXT}},
        "attribution_days": {"type": "number"},
        "columns": {"type": "array", "items": {"type": "string"}},
        "rows": {"type": "array", "items": {"type": "object", "additionalProperties": CELL}},
        "totals": {"type": ["object", "null"], "additionalProperties": CELL},
    },
    "required": ["report", "filters", "columns", "rows"],
}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}

REPORT_PARAMETERS = [
    _query("from", {"type": "string", "format": "date"}, "First date (YYYY-MM-DD, in `tz`); default: `to` − 29 days."),
    _query("to", {"type": "string", "format": "date"},
           f"Last date, included; default today in `tz`. At most {MAX_DAYS} days from `from`."),
    _query("tz", {"type": "string", "default": "UTC"}, "IANA time zone of the dates, e.g. Europe/Berlin."),
    _query("site", {"type": "string"}, "Site key; 404 when there is no such site."),
    _query("queue", {"type": "string"}, "Queue name (on `site`, or on any site); 404 when there is none."),
    _query("channel", {"type": "string", "enum": list(CHANNELS)}, "Agent calls or masked seller calls."),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
           "Rows of the top-N reports (pages, sources, campaigns, landing pages, comments)."),
    _query("format", {"type": "string", "enum": ["json", "csv"], "default": "json"}, "JSON, or CSV with a header row."),
]


def _paths() -> dict[str, Any]:
    readers = {"security": READERS}
    return {
        "/healthz": {"get": {"summary": "Liveness", "security": [],
                             "responses": {"200": _json({"type": "object"}, "OK")}}},
        "/api/v1/events": {"post": {
            "summary": "Page views from the widget (CORS: the site's allowed origins)", "security": [],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("EventBatch")}}},
            "responses": {"202": _json({"type": "object", "properties": {"accepted": {"type": "integer"},
                                                                         "duplicates": {"type": "integer"}}},
                                       "Stored"), **_errors(400, 403, 404, 413, 415, 503)}}},
        "/api/v1/conversions": {"post": {
            "summary": "A purchase: from the browser (site, visitor_id) or server to server (Bearer SITE_SECRET)",
            "security": [{}, {"siteSecret": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "oneOf": [_ref("BrowserConversion"), _ref("ServerConversion")]}}}},
            "responses": {"201": _json({"type": "object"}, "Recorded"),
                          "200": _json({"type": "object"}, "Duplicate order_id: nothing changed"),
                          **_errors(400, 401, 403, 404, 413, 415)}}},
        "/api/v1/surveys/{call_id}": {
            "parameters": [_path("call_id", "The call (talk_call on the landing page)")],
            "get": {"summary": "The post-call survey's questions", "security": [],
                    "responses": {"200": _json({"type": "object"}, "The survey"), **_errors(403, 404)}},
            "post": {"summary": "Answer the survey", "security": [],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SurveyIn")}}},
                     "responses": {"201": _json({"type": "object"}, "Recorded"),
                                   **_errors(400, 403, 404, 409, 413, 415)}}},
        "/api/v1/calls": {"get": {
            "summary": "Calls, newest first, keyset-paginated", **readers,
            "parameters": [_query("from", {"type": "string"}, "ISO date or datetime (UTC when no zone), inclusive"),
                           _query("to", {"type": "string"}, "ISO date or datetime, exclusive"),
                           _query("queue", {"type": "string"}, "Queue name"),
                           _query("agent", {"type": "integer"}, "Account id"),
                           PAGE_SIZE,
                           _query("cursor", {"type": "string"}, "next_cursor of the previous page")],
            "responses": {"200": _json({"type": "object", "properties": {
                "calls": {"type": "array", "items": _ref("Call")}, "next_cursor": NULLABLE_TEXT}}, "A page of calls"),
                **_errors(400, 401)}}},
        "/api/v1/calls/{call_id}": {"get": {
            "summary": "One call with its journey, survey and conversions", **readers,
            "parameters": [_path("call_id", "Call id")],
            "responses": {"200": _json(_ref("CallDetail"), "The call"), **_errors(401, 404)}}},
        "/api/v1/endpoints": {
            "post": {"summary": "Create a masked seller endpoint (API token or admin session)", **readers,
                     "requestBody": {"required": True,
                                     "content": {"application/json": {"schema": _ref("EndpointIn")}}},
                     "responses": {"201": _json(_ref("Endpoint"), "Created"), **_errors(400, 401, 403, 404, 413, 415)}},
            "get": {"summary": "Masked endpoints, oldest first", **readers,
                    "parameters": [_query("seller", {"type": "string"}, "Seller e-mail")],
                    "responses": {"200": _json({"type": "object", "properties": {
                        "endpoints": {"type": "array", "items": _ref("Endpoint")}}}, "Endpoints"),
                        **_errors(400, 401, 403, 404)}}},
        "/api/v1/endpoints/{token}": {"delete": {
            "summary": "Revoke a masked endpoint for good", **readers, "parameters": [_path("token", "se_… token")],
            "responses": {"200": _json(_ref("Endpoint"), "Revoked"), **_errors(401, 403, 404)}}},
        "/api/v1/webhooks/{webhook_id}/deliveries": {"get": {
            "summary": "A webhook's delivery log, newest first (API token or admin session)", **readers,
            "parameters": [_path("webhook_id", "Webhook id", r"^[0-9]+$"),
                           _query("status", {"type": "string", "enum": list(STATUSES)}, "Only this status"),
                           PAGE_SIZE,
                           _query("before", {"type": "integer"}, "next_cursor of the previous page")],
            "responses": {"200": _json({"type": "object", "properties": {
                "webhook": {"type": "object"}, "deliveries": {"type": "array", "items": _ref("Delivery")},
                "next_cursor": {"type": ["integer", "null"]}}}, "Deliveries"), **_errors(400, 401, 403, 404)}}},
        "/api/v1/reports": {"get": {
            "summary": "The reports there are (API token, marketer or admin session)", **readers,
            "responses": {"200": _json({"type": "object", "properties": {"reports": {"type": "array", "items": {
                "type": "object", "properties": {"name": {"type": "string"}, "description": {"type": "string"}}}}}},
                "Report names"), **_errors(401, 403)}}},
        "/api/v1/reports/{name}": {"get": {
            "summary": "One report as JSON or CSV (columns and definitions: docs/api.md#reports)", **readers,
            "parameters": [{**_path("name", "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items())),
                            "schema": {"type": "string", "enum": list(DESCRIPTIONS)}}, *REPORT_PARAMETERS],
            "responses": {"200": {"description": "The report", "content": {
                "application/json": {"schema": _ref("Report")},
                "text/csv": {"schema": {"type": "string"}}}}, **_errors(400, 401, 403, 404)}}},
        "/api/v1/openapi.json": {"get": {"summary": "This document", "security": [],
                                         "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}},
    }


def openapi_document() -> dict[str, Any]:
    messages = {400: "Bad request", 401: "Missing or wrong credentials", 403: "Not allowed for this origin or role",
                404: "Not found", 409: "Conflict", 413: "Body too large", 415: "Unsupported media type",
                503: "Overloaded; retry after Retry-After seconds"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Talk API", "version": "1",
                 "description": "Browser calls inside the online journey: page views, conversions, surveys, calls, "
                                "masked seller endpoints, webhook deliveries and reports. Errors are "
                                "{\"error\": {\"code\", \"message\"}}."},
        "servers": [{"url": "/"}],
        "security": READERS,
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "apiToken": {"type": "http", "scheme": "bearer", "description": "An API token (`talk token create`)"},
                "siteSecret": {"type": "http", "scheme": "bearer",
                               "description": "A site's secret (`talk site create`): server-side conversions only"},
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                            "description": "A logged-in marketer's or admin's session (admin only for endpoints "
                                           "and webhooks)"},
            },
            "schemas": {**_models(EventBatch, BrowserConversion, ServerConversion, SurveyIn, EndpointIn),
                        "Call": CALL, "CallDetail": CALL_DETAIL, "Page": PAGE, "Conversion": CONVERSION,
                        "Endpoint": ENDPOINT, "Delivery": DELIVERY, "Report": REPORT, "Error": ERROR},
            "responses": {f"E{status}": _json(_ref("Error"), text) for status, text in messages.items()},
        },
    }


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI_KEY])


OPENAPI_KEY = web.AppKey("openapi_document", dict)


def setup_openapi(app: web.Application) -> None:
    app[OPENAPI_KEY] = openapi_document()
    app.router.add_get("/api/v1/openapi.json", get_openapi)
