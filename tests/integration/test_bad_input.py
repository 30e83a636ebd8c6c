"""Bad input over the real WebSocket: clear error replies, the connection and other calls carry on."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.support.client import Peer, connect_agent, connect_caller, login, new_visitor


async def raw_reply(peer: Peer, frame: str) -> dict:
    await peer.ws.send_str(frame)
    while True:
        message = await peer.next_event()
        if message["type"] == "result":
            return message


async def assert_alive(peer: Peer) -> None:
    assert (await peer.ok("ping")) == {"pong": True}


@pytest.mark.parametrize("frame, code", [
    ("{oops", "invalid_json"),
    ("[]", "invalid_json"),
    ('{"id": 1}', "invalid_message"),
    ('{"id": 5, "type": "call.teleport"}', "unknown_type"),
    ('{"id": 5, "type": "call.start", "queue": 42}', "invalid_message"),
    ('{"id": 5, "type": "call.start", "queue": "support", "admin": true}', "invalid_message"),
    ('{"id": 5, "type": "call.answer", "call_id": "c_x"}', "forbidden"),
    ('{"id": 5, "type": "agent.available", "available": true}', "forbidden"),
    ('{"id": 5, "type": "hello"}', "already_hello"),
    ('{"id": 5, "type": "call.start", "queue": "no-such-queue"}', "not_found"),
    ('{"id": 5, "type": "call.hangup", "call_id": "c_unknown"}', "not_found"),
])
async def test_bad_messages_get_error_codes_and_the_connection_survives(server, base_url, http, frame, code):
    caller = await connect_caller(http, base_url)
    reply = await raw_reply(caller, frame)
    assert reply["success"] is False and reply["error"]["code"] == code, reply
    assert reply["error"]["message"]
    await assert_alive(caller)
    await caller.close()


async def test_oversized_message_is_refused_but_the_connection_stays(server, base_url, http):
    caller = await connect_caller(http, base_url)
    reply = await raw_reply(caller, json.dumps({"id": 9, "type": "ping", "pad": "x" * 70_000}))
    assert reply["error"]["code"] == "message_too_large"
    await assert_alive(caller)
    await caller.close()


async def test_frame_over_the_hard_limit_closes_with_1009(server, base_url, http):
    caller = await connect_caller(http, base_url)
    await caller.ws.send_str("x" * (1024 * 1024 + 10))
    await caller._reader
    assert caller.ws.close_code == 1009


async def test_binary_frames_are_refused(server, base_url, http):
    caller = await connect_caller(http, base_url)
    await caller.ws.send_bytes(b"\x00\x01")
    reply = await caller.next_event("result")
    assert reply["error"]["code"] == "invalid_message" and reply["id"] is None
    await assert_alive(caller)
    await caller.close()


async def test_messages_before_hello_are_refused_and_silence_is_closed(server, base_url, http):
    caller = await connect_caller(http, base_url, hello=False)
    reply = await caller.request("ping")
    assert reply["error"]["code"] == "hello_required"
    await caller._reader  # hello_timeout is 3 s in the test settings
    assert caller.ws.close_code == 4408


@pytest.mark.parametrize("path, origin, status", [
    ("/ws/v1?site=demo-shop", "http://evil.example", 403),
    ("/ws/v1?site=demo-shop", None, 403),
    ("/ws/v1?site=no-such-site", "SELF", 403),
    ("/ws/v1", "http://evil.example", 403),
    ("/ws/v1", "SELF", 401),
])
async def test_upgrade_is_refused_for_wrong_origin_site_or_login(server, base_url, http, path, origin, status):
    headers = {} if origin is None else {"Origin": base_url if origin == "SELF" else origin}
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(base_url.replace("http", "ws") + path, headers=headers)
    assert caught.value.status == status


async def test_a_logged_in_agent_from_a_foreign_origin_is_refused(server, base_url, http):
    await login(http, base_url, "agent@demo.test")
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(base_url.replace("http", "ws") + "/ws/v1", origin="http://evil.example")
    assert caught.value.status == 403


async def test_a_marketer_cannot_open_the_console_socket(server, base_url, http):
    await login(http, base_url, "marketer@demo.test")
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(base_url.replace("http", "ws") + "/ws/v1", origin=base_url)
    assert caught.value.status == 401


async def test_a_caller_cannot_touch_someone_elses_call(server, base_url, http, http2):
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as agent_http:
        await login(agent_http, base_url, "agent@demo.test")
        agent = await connect_agent(agent_http, base_url)
        owner_ids = new_visitor()
        owner = await connect_caller(http, base_url, visitor=owner_ids)
        intruder = await connect_caller(http2, base_url)
        call_id = (await owner.ok("call.start", queue="support"))["call_id"]
        await agent.next_event("call.incoming")

        for type_, fields in [("call.hangup", {}), ("rtc.offer", {"sdp": "v=0"}),
                              ("rtc.candidate", {"candidate": None})]:
            reply = await intruder.request(type_, call_id=call_id, **fields)
            assert reply["error"]["code"] == "forbidden", (type_, reply)
        # Knowing the owner's visitor id does not make another connection (another tab, or someone else) the owner.
        same_visitor = await connect_caller(http2, base_url, visitor=owner_ids)
        assert same_visitor.hello["visitor_id"] == owner_ids["visitor_id"]
        assert (await same_visitor.request("call.hangup", call_id=call_id))["error"]["code"] == "forbidden"
        await same_visitor.close()

        # The owner's call is untouched and still works.
        await agent.ok("call.answer", call_id=call_id)
        await owner.next_event("call.connected")
        await owner.ok("call.hangup", call_id=call_id)
        assert (await agent.next_event("call.ended"))["reason"] == "completed"
        for peer in (agent, owner, intruder):
            await peer.close()


async def test_visitor_ids_are_used_when_given_and_throwaway_otherwise(server, base_url, http):
    ids = new_visitor()
    first = await connect_caller(http, base_url, visitor=ids)
    again = await connect_caller(http, base_url, visitor=ids)
    anonymous = await connect_caller(http, base_url)
    assert first.hello["visitor_id"] == again.hello["visitor_id"] == ids["visitor_id"]
    assert anonymous.hello["visitor_id"].startswith("v_") and anonymous.hello["visitor_id"] != ids["visitor_id"]
    malformed = await connect_caller(http, base_url, hello=False)
    reply = await malformed.request("hello", visitor_id="v_<script>", session_id=ids["session_id"])
    assert reply["error"]["code"] == "invalid_message" and reply["error"]["message"].startswith("visitor_id")
    for peer in (first, again, anonymous, malformed):
        await peer.close()
