"""The marketers' dashboard (/reports) and one call's timeline (/reports/calls/{id}), for marketers and admins.

Server-rendered, no scripts: the filter form is a GET form (from, to, tz, site, queue, channel, limit: the reports
API's parameters, parsed by its `report_filters`), so every view of the dashboard is a URL that can be shared. The
figures are the reports layer's (analytics/reports): the page runs the reports it needs and renders them as figures,
tables and SVG charts (web/charts.py). Every table and chart links to the same figures as CSV and JSON: the reports
API (/api/v1/reports/{name}) for the reports, and /reports/data/{name} for the two tables this page derives itself:
`funnel` (calls → answered → sent to a landing page → landed → purchase) and `recent_calls` (the latest calls in
range, each linked to its timeline).

Running the reports: on SQLite one after the other in one session (SQLite answers one query at a time per
connection and gains nothing from more connections: measured), on PostgreSQL concurrently, each report in its own
session and snapshot as the API runs it, at most PARALLEL at once.

Everything that came from visitors, callers or sites (page titles, URLs, comments, UTM values, names) is text:
templates autoescape it and the charts escape their labels with markupsafe; a URL becomes a link only when it is
http(s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

import aiohttp_jinja2
from aiohttp import web
from sqlalchemy import desc, select
from sqlalchemy.ext.asyncio import AsyncSession

from analytics.reports import FilterError, Report, ReportFilters, UnknownFilter, call_timeline, run_report
from analytics.reports.base import latest_calls
from analytics.reports.filters import DEFAULT_LIMIT, MAX_LIMIT, resolve, zone_of
from analytics.reports.sqltime import binary
from analytics.reports.timeline import outcome
from talk.db import ENGINE_KEY, SESSIONMAKER_KEY
from talk.models import Account, PageEvent, Queue, Site, Voicemail
from talk.sessions import csrf_token, current_account_id
from talk.settings import SETTINGS_KEY
from web import charts
from web.auth import require_account
from web.calls_api import REPORT_ROLES
from web.http import ApiError, error_response
from web.reports_api import NO_STORE, report_csv, report_filters, report_json, require_report_access

log = logging.getLogger(__name__)

# Our own pages, server-rendered: no scripts, our own styles only; the charts are inline SVG styled by classes.
PAGE_CSP = (
    "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; connect-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PARALLEL = 4
FILTER_KEYS = ("from", "to", "tz", "site", "queue", "channel", "limit")
LIMITS = (10, 25, 50, 100, 200)
COMMON_ZONES = (
    "UTC", "Europe/London", "Europe/Dublin", "Europe/Lisbon", "Europe/Paris", "Europe/Berlin", "Europe/Amsterdam",
    "Europe/Madrid", "Europe/Rome", "Europe/Zurich", "Europe/Vienna", "Europe/Stockholm", "Europe/Warsaw",
    "Europe/Helsinki", "Europe/Athens", "Europe/Istanbul", "America/New_York", "America/Chicago", "America/Denver",
    "America/Los_Angeles", "America/Sao_Paulo", "Asia/Dubai", "Asia/Kolkata", "Asia/Singapore", "Asia/Tokyo",
    "Australia/Sydney",
)
WEEKDAYS_SHORT = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
OUTCOMES = {"answered": "Answered", "abandoned": "Abandoned", "missed": "Missed", None: "In progress"}


# ---------------------------------------------------------------- formatting


def fmt_int(value: Any) -> str:
    return "–" if value is None else f"{int(value):,}"


def fmt_rate(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def fmt_average(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def fmt_money(value: float | None) -> str:
    return "–" if value is None else f"{value:,.2f}"


def fmt_duration(seconds: float | None) -> str:
    """16.2 s, 42 s, 4 min 03 s, 3 h 07 min, 2 d 5 h."""
    if seconds is None:
        return "–"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def fmt_days(days: float) -> str:
    if float(days).is_integer():
        return f"{int(days)} day{'s' * (days != 1)}"
    return fmt_duration(days * 86400)


def parse_instant(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def fmt_local(value: str | datetime | None, zone: ZoneInfo, seconds: bool = False) -> str:
    instant = parse_instant(value)
    if instant is None:
        return "–"
    return instant.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def day_label(day: date) -> str:
    return f"{day.day} {day:%b}"


def web_url(url: str | None) -> str | None:
    """The URL when it is an absolute http(s) URL (safe to link to), else None (shown as text only)."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme in ("http", "https") and parts.netloc else None


