"""Journey reports by page: what callers viewed before and after their calls, and where Talk sent them afterwards.

Pages are the call API's (analytics/journey.py), for calls in range made with consent (`has_journey`):

- `pages_before`: the page views of the call's session up to the moment it was made (`ts <= created_at`).
- `pages_after`: the visitor's page views after the call ended, within the attribution window
  (`ended_at < ts <= ended_at + window`), except the view of the landing page Talk sent the caller to (its URL
  carries `talk_call=<this call's id>`).

Both are grouped by `path` (the URL without query string, so campaign parameters do not split a page): `views`
(distinct page views; a view before or after several calls counts once), `calls` (calls that had the page before or
after them), `callers` (distinct visitors), `calls_converted` (of those calls, the ones with a conversion attributed),
`conversion_rate` (calls_converted / calls). The `limit` pages with the most calls, ties by views, then path.

- `landing_pages`: calls in range that Talk sent to a landing page (`landing_url`; answered calls of queues that
  redirect), grouped by that page (the landing URL without its `talk_call` parameter): `calls` (callers sent),
  `callers` (distinct visitors), `landed` (calls whose landing page view was recorded: only with consent),
  `survey_responses`, `survey_completion` (survey_responses / calls), `survey_average`, `calls_converted`,
  `conversion_rate` (calls_converted / calls), `conversions` (distinct conversions attributed to those calls) and
  `revenue`.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, case, desc, func, literal_column, null, or_, select, true, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from analytics import factdays
from analytics.reports.base import (
    Report, attributions, calls_in, count_callers, count_distinct, count_if, live_calls, own_landing_view,
    ratio, site_queue_channel, valid_rows,
)
from analytics.reports.conversion import money
from analytics.reports.filters import Range
from analytics.reports.sqltime import binary, later, unindexed
from talk.models import CallFactPage, CallFactPageDay, PageEvent

PAGE_COLUMNS = ("path", "views", "calls", "callers", "calls_converted", "conversion_rate")


def _views(db: AsyncSession, conditions: list) -> tuple:
    """The page views matching `conditions` (terms on the call too) as a selectable to join to the calls, and the ON
    clause: looked up by index once per call. On PostgreSQL a LATERAL subquery: over a long range its planner would
    rather hash-join every page view (many times slower: a call has a handful); OFFSET 0 keeps it from flattening
    the subquery back into that join. SQLite joins by nested loops anyway."""
    e = PageEvent.__table__
    if db.bind.dialect.name == "postgresql":
        return select(e.c.id, e.c.path).where(*conditions).offset(0).lateral("views"), true()
    return e, and_(*conditions)


def _live_journeys(calls):
    """The calls of `calls` (live_calls) made with consent. OFFSET 0 keeps both engines from merging this subquery
    into the join with the page views, which would evaluate `converted` (an EXISTS) once per page view joined, not
    once per call."""
    return (select(calls.c.id, calls.c.site_id, calls.c.session_id, calls.c.visitor_id, calls.c.created_at,
                   calls.c.ended_at, calls.c.converted)
            .where(calls.c.has_journey.is_(True)).offset(0).subquery("journeys"))


def call_views(db: AsyncSession, rng: Range, window: timedelta, matching, after: int,
               days: factdays.Split | None = None) -> tuple:
    """(path, event_id, call_id, visitor_id, converted, first_in_call, event_shared, visitor_shared, live) of each
    page view matching(events, calls) of the calls in range made with consent, in two parts: the rows of
    call_fact_pages for calls with valid facts (flags: analytics/callpages.py; None without `rng.facts`; with
    `days`, only those of its row spans), and the page views looked up for the others (`live` 1: their rows count
    as shared, so they are counted DISTINCT)."""
    journeys = _live_journeys(live_calls(rng, window))
    view, on = _views(db, matching(PageEvent.__table__, journeys))
    one = literal_column("1")
    looked_up = (select(view.c.path, view.c.id.label("event_id"), journeys.c.id.label("call_id"),
                        journeys.c.visitor_id, journeys.c.converted, literal_column("0").label("first_in_call"),
                        one.label("event_shared"), one.label("visitor_shared"), one.label("live"))
                 .select_from(journeys).join(view, on))
    if not rng.facts:
        return None, looked_up
    p = CallFactPage.__table__
    stored = (select(p.c.path, p.c.event_id, p.c.call_id, p.c.visitor_id, p.c.converted, p.c.first_in_call,
                     p.c.event_shared, p.c.visitor_shared, literal_column("0").label("live"))
              .where(p.c.after == after, *valid_rows(rng, p)))
    if days is not None:
        stored = stored.where(days.in_row_spans(p.c.created_us))
    return stored, looked_up


def _distinct_flags(views, live) -> tuple:
    """The conditions on rows of `views` (call_views' rows): (stored_first, event_distinct, visitor_distinct), the
    last two true where the row's page view or visitor must be counted DISTINCT. `live`: the looked-up rows, whose
    page views and visitors make stored rows sharing them count DISTINCT too."""
    u = views.c
    return (and_(u.live == 0, u.first_in_call == 1),
            or_(u.event_shared == 1, u.event_id.in_(select(live.c.event_id))),
            or_(u.visitor_shared == 1, u.visitor_id.in_(select(live.c.visitor_id))))


def _counts(stored, looked_up):
    """views, calls, callers, calls_converted per path of call_views' rows (`stored`, `looked_up`): rows that are
    unique (by their flags) counted plainly, the others DISTINCT. SQLite's plan: one GROUP BY path."""
    views = (looked_up if stored is None else union_all(stored, looked_up)).subquery("call_views")
    u = views.c
    stored_first, event_distinct, visitor_distinct = _distinct_flags(views, looked_up.subquery("live_views"))
    # Paths grouped under byte-wise collation: the same groups (equal means equal bytes either way), but
    # PostgreSQL's sorts for them compare bytes instead of calling the locale's strcoll (10-20% faster).
    path = binary(u.path).label("path")
    return select(
        path,
        (count_if(~event_distinct) + count_distinct(u.event_id, event_distinct)).label("views"),
        (count_if(stored_first) + count_distinct(binary(u.call_id), u.live == 1)).label("calls"),
        (count_if(and_(u.first_in_call == 1, ~visitor_distinct))
         + count_distinct(binary(u.visitor_id), visitor_distinct)).label("callers"),
        (count_if(and_(stored_first, u.converted == 1))
         + count_distinct(binary(u.call_id), and_(u.live == 1, u.converted == 1))).label("calls_converted"),
    ).group_by(path)


def _summed_parts(rng: Range, days: factdays.Split, after: int, live) -> list:
    """_grouped_counts' parts for the days whose sums serve (analytics/factdays.py): the sums per path, the keys of
    those days' shared rows (read by their partial index), and for rows counted in the sums whose page view a
    looked-up row has too, a view taken back and the page view's key (its other calls are computed from raw rows,
    so the flags could not know)."""
    s, p, none, zero = CallFactPageDay.__table__, CallFactPage.__table__, null(), literal_column("0")
    sums = (select(binary(s.c.path).label("path"), none, none, none, none, func.sum(s.c.views), func.sum(s.c.calls),
                   func.sum(s.c.callers), func.sum(s.c.converted))
            .where(s.c.after == after, days.summed(s.c.day), *site_queue_channel(rng, s, False))
            .group_by(binary(s.c.path)))
    one = literal_column("1")
    days_rows = [p.c.after == after, days.in_summed_days(p.c.created_us), *site_queue_channel(rng, p, False)]
    keys = [binary(p.c.path), case((p.c.event_shared == one, p.c.event_id)),
            case((p.c.visitor_shared == one, binary(p.c.visitor_id)))]
    # (The terms of the partial index, spelled with literals: the planners match its predicate by them.)
    shared = (select(*keys, none, none, zero, zero, zero, zero)
              .where(*days_rows, or_(p.c.event_shared == one, p.c.visitor_shared == one)).group_by(*keys))
    taken_back = (select(binary(p.c.path), p.c.event_id, none, none, none, literal_column("-1"), zero, zero, zero)
                  .where(*days_rows, p.c.event_shared == 0, p.c.event_id.in_(select(live.c.event_id))))
    return [sums, shared, taken_back]


def _grouped_counts(stored, looked_up, summed=None):
    """The same in two steps, PostgreSQL's plan. First the stored rows grouped by path and by the values to count
    DISTINCT where the row needs it (NULL where not), the plain counts summed in each group: every unique row falls
    into its path's one group, so the second step sees a fraction of the rows (a year: 36,000 groups of 270,000
    rows). Then those groups and the looked-up rows (all DISTINCT) per path. PostgreSQL sorted every row by path
    for its DISTINCT aggregates, and hashes the first step (the statement over a year 0.75x); the looked-up rows
    kept apart, the stored ones are grouped straight from the table. SQLite sorts for every GROUP BY: this took it
    1.7x the time of one, over every row of a range; it takes this plan too where day sums serve (`summed`:
    _summed_parts of `live`, looked_up's rows), which leave it a fraction of the rows."""
    live = looked_up.subquery("live_views")
    v, none = live.c, null()
    parts = [select(binary(v.path).label("path"), v.event_id.label("event_key"),
                    binary(v.visitor_id).label("visitor_key"), binary(v.call_id).label("call_key"),
                    case((v.converted == 1, binary(v.call_id))).label("converted_key"),
                    *(literal_column("0").label(name) for name in ("views", "calls", "callers", "converted")))]
    if stored is not None:
        rows = stored.subquery("stored_views")
        u = rows.c
        stored_first, event_distinct, visitor_distinct = _distinct_flags(rows, live)
        keys = [binary(u.path).label("path"), case((event_distinct, u.event_id)).label("event_key"),
                case((visitor_distinct, binary(u.visitor_id))).label("visitor_key")]
        parts.insert(0, select(*keys, none.label("call_key"), none.label("converted_key"),
                               count_if(~event_distinct).label("views"), count_if(stored_first).label("calls"),
                               count_if(and_(u.first_in_call == 1, ~visitor_distinct)).label("callers"),
                               count_if(and_(stored_first, u.converted == 1)).label("converted"))
                     .group_by(*keys))
    if summed is not None:
        parts += summed(live)
    g = union_all(*parts).subquery("grouped").c
    return select(g.path, (func.sum(g.views) + func.count(g.event_key.distinct())).label("views"),
                  (func.sum(g.calls) + func.count(g.call_key.distinct())).label("calls"),
                  (func.sum(g.callers) + func.count(g.visitor_key.distinct())).label("callers"),
                  (func.sum(g.converted) + func.count(g.converted_key.distinct())).label("calls_converted")
                  ).group_by(g.path)


async def _pages(db: AsyncSession, rng: Range, window: timedelta, matching, after: int, name: str) -> Report:
    """The report on the page views matching(events, calls) of the calls in range made with consent."""
    days = await factdays.split(db, rng)
    stored, looked_up = call_views(db, rng, window, matching, after, days)
    if days is not None:
        counts = _grouped_counts(stored, looked_up, lambda live: _summed_parts(rng, days, after, live))
    elif db.bind.dialect.name == "postgresql":
        counts = _grouped_counts(stored, looked_up)
    else:
        counts = _counts(stored, looked_up)
    counts = counts.subquery("counts")
    statement = (select(counts).order_by(desc(counts.c.calls), desc(counts.c.views), counts.c.path)
                 .limit(rng.limit))
    rows = [(r.path, int(r.views), int(r.calls), int(r.callers), int(r.calls_converted),
             ratio(int(r.calls_converted), int(r.calls))) for r in await db.execute(statement)]
    return Report(name, PAGE_COLUMNS, rows)


def viewed_before(e, calls) -> list:
    return [unindexed(e.c.site_id) == calls.c.site_id, e.c.session_id == calls.c.session_id,
            e.c.ts <= calls.c.created_at]


def viewed_after(window: timedelta):
    def after(e, calls) -> list:
        return [unindexed(e.c.site_id) == calls.c.site_id, e.c.visitor_id == calls.c.visitor_id,
                e.c.ts > calls.c.ended_at, e.c.ts <= later(calls.c.ended_at, window), ~own_landing_view(e, calls)]

    return after


async def pages_before(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    return await _pages(db, rng, window, viewed_before, 0, "pages_before")


async def pages_after(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    return await _pages(db, rng, window, viewed_after(window), 1, "pages_after")


LANDING_COLUMNS = (
    "landing_page", "calls", "callers", "landed", "survey_responses", "survey_completion", "survey_average",
    "calls_converted", "conversion_rate", "conversions", "revenue",
)


async def landing_pages(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    calls = calls_in(rng, window)
    page = calls.c.landing_page.label("page")
    statement = (
        select(page, func.count().label("calls"),
               count_callers(calls, live_calls(rng, window, name="landing_live")).label("callers"),
               func.coalesce(func.sum(calls.c.landed), 0).label("landed"),
               func.count(calls.c.rating).label("responses"),
               func.coalesce(func.sum(calls.c.rating), 0).label("rating_sum"),
               func.coalesce(func.sum(calls.c.converted), 0).label("converted"))
        .where(calls.c.landing_page.is_not(None))
        .group_by(page)
        .order_by(desc("calls"), binary(page))
        .limit(rng.limit)
    )
    found = (await db.execute(statement)).all()
    pairs = attributions(rng, window, "landing_page")
    keyed = (select(pairs.c.landing_page.label("page"), pairs.c.conversion_id, pairs.c.cents)
             .where(pairs.c.landing_page.is_not(None)).distinct().subquery())
    money_of = {r.page: (int(r.n), int(r.cents)) for r in await db.execute(
        select(keyed.c.page, func.count().label("n"), func.sum(keyed.c.cents).label("cents")).group_by(keyed.c.page))}
    rows = []
    for r in found:
        conversions, revenue_cents = money_of.get(r.page, (0, 0))
        rows.append((r.page, int(r.calls), int(r.callers), int(r.landed), int(r.responses),
                     ratio(r.responses, r.calls), ratio(int(r.rating_sum), r.responses), int(r.converted),
                     ratio(int(r.converted), r.calls), conversions, money(revenue_cents)))
    return Report("landing_pages", LANDING_COLUMNS, rows)
