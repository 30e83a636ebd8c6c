"""The agent console's voicemail inbox, in real Chromium against `talk demo`: nobody is on duty in the demo `support`
queue, a shopper presses Call us, is offered a voicemail and speaks ~2 s (the fake microphone's tone); the agent's
console lists it (queue, time, duration), plays the server's WAV file and marks it handled.

Two ways in: an agent who logs in afterwards finds it in the list (voicemail.list at hello), and an agent already
online but not available gets it at once (voicemail.new), without reloading the page.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import wave
from pathlib import Path

import pytest

from tests.e2e import TalkDemo, skip_or_fail

try:
    from playwright.sync_api import Page, expect
except ImportError:
    skip_or_fail("Playwright for Python is not installed (pip install -e '.[test]')", module_level=True)

from tests.e2e.test_browser_call import (
    AGENT_EMAIL,
    NO_AGENT_TEXT,
    assert_no_page_errors,
    console_root,
    log_in_agent,
    open_shop,
    widget_panel,
)
from tests.e2e.test_seller_browser import RECORD_WEBSOCKETS, wait_for_audio_out

pytestmark = pytest.mark.browser

SPEAK_SECONDS = 2.0
QUEUE_DISPLAY_NAME = "Support"  # the demo queue `support` (talk/demo.py)
AUDIO_DURATION = ("(a) => new Promise((ok) => { if (a.readyState >= 1) ok(a.duration);"
                  " a.addEventListener('loadedmetadata', () => ok(a.duration)); a.preload = 'metadata'; a.load(); })")
FETCH = ("async (src) => { const r = await fetch(src); return [r.status, r.headers.get('content-type'),"
         " (await r.arrayBuffer()).byteLength]; }")


# ---------------------------------------------------------------- helpers


def leave_voicemail(caller: Page) -> None:
    """Nobody can take the call: the widget offers a voicemail, and the shopper speaks ~2 s and sends it."""
    open_shop(caller, "/demo/")
    caller.get_by_role("button", name="Call us", exact=True).click()
    panel = widget_panel(caller)
    expect(panel).to_have_attribute("data-state", "ended")
    expect(panel.get_by_role("status")).to_have_text(NO_AGENT_TEXT)
    caller.get_by_role("button", name="Leave a voicemail").click()
    expect(panel).to_have_attribute("data-state", "recording")
    wait_for_audio_out(caller)
    time.sleep(SPEAK_SECONDS)
    caller.get_by_role("button", name="Send message").click()
    expect(panel.get_by_role("status")).to_have_text("Your message was sent. Thank you!")


def only_voicemail(demo: TalkDemo) -> dict:
    """The one voicemail row (it is stored before the caller hears it was sent), and its file's length."""
    with sqlite3.connect(demo.db_path) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT v.id, v.recipient_id, v.duration_seconds, v.file_name, v.handled_at, v.handled_by,"
            " q.name AS queue FROM voicemails v JOIN queues q ON q.id = v.queue_id").fetchall()
    assert len(rows) == 1, [dict(r) for r in rows]
    row = dict(rows[0])
    path = demo.data_dir / "voicemail" / row["file_name"]
    with wave.open(str(path)) as wav:
        row["seconds"] = wav.getnframes() / wav.getframerate()
    row["path"] = path
    return row


def agent_id(demo: TalkDemo) -> int:
    with sqlite3.connect(demo.db_path) as db:
        return db.execute("SELECT id FROM accounts WHERE email = ?", (AGENT_EMAIL,)).fetchone()[0]


def inbox_item(agent: Page, voicemail_id: str):
    return agent.locator(f"#voicemails li[data-voicemail-id='{voicemail_id}']")


