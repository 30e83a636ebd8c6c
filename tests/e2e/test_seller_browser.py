"""A buyer calls a seller from a Demo Shop listing through a masked endpoint; the seller answers at /seller. Two real
Chromiums against `talk demo`, audio through the server's media bridge.

What only this test shows: the listing page's `Call seller` button, the widget and the seller console speak to the
real server; both pages' `getStats()` show inbound audio growing, each side hears the other's tone (different fake
microphones); and every signaling message each browser received, recorded at the WebSocket itself, holds nothing of
the other party: no visitor id, page, account name or e-mail, and none of the other side's ICE credentials, DTLS
fingerprint or candidate ports. Then the voicemail flow: seller offline → the buyer records ~3 s → a playable file of
about that length exists, and the seller's console lists it.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import wave

import pytest

from tests.e2e import AGENT_TONE_HZ, CALLER_TONE_HZ, TalkDemo, skip_or_fail
from tests.e2e.test_browser_call import dominant_frequency, wait_for_audio, widget_panel
from tests.e2e.test_journey_browser import survey

try:
    from playwright.sync_api import Page, expect
except ImportError:
    skip_or_fail("Playwright for Python is not installed (pip install -e '.[test]')", module_level=True)

pytestmark = pytest.mark.browser

SELLER_EMAIL = "seller@demo.test"
WIDGET_STATS = "() => talk('stats')"
SELLER_STATS = """async () => {
    const pc = window.talkSeller && window.talkSeller.pc;
    if (!pc) return null;
    const out = {inboundPackets: 0, outboundPackets: 0};
    (await pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'audio') out.inboundPackets += r.packetsReceived || 0;
        if (r.type === 'outbound-rtp' && r.kind === 'audio') out.outboundPackets += r.packetsSent || 0;
    });
    return out;
}"""

# Every frame each page's WebSockets send and receive, kept in the page (installed before any page script runs).
RECORD_WEBSOCKETS = """(() => {
    const Native = window.WebSocket;
    window.__wsIn = []; window.__wsOut = [];
    window.WebSocket = function (url, protocols) {
        const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
        ws.addEventListener('message', (e) => window.__wsIn.push(String(e.data)));
        const send = ws.send.bind(ws);
        ws.send = (data) => { window.__wsOut.push(String(data)); return send(data); };
        return ws;
    };
    window.WebSocket.prototype = Native.prototype;
    Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();"""


def seller_root(page: Page):
    return page.locator("#seller")


def log_in_seller(page: Page, available: bool) -> None:
    page.goto("/seller")
    expect(page).to_have_url(re.compile(r"/login\?next=/seller$"))
    page.get_by_label("Email").fill(SELLER_EMAIL)
    page.get_by_label("Password").fill("demo")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/seller$"))
    expect(seller_root(page)).to_have_attribute("data-connection", "online")
    if available:
        page.get_by_label("Available").check()
        expect(seller_root(page)).to_have_attribute("data-available", "true")


def open_listing(page: Page) -> str:
    """From the shop's front page to the first listing; returns the listing's SKU."""
    page.add_init_script(RECORD_WEBSOCKETS)
    page.goto("/demo/")
    page.get_by_role("link", name=re.compile("City bike")).first.click()
    expect(page).to_have_url(re.compile(r"/demo/listings/[\w-]+$"))
    button = page.get_by_role("button", name="Call seller")
    expect(button).to_be_visible()
    return button.get_attribute("data-talk-listing")


def frames(page: Page, direction: str) -> list[dict]:
    return [json.loads(raw) for raw in page.evaluate(f"window.__wsIn && window.{direction}")]


def sdp_secrets(sdp: str) -> set[str]:
    """What identifies a peer's network end in its SDP: ICE credentials, the DTLS fingerprint, candidate ports."""
    found = set(re.findall(r"a=ice-(?:ufrag|pwd):(\S+)", sdp)) | set(re.findall(r"a=fingerprint:\S+ (\S+)", sdp))
    for line in re.findall(r"a=candidate:(.+)", sdp):
        found.add(f" {line.split()[5]} typ")  # " <port> typ": the port where it stands in a candidate line
    return found


def local_sdp(page: Page) -> str:
    offers = [m for m in frames(page, "__wsOut") if m.get("type") == "rtc.offer"]
    assert len(offers) == 1, f"expected one rtc.offer, sent {len(offers)}"
    return offers[0]["sdp"]


def own_secrets(page: Page) -> set[str]:
    """The page's ICE credentials and fingerprint (its offer) and the ports of the candidates it trickled."""
    sent = [m["candidate"]["candidate"] for m in frames(page, "__wsOut")
            if m.get("type") == "rtc.candidate" and m.get("candidate")]
    ports = {f" {line.split()[5]} typ" for line in sent}
    assert ports, "the page trickled no candidates"
    return sdp_secrets(local_sdp(page)) | ports


def seller_account(demo: TalkDemo) -> dict:
    with sqlite3.connect(demo.db_path) as db:
        name, email = db.execute("SELECT name, email FROM accounts WHERE email = ?", (SELLER_EMAIL,)).fetchone()
    return {"name": name, "email": email}


def assert_grows(page: Page, stats_js: str, who: str) -> None:
    before = page.evaluate(stats_js)
    time.sleep(1.0)
    after = page.evaluate(stats_js)
    grown = after["inboundPackets"] - before["inboundPackets"]
    assert grown >= 10, f"{who}: inbound audio grew by {grown} packets in 1 s: {before} → {after}"
    assert after["outboundPackets"] > before["outboundPackets"], f"{who} stopped sending: {after}"


def test_buyer_calls_seller_through_the_bridge_and_neither_learns_about_the_other(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page):
    buyer, seller = caller_page, agent_page  # the "agent" browser's fake microphone plays the second tone
    seller.add_init_script(RECORD_WEBSOCKETS)
    log_in_seller(seller, available=True)
    listing = open_listing(buyer)

    buyer.get_by_role("button", name="Call seller").click()
    expect(seller_root(seller)).to_have_attribute("data-call-state", "ringing")
    expect(seller.locator("#incoming-caller")).to_have_text(re.compile(r"^Buyer \d{4}$"))
    expect(seller.locator("#incoming-listing")).to_contain_text(listing)
    seller.get_by_role("button", name="Answer").click()
    expect(seller_root(seller)).to_have_attribute("data-call-state", "connected")
    panel = widget_panel(buyer)
    expect(panel).to_have_attribute("data-state", "connected")
    expect(panel.get_by_role("status")).to_have_text("Connected to Nordic Bikes")

    wait_for_audio(buyer, WIDGET_STATS, "buyer")
    wait_for_audio(seller, SELLER_STATS, "seller")
    assert_grows(buyer, WIDGET_STATS, "buyer")
    assert_grows(seller, SELLER_STATS, "seller")
    heard_by_buyer = dominant_frequency(buyer, "#talk-widget audio")
    heard_by_seller = dominant_frequency(seller, "#remote-audio")
    assert abs(heard_by_buyer - AGENT_TONE_HZ) < 25, f"buyer hears {heard_by_buyer:.0f} Hz"
    assert abs(heard_by_seller - CALLER_TONE_HZ) < 25, f"seller hears {heard_by_seller:.0f} Hz"

    # What each browser received, against what identifies the other one.
    buyer_sdp, seller_sdp = local_sdp(buyer), local_sdp(seller)
    visitor_id = buyer.evaluate("localStorage.getItem('talk_vid')")
    assert visitor_id and visitor_id.startswith("v_")
    account = seller_account(talk_demo)
    to_seller = json.dumps(frames(seller, "__wsIn"))
    to_buyer = json.dumps(frames(buyer, "__wsIn"))
    about_buyer = {visitor_id, buyer.url, buyer.title(), "/demo/listings", *own_secrets(buyer)}
    about_seller = {account["name"], account["email"], *own_secrets(seller)}
    assert len(sdp_secrets(buyer_sdp)) == len(sdp_secrets(seller_sdp)) == 3  # ufrag, pwd, fingerprint: has teeth
    assert [s for s in about_buyer if s in to_seller] == []
    assert [s for s in about_seller if s in to_buyer] == []
    assert "journey" not in to_seller and "page" not in {k for m in frames(seller, "__wsIn") for k in m}
    # Each side did get an answer: the server's, not the other browser's.
    for page, own in ((buyer, buyer_sdp), (seller, seller_sdp)):
        answers = [m["sdp"] for m in frames(page, "__wsIn") if m.get("type") == "rtc.answer"]
        assert len(answers) == 1 and not sdp_secrets(answers[0]) & sdp_secrets(own)

    buyer.get_by_role("button", name="Hang up").click()
    expect(seller_root(seller)).to_have_attribute("data-call-state", re.compile(r"^(ended|idle)$"))
    # The buyer rates the seller: the seller's queue has no landing page, so the survey opens in place.
    box = survey(buyer)
    box.get_by_role("radio", name="4", exact=True).check()
    box.get_by_role("button", name="Send").click()
    expect(box.get_by_text("Thank you for your feedback!")).to_be_visible()
    with sqlite3.connect(talk_demo.db_path) as db:
        deadline = time.monotonic() + 5
        while (row := db.execute("SELECT channel, listing, end_reason, agent_id, session_id FROM calls").fetchone()) \
                is None or row[2] is None:
            assert time.monotonic() < deadline, f"call not stored as ended: {row}"
            time.sleep(0.1)
        seller_id = db.execute("SELECT id FROM accounts WHERE email = ?", (SELLER_EMAIL,)).fetchone()[0]
        rating = db.execute("SELECT rating, agent_id FROM survey_answers").fetchall()
        views = db.execute("SELECT path FROM events WHERE session_id = ? ORDER BY ts", (row[4],)).fetchall()
    assert row[:4] == ("seller", listing, "completed", seller_id)
    assert rating == [(4, seller_id)]
    # The marketplace keeps the buyer's journey with the call (the seller never saw it).
    assert [v[0] for v in views][-2:] == ["/demo/", f"/demo/listings/{listing}"]


def test_seller_offline_buyer_leaves_a_voicemail_the_seller_can_play(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page):
    buyer, seller = caller_page, agent_page
    listing = open_listing(buyer)
    buyer.get_by_role("button", name="Call seller").click()
    panel = widget_panel(buyer)
    expect(panel).to_have_attribute("data-state", "ended")
    buyer.get_by_role("button", name="Leave a voicemail").click()
    expect(panel).to_have_attribute("data-state", "recording")
    wait_for_audio_out(buyer)
    time.sleep(3.0)
    buyer.get_by_role("button", name="Send message").click()
    expect(panel.get_by_role("status")).to_have_text("Your message was sent. Thank you!")

    recordings = list((talk_demo.data_dir / "voicemail").glob("*.wav"))
    assert len(recordings) == 1, recordings
    with wave.open(str(recordings[0])) as wav:
        seconds = wav.getnframes() / wav.getframerate()
    assert 2.0 <= seconds <= 4.5, f"recorded {seconds:.2f} s"

    log_in_seller(seller, available=False)
    item = seller.locator("#voicemails li").first
    expect(item).to_contain_text(re.compile(r"Buyer \d{4}"))
    expect(item).to_contain_text(listing)
    src = item.locator("audio").get_attribute("src")
    status, kind, size = seller.evaluate(
        "async (src) => { const r = await fetch(src); return [r.status, r.headers.get('content-type'),"
        " (await r.arrayBuffer()).byteLength]; }", src)
    assert (status, kind) == (200, "audio/wav") and size == recordings[0].stat().st_size
    duration = item.locator("audio").evaluate(
        "(a) => new Promise((ok) => { if (a.readyState >= 1) ok(a.duration);"
        " a.addEventListener('loadedmetadata', () => ok(a.duration)); a.preload = 'metadata'; a.load(); })")
    assert abs(duration - seconds) < 0.1, f"<audio> reads {duration} s, the file holds {seconds:.2f} s"


def wait_for_audio_out(page: Page, timeout: float = 10.0) -> None:
    """The voicemail's peer connection is sending audio (its own stats; the widget's talk('stats') is for calls)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = page.evaluate(WIDGET_STATS)
        if stats and stats["outboundPackets"] > 0:
            return
        time.sleep(0.1)
    raise AssertionError("the voicemail never sent audio")


def test_a_call_link_page_starts_the_journey_and_calls_the_seller(talk_demo: TalkDemo, caller_page: Page):
    """/c/<token>: the standalone call page (for apps, e-mails, printed QR codes) on Talk's own origin records its
    page view and places the masked call; the call's journey starts at that page."""
    buyer = caller_page
    buyer.goto("/demo/listings/bike-001")
    token = buyer.get_by_role("button", name="Call seller").get_attribute("data-talk-seller")
    buyer.goto(f"/c/{token}")
    call_button = buyer.get_by_role("button", name="Call seller")
    expect(call_button).to_be_visible()
    expect(buyer.get_by_role("button", name="Call us", exact=True)).to_have_count(0)  # data-button="false"
    session_id = buyer.evaluate("localStorage.getItem('talk_sid')")
    call_button.click()
    expect(widget_panel(buyer)).to_have_attribute("data-state", "ended")  # nobody on duty: a voicemail is offered
    expect(buyer.get_by_role("button", name="Leave a voicemail")).to_be_visible()

    deadline = time.monotonic() + 5
    with sqlite3.connect(talk_demo.db_path) as db:
        while True:
            views = db.execute("SELECT path FROM events WHERE session_id = ? ORDER BY ts", (session_id,)).fetchall()
            call = db.execute("SELECT channel, session_id, page_url FROM calls").fetchone()
            if views and views[-1][0] == f"/c/{token}" and call:
                break
            assert time.monotonic() < deadline, f"page views {views}, call {call}"
            time.sleep(0.1)
    assert call[0] == "seller" and call[1] == session_id and call[2].endswith(f"/c/{token}")
