#!/usr/bin/env python3
"""Masked-call media bridge benchmark (issue "masked seller calls").

Processes (all on 127.0.0.1):

- the bridge: `signaling.bridge.MediaBridge` in its own process, pinned to CPU 0 with `--pin`, behind a tiny HTTP
  control API (negotiate / close / stats) that only carries set-up and tear-down;
- `--workers` client processes, pinned to CPU 1 with `--pin`, each holding some of the calls. Every party is an
  aiortc peer connection (real offer/answer, ICE, DTLS-SRTP with the bridge). Once it is connected the party's
  media goes around aiortc's per-packet machinery: it sends SRTP packets itself on the nominated ICE pair, paced
  every 20 ms at a random phase, and reads the incoming SRTP packets straight off its UDP socket (RTCP and STUN
  still go to aiortc). That makes a party much cheaper than a bridge leg, so one core of clients can load one core
  of bridge past saturation. The bridge's own legs are unchanged aiortc.

What is measured per step of N concurrent calls, over a window after the calls are set up:

- bridge CPU (from /proc/PID/stat) and the rest of CPU 0 (other processes), the client processes' CPU;
- packets per second delivered per leg (50/s are sent) and loss: the RTP timestamps the parties receive keep the
  gaps of missing packets (forwarding keeps the sender's timestamp steps; transcoding keeps gaps), so a stream's
  expected count is its timestamp span / 20 ms;
- latency. Forwarded calls: every payload carries its send time (CLOCK_MONOTONIC, shared by all processes), and
  the same parties connected directly to each other, with no bridge, give the baseline in the same run; the
  difference is what the bridge adds. Transcoded calls carry real Opus/PCMU audio, so there only the delay above
  each stream's fastest packet is reported (queueing);
- packets later than 150 ms (overload shows as delay before it shows as loss: nothing on aiortc's receive path is
  bounded), which with loss stops the stepping;
- bridge RSS per call, from a fresh bridge process per phase.

Then `--cycles` set-up/tear-down cycles (each: both legs negotiated and connected, a few packets forwarded both
ways, the call closed) against a fresh bridge process: RSS at start, after a warm-up, after each quarter and at
the end (after the product's own heap trim, signaling/heaptrim.py, has run), and after an extra malloc_trim(0).

    python bench/bridge.py --pin                      # full run: ~10 min quiet, longer while it waits for quiet
    python bench/bridge.py --pin --quick              # smoke run, about 2 minutes
    python bench/bridge.py --pin --profile forward:50 # also py-spy the bridge at that step (pip install py-spy)

Figures and findings: docs/benchmarks.md, "Bridged calls".
"""

from __future__ import annotations

import argparse
import array
import asyncio
import itertools
import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LATE_MS = 150  # a packet this late is as good as lost to a browser's jitter buffer
HEAP_TRIM_WAIT = 11.0  # seconds: signaling.heaptrim.MIN_INTERVAL, and a second for the trim itself
MARKER_PAYLOAD = 100  # bytes per forwarded packet: about 40 kb/s, a browser's voice Opus
HARD_DEADLINE = 1800  # seconds: the whole run stops by itself after this


def pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_busy_seconds(cpu: int) -> tuple[float, float]:
    """(busy, steal) seconds of one CPU from /proc/stat; busy is user, nice, system, irq and softirq."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                tick = os.sysconf("SC_CLK_TCK")
                return (v[0] + v[1] + v[2] + v[5] + v[6]) / tick, v[7] / tick
    return 0.0, 0.0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# -------------------------------------------------------------------------------------------- the bridge process

_SNAPSHOT: Any = None


def bridge_process(port: int, cpu: int | None, loop: str = "asyncio") -> None:
    pin(cpu)
    raise_nofile()
    if loop == "uvloop":
        import uvloop  # not a Talk dependency: pip install uvloop to compare

        uvloop.run(serve_bridge(port))
    else:
        asyncio.run(serve_bridge(port))


async def serve_bridge(port: int) -> None:
    import gc
    import threading

    from aiohttp import web

    from signaling.bridge import Leg, MediaBridge
    from signaling.rtcpeer import MediaError

    bridge = MediaBridge([])
    failures: list[str] = []
    bridge.on_failure = lambda call_id, leg: failures.append(f"{call_id}/{leg}")
    stop = asyncio.Event()

    async def negotiate(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            answer = await bridge.negotiate(body["call_id"], Leg(body["leg"]), body["sdp"])
        except MediaError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"sdp": answer})

    async def close(request: web.Request) -> web.Response:
        body = await request.json()
        await bridge.close(body["call_id"])
        return web.json_response({})

    async def close_all(_request: web.Request) -> web.Response:
        await bridge.close_all()
        gc.collect()
        return web.json_response({})

    async def stats(request: web.Request) -> web.Response:
        totals = {"forwarded": 0, "dropped": 0, "modes": {}}
        for call_id in list(bridge._calls):
            s = bridge.stats(call_id)
            if s is None:
                continue
            totals["forwarded"] += sum(s["packets"].values())
            totals["dropped"] += sum(s["dropped"].values())
            totals["modes"][s["mode"]] = totals["modes"].get(s["mode"], 0) + 1
        if request.query.get("gc"):
            gc.collect()
        trimmed = None
        if request.query.get("trim"):  # what glibc keeps of freed memory: RSS before and after malloc_trim(0)
            import ctypes

            before = process_rss_kib(os.getpid())
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            trimmed = [before, process_rss_kib(os.getpid())]
        if request.query.get("trace") and os.environ.get("PYTHONTRACEMALLOC"):
            import tracemalloc

            global _SNAPSHOT
            snapshot = tracemalloc.take_snapshot()
            if _SNAPSHOT is not None:
                for stat in snapshot.compare_to(_SNAPSHOT, "lineno")[:15]:
                    print("TRACE", stat, file=sys.stderr, flush=True)
            _SNAPSHOT = snapshot
        return web.json_response({
            **totals,
            "active_calls": bridge.active_calls,
            "failures": len(failures),
            "objects": len(gc.get_objects()),
            "rss_trimmed_kib": trimmed,
            "heap_trims": bridge.trimmer.trims,
            "heap_trim_ms": None if bridge.trimmer.last_duration is None else bridge.trimmer.last_duration * 1000,
            "tasks": len(asyncio.all_tasks()),
            "task_kinds": sorted({t.get_coro().__qualname__ for t in asyncio.all_tasks()}),
            "threads": threading.active_count(),
        })

    async def debug(_request: web.Request) -> web.Response:
        """Per call: each leg's connection and ICE state, whether its outgoing track is live, queued packets."""
        legs: dict[str, int] = {}
        for call in bridge._calls.values():
            for side in call.sides.values():
                ice = side.pc.getTransceivers()[0].receiver.transport.transport.state
                key = (f"{side.pc.connectionState}/{ice}/connected={side.connected}/track={side.outgoing.readyState}"
                       f"/queued={min(len(side.outgoing._packets), 10)}")
                legs[key] = legs.get(key, 0) + 1
        return web.json_response(legs)

    async def quit_(_request: web.Request) -> web.Response:
        stop.set()
        return web.json_response({})

    app = web.Application(client_max_size=1 << 20)
    app.add_routes([web.post("/negotiate", negotiate), web.post("/close", close), web.post("/close_all", close_all),
                    web.get("/stats", stats), web.get("/debug", debug), web.post("/quit", quit_)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await stop.wait()
    await bridge.close_all()
    await runner.cleanup()


# ---------------------------------------------------------------------------------------------- client parties

class Party:
    """One side of a call: an aiortc peer connection for set-up, raw SRTP on its ICE pair once connected."""

    def __init__(self, codecs: tuple[str, ...] | None, payloads: list[bytes] | None) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver

        from signaling.passthrough import EncodedTrack, tap_receiver

        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.transceiver = self.pc.addTransceiver(EncodedTrack(), direction="sendrecv")  # aiortc sends nothing
        if codecs:
            caps = RTCRtpReceiver.getCapabilities("audio").codecs
            self.transceiver.setCodecPreferences([c for c in caps if c.name in codecs])
        tap_receiver(self.transceiver.receiver, lambda packet: None)  # until the raw path takes over
        self.payloads = payloads  # None: marker payloads (send time inside)
        self.recording = False
        self.sending = False
        self.handle: asyncio.TimerHandle | None = None
        self.reset()

    def reset(self) -> None:
        self.sent = 0
        self.received = 0
        self.first_ts: int | None = None
        self.last_ts = 0
        self.prev_raw_ts = 0
        self.latencies = array.array("f")
        self.delays = array.array("f")  # receive time - RTP time, ms (transcoded calls: relative latency)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, sdp: str, kind: str = "answer") -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))

    async def answer(self, offer: str) -> str:
        await self.accept(offer, "offer")
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    async def connected(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.pc.connectionState != "connected":
                await asyncio.sleep(0.01)

    def start(self) -> None:
        """Take over the media: send on the nominated pair, read RTP off the socket."""
        dtls = self.transceiver.receiver.transport
        self.tx, self.rx = dtls._tx_srtp, dtls._rx_srtp
        pair = dtls.transport._connection._nominated[1]
        self.protocol, self.addr = pair.protocol, pair.remote_addr
        codec = self.transceiver._codecs[0]
        self.pt, self.ssrc = codec.payloadType, self.transceiver.sender._ssrc
        self.step = codec.clockRate // 50
        self.clock = codec.clockRate
        self.seq = random.randrange(1 << 15)
        self.ts = random.randrange(1 << 31)
        # Every local socket: the bridge may send on another pair than the one this side nominated.
        for protocol in dtls.transport._connection._protocols:
            protocol.datagram_received = self.filter(protocol.datagram_received)
        self.sending = True
        loop = asyncio.get_running_loop()
        self.next_send = loop.time() + random.random() * 0.02
        self.handle = loop.call_at(self.next_send, self.send)

    def filter(self, original: Any) -> Any:
        def datagram_received(data: bytes, addr: Any) -> None:
            if 128 <= data[0] < 192 and not 192 <= data[1] <= 223:
                self.on_rtp(data)
            else:
                original(data, addr)  # STUN, DTLS, RTCP: aiortc

        return datagram_received

    def send(self) -> None:
        if not self.sending:
            return
        header = struct.pack("!BBHII", 0x80, self.pt, self.seq, self.ts, self.ssrc)
        if self.payloads is None:
            payload = struct.pack("!qI", time.monotonic_ns(), self.seq).ljust(MARKER_PAYLOAD, b"\x55")
        else:
            payload = self.payloads[self.seq % len(self.payloads)]
        try:
            self.protocol.transport.sendto(self.tx.protect(header + payload), self.addr)
        except Exception:
            pass
        if self.recording:
            self.sent += 1
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + self.step) & 0xFFFFFFFF
        self.next_send += 0.02
        self.handle = asyncio.get_running_loop().call_at(self.next_send, self.send)

    def on_rtp(self, data: bytes) -> None:
        now = time.monotonic_ns()
        try:
            plain = self.rx.unprotect(data)
        except Exception:
            return
        if not self.recording:
            return
        ts = int.from_bytes(plain[4:8], "big")
        if self.first_ts is None:
            self.first_ts = self.last_ts = 0
            self.prev_raw_ts = ts
            self.ts_origin_ns = now
        else:
            delta = (ts - self.prev_raw_ts) & 0xFFFFFFFF
            if delta < 0x80000000:
                self.last_ts += delta
                self.prev_raw_ts = ts
        self.received += 1
        offset = 12 + 4 * (plain[0] & 0x0F)
        if plain[0] & 0x10:
            offset += 4 + 4 * int.from_bytes(plain[offset + 2:offset + 4], "big")
        if self.payloads is None and len(plain) >= offset + 12:
            sent_ns = int.from_bytes(plain[offset:offset + 8], "big", signed=True)
            self.latencies.append((now - sent_ns) / 1e6)
        else:
            rtp_ns = self.ts_origin_ns + self.last_ts * 1_000_000_000 // self.clock
            self.delays.append((now - rtp_ns) / 1e6)

    def report(self) -> dict[str, Any]:
        expected = self.last_ts // self.step + 1 if self.first_ts is not None else 0
        delays = [d - min(self.delays) for d in self.delays] if self.delays else []
        return {"sent": self.sent, "received": self.received, "expected": expected,
                "latencies": self.latencies.tobytes(), "delays": array.array("f", delays).tobytes()}

    async def close(self) -> None:
        self.sending = False
        if self.handle is not None:
            self.handle.cancel()
        await self.pc.close()


def encoded_tone(codec_name: str, hz: int) -> list[bytes]:
    """One second of a tone as 50 encoded 20 ms packets (Opus at 32 kb/s or PCMU), looped by a sending party."""
    import fractions

    import av
    import numpy as np
    from aiortc.codecs.g711 import PcmuEncoder
    from aiortc.codecs.opus import OpusEncoder

    encoder = OpusEncoder() if codec_name == "opus" else PcmuEncoder()
    if codec_name == "opus":
        encoder.codec.bit_rate = 32000
    packets: list[bytes] = []
    t = np.arange(48000 * 2) / 48000
    samples = (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16)
    for i in range(100):
        frame = av.AudioFrame.from_ndarray(samples[i * 960:(i + 1) * 960].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, i * 960, fractions.Fraction(1, 48000)
        payloads, _ = encoder.encode(frame)
        packets += payloads
    return packets[-50:]


# ---------------------------------------------------------------------------------------------- worker process

def worker_process(index: int, cpu: int | None, conn: Any, bridge_url: str) -> None:
    pin(cpu)
    raise_nofile()
    asyncio.run(Worker(index, conn, bridge_url).run())


class Worker:
    def __init__(self, index: int, conn: Any, bridge_url: str) -> None:
        self.index = index
        self.conn = conn
        self.bridge_url = bridge_url
        self.calls: dict[str, tuple[Party, Party]] = {}
        self.tones: dict[str, list[bytes]] = {}
        self.counter = itertools.count()

    async def run(self) -> None:
        import aiohttp

        self.http = aiohttp.ClientSession()
        loop = asyncio.get_running_loop()
        self.done = asyncio.Event()
        loop.add_reader(self.conn.fileno(), self.on_command)
        await self.done.wait()
        loop.remove_reader(self.conn.fileno())
        await self.http.close()

    def on_command(self) -> None:
        command, args = self.conn.recv()
        asyncio.ensure_future(self.dispatch(command, args))

    async def dispatch(self, command: str, args: dict[str, Any]) -> None:
        try:
            result = await getattr(self, f"cmd_{command}")(**args)
        except Exception as exc:  # reported to the orchestrator, which prints it
            result = {"error": f"{type(exc).__name__}: {exc}"}
        self.conn.send(result)

    async def negotiate(self, call_id: str, leg: str, sdp: str) -> str:
        async with self.http.post(f"{self.bridge_url}/negotiate", json={"call_id": call_id, "leg": leg, "sdp": sdp},
                                  timeout=aiohttp_timeout(30)) as response:
            body = await response.json()
            if response.status != 200:
                raise RuntimeError(body.get("error"))
            return body["sdp"]

    def tone(self, codec: str, hz: int) -> list[bytes]:
        key = f"{codec}:{hz}"
        if key not in self.tones:
            self.tones[key] = encoded_tone(codec, hz)
        return self.tones[key]

    async def setup(self, mode: str, call_id: str) -> tuple[Party, Party]:
        if mode == "transcode":
            caller = Party(None, self.tone("opus", 440))
            callee = Party(("PCMU",), self.tone("PCMU", 880))
        else:
            caller, callee = Party(None, None), Party(None, None)
        try:
            if mode == "direct":
                await caller.accept(await callee.answer(await caller.offer()))
            else:
                await caller.accept(await self.negotiate(call_id, "caller", await caller.offer()))
                await callee.accept(await self.negotiate(call_id, "callee", await callee.offer()))
            await asyncio.gather(caller.connected(30), callee.connected(30))
        except BaseException:
            await asyncio.gather(caller.close(), callee.close(), return_exceptions=True)
            raise
        caller.start()
        callee.start()
        return caller, callee

    async def cmd_add(self, mode: str, call_ids: list[str]) -> dict[str, Any]:
        results = await asyncio.gather(*(self.setup(mode, c) for c in call_ids), return_exceptions=True)
        errors = []
        for call_id, result in zip(call_ids, results):
            if isinstance(result, BaseException):
                errors.append(f"{call_id}: {type(result).__name__}: {result}")
            else:
                self.calls[call_id] = result
        return {"added": len(call_ids) - len(errors), "errors": errors[:3]}

    async def cmd_bridge(self, url: str) -> dict[str, Any]:
        self.bridge_url = url
        return {}

    async def cmd_record(self) -> dict[str, Any]:
        for pair in self.calls.values():
            for party in pair:
                party.reset()
                party.recording = True
        return {}

    async def cmd_report(self) -> dict[str, Any]:
        parties = [party for pair in self.calls.values() for party in pair]
        for party in parties:
            party.recording = False
        return {"parties": [p.report() for p in parties], "cpu": process_cpu_seconds(os.getpid())}

    async def cmd_debug(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for pair in self.calls.values():
            for party in pair:
                key = f"{party.pc.connectionState}/received={min(party.received, 1)}"
                states[key] = states.get(key, 0) + 1
        return {"states": states}

    async def cmd_close_all(self) -> dict[str, Any]:
        calls, self.calls = list(self.calls.values()), {}
        await asyncio.gather(*(p.close() for pair in calls for p in pair), return_exceptions=True)
        return {}

    async def cmd_cycles(self, count: int, concurrency: int) -> dict[str, Any]:
        """Set-up/tear-down cycles: both legs connected, a few packets through both ways, the call closed."""
        durations: list[float] = []
        errors: list[str] = []

        async def one() -> None:
            call_id = f"cycle-{self.index}-{next(self.counter)}"
            started = time.perf_counter()
            try:
                caller, callee = await self.setup("forward", call_id)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                await self.close_call(call_id)
                return
            for party in (caller, callee):
                party.recording = True
            try:
                async with asyncio.timeout(10):
                    while caller.received < 3 or callee.received < 3:
                        await asyncio.sleep(0.01)
            except TimeoutError:
                errors.append("no media within 10 s")
            await self.close_call(call_id)
            await asyncio.gather(caller.close(), callee.close(), return_exceptions=True)
            durations.append(time.perf_counter() - started)

        queue = iter(range(count))

        async def lane() -> None:
            for _ in queue:
                await one()

        await asyncio.gather(*(lane() for _ in range(concurrency)))
        return {"durations": durations, "errors": errors}

    async def close_call(self, call_id: str) -> None:
        async with self.http.post(f"{self.bridge_url}/close", json={"call_id": call_id}, timeout=aiohttp_timeout(30)):
            pass

    async def cmd_quit(self) -> dict[str, Any]:
        await self.cmd_close_all()
        self.done.set()
        return {}


def aiohttp_timeout(seconds: float) -> Any:
    import aiohttp

    return aiohttp.ClientTimeout(total=seconds)


# ------------------------------------------------------------------------------------------------- orchestrator

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        cpus = sorted(os.sched_getaffinity(0))
        self.bridge_cpu = cpus[0] if args.pin else None
        self.client_cpu = cpus[1] if args.pin and len(cpus) > 1 else None
        self.ctx = multiprocessing.get_context("spawn")
        self.bridge: Any = None
        self.workers: list[tuple[Any, Any]] = []
        self.next_worker = itertools.cycle(range(args.workers))
        self.call_ids = itertools.count()

    # processes
    def start_bridge(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.bridge = self.ctx.Process(target=bridge_process, args=(self.port, self.bridge_cpu, self.args.loop),
                                       daemon=True)
        self.bridge.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop_bridge(self) -> None:
        import urllib.request

        try:
            urllib.request.urlopen(urllib.request.Request(f"{self.url}/quit", method="POST"), timeout=30).read()
        except OSError:
            pass
        self.bridge.join(30)
        if self.bridge.is_alive():
            self.bridge.kill()

    def start_workers(self) -> None:
        for index in range(self.args.workers):
            parent, child = self.ctx.Pipe()
            process = self.ctx.Process(target=worker_process, args=(index, self.client_cpu, child, self.url),
                                       daemon=True)
            process.start()
            self.workers.append((process, parent))

    def stop_workers(self) -> None:
        self.all("quit")
        for process, _ in self.workers:
            process.join(30)
            if process.is_alive():
                process.kill()
        self.workers = []

    def all(self, command: str, per_worker: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        for i, (_, conn) in enumerate(self.workers):
            conn.send((command, per_worker[i] if per_worker else {}))
        replies = [conn.recv() for _, conn in self.workers]
        for reply in replies:
            if "error" in reply:
                raise RuntimeError(f"worker: {reply['error']}")
        return replies

    def bridge_stats(self, gc: bool = False, trim: bool = False) -> dict[str, Any]:
        import urllib.request

        query = "?gc=1&trace=1" if gc else "?trim=1" if trim else ""
        with urllib.request.urlopen(f"{self.url}/stats{query}", timeout=60) as response:
            return json.loads(response.read())

    def bridge_post(self, path: str) -> None:
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{self.url}{path}", method="POST"), timeout=60).read()

    # phases
    def add_calls(self, mode: str, count: int) -> int:
        per_worker: list[list[str]] = [[] for _ in self.workers]
        for _ in range(count):
            per_worker[next(self.next_worker)].append(f"{mode}-{next(self.call_ids)}")
        added = 0
        # In batches of 10 per worker, so DTLS handshakes do not time out on a loaded bridge.
        for start in range(0, max(len(ids) for ids in per_worker), 10):
            replies = self.all("add", [{"mode": mode, "call_ids": ids[start:start + 10]} for ids in per_worker])
            for reply in replies:
                added += reply["added"]
                for error in reply["errors"]:
                    print(f"  set-up error: {error}", file=sys.stderr)
        return added

    def our_cpu_seconds(self) -> float:
        pids = [self.bridge.pid] + [p.pid for p, _ in self.workers]
        return sum(process_cpu_seconds(pid) for pid in pids)

    def wait_quiet(self) -> float:
        """Wait (up to --wait-quiet s) until other processes use under 15% of the machine for a second;
        returns the seconds waited."""
        waited = 0.0
        while waited < self.args.wait_quiet:
            busy = sum(cpu_busy_seconds(c)[0] for c in sorted(os.sched_getaffinity(0))[:2])
            ours = self.our_cpu_seconds()
            time.sleep(1)
            other = sum(cpu_busy_seconds(c)[0] for c in sorted(os.sched_getaffinity(0))[:2]) - busy
            other -= self.our_cpu_seconds() - ours
            if other < 0.15:
                break
            waited += 1
        return waited

    def measure(self, mode: str, calls: int) -> dict[str, Any]:
        time.sleep(self.args.settle)
        waited = self.wait_quiet()
        client_cpu_before = sum(process_cpu_seconds(p.pid) for p, _ in self.workers)
        bridge_cpu_before = process_cpu_seconds(self.bridge.pid)
        cpu0_before = cpu_busy_seconds(self.bridge_cpu) if self.bridge_cpu is not None else (0.0, 0.0)
        cpu1_before = cpu_busy_seconds(self.client_cpu)[0] if self.client_cpu is not None else 0.0
        stats_before = self.bridge_stats()
        self.all("record")
        started = time.monotonic()
        time.sleep(self.args.window)
        replies = self.all("report")
        elapsed = time.monotonic() - started
        client_cpu = (sum(r["cpu"] for r in replies) - client_cpu_before) / elapsed
        bridge_cpu = (process_cpu_seconds(self.bridge.pid) - bridge_cpu_before) / elapsed
        cpu0 = cpu_busy_seconds(self.bridge_cpu) if self.bridge_cpu is not None else (float("nan"),) * 2
        cpu0_other = max(0.0, (cpu0[0] - cpu0_before[0]) / elapsed - bridge_cpu)
        cpu0_steal = (cpu0[1] - cpu0_before[1]) / elapsed
        cpu1_other = (max(0.0, (cpu_busy_seconds(self.client_cpu)[0] - cpu1_before) / elapsed - client_cpu)
                      if self.client_cpu is not None else float("nan"))
        stats = self.bridge_stats()
        parties = [p for r in replies for p in r["parties"]]
        if sum(p["received"] for p in parties) < 0.9 * sum(p["sent"] for p in parties):
            import urllib.request

            with urllib.request.urlopen(f"{self.url}/debug", timeout=60) as response:
                print(f"  bridge legs: {json.loads(response.read())}", file=sys.stderr, flush=True)
            print(f"  parties: {[r['states'] for r in self.all('debug')]}", file=sys.stderr, flush=True)
        received = sum(p["received"] for p in parties)
        expected = sum(p["expected"] for p in parties)
        sent = sum(p["sent"] for p in parties)
        latencies = [x for p in parties for x in array.array("f", p["latencies"])]
        delays = [x for p in parties for x in array.array("f", p["delays"])]
        legs = len(parties)
        return {
            "mode": mode, "calls": calls, "legs": legs, "window_s": round(elapsed, 2), "waited_quiet_s": waited,
            "bridge_cpu": bridge_cpu, "cpu0_other": cpu0_other, "cpu0_steal": cpu0_steal, "client_cpu": client_cpu,
            "cpu1_other": cpu1_other,
            "sent_pps_per_leg": sent / elapsed / legs if legs else 0,
            "delivered_pps_per_leg": received / elapsed / legs if legs else 0,
            "loss": 1 - received / expected if expected else float("nan"),
            "late": (sum(1 for x in latencies if x > LATE_MS) + sum(1 for x in delays if x > LATE_MS)) / received
            if received else float("nan"),
            "latency_ms": {"p50": pct(latencies, 50), "p99": pct(latencies, 99), "max": max(latencies, default=0)},
            "queueing_ms": {"p50": pct(delays, 50), "p99": pct(delays, 99), "max": max(delays, default=0)},
            "bridge_dropped": stats["dropped"] - stats_before["dropped"],
            "bridge_failures": stats["failures"],
            "rss_kib": process_rss_kib(self.bridge.pid),
            "modes": stats["modes"],
        }

    def baseline(self) -> dict[str, Any]:
        """The parties connected to each other directly (no bridge): the latency floor of this machine."""
        calls = self.args.baseline_pairs
        self.add_calls("direct", calls)
        result = self.measure("direct", calls)
        self.all("close_all")
        return result

    def fresh_bridge(self) -> None:
        if self.bridge is not None:
            self.stop_bridge()
        self.start_bridge()
        if self.workers:
            self.all("bridge", [{"url": self.url}] * len(self.workers))
        time.sleep(1)

    def idle(self) -> dict[str, Any]:
        """The bridge with no call: its CPU and RSS."""
        before, started = process_cpu_seconds(self.bridge.pid), time.monotonic()
        time.sleep(3)
        return {"cpu": (process_cpu_seconds(self.bridge.pid) - before) / (time.monotonic() - started),
                "rss_kib": process_rss_kib(self.bridge.pid)}

    def steps(self, mode: str, levels: list[int]) -> list[dict[str, Any]]:
        """A fresh bridge, then N calls stepping up until loss or late packets pass --stop-loss."""
        self.fresh_bridge()
        idle = self.idle()
        rss_idle = idle["rss_kib"]
        results = [{"mode": mode, "idle": idle}]
        print(f"| {mode} | 0 | {idle['cpu'] * 100:.1f}% | | | | | | | | | |", flush=True)
        calls = 0
        for level in levels:
            calls += self.add_calls(mode, level - calls)
            profile = self.maybe_profile(mode, level)
            result = self.measure(mode, calls)
            if profile is not None:
                profile.wait()
            result["rss_idle_kib"] = rss_idle
            result["rss_per_call_kib"] = (result["rss_kib"] - rss_idle) / calls if calls else 0
            results.append(result)
            print(row(result), flush=True)
            if max(result["loss"], result["late"]) > self.args.stop_loss or result["bridge_cpu"] > 0.985:
                break
        self.all("close_all")
        return results

    def maybe_profile(self, mode: str, level: int) -> subprocess.Popen | None:
        if f"{mode}:{level}" not in self.args.profile:
            return None
        py_spy = shutil.which("py-spy")
        if py_spy is None:
            print("  (py-spy not installed: pip install py-spy)", file=sys.stderr)
            return None
        out = Path(self.args.profile_dir) / f"bridge-{mode}-{level}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        seconds = int(self.args.settle + self.args.window)
        return subprocess.Popen([py_spy, "record", "--pid", str(self.bridge.pid), "--duration", str(seconds),
                                 "--format", "raw", "--output", str(out), "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def cycles(self) -> dict[str, Any]:
        """A fresh bridge: RSS at start, after a warm-up, and after --cycles set-up/tear-down cycles."""
        self.fresh_bridge()
        start = {"rss_kib": process_rss_kib(self.bridge.pid), **self.bridge_stats(gc=True)}
        self.run_cycles(1)
        time.sleep(HEAP_TRIM_WAIT)
        first = {"rss_kib": process_rss_kib(self.bridge.pid), **self.bridge_stats(gc=True)}
        warmup = self.args.cycle_warmup
        self.run_cycles(warmup)
        after_warmup = {"rss_kib": process_rss_kib(self.bridge.pid), **self.bridge_stats(gc=True)}
        started = time.monotonic()
        durations: list[float] = []
        errors: list[str] = []
        checkpoints = []  # (cycles done, RSS KiB) after each quarter
        done = 0
        for quarter in range(4):
            count = self.args.cycles // 4 + (1 if quarter < self.args.cycles % 4 else 0)
            more_durations, more_errors = self.run_cycles(count)
            durations += more_durations
            errors += more_errors
            done += count
            self.bridge_stats(gc=True)
            checkpoints.append((done, process_rss_kib(self.bridge.pid)))
        elapsed = time.monotonic() - started
        time.sleep(HEAP_TRIM_WAIT)  # the product's own trim after the last teardowns (signaling/heaptrim.py)
        end = {"rss_kib": process_rss_kib(self.bridge.pid), **self.bridge_stats(gc=True)}
        end["trim"] = self.bridge_stats(trim=True)["rss_trimmed_kib"]
        return {"cycles": self.args.cycles, "warmup": warmup, "elapsed_s": elapsed, "errors": errors[:5],
                "error_count": len(errors), "start": start, "first_call": first, "after_warmup": after_warmup, "end": end,
                "checkpoints": checkpoints,
                "cycle_ms": {"p50": pct(durations, 50) * 1000, "p99": pct(durations, 99) * 1000}}

    def run_cycles(self, count: int) -> tuple[list[float], list[str]]:
        n = len(self.workers)
        shares = [count // n + (1 if i < count % n else 0) for i in range(n)]
        replies = self.all("cycles", [{"count": s, "concurrency": self.args.cycle_concurrency} for s in shares])
        return [d for r in replies for d in r["durations"]], [e for r in replies for e in r["errors"]]


def row(r: dict[str, Any]) -> str:
    lat = r["latency_ms"] if r["mode"] != "transcode" else r["queueing_ms"]
    return (f"| {r['mode']} | {r['calls']} | {r['bridge_cpu'] * 100:.0f}% | {r['cpu0_other'] * 100:.0f}% ({r['cpu0_steal'] * 100:.0f}%) | "
            f"{r['client_cpu'] * 100:.0f}% + {r['cpu1_other'] * 100:.0f}% | {r['sent_pps_per_leg']:.1f} | {r['delivered_pps_per_leg']:.1f} | "
            f"{r['loss'] * 100:.2f}% | {r['late'] * 100:.2f}% | {lat['p50']:.1f} / {lat['p99']:.1f} / {lat['max']:.0f} | "
            f"{r.get('rss_per_call_kib', 0):.0f} | {r['bridge_dropped']} / {r['bridge_failures']} |")


HEADER = (f"| mode | calls | bridge CPU | others on CPU 0 (steal) | parties + others on CPU 1 | sent/s per leg | "
          f"delivered/s per leg | loss | later than {LATE_MS} ms | latency p50 / p99 / max ms | RSS KiB per call | "
          "bridge dropped packets / failed calls |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    full = {"forward": "10,20,30,40,50,60,70,80,90,100", "transcode": "5,10,15,20,25,30,40", "baseline_pairs": 20,
            "settle": 3.0, "window": 8.0, "cycles": 1000, "cycle_warmup": 50}
    quick = {"forward": "10,30", "transcode": "5,10", "baseline_pairs": 10, "settle": 2.0, "window": 4.0,
             "cycles": 100, "cycle_warmup": 20}
    parser.add_argument("--pin", action="store_true", help="bridge on CPU 0, clients on CPU 1")
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--forward", help=f"call counts, forwarded (default {full['forward']})")
    parser.add_argument("--transcode", help=f"call counts, one leg PCMU only (default {full['transcode']})")
    parser.add_argument("--baseline-pairs", type=int, help="direct party pairs for the baseline (default 20)")
    parser.add_argument("--settle", type=float, help="seconds after set-up before measuring (default 3)")
    parser.add_argument("--window", type=float, help="seconds measured per step (default 8)")
    parser.add_argument("--wait-quiet", type=float, default=60, help="max seconds to wait for other load to pass")
    parser.add_argument("--stop-loss", type=float, default=0.02,
                        help=f"stop stepping when loss or packets later than {LATE_MS} ms pass this fraction")
    parser.add_argument("--cycles", type=int, help="set-up/tear-down cycles, 0 to skip (default 1000)")
    parser.add_argument("--cycle-warmup", type=int, help="cycles before the RSS reference (default 50)")
    parser.add_argument("--cycle-concurrency", type=int, default=4, help="cycles in flight per worker")
    parser.add_argument("--profile", default="", help="mode:calls[,mode:calls]: py-spy the bridge at those steps")
    parser.add_argument("--profile-dir", default="bench-profiles")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the bridge process's event loop (uvloop is not a Talk dependency)")
    parser.add_argument("--quick", action="store_true", help="smaller defaults: a smoke run of about a minute")
    parser.add_argument("--json", help="write the raw results to this file")
    args = parser.parse_args()
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.profile = [p for p in args.profile.split(",") if p]
    signal.alarm(HARD_DEADLINE)
    raise_nofile()

    run = Run(args)
    results: dict[str, Any] = {"args": {k: v for k, v in vars(args).items()}, "started": time.time()}
    run.start_bridge()
    run.start_workers()
    try:
        print(HEADER, flush=True)
        results["baseline"] = run.baseline()
        print(row(results["baseline"]), flush=True)
        results["forward"] = run.steps("forward", [int(x) for x in args.forward.split(",") if x])
        results["transcode"] = run.steps("transcode", [int(x) for x in args.transcode.split(",") if x])
        if args.cycles:
            results["cycles"] = c = run.cycles()
            print(f"\ncycles: {c['cycles']} in {c['elapsed_s']:.0f} s, errors {c['error_count']} {c['errors']}; "
                  f"bridge RSS KiB start {c['start']['rss_kib']} ({c['start']['objects']} objects), after the first call "
                  f"{c['first_call']['rss_kib']} ({c['first_call']['objects']} objects), "
                  f"after {c['warmup']} warm-up "
                  f"{c['after_warmup']['rss_kib']}, end {c['end']['rss_kib']} (checkpoints {c['checkpoints']}), after malloc_trim(0) {c['end']['trim'][1]}; tasks {c['start']['tasks']} -> "
                  f"{c['end']['tasks']} {c['end']['task_kinds']}, objects {c['after_warmup']['objects']} -> {c['end']['objects']}, threads {c['start']['threads']} -> {c['end']['threads']}; "
                  f"cycle p50 {c['cycle_ms']['p50']:.0f} ms; product heap trims {c['end']['heap_trims']}, "
                  f"the last {c['end']['heap_trim_ms']:.1f} ms", flush=True)
    finally:
        run.stop_workers()
        run.stop_bridge()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
