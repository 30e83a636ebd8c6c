"""The masked-call media bridge: each party holds its own WebRTC connection with the server, and the server
forwards the audio between the two, so neither learns the other's SDP, candidates, DTLS fingerprint, ICE
credentials or network address.

When both legs negotiated the same codec (normally Opus) the encoded packets are forwarded untouched: a
`ReceiverTap` on each leg's receiver hands every RTP packet to the bridge, which pushes it as an `av.Packet` (pts
from the RTP timestamp) into the other leg's `EncodedTrack`, and aiortc's sender only packetizes it. Only when the
codecs differ does a `Transcoder` decode and re-encode (see `signaling.passthrough` and `signaling.transcoding`).

The signaling layer drives it: `negotiate` per leg with that leg's offer (the answer holds every server
candidate), `add_candidate` for the browser's trickled candidates, `close` when the call ends. A fault in one call
tears down that call only and is reported through `on_failure(call_id, leg)`: a leg's connection "failed", a leg's
connection closed from the party's end (it closed it, or its ICE consent expired, which aiortc reports as
"closed") with no `close` of the call within `closed_leg_grace` seconds, or an exception on the call's media path.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import Any

import av
from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription

from signaling import rtcpeer
from signaling.heaptrim import HeapTrimmer
from signaling.passthrough import EncodedTrack, ReceiverTap, RtpClock, pack_time_base, tap_receiver
from signaling.rtcpeer import MediaError
from signaling.transcoding import PACKETS_PER_SECOND, Transcoder, preferences_for_second_leg, same_codec

log = logging.getLogger(__name__)

MAX_EARLY_CANDIDATES = 50  # trickled candidates kept per leg while its offer is being applied
CLOSED_LEG_GRACE = 2.0  # seconds a leg closed by its party may wait for the call's close() before it is a failure
SETTLE_TICKS = 3  # event-loop iterations given to aiortc's own stragglers after a connection is closed


class Leg(enum.StrEnum):
    CALLER = "caller"
    CALLEE = "callee"

    @property
    def other(self) -> Leg:
        return Leg.CALLEE if self is Leg.CALLER else Leg.CALLER


class _Side:
    """One leg of a bridged call: the server's peer connection with that party and what flows out of it."""

    def __init__(self, leg: Leg, pc: RTCPeerConnection) -> None:
        self.leg = leg
        self.pc = pc
        self.outgoing = EncodedTrack()  # what this party hears
        self.receiver: RTCRtpReceiver | None = None
        self.tap: ReceiverTap | None = None
        self.codec: RTCRtpCodecParameters | None = None  # what the server sends; set once negotiated
        self.codecs_by_pt: dict[int, RTCRtpCodecParameters] = {}
        self.remote_set = False  # the offer is applied: trickled candidates can go to aiortc
        self.early_candidates: list[RTCIceCandidate | None] = []  # trickled while the offer was being applied
        self.connected = False
        self.clock = RtpClock(0)  # replaced at the first routed packet, with that codec's 20 ms step
        self.routes: dict[int, _Route] = {}  # by payload type, once the other leg has negotiated
        self.forwarded = 0  # packets from this party handed to the other leg
        self.dropped = 0  # packets from this party not handed on (other leg absent, reordered, undecodable)


class _Route:
    """How packets of one payload type from one leg reach the other: as they are, or through a transcoder."""

    def __init__(self, codec: RTCRtpCodecParameters, target: RTCRtpCodecParameters) -> None:
        self.codec = codec
        self.time_base = pack_time_base(codec)
        self.transcoder = None if same_codec(codec, target) else Transcoder(codec, target)


class _Call:
    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.sides: dict[Leg, _Side] = {}
        self.closed = False
        self.failed = False
        self.teardown: asyncio.Task[None] | None = None
        self.watchdog: asyncio.Task[None] | None = None  # a leg closed by its party: fail unless the call ends


