"""The widget's side of the journey (widget/README.md), in headless Chromium against the mock server of
widget_mock.py: page views (also of single-page apps), visitor and session ids, consent, conversions, the ids in
`hello`, the landing page after a call and the survey. The shop pages are on another origin than the API, as on a
real shop, so every request is cross-origin and must need no CORS preflight.
"""

from __future__ import annotations

import re
import time

import pytest

from widget_mock import CALL_ID, MockTalk

try:
    from playwright.sync_api import Page, expect
except ImportError:  # the browser fixture skips
    pass

pytestmark = pytest.mark.browser

VISITOR = re.compile(r"^v_[A-Za-z0-9_-]{22,40}$")
SESSION = re.compile(r"^s_[A-Za-z0-9_-]{22,40}$")
EVENT = re.compile(r"^e_[A-Za-z0-9_-]{22,40}$")
QUIET = 0.6  # how long "nothing more is sent" is watched for (the widget's SPA debounce is 0.1 s)


# ---------------------------------------------------------------- helpers


def talk_storage(page: Page) -> dict[str, str]:
    return page.evaluate("""() => Object.fromEntries(Object.keys(localStorage)
        .filter((k) => k.startsWith('talk_')).map((k) => [k, localStorage.getItem(k)]))""")


def views(mock: MockTalk) -> list[dict]:
    return [event for _, event in mock.pageviews()]


def wait_views(mock: MockTalk, count: int) -> list[dict]:
    mock.wait_for(lambda: len(views(mock)) >= count, what=f"{count} page views")
    time.sleep(QUIET)  # and no more than that
    found = views(mock)
    assert len(found) == count, [e["url"] for e in found]
    return found


def widget_loaded(page: Page) -> None:
    page.wait_for_function("() => window.talk && window.talk.v === 1")


def open_page(page: Page, mock: MockTalk, path: str, attrs: str = "", head: str = "", **goto) -> None:
    mock.pages[path.split("?")[0].split("#")[0]] = mock.page(title=f"Page {path}", attrs=attrs, head=head)
    page.goto(mock.shop + path, **goto)
    widget_loaded(page)


def no_preflights(mock: MockTalk) -> None:
    assert not [r for r in mock.requests if r.method == "OPTIONS"], "the widget caused a CORS preflight"


def dialog(page: Page):
    return page.get_by_role("dialog", name="Your feedback")


def panel(page: Page):
    return page.locator("#talk-widget section.panel")


def focused_in_widget(page: Page) -> str:
    return page.evaluate("() => { const r = document.getElementById('talk-widget').shadowRoot;"
                         " const a = r.activeElement; return a ? a.outerHTML.slice(0, 80) : ''; }")


# ---------------------------------------------------------------- page views


def test_page_views_on_load_and_single_page_app_navigation(mock: MockTalk, browsing):
    """One page view per page, sent as text/plain (no preflight) with site, ids, sent_at and the event; SPA
    navigations via pushState / replaceState (URL changed) / popstate count, fragment and state-only changes do not,
    the app's title is read after it set it, and the previous page is the referrer."""
    page = browsing.page
    open_page(page, mock, "/p/1?utm_source=news&gclid=abc#top", referer="https://www.google.com/")
    (first,) = wait_views(mock, 1)
    batch, request = mock.events()[0].body, mock.events()[0]
    assert request.content_type == "text/plain"
    assert set(batch) == {"site", "visitor_id", "session_id", "sent_at", "events"}
    assert batch["site"] == "demo-shop"
    assert VISITOR.match(batch["visitor_id"]) and SESSION.match(batch["session_id"]), batch
    assert EVENT.match(first["id"]) and first["type"] == "pageview"
    assert first["url"] == mock.shop + "/p/1?utm_source=news&gclid=abc"  # no fragment
    assert first["title"] == "Page /p/1?utm_source=news&gclid=abc#top"
    assert first["referrer"] == "https://www.google.com/"
    assert isinstance(first["ts"], int) and first["ts"] <= batch["sent_at"]
    stored = talk_storage(page)
    assert set(stored) == {"talk_vid", "talk_sid", "talk_sts"}
    assert (stored["talk_vid"], stored["talk_sid"]) == (batch["visitor_id"], batch["session_id"])

    page.evaluate("history.pushState({n: 2}, '', '/p/2'); document.title = 'Kettle';")
    page.evaluate("history.replaceState({n: 2, scrolled: 1}, '', '/p/2')")  # same URL: no page view
    page.evaluate("location.hash = 'reviews'")  # fragment only: no page view
    second = wait_views(mock, 2)[1]
    assert (second["url"], second["title"], second["referrer"]) == (mock.shop + "/p/2", "Kettle", first["url"])

    page.evaluate("history.replaceState(null, '', '/p/2?color=red')")
    third = wait_views(mock, 3)[2]
    assert (third["url"], third["referrer"]) == (mock.shop + "/p/2?color=red", second["url"])

    page.go_back()  # the #reviews entry: same page
    page.go_back()  # popstate to /p/1
    fourth = wait_views(mock, 4)[3]
    assert fourth["url"] == first["url"] and fourth["referrer"] == third["url"]

    # The page's own history errors still reach the page, as without the widget.
    name = page.evaluate("""() => { try { history.pushState({}, '', 'https://elsewhere.example/'); return 'no error'; }
                                    catch (e) { return e.name; } }""")
    assert name == "SecurityError"

    page.reload()
    widget_loaded(page)
    fifth = wait_views(mock, 5)[4]
    batches = [b for b, _ in mock.pageviews()]
    assert {(b["visitor_id"], b["session_id"]) for b in batches} == {(batch["visitor_id"], batch["session_id"])}
    assert len({e["id"] for e in views(mock)}) == 5
    assert fifth["url"] == first["url"]
    no_preflights(mock)


