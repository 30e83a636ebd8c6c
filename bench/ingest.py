#!/usr/bin/env python3
"""Event ingestion benchmark (issue "The journey").

Runs `talk demo` in a child process, on SQLite and then on PostgreSQL, and POSTs batches of page views to
/api/v1/events over real HTTP on 127.0.0.1, the way the widget does (`Content-Type: text/plain`, the demo site's
Origin). For each database it measures:

1. a fixed offered rate (--rate events/s in batches of --batch, open loop): acknowledgement latency, i.e. from the
   request being sent to the 202 being read, p50/p95/p99/max;
2. saturation: closed loop with --concurrency connections (and a tenth of that), each posting batches back to back;
   events acknowledged per second, latency, the Talk process's CPU time per event;
3. duplicates: acknowledged batches resent (each must answer accepted 0), half-resent batches, and identical batches
   sent twice at the same moment;
4. verification, after the server is killed with SIGKILL (an acknowledged event must already be committed): every
   acknowledged event id is in the `events` table, each once, and nothing that was never sent.

Once, on SQLite: backpressure. A second server with TALK_INGEST_MAX_PENDING=100 gets a burst of batches at once;
some must get 503 with Retry-After, nothing of a refused batch may be stored, and the refused batches are then resent
after Retry-After, as the widget does.

Baselines in the same run, in a child process pinned like the server, into a fresh database made by
`talk db upgrade` (same columns, unique constraint and indexes) with talk/db.py's pragmas: Python's sqlite3
`executemany` of the same rows (built by the product's own validation and `event_rows`), asyncpg `executemany` on
PostgreSQL, and the product's EventWriter without HTTP, at several rows per transaction.

Traffic goes to 127.0.0.1 only; every phase is bounded in time; the child processes die with this one; the
throwaway PostgreSQL databases (bench_ingest_*) are dropped at the end.

    python bench/ingest.py --pin                 # full run, ~3 minutes
    python bench/ingest.py --pin --quick         # ~2 minute smoke run
    python bench/ingest.py --pin --skip-postgres
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
SITE_KEY = "demo-shop"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
HARD_DEADLINE = 900  # seconds: the whole run stops by itself after this, whatever happens
REQUEST_TIMEOUT = 30.0
BASELINE_TXN_SIZES = (10, 100, 1000)
# --trace-writer: run `talk demo` through this wrapper, which counts the EventWriter's groups (transactions), their
# rows and the wall time spent writing them, the slowest group, and the pauses of full (generation 2) garbage
# collections; it prints the running totals five times a second.
WRITER_TRACE = """
import gc, os, sys, threading, time
from analytics import ingest
from talk import db as _db
_extra = [p for p in os.environ.pop("BENCH_SQLITE_PRAGMAS", "").split(";") if p]
if _extra:  # --sqlite-pragma: after talk/db.py's own pragmas, on every new SQLite connection
    _own = _db.sqlite_pragmas
    def _pragmas(connection, record):
        _own(connection, record)
        cursor = connection.cursor()
        for pragma in _extra:
            cursor.execute("PRAGMA " + pragma)
        cursor.close()
    _db.sqlite_pragmas = _pragmas
_totals = {"groups": 0, "rows": 0, "write_s": 0.0, "slowest_ms": 0.0, "gc2": 0, "gc2_ms": 0.0, "gc2_max_ms": 0.0}
_original = ingest.EventWriter._write_group
async def _write_group(self, group):
    started = time.perf_counter()
    try:
        await _original(self, group)
    finally:
        took = time.perf_counter() - started
        _totals["groups"] += 1
        _totals["rows"] += sum(len(p.rows) for p in group)
        _totals["write_s"] += took
        _totals["slowest_ms"] = max(_totals["slowest_ms"], took * 1000)
ingest.EventWriter._write_group = _write_group
from talk import directory as _directory
_load_site = _directory.load_site
async def _counted_load_site(db, key):
    _totals["site_loads"] += 1
    return await _load_site(db, key)
_directory.load_site = _counted_load_site
_totals["site_loads"] = 0
_gc_start = [0.0]
def _gc(phase, info):
    if phase == "start":
        _gc_start[0] = time.perf_counter()
    elif info["generation"] == 2:
        pause = (time.perf_counter() - _gc_start[0]) * 1000
        _totals["gc2"] += 1
        _totals["gc2_ms"] += pause
        _totals["gc2_max_ms"] = max(_totals["gc2_max_ms"], pause)
gc.callbacks.append(_gc)
def _report():
    while True:
        time.sleep(0.2)
        t = dict(_totals)
        _totals["slowest_ms"] = 0.0
        _totals["gc2_max_ms"] = 0.0
        print(f"BENCH-WRITER {time.time():.3f} {t['groups']} {t['rows']} {t['write_s']:.6f} {t['slowest_ms']:.1f} "
              f"{t['gc2']} {t['gc2_ms']:.1f} {t['gc2_max_ms']:.1f} {t['site_loads']}", file=sys.stderr, flush=True)
threading.Thread(target=_report, daemon=True).start()
from talk.cli import main
main(sys.argv[1:])
"""


# ----------------------------------------------------------------------------------------------- bare server mode

def serve_bare(port: int) -> None:
    """The HTTP floor: a bare aiohttp app that reads the same body, parses the JSON and answers the same 202."""
    from aiohttp import web

    async def events(request: web.Request) -> web.Response:
        data = json.loads(await request.content.read(32 * 1024 + 1))
        return web.json_response({"accepted": len(data["events"]), "duplicates": 0}, status=202,
                                 headers={"Access-Control-Allow-Origin": request.headers.get("Origin", ""),
                                          "Vary": "Origin"})

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/api/v1/events", events)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# ---------------------------------------------------------------------------------------------------- statistics

def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * p // 100)))
    return ordered[int(rank) - 1]


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"count": len(ms), "p50": pct(ms, 50), "p95": pct(ms, 95), "p99": pct(ms, 99),
            "max": max(ms) if ms else float("nan")}


def fmt_summary(s: dict) -> str:
    return f"n={s['count']} p50={s['p50']:.2f} p95={s['p95']:.2f} p99={s['p99']:.2f} max={s['max']:.2f} ms"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------- processes

def _die_with_parent() -> None:
    """preexec_fn: SIGTERM when this process dies, and a file limit high enough for the connections."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(want, 65536)), hard))


def raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def cpu_busy(cpu: int) -> float:
    """Seconds one CPU has been busy (not idle or iowait), from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                values = [int(v) for v in line.split()[1:]]
                return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def process_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without any TALK_* variable of the caller's, plus the bench's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALK_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


class Child:
    """`talk demo` (or a wrapper of it) in a child process, optionally pinned with taskset, logging to a file."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, pin_cpu: int | None, env: dict[str, str]) -> None:
        if pin_cpu is not None:
            cmd = ["taskset", "-c", str(pin_cpu), *cmd]
        self.name = name
        self.cmd = cmd
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent, env=env, cwd=ROOT)
        self.pid = self.proc.pid  # taskset execs the program: same pid

    async def wait_ready(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        return process_cpu(self.pid)

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def writer_window(self, t0: float, t1: float) -> dict[str, float] | None:
        """--trace-writer's figures between two time.time() instants; None without it."""
        lines = []
        for line in self.log_text().splitlines():
            if line.startswith("BENCH-WRITER "):
                try:
                    values = [float(v) for v in line.split()[1:]]
                except ValueError:  # the server's log interleaved with this line: the next one will do
                    continue
                lines.append(values)
        before = [v for v in lines if v[0] <= t0]
        inside = [v for v in lines if t0 < v[0] <= t1 + 0.25]
        if not before or not inside:
            return None
        first, last = before[-1], inside[-1]
        elapsed = t1 - t0
        groups, rows, seconds = last[1] - first[1], last[2] - first[2], last[3] - first[3]
        return {"groups_per_s": groups / elapsed, "rows_per_group": rows / groups if groups else 0.0,
                "busy": seconds / elapsed, "ms_per_group": seconds * 1000 / groups if groups else 0.0,
                "slowest_group_ms": max(v[4] for v in inside), "gc2": last[5] - first[5],
                "gc2_max_ms": max(v[7] for v in inside), "site_loads": last[8] - first[8]}

    def stop(self, graceful: bool = False) -> None:
        """SIGKILL by default: what was acknowledged must be committed already, not flushed at a clean exit."""
        if self.proc.poll() is None:
            if graceful:
                self.proc.send_signal(signal.SIGINT)  # aiohttp's graceful shutdown (cProfile writes its stats)
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            else:
                self.proc.kill()
            self.proc.wait(10)
        self._log.close()


# ------------------------------------------------------------------------------------------------- the traffic

class Traffic:
    """Batches of page views with known event ids: ids are a per-run prefix and a number, so every event sent,
    acknowledged or refused is tracked as an int and checked against the table afterwards."""

    def __init__(self, batch: int, visitors: int) -> None:
        self.batch = batch
        self.tag = secrets.token_hex(4)  # 8 characters
        self.next_number = 0
        self.visitors = [(f"v_{self.tag}{i:012d}", f"s_{self.tag}{i:012d}") for i in range(max(1, visitors))]

    def event_id(self, n: int) -> str:
        return f"e_{self.tag}{n:014d}"

    def number_of(self, event_id: str) -> int | None:
        prefix = f"e_{self.tag}"
        return int(event_id[len(prefix):]) if event_id.startswith(prefix) else None

    def fresh(self, count: int | None = None) -> list[int]:
        count = self.batch if count is None else count
        first = self.next_number
        self.next_number += count
        return list(range(first, first + count))

    def body(self, numbers: list[int], visitor: int, sent_at_ms: int | None = None) -> bytes:
        """What the widget sends: page views of a shop, some from campaigns or ads, some with props."""
        now = int(time.time() * 1000) if sent_at_ms is None else sent_at_ms
        visitor_id, session_id = self.visitors[visitor % len(self.visitors)]
        events = []
        for j, n in enumerate(numbers):
            page = n % 500
            url = f"https://shop.example.com/p/{page}"
            if n % 5 == 0:
                url += "?utm_source=newsletter&utm_medium=email&utm_campaign=november"
            elif n % 7 == 0:
                url += f"?gclid=Cj0KCQiA{n:010d}"
            event = {"id": self.event_id(n), "type": "pageview", "ts": now - (len(numbers) - j) * 1500, "url": url,
                     "title": f"Product {page} – Demo Shop",
                     "referrer": ("https://www.google.com/" if j == 0
                                  else f"https://shop.example.com/p/{(page + 1) % 500}")}
            if n % 2 == 0:
                event["props"] = {"listing": f"SKU-{page}", "price": 19.9, "in_stock": True}
            events.append(event)
        return json.dumps({"site": SITE_KEY, "visitor_id": visitor_id, "session_id": session_id, "sent_at": now,
                           "events": events}, separators=(",", ":")).encode()


@dataclass
class Reply:
    status: int
    latency: float  # s, request sent → response read
    acked_at: float
    events: int
    accepted: int = 0
    duplicates: int = 0
    retry_after: str | None = None
    error: str | None = None


@dataclass
class Ledger:
    """Every event number sent, acknowledged (202) or refused (503), and a sample of acknowledged batches."""

    sent: set[int] = field(default_factory=set)
    acked: set[int] = field(default_factory=set)
    refused: set[int] = field(default_factory=set)
    acked_batches: list[list[int]] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


class Client:
    def __init__(self, http: aiohttp.ClientSession, base_url: str, traffic: Traffic, ledger: Ledger) -> None:
        self.http = http
        self.url = f"{base_url}/api/v1/events"
        self.headers = {"Origin": base_url, "Content-Type": "text/plain;charset=UTF-8"}
        self.traffic = traffic
        self.ledger = ledger

    async def post(self, numbers: list[int], visitor: int) -> Reply:
        body = self.traffic.body(numbers, visitor)
        self.ledger.sent.update(numbers)
        sent = time.perf_counter()
        try:
            async with self.http.post(self.url, data=body, headers=self.headers,
                                      timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as response:
                payload = await response.read()
                status, retry_after = response.status, response.headers.get("Retry-After")
        except Exception as exc:  # noqa: BLE001 - counted, the run goes on
            now = time.perf_counter()
            self.ledger.statuses["error"] += 1
            if len(self.ledger.errors) < 100:
                self.ledger.errors.append(repr(exc))
            return Reply(0, now - sent, now, len(numbers), error=repr(exc))
        now = time.perf_counter()
        self.ledger.statuses[status] += 1
        reply = Reply(status, now - sent, now, len(numbers), retry_after=retry_after)
        if status == 202:
            data = json.loads(payload)
            reply.accepted, reply.duplicates = data["accepted"], data["duplicates"]
            self.ledger.acked.update(numbers)
            if len(self.ledger.acked_batches) < 20000:
                self.ledger.acked_batches.append(numbers)
        elif status == 503:
            self.ledger.refused.update(numbers)
        elif len(self.ledger.errors) < 100:
            self.ledger.errors.append(f"HTTP {status}: {payload[:200]!r}")
        return reply


# ----------------------------------------------------------------------------------------------------- phases

class FsyncProbe:
    """A thread that writes 4 KiB and fsyncs it every 0.2 s on the database's file system: a disk that stalls shows
    here, in the same window as the server's figures (SQLite fsyncs at every WAL checkpoint)."""

    def __init__(self, directory: Path) -> None:
        import threading

        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._path = directory / "fsync-probe"
        self._thread = threading.Thread(target=self._run, name="fsync-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while not self._stop.wait(0.2):
                os.lseek(fd, 0, os.SEEK_SET)
                started = time.perf_counter()
                os.write(fd, os.urandom(4096))
                os.fsync(fd)
                self.samples.append((time.time(), time.perf_counter() - started))
        finally:
            os.close(fd)

    def window(self, t0: float, t1: float) -> dict[str, float]:
        return summary([took for t, took in self.samples if t0 <= t <= t1])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


PROBE: FsyncProbe | None = None


class Meter:
    """CPU of the Talk process, this process, the other processes on CPU 0 and PostgreSQL over one phase."""

    def __init__(self, server: Child, pin: bool, pg: PgStats | None) -> None:
        self.server, self.pin, self.pg = server, pin, pg

    async def start(self) -> None:
        self.t0, self.wall0 = time.perf_counter(), time.time()
        self.server0, self.client0, self.busy0 = self.server.cpu_seconds(), time.process_time(), cpu_busy(0)
        self.seconds: list[float] = []  # other processes' CPU use in each whole second of the phase
        if self.pg:
            self.pg_pids = await self.pg.server_pids()
            self.pg_cpu0 = {pid: process_cpu(pid) for pid in self.pg_pids}
            self.commits0 = await self.pg.commits()
        self._sampler = asyncio.create_task(self._sample()) if self.pin else None

    async def _sample(self) -> None:
        """Each second: CPU time used on CPUs 0 and 1 by any process other than the server, this load generator
        and (on PostgreSQL) the database's backends, in CPU-seconds per second."""
        def own() -> float:
            pg = sum(process_cpu(pid) for pid in self.pg_pids) if self.pg else 0.0
            return self.server.cpu_seconds() + time.process_time() + pg

        busy, mine, t = cpu_busy(0) + cpu_busy(1), own(), time.perf_counter()
        self.sample_t0 = t
        while True:
            await asyncio.sleep(max(0.0, t + 1 - time.perf_counter()))
            now_busy, now_mine, now = cpu_busy(0) + cpu_busy(1), own(), time.perf_counter()
            self.seconds.append(max(0.0, (now_busy - busy) - (now_mine - mine)) / (now - t))
            busy, mine, t = now_busy, now_mine, now

    def quiet_latencies(self, replies: list[Reply], limit: float = 0.10) -> tuple[dict[str, float], int]:
        """Latency of the acknowledged requests that were sent and answered within seconds in which other
        processes used less than `limit` CPU-seconds per second of CPUs 0 and 1; and how many such seconds."""
        quiet = {i for i, share in enumerate(self.seconds) if share < limit}
        kept = []
        start = getattr(self, "sample_t0", self.t0)
        for r in replies:
            if r.status == 202:
                sent_at = r.acked_at - r.latency
                if sent_at < start:
                    continue
                first, last = int(sent_at - start), int(r.acked_at - start)
                if all(i in quiet for i in range(first, last + 1)):
                    kept.append(r.latency)
        return summary(kept), len(quiet)

    async def stop(self, events: int, elapsed: float, replies: list[Reply] | None = None) -> dict[str, Any]:
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
        server = self.server.cpu_seconds() - self.server0
        result = {"elapsed": elapsed, "server_cpu": server / elapsed,
                  "server_cpu_us_per_event": server * 1e6 / events if events else float("nan"),
                  "client_cpu": (time.process_time() - self.client0) / elapsed,
                  "cpu0_others": max(0.0, cpu_busy(0) - self.busy0 - server) / elapsed if self.pin else None}
        writer = self.server.writer_window(self.wall0, self.wall0 + elapsed)
        if writer:
            result["writer"] = writer
        if PROBE is not None:
            result["fsync"] = PROBE.window(self.wall0, self.wall0 + elapsed)
        if self.pin and replies is not None:
            result["quiet_latency"], result["quiet_seconds"] = self.quiet_latencies(replies)
            result["seconds"] = len(self.seconds)
            result["cpu0_others_per_second"] = [round(x, 3) for x in self.seconds]
        if self.pg:
            pids = set(self.pg_pids) | set(await self.pg.server_pids())
            now = {pid: process_cpu(pid) for pid in pids if os.path.exists(f"/proc/{pid}")}
            pg_cpu = sum(cpu - self.pg_cpu0.get(pid, 0.0) for pid, cpu in now.items())  # ended backends: not counted
            result["pg_cpu"] = pg_cpu / elapsed
            await asyncio.sleep(1.1)  # backends report their commit counts at most once a second
            commits = await self.pg.commits() - self.commits0
            result["pg_commits_per_s"] = commits / elapsed
            result["pg_rows_per_commit"] = events / commits if commits else float("nan")
        return result


def rate_buckets(replies: list[Reply], t0: float, t1: float) -> tuple[float, float]:
    """Lowest and highest events acknowledged in any whole second of [t0, t1)."""
    seconds = int(t1 - t0)
    if seconds < 1:
        return float("nan"), float("nan")
    buckets = [0] * seconds
    for r in replies:
        i = int(r.acked_at - t0)
        if r.status == 202 and 0 <= i < seconds:
            buckets[i] += r.events
    return float(min(buckets)), float(max(buckets))


def phase_result(replies: list[Reply], elapsed: float, t0: float, t1: float) -> dict[str, Any]:
    ok = [r for r in replies if r.status == 202]
    events = sum(r.events for r in ok)
    low, high = rate_buckets(replies, t0, t1)
    per_second: dict[int, list[float]] = {}
    for r in ok:
        per_second.setdefault(int(r.acked_at - r.latency - t0), []).append(r.latency * 1000)
    timeline = [(i, round(pct(v, 99), 1), round(max(v), 1), len(v)) for i, v in sorted(per_second.items())]
    return {"requests": len(replies), "acked_requests": len(ok), "events_acked": events,
            "latency_per_second": timeline,
            "events_per_s": events / elapsed, "latency": summary([r.latency for r in ok]),
            "refused_503": sum(r.status == 503 for r in replies),
            "failed": sum(r.status not in (202, 503) for r in replies),
            "slowest_second_events": low, "fastest_second_events": high}


async def fixed_rate(client: Client, meter: Meter, rate: float, duration: float, visitors: int) -> dict[str, Any]:
    """Open loop: a new batch every batch/rate seconds, each on its own task (connections from the pool)."""
    batches_per_s = rate / client.traffic.batch
    total = int(batches_per_s * duration)
    replies: list[Reply] = []
    lags: list[float] = []
    tasks: list[asyncio.Task] = []
    in_flight, skipped, cap = [0], 0, 5000

    async def one(k: int) -> None:
        in_flight[0] += 1
        try:
            replies.append(await client.post(client.traffic.fresh(), k % visitors))
        finally:
            in_flight[0] -= 1

    await meter.start()
    t0 = time.perf_counter() + 0.05
    for k in range(total):
        target = t0 + k / batches_per_s
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(time.perf_counter() - target)
        if in_flight[0] >= cap:
            skipped += 1
            continue
        tasks.append(asyncio.create_task(one(k)))
    t_end = t0 + total / batches_per_s
    await asyncio.wait_for(asyncio.gather(*tasks), REQUEST_TIMEOUT + 10)
    elapsed = time.perf_counter() - t0
    result = phase_result(replies, elapsed, t0, t_end)
    result.update(await meter.stop(result["events_acked"], elapsed, replies))
    result.update({"offered_events_per_s": rate, "offered_batches": total, "skipped_in_flight_cap": skipped,
                   "max_schedule_lag_ms": max(lags) * 1000 if lags else 0.0})
    return result


async def closed_loop(client: Client, meter: Meter, connections: int, seconds: float) -> dict[str, Any]:
    """`connections` visitors, each posting its next batch as soon as the previous one is answered."""
    replies: list[Reply] = []

    async def visitor(i: int) -> None:
        while time.perf_counter() < stop_at:
            reply = await client.post(client.traffic.fresh(), i)
            replies.append(reply)
            if reply.status != 202:
                await asyncio.sleep(0.05)

    await meter.start()
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    await asyncio.wait_for(asyncio.gather(*(visitor(i) for i in range(connections))), seconds + REQUEST_TIMEOUT + 10)
    elapsed = time.perf_counter() - t0
    result = phase_result(replies, elapsed, t0, stop_at)
    result.update(await meter.stop(result["events_acked"], elapsed, replies))
    result["connections"] = connections
    return result


async def duplicates_phase(client: Client, count: int) -> dict[str, Any]:
    """Resent batches must be stored once and counted as duplicates."""
    traffic, ledger = client.traffic, client.ledger
    sample = ledger.acked_batches[:count]
    sem = asyncio.Semaphore(20)

    async def limited(numbers: list[int], visitor: int) -> Reply:
        async with sem:
            return await client.post(numbers, visitor)

    exact = await asyncio.gather(*(limited(b, i) for i, b in enumerate(sample)))
    half = traffic.batch // 2
    mixed_batches = [b[:half] + traffic.fresh(traffic.batch - half) for b in sample]
    mixed = await asyncio.gather(*(limited(b, i) for i, b in enumerate(mixed_batches)))
    pairs = []
    for i in range(min(count, 100)):
        numbers = traffic.fresh()
        pairs.append(await asyncio.gather(client.post(numbers, i), client.post(numbers, i)))
    exact_ok = sum(r.status == 202 and r.accepted == 0 and r.duplicates == r.events for r in exact)
    mixed_ok = sum(r.status == 202 and r.accepted == traffic.batch - half and r.duplicates == half for r in mixed)
    pair_acked = [p for p in pairs if all(r.status == 202 for r in p)]
    pair_overcounted = sum(sum(r.accepted for r in p) > traffic.batch for p in pair_acked)
    return {"exact_resent": len(exact), "exact_all_duplicates": exact_ok,
            "half_resent": len(mixed), "half_counted_right": mixed_ok,
            "concurrent_pairs": len(pairs), "pairs_acked": len(pair_acked), "pairs_overcounted": pair_overcounted,
            "pair_accepted_sums": Counter(sum(r.accepted for r in p) for p in pair_acked)}


def verify(stored_ids: list[str], traffic: Traffic, ledger: Ledger) -> dict[str, Any]:
    numbers = [traffic.number_of(i) for i in stored_ids]
    ours = {n for n in numbers if n is not None}
    refused_only = ledger.refused - ledger.acked
    return {"rows": len(stored_ids), "distinct_event_ids": len(set(stored_ids)),
            "acked_events": len(ledger.acked), "acked_missing": len(ledger.acked - ours),
            "stored_never_sent": len(ours - ledger.sent) + sum(n is None for n in numbers),
            "sent_not_acked": len(ledger.sent - ledger.acked),
            "sent_not_acked_stored": len((ledger.sent - ledger.acked) & ours),
            "refused_events": len(refused_only), "refused_stored": len(refused_only & ours)}


def stored_ids_sqlite(db_path: Path) -> list[str]:
    with sqlite3.connect(db_path) as con:
        con.execute("PRAGMA busy_timeout=5000")
        return [row[0] for row in con.execute(
            "SELECT event_id FROM events WHERE site_id = (SELECT id FROM sites WHERE key = ?)", (SITE_KEY,))]


async def stored_ids_pg(url: str) -> list[str]:
    import asyncpg
    con = await asyncpg.connect(url)
    try:
        rows = await con.fetch("SELECT e.event_id FROM events e JOIN sites s ON s.id = e.site_id WHERE s.key = $1",
                               SITE_KEY)
        return [r[0] for r in rows]
    finally:
        await con.close()


class PgStats:
    def __init__(self, url: str, database: str) -> None:
        self.url, self.database = url, database
        self.con = None

    async def open(self) -> None:
        import asyncpg
        self.con = await asyncpg.connect(self.url)

    async def server_pids(self) -> list[int]:
        """The backends serving the bench database, and the WAL writer, checkpointer and background writer."""
        rows = await self.con.fetch(
            "SELECT pid FROM pg_stat_activity WHERE (datname = $1 AND pid <> pg_backend_pid()) "
            "OR backend_type IN ('walwriter', 'checkpointer', 'background writer')", self.database)
        return [r[0] for r in rows]

    async def commits(self) -> int:
        return int(await self.con.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = $1",
                                           self.database) or 0)

    async def close(self) -> None:
        if self.con is not None:
            await self.con.close()


async def create_pg_database(admin_url: str, name: str) -> None:
    import asyncpg
    con = await asyncpg.connect(admin_url)
    try:
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()


async def drop_pg_database(admin_url: str, name: str) -> None:
    import asyncpg
    con = await asyncpg.connect(admin_url)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await con.close()


def pg_url_for(admin_url: str, database: str, driver: str = "postgresql") -> str:
    base = admin_url.rsplit("/", 1)[0]
    return f"{base.replace('postgresql', driver, 1)}/{database}"


# ----------------------------------------------------------------------------------------------- one database

async def server_run(args, work: Path, pin: bool, name: str, db_env: dict[str, str], pg: PgStats | None,
                     pg_url: str | None, results: dict) -> None:
    """Start `talk demo` on this database, run the phases, kill it, check the table."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    data_dir = work / f"{name}-data"
    cmd = [sys.executable, "-m", "talk.cli", "demo", "--port", str(port), "--data-dir", str(data_dir)]
    if args.profile:
        cmd[1:3] = ["-m", "cProfile", "-o", str(args.profile.resolve().with_suffix(f".{name}.prof")), "-m", "talk.cli"]
    elif args.trace_writer or args.sqlite_pragma:
        cmd[1:3] = ["-c", WRITER_TRACE]
    extra = {"BENCH_SQLITE_PRAGMAS": ";".join(args.sqlite_pragma)} if args.sqlite_pragma else {}
    env = child_env({**db_env, **dict(args.server_env), **extra})
    server = Child(f"talk ({name})", cmd, work / f"{name}.log", 0 if pin else None, env)
    out: dict[str, Any] = {"command": " ".join(cmd),
                           "env": {k: v for k, v in env.items() if k.startswith(("TALK_", "BENCH_"))}}
    results[name] = out
    traffic = Traffic(args.batch, args.concurrency)
    ledger = Ledger()
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    client = Client(http, base_url, traffic, ledger)
    meter = Meter(server, pin, pg)
    try:
        await server.wait_ready(f"{base_url}/healthz")
        log(f"[{name}] warm-up ...")
        await closed_loop(client, Meter(server, pin, None), min(20, args.concurrency), args.warmup)
        await asyncio.to_thread(os.sync)  # nothing of an earlier phase is left to write back during this one
        await asyncio.sleep(1.0)
        log(f"[{name}] fixed rate: {args.rate:g} events/s in batches of {args.batch} for {args.duration:g} s ...")
        out["fixed_rate"] = await fixed_rate(client, meter, args.rate, args.duration, args.concurrency)
        log(f"[{name}]   {out['fixed_rate']['events_per_s']:.0f} events/s, "
            + fmt_summary(out["fixed_rate"]["latency"]))
        out["saturation"] = []
        for level in args.levels:
            log(f"[{name}] saturation: {level} connections, closed loop, {args.saturation:g} s ...")
            row = await closed_loop(client, meter, level, args.saturation)
            out["saturation"].append(row)
            log(f"[{name}]   {row['events_per_s']:.0f} events/s, Talk CPU {row['server_cpu']:.0%}, "
                f"load gen CPU {row['client_cpu']:.0%}, " + fmt_summary(row["latency"]))
        log(f"[{name}] duplicates ...")
        out["duplicates"] = await duplicates_phase(client, args.replay)
        log(f"[{name}]   {out['duplicates']}")
    finally:
        await http.close()
        server.stop(graceful=bool(args.profile))
    out["server_log_problems"] = [line for line in server.log_text().splitlines()
                                  if " WARNING " in line or " ERROR " in line or "Traceback" in line][:10]
    stored = stored_ids_sqlite(data_dir / "talk.db") if pg_url is None else await stored_ids_pg(pg_url)
    out["verify"] = verify(stored, traffic, ledger)
    out["statuses"] = {str(k): v for k, v in ledger.statuses.items()}
    out["errors"] = ledger.errors[:5]
    log(f"[{name}] after SIGKILL: {out['verify']}")


async def bare_run(args, work: Path, pin: bool, results: dict) -> None:
    """The same closed loop against a bare aiohttp app (same pinning): what HTTP alone costs per request."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = Child("bare aiohttp", [sys.executable, os.path.abspath(__file__), "--serve-bare", str(port)],
                   work / "bare.log", 0 if pin else None, child_env({}))
    traffic = Traffic(args.batch, args.concurrency)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    client = Client(http, base_url, traffic, Ledger())
    try:
        await server.wait_ready(f"{base_url}/healthz")
        await closed_loop(client, Meter(server, pin, None), min(20, args.concurrency), args.warmup / 2)
        log(f"[bare aiohttp] saturation: {args.concurrency} connections, closed loop, {args.bare_seconds:g} s ...")
        row = await closed_loop(client, Meter(server, pin, None), args.concurrency, args.bare_seconds)
        row["server_cpu_us_per_request"] = row["server_cpu_us_per_event"] * args.batch
        results["bare"] = row
        log(f"[bare aiohttp]   {row['events_per_s'] / args.batch:.0f} requests/s, server CPU {row['server_cpu']:.0%}, "
            f"{row['server_cpu_us_per_request']:.0f} µs per request, load gen CPU {row['client_cpu']:.0%}")
    finally:
        await http.close()
        server.stop()


async def backpressure_run(args, work: Path, pin: bool, results: dict) -> None:
    """TALK_INGEST_MAX_PENDING=100 (its minimum) and a burst: 503s with Retry-After, nothing of them stored."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    data_dir = work / "backpressure-data"
    cmd = [sys.executable, "-m", "talk.cli", "demo", "--port", str(port), "--data-dir", str(data_dir)]
    env = child_env({"TALK_INGEST_MAX_PENDING": "100"})
    server = Child("talk (backpressure)", cmd, work / "backpressure.log", 0 if pin else None, env)
    traffic = Traffic(args.batch, args.burst)
    ledger = Ledger()
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    client = Client(http, base_url, traffic, ledger)
    out: dict[str, Any] = {"command": "TALK_INGEST_MAX_PENDING=100 " + " ".join(cmd), "burst": args.burst}
    results["backpressure"] = out
    try:
        await server.wait_ready(f"{base_url}/healthz")
        await client.post(traffic.fresh(), 0)  # warm: the site cache, the first connection to the database
        # Open the connections first so that the burst is the requests themselves, not TCP handshakes.
        async def touch() -> None:
            async with http.get(f"{base_url}/healthz") as response:
                await response.read()
        await asyncio.gather(*(touch() for _ in range(args.burst)))
        batches = [traffic.fresh() for _ in range(args.burst)]
        replies = await asyncio.gather(*(client.post(b, i) for i, b in enumerate(batches)))
        refused = [(b, r) for b, r in zip(batches, replies) if r.status == 503]
        out["accepted"] = sum(r.status == 202 for r in replies)
        out["refused"] = len(refused)
        out["other"] = sum(r.status not in (202, 503) for r in replies)
        out["retry_after_values"] = dict(Counter(r.retry_after for _, r in refused))
        out["burst_latency"] = summary([r.latency for r in replies])
        # Checked while the server still runs: the refused batches were never queued, so nothing can come later.
        stored = set(stored_ids_sqlite(data_dir / "talk.db"))
        refused_ids = {traffic.event_id(n) for b, _ in refused for n in b}
        acked_ids = {traffic.event_id(n) for n in ledger.acked}
        out["refused_stored"] = len(refused_ids & stored)
        out["acked_missing"] = len(acked_ids - stored)
        # Then what the widget does: wait Retry-After, resend with a fresh sent_at (at most 3 attempts).
        pending = [b for b, _ in refused]
        rounds = 0
        while pending and rounds < 3:
            rounds += 1
            await asyncio.sleep(max(float(r.retry_after or 1) for _, r in refused))
            sem = asyncio.Semaphore(10)

            async def resend(b: list[int], i: int) -> tuple[list[int], Reply]:
                async with sem:
                    return b, await client.post(b, i)

            again = await asyncio.gather(*(resend(b, i) for i, b in enumerate(pending)))
            pending = [b for b, r in again if r.status != 202]
        out["resend_rounds"] = rounds
        out["still_refused_after_resends"] = len(pending)
    finally:
        await http.close()
        server.stop()
    out["verify"] = verify(stored_ids_sqlite(data_dir / "talk.db"), traffic, ledger)
    log(f"[backpressure] {out}")


# ---------------------------------------------------------------------------------------------------- baselines

def run_talk_cli(args: list[str], env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "talk.cli", *args], check=True, env=env, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def baseline_rows(batch: int, count: int, site_id: int) -> tuple[list[dict[str, Any]], float]:
    """`count` rows as the server makes them: the same bodies through the product's validation and event_rows.
    Returns the rows and the CPU µs per event that making them took (JSON, pydantic, URL parsing)."""
    from analytics.ingest import IpHasher, event_rows
    from analytics.validation import EventBatch

    traffic = Traffic(batch, 200)
    hasher = IpHasher()
    bodies = [traffic.body(traffic.fresh(), k) for k in range(-(-count // batch))]
    started = time.process_time()
    rows: list[dict[str, Any]] = []
    for body in bodies:
        received_at = datetime.now(timezone.utc)
        parsed = EventBatch.model_validate(json.loads(body))
        rows.extend(event_rows(parsed, site_id, received_at, hasher("127.0.0.1", site_id, received_at)))
    return rows[:count], (time.process_time() - started) * 1e6 / len(rows)


def sqlite_params(rows: list[dict[str, Any]]) -> tuple[list[str], list[tuple]]:
    """Rows as SQLAlchemy binds them on SQLite: naive UTC text for times, JSON text for props."""
    columns = list(rows[0])
    out = []
    for row in rows:
        values = []
        for c in columns:
            v = row[c]
            if c == "ts":
                v = v.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
            elif c == "props":
                v = json.dumps(v)
            values.append(v)
        out.append(tuple(values))
    return columns, out


def timed_chunks(count: int, size: int, seconds: float, insert) -> dict[str, Any]:
    """Call insert(start, stop) chunk after chunk until `count` rows or `seconds` have passed."""
    done, started = 0, time.perf_counter()
    cpu = time.process_time()
    while done < count and time.perf_counter() - started < seconds:
        stop = min(count, done + size)
        insert(done, stop)
        done = stop
    elapsed = time.perf_counter() - started
    return {"rows": done, "seconds": elapsed, "rows_per_s": done / elapsed,
            "cpu_us_per_row": (time.process_time() - cpu) * 1e6 / done}


async def timed_chunks_async(count: int, size: int, seconds: float, insert) -> dict[str, Any]:
    done, started = 0, time.perf_counter()
    cpu = time.process_time()
    while done < count and time.perf_counter() - started < seconds:
        stop = min(count, done + size)
        await insert(done, stop)
        done = stop
    elapsed = time.perf_counter() - started
    return {"rows": done, "seconds": elapsed, "rows_per_s": done / elapsed,
            "cpu_us_per_row": (time.process_time() - cpu) * 1e6 / done}


async def writer_baseline(url: str, rows: list[dict[str, Any]], size: int, batch: int, seconds: float,
                          reset) -> dict[str, Any]:
    """The product's EventWriter on the product's engine (talk.db.create_engine), no HTTP: groups of `size` rows,
    submitted as requests of `batch` rows that all queue before the writer wakes (so each group is one transaction)."""
    from analytics.ingest import EventWriter
    from talk.db import create_engine

    reset()
    engine = create_engine(url)
    writer = EventWriter(engine, max_pending=10**9, linger=0)
    writer.start()
    try:
        await writer.write(rows[:1])  # connect outside the timing (the row is resent in the first group)

        async def insert(start: int, stop: int) -> None:
            results = await asyncio.gather(*(writer.write(rows[i:min(stop, i + batch)])
                                             for i in range(start, stop, batch)))
            assert sum(results) == stop - start - (1 if start == 0 else 0), results

        return await timed_chunks_async(len(rows), size, seconds, insert)
    finally:
        await writer.stop()
        await engine.dispose()


def remove_database(path: Path) -> None:
    """Unlinked before the kernel writes them back (30 s later), its dirty pages cost the later phases no disk time."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def baseline_child(kind: str, target: str, batch: int, count: int, seconds: float) -> dict[str, Any]:
    """Runs in its own process (pinned like the server). kind sqlite: target is a data dir; kind postgresql: an
    asyncpg URL of an empty throwaway database."""
    result: dict[str, Any] = {"kind": kind, "executemany": {}, "event_writer": {}}
    if kind == "sqlite":
        template_dir = Path(target) / "template"
        env = child_env({})
        run_talk_cli(["db", "upgrade", "--data-dir", str(template_dir)], env)
        run_talk_cli(["site", "create", "Bench", "--origin", "http://127.0.0.1", "--key", SITE_KEY,
                      "--data-dir", str(template_dir)], env)
        template = template_dir / "talk.db"
        with sqlite3.connect(template) as con:
            site_id = con.execute("SELECT id FROM sites WHERE key = ?", (SITE_KEY,)).fetchone()[0]
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows, result["prepare_cpu_us_per_event"] = baseline_rows(batch, count, site_id)
        columns, params = sqlite_params(rows)
        sql = (f"INSERT INTO events ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
               "ON CONFLICT (site_id, event_id) DO NOTHING")
        from talk.db import sqlite_pragmas  # the server's own connection set-up: the same pragmas, whatever they are

        result["executemany_normal"] = {}
        for kind, extra in (("executemany", ()), ("executemany_normal", ("PRAGMA synchronous=NORMAL",))):
            for size in BASELINE_TXN_SIZES:
                path = Path(target) / f"raw-{kind}-{size}.db"
                shutil.copy(template, path)
                con = sqlite3.connect(path)
                sqlite_pragmas(con, None)
                for pragma in extra:
                    con.execute(pragma)
                if kind == "executemany":
                    result["pragmas"] = {name: con.execute(f"PRAGMA {name}").fetchone()[0]
                                         for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}

                def insert(start: int, stop: int) -> None:
                    with con:  # one transaction per chunk
                        con.executemany(sql, params[start:stop])

                figures = timed_chunks(len(params), size, seconds, insert)
                figures["stored"] = con.execute("SELECT count(*) FROM events").fetchone()[0]
                con.close()
                result[kind][size] = figures
                remove_database(path)

        for size in BASELINE_TXN_SIZES:
            path = Path(target) / f"writer-{size}.db"

            def reset() -> None:
                shutil.copy(template, path)

            url = f"sqlite+aiosqlite:///{path}"
            result["event_writer"][size] = asyncio.run(writer_baseline(url, rows, size, batch, seconds, reset))
            remove_database(path)
        return result

    import asyncpg
    from talk.models import PageEvent

    env = child_env({"TALK_DATABASE_URL": target})
    with tempfile.TemporaryDirectory(prefix="talk-bench-ingest-") as data_dir:  # the CLI wants one; unused
        run_talk_cli(["db", "upgrade", "--data-dir", data_dir], env)
        run_talk_cli(["site", "create", "Bench", "--origin", "http://127.0.0.1", "--key", SITE_KEY,
                      "--data-dir", data_dir], env)
    plain_url = target.replace("postgresql+asyncpg", "postgresql", 1)

    async def run_pg() -> None:
        con = await asyncpg.connect(plain_url)
        site_id = await con.fetchval("SELECT id FROM sites WHERE key = $1", SITE_KEY)
        rows, result["prepare_cpu_us_per_event"] = baseline_rows(batch, count, site_id)
        columns = list(rows[0])
        json_columns = {c.name for c in PageEvent.__table__.columns if c.type.__class__.__name__ == "JSON"}
        params = [tuple(json.dumps(r[c]) if c in json_columns else r[c] for c in columns) for r in rows]
        placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        sql = (f"INSERT INTO events ({', '.join(columns)}) VALUES ({placeholders}) "
               "ON CONFLICT (site_id, event_id) DO NOTHING")
        for size in BASELINE_TXN_SIZES:
            await con.execute("TRUNCATE events")

            async def insert(start: int, stop: int) -> None:
                async with con.transaction():
                    await con.executemany(sql, params[start:stop])

            figures = await timed_chunks_async(len(params), size, seconds, insert)
            figures["stored"] = await con.fetchval("SELECT count(*) FROM events")
            result["executemany"][size] = figures
        await con.close()
        for size in BASELINE_TXN_SIZES:
            async def truncate() -> None:
                c = await asyncpg.connect(plain_url)
                await c.execute("TRUNCATE events")
                await c.close()

            await truncate()
            result["event_writer"][size] = await writer_baseline(target, rows, size, batch, seconds, lambda: None)

    asyncio.run(run_pg())
    return result


def run_baseline(kind: str, target: str, args, pin: bool, work: Path) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--baseline-child", kind, target, "--batch", str(args.batch),
           "--baseline-rows", str(args.baseline_rows), "--baseline-seconds", str(args.baseline_seconds)]
    if pin:
        cmd = ["taskset", "-c", "0", *cmd]
    busy0, t0 = cpu_busy(0), time.perf_counter()
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=child_env({}), cwd=ROOT,
                          preexec_fn=_die_with_parent)
    if done.returncode != 0:
        raise RuntimeError(f"baseline ({kind}) failed:\n{done.stderr[-3000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime  # the child and its talk CLI runs
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["command"] = " ".join(cmd)
    result["cpu0_others"] = max(0.0, cpu_busy(0) - busy0 - own) / (time.perf_counter() - t0) if pin else None
    return result


# ------------------------------------------------------------------------------------------------------- main

async def run(args, work: Path, pin: bool, results: dict) -> None:
    global PROBE
    PROBE = FsyncProbe(work)
    try:
        await run_all(args, work, pin, results)
    finally:
        PROBE.close()
        results["fsync_whole_run"] = summary([took for _, took in PROBE.samples])


async def run_all(args, work: Path, pin: bool, results: dict) -> None:
    if not args.skip_baselines:
        log(f"baseline: sqlite3 executemany and EventWriter, {args.baseline_rows} rows, {BASELINE_TXN_SIZES} rows "
            "per transaction ...")
        results["baseline_sqlite"] = await asyncio.to_thread(run_baseline, "sqlite", str(work / "baseline"), args,
                                                             pin, work)
        for size, r in results["baseline_sqlite"]["executemany"].items():
            log(f"  executemany {size} rows/txn: {r['rows_per_s']:.0f} rows/s; EventWriter: "
                f"{results['baseline_sqlite']['event_writer'][size]['rows_per_s']:.0f} rows/s")
        await bare_run(args, work, pin, results)
    await server_run(args, work, pin, "sqlite", {}, None, None, results)
    if not args.skip_backpressure:
        await backpressure_run(args, work, pin, results)
    if args.skip_postgres:
        return
    tag = secrets.token_hex(4)
    names = [f"bench_ingest_{tag}", f"bench_ingest_{tag}_base"]
    pg: PgStats | None = None
    try:
        for name in names:
            await create_pg_database(args.pg_url, name)
        if not args.skip_baselines:
            log("baseline: asyncpg executemany and EventWriter on PostgreSQL ...")
            results["baseline_postgresql"] = await asyncio.to_thread(
                run_baseline, "postgresql", pg_url_for(args.pg_url, names[1], "postgresql+asyncpg"), args, pin, work)
            for size, r in results["baseline_postgresql"]["executemany"].items():
                log(f"  executemany {size} rows/txn: {r['rows_per_s']:.0f} rows/s; EventWriter: "
                    f"{results['baseline_postgresql']['event_writer'][size]['rows_per_s']:.0f} rows/s")
        pg = PgStats(args.pg_url, names[0])
        await pg.open()
        results["pg_settings"] = {k: await pg.con.fetchval(f"SHOW {k}") for k in
                                  ("server_version", "synchronous_commit", "fsync", "shared_buffers")}
        await server_run(args, work, pin, "postgresql",
                         {"TALK_DATABASE_URL": pg_url_for(args.pg_url, names[0], "postgresql+asyncpg")}, pg,
                         pg_url_for(args.pg_url, names[0]), results)
    finally:
        if pg is not None:
            await pg.close()
        for name in names:
            try:
                await drop_pg_database(args.pg_url, name)
            except Exception as exc:  # noqa: BLE001
                log(f"could not drop {name}: {exc!r}")


# ----------------------------------------------------------------------------------------------------- report

def markdown(args, results: dict) -> str:
    out = []
    base = results.get("baseline_sqlite")
    big = max(BASELINE_TXN_SIZES)

    def rate_of(b: dict, kind: str, size: int) -> float:
        return b[kind][str(size)]["rows_per_s"] if str(size) in b[kind] else b[kind][size]["rows_per_s"]

    raw_sqlite = rate_of(base, "executemany", big) if base else float("nan")
    for name in ("sqlite", "postgresql"):
        if name not in results:
            continue
        r = results[name]
        title = "SQLite (the `talk demo` default)" if name == "sqlite" else \
            f"PostgreSQL {results.get('pg_settings', {}).get('server_version', '')}".strip()
        out.append(f"### {title}\n")
        out.append("| phase | events/s acked | requests | p50 ms | p95 ms | p99 ms | max ms | slowest 1 s | Talk CPU "
                   "| Talk CPU µs/event | load gen CPU | other procs CPU 0 | quiet s | p99 ms in quiet s "
                   "| probe fsync p50 / max ms |"
                   + (" postgres CPU | rows/commit |" if name == "postgresql" else ""))
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
                   "| ---: |"
                   + (" ---: | ---: |" if name == "postgresql" else ""))
        phases = [(f"fixed rate {args.rate:g} events/s ({args.rate / args.batch:g} batches/s of {args.batch})",
                   r["fixed_rate"])]
        phases += [(f"saturation, {row['connections']} connections", row) for row in r["saturation"]]
        for label, p in phases:
            lat = p["latency"]
            others = f"{p['cpu0_others']:.0%}" if p.get("cpu0_others") is not None else "–"
            line = (f"| {label} | {p['events_per_s']:,.0f} | {p['requests']:,} | {lat['p50']:.1f} | {lat['p95']:.1f} | "
                    f"{lat['p99']:.1f} | {lat['max']:.1f} | {p['slowest_second_events']:,.0f} | {p['server_cpu']:.0%} | "
                    f"{p['server_cpu_us_per_event']:.0f} | {p['client_cpu']:.0%} | {others} | "
                    + (f"{p['quiet_seconds']}/{p['seconds']} | {p['quiet_latency']['p99']:.1f} "
                       f"(n={p['quiet_latency']['count']}) | " if "quiet_seconds" in p else "– | – | ")
                    + f"{p['fsync']['p50']:.1f} / {p['fsync']['max']:.0f} |")
            if name == "postgresql":
                line += f" {p['pg_cpu']:.0%} | {p['pg_rows_per_commit']:.0f} |"
            out.append(line)
        out.append("")
        fr = r["fixed_rate"]
        best = max(r["saturation"], key=lambda p: p["events_per_s"])
        notes = [f"Fixed rate: {fr['offered_batches']:,} batches offered, {fr['acked_requests']:,} acknowledged, "
                 f"{fr['refused_503']} refused, {fr['failed']} failed; load generator's worst schedule lag "
                 f"{fr['max_schedule_lag_ms']:.1f} ms."]
        writer_rows = [(label, p["writer"]) for label, p in phases if "writer" in p]
        if writer_rows:
            notes.append("Writer (`--trace-writer`): " + "; ".join(
                f"{label}: {w['groups_per_s']:.0f} transactions/s of {w['rows_per_group']:.0f} rows, "
                f"{w['ms_per_group']:.1f} ms each (slowest {w['slowest_group_ms']:.0f} ms), writing {w['busy']:.0%} "
                f"of the time; {w['gc2']:.0f} full GCs (longest {w['gc2_max_ms']:.0f} ms); "
                f"{w['site_loads']:.0f} site reloads (SiteCache)"
                for label, w in writer_rows) + ".")
        notes.append(f"Saturation: **{best['events_per_s']:,.0f} events/s** with {best['connections']} connections, "
                     f"{best['events_per_s'] / raw_sqlite:.2f}× the raw sqlite3 `executemany` baseline "
                     f"({raw_sqlite:,.0f} rows/s at {big} rows per transaction)"
                     + (f", {best['events_per_s'] / rate_of(results['baseline_postgresql'], 'executemany', big):.2f}× "
                        f"asyncpg `executemany` ({rate_of(results['baseline_postgresql'], 'executemany', big):,.0f} rows/s)"
                        if name == "postgresql" and "baseline_postgresql" in results else "") + ".")
        v = r["verify"]
        d = r["duplicates"]
        notes.append(f"After SIGKILL of the server: {v['rows']:,} rows, {v['distinct_event_ids']:,} distinct event ids; "
                     f"{v['acked_events']:,} events acknowledged, **{v['acked_missing']} missing**; "
                     f"{v['stored_never_sent']} stored that were never sent; {v['sent_not_acked']} sent without an "
                     f"acknowledgement ({v['sent_not_acked_stored']} of them stored).")
        notes.append(f"Duplicates: {d['exact_all_duplicates']}/{d['exact_resent']} resent batches answered "
                     f"`accepted: 0`; {d['half_counted_right']}/{d['half_resent']} half-resent batches counted right; "
                     f"{d['concurrent_pairs']} identical batches sent twice at once: stored once each, "
                     f"{d['pairs_overcounted']} pairs reported more than {args.batch} accepted in total "
                     f"(accepted sums: {dict(d['pair_accepted_sums'])}).")
        if name == "sqlite":
            fr_ok = fr["latency"]["p99"] <= 50 and fr["events_per_s"] >= 0.98 * args.rate
            sat_ok = best["events_per_s"] >= 5000
            met = fr_ok and sat_ok and v["acked_missing"] == 0 and fr["failed"] == 0
            notes.append(f"Target (≥ 5,000 events/s on SQLite, p99 ≤ 50 ms at 5,000 events/s, no acknowledged event "
                         f"missing): **{'met' if met else 'NOT met'}**"
                         + ("" if args.rate == 5000 and args.batch == 10 else " (with non-default --rate/--batch)") + ".")
        if r.get("server_log_problems"):
            notes.append(f"Server log: {r['server_log_problems'][:3]}")
        if r.get("errors"):
            notes.append(f"Client errors: {r['errors'][:3]}")
        out.extend(f"- {n}" for n in notes)
        out.append("")

    if "backpressure" in results:
        b = results["backpressure"]
        v = b["verify"]
        out.append("### Backpressure (SQLite, `TALK_INGEST_MAX_PENDING=100`)\n")
        out.append(f"- A burst of {b['burst']} batches of {args.batch} at once on open connections: {b['accepted']} "
                   f"acknowledged, **{b['refused']} refused with 503** (Retry-After: {b['retry_after_values']}), "
                   f"{b['other']} other; burst latency p50 {b['burst_latency']['p50']:.1f} ms, max "
                   f"{b['burst_latency']['max']:.1f} ms.")
        out.append(f"- Right after the burst: **{b['refused_stored']} events of refused batches stored**, "
                   f"{b['acked_missing']} acknowledged events missing.")
        out.append(f"- Refused batches resent after Retry-After, 10 at a time: {b['still_refused_after_resends']} "
                   f"still refused after {b['resend_rounds']} round(s). After SIGKILL: {v['rows']} rows, "
                   f"{v['acked_missing']} acknowledged missing, {v['stored_never_sent']} never sent.\n")

    if base is None:
        return "\n".join(out)
    out.append("### Baselines in the same run (child process pinned to CPU 0, fresh database from `talk db upgrade`)\n")
    out.append("| path | rows per transaction | rows/s | CPU µs/row |")
    out.append("| --- | ---: | ---: | ---: |")
    for key, label in (("baseline_sqlite", "SQLite"), ("baseline_postgresql", "PostgreSQL")):
        if key not in results:
            continue
        b = results[key]
        raw_name = "sqlite3" if key == "baseline_sqlite" else "asyncpg"
        pragmas = b.get("pragmas")
        same = (" (the server's pragmas: " + ", ".join(f"{k}={v}" for k, v in pragmas.items()) + ")") if pragmas else ""
        for kind, what in (("executemany", f"{label}: raw {raw_name} `executemany`{same}"),
                           ("executemany_normal", f"{label}: raw {raw_name} `executemany`, but `synchronous=NORMAL`"),
                           ("event_writer", f"{label}: EventWriter, no HTTP (SQLAlchemy, RETURNING)")):
            for size, f in b.get(kind, {}).items():
                out.append(f"| {what} | {size} | {f['rows_per_s']:,.0f} | {f['cpu_us_per_row']:.0f} |")
    if "bare" in results:
        b = results["bare"]
        out.append(f"| bare aiohttp app, same requests, no database (HTTP floor, {b['connections']} connections) | – | "
                   f"{b['events_per_s']:,.0f} | {b['server_cpu_us_per_event']:.0f} |")
    out.append("")
    out.append(f"- Validation and row building (JSON, pydantic, URL parsing; `event_rows`): "
               f"{base['prepare_cpu_us_per_event']:.0f} µs CPU per event.")
    if "bare" in results:
        b = results["bare"]
        talk = max(results["sqlite"]["saturation"], key=lambda p: p["events_per_s"])
        out.append(f"- CPU per request of {args.batch} events at saturation: Talk on SQLite "
                   f"{talk['server_cpu_us_per_event'] * args.batch:,.0f} µs, bare aiohttp "
                   f"{b['server_cpu_us_per_request']:,.0f} µs ({b['events_per_s'] / args.batch:,.0f} requests/s at "
                   f"{b['server_cpu']:.0%} CPU; load generator {b['client_cpu']:.0%}).")
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=5000.0, help="fixed offered rate, events/s (default 5000)")
    p.add_argument("--batch", type=int, default=10, help="page views per request (default 10, at most 50)")
    p.add_argument("--concurrency", type=int, default=200,
                   help="closed-loop connections at saturation (default 200; a tenth of it is measured too)")
    p.add_argument("--duration", type=float, default=15.0, help="seconds at the fixed rate (default 15)")
    p.add_argument("--saturation", type=float, default=10.0, help="seconds per saturation level (default 10)")
    p.add_argument("--skip-postgres", action="store_true", help="SQLite only")
    p.add_argument("--skip-backpressure", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--skip-baselines", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--pg-url", default=PG_ADMIN_URL,
                   help=f"PostgreSQL to create the throwaway databases on (default {PG_ADMIN_URL})")
    p.add_argument("--burst", type=int, default=300, help="backpressure: batches sent at once (default 300)")
    p.add_argument("--replay", type=int, default=200, help="acknowledged batches resent (default 200)")
    p.add_argument("--baseline-rows", type=int, default=100_000, help="rows per baseline variant (default 100000)")
    p.add_argument("--baseline-seconds", type=float, default=4.0, help="at most this long per baseline variant")
    p.add_argument("--pin", action="store_true", help="server and baselines on CPU 0 (taskset), load generator on CPU 1")
    p.add_argument("--quick", action="store_true", help="~2 minute smoke run")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs, SQLite files)")
    p.add_argument("--trace-writer", action="store_true",
                   help="run `talk demo` through a wrapper that counts the EventWriter's transactions (diagnosis)")
    p.add_argument("--profile", type=Path, help="run the server under cProfile, stats to PATH.<db>.prof (diagnosis)")
    p.add_argument("--sqlite-pragma", action="append", default=[], metavar="NAME=VALUE",
                   help="an extra PRAGMA on the server's SQLite connections, e.g. synchronous=FULL or "
                        "wal_autocheckpoint=0 (diagnosis; repeatable; implies the --trace-writer wrapper)")
    p.add_argument("--server-env", action="append", default=[], metavar="TALK_X=VALUE",
                   type=lambda s: tuple(s.split("=", 1)),
                   help="extra environment for the Talk server, e.g. TALK_INGEST_LINGER_MS=0 (diagnosis; repeatable)")
    p.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--baseline-child", nargs=2, metavar=("KIND", "TARGET"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.warmup, args.bare_seconds = 2.0, 5.0
    if args.quick:
        args.duration, args.saturation, args.warmup, args.bare_seconds = 4.0, 3.0, 1.0, 2.0
        args.replay, args.burst, args.baseline_rows, args.baseline_seconds = 50, 200, 20_000, 1.5
    args.levels = sorted({max(1, args.concurrency // 10), args.concurrency})
    if not (1 <= args.batch <= 50):
        p.error("--batch: 1 to 50 (the endpoint's limit)")
    if not (0 < args.rate <= 100_000 and 0 < args.duration <= 120 and 0 < args.saturation <= 120
            and 1 <= args.concurrency <= 2000 and 1 <= args.burst <= 5000 and 0 <= args.replay <= 5000
            and 1000 <= args.baseline_rows <= 2_000_000 and 0 < args.baseline_seconds <= 30):
        p.error("bounded: --rate ≤ 100000, --duration and --saturation ≤ 120 s, --concurrency ≤ 2000, --burst ≤ 5000, "
                "--replay ≤ 5000, --baseline-rows 1000–2000000, --baseline-seconds ≤ 30")
    for key, _ in args.server_env:
        if not key.startswith("TALK_"):
            p.error("--server-env takes TALK_* variables only")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    if args.baseline_child:
        kind, target = args.baseline_child
        result = baseline_child(kind, target, args.batch, args.baseline_rows, args.baseline_seconds)
        print(json.dumps(result, default=str))
        return
    pin = args.pin and len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset") is not None
    if args.pin and not pin:
        log("--pin ignored: needs taskset and at least 2 CPUs")
    raise_nofile(4 * (args.concurrency + args.burst) + 512)
    if pin:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[1]})
    work = Path(tempfile.mkdtemp(prefix="talk-bench-ingest-"))
    try:
        revision = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                                  text=True, timeout=10).stdout.strip() or "?"
    except OSError:
        revision = "?"
    results: dict[str, Any] = {"machine": f"{os.cpu_count()} CPUs ({platform.machine()}), Python "
                                          f"{platform.python_version()}, aiohttp {aiohttp.__version__}, "
                                          f"SQLite {sqlite3.sqlite_version}, Talk {revision}",
                               "pinned": pin, "args": {k: v for k, v in vars(args).items()},
                               "load_before": os.getloadavg()}
    try:
        asyncio.run(asyncio.wait_for(run(args, work, pin, results), HARD_DEADLINE))
    finally:
        if args.keep:
            log(f"data and logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["load_after"] = os.getloadavg()
    print(f"Machine: {results['machine']}; pinned: {pin} (server and baselines on CPU 0, load generator on CPU 1); "
          f"load average {results['load_before'][0]:.2f} before, {results['load_after'][0]:.2f} after\n")
    options = [f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
               if k in ("rate", "batch", "concurrency", "duration", "saturation", "burst", "replay", "baseline_rows")]
    diagnosis = (["--trace-writer"] if args.trace_writer else []) + \
        [f"--sqlite-pragma {p}" for p in args.sqlite_pragma] + [f"--server-env {k}={v}" for k, v in args.server_env]
    print(f"Options: {' '.join(options)}" + (f"; diagnosis: {' '.join(diagnosis)}" if diagnosis else "") + "\n")
    print(markdown(args, results), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
