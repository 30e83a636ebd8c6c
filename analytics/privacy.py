"""Privacy operations: forgetting a visitor on request, and the retention limit on everything about visitors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from talk.models import CallRecord, Conversion, PageEvent, SurveyAnswer

log = logging.getLogger(__name__)

RETENTION_EVERY = timedelta(hours=6)


async def forget_visitor(db: AsyncSession, visitor_id: str) -> dict[str, int]:
    """Delete every row about the visitor: page views, purchases, survey answers and calls."""
    calls = select(CallRecord.id).where(CallRecord.visitor_id == visitor_id)
    counts = {
        "survey_answers": (await db.execute(delete(SurveyAnswer).where(SurveyAnswer.call_id.in_(calls)))).rowcount,
        "calls": (await db.execute(delete(CallRecord).where(CallRecord.visitor_id == visitor_id))).rowcount,
        "events": (await db.execute(delete(PageEvent).where(PageEvent.visitor_id == visitor_id))).rowcount,
        "conversions": (await db.execute(delete(Conversion).where(Conversion.visitor_id == visitor_id))).rowcount,
    }
    return counts


async def enforce_retention(db: AsyncSession, now: datetime, keep: timedelta) -> dict[str, int]:
    """Delete what is older than the retention period (calls by their creation, the rest by their time)."""
    cutoff = now - keep
    old_calls = select(CallRecord.id).where(CallRecord.created_at < cutoff)
    return {
        "survey_answers": (await db.execute(delete(SurveyAnswer).where(SurveyAnswer.call_id.in_(old_calls)))).rowcount,
        "calls": (await db.execute(delete(CallRecord).where(CallRecord.created_at < cutoff))).rowcount,
        "events": (await db.execute(delete(PageEvent).where(PageEvent.ts < cutoff))).rowcount,
        "conversions": (await db.execute(delete(Conversion).where(Conversion.ts < cutoff))).rowcount,
    }


async def retention_job(sessionmaker: async_sessionmaker[AsyncSession], keep: timedelta) -> None:
    """Runs for the life of the server: once at start, then every few hours."""
    while True:
        try:
            async with sessionmaker() as db, db.begin():
                counts = await enforce_retention(db, datetime.now(timezone.utc), keep)
            if any(counts.values()):
                log.info("retention: deleted %s", counts)
        except Exception:
            log.exception("retention job failed; trying again later")
        await asyncio.sleep(RETENTION_EVERY.total_seconds())


def retention_ctx(sessionmaker_of, keep: timedelta):
    async def ctx(app) -> AsyncIterator[None]:
        task = asyncio.create_task(retention_job(sessionmaker_of(app), keep), name="retention")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return ctx