def test_a_navigation_right_before_leaving_is_still_sent(mock: MockTalk, browsing):
    """A pushState followed at once by leaving the page (inside the widget's debounce): recorded on pagehide."""
    page = browsing.page
    open_page(page, mock, "/a")
    wait_views(mock, 1)
    mock.pages["/c"] = mock.page(title="C")
    page.evaluate("history.pushState({}, '', '/b'); location.href = '/c';")
    page.wait_for_url("**/c")
    urls = [e["url"] for e in wait_views(mock, 3)]
    assert urls == [mock.shop + "/a", mock.shop + "/b", mock.shop + "/c"]


def test_session_ends_after_inactivity_and_the_timeout_is_configurable(mock: MockTalk, browsing):
    page = browsing.page
    open_page(page, mock, "/s")
    wait_views(mock, 1)
    first = talk_storage(page)

    def reload_after(minutes_idle: float, count: int) -> dict:
        """The batch of the page view after reloading with the last activity `minutes_idle` ago."""
        page.evaluate("m => localStorage.setItem('talk_sts', String(Date.now() - m * 60000))", minutes_idle)
        page.reload()
        widget_loaded(page)
        wait_views(mock, count)
        return mock.pageviews()[-1][0]

    assert reload_after(29, 2)["session_id"] == first["talk_sid"]
    renewed = reload_after(31, 3)
    assert renewed["visitor_id"] == first["talk_vid"]
    assert renewed["session_id"] != first["talk_sid"] and SESSION.match(renewed["session_id"])

    open_page(page, mock, "/s", attrs='data-session-timeout="1"')
    wait_views(mock, 4)
    assert reload_after(0.5, 5)["session_id"] == renewed["session_id"]
    assert reload_after(2, 6)["session_id"] != renewed["session_id"]


def test_data_track_false_sends_no_page_views_and_leaves_history_alone(mock: MockTalk, browsing):
    page = browsing.page
    open_page(page, mock, "/quiet", attrs='data-track="false"')
    page.evaluate("history.pushState({}, '', '/quiet2')")
    time.sleep(QUIET)
    assert mock.events() == []
    assert page.evaluate("String(history.pushState).includes('[native code]')")
    # Calls and conversions still carry the visitor's ids (consent is not required here).
    page.evaluate("talk('conversion', {value: 10, currency: 'EUR', order_id: 'Q-1'})")
    mock.wait_for(lambda: mock.of("/api/v1/conversions"), what="conversion")
    assert VISITOR.match(mock.of("/api/v1/conversions")[0].body["visitor_id"])


def test_blocked_storage_never_breaks_the_page(mock: MockTalk, browsing):
    """localStorage that throws (Safari private mode, blocked storage): ids live in memory for the page."""
    page = browsing.page
    page.add_init_script("""Object.defineProperty(window, 'localStorage', {
        get() { throw new DOMException('The operation is insecure.', 'SecurityError'); } });""")
    open_page(page, mock, "/blocked")
    page.evaluate("history.pushState({}, '', '/blocked2')")
    wait_views(mock, 2)
    batches = [b for b, _ in mock.pageviews()]
    assert batches[0]["visitor_id"] == batches[1]["visitor_id"] and VISITOR.match(batches[0]["visitor_id"])
    assert page.evaluate("[talk('consent', false), talk('consent', true)]") == [None, None]
    assert "internal error" not in browsing.warnings()


