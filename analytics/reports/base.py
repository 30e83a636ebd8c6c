"""What every report is built from: the calls in range (one CTE, one row per call), attribution of conversions to
those calls, and the Report value the registry returns.

The calls in range come from the call facts (analytics/callfacts.py: one stored row per call, with its outcome,
durations, rating, voicemails, conversion, landing page and source) for calls whose facts are valid, and are
computed from the raw rows, by the very expressions the facts are computed with (`live_facts`), for the others —
the calls in progress or just written, or all of them for `recount` or another attribution window.

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

from sqlalchemy import (
    BigInteger, Integer, and_, case, cast, desc, exists, func, literal, literal_column, null, select, union, union_all,
)
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.selectable import CTE

from analytics.reports.filters import SLACK, Range
from analytics.reports.sqltime import binary, epoch_us, later, position, unindexed
from talk.models import (
    CallFactConversion, CallFacts, CallFactsStale, CallRecord, Conversion, PageEvent, Queue,
    SurveyAnswer, Voicemail,
)

ABANDONED_REASONS = ("caller-cancelled", "caller-disconnected")
MISSED_REASONS = ("no-agent", "agent-declined", "agent-disconnected", "failed")
US = 1_000_000
RATINGS = (1, 2, 3, 4, 5)  # the survey's ratings


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


OUTCOME_OFFERED, OUTCOME_ANSWERED, OUTCOME_ABANDONED, OUTCOME_MISSED = 0, 1, 2, 3
TALK_CALL = "talk_call="


def landing_page(calls):
    """SQL: the call's landing URL without the `talk_call` parameter Talk appends last (with its '?' or '&')."""
    at = position(calls.c.landing_url, literal(TALK_CALL))
    return case((at > 1, func.substr(calls.c.landing_url, 1, at - 2)), else_=calls.c.landing_url)


def own_landing_view(event, calls, call_id=None):
    """The page view is of the landing page this call sent the caller to (the call API leaves it out)."""
    return position(event.c.url, literal(TALK_CALL) + (calls.c.id if call_id is None else call_id)) > 0


def live_facts(window: timedelta) -> list[ColumnElement]:
    """A call's facts (CallFacts' columns but the source ones) computed from the raw rows: the columns of a
    select from `calls` joined to its queue and outer-joined to its survey answer (`fact_sources`)."""
    c, q, sa = CallRecord.__table__, Queue.__table__, SurveyAnswer.__table__
    e = PageEvent.__table__.alias("landing_view")  # never correlated with a page view the caller joins
    b = Conversion.__table__.alias("purchase")
    converted = exists().where(attributed_to(Conversion.__table__, c, window))
    # An INTEGER like call_facts.voicemails (count() is a BIGINT): where a column's type differs between the two
    # halves of calls_in's UNION ALL, PostgreSQL cannot flatten it and copies every row of the facts through a
    # subquery of all their columns (the summary's pass over a year's calls: 0.9x with the types alike).
    voicemails = cast(select(func.count()).select_from(Voicemail.__table__)
                      .where(Voicemail.__table__.c.call_id == c.c.id).scalar_subquery(), Integer)
    landed = exists().where(unindexed(e.c.site_id) == c.c.site_id, e.c.visitor_id == c.c.visitor_id,
                            own_landing_view(e, c))
    is_answered = c.c.answered_at.is_not(None)
    return [
        c.c.id.label("call_id"), c.c.site_id, c.c.queue_id,
        func.coalesce(c.c.agent_id, q.c.seller_id).label("person_id"),
        c.c.visitor_id, c.c.channel, c.c.has_journey, c.c.session_id, c.c.created_at, c.c.answered_at, c.c.ended_at,
        c.c.end_reason, epoch_us(c.c.created_at).label("created_us"),
        case((is_answered, OUTCOME_ANSWERED), (c.c.end_reason.in_(ABANDONED_REASONS), OUTCOME_ABANDONED),
             (c.c.end_reason.in_(MISSED_REASONS), OUTCOME_MISSED), else_=OUTCOME_OFFERED).label("outcome"),
        case((is_answered, epoch_us(c.c.answered_at) - epoch_us(c.c.created_at))).label("wait_us"),
        case((and_(is_answered, c.c.ended_at.is_not(None)), epoch_us(c.c.ended_at) - epoch_us(c.c.answered_at)))
        .label("talk_us"),
        sa.c.rating, case((sa.c.comment.is_not(None), 1), else_=0).label("commented"), voicemails.label("voicemails"),
        case((converted, 1), else_=0).label("converted"),
        nearest_us(c, e, e.c.ts <= c.c.created_at, func.max).label("seen_before_us"),
        nearest_us(c, e, e.c.ts > c.c.created_at, func.min).label("seen_after_us"),
        nearest_us(c, b, b.c.ts <= c.c.created_at, func.max).label("bought_before_us"),
        nearest_us(c, b, b.c.ts > c.c.created_at, func.min).label("bought_after_us"),
        landing_page(c).label("landing_page"),
        case((and_(c.c.has_journey.is_(True), landed), 1), else_=0).label("landed"),
    ]