class MediaBridge:
    """Bridged calls by id; see the module docstring. One instance per process, driven by signaling."""

    def __init__(self, ice_servers: list[dict[str, Any]], trimmer: HeapTrimmer | None = None) -> None:
        self._ice_servers = list(ice_servers)
        self.trimmer = trimmer if trimmer is not None else HeapTrimmer()  # freed memory back after each teardown
        self._calls: dict[str, _Call] = {}
        self._closing: dict[str, _Call] = {}
        self.on_failure: Callable[[str, Leg], None] | None = None
        self.closed_leg_grace = CLOSED_LEG_GRACE

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    async def negotiate(self, call_id: str, leg: Leg, offer_sdp: str) -> str:
        """The client's offer -> the server's answer (every server candidate inside). Creates the call on first
        use. MediaError on an unusable offer, or for a leg that already negotiated (no renegotiation)."""
        leg = _leg(leg, "offer")
        offered = _offered_codecs(offer_sdp)
        call = self._calls.get(call_id)
        if call is None:
            call = self._calls[call_id] = _Call(call_id)
        if leg in call.sides:
            raise MediaError(f"offer: the {leg} leg of this call is already negotiated (renegotiation unsupported)")
        side = call.sides[leg] = _Side(leg, rtcpeer.new_peer_connection(self._ice_servers))
        try:
            transceiver = side.pc.addTransceiver(side.outgoing, direction="sendrecv")
            other = call.sides.get(leg.other)
            if other is not None and other.codec is not None:
                transceiver.setCodecPreferences(preferences_for_second_leg(other.codec, offered))
            side.receiver = transceiver.receiver
            side.tap = tap_receiver(transceiver.receiver, lambda packet: self._on_packet(call, side, packet))
            side.pc.on("connectionstatechange", lambda: self._on_state(call, side))
            await rtcpeer.accept_offer(side.pc, offer_sdp)
            if len(side.pc.getTransceivers()) != 1:  # _offered_codecs checked this already
                raise MediaError("offer: exactly one media section, audio, is supported")
            self._check_open(call)
            side.remote_set = True
            for candidate in side.early_candidates:
                await _add_early_candidate(call, side, candidate)
            side.early_candidates.clear()
            answer = await rtcpeer.make_answer(side.pc)
            self._check_open(call)
            codecs = [c for c in SessionDescription.parse(answer).media[0].rtp.codecs if c.name.lower() != "rtx"]
        except BaseException:
            if call.sides.get(leg) is side:
                del call.sides[leg]
            if not call.sides and self._calls.get(call_id) is call:
                del self._calls[call_id]
            await _close_side(side)
            raise
        side.codecs_by_pt = {c.payloadType: c for c in codecs}
        side.codec = codecs[0]
        log.info("call %s: %s leg negotiated %s; mode %s", call_id, leg, side.codec.name, _mode(call))
        return answer

    async def add_candidate(self, call_id: str, leg: Leg, candidate: dict[str, Any] | None) -> None:
        """A candidate trickled by the client (RTCIceCandidateInit), None for end-of-candidates. Browsers trickle
        right after sending their offer: candidates that come while `negotiate` is still applying it are checked
        at once and kept until it is applied. MediaError for an unknown call or leg or a malformed candidate."""
        leg = _leg(leg, "candidate")
        call = self._calls.get(call_id)
        side = call.sides.get(leg) if call is not None else None
        if side is None:
            raise MediaError(f"candidate: no {leg} leg in call {call_id!r}")
        if side.remote_set:
            await rtcpeer.add_candidate(side.pc, candidate)
        elif len(side.early_candidates) < MAX_EARLY_CANDIDATES:
            side.early_candidates.append(rtcpeer.candidate_from_init(candidate))  # applied once the offer is
        else:
            raise MediaError(f"candidate: more than {MAX_EARLY_CANDIDATES} before the offer was applied")

    async def close(self, call_id: str) -> None:
        """End a call: both peer connections closed, tracks stopped, nothing kept. Idempotent; a concurrent
        second close waits for the first."""
        call = self._calls.get(call_id) or self._closing.get(call_id)
        if call is not None:
            await asyncio.shield(self._begin_teardown(call))

    async def close_all(self) -> None:
        calls = list(self._calls.values()) + list(self._closing.values())
        await asyncio.gather(*(asyncio.shield(self._begin_teardown(c)) for c in calls), return_exceptions=True)

    def stats(self, call_id: str) -> dict[str, Any] | None:
        """{"mode": "pending"|"forward"|"transcode", "codecs": {"caller": "opus", "callee": "PCMU"},
        "packets": {"caller_to_callee": n, "callee_to_caller": n}, "dropped": {same keys}}, None for an unknown
        call. "packets" counts what one leg received and handed to the other; "dropped" what was not (the other
        leg not connected yet, reordered or undecodable packets, the other leg's sender more than 200 ms behind)."""
        call = self._calls.get(call_id)
        if call is None:
            return None
        caller, callee = call.sides.get(Leg.CALLER), call.sides.get(Leg.CALLEE)
        return {
            "mode": _mode(call),
            "codecs": {str(leg): (s.codec.name if s and s.codec else None) for leg, s in zip(Leg, (caller, callee))},
            "packets": {
                "caller_to_callee": caller.forwarded if caller else 0,
                "callee_to_caller": callee.forwarded if callee else 0,
            },
            "dropped": {
                "caller_to_callee": (caller.dropped if caller else 0) + (callee.outgoing.dropped if callee else 0),
                "callee_to_caller": (callee.dropped if callee else 0) + (caller.outgoing.dropped if caller else 0),
            },
        }

    # -- media path --------------------------------------------------------------------------------------------

    def _on_packet(self, call: _Call, source: _Side, packet: RtpPacket) -> None:
        """Called by the source leg's receiver for every RTP packet it accepted, inside aiortc's receive path:
        nothing may escape from here into that connection's transport (or any other call)."""
        target = call.sides.get(source.leg.other)
        if target is None or not target.connected or call.closed:
            source.dropped += 1
            return
        try:
            route = source.routes.get(packet.payload_type) or _new_route(source, target, packet.payload_type)
            pts = source.clock.pts(packet.ssrc, packet.timestamp) if route is not None else None
            if pts is None:  # unknown payload type, or an old (reordered) packet
                source.dropped += 1
                return
            if route.transcoder is None:
                out = av.Packet(packet.payload)
                out.pts = pts
                out.time_base = route.time_base
                target.outgoing.push(out)
            else:
                try:
                    packets = route.transcoder.transcode(packet.payload, pts)
                except av.FFmpegError as exc:
                    source.dropped += 1
                    log.debug("call %s: undecodable %s packet from the %s leg: %s", call.call_id,
                              route.codec.name, source.leg, exc)
                    return
                for out in packets:
                    target.outgoing.push(out)
            source.forwarded += 1
        except Exception:
            log.exception("call %s: media path failed on a packet from the %s leg", call.call_id, source.leg)
            self._fail(call, source.leg)

    def _on_state(self, call: _Call, side: _Side) -> None:
        state = side.pc.connectionState
        side.connected = state == "connected"
        if call.closed:
            return
        if state == "failed":
            log.warning("call %s: the %s leg's connection failed", call.call_id, side.leg)
            self._fail(call, side.leg)
        elif state == "closed" and call.watchdog is None:
            # Closed without close(): the party closed its connection, or ICE consent expired (aiortc reported
            # that as "closed", not "failed", in the benchmark). A hang-up reaches close() through signaling soon.
            call.watchdog = asyncio.get_running_loop().create_task(self._fail_unless_closed(call, side.leg))

    async def _fail_unless_closed(self, call: _Call, leg: Leg) -> None:
        await asyncio.sleep(self.closed_leg_grace)
        if not call.closed:
            log.warning("call %s: the %s leg's connection closed and the call was not ended", call.call_id, leg)
            self._fail(call, leg)

    # -- teardown ----------------------------------------------------------------------------------------------

    def _fail(self, call: _Call, leg: Leg) -> None:
        """Report the call once through on_failure and tear it down (signaling's close() then finds it gone)."""
        if call.failed or call.closed:
            return
        call.failed = True
        if self.on_failure is not None:
            try:
                self.on_failure(call.call_id, leg)
            except Exception:
                log.exception("call %s: on_failure raised", call.call_id)
        self._begin_teardown(call)

    def _begin_teardown(self, call: _Call) -> asyncio.Task[None]:
        if call.teardown is None:
            call.closed = True
            if self._calls.get(call.call_id) is call:
                del self._calls[call.call_id]
            self._closing[call.call_id] = call
            name = f"bridge-close-{call.call_id}"
            call.teardown = asyncio.get_running_loop().create_task(self._teardown(call), name=name)
        return call.teardown

    async def _teardown(self, call: _Call) -> None:
        try:
            if call.watchdog is not None and call.watchdog is not asyncio.current_task():
                call.watchdog.cancel()
                await asyncio.gather(call.watchdog, return_exceptions=True)
            sides = list(call.sides.values())
            call.sides.clear()
            await asyncio.gather(*(_close_side(s) for s in sides))
            log.info("call %s: bridge closed", call.call_id)
        finally:
            if self._closing.get(call.call_id) is call:
                del self._closing[call.call_id]
            self.trimmer.request()

    @staticmethod
    def _check_open(call: _Call) -> None:
        if call.closed:
            raise MediaError("offer: the call was closed during negotiation")


