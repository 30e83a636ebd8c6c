"""Real media through real signaling: two aiortc peers (caller and agent) negotiate over /ws/v1 and hear each other.

Each side sends its own tone (caller 440 Hz, agent 880 Hz), so the dominant frequency received proves whose audio
reached whom. aiortc does not trickle: all candidates are in the SDP after gathering; `candidate: null` is still sent
both ways to exercise the end-of-candidates relay.
"""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from tests.support.client import Peer, connect_agent, connect_caller, login
from tests.support.media import Ear, Tone

CALLER_HZ, AGENT_HZ = 440, 880
TIMEOUT = 15


def new_pc(hello: dict, ear: Ear, hz: int) -> RTCPeerConnection:
    servers = [RTCIceServer(**server) for server in hello["ice_servers"]]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
    ear.attach(pc)
    pc.addTrack(Tone(hz))
    return pc


async def end_of_candidates(sender: Peer, receiver: Peer, receiver_pc: RTCPeerConnection, call_id: str) -> None:
    """Send `candidate: null` through the server and apply it on the other side."""
    await sender.ok("rtc.candidate", call_id=call_id, candidate=None)
    relayed = await receiver.next_event("rtc.candidate", timeout=TIMEOUT)
    assert relayed == {"type": "rtc.candidate", "call_id": call_id, "candidate": None}
    await receiver_pc.addIceCandidate(None)


async def hear(caller_ear: Ear, agent_ear: Ear) -> None:
    """Both sides receive at least `Ear.frames_needed` frames (one second of audio), or fail saying how far they got."""
    try:
        await asyncio.wait_for(asyncio.gather(caller_ear.heard_enough.wait(), agent_ear.heard_enough.wait()), TIMEOUT)
    except TimeoutError:
        pytest.fail(f"audio did not flow: caller got {caller_ear.frames} frames, agent {agent_ear.frames}")


async def test_caller_and_agent_hear_each_others_tone(server, base_url, http, http2):
    await login(http2, base_url, "agent@demo.test")
    agent = await connect_agent(http2, base_url)
    caller = await connect_caller(http, base_url)
    assert caller.hello["ice_servers"] == []  # tests must never wait on a public STUN server
    caller_ear, agent_ear = Ear(), Ear()
    pcs: list[RTCPeerConnection] = []
    try:
        call_id = (await caller.ok("call.start", queue="support"))["call_id"]
        await agent.next_event("call.incoming")
        await agent.ok("call.answer", call_id=call_id)
        assert (await caller.next_event("call.connected"))["offerer"] is True
        assert (await agent.next_event("call.connected"))["offerer"] is False

        # Caller offers; setLocalDescription returns once ICE gathering is complete (candidates in the SDP).
        caller_pc = new_pc(caller.hello, caller_ear, CALLER_HZ)
        pcs.append(caller_pc)
        await caller_pc.setLocalDescription(await caller_pc.createOffer())
        await caller.ok("rtc.offer", call_id=call_id, sdp=caller_pc.localDescription.sdp)

        offer = await agent.next_event("rtc.offer", timeout=TIMEOUT)
        agent_pc = new_pc(agent.hello, agent_ear, AGENT_HZ)
        pcs.append(agent_pc)
        await agent_pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        await agent_pc.setLocalDescription(await agent_pc.createAnswer())
        await agent.ok("rtc.answer", call_id=call_id, sdp=agent_pc.localDescription.sdp)

        answer = await caller.next_event("rtc.answer", timeout=TIMEOUT)
        await caller_pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await end_of_candidates(caller, agent, agent_pc, call_id)
        await end_of_candidates(agent, caller, caller_pc, call_id)

        await hear(caller_ear, agent_ear)
        assert abs(caller_ear.dominant_hz() - AGENT_HZ) < 20, "the caller should hear the agent's 880 Hz tone"
        assert abs(agent_ear.dominant_hz() - CALLER_HZ) < 20, "the agent should hear the caller's 440 Hz tone"

        await caller.ok("call.hangup", call_id=call_id)
        assert (await caller.next_event("call.ended"))["reason"] == "completed"
        assert (await agent.next_event("call.ended"))["reason"] == "completed"
    finally:
        await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)
        await caller_ear.close()
        await agent_ear.close()
        await caller.close()
        await agent.close()
