"""HeapTrimmer: a trim after a teardown, never more often than its interval, nothing disturbed when it fails."""

import asyncio
import sys

import pytest

from signaling.heaptrim import HeapTrimmer, glibc_malloc_trim


async def test_first_request_trims_at_once_then_at_most_once_per_interval():
    calls = []
    trimmer = HeapTrimmer(min_interval=0.2, trim=lambda: calls.append(asyncio.get_running_loop().time()))
    trimmer.request()
    await asyncio.sleep(0.01)
    assert len(calls) == 1
    for _ in range(5):  # five teardowns in a burst: one more trim, an interval after the first
        trimmer.request()
    await asyncio.sleep(0.05)
    assert len(calls) == 1
    await asyncio.sleep(0.25)
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.2 - 0.01
    assert trimmer.trims == 2 and trimmer.last_duration is not None


async def test_a_failing_trim_is_logged_and_never_tried_again(caplog):
    def broken():
        raise OSError("no heap")

    trimmer = HeapTrimmer(min_interval=0, trim=broken)
    trimmer.request()
    await asyncio.sleep(0.01)
    assert not trimmer.available and trimmer.trims == 0
    assert "malloc_trim failed" in caplog.text
    trimmer.request()  # a no-op now
    await asyncio.sleep(0.01)


async def test_close_cancels_a_pending_trim():
    calls = []
    trimmer = HeapTrimmer(min_interval=0.1, trim=lambda: calls.append(1))
    trimmer.request()
    await asyncio.sleep(0.01)
    trimmer.request()
    trimmer.close()
    await asyncio.sleep(0.15)
    assert calls == [1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_glibc_has_malloc_trim():
    trim = glibc_malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)  # 1: memory was released, 0: there was nothing to release