def test_page_views_go_by_fetch_and_wait_for_retry_after_then_resend_the_same_events(mock: MockTalk, browsing):
    """While the page stays, the widget POSTs with fetch (keepalive, text/plain), not a beacon, so it sees a 503:
    the batch is retried after Retry-After with the same event ids and a fresh sent_at."""
    page = browsing.page
    page.add_init_script("navigator.sendBeacon = function () { window.__beacons = (window.__beacons || 0) + 1; "
                         "return true; };")  # a beacon would be "sent" and lost: the retry below shows it isn't used
    mock.event_statuses.extend([503])
    open_page(page, mock, "/busy")
    mock.wait_for(lambda: len(mock.events()) == 2, timeout=6, what="the retry")
    first, second = (r.body for r in mock.events())
    assert [e["id"] for e in first["events"]] == [e["id"] for e in second["events"]]
    assert second["sent_at"] - first["sent_at"] >= 900
    assert all(r.content_type == "text/plain" for r in mock.events())
    assert page.evaluate("window.__beacons || 0") == 0
    no_preflights(mock)


# ---------------------------------------------------------------- consent


def test_consent_required_nothing_stored_or_sent_until_given(mock: MockTalk, browsing):
    page = browsing.page
    attrs = 'data-consent="required"'
    open_page(page, mock, "/c1", attrs=attrs)
    page.evaluate("history.pushState({}, '', '/c1b')")
    page.evaluate("talk('conversion', {value: 5, currency: 'EUR', order_id: 'N-1'})")
    time.sleep(QUIET)
    assert mock.requests == [] and talk_storage(page) == {}
    assert "conversion ignored: no consent" in browsing.warnings()

    # A call works without consent, without ids.
    mock.call.connect = False
    page.evaluate("talk('call')")
    mock.wait_for(lambda: mock.hellos, what="hello")
    assert mock.hellos[0] == {"id": 1, "type": "hello"}
    page.evaluate("talk('hangup')")
    expect(panel(page)).to_have_attribute("data-state", "ended")
    assert talk_storage(page) == {}

    page.evaluate("talk('consent', true)")
    (view,) = wait_views(mock, 1)
    assert view["url"] == mock.shop + "/c1b"
    stored = talk_storage(page)
    assert stored["talk_consent"] == "1" and VISITOR.match(stored["talk_vid"]) and SESSION.match(stored["talk_sid"])

    # Remembered on the next page.
    open_page(page, mock, "/c2", attrs=attrs)
    assert wait_views(mock, 2)[1]["url"] == mock.shop + "/c2"

    # Withdrawn: everything the widget stored is gone (other keys stay), and tracking stops.
    page.evaluate("localStorage.setItem('talk_extra', 'x'); localStorage.setItem('shop_cart', '3');")
    page.evaluate("talk('consent', false)")
    assert talk_storage(page) == {}
    assert page.evaluate("localStorage.getItem('shop_cart')") == "3"
    page.evaluate("history.pushState({}, '', '/c3')")
    open_page(page, mock, "/c4", attrs=attrs)
    wait_views(mock, 2)


def test_refusal_sticks_without_required_consent(mock: MockTalk, browsing):
    """Default mode tracks at once; talk('consent', false) clears the ids and keeps only talk_consent=0, so the next
    page stays untracked and calls go without ids; talk('consent', true) starts over with a new visitor."""
    page = browsing.page
    open_page(page, mock, "/d1")
    wait_views(mock, 1)
    old_visitor = talk_storage(page)["talk_vid"]
    page.evaluate("talk('consent', false)")
    assert talk_storage(page) == {"talk_consent": "0"}

    open_page(page, mock, "/d2")
    mock.call.connect = False
    page.evaluate("talk('call')")
    mock.wait_for(lambda: mock.hellos, what="hello")
    assert "visitor_id" not in mock.hellos[0] and "session_id" not in mock.hellos[0]
    page.evaluate("talk('hangup')")
    wait_views(mock, 1)

    page.evaluate("talk('consent', true)")
    view = wait_views(mock, 2)[1]
    assert view["url"] == mock.shop + "/d2"
    assert mock.pageviews()[1][0]["visitor_id"] != old_visitor


