"""A shopper calls from the Demo Shop and an agent answers in the console: two real Chromiums against `talk demo`.

What only a browser test can show: the widget and the console speak to the real server, WebRTC audio flows both
ways (inbound RTP packets keep growing on both sides, and each side hears the other's tone), both UIs show the end,
untrusted page text stays text in the console, and the stored call record matches what happened.
"""

from __future__ import annotations

import re
import sqlite3
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e import AGENT_TONE_HZ, CALLER_TONE_HZ, TalkDemo, skip_or_fail

try:
    from playwright.sync_api import Page, expect
except ImportError:
    skip_or_fail("Playwright for Python is not installed (pip install -e '.[test]')", module_level=True)

pytestmark = pytest.mark.browser

AGENT_EMAIL = "agent@demo.test"
AGENT_PASSWORD = "demo"
NO_AGENT_TEXT = "Sorry, no one is available right now. Please try again later."
XSS_TITLE = "<img src=x onerror=window.__xss=1>"

WIDGET_STATS = "() => talk('stats')"
CONSOLE_STATS = "() => window.talkConsole.stats()"


# ---------------------------------------------------------------- page helpers


def widget_panel(page: Page):
    # CSS and role locators pierce the widget's open shadow root.
    return page.locator("#talk-widget section.panel")


def console_root(page: Page):
    return page.locator("#console")


def log_in_agent(page: Page, available: bool) -> None:
    page.goto("/console")
    expect(page).to_have_url(re.compile(r"/login\?next=/console$"))
    page.get_by_label("Email").fill(AGENT_EMAIL)
    page.get_by_label("Password").fill(AGENT_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/console$"))
    expect(console_root(page)).to_have_attribute("data-connection", "online")
    checkbox = page.get_by_label("Available")
    expect(checkbox).to_be_enabled()
    if available:
        checkbox.check()
        # Confirmed by the server, not just ticked: the next call must find this agent on duty.
        expect(console_root(page)).to_have_attribute("data-available", "true")
    else:
        expect(checkbox).not_to_be_checked()
        expect(console_root(page)).to_have_attribute("data-available", "false")


def expect_landing_page(page: Page, timeout: float = 2000) -> None:
    """A connected call has ended: the demo queue sends the caller to its landing page (talk/demo.py, DEMO_LANDING),
    and the widget there takes the talk_call parameter out of the address bar."""
    expect(page).to_have_url(re.compile(r"/demo/thanks$"), timeout=timeout)


def open_shop(page: Page, path: str) -> None:
    page.goto(path)
    expect(page.get_by_role("button", name="Call us", exact=True)).to_be_enabled()


def wait_for_audio(page: Page, stats_js: str, who: str, timeout: float = 10.0) -> dict:
    """Poll the stats hook until packets flow both ways (bounded). page.wait_for_function can't do this:
    it does not await a predicate's Promise, so an async predicate is always truthy."""
    deadline = time.monotonic() + timeout
    while True:
        stats = page.evaluate(stats_js)
        if stats and stats["inboundPackets"] > 0 and stats["outboundPackets"] > 0:
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"{who}: no audio packets both ways within {timeout:.0f} s; last stats {stats}")
        time.sleep(0.05)


def dominant_frequency(page: Page, audio_selector: str) -> float:
    """The loudest frequency in what the page's <audio> element plays (WebAudio analyser on its srcObject)."""
    return page.locator(audio_selector).evaluate(
        """async (audio) => {
            const ctx = new AudioContext();
            try {
                const analyser = ctx.createAnalyser();
                analyser.fftSize = 4096;
                ctx.createMediaStreamSource(audio.srcObject).connect(analyser);
                const bins = new Float32Array(analyser.frequencyBinCount);
                let best = 0;
                for (let i = 0; i < 40; i++) {  // up to 2 s until the analyser has signal
                    await new Promise((resolve) => setTimeout(resolve, 50));
                    analyser.getFloatFrequencyData(bins);
                    best = bins.indexOf(Math.max(...bins));
                    if (bins[best] > -60) break;
                }
                return bins[best] > -60 ? best * ctx.sampleRate / analyser.fftSize : -1;
            } finally {
                ctx.close();
            }
        }""")


