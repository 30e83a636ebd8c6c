"""Order statistics (analytics/reports/spread.py): the window-function plan (on both engines) and PostgreSQL's
percentile_disc plan give the figures a sort in Python gives, for every count from 0 to 41 (odd and even, the ranks
where 0.9 * n is whole and where it is not), with ties and NULLs."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import BigInteger, Column, Integer, MetaData, Table, insert, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from analytics.reports.spread import Spread, ordered_stats, spread, spread_of

metadata = MetaData()
numbers = Table("numbers", metadata, Column("batch", Integer, nullable=False), Column("v", BigInteger))
SIZES = range(42)


def expected(values: list[int]) -> Spread:
    """The definitions, by a sort: median the mean of the two middle values, p90 the nearest rank."""
    if not values:
        return Spread()
    ordered, n = sorted(values), len(values)
    return Spread(n, sum(ordered), (ordered[(n + 1) // 2 - 1] + ordered[(n + 2) // 2 - 1]) / 2,
                  ordered[-(-9 * n // 10) - 1], ordered[-1])


def batches() -> dict[int, list[int | None]]:
    rng = random.Random(7)
    # Few distinct values, so ties are common; a NULL in every batch but the empty one.
    return {n: [rng.randrange(-5, 30) * 1_000_003 for _ in range(n)] + ([None] if n else []) for n in SIZES}


async def figures(url: str) -> dict[int, tuple[Spread, Spread | None]]:
    """Per batch: spread() (window functions) over the batch's values, and on PostgreSQL also ordered_stats in
    a grouped query."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(insert(numbers), [{"batch": n, "v": v} for n, values in batches().items()
                                                 for v in values])
        found = {}
        async with async_sessionmaker(engine)() as db:
            for n in SIZES:
                values = select(numbers.c.v).where(numbers.c.batch == n, numbers.c.v.is_not(None)).subquery()
                found[n] = (await spread(db, values), None)
            if engine.dialect.name == "postgresql":
                grouped = await db.execute(select(numbers.c.batch, *ordered_stats(numbers.c.v))
                                           .group_by(numbers.c.batch))
                for batch, *stats in grouped:
                    found[batch] = (found[batch][0], spread_of(*stats))
        return found
    finally:
        await engine.dispose()


def check(found: dict[int, tuple[Spread, Spread | None]], grouped: bool) -> None:
    for n, values in batches().items():
        want = expected([v for v in values if v is not None])
        alone, in_group = found[n]
        assert alone == want, n
        if grouped and n:  # (an empty batch has no group)
            assert in_group == want, n


async def test_sqlite_order_statistics_match_a_sort(tmp_path) -> None:
    check(await figures(f"sqlite+aiosqlite:///{tmp_path / 'numbers.db'}"), grouped=False)


@pytest.mark.postgres
async def test_postgres_order_statistics_match_a_sort(pg_database) -> None:
    check(await figures(pg_database), grouped=True)
