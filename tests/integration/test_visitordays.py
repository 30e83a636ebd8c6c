"""The visitor-day rollup (analytics/visitordays.py) against a recount from the page views, on SQLite (the event
store's own sqlite3 path) and PostgreSQL: page views of several sites and visitors written in random groups, out of
order and replayed, then distinct visitors of many ranges in several time zones (whole and partial UTC days, one
local day, daylight saving days), and again after a visitor is forgotten and after retention cut a day in two;
and whether each visitor was seen in those ranges, by both ways of probing the rollup."""

from __future__ import annotations

import asyncio
import random
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import async_sessionmaker

from analytics import visitordays
from analytics.eventstore import event_store
from analytics.privacy import enforce_retention, forget_visitor
from analytics.reports.filters import bounds
from talk.db import create_engine, upgrade_schema_async
from talk.models import PageEvent, Site, VisitorDay

START = datetime(2026, 3, 20, tzinfo=timezone.utc)  # Europe's clocks go forward on 2026-03-29
DAYS = 16
ZONES = ("UTC", "Europe/Berlin", "Europe/London", "America/St_Johns", "Asia/Kathmandu", "Pacific/Kiritimati",
         "Pacific/Pago_Pago")


def page_views(rng: random.Random, sites: list[int]) -> list[dict]:
    rows = []
    for n in range(60):
        site_id, visitor = rng.choice(sites), f"v_{n:03d}"
        for _ in range(rng.randint(1, 4)):  # sessions on random days, at random times (midnights included)
            at = START + timedelta(days=rng.randrange(DAYS), seconds=rng.choice([0, 59, 3599, rng.randrange(86400)]))
            if rng.random() < 0.1:  # the last instants of a day (SQLite's strftime would round them up)
                at = at.replace(hour=23, minute=59, second=59, microsecond=999_700)
            for k in range(rng.randint(1, 3)):
                rows.append({
                    "site_id": site_id, "event_id": f"e_{len(rows):05d}", "visitor_id": visitor,
                    "session_id": f"s_{visitor}_{at:%j}", "type": "pageview", "ts": at + timedelta(minutes=7 * k),
                    "url": "https://shop.example/p", "path": "/p", "title": "P", "referrer": None, "utm_source": None,
                    "utm_medium": None, "utm_campaign": None, "utm_term": None, "utm_content": None,
                    "click_id_type": None, "click_id": None, "props": None, "ip_hash": None})
    rng.shuffle(rows)  # late page views: days are inserted before, between and after a visitor's known days
    return rows


async def recount(db, lo: datetime, hi: datetime, site_id: int | None) -> int:
    e = PageEvent.__table__
    pairs = select(e.c.site_id, e.c.visitor_id).where(e.c.ts >= lo, e.c.ts < hi)
    if site_id is not None:
        pairs = pairs.where(e.c.site_id == site_id)
    return await db.scalar(select(text("count(*)")).select_from(pairs.distinct().subquery()))


async def probed(db, lo: datetime, hi: datetime, mostly_false: bool) -> int | None:
    """Visitors (site, visitor) of any time that viewed_between finds seen in [lo, hi) (None: it cannot tell)."""
    e = PageEvent.__table__
    pairs = select(e.c.site_id, e.c.visitor_id).distinct().subquery()
    seen = visitordays.viewed_between(pairs.c.site_id, pairs.c.visitor_id, lo, hi, mostly_false=mostly_false)
    return None if seen is None else await db.scalar(select(func.count()).select_from(pairs).where(seen))


async def check_links_and_counts(db) -> None:
    """Every row linked to its visitor's previous and next day, its first and last page view those of the stored
    page views, and the counts exactly the rows' (day, prev_day)."""
    spans: dict[tuple, list] = {}
    for site_id, visitor_id, ts in await db.execute(select(PageEvent.site_id, PageEvent.visitor_id, PageEvent.ts)):
        span = spans.setdefault((site_id, visitor_id, visitordays.day_of(ts)), [ts, ts])
        span[0], span[1] = min(span[0], ts), max(span[1], ts)
    assert {(r.site_id, r.visitor_id, r.day): [r.first_ts, r.last_ts]
            for r in await db.scalars(select(VisitorDay))} == spans
    rows = (await db.execute(text("SELECT site_id, visitor_id, day, prev_day, next_day FROM visitor_days "
                                  "ORDER BY site_id, visitor_id, day"))).all()
    expected = []
    for i, (site_id, visitor_id, day, _, _) in enumerate(rows):
        same = lambda j: 0 <= j < len(rows) and rows[j][:2] == (site_id, visitor_id)  # noqa: E731
        expected.append((site_id, visitor_id, day, rows[i - 1][2] if same(i - 1) else -1,
                         rows[i + 1][2] if same(i + 1) else None))
    assert [tuple(r) for r in rows] == expected
    counts = {tuple(r[:3]): r[3] for r in await db.execute(text(
        "SELECT site_id, day, prev_day, visitors FROM visitor_day_counts WHERE visitors <> 0"))}
    mine: dict[tuple, int] = {}
    for site_id, _, day, prev_day, _ in expected:
        mine[(site_id, day, prev_day)] = mine.get((site_id, day, prev_day), 0) + 1
    assert counts == mine


