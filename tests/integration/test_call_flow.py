"""A whole call over the real WebSocket, without media: queue, ring, answer, relay, hang up, and the stored record."""

from __future__ import annotations

import asyncio
import sqlite3

from signaling import CALLSTORE_KEY
from talk.settings import Settings
from tests.support.client import connect_agent, connect_caller, login


def stored_call(settings: Settings, call_id: str) -> dict:
    with sqlite3.connect(settings.data_dir / "talk.db") as db:
        db.row_factory = sqlite3.Row
        row = db.execute(
            "SELECT calls.*, accounts.email AS agent_email FROM calls LEFT JOIN accounts ON accounts.id = calls.agent_id"
            " WHERE calls.id = ?", (call_id,)).fetchone()
    return dict(row) if row else {}


async def test_call_is_answered_relayed_and_stored(server, base_url, http, http2, settings):
    await login(http2, base_url, "agent@demo.test")
    agent = await connect_agent(http2, base_url)
    caller = await connect_caller(http, base_url)

    page = {"url": "http://127.0.0.1/demo/products/blue-kettle", "title": "Blue <Kettle>", "referrer": ""}
    started = await caller.ok("call.start", queue="support", page=page)
    call_id = started["call_id"]
    assert started["state"] == "ringing"
    incoming = await agent.next_event("call.incoming")
    assert incoming["call_id"] == call_id and incoming["page"]["title"] == "Blue <Kettle>"
    await caller.next_event("call.ringing")

    await agent.ok("call.answer", call_id=call_id)
    assert (await caller.next_event("call.connected"))["offerer"] is True
    assert (await agent.next_event("call.connected"))["offerer"] is False

    await caller.ok("rtc.offer", call_id=call_id, sdp="v=0 offer")
    assert (await agent.next_event("rtc.offer"))["sdp"] == "v=0 offer"
    await agent.ok("rtc.answer", call_id=call_id, sdp="v=0 answer")
    assert (await caller.next_event("rtc.answer"))["sdp"] == "v=0 answer"
    candidate = {"candidate": "candidate:1 1 udp 1 192.0.2.2 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
    await agent.ok("rtc.candidate", call_id=call_id, candidate=candidate)
    assert (await caller.next_event("rtc.candidate"))["candidate"] == candidate

    loop = asyncio.get_running_loop()
    hung_up = loop.time()
    await caller.ok("call.hangup", call_id=call_id)
    assert (await agent.next_event("call.ended", timeout=1))["reason"] == "completed"
    assert (await caller.next_event("call.ended", timeout=1))["reason"] == "completed"
    assert loop.time() - hung_up < 1

    await server.app[CALLSTORE_KEY].flush()
    row = stored_call(settings, call_id)
    assert row["agent_email"] == "agent@demo.test"
    assert row["end_reason"] == "completed" and row["state"] == "ended"
    assert row["page_url"] == page["url"] and row["page_title"] == "Blue <Kettle>"
    assert row["created_at"] <= row["ringing_at"] <= row["answered_at"] <= row["ended_at"]
    await caller.close()
    await agent.close()


async def test_no_agent_is_told_at_once_and_stored(server, base_url, http, settings):
    caller = await connect_caller(http, base_url)
    started = await caller.ok("call.start", queue="support")
    assert started == {"call_id": started["call_id"], "state": "ended", "reason": "no-agent"}
    assert (await caller.next_event("call.ended"))["reason"] == "no-agent"
    await server.app[CALLSTORE_KEY].flush()
    assert stored_call(settings, started["call_id"])["end_reason"] == "no-agent"
    await caller.close()

