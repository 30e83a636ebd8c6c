"""The masked-call media bridge with real aiortc peers on both ends (no mocks).

The two parties run in their own event loop on a thread (`ClientLoop`), like browsers elsewhere: the test's loop
holds only the bridge, so its task list shows exactly what the bridge leaves behind. Each party sends its own tone
(caller 440 Hz, callee 880 Hz), so the dominant frequency received proves whose audio reached whom.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.rtp import RtpPacket, is_rtcp

from signaling.bridge import Leg, MediaBridge
from signaling.rtcpeer import MediaError
from tests.support.media import Ear, Tone

CALLER_HZ, CALLEE_HZ = 440, 880
TIMEOUT = 15
T = TypeVar("T")


class ClientLoop:
    """The parties' own event loop, on a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="clients", daemon=True)
        self.thread.start()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Party:
    """A browser stand-in: its own peer connection sending a tone, an ear on what it receives, and a record of
    the RTP payloads its sender emitted and its receiver got (instrumentation on this connection's own objects)."""

    def __init__(self, hz: int, codecs: tuple[str, ...] | None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.ear = Ear()
        self.ear.attach(self.pc)
        self.pc.addTrack(Tone(hz))
        self.transceiver = self.pc.getTransceivers()[0]
        if codecs:
            capabilities = RTCRtpReceiver.getCapabilities("audio").codecs
            self.transceiver.setCodecPreferences([c for c in capabilities if c.name in codecs])
        self.sent: list[tuple[int, bytes]] = []  # (RTP timestamp, payload)
        self.received: list[tuple[int, bytes]] = []
        self._record()

    @classmethod
    async def create(cls, hz: int, codecs: tuple[str, ...] | None = None) -> Party:
        return cls(hz, codecs)  # aiortc objects must be made inside their loop

    def _record(self) -> None:
        transport, receiver = self.transceiver.sender.transport, self.transceiver.receiver
        send_rtp, handle_rtp = transport._send_rtp, receiver._handle_rtp_packet

        async def recording_send_rtp(data: bytes) -> None:
            if not is_rtcp(data):
                packet = RtpPacket.parse(data)
                self.sent.append((packet.timestamp, packet.payload))
            await send_rtp(data)

        async def recording_handle_rtp(packet: RtpPacket, arrival_time_ms: int) -> None:
            self.received.append((packet.timestamp, packet.payload))
            await handle_rtp(packet, arrival_time_ms=arrival_time_ms)

        transport._send_rtp = recording_send_rtp
        receiver._handle_rtp_packet = recording_handle_rtp

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def heard(self, frames: int) -> bool:
        target = self.ear.frames + frames
        while self.ear.frames < target:
            await asyncio.sleep(0.02)
        return True

    async def close(self) -> None:
        await self.pc.close()
        await self.ear.close()


@pytest.fixture
def clients() -> Iterator[ClientLoop]:
    loop = ClientLoop()
    yield loop
    loop.stop()


@pytest.fixture
async def bridge() -> Any:
    bridge = MediaBridge([])
    yield bridge
    await bridge.close_all()


@pytest.fixture
async def parties(clients: ClientLoop) -> Any:
    made: list[Party] = []
    yield made
    await clients.run(_close_all(made))


async def _close_all(parties: list[Party]) -> None:
    await asyncio.gather(*(p.close() for p in parties), return_exceptions=True)


async def connect(bridge: MediaBridge, clients: ClientLoop, made: list[Party], call_id: str,
                  callee_codecs: tuple[str, ...] | None = None) -> tuple[Party, Party, dict[Leg, tuple[str, str]]]:
    """Both parties negotiate with the bridge (caller first); returns them and each leg's (offer, answer)."""
    sdp: dict[Leg, tuple[str, str]] = {}
    parties = []
    for leg, hz, codecs in ((Leg.CALLER, CALLER_HZ, None), (Leg.CALLEE, CALLEE_HZ, callee_codecs)):
        party = await clients.run(Party.create(hz, codecs))
        made.append(party)
        offer = await clients.run(party.offer())
        answer = await bridge.negotiate(call_id, leg, offer)
        await clients.run(party.accept(answer))
        sdp[leg] = (offer, answer)
        parties.append(party)
    return parties[0], parties[1], sdp


async def both_hear(caller: Party, callee: Party, frames: int) -> None:
    await asyncio.wait_for(asyncio.gather(caller.heard(frames), callee.heard(frames)), TIMEOUT)


async def hear_each_other(clients: ClientLoop, caller: Party, callee: Party) -> None:
    """Each party hears one second (50 frames) of the other's tone."""
    try:
        await clients.run(both_hear(caller, callee, 50))
    except TimeoutError:
        pytest.fail(f"audio did not flow: caller got {caller.ear.frames} frames, callee {callee.ear.frames}")
    assert abs(caller.ear.dominant_hz() - CALLEE_HZ) < 20, "the caller should hear the callee's 880 Hz tone"
    assert abs(callee.ear.dominant_hz() - CALLER_HZ) < 20, "the callee should hear the caller's 440 Hz tone"


async def remote_inbound_reports(party: Party) -> list[Any]:
    """The party's sender stats built from the receiver reports it got (RTCP RR comes every 0.5-1.5 s)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            stats = await party.transceiver.sender.getStats()
            reports = [s for s in stats.values() if s.type == "remote-inbound-rtp"]
            if reports and reports[0].roundTripTime is not None:
                return reports
            await asyncio.sleep(0.1)


def identifying_lines(sdp: str) -> list[str]:
    """What would identify a party: ICE credentials, DTLS fingerprint, candidates (addresses), its SSRC/cname."""
    prefixes = ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:", "a=candidate:", "a=ssrc:")
    return [line.strip() for line in sdp.splitlines() if line.startswith(prefixes)]


async def test_opus_legs_forward_the_encoded_packets_untouched(bridge, clients, parties):
    caller, callee, sdp = await connect(bridge, clients, parties, "call-1")
    assert bridge.stats("call-1")["mode"] == "forward"
    assert bridge.stats("call-1")["codecs"] == {"caller": "opus", "callee": "opus"}

    await hear_each_other(clients, caller, callee)

    stats = bridge.stats("call-1")
    assert stats["packets"]["caller_to_callee"] >= 50 and stats["packets"]["callee_to_caller"] >= 50
    # Byte for byte: a run of 50 payloads the callee's receiver got is a run the caller's sender emitted, and the
    # RTP timestamps advance by the same steps (the bridge renumbers and re-times from its own origin).
    got = callee.received[-60:-10]
    payloads_sent = [payload for _, payload in caller.sent]
    start = payloads_sent.index(got[0][1])
    sent = caller.sent[start:start + len(got)]
    assert [payload for _, payload in got] == [payload for _, payload in sent]
    steps = lambda run: [(b[0] - a[0]) & 0xFFFFFFFF for a, b in zip(run, run[1:])]  # noqa: E731
    assert steps(got) == steps(sent)
    # The bridge's receivers still send RTCP receiver reports (browsers' remote-inbound-rtp stats come from them).
    reports = await clients.run(remote_inbound_reports(caller))
    assert reports and reports[0].packetsReceived > 0 and reports[0].roundTripTime is not None
    # Masked: what each party received from the bridge carries nothing of the other party's identifying lines.
    for leg in Leg:
        their_lines = identifying_lines(sdp[leg.other][0])
        assert their_lines and not set(their_lines) & set(identifying_lines(sdp[leg][1]))


async def test_a_pcmu_only_callee_is_transcoded_both_ways(bridge, clients, parties):
    caller, callee, _ = await connect(bridge, clients, parties, "call-pcmu", callee_codecs=("PCMU",))
    stats = bridge.stats("call-pcmu")
    assert (stats["mode"], stats["codecs"]) == ("transcode", {"caller": "opus", "callee": "PCMU"})

    await hear_each_other(clients, caller, callee)

    assert callee.ear.rate == 8000 and caller.ear.rate == 48000
    stats = bridge.stats("call-pcmu")
    assert stats["packets"]["caller_to_callee"] >= 50 and stats["packets"]["callee_to_caller"] >= 50


async def test_the_second_leg_is_offered_the_first_legs_codec_to_avoid_transcoding(bridge, clients, parties):
    """The caller only has PCMU, the callee offers Opus first but also PCMU: the bridge answers the callee with
    PCMU, so the call is forwarded."""
    caller = await clients.run(Party.create(CALLER_HZ, ("PCMU",)))
    callee = await clients.run(Party.create(CALLEE_HZ))
    parties += [caller, callee]
    await bridge.negotiate("call-2", Leg.CALLER, await clients.run(caller.offer()))
    assert bridge.stats("call-2")["mode"] == "pending"
    await bridge.negotiate("call-2", Leg.CALLEE, await clients.run(callee.offer()))
    assert bridge.stats("call-2")["codecs"] == {"caller": "PCMU", "callee": "PCMU"}
    assert bridge.stats("call-2")["mode"] == "forward"


async def make_offer(*kinds: str) -> str:
    """An offer from a throwaway aiortc peer with one transceiver per kind."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind in kinds:
        pc.addTransceiver(kind)
    await pc.setLocalDescription(await pc.createOffer())
    await pc.close()
    return pc.localDescription.sdp


def without(sdp: str, prefix: str | tuple[str, ...]) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix))


