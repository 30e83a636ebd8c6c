"""Puts every call on record: snapshots taken at each state change, written by one task in batched upserts.

Routing never waits for the database: the switchboard's `call_changed` event only enqueues a snapshot. One writer
keeps the order of a call's changes, and groups whatever has queued up into one transaction.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from signaling.call import Call
from talk.models import CallRecord

log = logging.getLogger(__name__)

_FIELDS = (
    "id", "site_id", "queue_id", "agent_id", "visitor_id", "state", "end_reason", "page_url", "page_title",
    "page_referrer", "created_at", "ringing_at", "answered_at", "ended_at", "session_id", "has_journey", "disposition",
    "landing_url", "channel", "endpoint_id", "listing",
)
MAX_BATCH = 500  # 21 columns each: well under SQLite's 32,766 bound parameters


def snapshot(call: Call) -> dict[str, Any]:
    row = {name: getattr(call, name) for name in _FIELDS}
    row["state"] = call.state.value
    row["end_reason"] = call.end_reason.value if call.end_reason else None
    return row


class CallStore:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], linger: float = 0.05) -> None:
        self._sessionmaker = sessionmaker
        self._linger = linger
        self._pending: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._writer: asyncio.Task | None = None

    def record(self, call: Call) -> None:
        """pyee listener for call_changed: snapshot now, write soon."""
        self._pending.put_nowait(snapshot(call))

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_forever(), name="callstore-writer")

    async def flush(self) -> None:
        """Wait until every snapshot queued so far is written (tests, shutdown)."""
        await self._pending.join()

    async def stop(self) -> None:
        await self.flush()
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._pending.get()]
            # A call changes state several times within milliseconds (queued, ringing): linger a moment so those
            # snapshots, and other calls', share one statement and one transaction.
            await asyncio.sleep(self._linger)
            while not self._pending.empty() and len(batch) < MAX_BATCH:
                batch.append(self._pending.get_nowait())
            try:
                await self._write_batch(batch)
            finally:
                for _ in batch:
                    self._pending.task_done()

    async def _write_batch(self, batch: list[dict[str, Any]]) -> None:
        latest: dict[str, dict[str, Any]] = {}
        for row in batch:  # later snapshots of the same call supersede earlier ones
            latest[row["id"]] = row
        rows = list(latest.values())
        try:
            await self._upsert(rows)
        except Exception:
            if len(rows) == 1:
                log.exception("could not store call %s", rows[0]["id"])
                return
            # One bad record must not cost the other calls theirs: store them one by one.
            log.warning("batch of %d call records failed; storing them one by one", len(rows))
            for row in rows:
                await self._write_batch([row])

    async def _upsert(self, rows: list[dict[str, Any]]) -> None:
        async with self._sessionmaker() as db, db.begin():
            insert = postgresql.insert if db.bind.dialect.name == "postgresql" else sqlite.insert
            stmt = insert(CallRecord).values(rows)
            update = {k: stmt.excluded[k] for k in _FIELDS if k != "id"}
            await db.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=update))
