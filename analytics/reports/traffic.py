"""Where callers came from: traffic sources and UTM campaigns of the calls in range, with their conversion.

A call's source is its session's, as the call API and the console show it (analytics/journey.py's session_source):
the first page view of the call's session, classified by analytics.sources.classify_source (paid, campaign, search,
social, referral, direct). A call without consent has no journey: kind `no_consent`; a call with consent whose
session has no page view on record: kind `unknown`. The classification is Python's, so the SQL fetches one row per
call in range and conversion attributed to it (bounded by the calls, never by the page views) and the grouping
happens here.

- `sources`: by (kind, source): `calls`, `callers` (distinct visitors), `calls_converted` (calls with a conversion
  attributed), `conversion_rate` (calls_converted / calls), `conversions` (distinct conversions attributed to the
  group's calls) and `revenue` (their sum). A conversion after calls of two groups counts in both.
- `campaigns`: the same by the UTM parameters (utm_source, utm_medium, utm_campaign) of the session's first page,
  for calls whose session came with a `utm_campaign`.

Both: the `limit` groups with the most calls, ties by kind/source (or source, medium, campaign) in code point order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import and_, case, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from analytics.reports.base import (
    Report, attributed_to, cents, count_callers, count_if, fresh_facts, live_calls, ratio, valid_rows,
)
from analytics.reports.conversion import money
from analytics.reports.filters import Range
from analytics.reports.sqltime import unindexed
from analytics.sources import classify_source
from talk.models import CallFactConversion, Conversion, PageEvent

GROUP_COLUMNS = ("calls", "callers", "calls_converted", "conversion_rate", "conversions", "revenue")


@dataclass
class _Group:
    calls: int = 0
    callers: set = field(default_factory=set)
    converted: int = 0
    conversions: dict = field(default_factory=dict)  # conversion id -> cents

    def figures(self) -> tuple:
        return (self.calls, len(self.callers), self.converted, ratio(self.converted, self.calls),
                len(self.conversions), money(sum(self.conversions.values())))


def first_view(db: AsyncSession, calls, columns: list[str]):
    """`columns` of the call's session's first page view (by ts, then id) as a selectable to outer-join to `calls`,
    and the ON clause. One index probe per call (ix_events_session_ts) rather than joining every view of the
    sessions: on PostgreSQL a LATERAL subquery (a join `ON id = (subquery)` is planned as a hash join over all page
    views), on SQLite, which has no LATERAL, that join by id (a rowid lookup)."""
    e, f = PageEvent.__table__, PageEvent.__table__.alias("session_view")
    first = (select(*(f.c[name] for name in columns))
             .where(calls.c.has_journey.is_(True), unindexed(f.c.site_id) == calls.c.site_id,
                    f.c.session_id == calls.c.session_id)
             .order_by(f.c.ts, f.c.id).limit(1))
    if db.bind.dialect.name == "postgresql":
        return first.lateral("first_view"), true()
    return e, e.c.id == first.with_only_columns(f.c.id).scalar_subquery()


def _calls_viewed(db: AsyncSession, calls, window: timedelta, *inputs: str):
    """The calls of `calls` (live_calls: without valid facts) with `inputs` (has_journey, or columns of the first page
    view, by name: None without one) and the conversions attributed to them: rows (call id, visitor id, *inputs, conversion
    id, cents), one per call and conversion (conversion id NULL for a call without). Also the first view's
    selectable, for WHERE terms."""
    view, on = first_view(db, calls, [name for name in inputs if name != "has_journey"])
    conv = Conversion.__table__
    columns = [calls.c[name] if name == "has_journey" else view.c[name] for name in inputs]
    statement = (
        select(calls.c.id, calls.c.visitor_id, *columns, conv.c.id, cents(conv.c.value))
        .select_from(calls).outerjoin(view, on).outerjoin(conv, attributed_to(conv, calls, window))
    )
    return statement, view


async def _groups(db: AsyncSession, statement, key: Callable[..., tuple]) -> dict[tuple, _Group]:
    """The calls of `statement` (from _calls_viewed) grouped by key(*inputs), called once per distinct inputs."""
    groups: dict[tuple, _Group] = defaultdict(_Group)
    of_inputs: dict[tuple, _Group] = {}  # sessions often start alike: classify each kind of start once
    of_call: dict[str, _Group] = {}
    converted: set[str] = set()  # calls with a conversion attributed
    for call_id, visitor_id, *inputs, conversion_id, amount in (await db.execute(statement)).all():
        group = of_call.get(call_id)
        if group is None:
            inputs = tuple(inputs)
            group = of_inputs.get(inputs)
            if group is None:
                group = of_inputs[inputs] = groups[key(*inputs)]
            of_call[call_id] = group
            group.calls += 1
            group.callers.add(visitor_id)
        if conversion_id is not None:
            if call_id not in converted:
                converted.add(call_id)
                group.converted += 1
            group.conversions[conversion_id] = int(amount)
    return groups


@dataclass
class _Stored:
    """A group's figures over the calls with stored facts: counts, and which of the other calls' visitors and
    conversions it has already (so merging counts each once)."""

    calls: int = 0
    callers: int = 0
    converted: int = 0
    conversions: int = 0
    cents: int = 0
    shared_callers: set = field(default_factory=set)
    shared_conversions: set = field(default_factory=set)


async def _stored_groups(db: AsyncSession, rng: Range, calls, window: timedelta, keys: list[str],
                         where: Callable = lambda f: []) -> dict[tuple, _Stored]:
    """The calls in range with valid facts grouped by their columns `keys` in SQL (`where(call_facts)`: more
    terms), and what they share with the calls of `calls` (live_calls): their visitors and conversions."""
    out: dict[tuple, _Stored] = defaultdict(_Stored)
    f, valid = fresh_facts(rng)
    valid = [*valid, *where(f)]
    key_columns = [f.c[k] for k in keys]
    for *key, n, callers, converted in await db.execute(_call_counts(db, f, calls, key_columns, valid)):
        group = out[tuple(key)]
        group.calls, group.callers, group.converted = int(n), int(callers), int(converted)
    # The attributed conversions carry their call's group keys: read alone.
    p = CallFactConversion.__table__
    valid_pairs = [*valid_rows(rng, p), *where(p)]
    stored_pairs = (select(*(p.c[k] for k in keys), p.c.conversion_id, p.c.cents).where(*valid_pairs)
                    .distinct().subquery())
    pair_keys = [stored_pairs.c[k] for k in keys]
    for *key, n, total in await db.execute(
            select(*pair_keys, func.count(), func.sum(stored_pairs.c.cents)).group_by(*pair_keys)):
        group = out[tuple(key)]
        group.conversions, group.cents = int(n), int(total)
    # What the calls without valid facts share with these groups: their visitors and conversions.
    conv = Conversion.__table__
    live_visitors = select(calls.c.visitor_id)
    for *key, visitor_id in await db.execute(
            select(*key_columns, f.c.visitor_id).where(*valid, f.c.visitor_id.in_(live_visitors)).distinct()):
        out[tuple(key)].shared_callers.add(visitor_id)
    live_conversions = select(conv.c.id).select_from(calls).join(conv, attributed_to(conv, calls, window))
    # Looked up by conversion (ix_call_fact_conversions_conversion_id): stored_pairs would be every pair of the range.
    for *key, conversion_id in await db.execute(
            select(*(p.c[k] for k in keys), p.c.conversion_id)
            .where(p.c.conversion_id.in_(live_conversions), *valid_pairs).distinct()):
        out[tuple(key)].shared_conversions.add(conversion_id)
    return out


def _call_counts(db: AsyncSession, f, calls, key_columns: list, valid: list):
    """Per group of call_facts' `key_columns` (rows `valid`): calls, callers (count_callers: distinct visitors) and
    calls converted. On PostgreSQL in two steps: grouped by the keys and by the visitor where count_callers would
    count it DISTINCT (NULL where it counts the row plainly), then by the keys, where each such visitor is one row:
    hashed, where one step sorts every call of the range by the keys for its DISTINCT count."""
    if db.bind.dialect.name != "postgresql":
        return (select(*key_columns, func.count(), count_callers(f, calls), func.sum(f.c.converted))
                .where(*valid).group_by(*key_columns))
    once = and_(f.c.repeat_caller == 0, f.c.visitor_id.not_in(select(calls.c.visitor_id)))
    keys = [*(column.label(f"key{i}") for i, column in enumerate(key_columns)),
            case((~once, f.c.visitor_id)).label("visitor_key")]
    grouped = (select(*keys, func.count().label("n"), count_if(once).label("once"),
                      func.sum(f.c.converted).label("converted")).where(*valid).group_by(*keys).subquery())
    g = grouped.c
    group_keys = [g[f"key{i}"] for i in range(len(key_columns))]
    return (select(*group_keys, func.sum(g.n), func.sum(g.once) + func.count(g.visitor_key), func.sum(g.converted))
            .group_by(*group_keys))


def _merged(stored: dict[tuple, _Stored], live: dict[tuple, _Group]) -> dict[tuple, _Group | _Stored]:
    """The groups of both kinds of calls, each visitor and conversion counted once per group."""
    merged: dict[tuple, _Group | _Stored] = dict(stored)
    for key, group in live.items():
        if key not in stored:
            merged[key] = group
            continue
        both = stored[key]
        new_conversions = {cid: c for cid, c in group.conversions.items() if cid not in both.shared_conversions}
        merged[key] = _Stored(both.calls + group.calls, both.callers + len(group.callers - both.shared_callers),
                              both.converted + group.converted, both.conversions + len(new_conversions),
                              both.cents + sum(new_conversions.values()))
    return merged


def _figures(group: _Group | _Stored) -> tuple:
    if isinstance(group, _Group):
        return group.figures()
    return (group.calls, group.callers, group.converted, ratio(group.converted, group.calls), group.conversions,
            money(group.cents))


def source_of(has_journey: bool, url: str | None, referrer: str | None, utm_source: str | None,
            utm_medium: str | None, click_id_type: str | None) -> tuple[str, str | None]:
    if not has_journey:
        return "no_consent", None
    if url is None:
        return "unknown", None
    found = classify_source(url, referrer, {"source": utm_source, "medium": utm_medium}, click_id_type)
    return found["kind"], found["source"]


SOURCE_INPUTS = ("has_journey", "url", "referrer", "utm_source", "utm_medium", "click_id_type")


def _top(groups: dict[tuple, _Group | _Stored], limit: int) -> list[tuple]:
    def order(item):
        key, group = item
        return (-group.calls, tuple((value is None, value or "") for value in key))

    return [(*key, *_figures(group)) for key, group in sorted(groups.items(), key=order)[:limit]]


async def sources(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    calls = live_calls(rng, window)
    # What classify_source reads (the campaign only goes into its result, not into kind or source).
    statement, _ = _calls_viewed(db, calls, window, *SOURCE_INPUTS)
    live = await _groups(db, statement, source_of)
    stored = await _stored_groups(db, rng, calls, window, ["source_kind", "source"]) if rng.facts else {}
    return Report("sources", ("kind", "source", *GROUP_COLUMNS), _top(_merged(stored, live), rng.limit))


async def campaigns(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    calls = live_calls(rng, window)
    statement, view = _calls_viewed(db, calls, window, "utm_source", "utm_medium", "utm_campaign")
    statement = statement.where(view.c.utm_campaign.is_not(None))  # (never without consent: no view joined)
    live = await _groups(db, statement, lambda *utm: utm)
    stored = (await _stored_groups(db, rng, calls, window, ["utm_source", "utm_medium", "utm_campaign"],
                                   lambda f: [f.c.utm_campaign.is_not(None)]) if rng.facts else {})
    return Report("campaigns", ("utm_source", "utm_medium", "utm_campaign", *GROUP_COLUMNS),
                  _top(_merged(stored, live), rng.limit))