def only_g729(sdp: str) -> str:
    """The same offer with G.729 as its only codec (which aiortc does not have)."""
    sdp = re.sub(r"(?m)^(m=audio \S+ \S+) .*$", r"\1 18", without(sdp, ("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")))
    return sdp.replace("a=mid:", "a=rtpmap:18 G729/8000\r\na=mid:")


async def test_bad_input_is_refused_clearly_while_another_call_keeps_flowing(bridge, clients, parties):
    caller, callee, _ = await connect(bridge, clients, parties, "good")
    await clients.run(both_hear(caller, callee, 10))
    audio, audio_video = await clients.run(make_offer("audio")), await clients.run(make_offer("audio", "video"))
    offers = [
        ("", "offer: empty SDP"),
        ("hello", r"offer: not an SDP session description \(must start with v=0\)"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", r"offer: no audio section \(m=audio\)"),
        ("v=0\r\nm=audio x y z\r\n", r"offer: could not be parsed"),
        (audio[:len(audio) // 2], r"offer: could not be parsed"),
        (audio_video, r"offer: exactly one media section, audio, is supported \(got audio, video\)"),
        (only_g729(audio), r"offer: no usable audio codec \(offered G729; supported: Opus, G722, PCMU, PCMA\)"),
        (without(audio, "a=fingerprint:"), "offer: no DTLS fingerprint"),
        (without(audio, "a=ice-"), r"offer: could not be used \(ValueError: ICE username fragment or password"),
    ]
    for number, (sdp, message) in enumerate(offers):
        with pytest.raises(MediaError, match=message):
            await bridge.negotiate(f"bad-{number}", Leg.CALLER, sdp)
    with pytest.raises(MediaError, match="offer: the caller leg of this call is already negotiated"):
        await bridge.negotiate("good", Leg.CALLER, audio)
    with pytest.raises(MediaError, match="offer: unknown leg 'agent'"):
        await bridge.negotiate("good", "agent", audio)  # type: ignore[arg-type]
    candidate = {"candidate": "candidate:1 1 udp 1 192.0.2.9 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
    with pytest.raises(MediaError, match="candidate: no caller leg in call 'unknown'"):
        await bridge.add_candidate("unknown", Leg.CALLER, candidate)
    with pytest.raises(MediaError, match="candidate: no caller leg in call 'unknown'"):
        await bridge.add_candidate("unknown", Leg.CALLER, None)
    with pytest.raises(MediaError, match="candidate: not an ICE candidate line"):
        await bridge.add_candidate("good", Leg.CALLEE, {"candidate": "candidate:junk", "sdpMid": "0"})
    await bridge.add_candidate("good", Leg.CALLEE, None)  # end of candidates is fine

    # Nothing of the refused offers was kept, and the good call flows on in both directions.
    assert bridge.active_calls == 1
    before = bridge.stats("good")["packets"]
    await clients.run(both_hear(caller, callee, 25))
    after = bridge.stats("good")["packets"]  # (the parties' jitter buffers lag the bridge by a few packets)
    assert all(after[direction] >= before[direction] + 10 for direction in before)


async def test_a_fault_in_one_call_ends_that_call_only(bridge, clients, parties):
    failures: list[tuple[str, Leg]] = []
    bridge.on_failure = lambda call_id, leg: failures.append((call_id, leg))
    a_caller, a_callee, _ = await connect(bridge, clients, parties, "call-a")
    b_caller, b_callee, _ = await connect(bridge, clients, parties, "call-b")
    await clients.run(both_hear(a_caller, a_callee, 10))

    def broken_push(packet: object) -> None:
        raise RuntimeError("injected fault on the way to call-a's callee")

    bridge._calls["call-a"].sides[Leg.CALLEE].outgoing.push = broken_push  # white box: break call-a's media path
    async with asyncio.timeout(TIMEOUT):
        while bridge.active_calls != 1 or bridge._closing:
            await asyncio.sleep(0.02)
    assert failures == [("call-a", Leg.CALLER)]
    assert bridge.stats("call-a") is None and bridge.stats("call-b")["mode"] == "forward"
    await bridge.close("call-a")  # what signaling does after on_failure: nothing left to do

    before = bridge.stats("call-b")["packets"]
    await hear_each_other(clients, b_caller, b_callee)
    after = bridge.stats("call-b")["packets"]
    assert all(after[direction] >= before[direction] + 25 for direction in before)


async def test_close_leaves_nothing_behind(bridge, clients, parties):
    tasks_before = asyncio.all_tasks()
    caller, callee, _ = await connect(bridge, clients, parties, "call-c")
    await clients.run(both_hear(caller, callee, 10))
    assert asyncio.all_tasks() - tasks_before, "aiortc runs the bridge's legs in tasks on this loop"
    call = bridge._calls["call-c"]  # white box: the bridge's own peer connections and tracks
    sides = list(call.sides.values())

    await asyncio.gather(bridge.close("call-c"), bridge.close("call-c"))  # a concurrent close waits for the first

    assert asyncio.all_tasks() - tasks_before == set()
    assert [side.pc.connectionState for side in sides] == ["closed", "closed"]
    assert all(side.outgoing.readyState == "ended" and side.receiver.track.readyState == "ended" for side in sides)
    assert (bridge.active_calls, bridge.stats("call-c"), bridge._calls, bridge._closing) == (0, None, {}, {})
    assert call.sides == {}
    await asyncio.sleep(0.01)
    assert bridge.trimmer.trims == 1, "the teardown hands freed memory back (signaling/heaptrim.py)"
    await bridge.close("call-c")  # again: nothing to do
    await bridge.close("never-existed")

    async def parties_see_the_end() -> list[str]:
        async with asyncio.timeout(TIMEOUT):
            while any(p.pc.connectionState != "closed" for p in (caller, callee)):
                await asyncio.sleep(0.02)
        return [p.pc.connectionState for p in (caller, callee)]

    assert await clients.run(parties_see_the_end()) == ["closed", "closed"]


async def test_close_during_negotiation_refuses_the_late_answer(bridge, clients, parties):
    tasks_before = asyncio.all_tasks()
    offer = await clients.run(make_offer("audio"))
    negotiation = asyncio.create_task(bridge.negotiate("call-d", Leg.CALLER, offer))
    await asyncio.sleep(0)  # the leg exists and is gathering candidates
    assert bridge.active_calls == 1
    await bridge.close("call-d")
    with pytest.raises(MediaError, match="offer: the call was closed during negotiation"):
        await negotiation
    assert (bridge.active_calls, bridge._calls, bridge._closing) == (0, {}, {})
    assert asyncio.all_tasks() - tasks_before == set()


async def test_candidates_trickled_while_the_offer_is_applied_are_kept(bridge, clients, parties):
    """A browser trickles its candidates right after sending its offer. Here the caller's offer goes without its
    candidates, which follow as trickled ones while `negotiate` is still running."""
    caller = await clients.run(Party.create(CALLER_HZ))
    callee = await clients.run(Party.create(CALLEE_HZ))
    parties += [caller, callee]
    offer = await clients.run(caller.offer())
    trickled = [{"candidate": line[2:], "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": None}
                for line in offer.splitlines() if line.startswith("a=candidate:")]
    assert trickled
    offer = without(offer, ("a=candidate:", "a=end-of-candidates"))  # as a trickling browser's offer is
    negotiation = asyncio.create_task(bridge.negotiate("call-t", Leg.CALLER, offer))
    await asyncio.sleep(0)
    for candidate in [*trickled, None]:
        await bridge.add_candidate("call-t", Leg.CALLER, candidate)
    assert not negotiation.done()
    await clients.run(caller.accept(await negotiation))
    remote = bridge._calls["call-t"].sides[Leg.CALLER].pc.remoteDescription.sdp  # white box: aiortc's view
    assert len(identifying_lines(without(remote, ("a=ice-", "a=fingerprint:", "a=ssrc:")))) == len(trickled)
    assert "a=end-of-candidates" in remote
    await bridge.add_candidate("call-t", Leg.CALLER, None)  # after negotiation: straight to aiortc

    await clients.run(callee.accept(await bridge.negotiate("call-t", Leg.CALLEE, await clients.run(callee.offer()))))
    await hear_each_other(clients, caller, callee)


async def test_a_party_closing_its_connection_fails_the_call_unless_signaling_ends_it(bridge, clients, parties):
    """aiortc reports a connection closed from the far end (the party closed it, or ICE consent expired) as
    "closed", not "failed": the bridge waits `closed_leg_grace` for signaling's close() (a hang-up), then reports
    the call through on_failure and tears it down."""
    failures: list[tuple[str, Leg]] = []
    bridge.on_failure = lambda call_id, leg: failures.append((call_id, leg))
    bridge.closed_leg_grace = 0.5
    gone_caller, gone_callee, _ = await connect(bridge, clients, parties, "call-gone")
    hung_caller, hung_callee, _ = await connect(bridge, clients, parties, "call-hung-up")
    await clients.run(both_hear(gone_caller, gone_callee, 5))
    await clients.run(both_hear(hung_caller, hung_callee, 5))

    await clients.run(gone_callee.pc.close())
    await clients.run(hung_caller.pc.close())
    await asyncio.sleep(0.1)
    await bridge.close("call-hung-up")  # the hang-up came through signaling within the grace period
    async with asyncio.timeout(TIMEOUT):
        while bridge.active_calls or bridge._closing:
            await asyncio.sleep(0.02)
    assert failures == [("call-gone", Leg.CALLEE)]
