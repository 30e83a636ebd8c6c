"""The marketers' dashboard (/reports) and the call timeline (/reports/calls/{id}) against a real server on generated
data (analytics/generator.py) plus one planted call whose page titles, URLs, UTM values, disposition, survey comment
and order id are hostile markup: who may see the pages, that the figures, the funnel and every CSV/JSON link are the
reports layer's own, that the filters are reflected everywhere, that nothing untrusted becomes markup, and what the
timeline of the planted call shows. The charts' builders (web/charts.py) are checked as pure functions too."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import shutil
import xml.etree.ElementTree as ET
from datetime import date, datetime, time, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from analytics import visitordays
from analytics.generator import generate
from analytics.reports import ReportFilters, run_report
from analytics.reports.filters import MAX_LIMIT
from talk import directory
from talk.app import create_app
from talk.db import SESSIONMAKER_KEY, create_engine, upgrade_schema_async
from talk.models import Account, CallRecord, Conversion, PageEvent, Queue, Site, SurveyAnswer
from talk.settings import Settings
from talk.types import Role
from tests.conftest import free_port
from web import charts

END = datetime.combine(datetime.now(timezone.utc).date(), time(0), tzinfo=timezone.utc)  # fixed within a day
TODAY = END.date()
VISITORS = 400
SEED = 11
WINDOW = timedelta(days=7)
BERLIN = ZoneInfo("Europe/Berlin")
ADMIN_EMAIL = "admin@demo.test"

# The planted call: made three days before END at 10:00 UTC, with a journey full of markup.
PLANTED = "c_planted_hostile_call_0001"
VISITOR, SESSION = "v_planted_hostile", "s_planted_hostile"
MADE = END - timedelta(days=3) + timedelta(hours=10)
CALL_TITLE = '<script>alert("title")</script>'
CALL_URL = "javascript:alert(1)"
LANDING = f"javascript:alert(2)//?talk_call={PLANTED}"
FIRST_TITLE = "<img src=x onerror=alert(3)>"
FIRST_PATH = '/"><svg onload=alert(5)>'
SECOND_URL = "javascript:alert(4)"
SECOND_TITLE = "Cart \"quoted\" & <i>"
AFTER_TITLE = "<svg/onload=alert(7)>"
CAMPAIGN, UTM_SOURCE = "<b>camp</b>", "news<letter>"
DISPOSITION = "<u>Offer</u>"
COMMENT = "</td><script>alert(6)</script> & more"
ORDER = "<i>ord-1</i>"
HOSTILE = (CALL_TITLE, FIRST_TITLE, FIRST_PATH, SECOND_TITLE, AFTER_TITLE, CAMPAIGN, UTM_SOURCE, DISPOSITION, COMMENT,
           ORDER)


# ---------------------------------------------------------------- data


async def plant(db) -> None:
    site = await db.scalar(select(Site).where(Site.key == "demo-shop"))
    queue = await db.scalar(select(Queue).where(Queue.site_id == site.id, Queue.name == "support"))
    agent = await db.scalar(select(Account).where(Account.email == "agent@demo.test"))

    def view(n: int, at: datetime, url: str, path: str, title: str, session: str = SESSION, **utm) -> PageEvent:
        return PageEvent(site_id=site.id, event_id=f"e_planted_{n}", visitor_id=VISITOR, session_id=session,
                         type="pageview", ts=at, url=url, path=path, title=title, referrer=None, **utm)

    db.add_all([
        view(1, MADE - timedelta(seconds=120), "https://shop.example/in?utm_campaign=x", FIRST_PATH, FIRST_TITLE,
             utm_source=UTM_SOURCE, utm_medium="email", utm_campaign=CAMPAIGN),
        view(2, MADE - timedelta(seconds=45), SECOND_URL, "/cart", SECOND_TITLE),
        CallRecord(id=PLANTED, site_id=site.id, queue_id=queue.id, agent_id=agent.id, visitor_id=VISITOR,
                   state="ended", end_reason="completed", page_url=CALL_URL, page_title=CALL_TITLE,
                   page_referrer=None, created_at=MADE, ringing_at=MADE + timedelta(seconds=2),
                   answered_at=MADE + timedelta(seconds=10), ended_at=MADE + timedelta(seconds=130),
                   session_id=SESSION, has_journey=True, disposition=DISPOSITION, landing_url=LANDING,
                   channel="agent"),
        view(3, MADE + timedelta(seconds=140), LANDING, "alert(2)//", "Thanks", session="s_planted_after"),
        view(4, MADE + timedelta(seconds=600), "https://shop.example/after", "/after", AFTER_TITLE,
             session="s_planted_after"),
        SurveyAnswer(call_id=PLANTED, queue_id=queue.id, agent_id=agent.id, rating=2, comment=COMMENT,
                     created_at=MADE + timedelta(seconds=200)),
        Conversion(site_id=site.id, order_id=ORDER, visitor_id=VISITOR, value=123.45, currency="EUR",
                   ts=MADE + timedelta(hours=1), origin="browser"),
    ])


async def fill(data_dir: Path, database_url: str = "") -> None:
    settings = Settings(data_dir=data_dir, database_url=database_url)
    engine = create_engine(settings.resolved_database_url)
    try:
        await generate(engine, VISITORS, end=END, seed=SEED)
        async with async_sessionmaker(engine, expire_on_commit=False)() as db, db.begin():
            await plant(db)
            await visitordays.rebuild(db)  # the planted page views were written with the ORM
            await directory.create_account(db, ADMIN_EMAIL, "Ada Admin", "demo", Role.ADMIN)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def dashboard_data(seeded_data_dir, tmp_path_factory) -> Path:
    """One generated data set with the planted call, copied for each test's server."""
    data_dir = tmp_path_factory.mktemp("dashboard")
    for name in ("talk.db", "secret.key"):
        shutil.copy(seeded_data_dir / name, data_dir / name)
    asyncio.run(fill(data_dir))
    return data_dir