# ---------------------------------------------------------------- tables


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: str = "text"  # text, tag (a short word: never wrapped), int, rate, average, money, seconds, date, time,
    # call, bool
    empty: str = "–"  # what a None shows

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "rate", "average", "money", "seconds")


@dataclass(frozen=True)
class Cell:
    column: str
    text: str
    value: Any = None  # the raw figure, for data-value (numbers only)
    numeric: bool = False
    href: str | None = None
    title: str | None = None
    tag: bool = False


@dataclass
class Table:
    id: str
    title: str
    columns: list[Column]
    rows: list[list[Cell]]
    csv: str
    json: str
    description: str = ""
    empty: str = "Nothing in this period."


@dataclass
class Figure:
    key: str
    label: str
    text: str
    value: Any
    detail: str = ""


def _cell(column: Column, value: Any, zone: ZoneInfo, link: Callable[[str], str]) -> Cell:
    kind = column.kind
    if value is None:
        return Cell(column.key, column.empty, None, column.numeric)
    if kind == "int":
        return Cell(column.key, fmt_int(value), value, True)
    if kind == "rate":
        return Cell(column.key, fmt_rate(value), value, True)
    if kind == "average":
        return Cell(column.key, fmt_average(value), value, True)
    if kind == "money":
        return Cell(column.key, fmt_money(value), value, True)
    if kind == "seconds":
        return Cell(column.key, fmt_duration(value), value, True)
    if kind in ("date", "tag"):
        return Cell(column.key, str(value), tag=True)
    if kind == "time":
        return Cell(column.key, fmt_local(value, zone), title=str(value), tag=True)
    if kind == "bool":
        return Cell(column.key, "yes" if value else "no", int(bool(value)), tag=True)
    if kind == "call":
        text = value if len(value) <= 12 else value[:10] + "…"
        return Cell(column.key, text, href=link(value), title=f"Timeline of call {value}")
    return Cell(column.key, str(value))


def table(report: Report, table_id: str, title: str, columns: list[Column], exports: tuple[str, str], zone: ZoneInfo,
          link: Callable[[str], str], description: str = "", empty: str = "Nothing in this period.") -> Table:
    body = [[_cell(column, record.get(column.key), zone, link) for column in columns] for record in report.records()]
    return Table(table_id, title, columns, body, exports[0], exports[1], description, empty)


C = Column
PAGE_COLUMNS = [C("path", "Page"), C("views", "Views", "int"), C("calls", "Calls", "int"),
                C("callers", "Callers", "int"), C("calls_converted", "Calls converted", "int"),
                C("conversion_rate", "Conversion", "rate")]
MONEY_COLUMNS = [C("calls", "Calls", "int"), C("callers", "Callers", "int"),
                 C("calls_converted", "Calls converted", "int"), C("conversion_rate", "Conversion", "rate"),
                 C("conversions", "Orders", "int"), C("revenue", "Revenue", "money")]
