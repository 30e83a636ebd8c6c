"""The console's journey panel and disposition, in real Chromium against `talk demo`: the shopper's page views (sent by
the widget) reach the ringing console as text, the agent picks a disposition during and after the call, and the stored
call has it.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import pytest

from tests.e2e import TalkDemo, skip_or_fail

try:
    from playwright.sync_api import Page, expect
except ImportError:
    skip_or_fail("Playwright for Python is not installed (pip install -e '.[test]')", module_level=True)

from tests.e2e.test_browser_call import (
    XSS_TITLE,
    assert_no_page_errors,
    console_root,
    log_in_agent,
    only_call,
    open_shop,
)

pytestmark = pytest.mark.browser

# The demo queue's dispositions (talk/demo.py), after the console's empty first option.
DEMO_DISPOSITION_OPTIONS = ["— choose —", "Question answered", "Offer sent"]
NO_JOURNEY_TEXT = "No journey (the visitor has not consented to tracking)"


# ---------------------------------------------------------------- helpers


def wait_for_page_views(db_path: Path, count: int, timeout: float = 5.0) -> None:
    """Until the server has stored `count` page views (the call must find them), bounded."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(db_path, timeout=5) as db:
            stored = db.execute("SELECT count(*) FROM events").fetchone()[0]
        if stored >= count:
            assert stored == count, f"expected {count} page views, the server stored {stored}"
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"only {stored} of {count} page views stored within {timeout} s")
        time.sleep(0.05)


def wait_for_disposition(db_path: Path, expected: str, timeout: float = 5.0) -> None:
    """Until the single stored call has `expected` as its disposition (the call store writes in batches), bounded."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(db_path, timeout=5) as db:
            values = [row[0] for row in db.execute("SELECT disposition FROM calls")]
        if values == [expected]:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"stored dispositions {values}, expected [{expected!r}] within {timeout} s")
        time.sleep(0.05)


def journey(page: Page):
    return page.locator("#journey")


# ---------------------------------------------------------------- tests


def test_ringing_console_shows_the_journey_as_text_and_the_disposition_is_stored(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page, open_page):
    """The shopper views three demo pages, the last one reached by a single-page-app navigation whose title is
    markup, then calls. While it rings the console lists those three pages oldest first, as text (nothing parsed
    out of the title, so nothing runs). The agent answers, picks a disposition (stored), hangs up, changes it after
    the call (stored too), and the journey stays on screen until the next call."""
    caller, agent = caller_page, agent_page
    log_in_agent(agent, available=True)

    open_shop(caller, "/demo/")
    visited = [(caller.title(), caller.url)]
    open_shop(caller, "/demo/about")
    visited.append((caller.title(), caller.url))
    # The widget records a history.pushState navigation as a page view, with the title the app set.
    caller.evaluate("""title => {
        document.title = title;
        history.pushState({}, '', '/demo/products/oak-chair');
    }""", XSS_TITLE)
    visited.append((XSS_TITLE, caller.url))
    assert caller.url.endswith("/demo/products/oak-chair")
    wait_for_page_views(talk_demo.db_path, 3)

    caller.get_by_role("button", name="Call us", exact=True).click()

    root = console_root(agent)
    expect(root).to_have_attribute("data-call-state", "ringing")
    panel = journey(agent)
    expect(panel).to_be_visible()
    expect(panel).to_have_attribute("data-state", "loaded")
    expect(panel).to_have_attribute("data-pages", "3")
    rows = agent.locator("li.journey-page")
    expect(rows).to_have_count(3)
    expect(rows.locator(".journey-page-title")).to_have_text([title for title, _ in visited])
    expect(rows.locator(".journey-page-url")).to_have_text([url for _, url in visited])
    for _, url in visited:
        link = rows.locator(".journey-page-url", has_text=url).first
        expect(link).to_have_attribute("href", url)
        expect(link).to_have_attribute("rel", "noopener noreferrer")
        expect(link).to_have_attribute("target", "_blank")
    # Pages the shopper left have a time on page.
    for row in (rows.nth(0), rows.nth(1)):
        expect(row.locator(".journey-page-time")).to_have_text(re.compile(r"^Time on page: \d+ (s|min)$"))
    expect(agent.locator("#journey-source")).to_have_text("Direct")  # opened without a referrer
    expect(agent.locator("#earlier-calls")).to_have_text("First call")
    assert agent.evaluate("document.images.length") == 0
    assert agent.evaluate("typeof window.__xss") == "undefined"
    # No disposition before the call is answered.
    disposition = agent.get_by_label("Disposition")
    expect(disposition).to_be_hidden()

    agent.get_by_role("button", name="Answer").click()
    expect(root).to_have_attribute("data-call-state", "connected")
    expect(panel).to_have_attribute("data-pages", "3")
    expect(disposition).to_be_visible()
    expect(disposition.locator("option")).to_have_text(DEMO_DISPOSITION_OPTIONS)
    expect(disposition).to_have_value("")

    disposition.select_option("Question answered")
    status = agent.locator("#disposition-status")
    expect(status).to_have_text("Saved")
    wait_for_disposition(talk_demo.db_path, "Question answered")

    agent.get_by_role("button", name="Hang up").click()
    expect(agent.locator("#call-message")).to_have_text("Call ended (completed)")
    expect(root).to_have_attribute("data-call-state", "ended")
    # The journey and the disposition stay until the next call rings.
    expect(panel).to_be_visible()
    expect(rows).to_have_count(3)
    expect(disposition).to_have_value("Question answered")

    disposition.select_option("Offer sent")
    expect(status).to_have_text("Saved")
    wait_for_disposition(talk_demo.db_path, "Offer sent")
    row = only_call(talk_demo.db_path)
    assert (row["end_reason"], row["disposition"]) == ("completed", "Offer sent"), row
    assert agent.evaluate("typeof window.__xss") == "undefined"
    assert_no_page_errors(open_page)


def test_shopper_without_consent_rings_with_no_journey(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page, open_page):
    """A shopper who refused tracking calls: the console says there is no journey instead of listing pages."""
    caller, agent = caller_page, agent_page
    log_in_agent(agent, available=True)
    open_shop(caller, "/demo/")
    caller.evaluate("() => talk('consent', false)")
    open_shop(caller, "/demo/about")

    caller.get_by_role("button", name="Call us", exact=True).click()

    expect(console_root(agent)).to_have_attribute("data-call-state", "ringing")
    panel = journey(agent)
    expect(panel).to_have_attribute("data-state", "loaded")
    expect(agent.locator("#journey-note")).to_have_text(NO_JOURNEY_TEXT)
    expect(panel).to_have_attribute("data-pages", "0")
    expect(agent.locator("li.journey-page")).to_have_count(0)
    expect(agent.locator("#journey-source")).to_be_hidden()

    agent.get_by_role("button", name="Decline").click()
    expect(console_root(agent)).to_have_attribute("data-call-state", "idle")
    assert_no_page_errors(open_page)
