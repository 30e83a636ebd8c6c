"""Giving freed heap memory back to the system after media sessions end.

Every WebRTC session (a bridged call's two legs, a voicemail recording, a pre-flight echo) allocates a few MB in
many small blocks (aiortc's peer connection, its DTLS context and certificate, codec contexts, packet buffers). When
the session closes, Python and the libraries free all of it, but glibc's allocator keeps most freed memory in its
heap for reuse: the bridge benchmark's 1,000 set-up/tear-down cycles left the process 20 MB above where it started,
with no Python object, task or thread left behind, and `malloc_trim(0)` gave all of it back (docs/benchmarks.md,
"Bridged calls"). So the media services ask for a trim when a session has been torn down.

`malloc_trim` walks the whole heap (a few milliseconds on a 150 MB process, measured by the benchmark), so it runs
at most once per `min_interval` seconds, on the event loop between two callbacks (the media tasks of the other calls
are never interrupted in the middle of a packet), never per call. Where the C library has no `malloc_trim` (musl,
macOS) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MIN_INTERVAL = 10.0  # seconds between two trims


def glibc_malloc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0) as a callable, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer:
    """`request()` after a media session's teardown: a trim now, or at most `min_interval` after the last one."""

    def __init__(self, min_interval: float = MIN_INTERVAL, trim: Callable[[], object] | None = None) -> None:
        self.min_interval = min_interval
        self._trim = trim if trim is not None else glibc_malloc_trim()
        self._last: float | None = None  # loop time of the last trim
        self._pending: asyncio.TimerHandle | None = None
        self.trims = 0
        self.last_duration: float | None = None  # seconds the last trim took

    @property
    def available(self) -> bool:
        return self._trim is not None

    def request(self) -> None:
        if self._trim is None or self._pending is not None:
            return
        loop = asyncio.get_running_loop()
        due = 0.0 if self._last is None else max(0.0, self._last + self.min_interval - loop.time())
        self._pending = loop.call_later(due, self._run, loop)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        self._pending = None
        started = time.perf_counter()
        try:
            self._trim()
        except Exception:  # never let housekeeping disturb a call
            log.exception("malloc_trim failed; not trying again")
            self._trim = None
            return
        self.last_duration = time.perf_counter() - started
        self._last = loop.time()
        self.trims += 1
        log.debug("heap trimmed in %.1f ms", self.last_duration * 1000)

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