COLUMNS: dict[str, list[Column]] = {
    "calls_by_day": [C("date", "Date", "date"), C("calls_offered", "Offered", "int"),
                     C("calls_answered", "Answered", "int"), C("calls_abandoned", "Abandoned", "int"),
                     C("calls_missed", "Missed", "int"), C("voicemails", "Voicemails", "int"),
                     C("answer_rate", "Answer rate", "rate")],
    "recent_calls": [C("created_at", "Time", "time"), C("queue", "Queue", "tag"), C("channel", "Channel", "tag"),
                     C("person_name", "Agent / seller", empty="nobody"), C("outcome", "Outcome", "tag"),
                     C("wait_seconds", "Wait", "seconds"), C("talk_seconds", "Talk", "seconds"),
                     C("rating", "Rating", "int"), C("converted", "Purchase after", "bool"),
                     C("call_id", "Call", "call")],
    "funnel": [C("label", "Step"), C("calls", "Calls", "int"), C("share_of_offered", "Of calls offered", "rate"),
               C("share_of_previous", "Of the step before", "rate")],
    "pages_before": PAGE_COLUMNS,
    "pages_after": PAGE_COLUMNS,
    "sources": [C("kind", "Kind", "tag"), C("source", "Source"), *MONEY_COLUMNS],
    "campaigns": [C("utm_campaign", "Campaign"), C("utm_source", "utm_source"), C("utm_medium", "utm_medium"),
                  *MONEY_COLUMNS],
    "landing_pages": [C("landing_page", "Landing page"), C("calls", "Callers sent", "int"),
                      C("landed", "Landed", "int"), C("survey_responses", "Surveys", "int"),
                      C("survey_completion", "Survey completion", "rate"),
                      C("survey_average", "Avg rating", "average"), C("calls_converted", "Calls converted", "int"),
                      C("conversion_rate", "Conversion", "rate"), C("conversions", "Orders", "int"),
                      C("revenue", "Revenue", "money")],
    "survey": [C("dimension", "By", "tag"), C("name", "Name", empty="all answers"),
               C("survey_responses", "Answers", "int"), C("survey_average", "Avg rating", "average"),
               *(C(f"rating_{r}", f"{r} ★", "int") for r in range(1, 6))],
    "survey_comments": [C("created_at", "Time", "time"), C("rating", "Rating", "int"), C("comment", "Comment"),
                        C("queue", "Queue", "tag"), C("channel", "Channel", "tag"),
                        C("person_name", "Agent / seller", empty="nobody"), C("call_id", "Call", "call")],
    "people": [C("role", "Role", "tag"), C("name", "Name", empty="nobody took the call"), C("calls", "Calls", "int"),
               C("calls_answered", "Answered", "int"), C("answer_rate", "Answer rate", "rate"),
               C("talk_total_seconds", "Talk time", "seconds"), C("talk_avg_seconds", "Avg talk", "seconds"),
               C("survey_responses", "Surveys", "int"), C("survey_average", "Avg rating", "average"),
               C("calls_converted", "Calls converted", "int"), C("conversion_rate", "Conversion", "rate"),
               C("conversions", "Orders", "int"), C("revenue", "Revenue", "money")],
}


# ---------------------------------------------------------------- the page's own two tables


RECENT_COLUMNS = ("call_id", "created_at", "site", "queue", "channel", "person_id", "person_name", "outcome",
                  "end_reason", "wait_seconds", "talk_seconds", "rating", "converted")


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


async def recent_calls(db: AsyncSession, filters: ReportFilters, window: timedelta) -> Report:
    """The `limit` latest calls in range (the reports' calls_in: same range, site, queue and channel rules), newest
    first: outcome as the reports count it, wait (created → answered), talk (answered → ended), survey rating and
    whether a purchase is attributed to the call."""
    rng = await resolve(db, filters, window=window)
    calls = latest_calls(rng, window, rng.limit)
    q, a, s = Queue.__table__, Account.__table__, Site.__table__
    statement = (
        select(calls.c.id, calls.c.created_at, calls.c.answered_at, calls.c.ended_at, calls.c.end_reason,
               calls.c.channel, calls.c.person_id, calls.c.rating, calls.c.converted, q.c.name.label("queue"),
               s.c.key.label("site"), a.c.name.label("person_name"))
        .select_from(calls).join(q, q.c.id == calls.c.queue_id).join(s, s.c.id == calls.c.site_id)
        .outerjoin(a, a.c.id == calls.c.person_id)
        .order_by(desc(calls.c.created_at), desc(binary(calls.c.id)))
        .limit(rng.limit)
    )
    rows = [(r.id, r.created_at.isoformat(), r.site, r.queue, r.channel, r.person_id, r.person_name, outcome(r),
             r.end_reason, _seconds(r.created_at, r.answered_at), _seconds(r.answered_at, r.ended_at), r.rating,
             bool(r.converted)) for r in await db.execute(statement)]
    return Report("recent_calls", RECENT_COLUMNS, rows)


FUNNEL_COLUMNS = ("step", "label", "calls", "share_of_offered", "share_of_previous")


def funnel_report(by_day: Report, landing_all: Report) -> Report:
    """Calls offered → answered → sent to a landing page → landed on it → followed by a purchase (of the calls
    sent to a landing page): calls_by_day's totals and the sums of landing_pages (all of its rows)."""
    totals = by_day.totals or {}
    landing = landing_all.records()
    steps = [
        ("offered", "Calls offered", totals.get("calls_offered", 0)),
        ("answered", "Answered", totals.get("calls_answered", 0)),
        ("sent_to_landing_page", "Sent to a landing page", sum(r["calls"] for r in landing)),
        ("landed", "Landed on it", sum(r["landed"] for r in landing)),
        ("purchased", "Purchase after", sum(r["calls_converted"] for r in landing)),
    ]
    first = steps[0][2]
    rows, previous = [], None
    for step, label, calls in steps:
        rows.append((step, label, calls, calls / first if first else None,
                     (calls / previous if previous else None) if previous is not None else None))
        previous = calls
    return Report("funnel", FUNNEL_COLUMNS, rows)


