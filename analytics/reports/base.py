"""What every report is built from: the calls in range (one CTE, one row per call), attribution of conversions to
those calls, and the Report value the registry returns.

Definitions (analytics/generator_truth.py's, which the tests hold the reports to):

- Calls in range: `calls` rows whose `created_at` has a local date from `start` to `end`, on the site, of the queue,
  of the channel (analytics/reports/filters.py).
- Outcome: answered (`answered_at` set), abandoned (not answered, end reason caller-cancelled or
  caller-disconnected), missed (not answered, end reason no-agent, agent-declined, agent-disconnected or failed); a
  call still in progress is only offered.
- Attribution: a conversion is attributed to a call when both are on the same site, have the same `visitor_id` and
  `call.ended_at < conversion.ts <= call.ended_at + window` (analytics/journey.py's rule). The conversion may lie
  after the end of the range. Money is summed in whole cents.
- The person of a call: its `agent_id` (the agent who answered, or who was ringing when the caller hung up), and for
  a seller call the seller of its queue even when the call never rang through.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import BigInteger, and_, case, cast, exists, func, literal_column, select
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.selectable import CTE

from analytics.reports.filters import SLACK, Range
from analytics.reports.sqltime import epoch_us, later
from talk.models import CallRecord, Conversion, Queue, SurveyAnswer, Voicemail

ABANDONED_REASONS = ("caller-cancelled", "caller-disconnected")
MISSED_REASONS = ("no-agent", "agent-declined", "agent-disconnected", "failed")
US = 1_000_000


@dataclass(frozen=True)
class Report:
    """A table: `columns` names, `rows` tuples of plain values (str, int, float, bool, None; dates and times as ISO
    text), so both JSON and CSV are a direct rendering. `totals`: column sums where the report has them."""

    name: str
    columns: tuple[str, ...]
    rows: list[tuple]
    totals: dict[str, Any] | None = None

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]


def ratio(numerator: int | float | None, denominator: int | float | None) -> float | None:
    """numerator / denominator, unrounded; None when the denominator is 0 (or unknown)."""
    return numerator / denominator if denominator else None


def seconds(microseconds: int | None) -> float | None:
    return None if microseconds is None else microseconds / US


def attributed_to(conversion, call, window: timedelta) -> ColumnElement[bool]:
    """The attribution rule between a conversion row and a call row (tables, aliases or CTEs)."""
    return and_(conversion.c.site_id == call.c.site_id, conversion.c.visitor_id == call.c.visitor_id,
                conversion.c.ts > call.c.ended_at, conversion.c.ts <= later(call.c.ended_at, window))


def cents(value) -> ColumnElement[int]:
    """A money amount as whole cents (exact; SQLite keeps NUMERIC as REAL)."""
    return cast(func.round(value * 100), BigInteger)


def calls_in(rng: Range, window: timedelta, all_queues: bool = False, name: str = "calls_in") -> CTE:
    """The calls in range, one row each: the call's columns, `local_s` (local wall-clock seconds of created_at),
    `person_id`, `rating` (its survey answer or NULL), `voicemails` (how many) and `converted` (1 when at least one
    conversion is attributed to it, else 0). `all_queues`: ignore the queue and channel filters."""
    c = CallRecord.__table__
    local_s = rng.local_seconds(c.c.created_at)
    converted = exists().where(attributed_to(Conversion.__table__, c, window))
    voicemails = (select(func.count()).select_from(Voicemail.__table__)
                  .where(Voicemail.__table__.c.call_id == c.c.id).scalar_subquery())
    q = Queue.__table__
    sa = SurveyAnswer.__table__
    statement = (
        select(c.c.id, c.c.site_id, c.c.queue_id, c.c.agent_id, c.c.visitor_id, c.c.channel, c.c.has_journey,
               c.c.session_id, c.c.created_at, c.c.answered_at, c.c.ended_at, c.c.end_reason, c.c.landing_url,
               local_s.label("local_s"), func.coalesce(c.c.agent_id, q.c.seller_id).label("person_id"),
               sa.c.rating, voicemails.label("voicemails"),
               case((converted, 1), else_=0).label("converted"))
        .join(q, q.c.id == c.c.queue_id)
        .outerjoin(sa, sa.c.call_id == c.c.id)
        .where(*in_range(rng, c, all_queues))
    )
    return statement.cte(name)


def attributions(calls: CTE, window: timedelta, *extra, name: str = "attributed") -> CTE:
    """(call, conversion) pairs of the calls in range: call_id, visitor_id, conversion_id, cents, the delay from the
    call's end to the purchase in microseconds, and `extra` labelled expressions over `calls` (group keys: so the
    pairs need not be joined back to the calls)."""
    conv = Conversion.__table__
    return (
        select(*extra, calls.c.id.label("call_id"), calls.c.visitor_id, conv.c.id.label("conversion_id"),
               cents(conv.c.value).label("cents"),
               (epoch_us(conv.c.ts) - epoch_us(calls.c.ended_at)).label("delay_us"))
        .select_from(calls).join(conv, attributed_to(conv, calls, window))
        .cte(name)
    )


def answered(calls) -> ColumnElement[bool]:
    return calls.c.answered_at.is_not(None)


def abandoned(calls) -> ColumnElement[bool]:
    return and_(calls.c.answered_at.is_(None), calls.c.end_reason.in_(ABANDONED_REASONS))


def missed(calls) -> ColumnElement[bool]:
    return and_(calls.c.answered_at.is_(None), calls.c.end_reason.in_(MISSED_REASONS))


def count_if(condition) -> ColumnElement[int]:
    return func.count(case((condition, literal_column("1"))))


def outcome_counts(calls) -> list[ColumnElement]:
    """calls_offered, calls_answered, calls_abandoned, calls_missed, voicemails (aggregates over `calls`)."""
    return [func.count().label("calls_offered"), count_if(answered(calls)).label("calls_answered"),
            count_if(abandoned(calls)).label("calls_abandoned"), count_if(missed(calls)).label("calls_missed"),
            func.coalesce(func.sum(calls.c.voicemails), 0).label("voicemails")]


OUTCOME_COLUMNS = ("calls_offered", "calls_answered", "calls_abandoned", "calls_missed", "voicemails")


def in_range(rng: Range, c, all_queues: bool = False) -> list[ColumnElement[bool]]:
    """WHERE conditions putting a `calls` table (or alias) in range (as calls_in does). Where the local date never
    goes backwards that is exactly lo <= created_at < hi (which planners estimate well); elsewhere the local date of
    each call in a wider window is compared."""
    if rng.monotonic:
        conditions = [c.c.created_at >= rng.lo, c.c.created_at < rng.hi]
    else:
        local_day = rng.local_seconds(c.c.created_at) // 86400
        conditions = [c.c.created_at >= rng.lo - SLACK, c.c.created_at < rng.hi + SLACK,
                      local_day.between(rng.first_day, rng.last_day)]
    if rng.site_id is not None:
        conditions.append(c.c.site_id == rng.site_id)
    if not all_queues:
        if rng.queue_ids is not None:
            conditions.append(c.c.queue_id.in_(rng.queue_ids))
        if rng.channel is not None:
            conditions.append(c.c.channel == rng.channel)
    return conditions


@dataclass(frozen=True)
class Spread:
    """Order statistics of integer microsecond values: n, sum, mean, median (mean of the two middle values when n
    is even), p90 (nearest rank: the smallest value with at least 90% of the values at or below it) and max."""

    n: int = 0
    total_us: int = 0
    median_us: float | None = None
    p90_us: int | None = None
    max_us: int | None = None

    @property
    def mean_us(self) -> float | None:
        return ratio(self.total_us, self.n)

    def seconds(self) -> dict[str, float | None]:
        return {"avg": seconds(self.mean_us), "median": seconds(self.median_us), "p90": seconds(self.p90_us),
                "max": seconds(self.max_us), "total": seconds(self.total_us) if self.n else 0.0}


async def spread(db, values) -> Spread:
    """Order statistics of the one column of `values` (a subquery), in one query with window functions."""
    (column,) = values.c
    n_over = func.count().over()
    ranked = select(column.label("v"), func.row_number().over(order_by=column).label("rn"), n_over.label("n"),
                    func.sum(column).over().label("total")).select_from(values).subquery()
    n, rn = ranked.c.n, ranked.c.rn
    picks = (await db.execute(
        select(ranked.c.v, rn, n, ranked.c.total)
        .where((rn == (n + 1) // 2) | (rn == (n + 2) // 2) | (rn == (9 * n + 9) // 10) | (rn == n))
    )).all()
    if not picks:
        return Spread()
    at = {row.rn: int(row.v) for row in picks}
    count = int(picks[0].n)
    return Spread(count, int(picks[0].total), (at[(count + 1) // 2] + at[(count + 2) // 2]) / 2,
                  at[(9 * count + 9) // 10], at[count])
