"""The widget's promises to shops and shoppers (widget/README.md), each shown in real Chromium against `talk demo`.

Host pages with their own embed code are served on the server's own origin with Playwright's `page.route()` (the
server has no such routes; the same origin keeps the WebSocket's Origin check passing), so these tests see exactly
what a shop that pastes those tags would see.
"""

from __future__ import annotations

import html
import time

import pytest

from tests.e2e import TalkDemo, skip_or_fail

try:
    from playwright.sync_api import Page, expect
except ImportError:
    skip_or_fail("Playwright for Python is not installed (pip install -e '.[test]')", module_level=True)

from tests.e2e.test_browser_call import (
    NO_AGENT_TEXT,
    assert_no_page_errors,
    console_root,
    expect_landing_page,
    log_in_agent,
    only_call,
    open_shop,
    widget_panel,
)

pytestmark = pytest.mark.browser

# The widget's own texts (I18N in widget/talk-core.js).
NO_AGENT_TEXT_DE = "Leider ist gerade niemand erreichbar. Bitte versuchen Sie es später erneut."
MIC_DENIED_TEXT = "Microphone access was denied. Please allow the microphone to call us."
UNSUPPORTED_TEXT = "Your browser does not support voice calls."
CONNECTION_LOST_TEXT = "The connection was lost. Please try again."
FAILED_TEXT = "The call could not be connected. Please try again."
DEFAULT_COLOR = "rgb(11, 87, 208)"  # #0b57d0
HOST_PAGE = "/demo/host-page"  # not a server route: page.route() fulfils it
ACTIVE_STATES = {"connecting", "queued", "ringing", "connected"}


# ---------------------------------------------------------------- helpers


def host_page_html(title: str, widget_attrs: str = "", before_widget: str = "") -> str:
    """A minimal shop page embedding the widget the documented way, with extra `data-*` attributes and an optional
    inline script before the loader."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>{html.escape(title)}</title>
{before_widget}
<script src="/widget/talk.js" data-site="demo-shop" {widget_attrs} async></script>
</head><body><h1>{html.escape(title)}</h1></body></html>"""


def open_host_page(page: Page, body: str, path: str = HOST_PAGE) -> None:
    """Serve `body` at `path` on the talk demo's own origin and open it.

    Chromium does not know which address a response fulfilled by Playwright came from, so it treats the page as
    public and its Local Network Access checks block the widget's WebSocket to 127.0.0.1
    (net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS). Granting that permission stands for what a real shop has:
    a Talk server that is not on the shopper's local network."""
    page.context.grant_permissions(["local-network-access"])
    page.route(f"**{path}", lambda route: route.fulfill(content_type="text/html; charset=utf-8", body=body))
    page.goto(path)


def record_websockets(page: Page) -> list[str]:
    """The URLs of every WebSocket the page opens from now on."""
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    return sockets


def call_button(page: Page, name: str = "Call us"):
    return page.get_by_role("button", name=name, exact=True)


def status_line(page: Page):
    return widget_panel(page).get_by_role("status")


def button_background(page: Page) -> str:
    return page.locator("#talk-widget button.call").evaluate("b => getComputedStyle(b).backgroundColor")


def expect_ended(page: Page, message: str, timeout: float = 10_000) -> None:
    expect(widget_panel(page)).to_have_attribute("data-state", "ended", timeout=timeout)
    expect(status_line(page)).to_have_text(message)


# ---------------------------------------------------------------- tests


def test_commands_queued_before_the_widget_loads_are_replayed(talk_demo: TalkDemo, caller_page: Page, open_page):
    """The queue stub: `talk('on', 'state', fn)` and `talk('call')` issued by the page before talk.js ran are kept
    and replayed in order once the widget loads, so the listener sees the whole call (connecting … ended)."""
    page = caller_page
    sockets = record_websockets(page)
    stub = """<script>
      window.__states = [];
      window.talk = window.talk || function () { (talk.q = talk.q || []).push(arguments); };
      talk('on', 'state', function (e) { window.__states.push(e); });
      talk('call');
      window.__queuedBeforeLoad = talk.q.length;
      window.__widgetRanBeforeStub = !!talk.v;
    </script>"""
    open_host_page(page, host_page_html("Queued commands", before_widget=stub))

    # Nobody is on duty: the replayed call goes through the server and ends with no-agent.
    expect_ended(page, NO_AGENT_TEXT)
    assert page.evaluate("[window.__queuedBeforeLoad, window.__widgetRanBeforeStub, talk.v]") == [2, False, 1]

    states = page.evaluate("window.__states")
    names = [s["state"] for s in states]
    assert names[0] == "connecting" and names[-1] == "ended", names
    assert set(names[1:-1]) <= ACTIVE_STATES, names
    assert states[-1] == {"state": "ended", "position": None, "reason": "no-agent", "message": NO_AGENT_TEXT}
    assert len(sockets) == 1 and "/ws/v1?site=demo-shop" in sockets[0], sockets
    assert_no_page_errors(open_page)


