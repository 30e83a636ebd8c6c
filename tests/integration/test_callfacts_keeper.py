"""The running server keeps the call facts fresh by itself (analytics.callfacts.FactsKeeper in the app's cleanup
context): a call written while it runs becomes stale in the writer's transaction and has valid facts within a few
seconds, without anybody calling catch_up; a failing round does not stop the keeper."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

from aiohttp.test_utils import TestServer
from sqlalchemy import func, select

from analytics import CALL_FACTS_KEY
from talk.app import create_app
from talk.db import SESSIONMAKER_KEY
from talk.models import CallFacts, CallFactsMeta, CallFactsStale, CallRecord, Queue, Site


async def _wait_until(predicate, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.1)
    return False


async def _add_call(db, call_id: str) -> None:
    site_id = await db.scalar(select(Site.id).order_by(Site.id).limit(1))
    queue_id = await db.scalar(select(Queue.id).where(Queue.site_id == site_id).order_by(Queue.id).limit(1))
    now = datetime.now(timezone.utc)
    db.add(CallRecord(id=call_id, site_id=site_id, queue_id=queue_id, visitor_id="v_keeper", state="ended",
                      end_reason="no-agent", created_at=now - timedelta(seconds=30), ended_at=now,
                      has_journey=False, channel="agent"))


async def test_the_server_refreshes_stale_calls_by_itself(settings):
    server = TestServer(create_app(settings), host="127.0.0.1", port=settings.port)
    await server.start_server()
    try:
        app = server.app
        sessionmaker = app[SESSIONMAKER_KEY]
        async def window_recorded() -> bool:
            async with sessionmaker() as db:
                window = await db.scalar(select(CallFactsMeta.window_us))
            return window == timedelta(days=settings.attribution_days) // timedelta(microseconds=1)

        assert await _wait_until(window_recorded), "the keeper did not record the attribution window"
        async with sessionmaker() as db, db.begin():
            await _add_call(db, "c_keeper_1")
            stale = await db.scalar(select(func.count()).where(CallFactsStale.call_id == "c_keeper_1"))
        assert stale == 1  # marked by the trigger, in the same transaction

        async def refreshed() -> bool:
            async with sessionmaker() as db:
                facts = await db.scalar(select(func.count()).where(CallFacts.call_id == "c_keeper_1"))
                left = await db.scalar(select(func.count()).select_from(CallFactsStale))
            return facts == 1 and left == 0

        assert await _wait_until(refreshed), "the keeper did not compute the new call's facts"
        assert await _wait_until(_counted(app[CALL_FACTS_KEY]))
    finally:
        await server.close()


def _counted(keeper):
    """The keeper has counted a refreshed call: it does once its round is over, the day sums rewritten too, a moment
    after the facts are committed."""
    async def counted() -> bool:
        return keeper.refreshed >= 1

    return counted


async def test_a_failing_round_does_not_stop_the_keeper(settings, monkeypatch):
    server = TestServer(create_app(settings), host="127.0.0.1", port=settings.port)
    await server.start_server()
    try:
        app = server.app
        keeper, sessionmaker = app[CALL_FACTS_KEY], app[SESSIONMAKER_KEY]
        failures = []
        from analytics import callfacts

        real_refresh = callfacts.refresh

        async def flaky(db, window, limit=callfacts.BATCH):
            if not failures:
                failures.append(1)
                raise RuntimeError("refresh failed once")
            return await real_refresh(db, window, limit)

        monkeypatch.setattr(callfacts, "refresh", flaky)
        async with sessionmaker() as db, db.begin():
            await _add_call(db, "c_keeper_2")

        async def refreshed() -> bool:
            async with sessionmaker() as db:
                return await db.scalar(select(func.count()).where(CallFacts.call_id == "c_keeper_2")) == 1

        assert await _wait_until(refreshed), "the keeper stopped after a failed round"
        assert failures == [1] and await _wait_until(_counted(keeper))
    finally:
        await server.close()


async def test_upserting_a_call_already_stale_works_on_sqlite(settings):
    """SQLite lets the firing statement's conflict clause override a trigger's INSERT OR IGNORE: the call store's
    upsert (INSERT … ON CONFLICT DO UPDATE) of a call already marked stale failed with a UNIQUE error once."""
    from talk.db import create_engine, upgrade_schema_async

    url = f"sqlite+aiosqlite:///{settings.data_dir / 'talk.db'}"
    await upgrade_schema_async(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            site_id = (await connection.exec_driver_sql("SELECT id FROM sites ORDER BY id LIMIT 1")).scalar()
            queue_id = (await connection.exec_driver_sql(
                "SELECT id FROM queues WHERE site_id = ? ORDER BY id LIMIT 1", (site_id,))).scalar()
            upsert = ("INSERT INTO calls (id, site_id, queue_id, visitor_id, state, created_at, has_journey, channel) "
                      "VALUES ('c_upsert', ?, ?, 'v_upsert', ?, '2026-12-01 10:00:00.000000', 0, 'agent') "
                      "ON CONFLICT (id) DO UPDATE SET state = excluded.state")
            for state in ("ringing", "answered", "ended"):  # the second and third find it stale already
                await connection.exec_driver_sql(upsert, (site_id, queue_id, state))
            stale = (await connection.exec_driver_sql(
                "SELECT count(*) FROM call_facts_stale WHERE call_id = 'c_upsert'")).scalar()
        assert stale == 1
    finally:
        await engine.dispose()
