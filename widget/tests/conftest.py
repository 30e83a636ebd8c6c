"""Fixtures for the widget's own browser tests: the mock Talk server (widget_mock.py) and headless Chromium.

These tests check what the widget does and sends, against docs/api.md and docs/protocol.md, without the real server;
tests/e2e checks the whole product. Playwright's sync API runs its own event loop, so the tests are plain functions.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS, skip_or_fail
from widget_mock import MockTalk

@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        skip_or_fail(f"Chromium not found at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("Playwright for Python is not installed (pip install -e '.[test]')")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def mock_server() -> Iterator[MockTalk]:
    server = MockTalk().start()
    yield server
    server.stop()


@pytest.fixture
def mock(mock_server: MockTalk) -> MockTalk:
    mock_server.reset()
    return mock_server


class Browsing:
    """A fresh browser context (own storage) with its console and page errors recorded."""

    def __init__(self, browser, mock: MockTalk) -> None:
        self.context = browser.new_context(base_url=mock.shop)
        self.context.set_default_timeout(5_000)
        self.logs: list[str] = []
        self.errors: list[str] = []
        self.page = self.new_page()

    def new_page(self):
        page = self.context.new_page()
        page.on("console", lambda msg: self.logs.append(f"[{msg.type}] {msg.text}"))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        return page

    def warnings(self) -> str:
        return "\n".join(line for line in self.logs if line.startswith("[warning] talk: "))


@pytest.fixture
def browsing(browser, mock: MockTalk, request: pytest.FixtureRequest) -> Iterator[Browsing]:
    session = Browsing(browser, mock)
    yield session
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print("browser console:\n" + "\n".join(session.logs))
    session.context.close()
    assert session.errors == [], f"uncaught errors in the page: {session.errors}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report
