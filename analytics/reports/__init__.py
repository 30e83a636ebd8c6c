"""Reports for marketers: set-based SQL (SQLAlchemy Core) that runs on SQLite and PostgreSQL alike.

`REPORTS[name](db, filters, attribution_window)` returns a `Report` (name, columns, rows of plain values, totals);
`run_report` does the same in one consistent snapshot. The figures follow analytics/generator_truth.py's
definitions exactly; each module's docstring defines its own columns (docs/api.md lists them all).

- filters.py: `ReportFilters` (dates, IANA time zone, site, queue, channel) and their UTC bounds and local days.
- sqltime.py: the expressions the two engines spell differently (epoch seconds, adding a duration, substrings).
- base.py: the calls in range (one CTE), attribution of conversions.
- spread.py: order statistics (median, p90: wait and talk times, delays to purchase).
- summary.py, calls.py, conversion.py, pages.py, traffic.py, people.py: the reports.
- timeline.py: one call from the pages before it to the purchases after it.

Distinct visitors of a range come from the visitor-day rollup (analytics/visitordays.py), the calls' own figures
from the call facts (analytics/callfacts.py); `recount=True` uses neither and computes everything from the raw rows
(tests and bench/reports.py check that both agree).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from analytics.reports import calls, conversion, pages, people, summary, traffic
from analytics.reports.base import Report
from analytics.reports.filters import FilterError, Range, ReportFilters, UnknownFilter, resolve
from analytics.reports.timeline import call_timeline

ReportFn = Callable[..., Awaitable[Report]]  # (db, filters, window, recount=False)

_BUILDERS: dict[str, tuple[Callable[[AsyncSession, Range, timedelta], Awaitable[Report]], str]] = {
    "summary": (summary.summary, "Every headline figure of the range, with numerators and denominators."),
    "calls_by_day": (calls.calls_by_day, "Calls offered, answered, abandoned, missed and voicemails per date."),
    "calls_by_hour_of_week": (calls.calls_by_hour_of_week, "The same per hour of the week (168 rows)."),
    "wait_and_talk": (calls.wait_and_talk, "Wait until answered and talk time: average, median, p90, maximum."),
    "conversion": (conversion.conversion, "Callers against non-callers, revenue, orders per call, time to purchase."),
    "pages_before": (pages.pages_before, "Pages callers viewed before their calls."),
    "pages_after": (pages.pages_after, "Pages callers viewed after their calls, within the attribution window."),
    "sources": (traffic.sources, "Traffic sources of the calls' sessions, with conversion."),
    "campaigns": (traffic.campaigns, "UTM campaigns of the calls' sessions, with conversion."),
    "landing_pages": (pages.landing_pages, "Landing pages callers were sent to: surveys, conversions, revenue."),
    "survey": (people.survey, "Survey ratings: average and distribution, overall and by queue, agent, seller."),
    "survey_comments": (people.survey_comments, "The latest survey comments."),
    "people": (people.people, "Calls, answer rate, talk time, rating, conversion and revenue per agent/seller."),
}


def _with_filters(build) -> ReportFn:
    async def report(db: AsyncSession, filters: ReportFilters, window: timedelta, recount: bool = False) -> Report:
        return await build(db, await resolve(db, filters, recount, window), window)

    report.__name__, report.__doc__ = build.__name__, f"{build.__module__}.{build.__name__} with its filters resolved."
    return report


REPORTS: dict[str, ReportFn] = {name: _with_filters(build) for name, (build, _) in _BUILDERS.items()}
DESCRIPTIONS: dict[str, str] = {name: text for name, (_, text) in _BUILDERS.items()}


async def run_report(db: AsyncSession, name: str, filters: ReportFilters, window: timedelta,
                     recount: bool = False) -> Report:
    """REPORTS[name], its queries in one snapshot (PostgreSQL: a repeatable-read, read-only transaction; SQLite: a
    read transaction, which in WAL mode keeps the snapshot of its first read), kept by the session's later reports.
    `recount`: from the raw rows only, without the rollups (analytics/visitordays.py): the same figures, slower."""
    if db.bind.dialect.name == "postgresql":
        if not db.in_transaction():  # (a later report of the session reads the snapshot its first one took)
            await db.connection(execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True})
    elif db.bind.dialect.name == "sqlite":
        # The sqlite3 module begins no transaction for a SELECT, so each statement would read its own snapshot; a
        # report choosing which days' sums to read (analytics/factdays.py) must read them in the snapshot it chose in.
        connection = await db.connection()
        if not (await connection.get_raw_connection()).driver_connection.in_transaction:
            await connection.exec_driver_sql("BEGIN")
    return await REPORTS[name](db, filters, window, recount)


__all__ = ["REPORTS", "DESCRIPTIONS", "Report", "ReportFilters", "FilterError", "UnknownFilter", "run_report",
           "call_timeline"]