@pytest.mark.parametrize(("attrs", "queued", "expected"), [
    ("", "talk('consent', false);", 0),
    ('data-consent="required"', "talk('consent', true);", 1),
])
def test_consent_queued_before_the_widget_loads_counts_for_the_first_page_view(
        mock: MockTalk, browsing, attrs: str, queued: str, expected: int):
    page = browsing.page
    open_page(page, mock, "/q", attrs=attrs, head=f"<script>{queued}</script>")
    time.sleep(QUIET)
    assert len(views(mock)) == expected


# ---------------------------------------------------------------- conversions


def test_conversion_is_sent_with_the_visitor_and_bad_input_is_warned_about(mock: MockTalk, browsing):
    page = browsing.page
    open_page(page, mock, "/checkout")
    batch = wait_views(mock, 1) and mock.pageviews()[0][0]
    results = page.evaluate("""() => [
        talk('conversion', {value: 49.5, currency: 'eur', order_id: 'A-1001'}),
        talk('conversion', {value: '49', currency: 'EUR', order_id: 'A-2'}),
        talk('conversion', {value: 1, currency: 'EURO', order_id: 'A-3'}),
        talk('conversion', {value: 1, currency: 'EUR'}),
        talk('conversion', {value: -1, currency: 'EUR', order_id: 'A-5'}),
        talk('conversion'),
    ]""")
    assert results == [None] * 6
    mock.wait_for(lambda: mock.of("/api/v1/conversions"), what="conversion")
    time.sleep(QUIET)
    (sent,) = mock.of("/api/v1/conversions")
    assert sent.content_type == "text/plain"
    assert sent.body == {"site": "demo-shop", "visitor_id": batch["visitor_id"], "session_id": batch["session_id"],
                         "order_id": "A-1001", "value": 49.5, "currency": "EUR"}
    warnings = browsing.warnings()
    assert warnings.count("talk: conversion: ") == 5, warnings
    no_preflights(mock)


# ---------------------------------------------------------------- calls, landing page, survey


def test_call_carries_the_ids_then_the_landing_page_asks_for_the_survey(mock: MockTalk, browsing):
    """hello has the stored ids; call.ended with a landing_url sends the caller there at once; the landing page takes
    talk_call out of the address bar without a second page view and shows the survey, which works by keyboard."""
    page = browsing.page
    open_page(page, mock, "/product")
    wait_views(mock, 1)
    stored = talk_storage(page)
    mock.call.landing_url = mock.shop + "/thanks?ref=call&talk_call=" + CALL_ID + "#top"
    mock.call.survey = True
    mock.pages["/thanks"] = mock.page(title="Thanks")
    mock.surveys[CALL_ID] = {"questions": {"rating": None, "comment": "What could we do better?"}}

    page.get_by_role("button", name="Call us").click()
    expect(panel(page)).to_have_attribute("data-state", "connected")
    assert mock.hellos == [{"id": 1, "type": "hello", "visitor_id": stored["talk_vid"], "session_id": stored["talk_sid"]}]
    page.get_by_role("button", name="Hang up").click()

    page.wait_for_url(mock.shop + "/thanks?ref=call#top")
    box = dialog(page)
    expect(box).to_be_visible()
    expect(box).to_have_attribute("aria-modal", "true")
    expect(box.get_by_role("heading", name="Your feedback")).to_be_visible()
    expect(box.get_by_role("group", name="How would you rate your call?")).to_be_visible()
    expect(box.get_by_role("radio")).to_have_count(5)
    for n in range(1, 6):
        expect(box.get_by_role("radio", name=str(n), exact=True)).not_to_be_checked()
    comment = box.get_by_role("textbox", name="Comment", exact=True)
    expect(comment).to_have_accessible_description("What could we do better?")
    expect(box.get_by_role("radio", name="1", exact=True)).to_be_focused()

    # Send without a rating: told to pick one.
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(box.get_by_role("button", name="Send")).to_be_focused()
    page.keyboard.press("Enter")
    expect(box.get_by_role("status")).to_have_text("Please choose a rating from 1 to 5.")
    expect(box.get_by_role("radio", name="1", exact=True)).to_be_focused()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    expect(box.get_by_role("radio", name="4", exact=True)).to_be_checked()
    page.keyboard.press("Tab")
    expect(comment).to_be_focused()
    page.keyboard.type("Quick and friendly")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(box.get_by_role("status")).to_have_text("Thank you for your feedback!")
    assert mock.surveys[CALL_ID]["answer"] == {"rating": 4, "comment": "Quick and friendly"}
    (posted,) = mock.of(f"/api/v1/surveys/{CALL_ID}")
    assert posted.content_type == "text/plain"
    expect(box.get_by_role("button", name="Close")).to_be_focused()
    page.keyboard.press("Escape")
    expect(box).to_have_count(0)

    # One page view for the landing page (as it was opened), in the same session; none for the cleaned URL.
    landing = wait_views(mock, 2)[1]
    assert landing["url"] == mock.shop + "/thanks?ref=call&talk_call=" + CALL_ID
    assert landing["referrer"] == mock.shop + "/product"
    assert mock.pageviews()[1][0]["session_id"] == stored["talk_sid"]

    page.reload()
    widget_loaded(page)
    wait_views(mock, 3)
    assert len(mock.of(f"/api/v1/surveys/{CALL_ID}", "GET")) == 1  # not asked again
    no_preflights(mock)