def _new_route(source: _Side, target: _Side, payload_type: int) -> _Route | None:
    codec = source.codecs_by_pt.get(payload_type)
    if codec is None or target.codec is None:
        return None
    if not source.routes:
        source.clock = RtpClock(codec.clockRate // PACKETS_PER_SECOND)
    route = source.routes[payload_type] = _Route(codec, target.codec)
    return route


async def _add_early_candidate(call: _Call, side: _Side, candidate: RTCIceCandidate | None) -> None:
    try:
        await side.pc.addIceCandidate(candidate)
    except Exception as exc:  # the client was told it was accepted; it cannot help ICE, so it is only logged
        log.info("call %s: early candidate of the %s leg not usable: %r", call.call_id, side.leg, exc)


async def _close_side(side: _Side) -> None:
    """Close one leg's connection and drop every reference the bridge and aiortc hold to each other."""
    side.connected = False
    side.outgoing.stop()
    if side.tap is not None:
        side.tap.detach()
    try:
        await side.pc.close()
    except Exception:
        log.exception("closing the %s leg's peer connection failed", side.leg)
    # aiortc schedules work while closing (a connect attempt queued by setRemoteDescription, the decoder thread's
    # end-of-track put): let it run its first step, where it sees the connection closed and ends.
    for _ in range(SETTLE_TICKS):
        await asyncio.sleep(0)
    if side.receiver is not None and side.receiver.track is not None:
        side.receiver.track.stop()
    side.routes.clear()


def _leg(leg: Leg | str, what: str) -> Leg:
    try:
        return Leg(leg)
    except ValueError:
        raise MediaError(f"{what}: unknown leg {leg!r} (caller or callee)") from None


def _mode(call: _Call) -> str:
    caller, callee = call.sides.get(Leg.CALLER), call.sides.get(Leg.CALLEE)
    if caller is None or callee is None or caller.codec is None or callee.codec is None:
        return "pending"
    return "forward" if same_codec(caller.codec, callee.codec) else "transcode"


def _offered_codecs(offer_sdp: str) -> list[RTCRtpCodecParameters]:
    """Cheap checks (rtcpeer.check_offer), then the offer's audio codecs; aiortc's full checks follow in
    accept_offer. The offer must hold exactly one media section, an audio one, with a DTLS fingerprint."""
    rtcpeer.check_offer(offer_sdp)
    try:
        description = SessionDescription.parse(offer_sdp)
    except Exception as exc:
        raise MediaError(f"offer: could not be parsed ({type(exc).__name__}: {str(exc)[:200]})") from None
    kinds = [m.kind for m in description.media]
    if kinds != ["audio"]:
        raise MediaError(f"offer: exactly one media section, audio, is supported (got {', '.join(kinds) or 'none'})")
    media = description.media[0]
    if media.dtls is None or not media.dtls.fingerprints:
        raise MediaError("offer: no DTLS fingerprint (a=fingerprint), the connection could not be authenticated")
    codecs = [c for c in media.rtp.codecs if c.name.lower() != "rtx"]
    usable = {c.mimeType.lower() for c in RTCRtpReceiver.getCapabilities("audio").codecs}
    if not any(c.mimeType.lower() in usable for c in codecs):
        names = ", ".join(sorted({c.name for c in codecs})) or "none"
        raise MediaError(f"offer: no usable audio codec (offered {names}; supported: Opus, G722, PCMU, PCMA)")
    return codecs
