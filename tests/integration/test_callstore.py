"""The call store writes every call's latest state in batches, and one bad record costs no other call its own."""

from __future__ import annotations

import sqlite3

from sqlalchemy.ext.asyncio import async_sessionmaker

from signaling.call import Call
from signaling.callstore import MAX_BATCH, CallStore
from talk.db import create_engine
from talk.types import EndReason


async def test_many_calls_each_stored_with_their_final_state(settings):
    engine = create_engine(settings.resolved_database_url)  # the seeded, migrated demo database
    store = CallStore(async_sessionmaker(engine), linger=0.01)
    store.start()
    calls = [Call(site_id=1, queue_id=1, visitor_id=f"v_{i}") for i in range(MAX_BATCH + 100)]
    for call in calls:
        store.record(call)
        call.ring(1)
        store.record(call)
    for call in calls[::2]:
        call.end(EndReason.CALLER_CANCELLED)
        store.record(call)
    await store.stop()
    await engine.dispose()

    with sqlite3.connect(settings.data_dir / "talk.db") as db:
        states = dict(db.execute("SELECT state, count(*) FROM calls GROUP BY state").fetchall())
    assert states == {"ended": len(calls[::2]), "ringing": len(calls[1::2])}


async def test_a_bad_record_does_not_lose_the_others(settings, caplog):
    engine = create_engine(settings.resolved_database_url)
    store = CallStore(async_sessionmaker(engine), linger=0.05)
    store.start()
    good = [Call(site_id=1, queue_id=1, visitor_id=f"v_{i}") for i in range(5)]
    bad = Call(site_id=999, queue_id=1, visitor_id="v_bad")  # no such site: a foreign-key violation
    for call in (good[0], good[1], bad, *good[2:]):
        store.record(call)
    await store.stop()
    await engine.dispose()

    with sqlite3.connect(settings.data_dir / "talk.db") as db:
        stored = {row[0] for row in db.execute("SELECT id FROM calls")}
    assert stored == {call.id for call in good}
    assert f"could not store call {bad.id}" in caplog.text
