"""The reports API: GET /api/v1/reports (the list) and GET /api/v1/reports/{name} as JSON or CSV (docs/api.md).

Who may read: the call API's rule (a Bearer API token, or a marketer's or admin's login), except that another
role's login gets 403 rather than 401. Filters: `from`, `to` (YYYY-MM-DD, both included; default the last 30 days up
to today in `tz`), `tz` (IANA, default UTC), `site` (key), `queue` (name), `channel` (agent or seller), `limit` (rows
of the top-N reports), `format` (json or csv). An unknown site or queue is 404, not an empty report, so a typo is
not mistaken for a quiet day.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from analytics.reports import DESCRIPTIONS, REPORTS, FilterError, Report, ReportFilters, UnknownFilter, run_report
from analytics.reports.filters import DEFAULT_DAYS, DEFAULT_LIMIT, zone_of
from talk.db import SESSIONMAKER_KEY
from talk.settings import SETTINGS_KEY
from web.auth import current_account
from web.calls_api import REPORT_ROLES, require_api_access
from web.http import ApiError

DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
FORMATS = ("json", "csv")
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection): such text gets a leading '.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NO_STORE = {"Cache-Control": "no-store"}


async def require_report_access(request: web.Request) -> None:
    """A Bearer API token or a marketer's or admin's login (web.calls_api); another role's login is 403."""
    if not request.headers.get("Authorization"):
        account = await current_account(request)
        if account is not None and account.role not in REPORT_ROLES:
            raise ApiError(403, "forbidden", "reports are for marketers and admins")
    await require_api_access(request)


def _date(value: str | None, name: str) -> date | None:
    if value is None or value == "":
        return None
    if not DATE_RE.fullmatch(value):
        raise ApiError(400, "invalid_request", f"{name}: a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, "invalid_request", f"{name}: not a calendar date") from None


def _limit(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_LIMIT
    if not value.isascii() or not value.isdigit() or len(value) > 6:
        raise ApiError(400, "invalid_request", "limit: a whole number")
    return int(value)


def report_filters(query, now: datetime | None = None) -> ReportFilters:
    """The filters of a request's query string; ApiError 400 for a bad one."""
    try:
        tz = query.get("tz") or "UTC"
        zone_of(tz)
        start, end = _date(query.get("from"), "from"), _date(query.get("to"), "to")
        if end is None:
            end = (now or datetime.now(timezone.utc)).astimezone(zone_of(tz)).date()
        if start is None:
            start = end - timedelta(days=DEFAULT_DAYS - 1)
        return ReportFilters(start, end, tz, site=query.get("site") or None, queue=query.get("queue") or None,
                             channel=query.get("channel") or None, limit=_limit(query.get("limit")))
    except (FilterError, OverflowError) as exc:
        message = str(exc) if isinstance(exc, FilterError) else "from: out of range"
        raise ApiError(400, "invalid_request", message) from None


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: numbers as they are (repr: a float reads back exactly), None empty, text that a
    spreadsheet would run as a formula prefixed with an apostrophe."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def report_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(report.columns)
    writer.writerows([csv_cell(value) for value in row] for row in report.rows)
    return out.getvalue()


def report_json(report: Report, filters: ReportFilters, attribution_days: float) -> dict[str, Any]:
    return {"report": report.name, "filters": filters.as_json(), "attribution_days": attribution_days,
            "columns": list(report.columns), "rows": report.records(), "totals": report.totals}


async def get_report(request: web.Request) -> web.Response:
    await require_report_access(request)
    name = request.match_info["name"]
    if name not in REPORTS:
        raise ApiError(404, "not_found", f"no report named {name[:40]!r}; GET /api/v1/reports lists them")
    output = request.query.get("format") or "json"
    if output not in FORMATS:
        raise ApiError(400, "invalid_request", "format: json or csv")
    filters = report_filters(request.query)
    days = request.app[SETTINGS_KEY].attribution_days
    async with request.app[SESSIONMAKER_KEY]() as db:
        try:
            report = await run_report(db, name, filters, timedelta(days=days))
        except UnknownFilter as exc:
            raise ApiError(404, "not_found", str(exc)) from None
    if output == "json":
        return web.json_response(report_json(report, filters, days), headers=NO_STORE)
    filename = f"talk-{name}-{filters.start.isoformat()}-{filters.end.isoformat()}.csv"
    return web.Response(text=report_csv(report), content_type="text/csv", charset="utf-8",
                        headers={**NO_STORE, "Content-Disposition": f'attachment; filename="{filename}"'})


async def list_reports(request: web.Request) -> web.Response:
    await require_report_access(request)
    return web.json_response({"reports": [{"name": name, "description": text} for name, text in DESCRIPTIONS.items()]},
                             headers=NO_STORE)


def setup_reports_api(app: web.Application) -> None:
    app.router.add_get("/api/v1/reports", list_reports)
    app.router.add_get("/api/v1/reports/{name}", get_report)
