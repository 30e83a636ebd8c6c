"""The ground truth of a generated data set (analytics/generator.py): every report figure, computed in Python from
the generator's own records, never from the database. Reports must equal these figures exactly.

Definitions. A summary is asked for a date range `start_date`..`end_date` (both included) in an IANA time zone `tz`
(zoneinfo), optionally filtered by `site` (key or id), `queue` (name or id) and `channel` ('agent' or 'seller').

- Day: an instant belongs to the calendar date it has in `tz`. A call belongs to the day of its `created_at` (a call
  from 23:58 to 00:04 belongs to the first day only). Page views and conversions are in range when
  `lo <= ts < hi`, `lo` = midnight starting `start_date` in `tz`, `hi` = midnight starting the day after `end_date`
  in `tz` (zoneinfo, fold=0; for a zone whose clocks skip midnight, the first instant of that day). The two rules
  agree in every zone whose clocks never go back across midnight (so for calls too: `lo <= created_at < hi`).
- Calls in range: rows of `calls` with `created_at` in range, on the site, of the queue, of the channel (filters
  that are None do not filter).
- `calls_offered`: the number of calls in range (every call row is an offered call, whatever its outcome).
- `calls_answered`: calls in range with `answered_at` not null (whatever their end reason: completed,
  caller-disconnected, agent-disconnected, failed after connecting).
- `calls_abandoned`: calls in range with `answered_at` null and `end_reason` in ('caller-cancelled',
  'caller-disconnected'): the caller gave up (hung up, closed the tab) while queued or ringing.
- `calls_missed`: calls in range with `answered_at` null and `end_reason` in ('no-agent', 'agent-declined',
  'agent-disconnected', 'failed'): nobody took the call. A call not yet ended (no end reason, no answer) is only
  offered, so answered + abandoned + missed == offered for data that has no live calls (generated data has none).
- `voicemails`: rows of `voicemails` whose call is a call in range (counted with the call's day, site, queue and
  channel, not by the voicemail's own created_at).
- `answer_rate`: calls_answered / calls_offered.
- `callers`: distinct `visitor_id` of the calls in range. A call without a journey (no consent) has a throwaway
  visitor id of its own, so each such call is one caller.
- Attribution: a conversion is attributed to a call when both are on the same site, have the same `visitor_id` and
  `call.ended_at < conversion.ts <= call.ended_at + window` (window = TALK_ATTRIBUTION_DAYS, the call API's rule in
  analytics/journey.py: exactly `window` after the end is inside, `window` + 1 µs is outside). A call without
  `ended_at` has no attributed conversions. The conversion may lie after the end of the range.
- `callers_converted`: callers with at least one conversion attributed to at least one of their calls in range.
- `conversions_after_calls`: distinct conversions attributed to at least one call in range (one conversion after
  two calls counts once). `revenue_after_calls`: the sum of their `value` (all generated conversions are EUR),
  exact to the cent, as a float rounded to 2 decimals.
- `conversion_rate_callers`: callers_converted / callers.
- `non_callers`: distinct `visitor_id` with at least one page view (`events`) in range on the site and no call in
  range on the site in any queue and channel (the queue and channel filters do not apply to non-callers). Visitors
  are per site (the reports add up the sites' non-callers); the generated data has one site.
- `non_callers_converted`: non-callers with at least one conversion on the site with `ts` in range.
  `conversion_rate_non_callers`: non_callers_converted / non_callers.
- `survey_responses`: rows of `survey_answers` whose call is a call in range; `survey_rating_sum` the sum of their
  ratings; `survey_average`: survey_rating_sum / survey_responses.
- Rates and averages are unrounded floats (numerator / denominator) and None when the denominator is 0; the
  integer numerators and denominators are in the summary too, so a report can be compared exactly.

`calls_per_day` gives, for every date of the range (zeros included), calls_offered, calls_answered, calls_abandoned,
calls_missed and voicemails with the same definitions and filters.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)

ANSWERED, ABANDONED, MISSED = "answered", "abandoned", "missed"
ABANDONED_REASONS = frozenset({"caller-cancelled", "caller-disconnected"})
MISSED_REASONS = frozenset({"no-agent", "agent-declined", "agent-disconnected", "failed"})


def to_datetime(us: int | None) -> datetime | None:
    """Microseconds since the epoch (the generator's clock) as an aware UTC datetime."""
    return None if us is None else EPOCH + timedelta(microseconds=us)


def to_us(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("naive datetime: give an aware one")
    return (value - EPOCH) // MICROSECOND


def outcome_of(answered_at: Any, end_reason: str | None) -> str | None:
    """answered, abandoned or missed (see the module docstring); None for a call still in progress."""
    if answered_at is not None:
        return ANSWERED
    if end_reason in ABANDONED_REASONS:
        return ABANDONED
    if end_reason in MISSED_REASONS:
        return MISSED
    return None


@dataclass(slots=True)
class CallFact:
    """One generated call as written to `calls` (times in microseconds since the epoch, UTC), with its survey and
    voicemail."""

    id: str
    visitor: int  # index in the truth's visitor table
    visitor_id: str
    site_id: int
    queue_id: int
    queue_name: str
    channel: str
    created_us: int
    ringing_us: int | None
    answered_us: int | None
    ended_us: int
    end_reason: str
    agent_id: int | None
    has_journey: bool
    session_id: str | None
    page_url: str
    page_title: str
    page_referrer: str
    disposition: str | None = None
    landing_url: str | None = None
    endpoint_id: int | None = None
    listing: str | None = None
    voicemail_id: str | None = None
    survey_rating: int | None = None
    survey_comment: str | None = None

    @property
    def outcome(self) -> str:
        return outcome_of(self.answered_us, self.end_reason)

    @property
    def created_at(self) -> datetime:
        return to_datetime(self.created_us)

    @property
    def ended_at(self) -> datetime:
        return to_datetime(self.ended_us)


@dataclass(frozen=True, slots=True)
class PageFact:
    """A page view of a visitor who called (kept so a call's expected journey can be told)."""

    ts_us: int
    session_id: str
    url: str
    path: str
    title: str
    referrer: str | None


@dataclass(repr=False)
class Truth:
    """What was generated, held compactly (a few tens of bytes per page view) and the figures derived from it."""

    def __repr__(self) -> str:  # short: asyncio and pytest print it (the full one runs to hundreds of megabytes)
        return (f"<Truth {self.site_key} {self.start:%Y-%m-%d %H:%M} .. {self.end:%Y-%m-%d %H:%M} UTC, "
                f"{len(self._visitor_ids)} visitors, {len(self._ts)} page views, {len(self.calls)} calls>")

    site_id: int
    site_key: str
    window: timedelta
    start: datetime  # the generated period: start <= every generated instant < end
    end: datetime
    calls: list[CallFact] = field(default_factory=list)
    scenarios: dict[str, Any] = field(default_factory=dict)  # the planted edge cases, by name (see generator.py)
    counts: dict[str, int] = field(default_factory=dict)  # rows written: visitors, sessions, events, calls, …
    seconds: float = 0.0  # how long generating and writing took
    # visitors: ids, and the page-view times of visitor i in _ts[_offsets[i]:_offsets[i + 1]] (sorted)
    _visitor_ids: list[str] = field(default_factory=list)
    _offsets: array = field(default_factory=lambda: array("q", [0]))
    _ts: array = field(default_factory=lambda: array("q"))
    # conversions, by index
    _conv_visitor: array = field(default_factory=lambda: array("q"))
    _conv_ts: array = field(default_factory=lambda: array("q"))
    _conv_cents: array = field(default_factory=lambda: array("q"))
    _conv_order: list[str] = field(default_factory=list)
    _conv_by_visitor: dict[int, list[int]] = field(default_factory=dict)
    _journeys: dict[int, list[PageFact]] = field(default_factory=dict)
    _calls_by_id: dict[str, CallFact] = field(default_factory=dict)

    # ----- filled by the generator -----

    def add_visitor(self, visitor_id: str, page_times: list[int]) -> int:
        index = len(self._visitor_ids)
        self._visitor_ids.append(visitor_id)
        self._ts.extend(sorted(page_times))
        self._offsets.append(len(self._ts))
        return index

    def add_journey(self, visitor: int, pages: list[PageFact]) -> None:
        self._journeys[visitor] = pages

    def add_call(self, call: CallFact) -> None:
        self.calls.append(call)
        self._calls_by_id[call.id] = call

    def add_conversion(self, visitor: int, ts_us: int, cents: int, order_id: str) -> None:
        self._conv_by_visitor.setdefault(visitor, []).append(len(self._conv_ts))
        self._conv_visitor.append(visitor)
        self._conv_ts.append(ts_us)
        self._conv_cents.append(cents)
        self._conv_order.append(order_id)

    # ----- reading -----

    @property
    def window_us(self) -> int:
        return self.window // MICROSECOND

    def call(self, call_id: str) -> CallFact:
        return self._calls_by_id[call_id]

    def visitor_id(self, visitor: int) -> str:
        return self._visitor_ids[visitor]

    def conversions_of(self, visitor: int) -> list[dict[str, Any]]:
        return [{"order_id": self._conv_order[i], "value": self._conv_cents[i] / 100, "currency": "EUR",
                 "ts": to_datetime(self._conv_ts[i])} for i in self._conv_by_visitor.get(visitor, [])]

    def attributed(self, call: CallFact) -> list[int]:
        """Indexes of the conversions attributed to the call, in time order."""
        if call.ended_us is None:
            return []
        last = call.ended_us + self.window_us
        found = [i for i in self._conv_by_visitor.get(call.visitor, []) if call.ended_us < self._conv_ts[i] <= last]
        return sorted(found, key=lambda i: (self._conv_ts[i], i))

    def expected_journey(self, call_id: str) -> dict[str, list]:
        """What GET /api/v1/calls/{id} should answer for the call: URLs of pages before and after, order ids of the
        conversions (analytics/journey.py's rules, at most 200 pages each)."""
        call = self._calls_by_id[call_id]
        pages = self._journeys.get(call.visitor, []) if call.has_journey else []
        before = [p for p in pages if p.session_id == call.session_id and p.ts_us <= call.created_us][-200:]
        last = call.ended_us + self.window_us
        after = [p for p in pages if call.ended_us < p.ts_us <= last and f"talk_call={call.id}" not in p.url][:200]
        return {"pages_before": [p.url for p in before], "pages_after": [p.url for p in after],
                "conversions": [self._conv_order[i] for i in self.attributed(call)]}

    # ----- figures -----

    @staticmethod
    def bounds(start_date: date, end_date: date, tz: str) -> tuple[int, int]:
        """[lo, hi) in microseconds since the epoch: from the midnight starting start_date to the one after end_date."""
        zone = ZoneInfo(tz)
        lo = datetime.combine(start_date, time(0), tzinfo=zone)
        hi = datetime.combine(end_date + timedelta(days=1), time(0), tzinfo=zone)
        return to_us(lo), to_us(hi)

    def _site_matches(self, site: str | int | None) -> bool:
        return site is None or site == self.site_id or site == self.site_key

    def _calls_in(self, start_date: date, end_date: date, zone: ZoneInfo, site, queue, channel) -> list[CallFact]:
        if not self._site_matches(site):
            return []
        return [c for c in self.calls
                if (queue is None or queue == c.queue_name or queue == c.queue_id)
                and (channel is None or channel == c.channel)
                and start_date <= c.created_at.astimezone(zone).date() <= end_date]

    def _has_view(self, visitor: int, lo: int, hi: int) -> bool:
        end = self._offsets[visitor + 1]
        i = bisect_left(self._ts, lo, self._offsets[visitor], end)
        return i < end and self._ts[i] < hi

    def summary(self, start_date: date, end_date: date, tz: str, site: str | int | None = None,
                queue: str | int | None = None, channel: str | None = None) -> dict[str, Any]:
        lo, hi = self.bounds(start_date, end_date, tz)
        calls = self._calls_in(start_date, end_date, ZoneInfo(tz), site, queue, channel)
        outcomes = [c.outcome for c in calls]
        callers = {c.visitor for c in calls}
        converted: set[int] = set()
        conversions: set[int] = set()
        for c in calls:
            found = self.attributed(c)
            if found:
                converted.add(c.visitor)
                conversions.update(found)
        ratings = [c.survey_rating for c in calls if c.survey_rating is not None]

        non_callers = non_callers_converted = 0
        if self._site_matches(site):
            anyone_called = {c.visitor for c in self._calls_in(start_date, end_date, ZoneInfo(tz), site, None, None)}
            for visitor in range(len(self._visitor_ids)):
                if visitor in anyone_called or not self._has_view(visitor, lo, hi):
                    continue
                non_callers += 1
                if any(lo <= self._conv_ts[i] < hi for i in self._conv_by_visitor.get(visitor, ())):
                    non_callers_converted += 1

        offered, answered = len(calls), outcomes.count(ANSWERED)
        return {
            "calls_offered": offered,
            "calls_answered": answered,
            "calls_abandoned": outcomes.count(ABANDONED),
            "calls_missed": outcomes.count(MISSED),
            "voicemails": sum(1 for c in calls if c.voicemail_id),
            "answer_rate": answered / offered if offered else None,
            "callers": len(callers),
            "callers_converted": len(converted),
            "conversion_rate_callers": len(converted) / len(callers) if callers else None,
            "conversions_after_calls": len(conversions),
            "revenue_after_calls": round(sum(self._conv_cents[i] for i in conversions) / 100, 2),
            "non_callers": non_callers,
            "non_callers_converted": non_callers_converted,
            "conversion_rate_non_callers": non_callers_converted / non_callers if non_callers else None,
            "survey_responses": len(ratings),
            "survey_rating_sum": sum(ratings),
            "survey_average": sum(ratings) / len(ratings) if ratings else None,
        }

    def calls_per_day(self, start_date: date, end_date: date, tz: str, site: str | int | None = None,
                      queue: str | int | None = None, channel: str | None = None) -> list[dict[str, Any]]:
        zone = ZoneInfo(tz)
        days: dict[date, dict[str, Any]] = {}
        day = start_date
        while day <= end_date:
            days[day] = {"date": day, "calls_offered": 0, "calls_answered": 0, "calls_abandoned": 0,
                         "calls_missed": 0, "voicemails": 0}
            day += timedelta(days=1)
        for c in self._calls_in(start_date, end_date, zone, site, queue, channel):
            row = days[c.created_at.astimezone(zone).date()]
            row["calls_offered"] += 1
            if c.outcome:
                row[f"calls_{c.outcome}"] += 1
            row["voicemails"] += bool(c.voicemail_id)
        return list(days.values())
