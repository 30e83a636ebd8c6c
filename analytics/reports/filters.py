"""What a report is asked for: a date range in a time zone, optionally one site, queue and channel.

The range follows analytics/generator_truth.py's definitions exactly:

- Page views and conversions are in range when `lo <= ts < hi`: `lo` is the midnight starting `start` in `tz`, `hi`
  the midnight starting the day after `end` (zoneinfo, fold=0, so a midnight the clocks skip is the first instant
  of that day). `Range.lo` / `Range.hi` are those instants in UTC.
- A call belongs to the calendar date its `created_at` has in `tz`, and is in range when that date is from `start`
  to `end`.

Local dates and hours in SQL, exact across daylight saving changes on both engines: the zone's UTC offsets over the
range are worked out here with zoneinfo (the same rules the truth uses) as a short list of segments, and SQL adds the
offset of the segment an instant falls in to its epoch seconds (`local_seconds`). A day number is then
`local_seconds / 86400` (days since 1970-01-01), an hour `local_seconds % 86400 / 3600`. So both engines bucket with
Python's time zone data, not PostgreSQL's own copy, and SQLite needs no time zone support at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import BigInteger, case, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from analytics.reports.sqltime import MICROSECOND, epoch_seconds
from talk.models import CallFactsMeta, Queue, Site

CHANNELS = ("agent", "seller")
MAX_DAYS = 400
DEFAULT_DAYS = 30
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
EPOCH_DATE = date(1970, 1, 1)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Instants whose local date is in range lie within this much of [lo, hi) (UTC offsets stay within ±26 hours).
SLACK = timedelta(days=2)
SAMPLE = timedelta(hours=1)


class FilterError(ValueError):
    """A filter value that cannot be used; the message starts with the parameter's name."""


class UnknownFilter(LookupError):
    """A site key or queue name that does not exist; the message starts with the parameter's name."""


def zone_of(tz: str) -> ZoneInfo:
    if not tz or len(tz) > 64:
        raise FilterError("tz: an IANA time zone such as Europe/Berlin")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # ValueError: e.g. '../x' or an absolute path
        raise FilterError(f"tz: unknown time zone {tz!r}") from None


@dataclass(frozen=True)
class ReportFilters:
    start: date
    end: date
    tz: str = "UTC"
    site: str | None = None  # site key
    queue: str | None = None  # queue name (on the site, or on any site)
    channel: str | None = None  # "agent" or "seller"
    limit: int = DEFAULT_LIMIT  # rows of the top-N reports (pages, sources, comments)

    def __post_init__(self) -> None:
        zone_of(self.tz)
        if self.start > self.end:
            raise FilterError("from: after to")
        if (self.end - self.start).days + 1 > MAX_DAYS:
            raise FilterError(f"to: at most {MAX_DAYS} days from 'from'")
        if self.start <= EPOCH_DATE or self.end >= date(9999, 12, 30):
            raise FilterError("from: dates from 1970-01-02 to 9999-12-29")
        if self.channel is not None and self.channel not in CHANNELS:
            raise FilterError(f"channel: one of {', '.join(CHANNELS)}")
        if self.site is not None and not 0 < len(self.site) <= 64:
            raise FilterError("site: a site key")
        if self.queue is not None and not 0 < len(self.queue) <= 64:
            raise FilterError("queue: a queue name")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise FilterError(f"limit: from 1 to {MAX_LIMIT}")

    @classmethod
    def last_days(cls, tz: str = "UTC", days: int = DEFAULT_DAYS, now: datetime | None = None, **kw) -> ReportFilters:
        """The `days` days up to and including today in `tz`."""
        today = (now or datetime.now(timezone.utc)).astimezone(zone_of(tz)).date()
        return cls(today - timedelta(days=days - 1), today, tz, **kw)

    def as_json(self) -> dict:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(), "tz": self.tz, "site": self.site,
                "queue": self.queue, "channel": self.channel}


def bounds(start: date, end: date, tz: str) -> tuple[datetime, datetime]:
    """[lo, hi) in UTC: from the midnight starting `start` in `tz` to the one starting the day after `end`."""
    zone = zone_of(tz)
    lo = datetime.combine(start, time(0), tzinfo=zone)
    hi = datetime.combine(end + timedelta(days=1), time(0), tzinfo=zone)
    return lo.astimezone(timezone.utc), hi.astimezone(timezone.utc)


def offset_segments(tz: str, lo: datetime, hi: datetime) -> tuple[int, list[tuple[datetime, int]]]:
    """The zone's UTC offset (seconds) at `lo`, and each change up to `hi` as (first instant, new offset). Changes
    are looked for hourly and pinned to the second (no zone changes its offset twice within an hour)."""
    zone = zone_of(tz)

    def offset_at(second: int) -> int:
        return int(datetime.fromtimestamp(second, timezone.utc).astimezone(zone).utcoffset().total_seconds())

    start, stop, step = int(lo.timestamp()), int(hi.timestamp()) + 1, int(SAMPLE.total_seconds())
    first = current = offset_at(start)
    changes: list[tuple[datetime, int]] = []
    at = start
    while at < stop:
        following = min(at + step, stop)
        if offset_at(following) != current:
            low, high = at, following  # offset_at(low) == current != offset_at(high)
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset_at(middle) == current else (low, middle)
            current = offset_at(high)
            changes.append((datetime.fromtimestamp(high, timezone.utc), current))
        at = following
    return first, changes


