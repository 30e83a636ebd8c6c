"""`talk('preflight')` in a real Chromium against `talk demo`: an echo call to the server's aiortc endpoint measures
this network (loopback here: fast and lossless) and reports RTT, jitter, loss and the MOS they predict."""

from __future__ import annotations

import pytest

from tests.e2e import TalkDemo, skip_or_fail

try:
    from playwright.sync_api import Page, expect
except ImportError:
    skip_or_fail("Playwright for Python is not installed (pip install -e '.[test]')", module_level=True)

pytestmark = pytest.mark.browser


def test_preflight_reports_a_good_network_on_loopback(talk_demo: TalkDemo, caller_page: Page):
    page = caller_page
    page.goto("/demo/")
    expect(page.get_by_role("button", name="Call us", exact=True)).to_be_enabled()
    result = page.evaluate("talk('preflight')")
    print("preflight:", result)
    assert result is not None, "talk('preflight') could not run"
    assert result["pings_sent"] == 10 and result["pings_received"] == 10
    assert 0 < result["rtt_ms"] < 100
    assert result["packets"] >= 100  # ≥ 2 s of echoed 20 ms packets: the echoed audio was measured
    assert 0 <= result["jitter_ms"] < 50 and result["loss_pct"] < 5
    assert 4.0 <= result["mos"] <= 4.5
    # The echo session is gone on the server once the check is over: a second check runs at once.
    again = page.evaluate("talk('preflight')")
    assert again is not None and again["pings_received"] == 10
    assert page.get_by_role("button", name="Call us", exact=True).is_enabled()  # no call was started