def expect_listed(agent: Page, row: dict) -> None:
    """The inbox shows the one open voicemail: its queue, when, how long, a player for its file, and the count."""
    expect(agent.locator("#voicemails li")).to_have_count(1)
    item = inbox_item(agent, row["id"])
    expect(item).to_have_attribute("data-handled", "false")
    expect(item.locator(".vm-title")).to_have_text(QUEUE_DISPLAY_NAME)
    expect(item.locator(".vm-when")).not_to_be_empty()
    expect(item.locator(".vm-duration")).to_have_text(re.compile(r"^\d+ s$"))
    shown = int(item.locator(".vm-duration").inner_text().split()[0])
    assert abs(shown - row["duration_seconds"]) <= 0.5, f"shows {shown} s, stored {row['duration_seconds']} s"
    audio = item.locator("audio")
    expect(audio).to_have_attribute("src", f"/voicemail/{row['id']}.wav")
    expect(audio).to_have_attribute("preload", "none")
    expect(audio).to_have_attribute("controls", "")
    expect(item.get_by_role("button", name="Mark handled")).to_be_enabled()
    expect(console_root(agent)).to_have_attribute("data-voicemails", "1")
    expect(agent.locator("#voicemail-count")).to_have_text("1 new")
    expect(agent.locator("#voicemail-empty")).to_be_hidden()


def expect_empty_inbox(agent: Page) -> None:
    expect(agent.locator("#voicemail-empty")).to_be_visible()
    expect(agent.locator("#voicemails li")).to_have_count(0)
    expect(agent.locator("#voicemail-count")).to_be_hidden()
    expect(console_root(agent)).to_have_attribute("data-voicemails", "0")


def mark_handled(agent: Page, demo: TalkDemo, row: dict) -> None:
    item = inbox_item(agent, row["id"])
    item.get_by_role("button", name="Mark handled").click()
    expect(item).to_have_attribute("data-handled", "true")
    expect(item.get_by_role("status")).to_have_text("Handled")
    expect(item.get_by_role("button", name="Mark handled")).to_be_hidden()
    expect(console_root(agent)).to_have_attribute("data-voicemails", "0")
    expect(agent.locator("#voicemail-count")).to_be_hidden()
    stored = only_voicemail(demo)
    assert stored["handled_at"] is not None and stored["handled_by"] == agent_id(demo), stored


# ---------------------------------------------------------------- tests


def test_voicemail_left_while_nobody_was_on_duty_is_in_the_agents_inbox_and_plays(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page, open_page):
    caller, agent = caller_page, agent_page
    leave_voicemail(caller)
    row = only_voicemail(talk_demo)
    assert row["queue"] == "support" and row["recipient_id"] is None, row  # for the queue's agents, nobody alone
    assert SPEAK_SECONDS - 0.5 <= row["seconds"] <= SPEAK_SECONDS + 1.5, f"recorded {row['seconds']:.2f} s"
    assert abs(row["duration_seconds"] - row["seconds"]) < 0.1, row

    log_in_agent(agent, available=False)
    expect_listed(agent, row)

    # The player's source is the server's file, served to this agent, and the browser reads its true length.
    audio = inbox_item(agent, row["id"]).locator("audio")
    status, kind, size = agent.evaluate(FETCH, audio.get_attribute("src"))
    assert (status, kind, size) == (200, "audio/wav", Path(row["path"]).stat().st_size)
    duration = audio.evaluate(AUDIO_DURATION)
    assert abs(duration - row["seconds"]) < 0.1, f"<audio> reads {duration} s, the file holds {row['seconds']:.2f} s"

    mark_handled(agent, talk_demo, row)
    agent.reload()
    expect(console_root(agent)).to_have_attribute("data-connection", "online")
    expect_empty_inbox(agent)  # handled voicemails are no longer listed
    assert_no_page_errors(open_page)


def test_an_online_agent_who_is_not_available_gets_the_voicemail_live(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page, open_page):
    caller, agent = caller_page, agent_page
    agent.add_init_script(RECORD_WEBSOCKETS)
    log_in_agent(agent, available=False)  # online, so the console is told; not available, so nobody takes the call
    expect_empty_inbox(agent)
    agent.evaluate("window.__sameDocument = true")

    leave_voicemail(caller)
    row = only_voicemail(talk_demo)
    expect_listed(agent, row)
    expect(agent.locator("#status-line")).to_have_text(f"New voicemail in {QUEUE_DISPLAY_NAME}")
    assert agent.evaluate("window.__sameDocument") is True, "the console was reloaded"
    news = [m for m in map(json.loads, agent.evaluate("window.__wsIn")) if m.get("type") == "voicemail.new"]
    assert [m["voicemail"]["id"] for m in news] == [row["id"]], news

    mark_handled(agent, talk_demo, row)
    assert_no_page_errors(open_page)
