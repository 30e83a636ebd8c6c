"""Real media through real signaling: two aiortc peers (caller and agent) negotiate over /ws/v1 and hear each other.

Each side sends its own tone (caller 440 Hz, agent 880 Hz), so the dominant frequency received proves whose audio
reached whom. aiortc does not trickle: all candidates are in the SDP after gathering; `candidate: null` is still sent
both ways to exercise the end-of-candidates relay.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import time

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack

from tests.support.client import Peer, connect_agent, connect_caller, login

RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
CALLER_HZ, AGENT_HZ = 440, 880
FRAMES_NEEDED = 50  # one second of received audio on each side
TIMEOUT = 15


class Tone(AudioStreamTrack):
    """A sine tone as 20 ms s16 mono 48 kHz frames, paced in real time like a microphone."""

    def __init__(self, hz: int) -> None:
        super().__init__()
        # One second holds a whole number of periods, so slicing it by pts loops seamlessly.
        t = np.arange(RATE) / RATE
        self._second = (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16)
        self._pts = -FRAME_SAMPLES
        self._t0 = 0.0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self._pts += FRAME_SAMPLES
        if self._pts == 0:
            self._t0 = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._t0 + self._pts / RATE - time.monotonic()))
        start = self._pts % RATE
        samples = self._second[start:start + FRAME_SAMPLES].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


class Ear:
    """Consumes every remote track until it ends; counts frames and keeps the last 200 ms of the first channel."""

    def __init__(self) -> None:
        self.frames = 0
        self.recent: collections.deque[np.ndarray] = collections.deque(maxlen=10)
        self.heard_enough = asyncio.Event()
        self.tasks: list[asyncio.Task] = []
        self.rate = RATE

    def attach(self, pc: RTCPeerConnection) -> None:
        pc.on("track", lambda track: self.tasks.append(asyncio.create_task(self._consume(track))))

    async def _consume(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                channels = len(frame.layout.channels)
                self.recent.append(frame.to_ndarray().reshape(-1, channels)[:, 0].astype(np.float32))
                self.rate = frame.sample_rate
                self.frames += 1
                if self.frames >= FRAMES_NEEDED:
                    self.heard_enough.set()
        except MediaStreamError:
            pass

    def dominant_hz(self) -> float:
        samples = np.concatenate(list(self.recent))
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
        return float(np.argmax(spectrum)) * self.rate / len(samples)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


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
    """Both sides receive at least FRAMES_NEEDED frames (one second of audio), or fail saying how far they got."""
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
