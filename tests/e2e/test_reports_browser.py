"""The marketers' dashboard in real Chromium against `talk demo --generate N`: a marketer logs in and sees figures
and SVG charts (nothing loaded from anywhere else, no CSP complaint), an agent is refused, the filter form changes the
figures exactly as the reports API reports them for the same filters, a CSV download parses and holds the JSON's
rows, and a call link opens that call's timeline."""

from __future__ import annotations

import csv
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e import TalkDemo, skip_or_fail
from tests.support.browser import CHROMIUM_FLAGS

try:
    from playwright.sync_api import Page, expect
except ImportError:
    skip_or_fail("Playwright for Python is not installed (pip install -e '.[test]')", module_level=True)

pytestmark = pytest.mark.browser

VISITORS = 600
SEED = 21
MARKETER, AGENT = "marketer@demo.test", "agent@demo.test"
GENERATE_TIMEOUT = 90.0


class GeneratedDemo(TalkDemo):
    """`talk demo --generate N --seed S`: the demo with N synthetic visitors' journeys, calls, surveys and purchases
    over the last 30 days, as a marketer would start it."""

    def __init__(self, data_dir: Path, visitors: int, seed: int) -> None:
        super().__init__(data_dir)
        self.generate = ["--generate", str(visitors), "--seed", str(seed)]

    def _spawn(self) -> None:  # TalkDemo's, with the generator's flags
        import subprocess

        from tests.e2e import talk_command

        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [*talk_command(), "demo", "--port", str(self.port), "--data-dir", str(self.data_dir), *self.generate]
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self._env())
        self.returncode = None


@pytest.fixture(scope="module")
def talk_demo(tmp_path_factory) -> TalkDemo:
    """One generated demo for the module (the tests only read); named like conftest's so failures show its output."""
    demo = GeneratedDemo(tmp_path_factory.mktemp("reports") / "data", VISITORS, SEED).start(GENERATE_TIMEOUT)
    try:
        yield demo
    finally:
        demo.stop()


@pytest.fixture(scope="module")
def browser(playwright):
    from tests.support.browser import CHROMIUM

    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
    yield browser
    browser.close()


@pytest.fixture
def page(open_page, browser) -> Page:
    return open_page(browser, "marketer")


# ---------------------------------------------------------------- helpers


def log_in(page: Page, email: str, path: str = "/reports") -> None:
    page.goto(path)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("demo")
    page.get_by_role("button", name="Log in").click()
    # Then the page it leads to, whole: reading figures while its 150 KB still stream in finds only the first ones.
    page.wait_for_url(lambda url: "/login" not in url)
    page.wait_for_load_state("load")


def form(page: Page):
    return page.locator("form#filters")


def shown_figures(page: Page) -> dict[str, float]:
    return page.eval_on_selector_all(
        "[data-figure][data-value]",
        "nodes => Object.fromEntries(nodes.map(n => [n.dataset.figure, Number(n.dataset.value)]))")


def api(page: Page, path: str) -> dict:
    response = page.request.get(path)
    assert response.status == 200, response.text()
    return response.json()


def summary_for(page: Page) -> dict:
    """The reports API's summary for the filters the page shows (its own URL's query)."""
    query = urlsplit(page.url).query
    return api(page, f"/api/v1/reports/summary?{query}&format=json")["rows"][0]


def assert_figures_are_the_apis(page: Page) -> dict[str, float]:
    page.wait_for_load_state("load")  # a URL that changed is a navigation committed, not a page parsed
    shown, summary = shown_figures(page), summary_for(page)
    for name in ("calls_offered", "calls_answered", "calls_abandoned", "calls_missed", "voicemails", "answer_rate",
                 "conversion_rate_callers", "conversion_rate_non_callers", "revenue_after_calls", "survey_average"):
        if summary[name] is None:
            assert name not in shown, name
        else:
            assert shown[name] == pytest.approx(summary[name], rel=1e-12), name
    return shown


def same_cell(cell: str, value) -> bool:
    """A CSV cell as the reports API writes the JSON value (web/reports_api.csv_cell)."""
    if value is None:
        return cell == ""
    if isinstance(value, bool):
        return cell == ("true" if value else "false")
    if isinstance(value, (int, float)):
        return float(cell) == value
    return cell == value or cell == "'" + value


def today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


# ---------------------------------------------------------------- tests


def test_a_marketer_sees_figures_and_svg_charts_from_this_server_only(talk_demo: TalkDemo, page: Page, open_page):
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    log_in(page, MARKETER)
    expect(page).to_have_url(re.compile(r"/reports$"))
    expect(page.locator("#reports")).to_have_attribute("data-state", "ready")
    expect(page.get_by_role("heading", name="Reports", exact=True)).to_be_visible()

    shown = assert_figures_are_the_apis(page)
    assert shown["calls_offered"] > 0 and shown["calls_answered"] > 0 and shown["revenue_after_calls"] > 0
    for name in ("Calls", "Conversion", "Journey", "Landing pages", "Survey", "Agents and sellers"):
        expect(page.get_by_role("heading", name=name, exact=True).first).to_be_visible()

    charts = page.locator("svg.chart[role=img]")
    expect(charts).to_have_count(4)
    for i in range(4):
        chart = charts.nth(i)
        expect(chart).to_be_visible()
        box = chart.bounding_box()
        assert box["width"] > 300 and box["height"] > 100
        assert chart.get_attribute("aria-label")
    bars = page.locator("#chart-calls-per-day rect.bar")
    assert bars.count() > 5
    expect(page.locator("#chart-calls-per-day")).to_have_attribute("aria-label", re.compile(
        rf"{int(shown['calls_offered']):,} calls in 30 days"))

    # Everything came from this server: no CDN, no font service; and the page broke no CSP rule (those are logged).
    assert requests and all(url.startswith(talk_demo.base_url) or url.startswith("data:") for url in requests)
    logs = open_page.logs["marketer"]
    assert not [line for line in logs if "Content Security Policy" in line or line.startswith("[error]")], logs
    assert not open_page.errors["marketer"]


