"""Calls reports: outcomes by day and by hour of the week, and how long callers wait and talk.

- `calls_by_day`: every date of the range (zeros included) in the report's time zone, a call on the date of its
  `created_at` there (a call from 23:58 to 00:04 counts on the first day only): calls_offered, calls_answered,
  calls_abandoned, calls_missed, voicemails (those left on the day's calls), answer_rate. Totals: the sums.
- `calls_by_hour_of_week`: the same figures for each of the 168 hours of the week (weekday 0 = Monday … 6 = Sunday,
  hour 0–23 of the local wall clock). In the night the clocks go back, the repeated hour counts in that hour.
- `wait_and_talk`: wait = answered_at − created_at of answered calls (queued and ringing until answered); talk =
  ended_at − answered_at of answered calls that ended. Average, median, p90 (nearest rank) and maximum, in seconds.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from analytics.reports.base import (
    OUTCOME_COLUMNS, Report, calls_in, outcome_counts, ratio,
)
from analytics.reports.filters import Range, date_of
from analytics.reports.spread import ordered_stats, spread, spread_of

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
COUNT_COLUMNS = (*OUTCOME_COLUMNS, "answer_rate")


def _counts(row) -> tuple:
    values = tuple(int(getattr(row, name)) if row is not None else 0 for name in OUTCOME_COLUMNS)
    return (*values, ratio(values[1], values[0]))


def _totals(rows: list[tuple], skip: int) -> dict:
    sums = [sum(row[skip + i] for row in rows) for i in range(len(OUTCOME_COLUMNS))]
    return {**dict(zip(OUTCOME_COLUMNS, sums)), "answer_rate": ratio(sums[1], sums[0])}


async def calls_by_day(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    calls = calls_in(rng, window)
    day = (calls.c.local_s // 86400).label("day")
    found = {row.day: row for row in await db.execute(select(day, *outcome_counts(calls)).group_by(day))}
    rows = [(date_of(n).isoformat(), *_counts(found.get(n))) for n in range(rng.first_day, rng.last_day + 1)]
    return Report("calls_by_day", ("date", *COUNT_COLUMNS), rows, _totals(rows, 1))


async def calls_by_hour_of_week(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    calls = calls_in(rng, window)
    weekday = ((calls.c.local_s // 86400 + 3) % 7).label("weekday")  # 1970-01-01 was a Thursday (3)
    hour = ((calls.c.local_s % 86400) // 3600).label("hour")
    found = {(row.weekday, row.hour): row
             for row in await db.execute(select(weekday, hour, *outcome_counts(calls)).group_by(weekday, hour))}
    rows = [(w, WEEKDAYS[w], h, *_counts(found.get((w, h)))) for w in range(7) for h in range(24)]
    return Report("calls_by_hour_of_week", ("weekday", "weekday_name", "hour", *COUNT_COLUMNS), rows,
                  _totals(rows, 3))


WAIT_TALK_COLUMNS = (
    "calls_answered", "wait_avg_seconds", "wait_median_seconds", "wait_p90_seconds", "wait_max_seconds",
    "calls_talked", "talk_total_seconds", "talk_avg_seconds", "talk_median_seconds", "talk_p90_seconds",
    "talk_max_seconds",
)


async def wait_and_talk(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    calls = calls_in(rng, window)
    if db.bind.dialect.name == "postgresql":  # both in one pass over the calls
        row = (await db.execute(select(*ordered_stats(calls.c.wait_us), *ordered_stats(calls.c.talk_us)))).one()
        wait, talk = spread_of(*row[:4]), spread_of(*row[4:])
    else:
        waits = select(calls.c.wait_us.label("us")).where(calls.c.wait_us.is_not(None)).subquery()
        talks = select(calls.c.talk_us.label("us")).where(calls.c.talk_us.is_not(None)).subquery()
        wait, talk = await spread(db, waits), await spread(db, talks)
    w, t = wait.seconds(), talk.seconds()
    row = (wait.n, w["avg"], w["median"], w["p90"], w["max"],
           talk.n, t["total"], t["avg"], t["median"], t["p90"], t["max"])
    return Report("wait_and_talk", WAIT_TALK_COLUMNS, [row])
