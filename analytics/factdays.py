"""Day sums of the call facts: what a report over a long range adds up per UTC day instead of reading every row.

A report over a year at 10M page views reads 150,000 calls and 270,000 page rows per direction. Most of what the
summary, conversion and pages reports count is additive, so two tables keep it per UTC day of the call, site, queue
and channel (and path): `call_fact_days` and `call_fact_page_days`. A report reads:

- the sums for the days wholly inside its range (`Split.sum_days`), and of those days' rows only the ones the sums
  cannot count, each by a partial index: calls of repeat callers (counted DISTINCT) and calls whose visitor's nearest
  page views or conversions lie on other days (`unsummed`: whether they were seen or bought in a range then depends
  on more than the range holding their day), the repeat callers' attributed conversions, and the page rows counted
  DISTINCT (analytics/callpages.py's flags);
- every row of the rest (`Split.row_spans`): the partial days at the ends of the range, and the days whose sums
  cannot be used as they are.

What a summed day's sums count, the calls it leaves to be read do not, and the other way round: a once-caller (a
visitor with one stored call: repeat_caller 0) is one caller, their conversions are attributed to that call alone,
and seen in every range holding their day when they viewed a page on it (`seen_in_day`) — the sums count those; a
once-caller with no page view at all is seen in none.

Exactness, whatever the state of the sums:

- The sums are written from the stored rows (`rebuild`), never adjusted. Whatever changes stored rows (refresh, in
  analytics/callfacts.py) marks their days dirty in the same transaction (`mark_dirty`), and the rebuild clears the
  mark in the transaction that rewrites the day, under the refresh lock. A report reads a dirty day's rows.
- The sums count every stored row of the day, valid or not. A report reads row by row the days holding stored facts
  of stale calls, and the days holding stored calls of the stale calls' visitors: the calls computed from raw rows
  make the stored rows of their visitor count DISTINCT (analytics/reports/base.py's count_callers, pages.py),
  which the sums cannot know. (Page views shared across visitors, through a session id sent with two visitor ids,
  are taken back from the sums by the pages report itself.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, case, delete, false, func, insert, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from analytics.reports.base import (
    RATINGS, US, answered, count_if, outcome_counts, site_queue_channel, stale_visitors, survey_counts,
)
from analytics.reports.filters import Range
from talk.models import (
    CallFactConversion, CallFactDay, CallFactDirtyDay, CallFactPage, CallFactPageDay, CallFactPersonDay, CallFacts,
    CallFactsStale,
)

DAY_US = 86_400 * US
PAGE_KEYS = ("after", "day", "site_id", "queue_id", "channel", "path")
PAGE_SUMS = ("views", "calls", "callers", "converted")
CALL_COLUMNS = ("day", "site_id", "queue_id", "channel", "offered", "answered", "abandoned", "missed", "voicemails",
                "responses", "rating_sum", "once_calls", "once_converted", "once_conversions", "once_cents",
                "last_calls", "last_seen", "last_seen_bought")


def day_of(created_us: int) -> int:
    return created_us // DAY_US


def runs(days: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted days as runs of consecutive days (first, last)."""
    found: list[tuple[int, int]] = []
    for day in sorted(set(days)):
        if found and found[-1][1] == day - 1:
            found[-1] = (found[-1][0], day)
        else:
            found.append((day, day))
    return found


async def mark_dirty(db: AsyncSession, created_us: Iterable[int]) -> None:
    """Mark the UTC days of these calls' created_us dirty (in the transaction that changes their stored rows)."""
    days = sorted({day_of(us) for us in created_us})
    if not days:
        return
    insert_of = pg_insert if db.bind.dialect.name == "postgresql" else sqlite_insert
    await db.execute(insert_of(CallFactDirtyDay).on_conflict_do_nothing(), [{"day": day} for day in days])