# ---------------------------------------------------------------- running reports


Job = Callable[[AsyncSession], Awaitable[Any]]


async def run_jobs(app: web.Application, jobs: dict[str, Job]) -> dict[str, Any]:
    """Each job with a session: on SQLite all in one session, one after the other; elsewhere concurrently, each in
    its own session (run_report takes its own snapshot per session), at most PARALLEL at once."""
    sessionmaker = app[SESSIONMAKER_KEY]
    if app[ENGINE_KEY].dialect.name == "sqlite":
        async with sessionmaker() as db:
            return {key: await job(db) for key, job in jobs.items()}
    gate = asyncio.Semaphore(PARALLEL)

    async def one(job: Job) -> Any:
        async with gate, sessionmaker() as db:
            return await job(db)

    async with asyncio.TaskGroup() as group:
        tasks = {key: group.create_task(one(job)) for key, job in jobs.items()}
    return {key: task.result() for key, task in tasks.items()}


def report_job(name: str, filters: ReportFilters, window: timedelta) -> Job:
    return lambda db: run_report(db, name, filters, window)


def dashboard_jobs(filters: ReportFilters, window: timedelta) -> dict[str, Job]:
    every = ReportFilters(filters.start, filters.end, filters.tz, filters.site, filters.queue, filters.channel,
                          MAX_LIMIT)
    jobs = {name: report_job(name, filters, window) for name in (
        "calls_by_day", "calls_by_hour_of_week", "wait_and_talk", "conversion", "pages_before", "pages_after",
        "sources", "campaigns", "survey", "survey_comments", "people")}
    jobs["landing_all"] = report_job("landing_pages", every, window)  # the funnel needs every landing page
    jobs["recent_calls"] = lambda db: recent_calls(db, filters, window)
    return jobs


# ---------------------------------------------------------------- access


async def require_reader(request: web.Request) -> Account:
    """A logged-in marketer or admin. Anyone else logged in: 403; nobody: the login page, back here afterwards
    with the same filters."""
    if await current_account_id(request) is None:
        raise web.HTTPFound("/login?" + urlencode({"next": request.path_qs}))
    return await require_account(request, REPORT_ROLES)


def _page(request: web.Request, template: str, context: dict, status: int = 200) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"  # business figures and the account's name
    return response


# ---------------------------------------------------------------- the dashboard


def filter_query(filters: ReportFilters, **changes: Any) -> dict[str, str]:
    """The filters as query parameters (what the form would send), with `changes` applied."""
    params = {"from": filters.start.isoformat(), "to": filters.end.isoformat(), "tz": filters.tz,
              "site": filters.site, "queue": filters.queue, "channel": filters.channel,
              "limit": str(filters.limit) if filters.limit != DEFAULT_LIMIT else None}
    params.update(changes)
    return {key: value for key, value in params.items() if value}


def exports(name: str, query: str, own: bool = False) -> tuple[str, str]:
    base = f"/reports/data/{name}" if own else f"/api/v1/reports/{name}"
    return f"{base}?{query}&format=csv", f"{base}?{query}&format=json"


async def filter_options(db: AsyncSession, site: str | None) -> dict[str, Any]:
    sites = (await db.execute(select(Site.key, Site.name).order_by(Site.name, Site.key))).all()
    statement = select(Queue.name, Queue.display_name).join(Site, Site.id == Queue.site_id)
    if site:
        statement = statement.where(Site.key == site)
    labels: dict[str, list[str]] = {}
    for name, display in await db.execute(statement.order_by(Queue.display_name, Queue.name)):
        names = labels.setdefault(name, [])
        if display not in names:
            names.append(display)
    queues = [(name, f"{' / '.join(shown)} ({name})") for name, shown in labels.items()]
    return {"sites": [(key, f"{name} ({key})") for key, name in sites], "queues": queues}


def form_values(query) -> dict[str, str]:
    return {key: (query.get(key) or "")[:100] for key in FILTER_KEYS}


