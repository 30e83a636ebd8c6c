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

from sqlalchemy import and_, case, desc, exists, func, literal, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from analytics.reports.base import Report, attributions, calls_in, count_if, ratio
from analytics.reports.conversion import money
from analytics.reports.filters import Range
from analytics.reports.sqltime import binary, later, position, unindexed
from talk.models import PageEvent

PAGE_COLUMNS = ("path", "views", "calls", "callers", "calls_converted", "conversion_rate")
TALK_CALL = "talk_call="


def _own_landing_view(event, calls):
    """The page view is of the landing page this call sent the caller to (the call API leaves it out)."""
    return position(event.c.url, literal(TALK_CALL) + calls.c.id) > 0


def _views(db: AsyncSession, conditions: list) -> tuple:
    """The page views matching `conditions` (terms on the call too) as a selectable to join to the calls, and the ON
    clause: looked up by index once per call. On PostgreSQL a LATERAL subquery: over a long range its planner would
    rather hash-join every page view (many times slower: a call has a handful); OFFSET 0 keeps it from flattening
    the subquery back into that join. SQLite joins by nested loops anyway."""
    e = PageEvent.__table__
    if db.bind.dialect.name == "postgresql":
        return select(e.c.id, e.c.path).where(*conditions).offset(0).lateral("views"), true()
    return e, and_(*conditions)


def _journeys(rng: Range, window: timedelta):
    """The calls in range made with consent. OFFSET 0 keeps both engines from merging this subquery into the join
    with the page views, which would evaluate `converted` (an EXISTS) once per page view joined, not once per call.
    (Joining the set of converted calls instead is no better on SQLite, and on PostgreSQL a generic plan, which a
    prepared statement gets after five runs, expects a few dozen calls in range and loops over that set per row.)"""
    calls = calls_in(rng, window)
    return (select(calls.c.id, calls.c.site_id, calls.c.session_id, calls.c.visitor_id, calls.c.created_at,
                   calls.c.ended_at, calls.c.converted)
            .where(calls.c.has_journey.is_(True)).offset(0).subquery("journeys"))


async def _pages(db: AsyncSession, rng: Range, window: timedelta, matching, name: str) -> Report:
    """The report on the page views matching(events, calls) of the calls in range made with consent."""
    calls = _journeys(rng, window)
    view, on = _views(db, matching(PageEvent.__table__, calls))
    # Texts grouped and counted distinct under byte-wise collation: the same groups (equal means equal bytes either
    # way), but PostgreSQL's sorts for them compare bytes instead of calling the locale's strcoll (10-20% faster).
    path = binary(view.c.path).label("path")
    statement = (
        select(path, func.count(view.c.id.distinct()).label("views"),
               func.count(binary(calls.c.id).distinct()).label("calls"),
               func.count(binary(calls.c.visitor_id).distinct()).label("callers"),
               func.count(binary(case((calls.c.converted == 1, calls.c.id))).distinct()).label("calls_converted"))
        .select_from(calls).join(view, on)
        .group_by(path)
        .order_by(desc("calls"), desc("views"), path)
        .limit(rng.limit)
    )
    rows = [(r.path, int(r.views), int(r.calls), int(r.callers), int(r.calls_converted),
             ratio(r.calls_converted, r.calls)) for r in await db.execute(statement)]
    return Report(name, PAGE_COLUMNS, rows)


async def pages_before(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    def before(e, calls) -> list:
        return [unindexed(e.c.site_id) == calls.c.site_id, e.c.session_id == calls.c.session_id,
                e.c.ts <= calls.c.created_at]

    return await _pages(db, rng, window, before, "pages_before")


async def pages_after(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    def after(e, calls) -> list:
        return [unindexed(e.c.site_id) == calls.c.site_id, e.c.visitor_id == calls.c.visitor_id,
                e.c.ts > calls.c.ended_at, e.c.ts <= later(calls.c.ended_at, window), ~_own_landing_view(e, calls)]

    return await _pages(db, rng, window, after, "pages_after")


LANDING_COLUMNS = (
    "landing_page", "calls", "callers", "landed", "survey_responses", "survey_completion", "survey_average",
    "calls_converted", "conversion_rate", "conversions", "revenue",
)


def landing_page(calls):
    """SQL: the call's landing URL without the `talk_call` parameter Talk appends last (with its '?' or '&')."""
    at = position(calls.c.landing_url, literal(TALK_CALL))
    return case((at > 1, func.substr(calls.c.landing_url, 1, at - 2)), else_=calls.c.landing_url)


async def landing_pages(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    calls = calls_in(rng, window)
    e = PageEvent.__table__
    page = landing_page(calls).label("page")
    landed = exists().where(unindexed(e.c.site_id) == calls.c.site_id, e.c.visitor_id == calls.c.visitor_id,
                            _own_landing_view(e, calls))
    statement = (
        select(page, func.count().label("calls"), func.count(calls.c.visitor_id.distinct()).label("callers"),
               count_if(and_(calls.c.has_journey.is_(True), landed)).label("landed"),
               func.count(calls.c.rating).label("responses"),
               func.coalesce(func.sum(calls.c.rating), 0).label("rating_sum"),
               func.coalesce(func.sum(calls.c.converted), 0).label("converted"))
        .where(calls.c.landing_url.is_not(None))
        .group_by(page)
        .order_by(desc("calls"), binary(page))
        .limit(rng.limit)
    )
    found = (await db.execute(statement)).all()
    pairs = attributions(calls, window, landing_page(calls).label("page"))
    keyed = (select(pairs.c.page, pairs.c.conversion_id, pairs.c.cents)
             .where(pairs.c.page.is_not(None)).distinct().subquery())
    money_of = {r.page: (int(r.n), int(r.cents)) for r in await db.execute(
        select(keyed.c.page, func.count().label("n"), func.sum(keyed.c.cents).label("cents")).group_by(keyed.c.page))}
    rows = []
    for r in found:
        conversions, revenue_cents = money_of.get(r.page, (0, 0))
        rows.append((r.page, int(r.calls), int(r.callers), int(r.landed), int(r.responses),
                     ratio(r.responses, r.calls), ratio(int(r.rating_sum), r.responses), int(r.converted),
                     ratio(int(r.converted), r.calls), conversions, money(revenue_cents)))
    return Report("landing_pages", LANDING_COLUMNS, rows)