def page_sums(lo_us: int, hi_us: int):
    """SELECT: call_fact_page_days' rows of the stored page rows of calls created in [lo_us, hi_us)."""
    p = CallFactPage.__table__
    day = (p.c.created_us // DAY_US).label("day")
    first = p.c.first_in_call == 1
    keys = [p.c.after, day, p.c.site_id, p.c.queue_id, p.c.channel, p.c.path]
    return (select(*keys, count_if(p.c.event_shared == 0), count_if(first),
                   count_if(and_(first, p.c.visitor_shared == 0)), count_if(and_(first, p.c.converted == 1)))
            .where(p.c.created_us >= lo_us, p.c.created_us < hi_us).group_by(*keys))


PERSON_KEYS = ("day", "site_id", "queue_id", "channel", "person_id")
PERSON_FIGURES = ("calls", "answered", "talked", "talk_us", "converted", "responses", "rating_sum")
PERSON_SUMS = (*PERSON_FIGURES, *(f"rated_{rating}" for rating in RATINGS))
NO_PERSON = 0  # call_fact_person_days.person_id of calls with no person (account ids start at 1)


def person_figures(calls) -> list[ColumnElement]:
    """PERSON_FIGURES: aggregates over `calls` (call_facts, or calls_in's rows) that the person sums keep."""
    return [func.count().label("calls"), count_if(answered(calls)).label("answered"),
            count_if(calls.c.talk_us.is_not(None)).label("talked"),
            func.coalesce(func.sum(calls.c.talk_us), 0).label("talk_us"),
            func.coalesce(func.sum(calls.c.converted), 0).label("converted"),
            func.count(calls.c.rating).label("responses"),
            func.coalesce(func.sum(calls.c.rating), 0).label("rating_sum")]


def person_sums(lo_us: int, hi_us: int):
    """SELECT: call_fact_person_days' rows of the stored calls created in [lo_us, hi_us)."""
    f = CallFacts.__table__
    keys = [(f.c.created_us // DAY_US).label("day"), f.c.site_id, f.c.queue_id, f.c.channel,
            func.coalesce(f.c.person_id, NO_PERSON).label("person_id")]
    return (select(*keys, *person_figures(f), *(count_if(f.c.rating == rating) for rating in RATINGS))
            .where(f.c.created_us >= lo_us, f.c.created_us < hi_us).group_by(*keys))


def summed_people(days: Split, rng: Range, keys=("channel", "person_id")):
    """SELECT: the person sums of the days that serve, per `keys`, under PERSON_SUMS' names (person_id NULL for
    calls with no person)."""
    s = CallFactPersonDay.__table__
    columns = [case((s.c.person_id == NO_PERSON, None), else_=s.c.person_id).label("person_id")
               if key == "person_id" else s.c[key] for key in keys]
    return (select(*columns, *(func.sum(s.c[name]).label(name) for name in PERSON_SUMS))
            .where(days.summed(s.c.day), *site_queue_channel(rng, s, False)).group_by(*columns))


def _within_day(f, before, after) -> ColumnElement[bool]:
    """The call's nearest rows (`before`: at or before it, `after`: after it) include one on the call's UTC day."""
    start = f.c.created_us - f.c.created_us % DAY_US
    return or_(func.coalesce(before >= start, false()), func.coalesce(after < start + DAY_US, false()))


def seen_in_day(f) -> ColumnElement[bool]:
    """A page view of the visitor on the call's UTC day: the visitor was seen in every range holding that day."""
    return _within_day(f, f.c.seen_before_us, f.c.seen_after_us)


def bought_in_day(f) -> ColumnElement[bool]:
    return _within_day(f, f.c.bought_before_us, f.c.bought_after_us)


def undecided(f) -> ColumnElement[bool]:
    """Whether the call's visitor was seen, or seen and buying, in a range depends on more than the range holding
    the call's day: their nearest page views (conversions) lie neither on that day nor nowhere."""
    seen_never = and_(f.c.seen_before_us.is_(None), f.c.seen_after_us.is_(None))
    bought_never = and_(f.c.bought_before_us.is_(None), f.c.bought_after_us.is_(None))
    return or_(and_(~seen_in_day(f), ~seen_never), and_(seen_in_day(f), ~bought_in_day(f), ~bought_never))


def unsummed(f) -> ColumnElement[bool]:
    """call_facts.unsummed: the calls the sums leave to be read: repeat callers (counted DISTINCT where a queue or
    channel filter applies), and the undecided calls."""
    return or_(f.c.repeat_caller == 1, undecided(f))


def last_call(f) -> ColumnElement[bool]:
    """The visitor's last stored call (of a visitor on one site): counted by the sums as one caller, seen (and
    buying) in every range holding its day when its day says so."""
    return and_(f.c.next_us.is_(None), f.c.multisite == 0)


def call_sums(lo_us: int, hi_us: int):
    """SELECT: call_fact_days' rows of the stored calls created in [lo_us, hi_us)."""
    f, p = CallFacts.__table__, CallFactConversion.__table__
    day = (f.c.created_us // DAY_US).label("day")
    once = f.c.repeat_caller == 0
    # The conversions of once-callers' calls (by the pairs' own copy of repeat_caller, which the reports read them
    # by): each attributed to that call alone, as attribution needs the visitor.
    pairs = (select(p.c.created_us, p.c.call_id, func.count().label("n"), func.sum(p.c.cents).label("cents"))
             .where(p.c.created_us >= lo_us, p.c.created_us < hi_us, p.c.repeat_caller == 0)
             .group_by(p.c.created_us, p.c.call_id).subquery("pairs"))
    keys, last = [day, f.c.site_id, f.c.queue_id, f.c.channel], last_call(f)
    return (select(*keys, *outcome_counts(f), *survey_counts(f),
                   count_if(once), count_if(and_(once, f.c.converted == 1)),
                   func.coalesce(func.sum(pairs.c.n), 0), func.coalesce(func.sum(pairs.c.cents), 0),
                   count_if(last), count_if(and_(last, seen_in_day(f))),
                   count_if(and_(last, seen_in_day(f), bought_in_day(f))))
            .select_from(f.outerjoin(pairs, and_(pairs.c.created_us == f.c.created_us,
                                                 pairs.c.call_id == f.c.call_id)))
            .where(f.c.created_us >= lo_us, f.c.created_us < hi_us).group_by(*keys))


async def rebuild(db: AsyncSession, limit: int | None = None) -> int:
    """Rewrite the sums of the dirty days (up to `limit` of them) and clear their marks; the number of days. The
    caller holds the refresh lock (analytics/callfacts.py) and commits."""
    dirty = CallFactDirtyDay.__table__
    days = list(await db.scalars(select(dirty.c.day).order_by(dirty.c.day).limit(limit)))
    for first, last in runs(days):
        for sums, columns, rows_of in ((CallFactPageDay.__table__, [*PAGE_KEYS, *PAGE_SUMS], page_sums),
                                       (CallFactDay.__table__, CALL_COLUMNS, call_sums),
                                       (CallFactPersonDay.__table__, [*PERSON_KEYS, *PERSON_SUMS], person_sums)):
            await db.execute(delete(sums).where(sums.c.day >= first, sums.c.day <= last))
            await db.execute(insert(sums).from_select(columns, rows_of(first * DAY_US, (last + 1) * DAY_US)))
        await db.execute(delete(dirty).where(dirty.c.day >= first, dirty.c.day <= last))
    return len(days)


async def any_dirty(db: AsyncSession) -> bool:
    return await db.scalar(select(CallFactDirtyDay.day).limit(1)) is not None


@dataclass(frozen=True)
class Split:
    """A range's calls in two parts: the UTC days whose sums serve (`sum_days`, runs of days, both ends included)
    and the spans of created_us read row by row (`row_spans`, [lo, hi) each)."""

    sum_days: tuple[tuple[int, int], ...]
    row_spans: tuple[tuple[int, int], ...]

    def summed(self, day) -> ColumnElement[bool]:
        """WHERE term for the sums' rows of the days that serve."""
        if not self.sum_days:
            return false()
        return or_(*(and_(day >= first, day <= last) for first, last in self.sum_days))

    def in_summed_days(self, created_us) -> ColumnElement[bool]:
        """WHERE term for the stored rows of the days whose sums serve."""
        if not self.sum_days:
            return false()
        return or_(*(and_(created_us >= first * DAY_US, created_us < (last + 1) * DAY_US)
                     for first, last in self.sum_days))

    def in_row_spans(self, created_us) -> ColumnElement[bool]:
        """WHERE term for the stored rows read row by row."""
        if not self.row_spans:
            return false()
        return or_(*(and_(created_us >= lo, created_us < hi) for lo, hi in self.row_spans))


async def split(db: AsyncSession, rng: Range) -> Split | None:
    """How the range's stored rows are read, or None where the sums cannot serve (a recount, facts of another
    attribution window, local dates that go backwards, or no whole UTC day in the range)."""
    if rng.recount or not rng.facts or not rng.monotonic:
        return None
    lo, hi = rng.lo_us, rng.hi_us
    first, last = -(-lo // DAY_US), hi // DAY_US - 1
    if first > last:
        return None
    excluded = await _unsummable_days(db, first, last)
    sum_days = tuple(runs(day for day in range(first, last + 1) if day not in excluded))
    spans = [(lo, first * DAY_US), *((day * DAY_US, (day + 1) * DAY_US) for day in sorted(excluded)),
             ((last + 1) * DAY_US, hi)]
    return Split(sum_days, tuple(_merged((a, b) for a, b in spans if a < b)))


def _merged(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if found and found[-1][1] >= lo:
            found[-1] = (found[-1][0], max(found[-1][1], hi))
        else:
            found.append((lo, hi))
    return found


async def _unsummable_days(db: AsyncSession, first: int, last: int) -> set[int]:
    """The days from `first` to `last` whose sums must not be used: dirty ones, and those holding stored facts of
    stale calls or stored calls of the stale calls' visitors (few: the keeper refreshes stale calls within seconds)."""
    dirty, f, stale = CallFactDirtyDay.__table__, CallFacts.__table__, CallFactsStale.__table__
    days = set(await db.scalars(select(dirty.c.day).where(dirty.c.day >= first, dirty.c.day <= last)))
    # Two statements, each by its index (an OR of the two would have PostgreSQL read every stored call).
    for touched in (select(f.c.created_us).where(f.c.call_id.in_(select(stale.c.call_id))),
                    select(f.c.created_us).where(f.c.visitor_id.in_(stale_visitors()))):
        days.update(day for day in map(day_of, await db.scalars(touched)) if first <= day <= last)
    return days


def summed_calls(days: Split, rng: Range, all_queues: bool, outcomes: bool = True, last: bool = False):
    """SELECT: one row, the sums of the days that serve, under call_counts' names: with `outcomes` the outcomes and
    survey figures; `callers` the once-callers, or with `last` the last calls and those seen and buying
    (`seen_callers`, `seen_buying_callers`)."""
    s = CallFactDay.__table__
    names = {"calls_offered": s.c.offered, "calls_answered": s.c.answered, "calls_abandoned": s.c.abandoned,
             "calls_missed": s.c.missed, "voicemails": s.c.voicemails, "survey_responses": s.c.responses,
             "survey_rating_sum": s.c.rating_sum} if outcomes else {}
    if last:
        names |= {"callers": s.c.last_calls, "seen_callers": s.c.last_seen,
                  "seen_buying_callers": s.c.last_seen_bought}
    else:
        names["callers"] = s.c.once_calls
    return select(*(func.sum(column).label(name) for name, column in names.items())).where(
        days.summed(s.c.day), *site_queue_channel(rng, s, all_queues))


def summed_conversions(days: Split, rng: Range):
    """SELECT: one row, the once-callers' converted callers, conversions and cents of the days that serve."""
    s = CallFactDay.__table__
    return select(func.sum(s.c.once_converted).label("converted"), func.sum(s.c.once_conversions).label("n"),
                  func.sum(s.c.once_cents).label("cents")).where(days.summed(s.c.day),
                                                                  *site_queue_channel(rng, s, False))