async def check_ranges(db, sites: list[int], rng: random.Random, tries: int = 60) -> int:
    partial = 0
    for _ in range(tries):
        first = START.date() - timedelta(days=1) + timedelta(days=rng.randrange(DAYS + 1))
        last = first + timedelta(days=rng.choice([0, 0, 1, 2, 5, DAYS]))
        lo, hi = bounds(first, last, rng.choice(ZONES))
        for site_id in (None, *sites):
            seen = await visitordays.visitors_seen(db, lo, hi, site_id)
            assert seen == await recount(db, lo, hi, site_id), (lo, hi, site_id)
            partial += lo.time() != datetime.min.time()
        for mostly_false in (False, True):  # each visitor probed: the same visitors, both ways of probing
            assert await probed(db, lo, hi, mostly_false) in (None, await recount(db, lo, hi, None)), (lo, hi)
    for day in (date(2026, 3, 29), date(2026, 3, 28)):  # London's 23-hour day lies inside one UTC day
        lo, hi = bounds(day, day, "Europe/London")
        assert await visitordays.visitors_seen(db, lo, hi, None) == await recount(db, lo, hi, None)
    return partial


async def exercise(url: str) -> None:
    await upgrade_schema_async(url)
    engine = create_engine(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with sessions() as db, db.begin():
            for key in ("shop-a", "shop-b"):
                db.add(Site(key=key, name=key, secret_key="k" * 40, allowed_origins=[], created_at=START))
        async with sessions() as db:
            sites = list(await db.scalars(select(Site.id).order_by(Site.id)))
        rng = random.Random(7)
        rows = page_views(rng, sites)
        store = event_store(engine)
        try:
            at = 0
            while at < len(rows):
                size = rng.randint(1, 25)
                replays = rng.sample(rows[:at + size], min(3, at + size))
                moved = [{**row, "ts": row["ts"] - timedelta(days=2)} for row in replays[:1]]  # same id, other time
                group = rows[at:at + size] + replays + moved
                await store.write_group([group[i:i + 4] for i in range(0, len(group), 4)])
                at += size
        finally:
            await store.close()
        async with sessions() as db:
            await check_links_and_counts(db)
            assert await check_ranges(db, sites, rng) > 0, "no range started inside a UTC day"
        async with sessions() as db, db.begin():  # the bulk rebuild (generator, migration) over the same page views
            await db.execute(text("DELETE FROM visitor_day_counts"))
            await db.execute(text("DELETE FROM visitor_days"))
            await visitordays.rebuild(db)
        async with sessions() as db:
            await check_links_and_counts(db)

        async with sessions() as db, db.begin():
            await forget_visitor(db, rows[0]["visitor_id"])
        async with sessions() as db, db.begin():
            await enforce_retention(db, START + timedelta(days=5, hours=13), timedelta(0))
        async with sessions() as db:
            await check_links_and_counts(db)
            await check_ranges(db, sites, rng)
            assert await db.scalar(select(func.min(VisitorDay.first_ts))) >= START + timedelta(days=5, hours=13)
    finally:
        await engine.dispose()


async def test_the_rollup_equals_a_recount_on_sqlite(tmp_path):
    await exercise(f"sqlite+aiosqlite:///{tmp_path / 'talk.db'}")


async def test_the_rollup_equals_a_recount_on_postgresql(pg_database):
    await exercise(pg_database)


async def test_concurrent_writers_keep_the_rollup_exact_on_postgresql(pg_database):
    """Two nodes' event writers (two engines, so two connections and transactions) writing the same visitors'
    days at once: the visitors' advisory locks serialize their upkeep (without them, each transaction links its
    visitor's new day without seeing the other's, and the links and counts go wrong)."""
    await upgrade_schema_async(pg_database)
    engines = [create_engine(pg_database) for _ in range(2)]
    sessions = async_sessionmaker(engines[0], expire_on_commit=False)
    try:
        async with sessions() as db, db.begin():
            db.add(Site(key="shop-a", name="shop-a", secret_key="k" * 40, allowed_origins=[], created_at=START))
        async with sessions() as db:
            site_id = await db.scalar(select(Site.id))
        rows = page_views(random.Random(11), [site_id])
        stores = [event_store(engine) for engine in engines]

        async def node(store, mine: list[dict]) -> None:
            for at in range(0, len(mine), 5):
                await store.write_group([mine[at:at + 5]])

        await asyncio.gather(*(node(store, rows[n::2]) for n, store in enumerate(stores)))
        async with sessions() as db:
            await check_links_and_counts(db)
            lo, hi = START, START + timedelta(days=DAYS)
            assert await visitordays.visitors_seen(db, lo, hi, None) == await recount(db, lo, hi, None)
    finally:
        for engine in engines:
            await engine.dispose()


@pytest.mark.parametrize("ts, day", [(datetime(1970, 1, 1, tzinfo=timezone.utc), 0),
                                     (datetime(2026, 3, 29, 23, 59, 59, 999999, tzinfo=timezone.utc), 20541),
                                     (datetime(2026, 3, 30, 1, 0, tzinfo=timezone(timedelta(hours=2))), 20541)])
def test_day_numbers_are_utc_days(ts, day):
    assert visitordays.day_of(ts) == day and visitordays.start_of(day) <= ts < visitordays.start_of(day + 1)