@pytest.fixture
def settings(tmp_path, dashboard_data) -> Settings:
    for name in ("talk.db", "secret.key"):
        shutil.copy(dashboard_data / name, tmp_path / name)
    return Settings(data_dir=tmp_path, demo=True, port=free_port())


async def report(server: TestServer, name: str, filters: ReportFilters):
    async with server.app[SESSIONMAKER_KEY]() as db:
        return await run_report(db, name, filters, WINDOW)


def last_30_days(tz: str = "UTC", **kw) -> ReportFilters:
    today = datetime.now(timezone.utc).astimezone(ZoneInfo(tz)).date()
    return ReportFilters(today - timedelta(days=29), today, tz, **kw)


# ---------------------------------------------------------------- HTML


VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"})


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def words(self) -> str:
        return " ".join(self.text().split())

    def iter(self):
        for child in self.children:
            if isinstance(child, Node):
                yield child
                yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs: str | bool) -> list[Node]:
        """Descendants with this tag and attributes (class_ matches one of the classes; True: present)."""
        found = []
        for node in self.iter():
            if tag is not None and node.tag != tag:
                continue
            wanted = True
            for name, value in attrs.items():
                if name == "class_":
                    wanted &= value in (node.attrs.get("class") or "").split()
                elif value is True:
                    wanted &= name.replace("_", "-") in node.attrs
                else:
                    wanted &= node.attrs.get(name.replace("_", "-")) == value
            if wanted:
                found.append(node)
        return found

    def find(self, tag: str | None = None, **attrs: str | bool) -> Node:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag or '*'}> with {attrs}"
        return found[0]


class Tree(HTMLParser):
    """The page as a tree of Nodes (attributes unescaped, text unescaped), like a browser would hold it."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#document", {}, None)
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Node(tag, dict(attrs), self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse(page: str) -> Node:
    return Tree(page).root


def figures(page: Node) -> dict[str, float]:
    return {n.attrs["data-figure"]: float(n.attrs["data-value"]) for n in page.find_all(class_="figure")
            if n.attrs.get("data-figure") and n.attrs.get("data-value") is not None}


def column_values(page: Node, table_id: str, column: str) -> list[str | None]:
    table = page.find("table", id=f"table-{table_id}")
    return [td.attrs.get("data-value", td.words()) for td in table.find_all("td", data_column=column)]


def terms(dl: Node) -> list[tuple[str, str]]:
    """A <dl>'s (term, description) pairs, as words."""
    found, term = [], None
    for node in dl.iter():
        if node.tag == "dt":
            term = node.words()
        elif node.tag == "dd" and term is not None:
            found.append((term, node.words()))
    return found


