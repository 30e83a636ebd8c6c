"""The journey from the issue, in two real Chromiums against `talk demo`: a shopper browses the Demo Shop, calls, the
agent sees where they have been, picks a disposition with its own landing page and hangs up; the shopper lands there,
answers the survey, browses on and buys; the call API then tells the whole story. And the same flow on a shop that
requires consent, where none of it is tracked until the shopper agrees.

The widget sends page views and conversions without waiting, so every step that the next one depends on is waited for
in the database (bounded polls), never with a fixed sleep.
"""

from __future__ import annotations

import html
import json
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e import TalkDemo, http_get, skip_or_fail

try:
    from playwright.sync_api import Page, expect
except ImportError:
    skip_or_fail("Playwright for Python is not installed (pip install -e '.[test]')", module_level=True)

from tests.e2e.test_browser_call import (
    AGENT_EMAIL,
    assert_no_page_errors,
    console_root,
    log_in_agent,
    only_call,
    open_shop,
    widget_panel,
)
from tests.e2e.test_console_journey import NO_JOURNEY_TEXT, journey, wait_for_disposition

pytestmark = pytest.mark.browser

PAGES_BEFORE = ["/demo/", "/demo/about", "/demo/products/blue-kettle"]  # the call is made from the last one
OFFER_PAGE = "/demo/offer"  # the landing page of the demo queue's "Offer sent" disposition (talk/demo.py)
THANKS_PAGE = "/demo/thanks"  # the demo queue's own landing page
# After the survey the shopper goes on through the shop's menu and buys on the second page.
PAGES_AFTER_SURVEY = [("Oak Chair", "/demo/products/oak-chair"), ("Linen Throw", "/demo/products/linen-throw")]
LINEN_THROW_PRICE = 79.0  # web/demo.py
COMMENT = 'Very helpful, thank you! <script>window.__xss = 1</script> & "quotes"'
SURVEY_THANKS = "Thank you for your feedback!"


# ---------------------------------------------------------------- database helpers


def query(db_path: Path, sql: str, *params) -> list[dict]:
    with sqlite3.connect(db_path, timeout=5) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(sql, params)]


def wait_until(what: str, probe: Callable[[], object], timeout: float = 5.0):
    """Poll `probe` until it returns something truthy (bounded); returns that."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def page_views(db_path: Path) -> list[dict]:
    """Every stored page view, in the order the shopper saw them."""
    return query(db_path, "SELECT visitor_id, session_id, url, path, title FROM events ORDER BY ts, id")


def wait_for_page_views(db_path: Path, count: int, timeout: float = 5.0) -> list[dict]:
    """Until the server has stored exactly `count` page views (bounded); more than that fails at once."""
    def probe():
        views = page_views(db_path)
        assert len(views) <= count, f"expected {count} page views, the server stored {len(views)}: {views}"
        return views if len(views) == count else None

    return wait_until(f"{count} page views stored", probe, timeout)


def event_count(db_path: Path) -> int:
    return query(db_path, "SELECT count(*) AS n FROM events")[0]["n"]


# ---------------------------------------------------------------- the call API


def call_api(demo: TalkDemo, call_id: str) -> dict:
    """GET /api/v1/calls/{id} with a fresh API token, made by the CLI on the running demo's database."""
    token = demo.cli("token", "create", "e2e").strip().splitlines()[-1]
    status, body = http_get(f"{demo.base_url}/api/v1/calls/{call_id}", headers={"Authorization": f"Bearer {token}"})
    assert status == 200, (status, body)
    return json.loads(body)


# ---------------------------------------------------------------- page helpers


def talk_storage(page: Page) -> dict[str, str]:
    """What the widget keeps in the site's localStorage (its keys all start with talk_)."""
    return page.evaluate("""() => Object.fromEntries(
        Object.keys(localStorage).filter((k) => k.startsWith('talk_')).map((k) => [k, localStorage.getItem(k)]))""")


