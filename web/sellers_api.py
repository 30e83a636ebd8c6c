"""The masked endpoint API: create, list and revoke sellers' endpoints (docs/api.md). For an API token or an admin."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from signaling.socket import own_origin
from talk import directory, sellers
from talk.db import SESSIONMAKER_KEY
from talk.directory import DirectoryError, normalize_origin, utcnow
from talk.sellers import EndpointSummary, NotFound
from talk.types import Role
from web.auth import current_account
from web.callpage import call_page_url
from web.calls_api import require_api_access
from web.http import ApiError, parse, read_json

BODY_MAX_BYTES = 4 * 1024


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    seller: str = Field(min_length=3, max_length=254)
    site: str = Field(min_length=1, max_length=64)
    listing: str | None = Field(None, max_length=sellers.MAX_TEXT)
    label: str | None = Field(None, max_length=sellers.MAX_TEXT)
    expires_at: str | None = Field(None, min_length=10, max_length=40)


async def require_admin_api(request: web.Request) -> None:
    """A Bearer API token (as for the call API), or the login session of an admin. A session's writes must come
    from our own pages (Origin), on top of the session cookie's SameSite=Lax."""
    if request.headers.get("Authorization"):
        await require_api_access(request)
        return
    account = await current_account(request)
    if account is None:
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer API_TOKEN' or log in as an admin")
    if account.role != Role.ADMIN:
        raise ApiError(403, "forbidden", "only admins manage masked endpoints")
    if request.method not in ("GET", "HEAD"):
        try:
            origin = normalize_origin(request.headers.get("Origin", ""))
        except DirectoryError:
            origin = None
        if origin != own_origin(request):
            raise ApiError(403, "forbidden_origin", "with a login session, send changes from this server's pages")


def endpoint_json(request: web.Request, endpoint: EndpointSummary, now: datetime) -> dict[str, Any]:
    url = call_page_url(request, endpoint.token)
    return {
        "token": endpoint.token, "status": endpoint.status(now), "seller": endpoint.seller_email,
        "public_name": endpoint.seller_public_name, "site": endpoint.site_key, "listing": endpoint.listing,
        "label": endpoint.label, "created_at": endpoint.created_at.isoformat(),
        "expires_at": endpoint.expires_at.isoformat() if endpoint.expires_at else None,
        "revoked_at": endpoint.revoked_at.isoformat() if endpoint.revoked_at else None,
        "call_url": url, "qr_svg": f"{url}.svg", "qr_png": f"{url}.png",
    }


async def create_endpoint(request: web.Request) -> web.Response:
    await require_admin_api(request)
    body = parse(EndpointIn, await read_json(request, BODY_MAX_BYTES))
    now = utcnow()
    async with request.app[SESSIONMAKER_KEY]() as db, db.begin():
        if await directory.load_site(db, body.site) is None:
            raise ApiError(404, "not_found", "site: unknown site key")
        try:
            expires_at = sellers.parse_expiry(body.expires_at) if body.expires_at else None
            endpoint = await sellers.create_endpoint(db, body.seller, body.site, listing=body.listing,
                                                     label=body.label, expires_at=expires_at, now=now)
        except NotFound as exc:
            raise ApiError(404, "not_found", f"seller: {exc}") from None
        except DirectoryError as exc:  # InvalidField: the message starts with the field's name
            raise ApiError(400, "invalid_request", str(exc)) from None
        summary = await sellers.endpoint_summary(db, endpoint.token)
    return web.json_response(endpoint_json(request, summary, now), status=201)


async def list_endpoints(request: web.Request) -> web.Response:
    await require_admin_api(request)
    seller = request.query.get("seller") or None
    if seller is not None and len(seller) > 254:
        raise ApiError(400, "invalid_request", "seller: at most 254 characters")
    now = utcnow()
    async with request.app[SESSIONMAKER_KEY]() as db:
        try:
            found = await sellers.list_endpoints(db, seller)
        except NotFound as exc:
            raise ApiError(404, "not_found", f"seller: {exc}") from None
        except DirectoryError as exc:
            raise ApiError(400, "invalid_request", str(exc)) from None
    return web.json_response({"endpoints": [endpoint_json(request, e, now) for e in found]})


async def revoke_endpoint(request: web.Request) -> web.Response:
    await require_admin_api(request)
    now = utcnow()
    async with request.app[SESSIONMAKER_KEY]() as db, db.begin():
        try:
            endpoint = await sellers.revoke_endpoint(db, request.match_info["token"], now)
        except NotFound:
            raise ApiError(404, "not_found", "no masked endpoint with this token") from None
        summary = await sellers.endpoint_summary(db, endpoint.token)
    return web.json_response(endpoint_json(request, summary, now))


def setup_sellers_api(app: web.Application) -> None:
    app.router.add_post("/api/v1/endpoints", create_endpoint)
    app.router.add_get("/api/v1/endpoints", list_endpoints)
    app.router.add_delete("/api/v1/endpoints/{token}", revoke_endpoint)