def export_links(page: Node) -> list[str]:
    return [a.attrs["href"] for a in page.find_all("a", class_="export")]


# ---------------------------------------------------------------- HTTP


async def log_in(http: aiohttp.ClientSession, base_url: str, email: str) -> None:
    async with http.get(f"{base_url}/login") as response:
        token = re.search(r'name="csrf_token" value="([^"]+)"', await response.text()).group(1)
    form = {"email": email, "password": "demo", "csrf_token": token}
    async with http.post(f"{base_url}/login", data=form, allow_redirects=False) as response:
        assert response.status == 302, await response.text()


async def get(http: aiohttp.ClientSession, url: str) -> tuple[aiohttp.ClientResponse, str]:
    async with http.get(url, allow_redirects=False) as response:
        return response, await response.text()


@pytest.fixture
async def marketer(server, base_url) -> aiohttp.ClientSession:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        await log_in(session, base_url, "marketer@demo.test")
        yield session


async def dashboard(http, base_url, query: str = "") -> Node:
    response, body = await get(http, f"{base_url}/reports{query}")
    assert response.status == 200, body
    return parse(body)


# ---------------------------------------------------------------- access


async def test_only_marketers_and_admins_see_the_dashboard_and_timelines(server, base_url, http):
    query = "?from=2026-01-01&to=2026-01-31&channel=seller"
    response, _ = await get(http, f"{base_url}/reports{query}")
    assert response.status == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login" and parse_qs(location.query)["next"] == [f"/reports{query}"]  # filters kept
    response, _ = await get(http, f"{base_url}/reports/calls/{PLANTED}")
    assert response.status == 302 and response.headers["Location"].startswith("/login?next=")
    response, body = await get(http, f"{base_url}/reports/data/funnel")
    assert response.status == 401 and "error" in body

    for email, allowed in (("agent@demo.test", False), ("seller@demo.test", False), ("marketer@demo.test", True),
                           (ADMIN_EMAIL, True)):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            await log_in(session, base_url, email)
            for path in ("/reports", f"/reports/calls/{PLANTED}", "/reports/data/funnel?format=csv",
                         "/api/v1/reports/summary?format=json"):
                response, body = await get(session, f"{base_url}{path}")
                assert response.status == (200 if allowed else 403), (email, path, body[:200])
            if allowed:
                response, body = await get(session, f"{base_url}/reports")
                csp = response.headers["Content-Security-Policy"]
                assert "script-src 'none'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
                assert response.headers["X-Frame-Options"] == "DENY"
                assert response.headers["Cache-Control"] == "no-store"
                assert not parse(body).find_all("script")


# ---------------------------------------------------------------- figures


async def test_the_figures_and_the_funnel_are_the_reports_own(server, base_url, marketer):
    page = await dashboard(marketer, base_url)
    filters = last_30_days()
    summary = (await report(server, "summary", filters)).records()[0]
    waits = (await report(server, "wait_and_talk", filters)).records()[0]
    conversion = (await report(server, "conversion", filters)).records()[0]
    every = ReportFilters(filters.start, filters.end, filters.tz, limit=MAX_LIMIT)
    landing = (await report(server, "landing_pages", every)).records()
    shown = figures(page)

    assert summary["calls_offered"] > 20 and summary["calls_answered"] > 0 and summary["survey_responses"] > 0
    for name in ("calls_offered", "calls_answered", "calls_abandoned", "calls_missed", "voicemails", "answer_rate",
                 "survey_average", "survey_responses"):
        assert shown[name] == summary[name], name
    for name in ("wait_avg_seconds", "wait_p90_seconds", "talk_avg_seconds"):
        assert shown[name] == waits[name], name
    for name in ("conversion_rate_callers", "conversion_rate_non_callers", "revenue_after_calls", "orders_per_call",
                 "time_to_purchase_median_seconds"):
        assert shown[name] == conversion[name], name

    expected = [summary["calls_offered"], summary["calls_answered"], sum(r["calls"] for r in landing),
                sum(r["landed"] for r in landing), sum(r["calls_converted"] for r in landing)]
    assert all(expected) and expected[2] < expected[1]
    assert [int(v) for v in column_values(page, "funnel", "calls")] == expected
    response, body = await get(marketer, f"{base_url}/reports/data/funnel?format=json")
    assert response.status == 200
    assert [row["calls"] for row in json.loads(body)["rows"]] == expected
    svg = page.find("svg", id="chart-funnel")
    assert all(f"{label} {n:,}" in svg.attrs["aria-label"] for label, n in zip(
        ("Calls offered", "Answered", "Sent to a landing page", "Landed on it", "Purchase after"), expected))

    # The charts are there, as SVG, each with its data as a table and its CSV.
    for chart in ("chart-calls-per-day", "chart-hour-of-week", "chart-funnel", "chart-ratings"):
        svg = page.find("svg", id=chart)
        assert svg.attrs["role"] == "img" and svg.attrs["aria-label"] and svg.find("title").text()
    days = column_values(page, "calls_by_day", "calls_offered")
    assert len(days) == 30 and sum(int(v) for v in days) == summary["calls_offered"]
    heat = page.find("table", id="table-hour-of-week")
    assert sum(int(td.text()) for td in heat.find_all("td")) == summary["calls_offered"]