def nearest_us(c, rows, when, pick) -> ColumnElement[int]:
    """SQL: epoch microseconds of the `ts` picked (max/min) of the call's visitor's rows (page views, conversions:
    by their (visitor_id, ts) index) on the call's site that are `when`."""
    ts = select(pick(rows.c.ts)).where(rows.c.visitor_id == c.c.visitor_id, unindexed(rows.c.site_id) == c.c.site_id,
                                       when)
    return epoch_us(ts.scalar_subquery())


def fact_sources():
    """FROM of live_facts: the calls with their queue and survey answer."""
    c, q, sa = CallRecord.__table__, Queue.__table__, SurveyAnswer.__table__
    return c.join(q, q.c.id == c.c.queue_id).outerjoin(sa, sa.c.call_id == c.c.id)


CALL_COLUMNS = ("site_id", "queue_id", "person_id", "visitor_id", "channel", "has_journey", "session_id",
                "created_at", "answered_at", "ended_at", "end_reason", "outcome", "wait_us", "talk_us", "rating",
                "commented", "voicemails", "converted", "seen_before_us", "seen_after_us", "bought_before_us",
                "bought_after_us", "landing_page", "landed")
# Stored with the facts (classified in Python: analytics/callfacts.py); NULL for calls computed from raw rows.
SOURCE_COLUMNS = ("source_kind", "source", "utm_source", "utm_medium", "utm_campaign")


def fresh_facts(rng: Range, all_queues: bool = False) -> tuple:
    """call_facts, and the WHERE terms for its rows of calls in range whose facts are valid (not stale)."""
    f = CallFacts.__table__
    return f, valid_rows(rng, f, all_queues)


def valid_rows(rng: Range, table, all_queues: bool = False) -> list[ColumnElement[bool]]:
    """WHERE terms for the rows of call_facts, call_fact_pages or call_fact_conversions of calls in range whose
    facts are valid (not stale)."""
    stale = CallFactsStale.__table__
    # NOT IN rather than NOT EXISTS: PostgreSQL hashes the (small) stale list once; for NOT EXISTS it plans a nested
    # loop over a table its statistics call empty, a scan per row.
    return [*facts_in_range(rng, table, all_queues), table.c.call_id.not_in(select(stale.c.call_id))]