def test_data_attributes_configure_label_language_position_and_colour(
        talk_demo: TalkDemo, caller_page: Page, open_page):
    """`data-label`, `data-lang`, `data-position` and `data-color` shape the widget; a colour that tries to smuggle
    CSS in falls back to the default colour."""
    page = caller_page
    open_host_page(page, host_page_html(
        "Konfiguriert",
        'data-label="Ring uns an" data-lang="de" data-position="bottom-left" data-color="#ff0000"'))

    button = call_button(page, "Ring uns an")
    expect(button).to_be_enabled()
    box = page.locator("#talk-widget").bounding_box()
    assert box is not None and box["x"] < 40, f"bottom-left widget is not at the left edge: {box}"
    assert button_background(page) == "rgb(255, 0, 0)"

    button.click()
    expect_ended(page, NO_AGENT_TEXT_DE)
    expect(widget_panel(page)).to_have_attribute("aria-label", "Sprachanruf")

    # An injection attempt in data-color: rejected as a whole, the default colour is used, nothing is fetched.
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    open_host_page(page, host_page_html("Injected", 'data-color="red;background:url(x)"'), path="/demo/injected")
    expect(call_button(page)).to_be_enabled()
    assert button_background(page) == DEFAULT_COLOR
    assert page.locator("#talk-widget").evaluate("el => el.style.getPropertyValue('--talk-bg')") == "#0b57d0"
    assert not [url for url in requests if url.endswith("/x")], requests
    box = page.locator("#talk-widget").bounding_box()
    width = page.viewport_size["width"]
    assert box is not None and box["x"] + box["width"] > width - 40, f"default widget is not at the right: {box}"
    assert_no_page_errors(open_page)


def test_bad_api_calls_never_throw_into_the_page(talk_demo: TalkDemo, caller_page: Page, open_page):
    """Unknown commands, a listener that throws and a wrong argument type are warned about, never thrown: every call
    returns undefined, the page sees no uncaught exception, and the widget keeps working (listeners registered after
    the throwing one still run, and a second call from the button goes through)."""
    page = caller_page
    open_shop(page, "/demo/")

    results = page.evaluate("""() => {
        window.__states = [];
        return [
            talk('nonsense'),
            talk(),
            talk('on', 'state', () => { throw new Error('listener fault'); }),
            talk('on', 'state', (e) => window.__states.push(e.state)),
            talk('call', 42),
        ];
    }""")
    assert results == [None] * 5

    expect_ended(page, NO_AGENT_TEXT)
    call_button(page).click()
    page.wait_for_function("() => window.__states.filter((s) => s === 'ended').length === 2")
    assert page.evaluate("window.__states") == ["connecting", "ended", "connecting", "ended"]
    expect(status_line(page)).to_have_text(NO_AGENT_TEXT)

    assert_no_page_errors(open_page)
    log = "\n".join(open_page.logs["caller"])
    assert "talk: unknown command" in log and "talk: state listener failed" in log, log


def test_denied_microphone_is_reported_before_any_network_traffic(
        talk_demo: TalkDemo, unprompted_browser, open_page):
    """A real denial: without --use-fake-ui-for-media-stream and without the microphone permission, headless Chromium
    rejects getUserMedia with NotAllowedError. The widget shows its microphone-denied message and never opened a
    WebSocket, so no call was created."""
    page = open_page(unprompted_browser, "caller")
    sockets = record_websockets(page)
    open_shop(page, "/demo/")

    call_button(page).click()

    expect_ended(page, MIC_DENIED_TEXT)
    assert page.evaluate("async () => (await navigator.permissions.query({name: 'microphone'})).state") == "denied"
    assert sockets == []
    expect(call_button(page)).to_be_enabled()
    assert_no_page_errors(open_page)