async def test_filters_change_the_figures_as_the_reports_do(server, base_url, marketer):
    everything = figures(await dashboard(marketer, base_url))
    parts = {}
    for channel in ("agent", "seller"):
        parts[channel] = figures(await dashboard(marketer, base_url, f"?channel={channel}"))
        summary = (await report(server, "summary", last_30_days(channel=channel))).records()[0]
        assert parts[channel]["calls_offered"] == summary["calls_offered"] > 0
    assert parts["agent"]["calls_offered"] + parts["seller"]["calls_offered"] == everything["calls_offered"]
    assert parts["agent"]["calls_offered"] == figures(await dashboard(marketer, base_url, "?queue=support"))[
        "calls_offered"]

    week = (TODAY - timedelta(days=6)).isoformat(), TODAY.isoformat()
    shown = figures(await dashboard(marketer, base_url, f"?from={week[0]}&to={week[1]}&tz=Europe/Berlin"))
    summary = (await report(server, "summary", ReportFilters(date.fromisoformat(week[0]), TODAY,
                                                             "Europe/Berlin"))).records()[0]
    assert shown["calls_offered"] == summary["calls_offered"] < everything["calls_offered"]
    assert shown["answer_rate"] == summary["answer_rate"]


async def test_a_period_without_calls_shows_zeros_dashes_and_empty_charts(server, base_url, marketer):
    page = await dashboard(marketer, base_url, "?from=2020-01-01&to=2020-01-31&tz=Europe/Berlin")
    shown = figures(page)
    assert shown["calls_offered"] == shown["calls_answered"] == shown["survey_responses"] == 0
    assert "answer_rate" not in shown and "conversion_rate_callers" not in shown  # no denominator: no rate
    assert page.find(class_="figure", data_figure="answer_rate").find(class_="figure-value").text() == "–"
    assert "No calls in this period." in page.find("svg", id="chart-calls-per-day").attrs["aria-label"]
    assert "No calls in this period." in page.find("svg", id="chart-hour-of-week").attrs["aria-label"]
    assert page.find(id="empty-recent_calls") and page.find(id="empty-survey_comments")
    assert [int(v) for v in column_values(page, "funnel", "calls")] == [0, 0, 0, 0, 0]


# ---------------------------------------------------------------- filters and exports


async def test_filters_are_reflected_in_the_form_the_period_and_every_export_link(server, base_url, marketer):
    query = {"from": "2026-01-05", "to": "2026-02-03", "tz": "America/New_York", "site": "demo-shop",
             "queue": "support", "channel": "agent", "limit": "10"}
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    page = await dashboard(marketer, base_url, f"?{qs}")

    form = page.find("form", id="filters")
    assert form.attrs["method"] == "get" and form.attrs["action"] == "/reports"
    values = {n.attrs["name"]: n.attrs.get("value") for n in form.find_all("input")}
    values.update({s.attrs["name"]: s.find("option", selected=True).attrs["value"] for s in form.find_all("select")
                   if s.find_all("option", selected=True)})
    assert values == query
    period = page.find(id="period")
    assert period.attrs["data-from"] == "2026-01-05" and period.attrs["data-tz"] == "America/New_York"
    assert "2026-01-05 – 2026-02-03" in period.words() and "queue support" in period.words()
    assert {o.attrs["value"] for o in page.find("datalist", id="zones").find_all("option")} >= {"UTC", "Europe/Berlin"}

    links = export_links(page)
    assert len(links) >= 20
    for href in links:
        parts = urlsplit(href)
        assert parts.path.startswith(("/api/v1/reports/", "/reports/data/")), href
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        assert params.pop("format") in ("csv", "json")
        assert params == query, href
    for a in page.find_all("a", class_="call-link"):
        assert parse_qs(urlsplit(a.attrs["href"]).query)["tz"] == ["America/New_York"]