def document_navigations(page: Page) -> list[str]:
    """The URLs of every top-level document the page loads from now on, as requested (before any replaceState)."""
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url) if r.is_navigation_request() and r.frame == page.main_frame else None)
    return urls


def requests_to(page: Page, *paths: str) -> list[str]:
    """The URLs of every request the page makes from now on to one of these paths (a listener: it holds nothing up)."""
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url) if urlsplit(r.url).path in paths else None)
    return urls


def survey(page: Page):
    return page.get_by_role("dialog", name="Your feedback")


# ---------------------------------------------------------------- tests


def test_journey_before_and_after_the_call_with_survey_and_purchase_in_the_call_api(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page, open_page):
    """Three pages, a call from the third that rings with those pages in the console, a disposition that sends the
    caller to its own landing page, the survey there, two more pages and a purchase: `GET /api/v1/calls/{id}` returns
    exactly that."""
    caller, agent = caller_page, agent_page
    base = talk_demo.base_url
    navigations = document_navigations(caller)
    log_in_agent(agent, available=True)

    # 1. The shopper views three pages and calls from the third, once the server has all three.
    titles = []
    for path in PAGES_BEFORE:
        open_shop(caller, path)
        titles.append(caller.title())
    assert titles == ["Home — Demo Shop", "About — Demo Shop", "Blue Kettle — Demo Shop"], titles
    before = wait_for_page_views(talk_demo.db_path, 3)
    assert [v["path"] for v in before] == PAGES_BEFORE
    caller.get_by_role("button", name="Call us", exact=True).click()

    # 2. While it rings, the agent sees those three pages, oldest first.
    root = console_root(agent)
    expect(root).to_have_attribute("data-call-state", "ringing")
    call_id = root.get_attribute("data-call-id")
    assert call_id and call_id.startswith("c_"), call_id
    expect(journey(agent)).to_have_attribute("data-pages", "3")
    expect(agent.locator("li.journey-page .journey-page-title")).to_have_text(titles)

    # 3. The agent answers, sends an offer (a disposition with its own landing page) and hangs up.
    agent.get_by_role("button", name="Answer").click()
    expect(root).to_have_attribute("data-call-state", "connected")
    expect(widget_panel(caller)).to_have_attribute("data-state", "connected")
    agent.get_by_label("Disposition").select_option("Offer sent")
    expect(agent.locator("#disposition-status")).to_have_attribute("data-state", "saved")
    agent.get_by_role("button", name="Hang up").click()
    expect(root).to_have_attribute("data-call-state", "ended")

    # 4. The shopper's tab goes to the offer with talk_call; the widget there takes it out of the address bar.
    landing_url = f"{base}{OFFER_PAGE}?talk_call={call_id}"
    caller.wait_for_url(f"{base}{OFFER_PAGE}")
    assert navigations[-1] == landing_url, navigations
    row = only_call(talk_demo.db_path)
    assert (row["id"], row["end_reason"], row["landing_url"]) == (call_id, "completed", landing_url), row

    # 5. The survey opens there; rating 5 and a comment that looks like markup are stored exactly as typed.
    box = survey(caller)
    expect(box).to_be_visible()
    box.get_by_role("radio", name="5", exact=True).check()
    box.get_by_role("textbox", name="Comment", exact=True).fill(COMMENT)
    box.get_by_role("button", name="Send").click()
    expect(box.get_by_role("status")).to_have_text(SURVEY_THANKS)
    answers = query(talk_demo.db_path, "SELECT call_id, rating, comment FROM survey_answers")
    assert answers == [{"call_id": call_id, "rating": 5, "comment": COMMENT}], answers
    assert caller.evaluate("typeof window.__xss") == "undefined"
    box.get_by_role("button", name="Close").click()  # the modal keeps its thank-you until the shopper closes it
    expect(box).to_have_count(0)

    # 6. Two more pages through the shop's menu, and a purchase on the second.
    for name, path in PAGES_AFTER_SURVEY:
        caller.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()
        caller.wait_for_url(f"{base}{path}")
    caller.get_by_role("button", name="Buy now").click()
    status = caller.locator("#order-status")
    expect(status).to_have_text(re.compile(r"^Thank you for your order D-[a-z0-9]+\.$"))
    order_id = re.search(r"order (D-[a-z0-9]+)\.", status.text_content()).group(1)
    conversions = wait_until("the purchase stored", lambda: query(
        talk_demo.db_path, "SELECT order_id, value, currency FROM conversions"))
    assert conversions == [{"order_id": order_id, "value": LINEN_THROW_PRICE, "currency": "EUR"}], conversions

    # Every page view belongs to the one visitor the widget keeps in localStorage, and to the call's session: the
    # landing page is in the caller's session too (the end of a call is activity).
    views = wait_for_page_views(talk_demo.db_path, 6)
    stored = talk_storage(caller)
    assert {(v["visitor_id"], v["session_id"]) for v in views} == {(stored["talk_vid"], stored["talk_sid"])}, views
    wait_for_disposition(talk_demo.db_path, "Offer sent")

    # 7. The call API tells the whole story.
    call = call_api(talk_demo, call_id)
    assert (call["id"], call["state"], call["end_reason"]) == (call_id, "ended", "completed"), call
    assert call["agent"]["email"] == AGENT_EMAIL
    assert (call["disposition"], call["landing_url"]) == ("Offer sent", landing_url)
    assert call["visitor_id"] == stored["talk_vid"] and call["session_id"] == stored["talk_sid"]
    assert call["page"] == {"url": f"{base}{PAGES_BEFORE[-1]}", "title": titles[-1]}
    # Exactly the three pages before the call, in order.
    assert [(p["url"], p["path"], p["title"]) for p in call["pages_before"]] == [
        (f"{base}{path}", path, title) for path, title in zip(PAGES_BEFORE, titles)], call["pages_before"]
    assert all(p["time_on_page"] is not None for p in call["pages_before"]), call["pages_before"]  # the last: until the call
    # After the call: the two pages browsed after the survey, exactly as the issue counts them. The landing page
    # Talk itself sent the caller to (its view carries talk_call=<this call>) is the call's outcome, reported as
    # landing_url, not a page the visitor chose (docs/api.md).
    assert [(p["url"], p["path"]) for p in call["pages_after"]] == [
        (f"{base}{path}", path) for _, path in PAGES_AFTER_SURVEY], call["pages_after"]
    assert [p["title"] for p in call["pages_after"]] == ["Oak Chair — Demo Shop", "Linen Throw — Demo Shop"]
    assert call["survey"]["rating"] == 5 and call["survey"]["comment"] == COMMENT, call["survey"]
    assert [{k: c[k] for k in ("order_id", "value", "currency")} for c in call["conversions"]] == [
        {"order_id": order_id, "value": LINEN_THROW_PRICE, "currency": "EUR"}], call["conversions"]
    assert call["source"]["kind"] == "direct", call["source"]
    assert_no_page_errors(open_page)


