"""Codecs of a bridged call: keeping both legs on one codec when the offers allow it, so that packets are
forwarded as they are, and transcoding one direction when they do not (Opus <-> PCMU...).

The second leg to negotiate is offered the first leg's codec first (`preferences_for_second_leg`): a caller with
only PCMU and a callee offering Opus and PCMU are both answered PCMU, and nothing is transcoded; neither side
would have heard more than narrowband anyway.

What is transcoded comes from a `ReceiverTap` and leaves as encoded `av.Packet`s for an `EncodedTrack`, so both
ends stay off aiortc's expensive paths: no decoder thread and queue on the way in, and on the way out no per-frame
pure-Python audio-level computation (aiortc's sender computes it only for frames it encodes itself). Decoding and
encoding use aiortc's own codec classes and run inline on the event loop (measured here: about 80 us per packet
Opus -> PCMU, 170 us PCMU -> Opus); with the bridge on one core a thread would add a hand-off, not CPU.
"""

from __future__ import annotations

import av
from aiortc import RTCRtpReceiver
from aiortc.codecs import get_decoder, get_encoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters

from signaling.passthrough import pack_time_base

# aiortc encodes Opus at a fixed 96 kb/s. What is transcoded into Opus comes from a narrowband or wideband codec
# (PCMU, PCMA, G.722), for which 32 kb/s of Opus is already transparent.
OPUS_BITRATE = 32000
PACKETS_PER_SECOND = 50  # 20 ms packets, as every aiortc encoder produces


def same_codec(a: RTCRtpCodecParameters, b: RTCRtpCodecParameters) -> bool:
    """Whether packets of `a` can be forwarded as they are to a sender of `b`."""
    return a.mimeType.lower() == b.mimeType.lower() and a.clockRate == b.clockRate and a.channels == b.channels


def preferences_for_second_leg(
    codec: RTCRtpCodecParameters, offered: list[RTCRtpCodecParameters]
) -> list[RTCRtpCodecCapability]:
    """Codec preferences (for `setCodecPreferences`) of the second leg to negotiate: `codec`, the first leg's,
    first when this offer has it, so the call is forwarded rather than transcoded; then the offer's own order."""
    capabilities = RTCRtpReceiver.getCapabilities("audio").codecs
    ranked = sorted(capabilities, key=lambda cap: 0 if _matches(cap, codec) else 1 + _rank(cap, offered))
    return ranked


def _matches(cap: RTCRtpCodecCapability, codec: RTCRtpCodecParameters) -> bool:
    return cap.mimeType.lower() == codec.mimeType.lower() and cap.clockRate == codec.clockRate


def _rank(cap: RTCRtpCodecCapability, offered: list[RTCRtpCodecParameters]) -> int:
    return next((i for i, c in enumerate(offered) if _matches(cap, c)), len(offered))


class Transcoder:
    """Decodes packets of `source` and re-encodes them as `target`; output `pts` are in the target's RTP clock
    units, continuous, with the gaps of the input (loss, silence suppression) kept."""

    def __init__(self, source: RTCRtpCodecParameters, target: RTCRtpCodecParameters) -> None:
        self.source = source
        self.target = target
        self._decoder = get_decoder(source)
        self._encoder = get_encoder(target)
        if isinstance(self._encoder, OpusEncoder):
            self._encoder.codec.bit_rate = OPUS_BITRATE  # the codec opens at the first encode
        self._source_rate = source.clockRate
        self._target_rate = target.clockRate
        self._time_base = pack_time_base(target)
        self._step = target.clockRate // PACKETS_PER_SECOND
        self._next_pts: int | None = None

    def transcode(self, payload: bytes, pts: int) -> list[av.Packet]:
        """One incoming packet (`pts` in the source's RTP clock units) -> zero or more outgoing packets. Raises
        `av.FFmpegError` on a payload that does not decode."""
        target_pts = pts * self._target_rate // self._source_rate
        out: list[av.Packet] = []
        for frame in self._decoder.decode(JitterFrame(payload, pts)):
            payloads, _ = self._encoder.encode(frame)
            for data in payloads:
                if self._next_pts is None or target_pts > self._next_pts + self._step:
                    self._next_pts = target_pts  # first packet, or audio missing upstream: keep the gap
                packet = av.Packet(data)
                packet.pts = self._next_pts
                packet.time_base = self._time_base
                self._next_pts += self._step
                out.append(packet)
        return out