async def test_bad_filters_show_the_form_with_the_reason(server, base_url, marketer):
    for query, status, reason in (("?tz=Mars/Olympus", 400, "tz: unknown time zone"),
                                  ("?from=2026-02-30", 400, "from: not a calendar date"),
                                  ("?from=2026-03-01&to=2026-02-01", 400, "from: after to"),
                                  ("?channel=fax", 400, "channel: one of agent, seller"),
                                  ("?queue=nope", 404, "queue: no queue named 'nope'"),
                                  ("?site=%3Cb%3E", 404, "site: no site with the key '<b>'")):
        response, body = await get(marketer, f"{base_url}/reports{query}")
        assert response.status == status, query
        page = parse(body)
        assert reason in page.find(id="filter-error").text(), query
        assert page.find("form", id="filters") and not page.find_all(class_="figure")
        assert "<b>" not in body


async def test_every_csv_and_json_link_answers_and_matches_its_table(server, base_url, marketer):
    page = await dashboard(marketer, base_url, "?tz=Europe/Berlin&limit=25")
    links = export_links(page)
    by_base: dict[str, dict[str, str]] = {}
    for href in links:
        parts = urlsplit(href)
        kind = parse_qs(parts.query)["format"][0]
        by_base.setdefault(parts.path, {})[kind] = href
    assert len(by_base) >= 15 and all(set(kinds) == {"csv", "json"} for kinds in by_base.values())
    for path, kinds in by_base.items():
        response, text = await get(marketer, f"{base_url}{kinds['csv']}")
        assert response.status == 200 and response.content_type == "text/csv", path
        assert response.headers["Content-Disposition"].startswith("attachment;")
        rows = list(csv.reader(io.StringIO(text)))
        response, body = await get(marketer, f"{base_url}{kinds['json']}")
        assert response.status == 200 and response.content_type == "application/json", path
        data = json.loads(body)
        assert rows[0] == data["columns"] and len(rows) - 1 == len(data["rows"]), path
        assert data["filters"]["tz"] == "Europe/Berlin"
        for line, record in zip(rows[1:], data["rows"]):
            for cell, column in zip(line, data["columns"]):
                value = record[column]
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    assert float(cell) == value, (path, column)
        name = path.rsplit("/", 1)[1]
        tables = page.find_all("table", id=f"table-{name}")
        if tables:  # the page shows the same rows as the export
            assert int(tables[0].attrs["data-rows"]) == len(data["rows"]), name


# ---------------------------------------------------------------- escaping


def assert_inert(page: Node, body: str) -> None:
    """No script, no event handler attribute, no javascript: link; no hostile text unescaped in the HTML."""
    assert not page.find_all("script")
    for node in page.iter():
        for name, value in node.attrs.items():
            assert not name.startswith("on"), (node.tag, name, value)
            if name in ("href", "src", "xlink:href", "action"):
                assert not (value or "").strip().lower().startswith("javascript:"), (node.tag, value)
    for text in HOSTILE:
        if "<" in text:
            assert text not in body, text


async def test_hostile_titles_urls_and_comments_stay_text(server, base_url, marketer):
    response, body = await get(marketer, f"{base_url}/reports")
    page = parse(body)
    assert_inert(page, body)
    assert COMMENT in [td.text() for td in page.find("table", id="table-survey_comments").find_all(
        "td", data_column="comment")]
    assert FIRST_PATH in page.find("table", id="table-pages_before").text()
    assert CAMPAIGN in page.find("table", id="table-campaigns").text()
    assert UTM_SOURCE in page.find("table", id="table-campaigns").text()
    assert "javascript:alert(2)//" in page.find("table", id="table-landing_pages").text()

    response, body = await get(marketer, f"{base_url}/reports/calls/{PLANTED}")
    page = parse(body)
    assert_inert(page, body)
    text = page.text()
    for hostile in (CALL_TITLE, FIRST_TITLE, SECOND_TITLE, AFTER_TITLE, DISPOSITION, COMMENT, ORDER, CALL_URL,
                    SECOND_URL, LANDING):
        assert hostile in text, hostile
    links = {a.attrs["href"] for a in page.find_all("a")}
    assert "https://shop.example/after" in links  # an http(s) URL is a link
    for a in page.find_all("a", target="_blank"):
        assert set(a.attrs["rel"].split()) >= {"noopener", "noreferrer"}


