"""Browser and site endpoints of the journey: page events, conversions, post-call surveys (docs/api.md)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from aiohttp import web

from analytics import EVENT_WRITER_KEY, IP_HASHER_KEY
from analytics.conversions import record_conversion
from analytics.ingest import Overloaded, event_rows
from analytics.surveys import SurveyError, submit_survey, survey_form
from analytics.validation import BrowserConversion, EventBatch, ServerConversion, SurveyIn
from talk import directory, webhooks
from talk.db import SESSIONMAKER_KEY
from talk.models import CallRecord
from talk.settings import SETTINGS_KEY
from talk.webhook_dispatcher import WEBHOOKS_KEY
from web.http import SITE_CACHE_KEY, ApiError, allow_origin, cors_json, parse, preflight, read_json

log = logging.getLogger(__name__)

EVENTS_MAX_BYTES = 32 * 1024
SMALL_MAX_BYTES = 4 * 1024


def _now() -> datetime:
    return datetime.now(timezone.utc)


async def _site_of(request: web.Request, data: dict):
    key = data.get("site")
    if not isinstance(key, str) or not key:
        raise ApiError(400, "invalid_request", "site: the site key is required")
    return await request.app[SITE_CACHE_KEY].get(request, key[:64])


async def post_events(request: web.Request) -> web.Response:
    if request.app[EVENT_WRITER_KEY].overloaded:
        # Refused before any work (reading, parsing, validating). The site isn't known yet, so any origin may read
        # this refusal (it reveals nothing, and the widget sends no credentials): its retry needs the status.
        raise ApiError(503, "overloaded", "too many events are waiting to be written",
                       {"Retry-After": "1", "Access-Control-Allow-Origin": "*",
                        "Access-Control-Expose-Headers": "Retry-After"})
    data = await read_json(request, EVENTS_MAX_BYTES)
    site = await _site_of(request, data)
    allow_origin(request, site)
    batch = parse(EventBatch, data)
    received_at = _now()
    ip_hash = request.app[IP_HASHER_KEY](request.remote, site.id, received_at)
    rows = event_rows(batch, site.id, received_at, ip_hash)
    try:
        new = await request.app[EVENT_WRITER_KEY].write(rows)
    except Overloaded as exc:
        raise ApiError(503, "overloaded", str(exc), {"Retry-After": "1"}) from None
    except Exception:
        raise ApiError(503, "overloaded", "the events could not be stored; try again", {"Retry-After": "5"}) from None
    return cors_json(request, {"accepted": new, "duplicates": len(rows) - new}, status=202)


async def post_conversion(request: web.Request) -> web.Response:
    data = await read_json(request, SMALL_MAX_BYTES)
    if request.headers.get("Authorization"):
        site_id, visitor_id, conversion = await _server_conversion(request, data)
    else:
        site = await _site_of(request, data)
        allow_origin(request, site)
        conversion = parse(BrowserConversion, data)
        site_id, visitor_id = site.id, conversion.visitor_id
    ts, origin = _now(), "server" if "cors_origin" not in request else "browser"
    queued = 0
    async with request.app[SESSIONMAKER_KEY]() as db, db.begin():
        recorded = await record_conversion(
            db, site_id=site_id, visitor_id=visitor_id, order_id=conversion.order_id, value=float(conversion.value),
            currency=conversion.currency, ts=ts, origin=origin)
        if recorded:  # the webhook event commits with the purchase, or neither does
            queued = await webhooks.enqueue_conversion_attributed(
                db, site_id=site_id, visitor_id=visitor_id, order_id=conversion.order_id,
                value=float(conversion.value), currency=conversion.currency, ts=ts, origin=origin,
                window=timedelta(days=request.app[SETTINGS_KEY].attribution_days))
    if queued:
        request.app[WEBHOOKS_KEY].wake()
    body, status = ({"status": "recorded"}, 201) if recorded else ({"status": "duplicate"}, 200)
    return cors_json(request, body, status) if "cors_origin" in request else web.json_response(body, status=status)


async def _server_conversion(request: web.Request, data: dict) -> tuple[int, str, ServerConversion]:
    scheme, _, secret = request.headers["Authorization"].partition(" ")
    async with request.app[SESSIONMAKER_KEY]() as db:
        site = await directory.site_by_secret(db, secret.strip()) if scheme.lower() == "bearer" else None
        if site is None:
            raise ApiError(401, "unauthorized", "Authorization must be 'Bearer SITE_SECRET'")
        conversion = parse(ServerConversion, data)
        visitor_id = conversion.visitor_id
        if conversion.call_id:
            call = await db.get(CallRecord, conversion.call_id)
            if call is None or call.site_id != site.id:
                raise ApiError(404, "not_found", "no call with this id on this site")
            visitor_id = call.visitor_id
    if not visitor_id:
        raise ApiError(400, "invalid_request", "visitor_id or call_id: one of them is required")
    return site.id, visitor_id, conversion


async def _survey_site_check(request: web.Request, call_id: str, reading: bool = False) -> None:
    async with request.app[SESSIONMAKER_KEY]() as db:
        call = await db.get(CallRecord, call_id[:40])
        site_key = (await directory.site_key_of(db, call.site_id)) if call else None
    if site_key is None:
        raise ApiError(404, "not_found", "no connected call with this id")
    allow_origin(request, await request.app[SITE_CACHE_KEY].get(request, site_key), same_origin_get=reading)


async def get_survey(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    await _survey_site_check(request, call_id, reading=True)
    async with request.app[SESSIONMAKER_KEY]() as db:
        try:
            form = await survey_form(db, call_id)
        except SurveyError as exc:
            raise ApiError(404, exc.code, str(exc)) from None
    questions = {"rating": form.rating_question, "comment": form.comment_question}
    return cors_json(request, {"call_id": call_id, "answered": form.answered, "questions": questions})


async def post_survey(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    await _survey_site_check(request, call_id)
    answer = parse(SurveyIn, await read_json(request, SMALL_MAX_BYTES))
    try:
        async with request.app[SESSIONMAKER_KEY]() as db, db.begin():
            await submit_survey(db, call_id, answer.rating, answer.comment, _now())
            queued = await webhooks.enqueue_survey_submitted(db, call_id)  # commits with the answer
    except SurveyError as exc:
        raise ApiError(409 if exc.code == "conflict" else 404, exc.code, str(exc)) from None
    if queued:
        request.app[WEBHOOKS_KEY].wake()
    return cors_json(request, {"status": "recorded"}, status=201)


def setup_journey_api(app: web.Application) -> None:
    router = app.router
    router.add_post("/api/v1/events", post_events)
    router.add_post("/api/v1/conversions", post_conversion)
    router.add_get("/api/v1/surveys/{call_id}", get_survey)
    router.add_post("/api/v1/surveys/{call_id}", post_survey)
    for path in ("/api/v1/events", "/api/v1/conversions", "/api/v1/surveys/{call_id}"):
        router.add_route("OPTIONS", path, preflight)
