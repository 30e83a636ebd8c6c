"""Stitching calls to journeys: the caller's pages before the call, after it, the traffic source, earlier calls.

Computed from the events when asked, never copied onto the call, so a late event or a changed window is always
reflected. Only calls made with the visitor's consent (has_journey) are joined to page views.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from analytics.sources import classify_source
from talk.models import Account, CallRecord, Conversion, PageEvent

MAX_PAGES = 200
EARLIER_CALLS = 10


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _pages(events: list[PageEvent], last_until: datetime | None) -> list[dict[str, Any]]:
    """Page views with time on page: until the next page, and for the last one until `last_until` if given."""
    pages = []
    for index, event in enumerate(events):
        following = events[index + 1].ts if index + 1 < len(events) else last_until
        seconds = round((following - event.ts).total_seconds(), 1) if following else None
        pages.append({"ts": _iso(event.ts), "url": event.url, "path": event.path, "title": event.title,
                      "referrer": event.referrer, "time_on_page": seconds})
    return pages


async def _session_events(db: AsyncSession, site_id: int, session_id: str, until: datetime) -> list[PageEvent]:
    rows = await db.scalars(
        select(PageEvent)
        .where(PageEvent.site_id == site_id, PageEvent.session_id == session_id, PageEvent.ts <= until)
        .order_by(PageEvent.ts.desc(), PageEvent.id.desc())
        .limit(MAX_PAGES)
    )
    return list(reversed(rows.all()))


async def pages_before(db: AsyncSession, call: CallRecord) -> list[dict[str, Any]]:
    if not call.has_journey or not call.session_id:
        return []
    events = await _session_events(db, call.site_id, call.session_id, call.created_at)
    return _pages(events, call.created_at)


async def pages_after(db: AsyncSession, call: CallRecord, window: timedelta) -> list[dict[str, Any]]:
    if not call.has_journey or call.ended_at is None:
        return []
    rows = await db.scalars(
        select(PageEvent)
        .where(PageEvent.site_id == call.site_id, PageEvent.visitor_id == call.visitor_id,
               PageEvent.ts > call.ended_at, PageEvent.ts <= call.ended_at + window,
               # The landing page Talk sent the caller to is the call's outcome (landing_url), not a page they chose.
               PageEvent.url.not_like(f"%talk_call={call.id}%"))
        .order_by(PageEvent.ts, PageEvent.id)
        .limit(MAX_PAGES)
    )
    return _pages(list(rows), None)


async def session_source(db: AsyncSession, call: CallRecord) -> dict[str, Any] | None:
    if not call.has_journey or not call.session_id:
        return None
    first = await db.scalar(
        select(PageEvent)
        .where(PageEvent.site_id == call.site_id, PageEvent.session_id == call.session_id)
        .order_by(PageEvent.ts, PageEvent.id)
        .limit(1)
    )
    if first is None:
        return None
    utm = {"source": first.utm_source, "medium": first.utm_medium, "campaign": first.utm_campaign}
    return classify_source(first.url, first.referrer, utm, first.click_id_type)


async def earlier_calls(db: AsyncSession, call: CallRecord) -> list[dict[str, Any]]:
    if not call.has_journey:
        return []
    rows = await db.execute(
        select(CallRecord.id, CallRecord.created_at, CallRecord.end_reason, Account.name)
        .outerjoin(Account, Account.id == CallRecord.agent_id)
        .where(CallRecord.site_id == call.site_id, CallRecord.visitor_id == call.visitor_id,
               CallRecord.created_at < call.created_at, CallRecord.id != call.id)
        .order_by(CallRecord.created_at.desc())
        .limit(EARLIER_CALLS)
    )
    return [{"call_id": r.id, "created_at": _iso(r.created_at), "end_reason": r.end_reason, "agent": r.name}
            for r in rows]


async def conversions_after(db: AsyncSession, call: CallRecord, window: timedelta) -> list[dict[str, Any]]:
    """The visitor's purchases attributed to this call: within the window after the call ended."""
    if call.ended_at is None:
        return []
    rows = await db.scalars(
        select(Conversion)
        .where(Conversion.site_id == call.site_id, Conversion.visitor_id == call.visitor_id,
               Conversion.ts > call.ended_at, Conversion.ts <= call.ended_at + window)
        .order_by(Conversion.ts)
    )
    return [{"order_id": c.order_id, "value": c.value, "currency": c.currency, "ts": _iso(c.ts)} for c in rows]


async def console_journey(db: AsyncSession, call: CallRecord) -> dict[str, Any]:
    """What the agent sees while the call rings: pages before, source, earlier calls."""
    return {
        "pages": await pages_before(db, call),
        "source": await session_source(db, call),
        "earlier_calls": await earlier_calls(db, call),
    }
