"""The call API: one call with its journey, survey and conversions; and a filtered, paginated list of calls."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from analytics import journey
from talk.apitokens import check_token
from talk.db import SESSIONMAKER_KEY
from talk.models import Account, CallRecord, Queue, Site, SurveyAnswer
from talk.settings import SETTINGS_KEY
from talk.types import Role
from web.auth import current_account
from web.http import ApiError

REPORT_ROLES = frozenset({Role.MARKETER, Role.ADMIN})
MAX_LIMIT = 200


async def require_api_access(request: web.Request) -> None:
    """A Bearer API token, or the login session of a marketer or admin."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        async with request.app[SESSIONMAKER_KEY]() as db, db.begin():
            if scheme.lower() != "bearer" or await check_token(db, token.strip()) is None:
                raise ApiError(401, "unauthorized", "unknown API token")
        return
    account = await current_account(request)
    if account is None or account.role not in REPORT_ROLES:
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer API_TOKEN' or log in as a marketer")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _call_json(call: CallRecord, site_key: str, queue_name: str, agent: Account | None) -> dict[str, Any]:
    return {
        "id": call.id, "site": site_key, "queue": queue_name,
        "agent": {"id": agent.id, "name": agent.name, "email": agent.email} if agent else None,
        "state": call.state, "end_reason": call.end_reason, "created_at": _iso(call.created_at),
        "ringing_at": _iso(call.ringing_at), "answered_at": _iso(call.answered_at), "ended_at": _iso(call.ended_at),
        "page": {"url": call.page_url, "title": call.page_title}, "visitor_id": call.visitor_id if call.has_journey else None,
        "session_id": call.session_id, "disposition": call.disposition, "landing_url": call.landing_url,
    }


def _calls_query():
    return (select(CallRecord, Site.key, Queue.name, Account)
            .join(Site, Site.id == CallRecord.site_id).join(Queue, Queue.id == CallRecord.queue_id)
            .outerjoin(Account, Account.id == CallRecord.agent_id))


async def _detail(db: AsyncSession, call: CallRecord, window: timedelta) -> dict[str, Any]:
    survey = await db.get(SurveyAnswer, call.id)
    return {
        "pages_before": await journey.pages_before(db, call),
        "pages_after": await journey.pages_after(db, call, window),
        "source": await journey.session_source(db, call),
        "survey": {"rating": survey.rating, "comment": survey.comment, "created_at": _iso(survey.created_at)}
        if survey else None,
        "conversions": await journey.conversions_after(db, call, window),
    }


async def get_call(request: web.Request) -> web.Response:
    await require_api_access(request)
    window = timedelta(days=request.app[SETTINGS_KEY].attribution_days)
    async with request.app[SESSIONMAKER_KEY]() as db:
        row = (await db.execute(_calls_query().where(CallRecord.id == request.match_info["call_id"][:40]))).first()
        if row is None:
            raise ApiError(404, "not_found", "no call with this id")
        body = {**_call_json(*row), **await _detail(db, row[0], window)}
    return web.json_response(body)


def _datetime(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise ApiError(400, "invalid_request", f"{name}: not an ISO date or datetime") from None


def _cursor(value: str | None) -> tuple[datetime, str] | None:
    if not value:
        return None
    try:
        created, call_id = json.loads(base64.urlsafe_b64decode(value.encode()))
        created = datetime.fromisoformat(created)
        if created.tzinfo is None:
            raise ValueError("cursor without a time zone")
        return created, str(call_id)
    except (ValueError, TypeError, OverflowError):
        raise ApiError(400, "invalid_request", "cursor: not a cursor from this API") from None


async def list_calls(request: web.Request) -> web.Response:
    await require_api_access(request)
    query = request.query
    try:
        limit = int(query.get("limit", 50))
        agent = int(query["agent"]) if query.get("agent") else None
    except ValueError:
        raise ApiError(400, "invalid_request", "limit and agent must be whole numbers") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "invalid_request", f"limit: from 1 to {MAX_LIMIT}")
    if agent is not None and not 1 <= agent < 2**31:
        raise ApiError(400, "invalid_request", "agent: not an account id")
    statement = _calls_query()
    if (start := _datetime(query.get("from"), "from")) is not None:
        statement = statement.where(CallRecord.created_at >= start)
    if (end := _datetime(query.get("to"), "to")) is not None:
        statement = statement.where(CallRecord.created_at < end)
    if query.get("queue"):
        statement = statement.where(Queue.name == query["queue"][:64])
    if agent is not None:
        statement = statement.where(CallRecord.agent_id == agent)
    if (after := _cursor(query.get("cursor"))) is not None:  # keyset pagination: stable while calls come in
        created, call_id = after
        statement = statement.where(or_(CallRecord.created_at < created,
                                        and_(CallRecord.created_at == created, CallRecord.id < call_id)))
    statement = statement.order_by(CallRecord.created_at.desc(), CallRecord.id.desc()).limit(limit + 1)
    async with request.app[SESSIONMAKER_KEY]() as db:
        rows = (await db.execute(statement)).all()
    calls = [_call_json(*row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1][0]
        next_cursor = base64.urlsafe_b64encode(json.dumps([last.created_at.isoformat(), last.id]).encode()).decode()
    return web.json_response({"calls": calls, "next_cursor": next_cursor})


def setup_calls_api(app: web.Application) -> None:
    app.router.add_get("/api/v1/calls", list_calls)
    app.router.add_get("/api/v1/calls/{call_id}", get_call)