def _calls_figures(by_day: Report, wait_talk: Report) -> list[Figure]:
    t = by_day.totals or {}
    wt = wait_talk.records()[0]
    offered = t.get("calls_offered", 0)

    def share(n: int) -> str:
        return f"{fmt_rate(n / offered)} of offered" if offered else ""

    return [
        Figure("calls_offered", "Calls offered", fmt_int(offered), offered),
        Figure("calls_answered", "Answered", fmt_int(t.get("calls_answered")), t.get("calls_answered"),
               share(t.get("calls_answered", 0))),
        Figure("calls_abandoned", "Abandoned", fmt_int(t.get("calls_abandoned")), t.get("calls_abandoned"),
               "caller left while waiting"),
        Figure("calls_missed", "Missed", fmt_int(t.get("calls_missed")), t.get("calls_missed"), "no agent took it"),
        Figure("voicemails", "Voicemails", fmt_int(t.get("voicemails")), t.get("voicemails")),
        Figure("answer_rate", "Answer rate", fmt_rate(t.get("answer_rate")), t.get("answer_rate")),
        Figure("wait_avg_seconds", "Wait, average", fmt_duration(wt["wait_avg_seconds"]), wt["wait_avg_seconds"],
               "until answered"),
        Figure("wait_p90_seconds", "Wait, p90", fmt_duration(wt["wait_p90_seconds"]), wt["wait_p90_seconds"],
               "9 in 10 answered sooner"),
        Figure("talk_avg_seconds", "Talk time, average", fmt_duration(wt["talk_avg_seconds"]),
               wt["talk_avg_seconds"], f"{fmt_duration(wt['talk_total_seconds'])} in all"),
    ]


def _conversion_figures(conv: Report) -> list[Figure]:
    c = conv.records()[0]
    callers, others = c["conversion_rate_callers"], c["conversion_rate_non_callers"]
    detail = f"{fmt_int(c['callers_converted'])} of {fmt_int(c['callers'])} callers"
    if callers is not None and others:
        detail += f" · {callers / others:.1f}× the non-callers' rate"
    return [
        Figure("conversion_rate_callers", "Callers who bought", fmt_rate(callers), callers, detail),
        Figure("conversion_rate_non_callers", "Visitors who did not call and bought", fmt_rate(others), others,
               f"{fmt_int(c['non_callers_converted'])} of {fmt_int(c['non_callers'])} visitors"),
        Figure("revenue_after_calls", "Revenue after calls", fmt_money(c["revenue_after_calls"]),
               c["revenue_after_calls"], f"{fmt_int(c['conversions_after_calls'])} orders"),
        Figure("orders_per_call", "Orders per call", fmt_average(c["orders_per_call"]), c["orders_per_call"]),
        Figure("time_to_purchase_median_seconds", "Call to purchase, median",
               fmt_duration(c["time_to_purchase_median_seconds"]), c["time_to_purchase_median_seconds"],
               f"average {fmt_duration(c['time_to_purchase_avg_seconds'])}"),
    ]


def _survey_figures(survey: Report) -> tuple[list[Figure], dict]:
    everything = next((r for r in survey.records() if r["dimension"] == "all"), None) or {}
    figures = [
        Figure("survey_average", "Average rating", fmt_average(everything.get("survey_average")),
               everything.get("survey_average"), "out of 5"),
        Figure("survey_responses", "Survey answers", fmt_int(everything.get("survey_responses", 0)),
               everything.get("survey_responses", 0)),
    ]
    return figures, everything