# A shop that asks for consent first: its pages embed the widget with data-consent="required". Playwright serves them
# on the demo's own origin (see test_widget.open_host_page), including the demo queue's landing page, since a shop
# puts the same embed code on every page.
CONSENT_PAGES = {
    "/demo/private/": "Home — Private Shop",
    "/demo/private/about": "About — Private Shop",
    THANKS_PAGE: "Thanks for calling — Private Shop",
}
SPA_PAGE = ("/demo/private/products/blue-kettle", "Blue Kettle — Private Shop")  # reached by history.pushState


def consent_shop_page(title: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>{html.escape(title)}</title>
<script>window.talk=window.talk||function(){{(talk.q=talk.q||[]).push(arguments)}};</script>
<script src="/widget/talk.js" data-site="demo-shop" data-queue="support" data-consent="required" async></script>
</head><body><h1>{html.escape(title)}</h1></body></html>"""


def serve_consent_shop(page: Page) -> None:
    # Pages fulfilled by Playwright look public to Chromium, whose Local Network Access checks would then block the
    # widget's requests to 127.0.0.1; a real shop's Talk server is not on the shopper's local network.
    page.context.grant_permissions(["local-network-access"])
    # A regular expression, not a Python predicate: Playwright matches it in the browser's driver, so the widget's own
    # requests (page-view beacons) never wait for this Python thread, which is asleep while it polls the database.
    # With a predicate every request of the page is held until the sync API next runs the route handlers.
    pages = "|".join(re.escape(path) for path in CONSENT_PAGES)
    page.route(re.compile(rf"^https?://[^/?#]+({pages})([?#].*)?$"), lambda route: route.fulfill(
        content_type="text/html; charset=utf-8", body=consent_shop_page(CONSENT_PAGES[urlsplit(route.request.url).path])))


def test_without_consent_the_same_flow_stores_no_page_views(
        talk_demo: TalkDemo, caller_page: Page, agent_page: Page, open_page):
    """The same flow where the widget has data-consent="required" and the shopper never consents: the call works and
    rings without a journey, but no page view is sent or stored and nothing is kept in localStorage, until
    talk('consent', true) makes the current page the first one stored."""
    caller, agent = caller_page, agent_page
    db = talk_demo.db_path
    baseline = event_count(db)  # a fresh demo: nothing yet
    log_in_agent(agent, available=True)
    serve_consent_shop(caller)
    tracking_requests = requests_to(caller, "/api/v1/events", "/api/v1/conversions")

    # Three pages, the last one a single-page-app navigation; the shopper never consents.
    for path in ("/demo/private/", "/demo/private/about"):
        open_shop(caller, path)
        assert caller.title() == CONSENT_PAGES[path]
    caller.evaluate("([path, title]) => { document.title = title; history.pushState({}, '', path); }", SPA_PAGE)
    assert caller.url.endswith(SPA_PAGE[0])
    caller.get_by_role("button", name="Call us", exact=True).click()

    # The console rings without a journey.
    root = console_root(agent)
    expect(root).to_have_attribute("data-call-state", "ringing")
    expect(journey(agent)).to_have_attribute("data-state", "loaded")
    expect(agent.locator("#journey-note")).to_have_text(NO_JOURNEY_TEXT)
    expect(journey(agent)).to_have_attribute("data-pages", "0")
    expect(agent.locator("li.journey-page")).to_have_count(0)
    expect(agent.locator("#incoming-title")).to_have_text(SPA_PAGE[1])  # the call itself still says where from

    # Answered, and the caller hangs up: the queue's landing page and its survey still work without consent.
    agent.get_by_role("button", name="Answer").click()
    expect(widget_panel(caller)).to_have_attribute("data-state", "connected")
    caller.get_by_role("button", name="Hang up").click()
    caller.wait_for_url(f"{talk_demo.base_url}{THANKS_PAGE}")
    expect(survey(caller)).to_be_visible()

    row = only_call(db)
    assert (row["end_reason"], row["has_journey"], row["session_id"]) == ("completed", 0, None), row
    assert event_count(db) == baseline, page_views(db)
    assert tracking_requests == [], "nothing may even be sent without consent"
    assert talk_storage(caller) == {}

    # Not vacuous: once the shopper agrees, this very page is stored, and only it.
    caller.evaluate("() => talk('consent', true)")
    views = wait_for_page_views(db, baseline + 1)
    stored = talk_storage(caller)
    assert stored["talk_consent"] == "1"
    assert (views[-1]["path"], views[-1]["title"], views[-1]["visitor_id"]) == (
        THANKS_PAGE, CONSENT_PAGES[THANKS_PAGE], stored["talk_vid"]), views
    # The call made without consent stays without a journey, also for what the shopper does from now on.
    call = call_api(talk_demo, row["id"])
    assert (call["visitor_id"], call["pages_before"], call["pages_after"]) == (None, [], []), call
    assert event_count(db) == baseline + 1, page_views(db)  # and nothing held back turned up meanwhile
    assert_no_page_errors(open_page)
