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

from sqlalchemy import String, and_, case, cast, exists, false, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from analytics import buyerviews, factdays, visitordays
from analytics.reports.base import (
    Report, attributions, calls_in, count_callers, count_if, in_range, live_calls, outcome_counts, ratio,
    survey_counts,
)
from analytics.reports.callcounts import summed_call_counts
from analytics.reports.filters import Range
from analytics.reports.spread import ordered_stats, spread, spread_of
from analytics.reports.sqltime import binary, unindexed
from talk.models import CallRecord, Conversion, PageEvent


async def call_counts(db: AsyncSession, rng: Range, window: timedelta,
                      days: factdays.Split | None = None) -> dict[str, int]:
    """What the calls of the range give, in one pass over them where the filters allow (each pass reads every call
    of the range): OUTCOME_COLUMNS, survey_responses, survey_rating_sum, callers, and for the non-caller figures
    (any queue and channel: a second pass when a queue or channel filter applies) seen_callers and
    seen_buying_callers (`_seen_callers`). With `days`, from the day sums and the calls they leave to be read
    (analytics/reports/callcounts.py)."""
    if days is not None:
        return await summed_call_counts(db, rng, window, days)
    calls, live = calls_in(rng, window), live_calls(rng, window, name="calls_live")
    columns = [*outcome_counts(calls), *survey_counts(calls), count_callers(calls, live).label("callers")]
    all_queues = rng.queue_ids is None and rng.channel is None
    if all_queues and not rng.recount:
        columns += _seen_callers(rng, calls, live)
    counts = dict((await db.execute(select(*columns))).one()._mapping)
    if not all_queues and not rng.recount:
        live = live_calls(rng, window, all_queues=True, name="everyone_live_calls")
        everyone = calls_in(rng, window, all_queues=True, name="everyone")
        counts.update((await db.execute(select(*_seen_callers(rng, everyone, live)))).one()._mapping)
    return {name: int(value) for name, value in counts.items()}


async def caller_figures(db: AsyncSession, rng: Range, window: timedelta,
                         days: factdays.Split | None = None) -> dict[str, Any]:
    """callers_converted, conversions_after_calls, revenue_cents (after calls), and the delays to purchase; with
    `days`, without the delays, from the once-callers' sums and the other pairs (`_summed_caller_figures`)."""
    if days is not None:
        return await _summed_caller_figures(db, rng, window, days)
    pairs = attributions(rng, window)
    # One row per conversion (its value and visitor are the same in each of its pairs; the delay from the latest
    # call before it is the shortest).
    bought = (select(func.min(pairs.c.visitor_id).label("visitor_id"), func.min(pairs.c.cents).label("cents"),
                     func.min(pairs.c.delay_us).label("us")).group_by(pairs.c.conversion_id).subquery())
    converted = func.count(binary(bought.c.visitor_id).distinct())  # byte-wise: see count_callers
    revenue_cents = func.coalesce(func.sum(bought.c.cents), 0)
    if db.bind.dialect.name == "postgresql":  # the delays' order statistics in the same pass
        converted, revenue_cents, *stats = (await db.execute(
            select(converted, revenue_cents, *ordered_stats(bought.c.us)))).one()
        delays = spread_of(*stats)
    else:
        converted, revenue_cents = (await db.execute(select(converted, revenue_cents))).one()
        delays = await spread(db, select(bought.c.us).subquery())
    return {"callers_converted": int(converted), "conversions_after_calls": delays.n,
            "revenue_cents": int(revenue_cents), "delays": delays}


async def _summed_caller_figures(db: AsyncSession, rng: Range, window: timedelta,
                                 days: factdays.Split) -> dict[str, Any]:
    """A once-caller's conversions are attributed to their one call alone, and they are the one visitor converted
    by it: the sums count them. The other pairs are read and counted per conversion as caller_figures does."""
    pairs = attributions(rng, window, days=days)
    bought = (select(func.min(pairs.c.visitor_id).label("visitor_id"), func.min(pairs.c.cents).label("cents"))
              .group_by(pairs.c.conversion_id).subquery())
    converted, n, revenue_cents = (await db.execute(
        select(func.count(binary(bought.c.visitor_id).distinct()), func.count(),
               func.coalesce(func.sum(bought.c.cents), 0)))).one()
    summed = (await db.execute(factdays.summed_conversions(days, rng))).one()
    return {"callers_converted": int(converted) + int(summed.converted or 0),
            "conversions_after_calls": int(n) + int(summed.n or 0),
            "revenue_cents": int(revenue_cents) + int(summed.cents or 0), "delays": None}


