"""Where callers came from: traffic sources and UTM campaigns of the calls in range, with their conversion.

A call's source is its session's, as the call API and the console show it (analytics/journey.py's session_source):
the first page view of the call's session, classified by analytics.sources.classify_source (paid, campaign, search,
social, referral, direct). A call without consent has no journey: kind `no_consent`; a call with consent whose
session has no page view on record: kind `unknown`. The classification is Python's, so the SQL fetches one row per
call in range (bounded by the calls, never by the page views) and the grouping happens here.

- `sources`: by (kind, source): `calls`, `callers` (distinct visitors), `calls_converted` (calls with a conversion
  attributed), `conversion_rate` (calls_converted / calls), `conversions` (distinct conversions attributed to the
  group's calls) and `revenue` (their sum). A conversion after calls of two groups counts in both.
- `campaigns`: the same by the UTM parameters (utm_source, utm_medium, utm_campaign) of the session's first page,
  for calls whose session came with a `utm_campaign`.

Both: the `limit` groups with the most calls, ties by kind/source (or source, medium, campaign) in code point order.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from analytics.reports.base import Report, attributions, calls_in, ratio
from analytics.reports.conversion import money
from analytics.reports.filters import Range
from analytics.reports.sqltime import unindexed
from analytics.sources import classify_source
from talk.models import PageEvent

GROUP_COLUMNS = ("calls", "callers", "calls_converted", "conversion_rate", "conversions", "revenue")


@dataclass
class _Group:
    calls: int = 0
    callers: set = field(default_factory=set)
    converted: int = 0
    conversions: dict = field(default_factory=dict)  # conversion id -> cents

    def add(self, visitor_id: str, converted: bool, bought: list[tuple[int, int]]) -> None:
        self.calls += 1
        self.callers.add(visitor_id)
        self.converted += converted
        self.conversions.update(bought)

    def figures(self) -> tuple:
        return (self.calls, len(self.callers), self.converted, ratio(self.converted, self.calls),
                len(self.conversions), money(sum(self.conversions.values())))


async def _entries(db: AsyncSession, rng: Range, window: timedelta):
    """Per call in range: visitor, converted, its attributed conversions and its session's first page view."""
    calls = calls_in(rng, window)
    e = PageEvent.__table__
    in_session = and_(unindexed(e.c.site_id) == calls.c.site_id, e.c.session_id == calls.c.session_id)
    views = (
        select(calls.c.id, calls.c.visitor_id, calls.c.has_journey, calls.c.converted, e.c.url, e.c.referrer,
               e.c.utm_source, e.c.utm_medium, e.c.utm_campaign, e.c.click_id_type,
               func.row_number().over(partition_by=calls.c.id, order_by=(e.c.ts, e.c.id)).label("nth"))
        .select_from(calls).outerjoin(e, in_session)
        .subquery()
    )
    rows = (await db.execute(select(views).where(views.c.nth == 1))).all()  # the session's first page view
    pairs = attributions(calls, window)
    bought: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for call_id, conversion_id, amount in await db.execute(select(pairs.c.call_id, pairs.c.conversion_id,
                                                                   pairs.c.cents)):
        bought[call_id].append((int(conversion_id), int(amount)))
    return rows, bought


def _source(row) -> tuple[str, str | None]:
    if not row.has_journey:
        return "no_consent", None
    if row.url is None:
        return "unknown", None
    utm = {"source": row.utm_source, "medium": row.utm_medium, "campaign": row.utm_campaign}
    found = classify_source(row.url, row.referrer, utm, row.click_id_type)
    return found["kind"], found["source"]


def _top(groups: dict[tuple, _Group], limit: int) -> list[tuple]:
    def order(item):
        key, group = item
        return (-group.calls, tuple((value is None, value or "") for value in key))

    return [(*key, *group.figures()) for key, group in sorted(groups.items(), key=order)[:limit]]


async def sources(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    rows, bought = await _entries(db, rng, window)
    groups: dict[tuple, _Group] = defaultdict(_Group)
    for row in rows:
        groups[_source(row)].add(row.visitor_id, bool(row.converted), bought.get(row.id, []))
    return Report("sources", ("kind", "source", *GROUP_COLUMNS), _top(groups, rng.limit))


async def campaigns(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    rows, bought = await _entries(db, rng, window)
    groups: dict[tuple, _Group] = defaultdict(_Group)
    for row in rows:
        if row.has_journey and row.utm_campaign is not None:
            key = (row.utm_source, row.utm_medium, row.utm_campaign)
            groups[key].add(row.visitor_id, bool(row.converted), bought.get(row.id, []))
    return Report("campaigns", ("utm_source", "utm_medium", "utm_campaign", *GROUP_COLUMNS),
                  _top(groups, rng.limit))
