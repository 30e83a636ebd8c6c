"""The agent console's promises, in real Chromium against `talk demo`: it rings, answers, mutes, times and ends
calls, notices a missed ring and a caller who went away, and the call record agrees with what both screens showed.

The agent's fake microphone plays a 880 Hz tone (conftest.py), so what the caller's widget plays back shows whether
the agent's audio is live or muted.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e import AGENT_TONE_HZ, TalkDemo, skip_or_fail

try:
    from playwright.sync_api import Page, expect
except ImportError:
    skip_or_fail("Playwright for Python is not installed (pip install -e '.[test]')", module_level=True)

from tests.e2e.test_browser_call import (
    AGENT_EMAIL,
    NO_AGENT_TEXT,
    WIDGET_STATS,
    assert_no_page_errors,
    console_root,
    expect_landing_page,
    log_in_agent,
    only_call,
    open_shop,
    wait_for_audio,
    widget_panel,
)

pytestmark = pytest.mark.browser

WIDGET_AUDIO = "#talk-widget audio"
# Levels at the agent's tone frequency in what the caller's widget plays (WebAudio analyser, dBFS). Measured here:
# the tone about -40 dB, the silence a disabled track sends about -150 dB.
AUDIBLE_DB = -60
SILENT_DB = -100


# ---------------------------------------------------------------- helpers


def ring_the_agent(caller: Page, agent: Page, path: str = "/demo/") -> None:
    """The agent goes on duty, the shopper presses Call us, and both screens show the ringing call."""
    log_in_agent(agent, available=True)
    open_shop(caller, path)
    caller.get_by_role("button", name="Call us", exact=True).click()
    expect(console_root(agent)).to_have_attribute("data-call-state", "ringing")
    expect(widget_panel(caller)).to_have_attribute("data-state", "ringing")


def connect_call(caller: Page, agent: Page) -> None:
    """Ring the agent, who answers: both screens show the connected call."""
    ring_the_agent(caller, agent)
    agent.get_by_role("button", name="Answer").click()
    expect(console_root(agent)).to_have_attribute("data-call-state", "connected")
    expect(widget_panel(caller)).to_have_attribute("data-state", "connected")


def seconds_shown(locator, pattern: str) -> int:
    """The number the element shows, read with `pattern` (one group per unit, e.g. mm:ss)."""
    text = locator.inner_text().strip()
    match = re.fullmatch(pattern, text)
    assert match, f"{text!r} does not look like {pattern}"
    values = [int(g) for g in match.groups()]
    return values[0] * 60 + values[1] if len(values) == 2 else values[0]


def wait_until_changes(read, start: int, timeout: float, what: str) -> int:
    """Poll `read()` until it differs from `start` (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if value != start:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} stayed at {start} for {timeout} s")
        time.sleep(0.1)


def tone_level(page: Page, audio_selector: str, hz: float) -> float:
    """The loudest level (dBFS) near `hz` in what the page's <audio> element plays, over about 0.3 s after a fresh
    analyser has filled its window."""
    return page.locator(audio_selector).evaluate(
        """async (audio, hz) => {
            const ctx = new AudioContext();
            try {
                const analyser = ctx.createAnalyser();
                analyser.fftSize = 4096;
                analyser.smoothingTimeConstant = 0;
                ctx.createMediaStreamSource(audio.srcObject).connect(analyser);
                const bins = new Float32Array(analyser.frequencyBinCount);
                const bin = Math.round(hz * analyser.fftSize / ctx.sampleRate);
                const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
                await sleep(150);  // the analyser's window (85 ms at 48 kHz) fills with the stream's audio
                let loudest = -200;
                for (let i = 0; i < 6; i++) {
                    analyser.getFloatFrequencyData(bins);
                    for (let b = bin - 2; b <= bin + 2; b++) loudest = Math.max(loudest, bins[b]);
                    await sleep(50);
                }
                return Math.max(loudest, -200);
            } finally {
                ctx.close();
            }
        }""", hz)


def wait_for_tone(page: Page, audible: bool, timeout: float = 5.0) -> float:
    """Poll what the caller hears at the agent's tone until it is audible (or silent), bounded."""
    deadline = time.monotonic() + timeout
    levels = []
    while True:
        level = tone_level(page, WIDGET_AUDIO, AGENT_TONE_HZ)
        levels.append(round(level, 1))
        if (level > AUDIBLE_DB) if audible else (level < SILENT_DB):
            return level
        if time.monotonic() > deadline:
            want = "audible" if audible else "silent"
            raise AssertionError(
                f"the agent's {AGENT_TONE_HZ} Hz tone did not become {want} within {timeout} s: {levels} dB")


# ---------------------------------------------------------------- tests


def test_incoming_call_rings_shows_page_and_countdown_until_answered(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page, open_page):
    """An incoming call rings (data-ringing="true"), shows the caller's page title and URL and a ring countdown that
    counts down; answering stops the ring."""
    caller, agent = caller_page, agent_page
    ring_the_agent(caller, agent, "/demo/products/linen-throw")

    root = console_root(agent)
    expect(root).to_have_attribute("data-ringing", "true")
    expect(agent.locator("#panel-incoming")).to_be_visible()
    expect(agent.locator("#incoming-title")).to_have_text(caller.title())
    expect(agent.locator("#incoming-url")).to_have_text(caller.url)
    assert caller.url.endswith("/demo/products/linen-throw")

    countdown = agent.locator("#ring-countdown")
    expect(countdown).to_be_visible()
    read_countdown = lambda: seconds_shown(countdown, r"(\d+) s")  # noqa: E731
    first = read_countdown()
    assert 15 <= first <= 20, f"default ring timeout is 20 s; the countdown shows {first} s"
    later = wait_until_changes(read_countdown, first, timeout=2.5, what="the ring countdown")
    assert later == first - 1, f"the countdown went from {first} s to {later} s"

    agent.get_by_role("button", name="Answer").click()
    expect(root).to_have_attribute("data-call-state", "connected")
    expect(root).not_to_have_attribute("data-ringing", "true")
    expect(agent.locator("#panel-incoming")).to_be_hidden()
    assert_no_page_errors(open_page)