async def non_caller_figures(db: AsyncSession, rng: Range, counts: dict[str, int]) -> dict[str, int]:
    """non_callers = seen − seen∧called, non_callers_converted = seen∧bought − seen∧bought∧called, for (site,
    visitor) pairs: `seen` from the visitor-day rollup (analytics/visitordays.py); seen∧called and seen∧bought∧called
    from the calls' nearest page views and conversions (`counts`: call_counts'); seen∧bought from the buyers' known
    page views (analytics/buyerviews.py), probing the rollup only for buyers without one in the range. Never reading
    the range's page views."""
    seen = None if rng.recount else await visitordays.visitors_seen(db, rng.lo, rng.hi, rng.site_id)
    if seen is None:
        return await non_caller_recount(db, rng)
    return {"non_callers": seen - counts["seen_callers"],
            "non_callers_converted": await _seen_buyers(db, rng) - counts["seen_buying_callers"]}


async def _seen_buyers(db: AsyncSession, rng: Range) -> int:
    """(site, visitor) pairs with a conversion and a page view in [lo, hi): a buyer whose conversions of the range
    know one of their page views in it (`viewed_at`) is seen; the others are looked up in the rollup."""
    conv = Conversion.__table__
    known = func.max(case((buyerviews.seen_between(conv, rng.lo, rng.hi), 1), else_=0))
    # SQLite: not by the range's index, whose rows it would sort to group them; the buyers' index (site, visitor,
    # ts, viewed_at) has them in order already (every conversion of the site, 9 ms per 80,000).
    ts = unindexed(conv.c.ts)
    # ORDER BY: PostgreSQL then reads that index (index only) in order too, rather than hashing 80,000 buyers.
    bought = (select(conv.c.site_id, conv.c.visitor_id, known.label("known"))
              .where(ts >= rng.lo, ts < rng.hi).group_by(conv.c.site_id, conv.c.visitor_id)
              .order_by(conv.c.site_id, conv.c.visitor_id))
    if rng.site_id is not None:
        bought = bought.where(conv.c.site_id == rng.site_id)
    buyers = bought.subquery("buyers")
    # The buyers probed are those whose purchases knew no page view of theirs: mostly unseen.
    viewed = visitordays.viewed_between(buyers.c.site_id, buyers.c.visitor_id, rng.lo, rng.hi, mostly_false=True)
    # CASE, whose branches both engines evaluate in order: the rollup is probed only for buyers not known seen.
    looked = case((buyers.c.known == 1, 1), (viewed, 1), else_=0)
    return int(await db.scalar(select(func.coalesce(func.sum(looked), 0))))


def _seen_callers(rng: Range, everyone, live) -> list:
    """Aggregates: two counts of (site, visitor) of calls in range (any queue): those with a page view in [lo, hi),
    and those with a page view and a conversion in it. Where the range is [lo, hi) itself, from the calls' nearest
    page views and conversions (a call in [lo, hi) whose visitor's page view nearest before it is >= lo, or nearest
    after it < hi, has one, and no other can; the same for conversions); elsewhere by probing the rollup and the
    conversions."""
    if rng.monotonic:
        seen = or_(everyone.c.seen_before_us >= rng.lo_us, everyone.c.seen_after_us < rng.hi_us)
        bought = or_(everyone.c.bought_before_us >= rng.lo_us, everyone.c.bought_after_us < rng.hi_us)
    else:
        conv = Conversion.__table__
        # (None: a range inside one UTC day, which non_caller_figures counts from the page views instead.)
        seen = visitordays.viewed_between(everyone.c.site_id, everyone.c.visitor_id, rng.lo, rng.hi)
        seen = false() if seen is None else seen
        bought = exists().where(conv.c.visitor_id == everyone.c.visitor_id, unindexed(conv.c.site_id) ==
                                everyone.c.site_id, conv.c.ts >= rng.lo, conv.c.ts < rng.hi)
    pair = cast(everyone.c.site_id, String) + literal(" ") + everyone.c.visitor_id
    return [count_callers(everyone, live, key=pair, where=seen).label("seen_callers"),
            count_callers(everyone, live, key=pair, where=and_(seen, bought)).label("seen_buying_callers")]


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
    counts = await call_counts(db, rng, window, await factdays.split(db, rng))
    callers = await caller_figures(db, rng, window)
    others = await non_caller_figures(db, rng, counts)
    offered, delays = counts["calls_offered"], callers["delays"].seconds()
    row = (
        offered, counts["callers"], callers["callers_converted"],
        ratio(callers["callers_converted"], counts["callers"]), others["non_callers"],
        others["non_callers_converted"], ratio(others["non_callers_converted"], others["non_callers"]),
        callers["conversions_after_calls"], money(callers["revenue_cents"]),
        ratio(callers["conversions_after_calls"], offered), delays["median"], delays["avg"],
    )
    return Report("conversion", CONVERSION_COLUMNS, [row])