# ---------------------------------------------------------------- database helpers


def only_call(db_path: Path, timeout: float = 5.0) -> dict:
    """The single call row of this fresh server, once the call store has written its end (bounded poll)."""
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while True:
        with sqlite3.connect(db_path, timeout=5) as db:
            db.row_factory = sqlite3.Row
            rows = [dict(r) for r in db.execute(
                "SELECT calls.*, accounts.email AS agent_email FROM calls"
                " LEFT JOIN accounts ON accounts.id = calls.agent_id")]
        if len(rows) == 1 and rows[0]["ended_at"] is not None:
            return rows[0]
        assert len(rows) <= 1, f"expected one call, the database has {len(rows)}: {rows}"
        if time.monotonic() > deadline:
            raise AssertionError(f"no ended call in {db_path} within {timeout} s: {rows}")
        time.sleep(0.1)


def timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value)


def assert_no_page_errors(open_page) -> None:
    errors = {name: errs for name, errs in open_page.errors.items() if errs}
    assert not errors, f"uncaught exceptions in the pages: {errors}"


# ---------------------------------------------------------------- tests


def test_shopper_calls_agent_answers_audio_flows_and_call_is_recorded(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page, open_page):
    caller, agent = caller_page, agent_page
    panel = widget_panel(caller)

    # The agent goes on duty first: a call to an empty queue ends at once with no-agent.
    log_in_agent(agent, available=True)
    open_shop(caller, "/demo/")
    title = caller.title()
    assert re.fullmatch(r".+ — Demo Shop", title), title

    caller.get_by_role("button", name="Call us", exact=True).click()

    # The agent's console rings with the shopper's page as text, and so does the caller's widget.
    expect(console_root(agent)).to_have_attribute("data-call-state", "ringing")
    expect(panel).to_have_attribute("data-state", "ringing")
    expect(agent.locator("#incoming-title")).to_have_text(title)
    expect(agent.locator("#incoming-url")).to_have_text(caller.url)
    assert caller.url.endswith("/demo/")
    call_page_url = caller.url  # the caller leaves it for the landing page when the call ends

    agent.get_by_role("button", name="Answer").click()
    expect(console_root(agent)).to_have_attribute("data-call-state", "connected")
    expect(panel).to_have_attribute("data-state", "connected")
    expect(agent.locator("#connected-title")).to_have_text(title)

    # Audio flows both ways: inbound packets keep growing on both sides.
    wait_for_audio(caller, WIDGET_STATS, "caller")
    wait_for_audio(agent, CONSOLE_STATS, "agent")
    before = {"caller": caller.evaluate(WIDGET_STATS), "agent": agent.evaluate(CONSOLE_STATS)}
    started = time.monotonic()
    time.sleep(1.0)  # the sampling interval
    after = {"caller": caller.evaluate(WIDGET_STATS), "agent": agent.evaluate(CONSOLE_STATS)}
    elapsed = time.monotonic() - started
    print(f"audio stats over {elapsed:.2f} s: before {before}, after {after}")  # shown when the test fails
    for side in ("caller", "agent"):
        grown = after[side]["inboundPackets"] - before[side]["inboundPackets"]
        # Opus sends 50 packets a second; 10 is far above noise and far below a healthy stream.
        assert grown >= 10, f"{side}: inbound audio grew by {grown} packets in {elapsed:.2f} s: {before[side]} → {after[side]}"
        assert after[side]["outboundPackets"] > before[side]["outboundPackets"], f"{side} stopped sending: {after[side]}"

    # And it is the other side's microphone: the caller hears the agent's tone, the agent the caller's.
    heard_by_caller = dominant_frequency(caller, "#talk-widget audio")
    heard_by_agent = dominant_frequency(agent, "#remote-audio")
    print(f"caller hears {heard_by_caller:.0f} Hz, agent hears {heard_by_agent:.0f} Hz")
    assert abs(heard_by_caller - AGENT_TONE_HZ) < 25, f"caller hears {heard_by_caller:.0f} Hz, agent sends {AGENT_TONE_HZ}"
    assert abs(heard_by_agent - CALLER_TONE_HZ) < 25, f"agent hears {heard_by_agent:.0f} Hz, caller sends {CALLER_TONE_HZ}"

    # The caller hangs up; both sides show the end promptly.
    caller.get_by_role("button", name="Hang up").click()
    expect_landing_page(caller)
    expect(agent.get_by_text(re.compile(r"^Call ended"))).to_be_visible(timeout=2000)
    expect(console_root(agent)).to_have_attribute("data-call-state", re.compile(r"^(ended|idle)$"), timeout=2000)
    expect(agent.get_by_role("button", name="Hang up")).to_be_hidden()
    assert caller.evaluate(WIDGET_STATS) is None and agent.evaluate(CONSOLE_STATS) is None, "a peer connection outlived the call"

    row = only_call(talk_demo.db_path)
    assert row["state"] == "ended"
    assert row["end_reason"] == "completed"
    assert row["agent_email"] == AGENT_EMAIL
    assert row["page_url"].endswith("/demo/") and row["page_url"] == call_page_url
    assert row["page_title"] == title
    created, ringing, answered, ended = (
        timestamp(row[k]) for k in ("created_at", "ringing_at", "answered_at", "ended_at"))
    assert created <= ringing <= answered <= ended, row
    assert (ended - answered).total_seconds() >= 1.0, f"the call lasted through the audio checks: {row}"
    assert_no_page_errors(open_page)


