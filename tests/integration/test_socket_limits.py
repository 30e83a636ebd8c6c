"""The socket edge protects the server: dead peers are dropped by heartbeat, and a client that never reads is
disconnected once its bounded send queue is full, instead of growing the server's memory."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.support.client import connect_agent, connect_caller, login


@pytest.fixture
def settings(settings, request):
    heartbeat = 0.5 if "pings" in request.node.name else 60  # the slow-consumer test must not be saved by heartbeat
    return settings.model_copy(update={"ws_heartbeat": heartbeat, "ws_send_queue": 8})


async def test_a_peer_that_stops_answering_pings_is_dropped(server, base_url):
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(base_url.replace("http", "ws") + "/ws/v1?site=demo-shop", origin=base_url,
                                   autoping=False)  # a frozen browser: it never answers the server's pings
        await ws.send_str(json.dumps({"id": 1, "type": "hello"}))
        kinds = []
        async with asyncio.timeout(5):
            async for frame in ws:
                kinds.append(frame.type)
        assert aiohttp.WSMsgType.PING in kinds and ws.closed


async def test_a_client_that_never_reads_is_disconnected(server, base_url, http, http2):
    """An agent whose browser stops reading while the caller keeps sending 20 kB offers: the kernel's buffers fill,
    then the agent's bounded outbox, and the server cuts that connection off at once (its call ends as
    agent-disconnected); the caller's connection is unaffected."""
    await login(http2, base_url, "agent@demo.test")
    agent = await connect_agent(http2, base_url)
    caller = await connect_caller(http, base_url)
    call_id = (await caller.ok("call.start", queue="support"))["call_id"]
    await agent.next_event("call.incoming")
    await agent.ok("call.answer", call_id=call_id)
    await caller.next_event("call.connected")
    agent._reader.cancel()  # the agent's browser freezes
    sdp = "v=0 " + "a" * 19_000
    async with asyncio.timeout(20):
        while True:
            reply = await caller.request("rtc.offer", call_id=call_id, sdp=sdp)
            if not reply["success"]:  # the call ended when the agent was disconnected
                break
    assert reply["error"]["code"] == "not_found"
    assert (await caller.next_event("call.ended"))["reason"] == "agent-disconnected"
    assert (await caller.ok("ping")) == {"pong": True}
    async with asyncio.timeout(5):
        while (await agent.ws.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                                       aiohttp.WSMsgType.ERROR):
            pass  # drain what the kernel had buffered, up to the cut