def test_survey_in_place_when_there_is_no_landing_page(mock: MockTalk, browsing):
    """call.ended with survey and no landing_url: the survey opens over the ended call panel, keeps Tab inside,
    closes with the Close button and gives focus back."""
    page = browsing.page
    mock.call.survey = True
    mock.surveys[CALL_ID] = {"questions": {"rating": "Did Alex help you?", "comment": None}}
    open_page(page, mock, "/here")
    page.get_by_role("button", name="Call us").click()
    expect(panel(page)).to_have_attribute("data-state", "connected")
    mock.end_call()

    box = dialog(page)
    expect(box).to_be_visible()
    expect(panel(page)).to_have_attribute("data-state", "ended")
    expect(panel(page).get_by_role("status")).to_have_text("Call ended")
    expect(box.get_by_role("group", name="Did Alex help you?")).to_be_visible()
    expect(box.get_by_role("textbox", name="Comment", exact=True)).to_have_accessible_description(
        "Anything else you would like to tell us? (optional)")
    assert page.url == mock.shop + "/here"
    inside = "d => d.contains(d.getRootNode().activeElement)"
    for key in ["Tab"] * 8 + ["Shift+Tab"] * 8:
        page.keyboard.press(key)
        assert box.evaluate(inside), f"{key} left the dialog: {focused_in_widget(page)}"
    box.get_by_role("button", name="Close").click()
    expect(box).to_have_count(0)
    expect(panel(page).get_by_role("button", name="Close")).to_be_focused()
    assert mock.of(f"/api/v1/surveys/{CALL_ID}") == []


def test_survey_answered_elsewhere_and_unknown_calls(mock: MockTalk, browsing):
    page = browsing.page
    # Answered already: no survey.
    mock.surveys[CALL_ID] = {"answered": True}
    open_page(page, mock, f"/l1?talk_call={CALL_ID}")
    mock.wait_for(lambda: mock.of(f"/api/v1/surveys/{CALL_ID}", "GET"), what="survey GET")
    time.sleep(QUIET)
    expect(dialog(page)).to_have_count(0)
    assert page.url == mock.shop + "/l1"

    # Unknown call: no survey, a warning.
    open_page(page, mock, "/l2?talk_call=c_unknown")
    mock.wait_for(lambda: mock.of("/api/v1/surveys/c_unknown", "GET"), what="survey GET")
    time.sleep(QUIET)
    expect(dialog(page)).to_have_count(0)
    assert "no survey" in browsing.warnings()

    # Answered in another tab meanwhile: 409 is thanked for, in the page's widget language.
    mock.surveys[CALL_ID] = {"answered": False}
    open_page(page, mock, f"/l3?talk_call={CALL_ID}", attrs='data-lang="de"')
    box = page.get_by_role("dialog", name="Ihre Meinung")
    expect(box).to_be_visible()
    mock.surveys[CALL_ID]["answered"] = True
    box.get_by_role("radio", name="5", exact=True).check()
    box.get_by_role("button", name="Senden").click()
    expect(box.get_by_role("status")).to_have_text("Dieses Gespräch wurde bereits bewertet. Vielen Dank!")
    box.get_by_role("button", name="Schließen").click()
    expect(box).to_have_count(0)
