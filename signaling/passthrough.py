"""Encoded audio in and out of aiortc, without decoding: the receiving tap, the sending track, RTP clocks.

aiortc's sender already accepts encoded packets: when a track's `recv()` returns an `av.Packet` instead of a frame,
`RTCRtpSender._next_encoded_frame` only calls `encoder.pack(packet)` (payload bytes as they are, timestamp converted
from `pts`/`time_base`) and packetizes the result. `EncodedTrack` is such a track.

The receiving side has no public switch. `RTCRtpReceiver._handle_rtp_packet` does the bookkeeping (active SSRCs,
the per-source statistics behind the RTCP receiver reports and `getStats()`, unknown payload types dropped,
depayloading) and then hands each packet to the receiver's jitter buffer, whose complete frames go to a decoder
thread and on to the remote track. `tap_receiver` swaps that one receiver's jitter buffer for a `ReceiverTap`,
which passes every packet to a callback and never yields a frame:

- the hook is scoped to one receiver instance (nothing process-wide is patched), and the receiver's code runs
  unchanged up to the jitter buffer, so receiver reports and stats keep working;
- no 80 ms of audio jitter-buffer prefetch (4 packets) and no stall of up to 16 packets after a loss: the far
  browser has its own jitter buffer, the forwarder needs none;
- the decoder thread stays idle and the remote track's queue stays empty (never an unbounded backlog).

It relies on a private attribute of aiortc (checked when installed, so an aiortc that renamed it fails loudly at
negotiation instead of silently decoding).
"""

from __future__ import annotations

import asyncio
import collections
import fractions
from collections.abc import Callable

import av
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket

_JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"  # RTCRtpReceiver.__jitter_buffer, name-mangled
_NO_FRAME = (False, None)  # what JitterBuffer.add returns: (picture loss?, complete frame or None)

MAX_QUEUED = 10  # packets waiting for the sender (200 ms of 20 ms packets); beyond that the oldest is dropped


class ReceiverTap:
    """Stands in for one RTCRtpReceiver's jitter buffer: every RTP packet goes to `on_packet`, no frame comes out."""

    capacity = 16

    def __init__(self, on_packet: Callable[[RtpPacket], None]) -> None:
        self.on_packet: Callable[[RtpPacket], None] | None = on_packet

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        if self.on_packet is not None:
            self.on_packet(packet)
        return _NO_FRAME

    def detach(self) -> None:
        self.on_packet = None


def tap_receiver(receiver: RTCRtpReceiver, on_packet: Callable[[RtpPacket], None]) -> ReceiverTap:
    """Route this receiver's RTP packets to `on_packet` instead of its decoder. Install before media flows."""
    current = getattr(receiver, _JITTER_BUFFER_ATTR, None)
    if not isinstance(current, (JitterBuffer, ReceiverTap)):
        raise RuntimeError(
            f"aiortc internals changed: RTCRtpReceiver has no jitter buffer at {_JITTER_BUFFER_ATTR}; "
            "the encoded-packet tap cannot be installed"
        )
    tap = ReceiverTap(on_packet)
    setattr(receiver, _JITTER_BUFFER_ATTR, tap)
    return tap


class EncodedTrack(MediaStreamTrack):
    """An outgoing audio track fed with encoded `av.Packet`s; until something is pushed it yields nothing.

    `push` never blocks: when the sender falls behind by more than `maxlen` packets the oldest one is dropped."""

    kind = "audio"

    def __init__(self, maxlen: int = MAX_QUEUED) -> None:
        super().__init__()
        self._packets: collections.deque[av.Packet] = collections.deque()
        self._maxlen = maxlen
        self._waiter: asyncio.Future[None] | None = None
        self.dropped = 0

    def push(self, packet: av.Packet) -> None:
        if self.readyState != "live":
            return
        if len(self._packets) >= self._maxlen:
            self._packets.popleft()
            self.dropped += 1
        self._packets.append(packet)
        self._wake()

    async def recv(self) -> av.Packet:
        while not self._packets:
            if self.readyState != "live":
                raise MediaStreamError
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.readyState != "live":
            raise MediaStreamError
        return self._packets.popleft()

    def stop(self) -> None:
        super().stop()
        self._packets.clear()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def pack_time_base(codec: RTCRtpCodecParameters) -> fractions.Fraction:
    """The time base in which aiortc's `encoder.pack` turns `pts` into the RTP timestamp unchanged.

    It is 1/clock rate, except for G.722, whose aiortc encoder counts in its 16 kHz sample rate while the RTP clock
    is 8 kHz: with this base a packet's `pts` is always in RTP clock units of the codec, on the way in and out."""
    if codec.mimeType.lower() == "audio/g722":
        return fractions.Fraction(1, 16000)
    return fractions.Fraction(1, codec.clockRate)


class RtpClock:
    """Turns one incoming stream's 32-bit RTP timestamps into a continuous `pts` (in the same clock units).

    Gaps (loss, discontinuous transmission) are kept and wrap-around is unfolded. A packet not newer than the last
    one (reordered or duplicated) gets None, so the caller drops it: the sender numbers packets in the order they
    are pushed. A new SSRC (the browser restarted its sender) continues one packet after the last, no jump."""

    def __init__(self, step: int) -> None:
        self._ssrc: int | None = None
        self._last = 0
        self._pts = 0
        self._step = step

    def pts(self, ssrc: int, timestamp: int) -> int | None:
        if ssrc != self._ssrc:
            if self._ssrc is not None:
                self._pts += self._step
            self._ssrc = ssrc
            self._last = timestamp
            return self._pts
        delta = (timestamp - self._last) & 0xFFFFFFFF
        if delta == 0 or delta >= 0x80000000:
            return None
        self._pts += delta
        self._last = timestamp
        return self._pts
