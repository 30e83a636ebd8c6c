"""Webhooks for admins: the page /admin/webhooks (webhooks and their latest deliveries) and the JSON delivery log
GET /api/v1/webhooks/{id}/deliveries (an API token or an admin's session). Registering and removing webhooks is the
operator's, on the command line (`talk webhook …`), where the signing secret is shown once."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from talk import webhooks
from talk.db import SESSIONMAKER_KEY
from talk.sessions import csrf_token
from talk.types import Role
from talk.webhooks import STATUSES, WebhookSummary
from web.auth import current_account, require_account
from web.calls_api import require_api_access
from web.http import ApiError

ADMIN_ROLES = frozenset({Role.ADMIN})
PAGE_DELIVERIES = 50
MAX_LIMIT = 200

# Our own page, server-rendered: no scripts at all, our own styles only.
ADMIN_PAGE_CSP = (
    "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; connect-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def webhook_json(hook: WebhookSummary) -> dict[str, Any]:
    return {"id": hook.id, "site": hook.site_key, "url": hook.url, "events": hook.events, "active": hook.active,
            "created_at": hook.created_at.isoformat(), "delivery_counts": hook.counts}


def _whole(value: str | None, name: str, low: int, high: int) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, "invalid_request", f"{name}: a whole number") from None
    if not low <= number <= high:
        raise ApiError(400, "invalid_request", f"{name}: from {low} to {high}")
    return number


def _status(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    if value not in STATUSES:
        raise ApiError(400, "invalid_request", f"status: one of {', '.join(STATUSES)}")
    return value


async def require_admin_reader(request: web.Request) -> None:
    """A Bearer API token, or the login session of an admin (reading only)."""
    if request.headers.get("Authorization"):
        await require_api_access(request)
        return
    account = await current_account(request)
    if account is None:
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer API_TOKEN' or log in as an admin")
    if account.role != Role.ADMIN:
        raise ApiError(403, "forbidden", "only admins see webhook deliveries")


async def webhook_deliveries(request: web.Request) -> web.Response:
    await require_admin_reader(request)
    webhook_id = _whole(request.match_info["webhook_id"], "id", 1, 2**31 - 1)
    status = _status(request.query.get("status"))
    limit = _whole(request.query.get("limit"), "limit", 1, MAX_LIMIT) or PAGE_DELIVERIES
    before = _whole(request.query.get("before"), "before", 1, 2**63 - 1)
    async with request.app[SESSIONMAKER_KEY]() as db:
        found = await webhooks.list_webhooks(db, webhook_id)
        if not found:
            raise ApiError(404, "not_found", "no webhook with this id")
        deliveries = await webhooks.list_deliveries(db, webhook_id, status, limit + 1, before)
    next_cursor = deliveries[limit - 1].id if len(deliveries) > limit else None
    return web.json_response({"webhook": webhook_json(found[0]),
                              "deliveries": [webhooks.delivery_json(d) for d in deliveries[:limit]],
                              "next_cursor": next_cursor})


async def admin_page(request: web.Request) -> web.Response:
    account = await require_account(request, ADMIN_ROLES)
    try:
        webhook_id = _whole(request.query.get("webhook"), "webhook", 1, 2**31 - 1)
        status = _status(request.query.get("status"))
    except ApiError as exc:
        raise web.HTTPBadRequest(text=exc.message) from None
    async with request.app[SESSIONMAKER_KEY]() as db:
        hooks = await webhooks.list_webhooks(db)
        deliveries = await webhooks.list_deliveries(db, webhook_id, status, PAGE_DELIVERIES)
    context = {"account": account, "csrf_token": await csrf_token(request), "webhooks": hooks,
               "deliveries": deliveries, "webhook_filter": webhook_id, "status_filter": status,
               "statuses": STATUSES}
    response = aiohttp_jinja2.render_template("admin_webhooks.html", request, context)
    response.headers["Content-Security-Policy"] = ADMIN_PAGE_CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"
    return response


def setup_webhooks_admin(app: web.Application) -> None:
    app.router.add_get("/admin/webhooks", admin_page)
    app.router.add_get(r"/api/v1/webhooks/{webhook_id}/deliveries", webhook_deliveries)