def test_no_agent_available_caller_hears_so_and_call_is_recorded(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page, open_page):
    caller, agent = caller_page, agent_page
    # Online but not on duty: the console must not ring.
    log_in_agent(agent, available=False)
    open_shop(caller, "/demo/")

    caller.get_by_role("button", name="Call us", exact=True).click()

    panel = widget_panel(caller)
    expect(panel).to_have_attribute("data-state", "ended")
    expect(panel.get_by_role("status")).to_have_text(NO_AGENT_TEXT)
    expect(caller.get_by_role("button", name="Call us", exact=True)).to_be_enabled()  # the shopper may try again

    row = only_call(talk_demo.db_path)
    assert row["end_reason"] == "no-agent"
    assert row["agent_id"] is None and row["answered_at"] is None
    assert row["page_url"].endswith("/demo/")
    assert timestamp(row["created_at"]) <= timestamp(row["ended_at"])
    expect(console_root(agent)).to_have_attribute("data-call-state", "idle")
    assert_no_page_errors(open_page)


def test_page_title_is_shown_as_text_in_console_and_decline_tells_caller(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page, open_page):
    caller, agent = caller_page, agent_page
    log_in_agent(agent, available=True)
    open_shop(caller, "/demo/products/blue-kettle")
    caller.evaluate("title => { document.title = title; }", XSS_TITLE)
    assert caller.title() == XSS_TITLE

    caller.get_by_role("button", name="Call us", exact=True).click()

    expect(console_root(agent)).to_have_attribute("data-call-state", "ringing")
    expect(agent.locator("#incoming-title")).to_have_text(XSS_TITLE)
    expect(agent.locator("#incoming-url")).to_have_text(caller.url)
    # Rendered as text: no element was parsed out of it, so nothing could run.
    assert agent.evaluate("document.images.length") == 0
    assert agent.evaluate("typeof window.__xss") == "undefined"

    agent.get_by_role("button", name="Decline").click()
    expect(console_root(agent)).to_have_attribute("data-call-state", "idle")
    expect(agent.get_by_text("Call declined")).to_be_visible()
    panel = widget_panel(caller)
    expect(panel).to_have_attribute("data-state", "ended")
    expect(panel.get_by_role("status")).to_have_text(NO_AGENT_TEXT)

    row = only_call(talk_demo.db_path)
    assert row["end_reason"] == "agent-declined"
    assert row["page_title"] == XSS_TITLE  # stored as given; escaping is the display's job
    assert row["page_url"].endswith("/demo/products/blue-kettle")
    assert agent.evaluate("typeof window.__xss") == "undefined"
    assert_no_page_errors(open_page)
