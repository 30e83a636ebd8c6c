"""Buyers' known page views (conversions.viewed_at, analytics/buyerviews.py) never change a report, on SQLite and
PostgreSQL:

- after generate() every conversion's viewed_at names a page view of its visitor on the site at or before it
  (most have one, nearly all the latest), and the conversion report and summary equal the recount;
- record_conversion stores that page view's time (NULL for a buyer with none) and the non-caller figures count
  the buyer exactly when a page view is in the range;
- retention deleting the known page view (the purchase kept) clears viewed_at in its transaction, and the buyer is
  no longer counted as seen: without the trigger the reports would still count them and differ from the recount;
- a conversion moved to another visitor loses its viewed_at (the view was the old visitor's)."""

from __future__ import annotations

import secrets
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from analytics.buyerviews import latest_view_before
from analytics.conversions import record_conversion
from analytics.generator import generate
from analytics.privacy import enforce_retention
from analytics.reports import ReportFilters, run_report
from talk.app import demo_origins
from talk.db import create_engine, upgrade_schema_async
from talk.demo import DEMO_SITE_KEY, seed_demo
from talk.models import Conversion, PageEvent, Site
from talk.settings import Settings
from tests.integration.test_callfacts import ingest, page_view
from tests.integration.test_reports import copy_data, generate_copy

END = datetime(2026, 4, 2, tzinfo=timezone.utc)
DAYS, VISITORS, SEED, WINDOW = 45, 300, 11, timedelta(days=7)
CASES = (ReportFilters(date(2026, 2, 16), date(2026, 4, 1), "UTC", limit=1000),
         ReportFilters(date(2026, 2, 16), date(2026, 4, 1), "Europe/Berlin", site="demo-shop", limit=1000),
         ReportFilters(date(2026, 3, 5), date(2026, 3, 29), "America/New_York", queue="support", limit=1000))
ALL = CASES[0]
CUTOFF = datetime(2026, 2, 20, 12, tzinfo=timezone.utc)  # the retention test's
conv = Conversion.__table__


class Db:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine, self.session = engine, async_sessionmaker(engine, expire_on_commit=False)

    async def report(self, name: str, filters: ReportFilters = ALL, recount: bool = False):
        async with self.session() as db:
            return await run_report(db, name, filters, WINDOW, recount)

    async def non_callers_converted(self) -> int:
        return (await self.report("summary")).records()[0]["non_callers_converted"]

    async def assert_exact(self) -> None:
        for filters in CASES:
            for name in ("conversion", "summary"):
                assert await self.report(name, filters) == await self.report(name, filters, recount=True), name

    async def scalar(self, statement):
        async with self.session() as db:
            return await db.scalar(statement)

    async def viewed_at(self, conversion_id: int) -> datetime | None:
        return await self.scalar(select(conv.c.viewed_at).where(conv.c.id == conversion_id))

    async def buyer(self, views: list[datetime], bought: datetime) -> tuple[str, int]:
        """A new visitor (never called) with page views at `views` (through the event writer) and a purchase at
        `bought` (through record_conversion): its visitor id and conversion id."""
        site_id = await self.scalar(select(Site.id).where(Site.key == DEMO_SITE_KEY))
        visitor = SimpleNamespace(site_id=site_id, visitor_id="v_buyer_" + secrets.token_hex(6))
        for ts in views:
            await ingest(self, page_view(visitor, ts, "https://shop.example/demo/buyer-views"))
        order = "bv-" + secrets.token_hex(4)
        async with self.session() as db, db.begin():
            assert await record_conversion(db, site_id=site_id, visitor_id=visitor.visitor_id, order_id=order,
                                           value=19.99, currency="EUR", ts=bought, origin="server")
        conversion_id = await self.scalar(select(conv.c.id).where(conv.c.order_id == order))
        return visitor.visitor_id, conversion_id


# ----- the checks, the same on both engines -----

async def check_generated(t: Db) -> None:
    e = PageEvent.__table__
    named = exists().where(e.c.visitor_id == conv.c.visitor_id, e.c.site_id == conv.c.site_id,
                           e.c.ts == conv.c.viewed_at, e.c.ts <= conv.c.ts)
    latest = latest_view_before(conv.c.site_id, conv.c.visitor_id, conv.c.ts)
    known = await t.scalar(select(func.count()).where(conv.c.viewed_at.is_not(None)))
    assert known >= 10
    assert await t.scalar(select(func.count()).where(conv.c.viewed_at.is_not(None), ~named)) == 0
    # (the generator's is the latest page view generated before the purchase; later ones may come before it)
    assert await t.scalar(select(func.count()).where(conv.c.viewed_at == latest)) >= known * 0.9
    await t.assert_exact()


async def check_recorded_conversion(t: Db) -> None:
    before = await t.non_callers_converted()
    view = datetime(2026, 3, 10, 9, tzinfo=timezone.utc)
    _, seen = await t.buyer([view - timedelta(days=1), view, view + timedelta(hours=2)], view + timedelta(hours=1))
    assert await t.viewed_at(seen) == view  # the latest at or before the purchase
    _, unseen = await t.buyer([], view)
    assert await t.viewed_at(unseen) is None
    assert await t.non_callers_converted() == before + 1  # the buyer without a page view is no visitor
    await t.assert_exact()


async def check_retention_clears_a_deleted_view(t: Db) -> None:
    _, conversion_id = await t.buyer([CUTOFF - timedelta(hours=1)], CUTOFF + timedelta(hours=1))
    assert await t.viewed_at(conversion_id) == CUTOFF - timedelta(hours=1)
    async with t.session() as db, db.begin():
        keep = timedelta(days=30)
        assert (await enforce_retention(db, CUTOFF + keep, keep))["events"] > 0
    assert await t.viewed_at(conversion_id) is None  # the page view it named is gone; the purchase is not
    await t.assert_exact()  # (retention also took calls: other figures changed too, so only the recount tells)


async def check_moved_conversion_forgets_its_view(t: Db) -> None:
    view = datetime(2026, 3, 12, 15, tzinfo=timezone.utc)
    _, conversion_id = await t.buyer([view], view + timedelta(minutes=5))
    before = await t.non_callers_converted()
    async with t.session() as db, db.begin():
        await db.execute(update(Conversion).where(Conversion.id == conversion_id).values(visitor_id="v_nobody"))
    assert await t.viewed_at(conversion_id) is None
    assert await t.non_callers_converted() == before - 1
    await t.assert_exact()


CHECKS = [check_generated, check_recorded_conversion, check_retention_clears_a_deleted_view,
          check_moved_conversion_forgets_its_view]


# ----- SQLite -----

@pytest.fixture(scope="module")
def generated(seeded_data_dir, tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("buyers")
    generate_copy(seeded_data_dir, data_dir, VISITORS, SEED)
    return data_dir


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__[6:])
async def test_sqlite(generated, tmp_path, check):
    engine = create_engine(Settings(data_dir=copy_data(generated, tmp_path / "data")).resolved_database_url)
    try:
        await check(Db(engine))
    finally:
        await engine.dispose()


# ----- PostgreSQL: the checks one after another on one data set -----

async def test_postgresql(pg_database, tmp_path):
    await upgrade_schema_async(pg_database)
    engine = create_engine(pg_database)
    try:
        async with async_sessionmaker(engine)() as db, db.begin():
            await seed_demo(db, demo_origins(Settings(data_dir=tmp_path, demo=True)))
        await generate(engine, VISITORS, end=END, seed=SEED, days=DAYS, attribution_days=WINDOW.days)
        for check in CHECKS:
            await check(Db(engine))
    finally:
        await engine.dispose()