def test_an_agent_is_refused(talk_demo: TalkDemo, page: Page):
    log_in(page, AGENT, "/reports?channel=seller")
    expect(page).to_have_url(re.compile(r"/reports\?channel=seller$"))
    expect(page.locator("body")).to_contain_text("no access")
    response = page.goto("/reports")
    assert response.status == 403
    assert page.goto("/reports/data/funnel").status == 403
    assert page.request.get("/api/v1/reports/summary").status == 403


def test_filters_change_the_figures_as_the_json_api_has_them(talk_demo: TalkDemo, page: Page):
    log_in(page, MARKETER)
    everything = assert_figures_are_the_apis(page)

    week = (datetime.now(timezone.utc).date() - timedelta(days=6)).isoformat()
    form(page).get_by_label("From", exact=True).fill(week)
    form(page).get_by_label("To", exact=True).fill(today())
    form(page).get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(rf"from={week}"))
    expect(page.locator("#period")).to_have_attribute("data-from", week)
    last_week = assert_figures_are_the_apis(page)
    assert last_week["calls_offered"] < everything["calls_offered"]

    form(page).get_by_label("Channel", exact=True).select_option("seller")
    form(page).get_by_label("Time zone", exact=True).fill("Europe/Berlin")
    form(page).get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"channel=seller"))
    query = parse_qs(urlsplit(page.url).query)
    assert query["tz"] == ["Europe/Berlin"] and query["from"] == [week]
    sellers = assert_figures_are_the_apis(page)
    assert 0 < sellers["calls_offered"] < last_week["calls_offered"]
    expect(page.locator("#period")).to_contain_text("seller calls")

    form(page).get_by_label("Channel", exact=True).select_option("")
    form(page).get_by_label("Queue", exact=True).select_option("support")
    form(page).get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"queue=support"))
    support = assert_figures_are_the_apis(page)
    assert 0 < support["calls_offered"] < last_week["calls_offered"]

    # A time zone that does not exist: the form says so, and shows no figures.
    form(page).get_by_label("Time zone", exact=True).fill("Mars/Olympus")
    form(page).get_by_role("button", name="Show").click()
    expect(page.locator("#filter-error")).to_contain_text("tz: unknown time zone")
    assert shown_figures(page) == {}


def test_a_csv_download_parses_and_holds_the_json_rows(talk_demo: TalkDemo, page: Page, tmp_path: Path):
    log_in(page, MARKETER, "/reports?tz=Europe/Berlin")
    for what in ("calls per day", "latest comments", "pages before calls", "the funnel"):
        link = page.get_by_role("link", name=f"CSV of {what}", exact=True)
        with page.expect_download() as info:
            link.click()
        download = info.value
        assert download.suggested_filename.endswith(".csv"), what
        target = tmp_path / download.suggested_filename
        download.save_as(target)
        with target.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        json_href = page.get_by_role("link", name=f"JSON of {what}", exact=True).get_attribute("href")
        data = api(page, json_href)
        assert rows[0] == data["columns"], what
        assert len(rows) - 1 == len(data["rows"]) > 0, what
        for line, record in zip(rows[1:], data["rows"]):
            assert len(line) == len(data["columns"])
            for cell, column in zip(line, data["columns"]):
                assert same_cell(cell, record[column]), (what, column, cell, record[column])
        assert data["filters"]["tz"] == "Europe/Berlin"


def test_a_call_link_opens_its_timeline(talk_demo: TalkDemo, page: Page):
    log_in(page, MARKETER, "/reports?tz=Europe/Berlin")
    row = page.locator("#table-recent_calls tbody tr").first
    outcome = row.locator("td[data-column=outcome]").inner_text().strip()
    link = row.locator("a.call-link")
    call_id = link.get_attribute("title").removeprefix("Timeline of call ")
    link.click()
    expect(page).to_have_url(re.compile(rf"/reports/calls/{re.escape(call_id)}\?"))
    expect(page.locator("#timeline")).to_have_attribute("data-call", call_id)
    expect(page.get_by_role("heading", name=f"Call {call_id}")).to_be_visible()
    for heading in ("Pages before the call", "The call", "Landing page", "Survey", "Pages after the call",
                    "Purchases"):
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    expect(page.locator(".steps .step")).to_have_count(6)
    expect(page.locator("body")).to_contain_text("Times in Europe/Berlin")
    expect(page.locator("#timeline")).to_have_attribute("data-outcome", outcome)
    expect(page.locator("#call-outcome")).to_contain_text(outcome.capitalize())

    page.get_by_role("link", name="← Dashboard").click()
    expect(page).to_have_url(re.compile(r"/reports\?from=.*&tz=Europe%2FBerlin"))
    expect(page.locator("#reports")).to_have_attribute("data-state", "ready")