def build_dashboard(reports: dict[str, Any], filters: ReportFilters, query: str, zone: ZoneInfo) -> dict[str, Any]:
    """The page's figures, tables and charts from the reports' results."""

    def link(call_id: str) -> str:
        return f"/reports/calls/{quote(call_id, safe='')}?{query}"

    def tbl(key: str, title: str, report: Report | None = None, own: bool = False, name: str | None = None,
            **kw) -> Table:
        report = report or reports[key]
        name = name or report.name
        return table(report, key, title, COLUMNS[name], exports(name, query, own), zone, link, **kw)

    by_day, by_hour = reports["calls_by_day"], reports["calls_by_hour_of_week"]
    days = [date.fromisoformat(r["date"]) for r in by_day.records()]
    day_rows = by_day.records()
    calls_chart = charts.stacked_bars(
        "chart-calls-per-day", "Calls per day", [day_label(d) for d in days],
        [charts.Series("answered", "answered", [r["calls_answered"] for r in day_rows]),
         charts.Series("abandoned", "abandoned", [r["calls_abandoned"] for r in day_rows]),
         charts.Series("missed", "missed", [r["calls_missed"] for r in day_rows])], category_unit="days")
    matrix = [[0] * 24 for _ in range(7)]
    for r in by_hour.records():
        matrix[r["weekday"]][r["hour"]] = r["calls_offered"]
    heat_chart = charts.heatmap(
        "chart-hour-of-week", "Calls by hour of the week", WEEKDAYS_SHORT, [f"{h:02d}" for h in range(24)], matrix,
        cell_label=lambda row, column: f"{row} {column}:00")
    funnel = funnel_report(by_day, reports["landing_all"])
    funnel_chart = charts.funnel("chart-funnel", "From call to purchase",
                                 [(r["label"], r["calls"]) for r in funnel.records()])
    survey_figures, everything = _survey_figures(reports["survey"])
    ratings = [(f"{r} ★", everything.get(f"rating_{r}", 0)) for r in range(1, 6)]
    rating_chart = charts.histogram("chart-ratings", "Survey ratings", ratings)
    landing = reports["landing_all"]
    landing_shown = Report(landing.name, landing.columns, landing.rows[:filters.limit])
    return {
        "calls_figures": _calls_figures(by_day, reports["wait_and_talk"]),
        "conversion_figures": _conversion_figures(reports["conversion"]),
        "survey_figures": survey_figures,
        "charts": {"calls": calls_chart, "heatmap": heat_chart, "funnel": funnel_chart, "ratings": rating_chart},
        "exports": {name: exports(name, query) for name in (
            "calls_by_day", "calls_by_hour_of_week", "wait_and_talk", "conversion", "survey", "summary")},
        "heat": {"rows": WEEKDAYS_SHORT, "matrix": matrix},
        "ratings": ratings,
        "tables": {
            "calls_by_day": tbl("calls_by_day", "Calls by day"),
            "recent_calls": tbl("recent_calls", "Latest calls", own=True,
                                description="The latest calls of the period, newest first; open one for its timeline."),
            "funnel": tbl("funnel", "From call to purchase", report=funnel, own=True),
            "pages_before": tbl("pages_before", "Pages before calls",
                                description="Where visitors decided to call: the pages of the call's visit up to the "
                                            "call."),
            "pages_after": tbl("pages_after", "Pages after calls",
                               description="Pages callers viewed after their call, within the attribution window."),
            "sources": tbl("sources", "Traffic sources of callers"),
            "campaigns": tbl("campaigns", "UTM campaigns of callers", empty="No calls came from a UTM campaign."),
            "landing_pages": tbl("landing_pages", "Landing pages", report=landing_shown,
                                 empty="No caller was sent to a landing page."),
            "survey": tbl("survey", "Ratings by queue, agent and seller", empty="No survey answers."),
            "survey_comments": tbl("survey_comments", "Latest comments", empty="No comments."),
            "people": tbl("people", "Agents and sellers"),
        },
    }


async def dashboard(request: web.Request) -> web.Response:
    account = await require_reader(request)
    started = time.perf_counter()
    app = request.app
    window = timedelta(days=app[SETTINGS_KEY].attribution_days)
    context: dict[str, Any] = {"account": account, "csrf_token": await csrf_token(request), "zones": COMMON_ZONES,
                               "limits": LIMITS, "form": form_values(request.query), "error": None,
                               "attribution": fmt_days(app[SETTINGS_KEY].attribution_days)}
    try:
        filters = report_filters(request.query)
    except ApiError as exc:
        async with app[SESSIONMAKER_KEY]() as db:
            context["options"] = await filter_options(db, None)
        context["error"] = exc.message
        return _page(request, "reports/dashboard.html", context, status=400)
    context["form"] = {**context["form"], **filter_query(filters), "limit": str(filters.limit)}
    async with app[SESSIONMAKER_KEY]() as db:
        context["options"] = await filter_options(db, filters.site)
        try:
            await resolve(db, filters)
        except UnknownFilter as exc:
            context["error"] = str(exc)
            return _page(request, "reports/dashboard.html", context, status=404)
    reports = await run_jobs(app, dashboard_jobs(filters, window))
    query = urlencode(filter_query(filters))
    zone = zone_of(filters.tz)
    context.update(build_dashboard(reports, filters, query, zone))
    today = datetime.now(timezone.utc).astimezone(zone).date()
    context.update({
        "filters": filters, "query": query, "days": (filters.end - filters.start).days + 1,
        "ranges": [(label, "/reports?" + urlencode(filter_query(filters, **{
            "from": (today - timedelta(days=n - 1)).isoformat(), "to": today.isoformat()})))
                   for label, n in (("Last 7 days", 7), ("Last 30 days", 30), ("Last 90 days", 90))],
    })
    elapsed = time.perf_counter() - started
    context["elapsed"] = elapsed
    response = _page(request, "reports/dashboard.html", context)
    response.headers["Server-Timing"] = f"reports;dur={elapsed * 1000:.0f}"
    log.debug("dashboard %s in %.3f s", query, elapsed)
    return response


