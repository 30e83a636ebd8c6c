"""call_counts' figures from the day sums (analytics/factdays.py) and the few calls the sums leave to be read.

Two ways of counting distinct callers without a DISTINCT over every call of the range:

- By their last call in range (`_last_calls`, any queue and channel): a visitor's calls form a chain, each stored
  call knowing when the visitor's next one was (`call_facts.next_us`). The calls in [lo, hi) with no next call
  before hi are one per distinct caller, and the page views and conversions nearest that call tell whether the
  caller was seen, and bought, in [lo, hi) (a page view in range at or before it is at or before its nearest one; one
  after it, at or after its first one after). So the sums count each day's last calls (next_us NULL), and of the
  summed days only two small sets are read: calls followed by one at or after hi, and last calls whose day does not
  tell seen or bought (`factdays.undecided`). The calls of visitors with stale calls (whose stored links do not know
  the stale calls) and of visitor ids used on several sites (one caller, a (site, visitor) pair per site) are
  counted DISTINCT.
- Within a queue or channel filter (`_filtered_calls`) a visitor's last call may be of another queue: once-callers
  (a visitor with one stored call) are summed, the repeat callers' calls read and counted DISTINCT per visitor.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import BigInteger, String, and_, case, cast, func, literal, literal_column, null, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from analytics import factdays
from analytics.reports.base import (
    OUTCOME_COLUMNS, READ_COLUMNS, calls_in, count_distinct, count_if, live_calls, outcome_counts,
    site_queue_channel, stale_visitors, survey_counts, unsummed_calls,
)
from analytics.reports.filters import Range
from analytics.reports.sqltime import binary, unindexed
from talk.models import CallFacts, CallFactsStale

SURVEY_COLUMNS = ("survey_responses", "survey_rating_sum")
SEEN_COLUMNS = ("seen_callers", "seen_buying_callers")


async def summed_call_counts(db: AsyncSession, rng: Range, window: timedelta,
                             days: factdays.Split) -> dict[str, int]:
    """OUTCOME_COLUMNS, survey_responses, survey_rating_sum and callers of the calls of the range (of its queue and
    channel), seen_callers and seen_buying_callers of everyone's calls: the sums of the days that serve plus what
    the calls read give."""
    everyone = await _added(db, _last_calls(rng, window, days),
                            factdays.summed_calls(days, rng, all_queues=True, last=True))
    if rng.queue_ids is None and rng.channel is None:
        return everyone
    filtered = await _added(db, _filtered_calls(rng, window, days),
                            factdays.summed_calls(days, rng, all_queues=False))
    return filtered | {name: everyone[name] for name in SEEN_COLUMNS}


async def _added(db: AsyncSession, read, summed) -> dict[str, int]:
    """The figures of the calls read plus the sums', by the sums' names."""
    found = (await db.execute(read)).one()._mapping
    sums = (await db.execute(summed)).one()._mapping
    return {name: int(found[name] or 0) + int(sums[name] or 0) for name in sums.keys()}


def _outcomes(read, here) -> list:
    """The outcome and survey figures of the rows `here` (the others are in the sums)."""
    return [*outcome_counts(read, here), *survey_counts(read, here)]


# ---------------------------------------------------------------------------------------------- by last call

ROWS, FOLLOWED_LATER, UNDECIDED, MULTISITE_ROWS = 0, 1, 2, 3  # where a row read comes from (`part`)


def _last_calls(rng: Range, window: timedelta, days: factdays.Split):
    """SELECT: everyone's figures (any queue and channel) of the calls read: every call of the row spans, and of
    the summed days the calls followed by one at or after hi, the undecided last calls and the multi-site visitors'
    calls (each read by its partial index: talk.models' FOLLOWED, UNDECIDED_LAST, MULTISITE)."""
    edge, f = calls_in(rng, window, all_queues=True, name="everyone", days=days), CallFacts.__table__
    one, none = literal_column("1"), cast(null(), BigInteger)
    columns = ("site_id", "visitor_id", "next_us", "multisite", *READ_COLUMNS[4:])
    read = union_all(
        select(*(edge.c[name] for name in columns), edge.c.outcome, edge.c.voicemails, edge.c.rating,
               literal_column(str(ROWS)).label("part")),
        _summed_rows(rng, days, FOLLOWED_LATER, f.c.next_us.is_not(None), f.c.next_us >= rng.hi_us,
                     f.c.multisite == 0, by_day=False),
        # (next_us, NULL on these rows, is not in their index: named, it would be read from the table.)
        _summed_rows(rng, days, UNDECIDED, f.c.undecided == one, f.c.next_us.is_(None), f.c.multisite == 0,
                     next_us=none),
        _summed_rows(rng, days, MULTISITE_ROWS, f.c.multisite == one, next_us=none),
    ).subquery("read")
    return _count_last(read, rng)


def _summed_rows(rng: Range, days: factdays.Split, part: int, *conditions, next_us=None, by_day: bool = True):
    """SELECT: _last_calls' columns of the stored valid calls of the summed days (any queue) that are `conditions`
    (a partial index's terms first, spelled with literals: the planners match them, not bound parameters).
    `by_day` False: SQLite must not read them by created_us (the primary key: every call of the days)."""
    f, stale = CallFacts.__table__, CallFactsStale.__table__
    created_us = f.c.created_us if by_day else unindexed(f.c.created_us)
    none = null()
    return (select(f.c.site_id, f.c.visitor_id, f.c.next_us if next_us is None else next_us.label("next_us"),
                   f.c.multisite, *(f.c[name] for name in READ_COLUMNS[4:]), none, none, none,
                   literal_column(str(part)))
            .where(*conditions, days.in_summed_days(created_us), *site_queue_channel(rng, f, all_queues=True),
                   f.c.call_id.not_in(select(stale.c.call_id))))


def _count_last(read, rng: Range):
    """SELECT over _last_calls' rows: the outcomes of the row spans' calls, and the callers, seen callers and seen
    buying callers the sums do not count: by their last call in range, or DISTINCT (stale or multi-site visitors)."""
    c = read.c
    distinct = or_(c.multisite == 1, c.visitor_id.in_(stale_visitors()))
    last = and_(~distinct, or_(c.next_us.is_(None), c.next_us >= rng.hi_us))
    seen = or_(c.seen_before_us >= rng.lo_us, c.seen_after_us < rng.hi_us)
    seen_bought = and_(seen, or_(c.bought_before_us >= rng.lo_us, c.bought_after_us < rng.hi_us))
    # An undecided last call is a caller in the sums, seen (and buying) there only when its day says so.
    undecided = c.part == UNDECIDED
    seen_here = or_(~undecided, ~factdays.seen_in_day(read))
    both_here = or_(~undecided, ~and_(factdays.seen_in_day(read), factdays.bought_in_day(read)))
    pair = cast(c.site_id, String) + literal(" ") + c.visitor_id
    return select(
        *_outcomes(read, c.part == ROWS),
        (count_if(and_(last, ~undecided)) + count_distinct(binary(c.visitor_id), distinct)).label("callers"),
        (count_if(and_(last, seen, seen_here)) + count_distinct(binary(pair), and_(distinct, seen)))
        .label("seen_callers"),
        (count_if(and_(last, seen_bought, both_here)) + count_distinct(binary(pair), and_(distinct, seen_bought)))
        .label("seen_buying_callers"),
    )


# ---------------------------------------------------------------------------------------------- within filters

def _filtered_calls(rng: Range, window: timedelta, days: factdays.Split):
    """SELECT: the outcomes, survey figures and callers of the calls read within the queue and channel filters: all
    of those of the row spans, and the unsummed ones of the summed days (for their DISTINCT callers), in two steps:
    per (site, visitor) of the callers counted DISTINCT (a call of its own for the others), then over those groups.
    PostgreSQL hashes the first step, where DISTINCT aggregates sorted every row."""
    edge, live = calls_in(rng, window, name="calls_in", days=days), live_calls(rng, window, name="calls_once_live")
    none = null()
    read = union_all(
        select(*(edge.c[column] for column in READ_COLUMNS), edge.c.outcome, edge.c.voicemails, edge.c.rating,
               literal_column("0").label("summed")),
        unsummed_calls(rng, days).add_columns(none, none, none, literal_column("1")),
    ).subquery("read")
    c, not_summed = read.c, read.c.summed == 0
    once = and_(c.repeat_caller == 0, c.visitor_id.not_in(select(live.c.visitor_id)))
    once_key = case((once, c.id)).label("once_key")
    groups = select(c.visitor_id, once_key, *_outcomes(read, not_summed),
                    count_if(and_(once, not_summed)).label("once_callers"),
                    ).group_by(c.site_id, c.visitor_id, once_key).subquery("groups")
    g = groups.c
    sums = [func.sum(g[name]).label(name) for name in (*OUTCOME_COLUMNS, *SURVEY_COLUMNS)]
    return select(*sums, (func.sum(g.once_callers) + count_distinct(binary(g.visitor_id), g.once_key.is_(None)))
                  .label("callers"))
