"""One call from start to finish, for the dashboard's call view: the pages before it, the call itself (created,
ringing, answered, ended; wait, talk, outcome, disposition), where Talk sent the caller, the survey, the pages after
it and the purchases attributed to it. The journey parts are analytics/journey.py's (the call API's rules)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from analytics import journey
from analytics.reports.base import ABANDONED_REASONS, MISSED_REASONS
from talk.models import Account, CallRecord, Queue, Site, SurveyAnswer


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def outcome(call: CallRecord) -> str | None:
    """answered, abandoned or missed (analytics/reports/base.py); None while the call is in progress."""
    if call.answered_at is not None:
        return "answered"
    if call.end_reason in ABANDONED_REASONS:
        return "abandoned"
    if call.end_reason in MISSED_REASONS:
        return "missed"
    return None


async def call_timeline(db: AsyncSession, call_id: str, window: timedelta) -> dict[str, Any] | None:
    """Everything about one call in time order; None for an unknown call id."""
    call = await db.get(CallRecord, call_id[:40])
    if call is None:
        return None
    site = await db.get(Site, call.site_id)
    queue = await db.get(Queue, call.queue_id)
    person_id = call.agent_id or (queue.seller_id if queue else None)
    person = await db.get(Account, person_id) if person_id else None
    survey = await db.get(SurveyAnswer, call.id)
    return {
        "call_id": call.id, "site": site.key if site else None, "queue": queue.name if queue else None,
        "channel": call.channel, "listing": call.listing,
        "person": {"id": person.id, "name": person.name, "role": person.role} if person else None,
        "visitor_id": call.visitor_id if call.has_journey else None,
        "source": await journey.session_source(db, call),
        "pages_before": await journey.pages_before(db, call),
        "call": {
            "page": {"url": call.page_url, "title": call.page_title, "referrer": call.page_referrer},
            "created_at": _iso(call.created_at), "ringing_at": _iso(call.ringing_at),
            "answered_at": _iso(call.answered_at), "ended_at": _iso(call.ended_at),
            "wait_seconds": _seconds(call.created_at, call.answered_at),
            "talk_seconds": _seconds(call.answered_at, call.ended_at),
            "state": call.state, "end_reason": call.end_reason, "outcome": outcome(call),
            "disposition": call.disposition,
        },
        "landing_url": call.landing_url,
        "survey": {"rating": survey.rating, "comment": survey.comment, "created_at": _iso(survey.created_at)}
        if survey else None,
        "pages_after": await journey.pages_after(db, call, window),
        "conversions": await journey.conversions_after(db, call, window),
    }
