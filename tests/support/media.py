"""Audio for tests with real aiortc peers: a tone to send, an ear that consumes and analyses what is received.

A different tone per party (its dominant frequency) proves whose audio reached whom.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import time

import av
import numpy as np
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack

RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
FRAMES_NEEDED = 50  # one second of received audio


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
    """Consumes every remote track until it ends; counts frames and keeps the last 200 ms of the first channel.

    `heard_enough` is set once `frames_needed` frames have arrived."""

    def __init__(self, frames_needed: int = FRAMES_NEEDED) -> None:
        self.frames = 0
        self.frames_needed = frames_needed
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
                if self.frames >= self.frames_needed:
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
