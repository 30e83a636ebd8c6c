"""Webhook signatures, URL and event checks, event ids (no server, no database)."""

from __future__ import annotations

import pytest

from talk.webhooks import EVENT_TYPES, WebhookError, check_events, check_url, event_id, sign, verify

BODY = '{"id":"evt_1","type":"call.ended"}'


def test_sign_matches_a_known_vector():
    # printf '%s' '1700000000.{"id":"evt_1","type":"call.ended"}' | openssl dgst -sha256 -hmac whsec_test
    expected = "sha256=a6c5a6fcfd4d0d407ff2acfb10098822777004749a25a293c030973d9d296ced"
    assert sign("whsec_test", 1700000000, BODY) == expected
    assert sign("whsec_test", "1700000000", BODY.encode()) == expected


def test_verify_accepts_the_signed_delivery_and_rejects_any_tampering():
    now = 1700000000
    signature = sign("whsec_test", now, BODY)
    assert verify("whsec_test", str(now), BODY, signature, now=now + 10)
    assert not verify("whsec_test", str(now), BODY.replace("call.ended", "call.ende"), signature, now=now)
    assert not verify("whsec_test", str(now + 1), BODY, signature, now=now)  # the timestamp is signed too
    assert not verify("whsec_other", str(now), BODY, signature, now=now)
    assert not verify("whsec_test", str(now), BODY, signature.upper(), now=now)
    assert not verify("whsec_test", str(now), BODY, "", now=now)
    assert not verify("whsec_test", "not a number", BODY, signature, now=now)
    assert not verify("whsec_test", "\u00b2", BODY, signature, now=now)  # a digit to str.isdigit, not to int()
    assert not verify("whsec_test", str(now), BODY, signature + "\u00e9", now=now)  # not ASCII: no TypeError
    assert not verify("whsec_test", str(now), BODY, signature, now=now + 301)  # a replay, later


@pytest.mark.parametrize("url", ["https://shop.example.com/hooks/talk", "http://127.0.0.1:8001/h?x=1",
                                 "https://[::1]:8443/h", "  https://shop.example.com/h  "])
def test_check_url_accepts_http_and_https(url):
    assert check_url(url) == url.strip()


@pytest.mark.parametrize("url, message", [
    ("ftp://shop.example.com/h", "http"), ("javascript:alert(1)", "http"), ("https:///path", "host"),
    ("https://user:pw@shop.example.com/h", "password"), ("https://shop.example.com/h#x", "fragment"),
    ("https://shop.example.com/a b", "spaces"), ("https://shop.example.com/\x00", "control"),
    ("https://shop.example.com:99999/h", "not a URL"), ("", "1 to 2048"),
    ("https://shop.example.com/" + "a" * 2030, "1 to 2048"),
])
def test_check_url_refuses_the_rest(url, message):
    with pytest.raises(WebhookError, match=message):
        check_url(url)


def test_check_events():
    assert check_events(None) == list(EVENT_TYPES) == check_events([""])
    assert check_events(["conversion.attributed", " call.ended"]) == ["call.ended", "conversion.attributed"]
    with pytest.raises(WebhookError, match="unknown call.started"):
        check_events(["call.started"])


def test_event_ids_are_stable_per_site_type_and_subject():
    first = event_id(1, "call.ended", "c_abc")
    assert first == event_id(1, "call.ended", "c_abc") and first.startswith("evt_") and len(first) == 36
    assert len({first, event_id(2, "call.ended", "c_abc"), event_id(1, "survey.submitted", "c_abc"),
                event_id(1, "call.ended", "c_abd")}) == 4


def test_the_default_retry_schedule_is_the_documented_one():
    from talk.webhook_dispatcher import DispatchOptions

    assert DispatchOptions().schedule == (10, 60, 300, 1800, 7200, 21600)  # docs/api.md "Retries and the delivery log"
