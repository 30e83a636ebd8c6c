"""Pre-flight echo against real aiortc client peers: the client hears its own audio and gets its data-channel
messages back; sessions are capped, time-limited and independent. Also the MOS reference values."""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from signaling.echo import EchoService, estimate_mos
from signaling.rtcpeer import MediaError

try:
    from tests.support.media import Ear, Tone
except ImportError:  # until the shared media helpers have moved
    from tests.integration.test_media_aiortc import Ear, Tone

HZ = 440
TIMEOUT = 10


@pytest.fixture
async def no_leftover_tasks():
    """Every task a test starts (aiortc's included) is gone shortly after the server side has ended.

    Requested after `clients`, so it is checked before the clients' peer connections are closed: the service's own
    close must take everything down (the client's tasks end when the server closes DTLS)."""
    before = asyncio.all_tasks()
    yield
    for _ in range(40):
        left = asyncio.all_tasks() - before - {asyncio.current_task()}
        if not left:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"tasks left over: {left}")


class Client:
    """A browser stand-in: sends a tone, listens to what comes back, opens the `preflight` channel."""

    def __init__(self, hz: int = HZ, label: str = "preflight") -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.ear = Ear()
        self.ear.attach(self.pc)
        self.pc.addTrack(Tone(hz))
        self.channel = self.pc.createDataChannel(label)
        self.opened = asyncio.Event()
        self.received: list[str | bytes] = []
        self.got_message = asyncio.Event()
        self.channel.on("open", self.opened.set)
        self.channel.on("message", self._on_message)
        self.session_id = ""

    def _on_message(self, message: str | bytes) -> None:
        self.received.append(message)
        self.got_message.set()

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def connect(self, service: EchoService) -> Client:
        self.session_id, answer = await service.negotiate(await self.offer())
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await service.add_candidate(self.session_id, None)
        return self

    async def next_message(self) -> str | bytes:
        while not self.received:
            self.got_message.clear()
            await asyncio.wait_for(self.got_message.wait(), TIMEOUT)
        return self.received.pop(0)

    async def ended(self) -> None:
        for _ in range(TIMEOUT * 10):
            if self.pc.connectionState in ("closed", "failed"):
                return
            await asyncio.sleep(0.1)
        pytest.fail(f"the client's connection is still {self.pc.connectionState}")

    async def close(self) -> None:
        await self.pc.close()
        await self.ear.close()


@pytest.fixture
async def clients():
    made: list[Client] = []

    def make(**kwargs) -> Client:
        made.append(Client(**kwargs))
        return made[-1]

    yield make
    for client in made:
        await client.close()


@pytest.fixture
async def service():
    echo = EchoService([], max_sessions=4, max_seconds=10)
    yield echo
    await echo.close_all()


async def test_client_hears_its_own_tone(service, clients, no_leftover_tasks):
    client = await clients(hz=HZ).connect(service)
    await asyncio.wait_for(client.ear.heard_enough.wait(), TIMEOUT)
    assert abs(client.ear.dominant_hz() - HZ) < 20
    await service.close(client.session_id)


async def test_data_channel_messages_come_back_unchanged_in_order_and_fast(service, clients, no_leftover_tasks):
    client = await clients().connect(service)
    await asyncio.wait_for(client.opened.wait(), TIMEOUT)

    sent: list[str | bytes] = [f"text {i} ü €" if i % 2 else bytes([i, 0, 255]) * (i + 1) for i in range(30)]
    sent.append("x" * 8000)
    for message in sent:
        client.channel.send(message)
    assert [await client.next_message() for _ in sent] == sent

    rtts = []
    for seq in range(10):  # the widget's pings, closer together
        client.channel.send(json.dumps({"seq": seq, "t": time.perf_counter()}))
        echoed = json.loads(await client.next_message())
        assert echoed["seq"] == seq
        rtts.append((time.perf_counter() - echoed["t"]) * 1000)
        await asyncio.sleep(0.02)
    assert statistics.median(rtts) < 100, rtts
    await service.close(client.session_id)


async def test_max_sessions_is_enforced_with_a_clear_error(clients, no_leftover_tasks):
    service = EchoService([], max_sessions=2, max_seconds=10)
    first = await clients().connect(service)
    second = await clients().connect(service)
    await asyncio.wait_for(asyncio.gather(first.opened.wait(), second.opened.wait()), TIMEOUT)
    assert service.active == 2
    with pytest.raises(MediaError, match=r"^busy: 2 pre-flight tests are running"):
        await service.negotiate(await clients().offer())
    assert service.active == 2

    await service.close(first.session_id)
    assert service.active == 1
    third = await clients().connect(service)
    assert service.active == 2
    await asyncio.wait_for(third.opened.wait(), TIMEOUT)
    await service.close_all()
    assert service.active == 0
    with pytest.raises(MediaError, match="shutting down"):
        await service.negotiate(await clients().offer())


