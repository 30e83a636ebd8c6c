"""Privacy operations: forgetting a visitor on request, and the retention limit on everything about visitors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from analytics import visitordays
from talk.models import CallRecord, Conversion, EndpointRefusal, PageEvent, SurveyAnswer, Voicemail
from talk import webhooks
from talk.voicemails import check_file_name

log = logging.getLogger(__name__)

RETENTION_EVERY = timedelta(hours=6)


async def forget_visitor(db: AsyncSession, visitor_id: str, voicemail_folder: Path | None = None) -> dict[str, int]:
    """Delete every row about the visitor: page views, purchases, survey answers, calls and their voicemails (rows
    and recordings), and their attempts on dead seller links."""
    await visitordays.lock_rollup(db)
    calls = select(CallRecord.id).where(CallRecord.visitor_id == visitor_id)
    recordings = await _delete_voicemails(db, Voicemail.call_id.in_(calls))
    counts = {
        "voicemails": len(recordings),
        "survey_answers": (await db.execute(delete(SurveyAnswer).where(SurveyAnswer.call_id.in_(calls)))).rowcount,
        "calls": (await db.execute(delete(CallRecord).where(CallRecord.visitor_id == visitor_id))).rowcount,
        "events": (await db.execute(delete(PageEvent).where(PageEvent.visitor_id == visitor_id))).rowcount,
        "visitor_days": await visitordays.forget_visitor(db, visitor_id),
        "conversions": (await db.execute(delete(Conversion).where(Conversion.visitor_id == visitor_id))).rowcount,
        "endpoint_refusals": (await db.execute(
            delete(EndpointRefusal).where(EndpointRefusal.visitor_id == visitor_id))).rowcount,
    }
    if deliveries := await webhooks.forget_visitor(db, visitor_id):  # webhook events that named them
        counts["webhook_deliveries"] = deliveries
    _remove_recordings(voicemail_folder, recordings)
    return counts


async def enforce_retention(db: AsyncSession, now: datetime, keep: timedelta,
                            voicemail_folder: Path | None = None) -> dict[str, int]:
    """Delete what is older than the retention period (calls by their creation, the rest by their time)."""
    cutoff = now - keep
    await visitordays.lock_rollup(db)
    old_calls = select(CallRecord.id).where(CallRecord.created_at < cutoff)
    recordings = await _delete_voicemails(db, Voicemail.call_id.in_(old_calls))
    counts = {
        "survey_answers": (await db.execute(delete(SurveyAnswer).where(SurveyAnswer.call_id.in_(old_calls)))).rowcount,
        "calls": (await db.execute(delete(CallRecord).where(CallRecord.created_at < cutoff))).rowcount,
        "events": (await db.execute(delete(PageEvent).where(PageEvent.ts < cutoff))).rowcount,
        "visitor_days": await visitordays.drop_before(db, cutoff),
        "conversions": (await db.execute(delete(Conversion).where(Conversion.ts < cutoff))).rowcount,
        "endpoint_refusals": (await db.execute(
            delete(EndpointRefusal).where(EndpointRefusal.created_at < cutoff))).rowcount,
    }
    if recordings:
        counts["voicemails"] = len(recordings)
    _remove_recordings(voicemail_folder, recordings)
    return counts


async def _delete_voicemails(db: AsyncSession, which) -> list[str]:
    """Delete the voicemail rows; returns their recordings' file names (removed once the rows are gone)."""
    files = list(await db.scalars(select(Voicemail.file_name).where(which)))
    if files:
        await db.execute(delete(Voicemail).where(which))
    return files


def _remove_recordings(folder: Path | None, files: list[str]) -> None:
    # Removed before the transaction commits: should the commit fail, a row whose file is gone is the lesser evil
    # (it plays nothing) than a recording nobody can find any more.
    if folder is None:
        return
    for name in files:
        try:
            (folder / check_file_name(name)).unlink(missing_ok=True)
        except (OSError, ValueError):
            log.exception("could not remove recording %r", name)


async def retention_job(sessionmaker: async_sessionmaker[AsyncSession], keep: timedelta,
                        voicemail_folder: Path | None) -> None:
    """Runs for the life of the server: once at start, then every few hours."""
    while True:
        try:
            async with sessionmaker() as db, db.begin():
                counts = await enforce_retention(db, datetime.now(timezone.utc), keep, voicemail_folder)
            if any(counts.values()):
                log.info("retention: deleted %s", counts)
        except Exception:
            log.exception("retention job failed; trying again later")
        await asyncio.sleep(RETENTION_EVERY.total_seconds())


def retention_ctx(sessionmaker_of, keep: timedelta, voicemail_folder: Path | None = None):
    async def ctx(app) -> AsyncIterator[None]:
        task = asyncio.create_task(retention_job(sessionmaker_of(app), keep, voicemail_folder), name="retention")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return ctx
