"""Voicemail: the server terminates the caller's WebRTC audio and records it into a WAV file in the data directory.

Used when a seller is offline, declines or does not answer, or a queue has nobody: the buyer's browser offers
audio to the server instead of to a person, and the seller plays the file later in the console's `<audio>` element.

File format: WAV, PCM s16 little-endian, mono, 48 kHz. Chromium (and Firefox and Safari) play it natively in
`<audio>`; writing it costs no encoder CPU on the media path (aiortc already spent one Opus decode), it never
re-encodes the caller's voice a second time, its duration is exact and it seeks without an index. The price is
size: 96 kB/s, 5.8 MB a minute; a long-term store can transcode it to Ogg/Opus off the call path.

The file is written incrementally (one 20 ms frame, 1920 bytes, per write into a buffered file) under
`<name>.part`. Its header already claims `max_seconds` of audio, so even a recording cut short by a crash is
playable as far as it got; the normal end rewrites the header with the real length, fsyncs in a thread and renames
`<name>.part` to `<name>`, so the final path only ever holds a finished recording. Nothing received: no file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import wave
from collections.abc import Callable
from typing import Any, BinaryIO

import av
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from signaling import rtcpeer
from signaling.rtcpeer import MediaError

log = logging.getLogger(__name__)

RATE = 48000
SAMPLE_BYTES = 2  # s16 mono
CONNECT_GRACE = 20.0  # seconds on top of max_seconds before a recorder that never got (all its) audio gives up


def check_audio_offer(sdp: str) -> None:
    """Server-terminated media is audio only: a video section would make aiortc decode video for nothing."""
    rtcpeer.check_offer(sdp)
    if "\nm=video " in sdp.replace("\r\n", "\n"):
        raise MediaError("offer: audio only (remove the video section)")


class VoicemailRecorder:
    """One voicemail: negotiate with the caller's offer, record its audio until `max_seconds` of audio, `stop()`,
    the caller going away, or `max_seconds + connect_grace` of wall-clock time, whichever comes first."""

    def __init__(
        self,
        ice_servers: list[dict[str, Any]],
        path: pathlib.Path,
        max_seconds: float,
        on_finished: Callable[[float], None] | None = None,
        *,
        connect_grace: float = CONNECT_GRACE,
    ) -> None:
        if max_seconds <= 0:
            raise ValueError("max_seconds must be positive")
        self._ice_servers = list(ice_servers)
        self._path = pathlib.Path(path)
        self._part = self._path.with_name(self._path.name + ".part")
        self._max_samples = max(1, round(max_seconds * RATE))
        self._wall_limit = max_seconds + connect_grace
        self._on_finished = on_finished
        self._pc: RTCPeerConnection | None = None
        self._recording: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._stopping: asyncio.Future | None = None
        self._resampler: av.AudioResampler | None = None
        self._file: BinaryIO | None = None
        self._wav: wave.Wave_write | None = None
        self._samples = 0

    @property
    def path(self) -> pathlib.Path:
        return self._path

    @property
    def duration(self) -> float:
        """Seconds of audio written so far (from samples, not wall clock)."""
        return self._samples / RATE

    # ---- signaling side ----

    async def negotiate(self, offer_sdp: str) -> str:
        """The caller's offer -> the answer SDP (recvonly audio, every server candidate in it); MediaError if the
        offer is unusable or sends no audio."""
        if self._stopping is not None:
            raise MediaError("voicemail: recording already stopped")
        if self._pc is not None:
            raise MediaError("voicemail: already negotiated")
        check_audio_offer(offer_sdp)
        pc = self._pc = rtcpeer.new_peer_connection(self._ice_servers)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_connection_state)
        try:
            await rtcpeer.accept_offer(pc, offer_sdp)
            if self._recording is None:
                raise MediaError("offer: sends no audio (the audio section must be sendrecv or sendonly)")
            answer = await rtcpeer.make_answer(pc)
            if self._stopping is not None:
                raise MediaError("voicemail: recording stopped during negotiation")
        except BaseException:
            await self.stop()
            raise
        self._spawn(self._wall_clock_limit())
        return answer

    async def add_candidate(self, candidate: dict[str, Any] | None) -> None:
        if self._pc is None:
            raise MediaError("candidate: no offer yet")
        if self._stopping is not None:
            return  # late trickle after the end is harmless
        await rtcpeer.add_candidate(self._pc, candidate)

    async def stop(self) -> float:
        """Stop recording, close the connection, finalize the file; idempotent. Returns the seconds written."""
        self._begin_stop("stopped")
        await asyncio.shield(self._stopping)
        return self.duration

    # ---- media side ----

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_track(self, track: MediaStreamTrack) -> None:
        # Every remote track must be consumed (aiortc's incoming queue is unbounded): the first audio track is
        # recorded, any other (a second audio section) drained.
        if track.kind == "audio" and self._recording is None:
            self._recording = self._spawn(self._record(track))
        else:
            self._spawn(_drain(track))

    def _on_connection_state(self) -> None:
        if self._pc is not None and self._pc.connectionState in ("failed", "closed"):
            self._begin_stop(f"connection {self._pc.connectionState}")

    async def _wall_clock_limit(self) -> None:
        await asyncio.sleep(self._wall_limit)
        self._begin_stop(f"no end after {self._wall_limit:.0f} s")

    async def _record(self, track: MediaStreamTrack) -> None:
        reason = "caller gone"
        try:
            while True:
                frame = await track.recv()
                if self._write(frame):
                    reason = "limit reached"
                    break
        except MediaStreamError:
            pass
        except Exception:
            log.exception("voicemail %s: recording failed", self._path.name)
            reason = "error"
        self._begin_stop(reason)

    def _write(self, frame: av.AudioFrame | None) -> bool:
        """Append one received frame (None flushes the resampler); True once max_seconds are written."""
        if self._resampler is None:
            if frame is None:
                return False
            # aiortc's Opus decoder gives s16 stereo 48 kHz; any layout or rate becomes s16 mono 48 kHz.
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        for out in self._resampler.resample(frame):
            data = out.to_ndarray().tobytes()
            room = (self._max_samples - self._samples) * SAMPLE_BYTES
            if room <= 0:
                return True
            data = data[:room]
            if not data:
                continue
            if self._wav is None:
                self._open()
            self._wav.writeframesraw(data)  # buffered; the header is rewritten once, at close
            self._samples += len(data) // SAMPLE_BYTES
        return self._samples >= self._max_samples

    def _open(self) -> None:
        self._part.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self._part, "wb")  # noqa: SIM115 - closed in _finalize
        wav = wave.open(self._file, "wb")
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_BYTES)
        wav.setframerate(RATE)
        wav.setnframes(self._max_samples)  # a file cut short by a crash still plays up to where it got
        self._wav = wav
        log.info("voicemail %s: recording", self._path.name)

    # ---- the end ----

    def _begin_stop(self, reason: str) -> None:
        if self._stopping is None:
            log.info("voicemail %s: stopping (%s)", self._path.name, reason)
            self._stopping = asyncio.ensure_future(self._shutdown())

    async def _shutdown(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._pc is not None:
            try:
                await self._pc.close()
            except Exception:
                log.exception("voicemail %s: closing the peer connection failed", self._path.name)
        if self._wav is not None:
            try:
                if self._samples < self._max_samples:
                    self._write(None)  # whatever the resampler still holds
            except Exception:
                log.exception("voicemail %s: flushing the resampler failed", self._path.name)
            try:
                await asyncio.to_thread(self._finalize)
            except Exception:
                log.exception("voicemail %s: could not be finalized; discarded", self._path.name)
                self._samples = 0
                await asyncio.to_thread(self._discard)
        log.info("voicemail %s: %.2f s recorded", self._path.name, self.duration)
        if self._on_finished is not None:
            try:
                self._on_finished(self.duration)
            except Exception:
                log.exception("voicemail %s: on_finished failed", self._path.name)

    def _finalize(self) -> None:
        """In a thread: the real length into the header, fsync, then the final name (and fsync the directory so
        the rename survives a power cut)."""
        self._wav.close()  # rewrites the header's lengths; leaves our file object open
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._wav = self._file = None
        os.replace(self._part, self._path)
        try:
            dir_fd = os.open(self._path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:  # the recording itself is complete and in place
            log.warning("voicemail %s: could not fsync the directory: %r", self._path.name, exc)

    def _discard(self) -> None:
        for closeable in (self._wav, self._file):
            try:
                if closeable is not None:
                    closeable.close()
            except Exception:
                pass
        self._wav = self._file = None
        self._part.unlink(missing_ok=True)


async def _drain(track: MediaStreamTrack) -> None:
    try:
        while True:
            await track.recv()
    except MediaStreamError:
        pass