def epoch_us_of(instant: datetime) -> int:
    """Microseconds since 1970-01-01 UTC of an aware datetime, exactly."""
    return (instant - EPOCH) // MICROSECOND


def day_number(day: date) -> int:
    return (day - EPOCH_DATE).days


def date_of(number: int) -> date:
    return EPOCH_DATE + timedelta(days=number)


@dataclass(frozen=True)
class Range:
    """The filters with their UTC bounds, time zone offsets and site/queue ids resolved."""

    filters: ReportFilters
    lo: datetime
    hi: datetime
    first_day: int  # day numbers (days since 1970-01-01) of start and end
    last_day: int
    site_id: int | None
    queue_ids: tuple[int, ...] | None
    offset0: int = 0
    changes: tuple[tuple[datetime, int], ...] = field(default_factory=tuple)
    # The local date never goes backwards around the range: then "local date in range" is exactly lo <= ts < hi.
    monotonic: bool = True
    # Count from the raw rows only, never from a rollup (the check that rollups equal a full recount).
    recount: bool = False
    # The call facts (analytics/callfacts.py) were computed with the report's attribution window: calls whose facts
    # are not stale may be read from them.
    facts: bool = False

    @property
    def lo_us(self) -> int:
        return epoch_us_of(self.lo)

    @property
    def hi_us(self) -> int:
        return epoch_us_of(self.hi)

    @property
    def channel(self) -> str | None:
        return self.filters.channel

    @property
    def limit(self) -> int:
        return self.filters.limit

    def offset(self, ts, in_us: bool = False):
        """SQL: the zone's UTC offset in seconds at the timestamp `ts` (`in_us`: an integer column of epoch
        microseconds)."""
        if not self.changes:
            return literal_column(str(self.offset0))
        whens = []
        previous = self.offset0
        for instant, offset in self.changes:
            whens.append((ts < (epoch_us_of(instant) if in_us else instant), literal_column(str(previous))))
            previous = offset
        return case(*whens, else_=literal_column(str(previous)))

    def local_seconds(self, ts):
        """SQL: seconds since 1970-01-01 00:00 of the local wall clock at `ts` (rounded down)."""
        return epoch_seconds(ts) + self.offset(ts)

    def local_seconds_us(self, us):
        """The same for an integer column of epoch microseconds (integer arithmetic only: no date parsing)."""
        return us // literal_column("1000000", BigInteger()) + self.offset(us, in_us=True)

    def local_day(self, ts):
        return self.local_seconds(ts) // 86400

    def days(self) -> list[date]:
        return [date_of(n) for n in range(self.first_day, self.last_day + 1)]


async def resolve(db: AsyncSession, filters: ReportFilters, recount: bool = False,
                  window: timedelta | None = None) -> Range:
    """Bounds and ids for the filters; UnknownFilter for a site key or queue name that does not exist. `window`:
    the attribution window of the report, for whether the call facts can serve it."""
    lo, hi = bounds(filters.start, filters.end, filters.tz)
    site_id = None
    if filters.site is not None:
        site_id = await db.scalar(select(Site.id).where(Site.key == filters.site))
        if site_id is None:
            raise UnknownFilter(f"site: no site with the key {filters.site!r}")
    queue_ids = None
    if filters.queue is not None:
        statement = select(Queue.id).where(Queue.name == filters.queue).order_by(Queue.id)
        if site_id is not None:
            statement = statement.where(Queue.site_id == site_id)
        queue_ids = tuple(await db.scalars(statement))
        if not queue_ids:
            where = f" on site {filters.site!r}" if filters.site else ""
            raise UnknownFilter(f"queue: no queue named {filters.queue!r}{where}")
    offset0, changes = offset_segments(filters.tz, lo - SLACK - SAMPLE, hi + SLACK + SAMPLE)
    facts = False
    if not recount and window is not None:
        facts = await db.scalar(select(CallFactsMeta.window_us).where(CallFactsMeta.id == 1)) == window // MICROSECOND
    return Range(filters, lo, hi, day_number(filters.start), day_number(filters.end), site_id, queue_ids,
                 offset0, tuple(changes), dates_monotonic(offset0, changes), recount, facts)


def dates_monotonic(offset0: int, changes: list[tuple[datetime, int]]) -> bool:
    """False when a change puts the clocks back across a local midnight (e.g. 00:30 back to 23:30): instants after
    that midnight are then followed by instants of the day before, and the local-date rule for calls differs from
    lo <= ts < hi. Such zones are rare (Newfoundland before 2011); others always have True."""
    previous = offset0
    for instant, offset in changes:
        at = int(instant.timestamp())
        after, before = at + offset, at + previous  # the local wall clock just after and just before the change
        if offset < previous and (before - 1) // 86400 * 86400 > after:
            return False
        previous = offset
    return True
