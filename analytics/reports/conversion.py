"""Conversion of callers against non-callers, revenue after calls, orders per call, time from call to purchase.

Definitions (analytics/generator_truth.py's; attribution as in analytics/reports/base.py):

- `callers`: distinct `visitor_id` of the calls in range (a call without consent has a visitor id of its own).
- `callers_converted`: callers with at least one conversion attributed to at least one of their calls in range.
- `conversions_after_calls`: distinct conversions attributed to at least one call in range (once, however many of
  the visitor's calls it follows); `revenue_after_calls` the sum of their values, exact to the cent.
- `non_callers`: visitors (a visitor id on a site: the id lives in the site's first-party storage) with a page view
  in [lo, hi) on the site and no call in range on that site, in any queue and channel (the queue and channel filters
  do not apply to them); without a site filter, those of every site. `non_callers_converted`: those with a
  conversion on the site with `ts` in [lo, hi). Counted with the visitor-day rollup (`non_caller_figures`), or from
  the page views themselves (`non_caller_recount`, what `recount=True` gives, to check the rollup against).
- `orders_per_call` (this report's own): conversions_after_calls / calls_offered.
- `time_to_purchase` (this report's own): for each conversion after calls, the time from the end of the latest
  call in range it is attributed to (the one just before it) to the purchase; median and average in seconds.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import String, case, cast, exists, func, literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from analytics import visitordays
from analytics.reports.base import (
    Report, attributions, calls_in, count_callers, count_if, fresh_facts, in_range, live_calls, ratio, spread,
)
from analytics.reports.filters import Range
from analytics.reports.sqltime import unindexed
from talk.models import CallRecord, Conversion, PageEvent


async def caller_figures(db: AsyncSession, rng: Range, window: timedelta) -> dict[str, Any]:
    """callers, callers_converted, conversions_after_calls, revenue_after_calls, and the delays to purchase."""
    calls = calls_in(rng, window)
    pairs = attributions(rng, window)
    callers = await db.scalar(select(count_callers(calls, live_calls(rng, window, name="callers_live"))))
    converted = await db.scalar(select(func.count(pairs.c.visitor_id.distinct())))
    distinct = select(pairs.c.conversion_id, pairs.c.cents).distinct().subquery()
    conversions, revenue_cents = (await db.execute(
        select(func.count(), func.coalesce(func.sum(distinct.c.cents), 0)).select_from(distinct))).one()
    delays = (select(func.min(pairs.c.delay_us).label("us")).group_by(pairs.c.conversion_id).subquery())
    return {"callers": int(callers), "callers_converted": int(converted), "conversions_after_calls": int(conversions),
            "revenue_cents": int(revenue_cents), "delays": await spread(db, delays)}


async def non_caller_figures(db: AsyncSession, rng: Range, window: timedelta) -> dict[str, int]:
    """non_callers = seen − seen∧called, non_callers_converted = seen∧bought − seen∧bought∧called, for (site,
    visitor) pairs: `seen` from the visitor-day rollup (analytics/visitordays.py); seen∧called from the calls'
    nearest page views (`_seen_callers`); the buyers' two by probing the rollup and the call facts per buyer. Never
    reading the range's page views."""
    seen = None if rng.recount else await visitordays.visitors_seen(db, rng.lo, rng.hi, rng.site_id)
    if seen is None:
        return await non_caller_recount(db, rng)
    conv = Conversion.__table__

    def viewed(pairs):
        return visitordays.viewed_between(pairs.c.site_id, pairs.c.visitor_id, rng.lo, rng.hi)

    everyone = calls_in(rng, window, all_queues=True, name="everyone")
    live = live_calls(rng, window, all_queues=True, name="everyone_live_calls")
    seen_called = await db.scalar(_seen_callers(rng, everyone, live))
    bought = select(conv.c.site_id, conv.c.visitor_id).where(conv.c.ts >= rng.lo, conv.c.ts < rng.hi)
    if rng.site_id is not None:
        bought = bought.where(conv.c.site_id == rng.site_id)
    buyers = bought.distinct().subquery("buyers")
    looked = (select(case((viewed(buyers), 1), else_=0).label("viewed"),
                     case((_called(rng, buyers, live), 1), else_=0).label("called"))
              .offset(0).subquery())  # (OFFSET 0: SQLite would copy the probe into both sums, running it twice)
    seen_bought, seen_bought_called = (await db.execute(
        select(func.coalesce(func.sum(looked.c.viewed), 0),
               func.coalesce(func.sum(looked.c.viewed * looked.c.called), 0)))).one()
    return {"non_callers": seen - int(seen_called),
            "non_callers_converted": int(seen_bought) - int(seen_bought_called)}