def test_chart_builders_make_accessible_svg_with_escaped_text():
    hostile = '<script>alert("x")</script> & "quotes"'
    made = [
        charts.stacked_bars("c1", hostile, [hostile, "b"], [charts.Series(hostile, "answered", [3, 0]),
                                                             charts.Series("missed", "missed", [1, 2])]),
        charts.funnel("c2", hostile, [(hostile, 10), ("b", 4), ("c", 0)]),
        charts.histogram("c3", hostile, [(hostile, 2), ("2 ★", 0)]),
        charts.heatmap("c4", hostile, [hostile, "Tue"], ["00", "01"], [[0, 5], [1, 0]]),
        charts.stacked_bars("c5", "Empty", [], []),
        charts.funnel("c6", "Empty", [("a", 0), ("b", 0)]),
    ]
    for svg in made:
        assert "<script" not in svg and hasattr(svg, "__html__")
        root = ET.fromstring(str(svg))  # well-formed XML
        ns = "{http://www.w3.org/2000/svg}"
        assert root.tag == f"{ns}svg" and root.get("role") == "img" and root.get("aria-label")
        assert root.find(f"{ns}title").text and root.find(f"{ns}desc").text
        texts = [t.text for t in root.iter(f"{ns}text")] + [t.text for t in root.iter(f"{ns}title")]
        if root.get("id") not in ("c5", "c6"):
            assert any(hostile in (t or "") for t in texts)  # the text itself, unescaped by the XML parser
    bars = ET.fromstring(str(made[0]))
    tooltips = [t.text for t in bars.iter("{http://www.w3.org/2000/svg}title")]
    assert "b: 2 missed" in tooltips and "b: 2 calls" in tooltips
    assert charts.heat_level(0, 5) == 0 and charts.heat_level(5, 5) == 5 and charts.heat_level(1, 100) == 1
    assert charts.nice_ceiling(0) == 1 and charts.nice_ceiling(11) == 20 and charts.nice_ceiling(240) == 250


# ---------------------------------------------------------------- the timeline


async def test_the_timeline_of_a_known_call(server, base_url, marketer):
    response, body = await get(marketer, f"{base_url}/reports/calls/{PLANTED}?tz=Europe/Berlin&channel=agent")
    assert response.status == 200
    page = parse(body)
    root = page.find(id="timeline")
    assert root.attrs["data-call"] == PLANTED and root.attrs["data-outcome"] == "answered"
    assert page.find("a", href="/reports?tz=Europe%2FBerlin&channel=agent")  # back, same filters

    def local(at: datetime) -> str:
        return at.astimezone(BERLIN).strftime("%Y-%m-%d %H:%M:%S")

    assert "Answered" in page.find(id="call-outcome").text() and "completed" in page.find(id="call-outcome").text()
    assert page.find(id="call-person").words() == "Alex Agent"
    assert "campaign" in page.find(id="call-source").text() and CAMPAIGN in page.find(id="call-source").text()
    before = page.find("table", id="pages-before").find("tbody").find_all("tr")
    assert [[td.words() for td in tr.find_all("td")] for tr in before] == [
        [local(MADE - timedelta(seconds=120)), f"{FIRST_TITLE} https://shop.example/in?utm_campaign=x", "1 min 15 s"],
        [local(MADE - timedelta(seconds=45)), f"{SECOND_TITLE} {SECOND_URL}", "45 s"],
    ]
    call = terms(page.find(id="stage-call").find("dl"))
    assert call == [("From the page", f"{CALL_TITLE} {CALL_URL}"), ("Call made", local(MADE)),
                    ("Rang", local(MADE + timedelta(seconds=2))), ("Answered", local(MADE + timedelta(seconds=10))),
                    ("Ended", local(MADE + timedelta(seconds=130)))]
    durations = {d.find("dt").words(): d.find("dd").words() for d in page.find(id="call-durations").find_all("div")}
    assert durations == {"Wait": "10 s", "In queue before ringing": "2.0 s", "Ring": "8.0 s", "Talk": "2 min 00 s"}
    assert page.find(id="call-disposition").text() == DISPOSITION
    assert page.find(id="stage-landing").find(class_="page-url").text() == LANDING
    assert page.find(id="landed").words() == f"{local(MADE + timedelta(seconds=140))} (10 s after the call)"
    assert page.find(id="survey-rating").attrs["data-value"] == "2"
    assert page.find(id="survey-comment").text() == COMMENT
    after = page.find("table", id="pages-after").find("tbody").find_all("tr")
    assert [[td.words() for td in tr.find_all("td")][:2] for tr in after] == [
        [local(MADE + timedelta(seconds=600)), f"{AFTER_TITLE} https://shop.example/after"]]
    bought = page.find("table", id="conversions").find("tbody").find_all("tr")
    assert [[td.words() for td in tr.find_all("td")] for tr in bought] == [
        [local(MADE + timedelta(hours=1)), ORDER, "123.45", "EUR", "57 min 50 s"]]
    steps = {li.attrs["data-step"]: li.find(class_="step-summary").words() for li in page.find_all("li", class_="step")}
    assert steps == {"before": "2 pages, 2 min 00 s", "call": "Answered, talked 2 min 00 s", "landing": "landed",
                     "survey": "2 ★", "after": "1 page", "purchases": "1, 123.45 EUR"}

    response, body = await get(marketer, f"{base_url}/reports/calls/c_no_such_call")
    assert response.status == 404
    response, body = await get(marketer, f"{base_url}/reports/calls/{PLANTED}?tz=Not/AZone")
    assert response.status == 200 and "Times in UTC" in parse(body).words()


