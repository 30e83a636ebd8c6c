"""Voicemail recording against a real aiortc client peer: what the caller sends ends up in a playable WAV file."""

from __future__ import annotations

import asyncio
import wave

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from signaling.recorder import RATE, VoicemailRecorder
from signaling.rtcpeer import MediaError

try:
    from tests.support.media import Tone
except ImportError:  # until the shared media helpers have moved
    from tests.integration.test_media_aiortc import Tone

HZ = 440
TIMEOUT = 10


class ShortTone(Tone):
    """A tone that ends (like a caller hanging up the microphone) after `seconds`."""

    def __init__(self, hz: int, seconds: float) -> None:
        super().__init__(hz)
        self._frames_left = round(seconds * 50)
        self.ended = asyncio.Event()

    async def recv(self) -> av.AudioFrame:
        if self._frames_left <= 0:
            self.ended.set()
            raise MediaStreamError
        self._frames_left -= 1
        return await super().recv()


@pytest.fixture
async def no_leftover_tasks():
    """Every task a test starts (aiortc's included) is gone shortly after the server side has ended.

    Requested after `clients`, so it is checked before the caller's peer connections are closed: the recorder's
    own end must take everything down (the client's tasks end when the server closes DTLS)."""
    before = asyncio.all_tasks()
    yield
    for _ in range(40):
        left = asyncio.all_tasks() - before - {asyncio.current_task()}
        if not left:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"tasks left over: {left}")


@pytest.fixture
async def clients():
    pcs: list[RTCPeerConnection] = []
    yield pcs
    await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)


