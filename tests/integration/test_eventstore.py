"""The SQLite event store (its own sqlite3 connection, for speed) stores exactly what the SQLAlchemy path stores, counts
new rows per request like it, and one failing group loses nothing of the next."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from analytics.eventstore import SqlAlchemyEventStore, SqliteEventStore
from talk.db import create_engine
from talk.models import PageEvent


def row(event_id: str, **extra) -> dict:
    base = {
        "site_id": 1, "event_id": event_id, "visitor_id": "v_" + "a" * 20, "session_id": "s_" + "b" * 20,
        "type": "pageview", "ts": datetime(2026, 11, 22, 23, 59, 59, 123456, tzinfo=timezone.utc),
        "url": "https://shop.example/p?utm_source=x", "path": "/p", "title": "<b>Title</b> ünïcode", "referrer": None,
        "utm_source": "x", "utm_medium": None, "utm_campaign": None, "utm_term": None, "utm_content": None,
        "click_id_type": None, "click_id": None, "props": None, "ip_hash": "f" * 32,
    }
    return {**base, **extra}


def stored(settings, prefix: str) -> list[tuple]:
    with sqlite3.connect(settings.data_dir / "talk.db") as db:
        rows = db.execute("SELECT * FROM events WHERE event_id LIKE ? ORDER BY event_id", (prefix + "%",)).fetchall()
    return [(r[1], r[2][len(prefix):], *r[3:]) for r in rows]  # without the rowid; event ids without the prefix


def group(prefix: str) -> list[list[dict]]:
    later = datetime(2026, 11, 23, 0, 0, 1, tzinfo=timezone(timedelta(hours=2)))  # stored as UTC
    return [
        [row(prefix + "1"), row(prefix + "2", props={"plan": "pro", "n": 3, "ok": True, "x": 1.5})],
        [row(prefix + "2"), row(prefix + "3", ts=later, referrer="https://a.example/")],  # 2: earlier in the group
        [row(prefix + "3")],
    ]


async def test_sqlite_store_writes_what_sqlalchemy_writes(settings):
    engine = create_engine(settings.resolved_database_url)
    fast, reference = SqliteEventStore(engine.url.database), SqlAlchemyEventStore(engine)
    try:
        assert await fast.write_group(group("e_fast_")) == [2, 1, 0]
        assert await reference.write_group(group("e_ref_")) == [2, 1, 0]
        assert await fast.write_group(group("e_fast_")) == [0, 0, 0]  # a replayed group stores nothing
        async with engine.connect() as connection:  # the ORM reads the fast path's rows back as it wrote them
            read = (await connection.execute(
                select(PageEvent.ts, PageEvent.props).where(PageEvent.event_id.like("e_fast_%"))
                .order_by(PageEvent.event_id))).all()
    finally:
        await fast.close()
        await engine.dispose()
    assert stored(settings, "e_fast_") == stored(settings, "e_ref_")
    assert len(stored(settings, "e_fast_")) == 3
    assert read[0].ts == datetime(2026, 11, 22, 23, 59, 59, 123456, tzinfo=timezone.utc)
    assert read[1].props == {"plan": "pro", "n": 3, "ok": True, "x": 1.5}
    assert read[2].ts == datetime(2026, 11, 22, 22, 0, 1, tzinfo=timezone.utc)


async def test_a_failed_group_is_rolled_back_and_the_next_one_is_written(settings):
    engine = create_engine(settings.resolved_database_url)
    store = SqliteEventStore(engine.url.database)
    try:
        with pytest.raises(sqlite3.IntegrityError):  # no such site: the foreign key fails the whole group
            await store.write_group([[row("e_roll_1")], [row("e_roll_2", site_id=999)]])
        assert await store.write_group([[row("e_roll_1")]]) == [1]
    finally:
        await store.close()
        await engine.dispose()
    assert [r[1] for r in stored(settings, "e_roll_")] == ["1"]