async def test_sessions_close_themselves_after_max_seconds(clients, no_leftover_tasks):
    service = EchoService([], max_seconds=1.0)
    client = await clients().connect(service)
    await asyncio.wait_for(client.opened.wait(), TIMEOUT)
    started = time.monotonic()
    assert service.active == 1
    await client.ended()
    assert 0.3 < time.monotonic() - started < 3
    for _ in range(20):
        if service.active == 0:
            break
        await asyncio.sleep(0.05)
    assert service.active == 0
    with pytest.raises(MediaError, match="no such session"):
        await service.add_candidate(client.session_id, None)


async def test_close_ends_the_session_and_leaves_no_tasks(service, clients, no_leftover_tasks):
    client = await clients().connect(service)
    await asyncio.wait_for(client.ear.heard_enough.wait(), TIMEOUT)
    pc = service._sessions[client.session_id].pc

    await service.close(client.session_id)
    assert pc.connectionState == "closed"
    assert service.active == 0
    await service.close(client.session_id)  # idempotent
    await service.close("no-such-session")
    await asyncio.gather(service.close(client.session_id), service.close(client.session_id))
    await client.ended()


async def test_one_session_ending_or_failing_does_not_disturb_another(service, clients, no_leftover_tasks):
    steady = await clients(hz=HZ).connect(service)
    doomed = await clients(hz=880).connect(service)
    await asyncio.wait_for(asyncio.gather(steady.opened.wait(), doomed.opened.wait()), TIMEOUT)

    with pytest.raises(MediaError):
        await service.add_candidate(doomed.session_id, {"candidate": "candidate:garbage", "sdpMid": "0"})
    await doomed.close()  # the browser tab goes away
    for _ in range(50):
        if service.active == 1:
            break
        await asyncio.sleep(0.1)
    assert service.active == 1

    steady.channel.send("still there?")
    assert await steady.next_message() == "still there?"
    steady.ear.frames = 0
    steady.ear.heard_enough.clear()
    await asyncio.wait_for(steady.ear.heard_enough.wait(), TIMEOUT)
    assert abs(steady.ear.dominant_hz() - HZ) < 20
    await service.close(steady.session_id)


async def test_other_data_channels_are_closed(service, clients, no_leftover_tasks):
    client = await clients(label="something-else").connect(service)
    for _ in range(50):
        if client.channel.readyState == "closed":
            break
        await asyncio.sleep(0.1)
    assert client.channel.readyState == "closed"
    await service.close(client.session_id)


@pytest.mark.parametrize("sdp", [
    "",
    "nonsense",
    "v=0\r\nno media here\r\n",
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
    "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
])
async def test_bad_offer_is_a_media_error(service, sdp, no_leftover_tasks):
    with pytest.raises(MediaError):
        await service.negotiate(sdp)
    assert service.active == 0


async def test_offer_that_sends_no_audio_is_refused(service, no_leftover_tasks):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        with pytest.raises(MediaError, match="sends no audio"):
            await service.negotiate(pc.localDescription.sdp)
        assert service.active == 0
    finally:
        await pc.close()


# The same rows are in widget/preflight.md: the widget's JavaScript must give these numbers.
@pytest.mark.parametrize("rtt_ms, jitter_ms, loss_pct, mos", [
    (0, 0, 0, 4.404),
    (40, 5, 0, 4.389),
    (100, 10, 1, 4.306),
    (300, 0, 5, 3.893),
    (300, 30, 5, 3.630),
    (500, 40, 10, 2.377),
    (1000, 100, 40, 1.0),
    (-5, -1, -3, 4.404),
])
def test_estimate_mos_reference_values(rtt_ms, jitter_ms, loss_pct, mos):
    assert estimate_mos(rtt_ms, jitter_ms, loss_pct) == pytest.approx(mos, abs=0.0005)


def test_estimate_mos_orders_networks_sensibly():
    perfect = estimate_mos(0, 0, 0)
    assert perfect == pytest.approx(4.4, abs=0.01)
    assert estimate_mos(300, 0, 5) < perfect - 0.5
    assert estimate_mos(150, 0, 0) > estimate_mos(150, 0, 1) > estimate_mos(150, 0, 3)
    assert estimate_mos(50, 0, 0) > estimate_mos(200, 0, 0) > estimate_mos(400, 0, 0)
    assert estimate_mos(0, 0, 100) == 1.0  # R below 0 must not bend the cubic back up
    assert 1.0 <= estimate_mos(10_000, 1_000, 0) <= 4.5
