"""The reports API against a generated data set with known ground truth (analytics/generator_truth.py): every
summary figure and every day's counts equal the truth exactly, as JSON and as CSV, for several time zones, filters and
ranges (calls across midnight, conversions at the edge of the window, visitors with several calls, calls without a
journey are planted in the data); the other reports agree with the summary; SQLite and PostgreSQL give the same
reports; who may read; bad input; the OpenAPI document."""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from openapi_spec_validator import validate
from sqlalchemy.ext.asyncio import async_sessionmaker

from analytics.generator import generate
from analytics.generator_truth import Truth
from analytics.reports import REPORTS, ReportFilters, run_report
from talk.apitokens import create_token
from talk.app import create_app
from talk.db import create_engine
from talk.settings import Settings
from tests.conftest import free_port
from tests.support.client import login

END = datetime(2026, 4, 2, tzinfo=timezone.utc)  # fixed: the data, and so the figures, never change
DAYS = 45  # 2026-02-16 … 2026-04-01: both 2026 daylight saving changes (US 8 March, EU 29 March)
VISITORS = 600
SEED = 5
WINDOW = timedelta(days=7)
FIRST, LAST = date(2026, 2, 16), date(2026, 4, 1)
KEEP_FOREVER = 36500  # retention days: the fixed dates must not age out of the database