def test_browser_without_webrtc_gets_the_unsupported_message(talk_demo: TalkDemo, caller_page: Page, open_page):
    """An old browser (simulated: no window.RTCPeerConnection) is told voice calls are not supported; no WebSocket
    is opened."""
    page = caller_page
    page.add_init_script("delete window.RTCPeerConnection;")
    sockets = record_websockets(page)
    open_shop(page, "/demo/")
    assert page.evaluate("typeof window.RTCPeerConnection") == "undefined"

    call_button(page).click()

    expect_ended(page, UNSUPPORTED_TEXT)
    assert sockets == []
    assert_no_page_errors(open_page)


def test_second_caller_waits_in_queue_then_rings_when_agent_is_free(
        talk_demo: TalkDemo, caller_browser, agent_page: Page, open_page):
    """While the only agent is in a call, the next shopper is told their queue position ("You are number 1 in the
    queue"); when the first call ends, the waiting call rings at that agent."""
    agent = agent_page
    first = open_page(caller_browser, "caller")
    second = open_page(caller_browser, "second caller")
    log_in_agent(agent, available=True)

    open_shop(first, "/demo/")
    call_button(first).click()
    expect(console_root(agent)).to_have_attribute("data-call-state", "ringing")
    agent.get_by_role("button", name="Answer").click()
    expect(widget_panel(first)).to_have_attribute("data-state", "connected")
    expect(console_root(agent)).to_have_attribute("data-call-state", "connected")

    open_shop(second, "/demo/products/oak-chair")
    call_button(second).click()
    expect(widget_panel(second)).to_have_attribute("data-state", "queued")
    expect(status_line(second)).to_have_text("You are number 1 in the queue")
    expect(console_root(agent)).to_have_attribute("data-call-state", "connected")  # the agent is not disturbed

    first.get_by_role("button", name="Hang up").click()
    expect_landing_page(first)
    expect(console_root(agent)).to_have_attribute("data-call-state", "ringing")
    expect(agent.locator("#incoming-url")).to_have_text(second.url)
    expect(widget_panel(second)).to_have_attribute("data-state", "ringing")
    expect(status_line(second)).to_have_text("Ringing…")
    assert_no_page_errors(open_page)


def test_server_crash_while_ringing_shows_connection_lost(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page, open_page):
    """The server process dies (SIGKILL, as in a crash or a lost network) while the call rings: the widget notices
    its WebSocket closed without a word from the server and tells the shopper the connection was lost, at once."""
    caller, agent = caller_page, agent_page
    log_in_agent(agent, available=True)
    open_shop(caller, "/demo/")
    call_button(caller).click()
    expect(widget_panel(caller)).to_have_attribute("data-state", "ringing")
    expect(console_root(agent)).to_have_attribute("data-call-state", "ringing")

    talk_demo.kill()

    expect_ended(caller, CONNECTION_LOST_TEXT, timeout=3_000)
    expect(call_button(caller)).to_be_enabled()
    expect(console_root(agent)).to_have_attribute("data-connection", "offline")
    assert_no_page_errors(open_page)


def test_server_stopping_while_ringing_ends_the_call_as_failed_and_exits_promptly(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page, open_page):
    """A graceful stop (SIGTERM) during a ringing call: the server ends the call as failed, tells both sides, stores
    it, closes the WebSockets and exits within seconds, although a console and a widget are connected."""
    caller, agent = caller_page, agent_page
    log_in_agent(agent, available=True)
    open_shop(caller, "/demo/")
    call_button(caller).click()
    expect(console_root(agent)).to_have_attribute("data-call-state", "ringing")

    started = time.monotonic()
    returncode = talk_demo.stop()
    took = time.monotonic() - started
    assert returncode == 0 and took < 5, f"talk demo exited with {returncode} after {took:.1f} s"

    expect_ended(caller, FAILED_TEXT, timeout=2_000)
    expect(agent.locator("#call-message")).to_have_text("Call ended (failed)")
    row = only_call(talk_demo.db_path)
    assert (row["state"], row["end_reason"]) == ("ended", "failed"), row
    assert_no_page_errors(open_page)
