"""Report filters: the UTC bounds are the truth's, the zone's offsets are zoneinfo's, bad filters are refused; the
dialect constructs render for both engines; CSV cells never start a formula."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import column, select
from sqlalchemy.dialects import postgresql, sqlite

from analytics.generator_truth import Truth, to_us
from analytics.reports.filters import FilterError, ReportFilters, bounds, dates_monotonic, offset_segments
from analytics.reports.sqltime import binary, epoch_seconds, epoch_us, later, position, unindexed
from talk.models import UTCDateTime
from web.reports_api import csv_cell, report_filters

ZONES = ("UTC", "Europe/Berlin", "America/New_York", "America/St_Johns", "America/Sao_Paulo", "Australia/Lord_Howe",
         "Pacific/Kiritimati", "Asia/Kolkata", "America/Santiago")
DAYS = (date(2018, 11, 3), date(2018, 11, 4), date(2010, 11, 6), date(2010, 11, 7), date(2026, 3, 29),
        date(2026, 10, 25), date(2026, 3, 8), date(2026, 11, 1), date(2024, 4, 6), date(2024, 9, 7))


@pytest.mark.parametrize("tz", ZONES)
def test_bounds_are_the_truths(tz):
    """Including midnights the clocks skip (São Paulo, 4 November 2018) and repeat (St. John's, 7 November 2010)."""
    for start in DAYS:
        for length in (0, 1, 30):
            lo, hi = bounds(start, start + timedelta(days=length), tz)
            assert (to_us(lo), to_us(hi)) == Truth.bounds(start, start + timedelta(days=length), tz), (tz, start)


@pytest.mark.parametrize("tz", ZONES)
def test_offset_segments_are_zoneinfos_offsets(tz):
    zone = ZoneInfo(tz)
    lo, hi = datetime(2010, 1, 1, tzinfo=timezone.utc), datetime(2011, 1, 1, tzinfo=timezone.utc)
    first, changes = offset_segments(tz, lo, hi)

    def ours(instant: datetime) -> int:
        offset = first
        for at, new in changes:
            if instant >= at:
                offset = new
        return offset

    instant = lo
    while instant < hi:  # every 7 hours 13 minutes, and a second either side of every change
        assert ours(instant) == instant.astimezone(zone).utcoffset().total_seconds(), instant
        instant += timedelta(hours=7, minutes=13)
    for at, _ in changes:
        for probe in (at - timedelta(seconds=1), at, at + timedelta(seconds=1)):
            assert ours(probe) == probe.astimezone(zone).utcoffset().total_seconds(), probe


def test_only_a_clock_change_back_across_midnight_makes_local_dates_non_monotonic():
    def monotonic(tz: str, day: date) -> bool:
        lo, hi = bounds(day - timedelta(days=3), day + timedelta(days=3), tz)
        return dates_monotonic(*offset_segments(tz, lo, hi))

    assert not monotonic("America/St_Johns", date(2010, 11, 7))  # 00:01 back to 23:01
    for tz, day in (("America/St_Johns", date(2012, 11, 4)), ("Europe/Berlin", date(2026, 10, 25)),
                    ("America/Santiago", date(2024, 4, 6)), ("America/Sao_Paulo", date(2018, 11, 4)),
                    ("UTC", date(2026, 1, 1))):
        assert monotonic(tz, day), (tz, day)


@pytest.mark.parametrize("fields, mentions", [
    ({"start": date(2026, 3, 2), "end": date(2026, 3, 1)}, "from"),
    ({"start": date(2025, 1, 1), "end": date(2026, 2, 5)}, "400 days"),
    ({"tz": "Nowhere/Special"}, "tz"),
    ({"tz": "../../etc/passwd"}, "tz"),
    ({"tz": ""}, "tz"),
    ({"channel": "email"}, "channel"),
    ({"limit": 0}, "limit"),
    ({"site": ""}, "site"),
    ({"queue": "q" * 65}, "queue"),
    ({"start": date(1970, 1, 1)}, "from"),
])
def test_bad_filters_are_refused(fields, mentions):
    values = {"start": date(2026, 3, 1), "end": date(2026, 3, 31), **fields}
    with pytest.raises(FilterError, match=mentions):
        ReportFilters(**values)


def test_400_days_is_the_longest_range():
    ReportFilters(date(2025, 1, 1), date(2025, 1, 1) + timedelta(days=399))


def test_default_range_is_30_days_up_to_today_in_the_zone():
    now = datetime(2026, 3, 31, 23, 30, tzinfo=timezone.utc)  # already 1 April in Berlin
    filters = report_filters({"tz": "Europe/Berlin"}, now=now)
    assert (filters.start, filters.end) == (date(2026, 3, 3), date(2026, 4, 1))
    assert report_filters({}, now=now).end == date(2026, 3, 31)
    assert report_filters({"from": "2026-03-30"}, now=now).end == date(2026, 3, 31)


@pytest.mark.parametrize("value, cell", [
    (None, ""), (0, "0"), (-3, "-3"), (0.1 + 0.2, "0.30000000000000004"), (1 / 3, repr(1 / 3)), (True, "true"),
    ("=SUM(A1)", "'=SUM(A1)"), ("+1", "'+1"), ("-1", "'-1"), ("@cmd", "'@cmd"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("plain", "plain"), ("<b>x</b>", "<b>x</b>"), ("a=b", "a=b"), ("", ""),
])
def test_csv_cells(value, cell):
    assert csv_cell(value) == cell


def test_dialect_constructs_render_on_both_engines():
    ts, text = column("ts", UTCDateTime()), column("url")
    statement = select(epoch_seconds(ts), epoch_us(ts), later(ts, timedelta(days=7, microseconds=1)),
                       position(text, "x"), binary(text), unindexed(text))
    lite = str(statement.compile(dialect=sqlite.dialect()))
    assert "strftime('%s', substr(ts, 1, 19))" in lite and "604800000001" in lite and "instr(url" in lite
    assert "COLLATE BINARY" in lite and "+url" in lite
    pg = str(statement.compile(dialect=postgresql.asyncpg.dialect()))
    assert "EXTRACT(EPOCH FROM ts)" in pg and "INTERVAL '1 microsecond'" in pg and "strpos(url" in pg
    assert 'COLLATE "C"' in pg
    assert "epoch_seconds(ts)" in str(statement)  # readable in logs


@pytest.mark.parametrize("fraction", [0, 1, 499_999, 999_499, 999_500, 999_999])
def test_sqlite_constructs_are_exact_to_the_microsecond(fraction):
    """SQLite's strftime rounds to the millisecond: from .9995 s on that is the next second, which must not show."""
    import sqlite3

    ts = column("ts", UTCDateTime())
    deltas = (timedelta(days=7), timedelta(days=7, microseconds=1), timedelta(seconds=-1))
    statement = select(epoch_seconds(ts), epoch_us(ts), *(later(ts, delta) for delta in deltas))
    sql = f"{statement.compile(dialect=sqlite.dialect())} FROM (SELECT ? AS ts)"
    at = datetime(2026, 12, 31, 23, 59, 59, fraction, tzinfo=timezone.utc)
    row = sqlite3.connect(":memory:").execute(sql, (at.strftime("%Y-%m-%d %H:%M:%S.%f"),)).fetchone()
    us = to_us(at)
    assert row == (us // 1_000_000, us, *((at + delta).strftime("%Y-%m-%d %H:%M:%S.%f") for delta in deltas))