def live_calls(rng: Range, window: timedelta, all_queues: bool = False, name: str = "live_calls") -> CTE:
    """The calls in range whose facts are not valid (all of them without `rng.facts`), computed from the raw rows:
    calls_in's columns, `fresh` 0."""
    c = CallRecord.__table__
    by_name = {column.name: column for column in live_facts(window)}
    live = select(c.c.id, *(by_name[column] for column in CALL_COLUMNS), by_name["created_us"],
                  literal_column("1").label("repeat_caller"), cast(null(), BigInteger).label("next_us"),
                  literal_column("1").label("multisite"), *(null().label(column) for column in SOURCE_COLUMNS),
                  rng.local_seconds(c.c.created_at).label("local_s"), literal_column("0").label("fresh"))
    if not rng.facts:
        return live.select_from(fact_sources()).where(*in_range(rng, c, all_queues)).cte(name)
    stale = CallFactsStale.__table__
    # The few stale calls, each looked up by id (the range's index would have SQLite read every call of the range).
    return (live.select_from(fact_sources())
            .where(c.c.id.in_(select(stale.c.call_id)), *in_range(rng, c, all_queues, by_id=True)).cte(name))


def stale_visitors():
    """SELECT: the visitor ids of the stale calls, by the call's row and by its stored facts (a deleted call has
    only the latter; a call moved to another visitor both). Their stored calls are counted DISTINCT: the stored
    facts' links between a visitor's calls (repeat_caller, next_us) do not know the stale calls."""
    stale, c, f = CallFactsStale.__table__, CallRecord.__table__, CallFacts.__table__
    ids = select(stale.c.call_id)
    return union(select(c.c.visitor_id).where(c.c.id.in_(ids)), select(f.c.visitor_id).where(f.c.call_id.in_(ids)))


def calls_in(rng: Range, window: timedelta, all_queues: bool = False, name: str = "calls_in", days=None) -> CTE:
    """The calls in range, one row each: id, CALL_COLUMNS (CallFacts' meaning), `created_us`, `repeat_caller`,
    `next_us`, `multisite` (1, NULL and 1 for calls computed from raw rows), `local_s` (local
    wall-clock seconds of created_at) and `fresh` (1: from call_facts, 0: computed from the raw rows). Calls with
    valid facts come from call_facts; the others (live_calls: stale, or all of them with `rng.recount` or another
    attribution window) are computed as call_facts would have them. `all_queues`: ignore the queue and channel
    filters. `days` (analytics/factdays.py's Split): only the calls of its row spans (of the others, the sums and
    `unsummed_calls` give what the reports need)."""
    live = select(live_calls(rng, window, all_queues, f"{name}_live"))
    if not rng.facts:
        return live.cte(name)
    fresh = _fresh_calls(rng, all_queues)
    if days is not None:
        fresh = fresh.where(days.in_row_spans(CallFacts.__table__.c.created_us))
    return union_all(fresh, live).cte(name).prefix_with("NOT MATERIALIZED")


def unsummed_calls(rng: Range, days, all_queues: bool = False):
    """SELECT: of the days whose sums serve (`days`, analytics/factdays.py's Split), the calls the sums leave to be
    read (`unsummed`), with what is read of them (talk.models.UNSUMMED_COLUMNS: on PostgreSQL an index-only scan)."""
    f, valid = fresh_facts(rng, all_queues)
    # (The partial index's term spelled with a literal: the planners match its predicate by it.)
    return (select(f.c.call_id.label("id"), *(f.c[name] for name in READ_COLUMNS[1:]))
            .where(f.c.unsummed == literal_column("1"), days.in_summed_days(f.c.created_us), *valid))


# unsummed_calls' columns (calls_in's names), all in talk.models.UNSUMMED_COLUMNS's index.
READ_COLUMNS = ("id", "site_id", "visitor_id", "repeat_caller", "seen_before_us", "seen_after_us", "bought_before_us",
                "bought_after_us", "created_us")


def _fresh_calls(rng: Range, all_queues: bool = False):
    """calls_in's rows of the calls with valid facts."""
    f, valid = fresh_facts(rng, all_queues)
    return (select(f.c.call_id.label("id"), *(f.c[column] for column in CALL_COLUMNS), f.c.created_us,
                   f.c.repeat_caller, f.c.next_us, f.c.multisite, *(f.c[column] for column in SOURCE_COLUMNS),
                   rng.local_seconds_us(f.c.created_us).label("local_s"), literal_column("1").label("fresh"))
            .where(*valid))


