"""Parsing and validating signaling frames: every bad frame becomes a ProtocolError with the right code."""

import json

import pytest

from signaling import protocol
from signaling.protocol import CallStart, ProtocolError, RtcCandidate, parse_envelope, validate


@pytest.mark.parametrize("raw, code, has_id", [
    ("{not json", protocol.INVALID_JSON, False),
    ("[1, 2]", protocol.INVALID_JSON, False),
    ('"text"', protocol.INVALID_JSON, False),
    ('{"type": "ping"}', protocol.INVALID_MESSAGE, False),
    ('{"id": "1", "type": "ping"}', protocol.INVALID_MESSAGE, False),
    ('{"id": true, "type": "ping"}', protocol.INVALID_MESSAGE, False),
    ('{"id": 0, "type": "ping"}', protocol.INVALID_MESSAGE, False),
    ('{"id": 3, "type": 5}', protocol.INVALID_MESSAGE, True),
    ("[" * 100000 + "]" * 100000, protocol.INVALID_JSON, False),
])
def test_bad_envelopes(raw, code, has_id):
    with pytest.raises(ProtocolError) as caught:
        parse_envelope(raw, max_bytes=1_000_000)
    assert caught.value.code == code
    assert (caught.value.msg_id == 3) is has_id


def test_size_limit_is_checked_before_parsing():
    with pytest.raises(ProtocolError) as caught:
        parse_envelope(json.dumps({"id": 1, "type": "ping", "pad": "x" * 100}), max_bytes=50)
    assert caught.value.code == protocol.MESSAGE_TOO_LARGE


def test_valid_message_is_typed():
    message = validate(CallStart, {"id": 4, "type": "call.start", "queue": "support", "page": {"url": "https://a/b"}})
    assert message.queue == "support" and message.page.url == "https://a/b" and message.page.title == ""


@pytest.mark.parametrize("data, field", [
    ({"id": 4, "type": "call.start"}, "message: Value error, give either queue or seller"),
    ({"id": 4, "type": "call.start", "queue": "support", "seller": "se_" + "a" * 32}, "message: Value error, give"),
    ({"id": 4, "type": "call.start", "seller": "se_short"}, "seller"),
    ({"id": 4, "type": "call.start", "seller": "se_" + "a" * 32, "listing": "x" * 121}, "listing"),
    ({"id": 4, "type": "call.start", "queue": ""}, "queue"),
    ({"id": 4, "type": "call.start", "queue": "support", "extra": 1}, "extra"),
    ({"id": 4, "type": "call.start", "queue": "support", "page": {"url": "x" * 3000}}, "page.url"),
    ({"id": 4, "type": "call.start", "queue": 7}, "queue"),
])
def test_invalid_fields_are_named(data, field):
    with pytest.raises(ProtocolError) as caught:
        validate(CallStart, data)
    assert caught.value.code == protocol.INVALID_MESSAGE
    assert caught.value.message.startswith(field)


def test_end_of_candidates_is_valid():
    assert validate(RtcCandidate, {"id": 1, "type": "rtc.candidate", "call_id": "c_1", "candidate": None}).candidate is None


def test_server_refuses_to_send_undocumented_events():
    with pytest.raises(ValueError):
        protocol.event("call.teleported")
    assert protocol.event("call.ringing", call_id="c")["type"] == "call.ringing"