# ---------------------------------------------------------------- /reports/data/{name}: the page's own tables


OWN_TABLES = ("funnel", "recent_calls")


async def own_data(request: web.Request) -> web.Response:
    """`funnel` and `recent_calls` as the reports API serves its reports (same filters, JSON or CSV, same access:
    an API token or a marketer's or admin's login), with its JSON errors."""
    try:
        await require_report_access(request)
        name = request.match_info["name"]
        if name not in OWN_TABLES:
            raise ApiError(404, "not_found", f"no table named {name[:40]!r}; one of {', '.join(OWN_TABLES)}")
        output = request.query.get("format") or "json"
        if output not in ("json", "csv"):
            raise ApiError(400, "invalid_request", "format: json or csv")
        filters = report_filters(request.query)
        days = request.app[SETTINGS_KEY].attribution_days
        window = timedelta(days=days)
        async with request.app[SESSIONMAKER_KEY]() as db:
            try:
                await resolve(db, filters)  # an unknown site or queue is 404, as in the reports API
            except UnknownFilter as exc:
                raise ApiError(404, "not_found", str(exc)) from None
        if name == "funnel":
            every = ReportFilters(filters.start, filters.end, filters.tz, filters.site, filters.queue,
                                  filters.channel, MAX_LIMIT)
            jobs = {"by_day": report_job("calls_by_day", filters, window),
                    "landing": report_job("landing_pages", every, window)}
        else:
            jobs = {"recent": lambda db: recent_calls(db, filters, window)}
        found = await run_jobs(request.app, jobs)
    except ApiError as exc:
        return error_response(exc)
    report = funnel_report(found["by_day"], found["landing"]) if name == "funnel" else found["recent"]
    if output == "json":
        return web.json_response(report_json(report, filters, days), headers=NO_STORE)
    filename = f"talk-{name}-{filters.start.isoformat()}-{filters.end.isoformat()}.csv"
    return web.Response(text=report_csv(report), content_type="text/csv", charset="utf-8",
                        headers={**NO_STORE, "Content-Disposition": f'attachment; filename="{filename}"'})


# ---------------------------------------------------------------- one call's timeline


@dataclass
class Step:
    key: str
    label: str
    summary: str
    done: bool = True


async def timeline_extras(db: AsyncSession, call_id: str, visitor_id: str | None) -> dict[str, Any]:
    """What the reports' timeline leaves out: the call's voicemails, and the view of the landing page Talk sent the
    caller to (the page view whose URL carries talk_call=<id>; only recorded with consent)."""
    voicemails = [{"created_at": created, "duration_seconds": duration} for created, duration in await db.execute(
        select(Voicemail.created_at, Voicemail.duration_seconds).where(Voicemail.call_id == call_id)
        .order_by(Voicemail.created_at))]
    landed = None
    if visitor_id:
        row = (await db.execute(
            select(PageEvent.ts, PageEvent.url, PageEvent.title)
            .where(PageEvent.visitor_id == visitor_id,
                   PageEvent.url.contains(f"talk_call={call_id}", autoescape=True))
            .order_by(PageEvent.ts).limit(1))).first()
        if row is not None:
            landed = {"ts": row.ts, "url": row.url, "title": row.title}
    return {"voicemails": voicemails, "landed": landed}