async def test_every_call_link_opens_that_calls_timeline(server, base_url, marketer):
    page = await dashboard(marketer, base_url, "?limit=10&tz=Asia/Tokyo")
    links = page.find_all("a", class_="call-link")
    recent = page.find("table", id="table-recent_calls").find_all("a", class_="call-link")
    comments = page.find("table", id="table-survey_comments").find_all("a", class_="call-link")
    assert len(recent) == 10 and comments and len(links) == len(recent) + len(comments)
    for a in links:
        href = urlsplit(a.attrs["href"])
        call_id = href.path.rsplit("/", 1)[1]
        assert href.path == f"/reports/calls/{call_id}" and a.attrs["title"] == f"Timeline of call {call_id}"
        response, body = await get(marketer, f"{base_url}{a.attrs['href']}")
        assert response.status == 200
        timeline = parse(body)
        assert timeline.find(id="timeline").attrs["data-call"] == call_id
        assert "Times in Asia/Tokyo" in timeline.words()


# ---------------------------------------------------------------- PostgreSQL: the concurrent path


@pytest.mark.postgres
async def test_the_dashboard_on_postgresql_runs_its_reports_concurrently_with_the_same_figures(
        pg_database, seeded_data_dir, tmp_path, recwarn):
    await upgrade_schema_async(pg_database)
    engine = create_engine(pg_database)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as db, db.begin():
            from talk.app import demo_origins
            from talk.demo import seed_demo
            await seed_demo(db, demo_origins(Settings(data_dir=tmp_path, demo=True)))
    finally:
        await engine.dispose()
    await fill(tmp_path, pg_database)
    shutil.copy(seeded_data_dir / "secret.key", tmp_path / "secret.key")
    settings = Settings(data_dir=tmp_path, demo=True, port=free_port(), database_url=pg_database)
    server = TestServer(create_app(settings), host="127.0.0.1", port=settings.port)
    await server.start_server()
    try:
        base_url = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await log_in(http, base_url, "marketer@demo.test")
            page = await dashboard(http, base_url, "?tz=Europe/Berlin")
            summary = (await report(server, "summary", last_30_days("Europe/Berlin"))).records()[0]
            shown = figures(page)
            assert shown["calls_offered"] == summary["calls_offered"] > 20
            assert shown["conversion_rate_callers"] == summary["conversion_rate_callers"]
            assert COMMENT in page.find("table", id="table-survey_comments").text()
            response, body = await get(http, f"{base_url}/reports/calls/{PLANTED}")
            assert response.status == 200 and ORDER in parse(body).text()
    finally:
        await server.close()
    assert not [w for w in recwarn if "execution_options" in str(w.message)]