def _seen_callers(rng: Range, everyone, live):
    """How many (site, visitor) of calls in range (any queue) have a page view in [lo, hi): where the range is
    [lo, hi) itself, from the calls' seen_before_us / seen_after_us (a call in [lo, hi) whose visitor's page view
    nearest before it is >= lo, or nearest after it < hi, has one, and no other can); elsewhere by probing the
    rollup."""
    if rng.monotonic:
        seen = or_(everyone.c.seen_before_us >= rng.lo_us, everyone.c.seen_after_us < rng.hi_us)
    else:
        seen = visitordays.viewed_between(everyone.c.site_id, everyone.c.visitor_id, rng.lo, rng.hi)
    pair = cast(everyone.c.site_id, String) + literal(" ") + everyone.c.visitor_id
    return select(count_callers(everyone, live, key=pair)).where(seen)


def _called(rng: Range, buyers, live):
    """SQL: the buyer (site, visitor) has a call in range on the site (any queue): a probe of the call facts'
    visitor index, or among the calls computed from raw rows."""
    called = tuple_(buyers.c.site_id, buyers.c.visitor_id).in_(select(live.c.site_id, live.c.visitor_id))
    if not rng.facts:
        return called
    f, valid = fresh_facts(rng, all_queues=True)
    return or_(exists().where(f.c.visitor_id == buyers.c.visitor_id, f.c.site_id == buyers.c.site_id, *valid), called)


async def non_caller_recount(db: AsyncSession, rng: Range) -> dict[str, int]:
    """The same from the page views of the range themselves (the recount the rollup is checked against)."""
    e, c, conv = PageEvent.__table__, CallRecord.__table__.alias("c"), Conversion.__table__
    seen = select(e.c.site_id, e.c.visitor_id).where(e.c.ts >= rng.lo, e.c.ts < rng.hi)
    if rng.site_id is not None:
        seen = seen.where(e.c.site_id == rng.site_id)
    visitors = seen.distinct().subquery()
    called = exists().where(c.c.visitor_id == visitors.c.visitor_id, unindexed(c.c.site_id) == visitors.c.site_id,
                            *in_range(rng, c, all_queues=True))
    bought = exists().where(conv.c.visitor_id == visitors.c.visitor_id, unindexed(conv.c.site_id) == visitors.c.site_id,
                            conv.c.ts >= rng.lo, conv.c.ts < rng.hi)
    non_callers = select(visitors.c.visitor_id, bought.label("bought")).where(~called).subquery()
    total, converted = (await db.execute(
        select(func.count(), count_if(non_callers.c.bought))
        .select_from(non_callers))).one()
    return {"non_callers": int(total), "non_callers_converted": int(converted)}


def money(cents: int) -> float:
    return round(cents / 100, 2)


CONVERSION_COLUMNS = (
    "calls_offered", "callers", "callers_converted", "conversion_rate_callers", "non_callers",
    "non_callers_converted", "conversion_rate_non_callers", "conversions_after_calls", "revenue_after_calls",
    "orders_per_call", "time_to_purchase_median_seconds", "time_to_purchase_avg_seconds",
)


async def conversion(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    callers = await caller_figures(db, rng, window)
    others = await non_caller_figures(db, rng, window)
    offered = await db.scalar(select(func.count()).select_from(calls_in(rng, window)))
    delays = callers["delays"].seconds()
    row = (
        int(offered), callers["callers"], callers["callers_converted"],
        ratio(callers["callers_converted"], callers["callers"]), others["non_callers"],
        others["non_callers_converted"], ratio(others["non_callers_converted"], others["non_callers"]),
        callers["conversions_after_calls"], money(callers["revenue_cents"]),
        ratio(callers["conversions_after_calls"], offered), delays["median"], delays["avg"],
    )
    return Report("conversion", CONVERSION_COLUMNS, [row])