def timeline_context(data: dict[str, Any], extras: dict[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    call = data["call"]
    created, ringing = parse_instant(call["created_at"]), parse_instant(call["ringing_at"])
    answered, ended = parse_instant(call["answered_at"]), parse_instant(call["ended_at"])
    ring_end = answered or ended
    before, after, bought = data["pages_before"], data["pages_after"], data["conversions"]
    survey, landed = data["survey"], extras["landed"]
    seconds_before = sum(p["time_on_page"] or 0 for p in before)
    total = sum(c["value"] or 0 for c in bought)
    currencies = sorted({c["currency"] for c in bought if c["currency"]})
    result = OUTCOMES.get(call["outcome"], call["outcome"])

    def local(value, seconds: bool = True) -> str:
        return fmt_local(value, zone, seconds)

    def pages(items: list[dict]) -> list[dict]:
        return [{**p, "when": local(p["ts"]), "href": web_url(p["url"]), "stay": fmt_duration(p["time_on_page"])}
                for p in items]

    steps = [
        Step("before", "Before", f"{len(before)} page{'s' * (len(before) != 1)}"
             + (f", {fmt_duration(seconds_before)}" if before else ""), bool(before)),
        Step("call", "Call", f"{result}" + (f", talked {fmt_duration(_seconds(answered, ended))}"
                                            if answered and ended else ""), True),
        Step("landing", "Landing page", "landed" if landed else ("sent" if data["landing_url"] else "none"),
             bool(data["landing_url"])),
        Step("survey", "Survey", f"{survey['rating']} ★" if survey else "no answer", bool(survey)),
        Step("after", "After", f"{len(after)} page{'s' * (len(after) != 1)}", bool(after)),
        Step("purchases", "Purchases", f"{len(bought)}" + (f", {fmt_money(total)} {'/'.join(currencies)}"
                                                          if bought else ""), bool(bought)),
    ]
    conversions = []
    for c in bought:
        ts = parse_instant(c["ts"])
        conversions.append({**c, "when": local(c["ts"]), "value_text": fmt_money(c["value"]),
                            "after": fmt_duration(_seconds(ended, ts))})
    return {
        "t": data, "steps": steps, "result": result,
        "pages_before": pages(before), "pages_after": pages(after), "conversions": conversions,
        "call_page_href": web_url(call["page"]["url"]),
        "times": [("Call made", local(created)), ("Rang", local(ringing) if ringing else "–"),
                  ("Answered", local(answered) if answered else "–"), ("Ended", local(ended) if ended else "–")],
        "durations": [
            ("Wait", fmt_duration(call["wait_seconds"]) if answered else "–", "made → answered"),
            ("In queue before ringing", fmt_duration(_seconds(created, ringing)) if ringing else "–",
             "made → first ring"),
            ("Ring", fmt_duration(_seconds(ringing, ring_end)) if ringing and ring_end else "–",
             "first ring → answered" if answered else "first ring → end"),
            ("Talk", fmt_duration(call["talk_seconds"]) if answered else "–", "answered → ended"),
        ],
        "landing_href": web_url(data["landing_url"]),
        "landed": {**landed, "when": local(landed["ts"]), "href": web_url(landed["url"]),
                   "after": fmt_duration(_seconds(ended, landed["ts"]))} if landed else None,
        "voicemails": [{"when": local(v["created_at"]), "length": fmt_duration(v["duration_seconds"])}
                       for v in extras["voicemails"]],
        "survey_when": local(survey["created_at"]) if survey else None,
    }


async def timeline_page(request: web.Request) -> web.Response:
    account = await require_reader(request)
    call_id = request.match_info["call_id"]
    tz = request.query.get("tz") or "UTC"
    try:
        zone = zone_of(tz)
    except FilterError:
        tz, zone = "UTC", ZoneInfo("UTC")
    window = timedelta(days=request.app[SETTINGS_KEY].attribution_days)
    async with request.app[SESSIONMAKER_KEY]() as db:
        data = await call_timeline(db, call_id, window)
        if data is None:
            raise web.HTTPNotFound(text="No such call.")
        extras = await timeline_extras(db, data["call_id"], data["visitor_id"])
    back = {key: request.query[key][:100] for key in FILTER_KEYS if request.query.get(key)}
    context = {"account": account, "csrf_token": await csrf_token(request), "tz": tz,
               "back": "/reports" + ("?" + urlencode(back) if back else ""),
               "attribution": fmt_days(request.app[SETTINGS_KEY].attribution_days),
               **timeline_context(data, extras, zone)}
    return _page(request, "reports/timeline.html", context)


def setup_reports_dashboard(app: web.Application) -> None:
    app.router.add_get("/reports", dashboard)
    app.router.add_get(r"/reports/data/{name}", own_data)
    app.router.add_get(r"/reports/calls/{call_id}", timeline_page)
