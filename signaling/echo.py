"""Pre-flight echo: a short WebRTC call to the server that sends the caller's audio straight back and echoes every
message on the `preflight` data channel, so the widget (`talk('preflight')`) can measure round-trip time, jitter
and loss on its path to us and estimate a MOS before a real call. The browser-side measurement is specified in
`widget/preflight.md`; `estimate_mos` here is the reference the widget's JavaScript is checked against.

Each session is one aiortc peer connection that lives at most `max_seconds`. The echoed audio is decoded and
re-encoded by aiortc: measured here (2 vCPU) about 15 % of one core per session, so the default cap is 6 sessions
(about 90 % of one core), not 20. Forwarding the Opus packets untouched instead (a receiver tap and an encoded-packet
track, as the masked-call bridge does) measured about 2.5 % per session.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from signaling import rtcpeer
from signaling.heaptrim import HeapTrimmer
from signaling.recorder import check_audio_offer
from signaling.rtcpeer import MediaError

log = logging.getLogger(__name__)

CHANNEL_LABEL = "preflight"
MAX_BUFFERED_BYTES = 256 * 1024  # a client that does not read its echoes gets no more (server memory stays flat)


def estimate_mos(rtt_ms: float, jitter_ms: float, loss_pct: float) -> float:
    """Mean opinion score (1..4.5) from the simplified ITU-T G.107 E-model.

    effective latency = RTT/2 + 2*jitter + 10 ms; R = 93.2 - Id - 2.5*loss%, with Id = latency/40 below 160 ms and
    (latency - 120)/10 from there; MOS = 1 + 0.035 R + 7e-6 R (R - 60) (100 - R). R is clamped to 0..100 before the
    cubic (below 0 the cubic turns upwards again), negative inputs count as 0, loss above 100 % as 100 %.
    """
    rtt_ms, jitter_ms = max(0.0, rtt_ms), max(0.0, jitter_ms)
    loss_pct = min(100.0, max(0.0, loss_pct))
    latency = rtt_ms / 2 + 2 * jitter_ms + 10
    delay_impairment = latency / 40 if latency < 160 else (latency - 120) / 10
    r = min(100.0, max(0.0, 93.2 - delay_impairment - 2.5 * loss_pct))
    mos = 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)
    return min(4.5, max(1.0, mos))


class EchoTrack(MediaStreamTrack):
    """Sends back, as they arrive, the frames received on the caller's own track."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self._source = source

    async def recv(self) -> av.AudioFrame:
        return await self._source.recv()  # MediaStreamError when the caller's track ends ends this one too


@dataclass(eq=False)
class _Session:
    id: str
    pc: RTCPeerConnection
    tasks: set[asyncio.Task] = field(default_factory=set)
    closing: asyncio.Task | None = None