async def call(recorder: VoicemailRecorder, clients: list, track=None) -> RTCPeerConnection:
    """A caller's peer connection offering `track` (audio) to the recorder, connected with its answer."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    clients.append(pc)
    if track is not None:
        pc.addTrack(track)
    else:
        pc.addTransceiver("audio", direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    answer = await recorder.negotiate(pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await recorder.add_candidate(None)
    return pc


def read_wav(path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE)
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16), w.getnframes()


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float32) * np.hanning(len(samples))))
    return float(np.argmax(spectrum)) * RATE / len(samples)


async def test_three_seconds_of_tone_become_a_playable_wav(tmp_path, clients, no_leftover_tasks):
    path = tmp_path / "vm.wav"
    finished: list[float] = []
    recorder = VoicemailRecorder([], path, max_seconds=30, on_finished=finished.append)
    tone = ShortTone(HZ, 3.0)
    await call(recorder, clients, tone)

    await asyncio.sleep(1.5)  # mid-recording: written incrementally under .part, the final name not there yet
    part = tmp_path / "vm.wav.part"
    assert part.exists() and part.stat().st_size > 0.5 * RATE * 2
    assert not path.exists()

    await asyncio.wait_for(tone.ended.wait(), TIMEOUT)
    await asyncio.sleep(0.5)  # the last packets' way through the network and the decoder
    duration = await recorder.stop()

    assert duration == pytest.approx(3.0, abs=0.5)
    assert recorder.duration == duration and recorder.path == path
    assert finished == [duration]
    assert path.exists() and not part.exists()
    samples, frames = read_wav(path)
    assert frames / RATE == pytest.approx(duration, abs=1e-9)
    assert abs(dominant_hz(samples) - HZ) < 2
    # A decoder other than the stdlib's (FFmpeg, as in the browser) reads the same length.
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert (stream.codec_context.name, stream.rate, stream.channels) == ("pcm_s16le", RATE, 1)
        decoded = sum(frame.samples for frame in container.decode(stream))
    assert decoded == frames


async def test_recording_stops_at_max_seconds(tmp_path, clients, no_leftover_tasks):
    path = tmp_path / "vm.wav"
    finished: list[float] = []
    done = asyncio.Event()

    def on_finished(duration: float) -> None:
        finished.append(duration)
        done.set()

    recorder = VoicemailRecorder([], path, max_seconds=1, on_finished=on_finished)
    client = await call(recorder, clients, ShortTone(HZ, 3.0))
    await asyncio.wait_for(done.wait(), TIMEOUT)

    assert finished == [1.0]  # exactly: the frame that crosses the limit is cut at the limit
    assert recorder._pc.connectionState == "closed"
    samples, frames = read_wav(path)
    assert frames == RATE
    assert abs(dominant_hz(samples) - HZ) < 2
    for _ in range(50):  # the caller's side learns that the server hung up (DTLS close)
        if client.connectionState in ("closed", "failed"):
            break
        await asyncio.sleep(0.1)
    assert client.connectionState in ("closed", "failed")

    assert await recorder.stop() == 1.0
    assert finished == [1.0], "on_finished is called once"


async def test_recording_ends_when_the_caller_goes_away(tmp_path, clients, no_leftover_tasks):
    path = tmp_path / "vm.wav"
    done = asyncio.Event()
    finished: list[float] = []
    recorder = VoicemailRecorder([], path, max_seconds=30,
                                 on_finished=lambda d: (finished.append(d), done.set()))
    client = await call(recorder, clients, ShortTone(HZ, 10.0))
    await asyncio.sleep(1.0)
    await client.close()
    await asyncio.wait_for(done.wait(), TIMEOUT)

    assert len(finished) == 1 and 0.3 < finished[0] < 2.0
    _, frames = read_wav(path)
    assert frames / RATE == finished[0]
    assert await recorder.stop() == finished[0]


@pytest.mark.parametrize("sdp", [
    "",
    "hello",
    "v=0\r\nthis is not sdp\r\n",
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
    "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
])
async def test_malformed_offer_is_a_media_error(tmp_path, sdp, no_leftover_tasks):
    finished: list[float] = []
    recorder = VoicemailRecorder([], tmp_path / "vm.wav", max_seconds=5, on_finished=finished.append)
    with pytest.raises(MediaError):
        await recorder.negotiate(sdp)
    assert await recorder.stop() == 0.0
    assert list(tmp_path.iterdir()) == []
    assert finished in ([], [0.0])


async def test_offer_that_sends_no_audio_is_refused(tmp_path, clients, no_leftover_tasks):
    recorder = VoicemailRecorder([], tmp_path / "vm.wav", max_seconds=5)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    clients.append(pc)
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    with pytest.raises(MediaError, match="sends no audio"):
        await recorder.negotiate(pc.localDescription.sdp)
    assert await recorder.stop() == 0.0


async def test_stop_without_audio_leaves_no_file_and_twice_is_fine(tmp_path, clients, no_leftover_tasks):
    finished: list[float] = []
    recorder = VoicemailRecorder([], tmp_path / "vm.wav", max_seconds=5, on_finished=finished.append)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    clients.append(pc)
    pc.addTrack(Tone(HZ))
    await pc.setLocalDescription(await pc.createOffer())
    await recorder.negotiate(pc.localDescription.sdp)  # the caller never applies the answer: no media

    assert await recorder.stop() == 0.0
    assert await recorder.stop() == 0.0
    assert await asyncio.gather(recorder.stop(), recorder.stop()) == [0.0, 0.0]
    assert finished == [0.0]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MediaError):
        await recorder.negotiate(pc.localDescription.sdp)
    await recorder.add_candidate(None)  # a late candidate after the end is ignored


async def test_wall_clock_limit_when_media_never_flows(tmp_path, clients, no_leftover_tasks):
    done = asyncio.Event()
    recorder = VoicemailRecorder([], tmp_path / "vm.wav", max_seconds=0.2, connect_grace=0.3,
                                 on_finished=lambda d: done.set())
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    clients.append(pc)
    pc.addTrack(Tone(HZ))
    await pc.setLocalDescription(await pc.createOffer())
    await recorder.negotiate(pc.localDescription.sdp)
    await asyncio.wait_for(done.wait(), 3)
    assert recorder.duration == 0.0
    assert list(tmp_path.iterdir()) == []
