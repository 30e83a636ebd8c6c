"""JSON API plumbing shared by the endpoints: error bodies, bounded body reading, CORS for sites' origins."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from analytics.validation import first_error
from talk import directory
from talk.db import SESSIONMAKER_KEY
from signaling.socket import own_origin
from talk.directory import DirectoryError, SiteInfo, normalize_origin

log = logging.getLogger(__name__)

JSON_TYPES = frozenset({"application/json", "text/plain"})
SITE_CACHE_SECONDS = 30.0


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(error: ApiError) -> web.Response:
    return web.json_response({"error": {"code": error.code, "message": error.message}}, status=error.status,
                             headers=error.headers)


@web.middleware
async def api_errors(request: web.Request, handler):
    """Domain errors become JSON errors at the edge (only for /api/ paths)."""
    try:
        return await handler(request)
    except ApiError as error:
        if not request.path.startswith("/api/"):
            raise
        response = error_response(error)
    except web.HTTPException:
        raise
    except Exception:
        if not request.path.startswith("/api/"):
            raise
        log.exception("API request failed: %s %s", request.method, request.path)
        response = error_response(ApiError(500, "internal_error", "the server could not handle this request"))
    cors_origin = request.get("cors_origin")
    if cors_origin:
        _cors_headers(response, cors_origin)
    return response


async def read_json(request: web.Request, limit: int) -> dict[str, Any]:
    if request.content_type not in JSON_TYPES:
        raise ApiError(415, "unsupported_media_type", "send JSON as application/json or text/plain")
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too_large", f"the body may have at most {limit} bytes")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise ApiError(413, "too_large", f"the body may have at most {limit} bytes")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return data


def parse(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "invalid_request", first_error(exc)) from None


class SiteCache:
    """Sites by key, read from the database at most every 30 s, so ingestion does not query per request.

    One load per key at a time: concurrent requests for a key being loaded await that load, and an expired entry is
    served while it reloads in the background (otherwise every request in flight at expiry queries the database)."""

    def __init__(self) -> None:
        self._sites: dict[str, tuple[float, SiteInfo | None]] = {}
        self._loading: dict[str, asyncio.Task] = {}

    async def get(self, request: web.Request, key: str) -> SiteInfo:
        cached = self._sites.get(key)
        if cached is None:
            cached = await asyncio.shield(self._load(request.app, key))  # one cancelled request stops no load
        elif time.monotonic() - cached[0] > SITE_CACHE_SECONDS:
            self._load(request.app, key)
        if cached[1] is None:
            raise ApiError(404, "not_found", "unknown site key")
        return cached[1]

    def _load(self, app: web.Application, key: str) -> asyncio.Task:
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(self._read(app, key))
            self._loading[key] = task
            task.add_done_callback(lambda done: self._loaded(key, done))
        return task

    def _loaded(self, key: str, task: asyncio.Task) -> None:
        self._loading.pop(key, None)
        if not task.cancelled() and task.exception() is not None:  # a refresh nobody awaited: say why, keep stale
            log.error("could not load site %r", key, exc_info=task.exception())

    async def _read(self, app: web.Application, key: str) -> tuple[float, SiteInfo | None]:
        async with app[SESSIONMAKER_KEY]() as db:
            entry = (time.monotonic(), await directory.load_site(db, key))
        if len(self._sites) > 10_000:  # unknown keys must not grow it without bound
            self._sites.clear()
        self._sites[key] = entry
        return entry


SITE_CACHE_KEY = web.AppKey("site_cache", SiteCache)


def allow_origin(request: web.Request, site: SiteInfo, same_origin_get: bool = False) -> str | None:
    """The browser's origin when the site allows it; 403 otherwise. Marks the response for CORS headers.
    Browsers send no Origin on a same-origin GET, so with `same_origin_get` such a read (Sec-Fetch-Site:
    same-origin) counts as coming from our own origin, which the site must still allow."""
    if same_origin_get and "Origin" not in request.headers and request.headers.get("Sec-Fetch-Site") == "same-origin":
        if own_origin(request) not in site.allowed_origins:
            raise ApiError(403, "forbidden_origin", "this origin is not allowed for the site")
        return None
    try:
        origin = normalize_origin(request.headers.get("Origin", ""))
    except DirectoryError:
        origin = None
    # Our own origin serves every site's standalone call pages (/c/<token>): their page views count too.
    if origin is None or (origin not in site.allowed_origins and origin != own_origin(request)):
        raise ApiError(403, "forbidden_origin", "this origin is not allowed for the site")
    request["cors_origin"] = request.headers["Origin"]
    return origin


def _cors_headers(response: web.StreamResponse, origin: str) -> None:
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = "Retry-After"
    response.headers["Vary"] = "Origin"


def cors_json(request: web.Request, data: Any, status: int = 200) -> web.Response:
    response = web.json_response(data, status=status)
    if "cors_origin" in request:
        _cors_headers(response, request["cors_origin"])
    return response


async def preflight(request: web.Request) -> web.Response:
    """CORS preflight: the site is not known yet (no body), so any site's allowed origin may ask; the real request
    is checked against its own site."""
    origin = request.headers.get("Origin", "")
    async with request.app[SESSIONMAKER_KEY]() as db:
        allowed = await directory.origin_is_allowed_anywhere(db, origin)
    if not allowed:
        return web.Response(status=403)
    response = web.Response(status=204)
    _cors_headers(response, origin)
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = "Content-Type"
    response.headers["Access-Control-Max-Age"] = "86400"
    return response