def latest_calls(rng: Range, window: timedelta, limit: int):
    """The `limit` latest calls in range (calls_in's columns, unordered): the latest of those with valid facts (read
    backwards along call_facts' primary key) and the latest of the others, together (the caller orders them).
    Ordering all of calls_in would sort every call of the range."""
    live = live_calls(rng, window, name="latest_live")
    parts = [select(live).order_by(desc(live.c.created_at), desc(binary(live.c.id))).limit(limit)]
    if rng.facts:
        fresh = _fresh_calls(rng)
        parts.insert(0, fresh.order_by(desc(fresh.selected_columns.created_us),
                                       desc(binary(fresh.selected_columns.id))).limit(limit))
    return union_all(*(select(part.subquery()) for part in parts)).subquery("latest")


def count_callers(calls, live, key=None, where=None) -> ColumnElement[int]:
    """SQL aggregate: distinct visitor_id (or `key`, an expression of the visitor) of the rows of `calls` (calls_in,
    or call_facts) (that are `where`), without a DISTINCT over the visitors of calls whose facts say they called
    once (repeat_caller 0) and who are not among the visitors of `live` (live_calls: calls computed from raw rows).
    """
    once = and_(calls.c.repeat_caller == 0, calls.c.visitor_id.not_in(select(live.c.visitor_id)))
    several = ~once
    if where is not None:
        once, several = and_(once, where), and_(several, where)
    # Byte-wise: PostgreSQL sorts a DISTINCT aggregate's values, comparing them by the locale's strcoll otherwise.
    return count_if(once) + count_distinct(binary(calls.c.visitor_id if key is None else key), several)


def attributions(rng: Range, window: timedelta, *names: str, name: str = "attributed", days=None) -> CTE:
    """(call, conversion) pairs of the calls in range (calls_in): call_id, visitor_id, conversion_id, cents, the
    delay from the call's end to the purchase in microseconds, and the calls' columns `names` (group keys: so the
    pairs need not be joined back to the calls). From call_fact_conversions alone for calls with valid facts.
    `days` (analytics/factdays.py's Split): of the days whose sums serve only the repeat callers' pairs (the sums
    hold the others')."""
    conv, calls = Conversion.__table__, live_calls(rng, window, name=f"{name}_live")
    live = (
        select(*(calls.c[n] for n in names), calls.c.id.label("call_id"), calls.c.visitor_id,
               conv.c.id.label("conversion_id"), cents(conv.c.value).label("cents"),
               (epoch_us(conv.c.ts) - epoch_us(calls.c.ended_at)).label("delay_us"))
        .select_from(calls).join(conv, attributed_to(conv, calls, window))
    )
    if not rng.facts:
        return live.cte(name)
    p = CallFactConversion.__table__
    # The pairs alone: they carry the call's site, queue, channel, visitor and group keys.
    fresh = (select(*(p.c[n] for n in names), p.c.call_id, p.c.visitor_id, p.c.conversion_id, p.c.cents,
                    p.c.delay_us)
             .where(*valid_rows(rng, p)))
    if days is None:
        return union_all(fresh, live).cte(name)
    # (The partial index's term spelled with a literal: the planners match its predicate by it.)
    repeat = fresh.where(p.c.repeat_caller == literal_column("1"), days.in_summed_days(p.c.created_us))
    return union_all(fresh.where(days.in_row_spans(p.c.created_us)), repeat, live).cte(name)


def answered(calls) -> ColumnElement[bool]:
    return calls.c.outcome == OUTCOME_ANSWERED


def abandoned(calls) -> ColumnElement[bool]:
    return calls.c.outcome == OUTCOME_ABANDONED