class EchoService:
    """Pre-flight echo sessions, at most `max_sessions` at a time, each at most `max_seconds` long."""

    def __init__(self, ice_servers: list[dict[str, Any]], max_sessions: int = 6, max_seconds: float = 15.0,
                 trimmer: HeapTrimmer | None = None) -> None:
        self._ice_servers = list(ice_servers)
        self._trimmer = trimmer
        self._max_sessions = max_sessions
        self._max_seconds = max_seconds
        self._sessions: dict[str, _Session] = {}
        self._shut = False

    @property
    def active(self) -> int:
        """Sessions holding a peer connection (negotiating, running or closing)."""
        return len(self._sessions)

    async def negotiate(self, offer_sdp: str) -> tuple[str, str]:
        """The client's offer -> (session id, answer SDP). MediaError on a bad offer, on an offer that sends no
        audio, or ("busy: ...") when max_sessions are running."""
        if self._shut:
            raise MediaError("echo: the service is shutting down")
        if len(self._sessions) >= self._max_sessions:
            raise MediaError(f"busy: {self._max_sessions} pre-flight tests are running, try again in a few seconds")
        check_audio_offer(offer_sdp)
        session = _Session(secrets.token_urlsafe(12), rtcpeer.new_peer_connection(self._ice_servers))
        self._sessions[session.id] = session  # the slot is taken before the first await
        pc = session.pc
        pc.on("datachannel", lambda channel: self._on_datachannel(session, channel))
        pc.on("connectionstatechange", lambda: self._on_connection_state(session))
        try:
            await rtcpeer.accept_offer(pc, offer_sdp)
            echoing = False
            for transceiver in pc.getTransceivers():
                source = transceiver.receiver.track if transceiver.kind == "audio" else None
                if source is None:
                    continue  # the client sends nothing on this section
                if echoing:  # only the first audio is echoed; every remote track must still be consumed
                    self._spawn(session, _drain(source))
                    continue
                transceiver.sender.replaceTrack(EchoTrack(source))
                transceiver.direction = "sendrecv"
                echoing = True
            if not echoing:
                raise MediaError("offer: sends no audio to echo (the audio section must be sendrecv)")
            answer = await rtcpeer.make_answer(pc)
            if session.closing is not None:
                raise MediaError("echo: session closed during negotiation")
        except BaseException:
            await self.close(session.id)
            raise
        self._spawn(session, self._time_limit(session))
        log.info("echo %s: started (%d active)", session.id, len(self._sessions))
        return session.id, answer

    async def add_candidate(self, session_id: str, candidate: dict[str, Any] | None) -> None:
        session = self._sessions.get(session_id)
        if session is None:
            raise MediaError("echo: no such session (it may have ended)")
        if session.closing is None:
            await rtcpeer.add_candidate(session.pc, candidate)

    async def close(self, session_id: str) -> None:
        """End one session and wait until its peer connection is closed; unknown or closed ids are fine."""
        session = self._sessions.get(session_id)
        if session is not None:
            await asyncio.shield(self._begin_close(session, "closed"))

    async def close_all(self) -> None:
        """End every session; the service takes no new ones afterwards (for the app's shutdown)."""
        self._shut = True
        closing = [self._begin_close(session, "shutdown") for session in list(self._sessions.values())]
        await asyncio.gather(*closing, return_exceptions=True)

    # ---- per session ----

    def _spawn(self, session: _Session, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)
        return task

    def _on_datachannel(self, session: _Session, channel: RTCDataChannel) -> None:
        if channel.label != CHANNEL_LABEL:
            log.info("echo %s: closing unexpected data channel %r", session.id, channel.label[:40])
            channel.close()
            return

        @channel.on("message")
        def echo(message: str | bytes) -> None:
            # Straight back, in order, in this event-loop turn: the client's timestamps measure the path.
            try:
                if channel.readyState == "open" and channel.bufferedAmount <= MAX_BUFFERED_BYTES:
                    channel.send(message)
            except Exception:  # one session's channel never disturbs the others
                log.exception("echo %s: could not echo a message", session.id)

    def _on_connection_state(self, session: _Session) -> None:
        state = session.pc.connectionState
        if state in ("failed", "closed"):
            self._begin_close(session, f"connection {state}")

    async def _time_limit(self, session: _Session) -> None:
        await asyncio.sleep(self._max_seconds)
        self._begin_close(session, f"{self._max_seconds:g} s limit")

    def _begin_close(self, session: _Session, reason: str) -> asyncio.Task:
        if session.closing is None:
            log.info("echo %s: closing (%s)", session.id, reason)
            session.closing = asyncio.ensure_future(self._close(session))
        return session.closing

    async def _close(self, session: _Session) -> None:
        try:
            tasks = list(session.tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.pc.close()
        except Exception:
            log.exception("echo %s: closing failed", session.id)
        finally:
            self._sessions.pop(session.id, None)
            if self._trimmer is not None:
                self._trimmer.request()


async def _drain(track: MediaStreamTrack) -> None:
    try:
        while True:
            await track.recv()
    except MediaStreamError:
        pass