def copy_data(source: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("talk.db", "secret.key"):
        shutil.copy(source / name, target / name)
    return target


def generate_copy(seeded: Path, target: Path, visitors: int, seed: int) -> Truth:
    """Generate `visitors` (END, DAYS, WINDOW) into a copy of the seeded demo database at `target`."""
    data_dir = copy_data(seeded, target)

    async def run() -> Truth:
        engine = create_engine(Settings(data_dir=data_dir).resolved_database_url)
        try:
            return await generate(engine, visitors, end=END, seed=seed, days=DAYS, attribution_days=WINDOW.days)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def generated(seeded_data_dir, tmp_path_factory) -> tuple[Path, Truth]:
    """One generated data set per module, on a copy of the seeded demo database; tests copy it again."""
    data_dir = tmp_path_factory.mktemp("generated")
    return data_dir, generate_copy(seeded_data_dir, data_dir, VISITORS, SEED)


@dataclass
class Served:
    base_url: str
    token: str
    app: Any


async def serve(settings: Settings) -> AsyncIterator[Served]:
    engine = create_engine(settings.resolved_database_url)
    server = TestServer(create_app(settings), host="127.0.0.1", port=settings.port)
    await server.start_server()
    try:
        async with async_sessionmaker(engine)() as db, db.begin():
            token = await create_token(db, "reports")
        yield Served(f"http://127.0.0.1:{server.port}", token, server.app)
    finally:
        await server.close()
        await engine.dispose()


@pytest.fixture
async def reports(generated, tmp_path) -> AsyncIterator[Served]:
    """A server on a copy of the generated data."""
    data_dir = copy_data(generated[0], tmp_path / "data")
    async for served in serve(Settings(data_dir=data_dir, demo=True, port=free_port(), retention_days=KEEP_FOREVER)):
        yield served


async def fetch(http: aiohttp.ClientSession, served: Served, name: str, auth: bool = True,
                **params: str) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {served.token}"} if auth else {}
    async with http.get(f"{served.base_url}/api/v1/reports/{name}", params=params, headers=headers) as response:
        text = await response.text()
        body = text if response.content_type == "text/csv" else await response.json(content_type=None)
        return response.status, body, response.headers


def cell(value: Any) -> str:
    """How a value must read in the CSV: numbers exactly (repr), None empty."""
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return repr(value)
    return str(value)


def csv_rows(text: str) -> tuple[list[str], list[list[str]]]:
    header, *rows = list(csv.reader(io.StringIO(text)))
    return header, rows


def params_of(start: date, end: date, tz: str, **filters: str) -> dict[str, str]:
    return {"from": start.isoformat(), "to": end.isoformat(), "tz": tz, **filters}


def day0(truth: Truth) -> date:
    """The generator's first scenario day (the midnight calls are planted on it and the next)."""
    call = truth.call(truth.scenarios["midnight_berlin"])
    return call.created_at.astimezone(ZoneInfo("Europe/Berlin")).date()


# (start, end, tz, filters): None dates are filled in from the data's scenario days.
CASES = {
    "all-utc": (FIRST, LAST, "UTC", {}),
    "all-berlin": (FIRST, LAST, "Europe/Berlin", {}),
    "all-new-york": (FIRST, LAST, "America/New_York", {}),
    "site-berlin": (FIRST, LAST, "Europe/Berlin", {"site": "demo-shop"}),
    "queue-support-utc": (FIRST, LAST, "UTC", {"queue": "support"}),
    "seller-channel-new-york": (FIRST, LAST, "America/New_York", {"channel": "seller"}),
    "agent-channel-berlin": (FIRST, LAST, "Europe/Berlin", {"channel": "agent", "queue": "support"}),
    "cut-through-dst-berlin": (date(2026, 3, 5), date(2026, 3, 29), "Europe/Berlin", {}),
    "cut-through-dst-new-york": (date(2026, 3, 8), date(2026, 3, 20), "America/New_York", {"site": "demo-shop"}),
    "midnight-call-day-berlin": ("day0", "day0", "Europe/Berlin", {}),
    "day-after-midnight-call-berlin": ("day1", "day1", "Europe/Berlin", {}),
    "midnight-call-day-utc": ("day1", "day1", "UTC", {}),
    "day-after-midnight-call-utc": ("day2", "day2", "UTC", {"site": "demo-shop"}),
    "window-and-several-calls-days": ("day1", "day5", "America/New_York", {}),
}


def resolve_case(truth: Truth, case: str) -> tuple[date, date, str, dict[str, str]]:
    start, end, tz, filters = CASES[case]
    days = {f"day{n}": day0(truth) + timedelta(days=n) for n in range(6)}
    return days.get(start, start), days.get(end, end), tz, filters


def test_the_rollups_give_the_figures_of_a_full_recount(generated):
    """Every report through the rollups (analytics/visitordays.py) equals the same report counted from the raw rows
    (recount=True), for every case above, and the summary also equals the truth."""
    data_dir, truth = generated

    async def run() -> None:
        engine = create_engine(Settings(data_dir=data_dir).resolved_database_url)
        try:
            async with async_sessionmaker(engine, expire_on_commit=False)() as db:
                for case in CASES:
                    start, end, tz, filters = resolve_case(truth, case)
                    for name in ("summary", "conversion"):
                        fast, full = [await run_report(db, name, ReportFilters(start, end, tz, **filters), WINDOW,
                                                       recount=recount) for recount in (False, True)]
                        assert fast.rows == full.rows, (case, name)
                    expected = truth.summary(start, end, tz, **filters)
                    assert fast.records()[0]["non_callers"] == expected["non_callers"], case
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_the_planted_edge_cases_are_in_the_data(generated):
    """The cases the reports are held to (analytics/generator.py plants them when the data set is big enough)."""
    _, truth = generated
    for name in ("midnight_berlin", "midnight_utc", "window_exact", "window_minus_1s", "window_plus_1s",
                 "several_calls", "no_journey"):
        assert name in truth.scenarios, name
    assert truth.summary(FIRST, LAST, "UTC")["calls_offered"] > 30


@pytest.mark.parametrize("case", list(CASES))
async def test_summary_and_calls_by_day_equal_the_truth_as_json_and_csv(generated, reports, http, case):
    _, truth = generated
    start, end, tz, filters = resolve_case(truth, case)
    params = params_of(start, end, tz, **filters)
    expected = truth.summary(start, end, tz, **filters)
    expected_days = [{**row, "date": row["date"].isoformat()}
                     for row in truth.calls_per_day(start, end, tz, **filters)]

    status, body, _ = await fetch(http, reports, "summary", **params)
    assert status == 200, body
    assert body["rows"] == [expected]
    assert body["filters"] == {"from": start.isoformat(), "to": end.isoformat(), "tz": tz, "site": None,
                               "queue": None, "channel": None, **filters}
    status, text, headers = await fetch(http, reports, "summary", format="csv", **params)
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    header, rows = csv_rows(text)
    assert header == list(expected) and rows == [[cell(v) for v in expected.values()]]

    status, body, _ = await fetch(http, reports, "calls_by_day", **params)
    assert status == 200, body
    assert [{key: row[key] for key in expected_days[0]} for row in body["rows"]] == expected_days
    status, text, _ = await fetch(http, reports, "calls_by_day", format="csv", **params)
    header, rows = csv_rows(text)
    columns = list(expected_days[0])
    assert [[row[header.index(c)] for c in columns] for row in rows] == \
        [[cell(day[c]) for c in columns] for day in expected_days]


async def test_the_other_reports_agree_with_the_summary(generated, reports, http):
    _, truth = generated
    params = params_of(FIRST, LAST, "Europe/Berlin")
    got = {}
    for name in REPORTS:
        status, body, _ = await fetch(http, reports, name, limit="1000", **params)
        assert status == 200, (name, body)
        got[name] = body
    summary = got["summary"]["rows"][0]
    counts = ("calls_offered", "calls_answered", "calls_abandoned", "calls_missed", "voicemails")

    for by in ("calls_by_day", "calls_by_hour_of_week"):
        sums = {key: sum(row[key] for row in got[by]["rows"]) for key in counts}
        assert sums == {key: summary[key] for key in counts}, by
        assert got[by]["totals"] == {**sums, "answer_rate": summary["answer_rate"]}
    assert len(got["calls_by_hour_of_week"]["rows"]) == 168
    assert summary["calls_answered"] + summary["calls_abandoned"] + summary["calls_missed"] == \
        summary["calls_offered"]  # generated data has no live calls

    people = got["people"]["rows"]
    assert sum(row["calls"] for row in people) == summary["calls_offered"]
    assert sum(row["calls_answered"] for row in people) == summary["calls_answered"]
    assert sum(row["survey_responses"] for row in people) == summary["survey_responses"]
    assert {row["role"] for row in people} == {"agent", "seller"}

    survey = got["survey"]["rows"]
    overall = survey[0]
    assert overall["dimension"] == "all"
    assert (overall["survey_responses"], overall["survey_rating_sum"], overall["survey_average"]) == \
        (summary["survey_responses"], summary["survey_rating_sum"], summary["survey_average"])
    assert sum(overall[f"rating_{r}"] for r in range(1, 6)) == summary["survey_responses"]
    for dimensions in (("queue",), ("agent", "seller")):  # every answer is in one queue and of one person
        assert sum(row["survey_responses"] for row in survey if row["dimension"] in dimensions) == \
            summary["survey_responses"], dimensions
    # Each agent's and seller's answers as the people report counts them (its own grouping of the calls).
    assert {(row["dimension"], row["id"]): row["survey_responses"] for row in survey
            if row["dimension"] in ("agent", "seller")} == \
        {(row["role"], row["id"]): row["survey_responses"] for row in people
         if row["id"] is not None and row["survey_responses"]}

    conversion = got["conversion"]["rows"][0]
    for key in ("callers", "callers_converted", "conversion_rate_callers", "non_callers", "non_callers_converted",
                "conversion_rate_non_callers", "conversions_after_calls", "revenue_after_calls", "calls_offered"):
        assert conversion[key] == summary[key], key
    assert conversion["orders_per_call"] == summary["conversions_after_calls"] / summary["calls_offered"]
    assert 0 < conversion["time_to_purchase_median_seconds"] <= WINDOW.total_seconds()

    wait = got["wait_and_talk"]["rows"][0]
    assert wait["calls_answered"] == wait["calls_talked"] == summary["calls_answered"]
    assert 0 < wait["wait_avg_seconds"] <= wait["wait_max_seconds"]
    assert wait["wait_median_seconds"] <= wait["wait_p90_seconds"] <= wait["wait_max_seconds"]

    sources = got["sources"]["rows"]
    assert sum(row["calls"] for row in sources) == summary["calls_offered"]  # every call has exactly one source
    in_range = truth._calls_in(FIRST, LAST, ZoneInfo("Europe/Berlin"), None, None, None)
    no_consent = next(row for row in sources if row["kind"] == "no_consent")
    assert no_consent["calls"] == sum(not c.has_journey for c in in_range)

    landing = got["landing_pages"]["rows"]
    assert sum(row["calls"] for row in landing) == sum(c.landing_url is not None for c in in_range)
    assert all("talk_call" not in row["landing_page"] for row in landing)
    assert got["pages_before"]["rows"] and got["pages_after"]["rows"]
    assert all("talk_call" not in row["path"] for row in got["pages_after"]["rows"])
    comments = got["survey_comments"]["rows"]
    assert comments and all(row["comment"] for row in comments)
    assert [row["created_at"] for row in comments] == sorted((row["created_at"] for row in comments), reverse=True)


# ----- PostgreSQL -----

@pytest.mark.postgres
async def test_postgres_reports_equal_the_truth_and_sqlite(generated, pg_database, tmp_path, http):
    sqlite_dir, sqlite_truth = generated
    # Seed PostgreSQL as the SQLite data was seeded (same port, so the same demo origins in the generated URLs).
    seed = create_app(Settings(data_dir=tmp_path, demo=True, database_url=pg_database))
    contexts = [ctx(seed) for ctx in seed.cleanup_ctx]
    for ctx in contexts:
        await ctx.__anext__()
    for ctx in reversed(contexts):
        await anext(ctx, None)
    pg_engine = create_engine(pg_database)
    sqlite_engine = create_engine(Settings(data_dir=sqlite_dir).resolved_database_url)
    try:
        truth = await generate(pg_engine, VISITORS, end=END, seed=SEED, days=DAYS, attribution_days=WINDOW.days)
        settings = Settings(data_dir=tmp_path, demo=True, port=free_port(), database_url=pg_database,
                            retention_days=KEEP_FOREVER)
        async for served in serve(settings):
            for case in ("all-berlin", "seller-channel-new-york", "cut-through-dst-berlin", "midnight-call-day-utc"):
                start, end, tz, filters = resolve_case(truth, case)
                params = params_of(start, end, tz, **filters)
                status, body, _ = await fetch(http, served, "summary", **params)
                assert status == 200 and body["rows"] == [truth.summary(start, end, tz, **filters)], case
                status, text, _ = await fetch(http, served, "summary", format="csv", **params)
                assert csv_rows(text)[1] == [[cell(v) for v in truth.summary(start, end, tz, **filters).values()]]
                status, body, _ = await fetch(http, served, "calls_by_day", **params)
                assert [{k: row[k] for k in ("date", "calls_offered", "calls_answered", "calls_abandoned",
                                             "calls_missed", "voicemails")} for row in body["rows"]] == \
                    [{**row, "date": row["date"].isoformat()} for row in truth.calls_per_day(start, end, tz, **filters)]

        # Every report, row for row, the same on both engines (same seed, same demo data: the same rows).
        assert truth.summary(FIRST, LAST, "UTC") == sqlite_truth.summary(FIRST, LAST, "UTC")
        for tz, filters in (("Europe/Berlin", {}), ("America/New_York", {"queue": "support"})):
            chosen = ReportFilters(FIRST, LAST, tz, limit=1000, **filters)
            for name in REPORTS:
                async with async_sessionmaker(pg_engine)() as pg, async_sessionmaker(sqlite_engine)() as lite:
                    on_pg, on_sqlite = await run_report(pg, name, chosen, WINDOW), \
                        await run_report(lite, name, chosen, WINDOW)
                assert on_pg == on_sqlite, (name, tz)
    finally:
        await pg_engine.dispose()
        await sqlite_engine.dispose()


# ----- who may read -----

@pytest.mark.parametrize("authorization", [None, "Bearer tk_not_a_real_token", "Basic abc", "Bearer "],
                         ids=["none", "unknown-token", "basic", "empty"])
async def test_without_valid_credentials_reports_are_401(reports, http, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    for path in ("/api/v1/reports/summary", "/api/v1/reports", "/api/v1/reports/summary?format=csv"):
        async with http.get(reports.base_url + path, headers=headers) as response:
            body = await response.json()
        assert response.status == 401 and body["error"]["code"] == "unauthorized", (path, body)


@pytest.mark.parametrize("email", ["agent@demo.test", "seller@demo.test"])
async def test_a_login_of_another_role_is_403(reports, http, email):
    await login(http, reports.base_url, email)
    async with http.get(reports.base_url + "/api/v1/reports/summary") as response:
        body = await response.json()
    assert response.status == 403 and body["error"]["code"] == "forbidden", body


async def test_a_marketer_login_and_an_api_token_may_read(reports, http, http2):
    await login(http2, reports.base_url, "marketer@demo.test")
    async with http2.get(reports.base_url + "/api/v1/reports/summary") as response:
        assert response.status == 200, await response.text()
        assert "calls_offered" in (await response.json())["rows"][0]
    status, body, headers = await fetch(http, reports, "summary")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    async with http.get(reports.base_url + "/api/v1/reports",
                        headers={"Authorization": f"Bearer {reports.token}"}) as response:
        listed = [r["name"] for r in (await response.json())["reports"]]
    assert listed == list(REPORTS)


# ----- input -----

async def test_the_default_range_is_the_last_30_days_in_the_zone(reports, http):
    status, body, _ = await fetch(http, reports, "calls_by_day", tz="Pacific/Kiritimati")
    assert status == 200, body
    today = datetime.now(ZoneInfo("Pacific/Kiritimati")).date()
    assert body["filters"]["to"] == today.isoformat()
    assert body["filters"]["from"] == (today - timedelta(days=29)).isoformat()
    assert len(body["rows"]) == 30


@pytest.mark.parametrize("params, status, mentions", [
    ({"from": "2026-03-02", "to": "2026-03-01"}, 400, "from"),
    ({"from": "2025-01-01", "to": "2026-02-05"}, 400, "400 days"),
    ({"from": "2026-3-1"}, 400, "from"),
    ({"to": "2026-02-30"}, 400, "to"),
    ({"from": "yesterday"}, 400, "from"),
    ({"from": "20260301"}, 400, "from"),
    ({"to": "0001-01-01"}, 400, ""),
    ({"to": "9999-12-31"}, 400, ""),
    ({"tz": "Mars/Olympus_Mons"}, 400, "tz"),
    ({"tz": "../../etc/passwd"}, 400, "tz"),
    ({"tz": "/usr/share/zoneinfo/UTC"}, 400, "tz"),
    ({"tz": "x" * 200}, 400, "tz"),
    ({"channel": "phone"}, 400, "channel"),
    ({"format": "xlsx"}, 400, "format"),
    ({"limit": "0"}, 400, "limit"),
    ({"limit": "1001"}, 400, "limit"),
    ({"limit": "ten"}, 400, "limit"),
    ({"site": "no-such-site"}, 404, "site"),
    ({"queue": "no-such-queue"}, 404, "queue"),
    ({"site": "demo-shop", "queue": "no-such-queue"}, 404, "queue"),
], ids=lambda value: str(value) if not isinstance(value, dict) else "&".join(f"{k}={v[:20]}" for k, v in value.items()))
async def test_bad_input_is_refused_clearly(reports, http, params, status, mentions):
    got, body, _ = await fetch(http, reports, "summary", **params)
    assert got == status, body
    assert body["error"]["code"] == ("invalid_request" if status == 400 else "not_found")
    assert mentions in body["error"]["message"], body


async def test_an_unknown_report_is_404(reports, http):
    status, body, _ = await fetch(http, reports, "no_such_report")
    assert status == 404 and body["error"]["code"] == "not_found" and "/api/v1/reports" in body["error"]["message"]


async def test_csv_is_an_attachment_with_a_header_row(reports, http):
    status, text, headers = await fetch(http, reports, "calls_by_hour_of_week", format="csv",
                                        **params_of(FIRST, LAST, "UTC"))
    assert status == 200
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    assert headers["Content-Disposition"] == \
        'attachment; filename="talk-calls_by_hour_of_week-2026-02-16-2026-04-01.csv"'
    header, rows = csv_rows(text)
    assert header[:3] == ["weekday", "weekday_name", "hour"] and len(rows) == 168
    assert text.endswith("\r\n")


# ----- OpenAPI -----

async def test_openapi_document_is_valid_and_covers_every_json_api(reports, http):
    async with http.get(reports.base_url + "/api/v1/openapi.json") as response:
        assert response.status == 200  # no credentials needed: it holds no data
        document = await response.json()
    validate(document)  # openapi-spec-validator: OpenAPI 3.1
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["apiToken"] == {
        "type": "http", "scheme": "bearer", "description": "An API token (`talk token create`)"}
    routes = {(resource.canonical, route.method.lower())
              for resource in reports.app.router.resources() for route in resource
              if resource.canonical.startswith("/api/") and route.method not in ("OPTIONS", "HEAD")}
    documented = {(path, method) for path, item in document["paths"].items() for method in item
                  if method in ("get", "post", "delete", "put", "patch")}
    assert routes <= documented, routes - documented
    report_names = document["paths"]["/api/v1/reports/{name}"]["get"]["parameters"][0]["schema"]["enum"]
    assert report_names == list(REPORTS)