def missed(calls) -> ColumnElement[bool]:
    return calls.c.outcome == OUTCOME_MISSED


def count_if(condition) -> ColumnElement[int]:
    return func.count(case((condition, literal_column("1"))))


def count_distinct(value, condition) -> ColumnElement[int]:
    """SQL aggregate: distinct `value` of the rows where `condition` holds. A FILTER clause rather than DISTINCT
    over a CASE: PostgreSQL sorts every input row of a DISTINCT aggregate, the CASE's NULLs too, so the rows the
    condition leaves out cost nothing."""
    return func.count(value.distinct()).filter(condition)


def outcome_counts(calls, where=None) -> list[ColumnElement]:
    """calls_offered, calls_answered, calls_abandoned, calls_missed, voicemails (aggregates over `calls`, or over
    its rows that are `where`)."""
    return [_only(func.count(), where).label("calls_offered"),
            _only(count_if(answered(calls)), where).label("calls_answered"),
            _only(count_if(abandoned(calls)), where).label("calls_abandoned"),
            _only(count_if(missed(calls)), where).label("calls_missed"),
            func.coalesce(_only(func.sum(calls.c.voicemails), where), 0).label("voicemails")]


def survey_counts(calls, where=None) -> list[ColumnElement]:
    """survey_responses, survey_rating_sum (aggregates over `calls`, or over its rows that are `where`)."""
    return [_only(func.count(calls.c.rating), where).label("survey_responses"),
            func.coalesce(_only(func.sum(calls.c.rating), where), 0).label("survey_rating_sum")]


def _only(aggregate, where):
    return aggregate if where is None else aggregate.filter(where)


OUTCOME_COLUMNS = ("calls_offered", "calls_answered", "calls_abandoned", "calls_missed", "voicemails")


def in_range(rng: Range, c, all_queues: bool = False, by_id: bool = False) -> list[ColumnElement[bool]]:
    """WHERE conditions putting a `calls` table (or alias) in range (as calls_in does). Where the local date never
    goes backwards that is exactly lo <= created_at < hi (which planners estimate well); elsewhere the local date of
    each call in a wider window is compared. `by_id`: the calls are looked up by id, so SQLite must not pick the
    created_at index."""
    created_at = unindexed(c.c.created_at) if by_id else c.c.created_at
    if rng.monotonic:
        conditions = [created_at >= rng.lo, created_at < rng.hi]
    else:
        local_day = rng.local_seconds(c.c.created_at) // 86400
        conditions = [created_at >= rng.lo - SLACK, created_at < rng.hi + SLACK,
                      local_day.between(rng.first_day, rng.last_day)]
    return conditions + site_queue_channel(rng, c, all_queues)


def site_queue_channel(rng: Range, c, all_queues: bool) -> list[ColumnElement[bool]]:
    conditions = []
    if rng.site_id is not None:
        conditions.append(c.c.site_id == rng.site_id)
    if not all_queues:
        if rng.queue_ids is not None:
            conditions.append(c.c.queue_id.in_(rng.queue_ids))
        if rng.channel is not None:
            conditions.append(c.c.channel == rng.channel)
    return conditions


def facts_in_range(rng: Range, f, all_queues: bool = False) -> list[ColumnElement[bool]]:
    """in_range for call_facts, call_fact_pages or call_fact_conversions, on the integer created_us."""
    lo, hi = rng.lo_us, rng.hi_us
    if rng.monotonic:
        conditions = [f.c.created_us >= lo, f.c.created_us < hi]
    else:
        slack = int(SLACK.total_seconds()) * US
        local_day = rng.local_seconds_us(f.c.created_us) // 86400
        conditions = [f.c.created_us >= lo - slack, f.c.created_us < hi + slack,
                      local_day.between(rng.first_day, rng.last_day)]
    return conditions + site_queue_channel(rng, f, all_queues)