def test_mute_silences_the_agent_and_call_timer_runs(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page, open_page):
    """In a call, the timer advances second by second; Mute becomes "Unmute" (aria-pressed="true") and the caller
    then hears silence instead of the agent's tone while packets keep flowing (muted, not cut off); Unmute brings
    the tone back."""
    caller, agent = caller_page, agent_page
    connect_call(caller, agent)

    timer = agent.locator("#call-timer")
    read_timer = lambda: seconds_shown(timer, r"(\d\d):(\d\d)")  # noqa: E731
    start = read_timer()
    assert start <= 1, f"a new call's timer shows {start} s"
    after = wait_until_changes(read_timer, start, timeout=2.0, what="the call timer")
    assert after == start + 1, f"the call timer jumped from {start} s to {after} s"

    wait_for_audio(caller, WIDGET_STATS, "caller")
    wait_for_tone(caller, audible=True)

    mute = agent.get_by_role("button", name="Mute", exact=True)
    expect(mute).to_have_attribute("aria-pressed", "false")
    mute.click()
    unmute = agent.get_by_role("button", name="Unmute", exact=True)
    expect(unmute).to_have_attribute("aria-pressed", "true")
    silent = wait_for_tone(caller, audible=False)
    before = caller.evaluate(WIDGET_STATS)["inboundPackets"]
    time.sleep(0.5)  # the sampling interval
    grown = caller.evaluate(WIDGET_STATS)["inboundPackets"] - before
    assert grown >= 5, f"muting must not stop the stream: only {grown} packets in 0.5 s"

    unmute.click()
    expect(mute).to_have_attribute("aria-pressed", "false")
    audible = wait_for_tone(caller, audible=True)
    print(f"caller hears the agent's tone at {silent:.0f} dB muted, {audible:.0f} dB unmuted")
    expect(console_root(agent)).to_have_attribute("data-call-state", "connected")
    assert_no_page_errors(open_page)


def test_agent_hangs_up_call_ends_completed_on_both_sides(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page, open_page):
    """Hang up in the console ends the call for both: the widget says "Call ended", the console shows it ended as
    completed, and the stored call says completed, answered by this agent."""
    caller, agent = caller_page, agent_page
    connect_call(caller, agent)

    agent.get_by_role("button", name="Hang up").click()

    expect(agent.locator("#call-message")).to_have_text("Call ended (completed)", timeout=2000)
    expect(console_root(agent)).to_have_attribute("data-call-state", "ended")
    expect_landing_page(caller)

    row = only_call(talk_demo.db_path)
    assert (row["state"], row["end_reason"], row["agent_email"]) == ("ended", "completed", AGENT_EMAIL), row
    assert row["answered_at"] is not None, row
    assert_no_page_errors(open_page)


@pytest.mark.talk_env(TALK_RING_TIMEOUT="2")
def test_missed_ring_sets_agent_unavailable_and_caller_hears_no_agent(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page, open_page):
    """With a 2 s ring timeout and nobody answering, the ring stops, the console says the call was missed and takes
    the agent off duty (Available unticked), and the caller, with no one else on duty, gets the no-agent message."""
    caller, agent = caller_page, agent_page
    ring_the_agent(caller, agent)
    root = console_root(agent)
    expect(root).to_have_attribute("data-ringing", "true")
    assert seconds_shown(agent.locator("#ring-countdown"), r"(\d+) s") <= 2  # the server's setting reached the console

    expect(agent.locator("#missed-note")).to_be_visible(timeout=5000)
    expect(agent.locator("#missed-note")).to_have_text("You missed a call and were set unavailable")
    expect(agent.get_by_label("Available")).not_to_be_checked()
    expect(root).to_have_attribute("data-available", "false")
    expect(root).to_have_attribute("data-ringing", "false")
    expect(agent.locator("#panel-incoming")).to_be_hidden()

    expect(widget_panel(caller)).to_have_attribute("data-state", "ended")
    expect(widget_panel(caller).get_by_role("status")).to_have_text(NO_AGENT_TEXT)

    row = only_call(talk_demo.db_path)
    assert row["end_reason"] == "no-agent" and row["answered_at"] is None, row
    assert row["ringing_at"] is not None, row
    assert_no_page_errors(open_page)


def test_caller_closing_the_tab_ends_the_call_as_caller_disconnected(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page, open_page):
    """The shopper closes the tab mid-call (audio flowing): within about 2 s the console shows the call ended with
    reason caller-disconnected, and so does the stored call."""
    caller, agent = caller_page, agent_page
    connect_call(caller, agent)
    wait_for_audio(caller, WIDGET_STATS, "caller")

    closed_at = time.monotonic()
    caller.close()

    expect(agent.locator("#call-message")).to_have_text("Call ended (caller-disconnected)", timeout=2500)
    print(f"the console showed the end {time.monotonic() - closed_at:.2f} s after the tab closed")
    expect(console_root(agent)).to_have_attribute("data-call-state", "ended")
    expect(agent.get_by_role("button", name="Hang up")).to_be_hidden()

    row = only_call(talk_demo.db_path)
    assert (row["end_reason"], row["agent_email"]) == ("caller-disconnected", AGENT_EMAIL), row
    assert_no_page_errors(open_page)
