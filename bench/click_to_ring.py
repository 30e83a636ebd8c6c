#!/usr/bin/env python3
"""Click-to-ring latency benchmark (issue "walking skeleton").

Runs `talk demo` in a child process and drives it over real WebSockets from this process:

1. idle connections: RSS of the server process before/after opening --idle caller connections (hello done);
   they stay open for the rest of the Talk phases;
2. click-to-ring at a fixed offered rate: --rate calls/s for --duration s, from the caller's `call.start` to the
   agent's `call.incoming` for that call id (one process, one clock: time.perf_counter);
3. Talk `ping` round trip at the same rate (the server's per-message floor);
4. saturation: closed loop with 1, 2, 4, ... concurrent callers, agents answer and hang up at once;
   calls set up per second;
5. baseline in the same run: a bare aiohttp WebSocket echo server in its own process (same pinning), its idle
   connection cost and the round trip of a small JSON message at the same rate.

Traffic goes to 127.0.0.1 only; every phase is bounded in count and time; the child processes die with this one.

    python bench/click_to_ring.py --pin              # full run, a few minutes
    python bench/click_to_ring.py --pin --quick      # ~20 s smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import functools
import gc
import itertools
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import aiohttp

CSRF_RE = re.compile(r'name="csrf_token"\s+value="([^"]+)"')
SITE_KEY = "demo-shop"
QUEUE = "support"
AGENT_PASSWORD = "bench-password"
# --gc-log: run `talk demo` through this wrapper, which prints every full (generation 2) collection's pause.
GC_WRAPPER = """
import gc, sys, time
_start = [0.0]
def _gc(phase, info):
    if phase == "start":
        _start[0] = time.perf_counter()
    elif info["generation"] == 2:
        pause = (time.perf_counter() - _start[0]) * 1000
        print(f"BENCH-GC2 {time.time():.3f} {pause:.1f}", file=sys.stderr, flush=True)
gc.callbacks.append(_gc)
from talk.cli import main
main(sys.argv[1:])
"""
HARD_DEADLINE = 900  # seconds: the whole run stops by itself after this, whatever happens


# ----------------------------------------------------------------------------------------------- echo server mode

def serve_echo(port: int) -> None:
    """The baseline: a bare aiohttp WebSocket server that sends every text frame back."""
    from aiohttp import web

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for frame in ws:
            if frame.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(frame.data)
        return ws

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ws", echo)
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


# ------------------------------------------------------------------------------------------------- processes

def _die_with_parent() -> None:
    """preexec_fn: SIGTERM when this process dies, and a file limit high enough for the idle connections."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(want, 65536)), hard))


def raise_nofile(needed: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def cpu_times(cpu: int) -> tuple[int, int]:
    """(steal, total) jiffies of one CPU from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                values = [int(v) for v in line.split()[1:]]
                return values[7] if len(values) > 7 else 0, sum(values[:8])
    return 0, 0


def cpu_busy(cpu: int) -> float:
    """Seconds one CPU has been busy (not idle or iowait), from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                values = [int(v) for v in line.split()[1:]]
                return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def steal_since(cpu: int, start: tuple[int, int]) -> float:
    steal, total = cpu_times(cpu)
    return (steal - start[0]) / max(1, total - start[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Child:
    """A server process (Talk or echo), optionally pinned with taskset, logging to a file."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, pin_cpu: int | None) -> None:
        if pin_cpu is not None:
            cmd = ["taskset", "-c", str(pin_cpu), *cmd]
        self.name = name
        self.cmd = cmd
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        self.pid = self.proc.pid  # taskset execs the program: same pid

    async def wait_ready(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}:\n"
                                       + self.log_tail())
                try:
                    async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def nofile_limit(self) -> str:
        try:
            with open(f"/proc/{self.pid}/limits") as f:
                for line in f:
                    if line.startswith("Max open files"):
                        return " ".join(line.split()[3:5])
        except OSError:
            pass
        return "?"

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # aiohttp's graceful shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


# ------------------------------------------------------------------------------------------------ the database

def prepare_talk_database(data_dir: Path, origin: str, n_agents: int) -> list[str]:
    """Before the server starts: the demo site and queue plus n agent accounts in the support queue.

    Uses talk.directory against the data dir's database (what `talk account create` does, without a process and an
    argon2 hash per account: the one hash of the shared bench password is computed once and reused).
    """
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from talk import directory
    from talk.db import create_engine, upgrade_schema
    from talk.settings import Settings
    from talk.types import Role

    url = Settings(data_dir=data_dir).resolved_database_url
    data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_schema(url)
    emails = [f"bench-agent-{i:03d}@bench.test" for i in range(1, n_agents + 1)]

    async def seed() -> None:
        engine = create_engine(url)
        original = directory.hash_password
        directory.hash_password = functools.lru_cache(maxsize=4)(original)
        try:
            async with async_sessionmaker(engine, expire_on_commit=False)() as db, db.begin():
                await directory.create_site(db, "Demo Shop", [origin], key=SITE_KEY)
                await directory.create_queue(db, SITE_KEY, QUEUE, "Support")
                for i, email in enumerate(emails, start=1):
                    await directory.create_account(db, email, f"Bench Agent {i}", AGENT_PASSWORD, Role.AGENT)
                    await directory.add_queue_member(db, SITE_KEY, QUEUE, email)
        finally:
            directory.hash_password = original
            await engine.dispose()

    asyncio.run(seed())
    return emails


# ------------------------------------------------------------------------------------------------- WebSocket peers

class Conn:
    """One WebSocket: numbered requests whose replies are matched by id (Talk's `result`, or the echo itself);
    every other frame goes to on_event(receive_time, message)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, on_event: Callable[[float, dict], None] | None = None):
        self.ws = ws
        self.on_event = on_event
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    continue
                now = time.perf_counter()
                message = json.loads(frame.data)
                future = self._pending.pop(message.get("id"), None) if "id" in message else None
                if future is not None:
                    if not future.done():
                        future.set_result((now, message))
                elif self.on_event is not None:
                    self.on_event(now, message)
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"socket closed ({self.ws.close_code})"))
            self._pending.clear()

    async def send(self, type_: str, **fields: Any) -> tuple[float, asyncio.Future]:
        """Send now; returns (send time, future of (receive time, reply))."""
        msg_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        data = json.dumps({"id": msg_id, "type": type_, **fields})
        sent = time.perf_counter()
        await self.ws.send_str(data)
        return sent, future

    async def call(self, type_: str, timeout: float = 10, **fields: Any) -> dict[str, Any]:
        _, future = await self.send(type_, **fields)
        _, reply = await asyncio.wait_for(future, timeout)
        if not reply.get("success", True):
            raise RuntimeError(f"{type_} failed: {reply.get('error')}")
        return reply.get("result", reply)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.reader, return_exceptions=True)


@dataclass
class Stats:
    """Everything measured on calls, keyed by call id and joined afterwards."""

    sent: dict[str, float] = field(default_factory=dict)  # caller sent call.start
    result: dict[str, float] = field(default_factory=dict)  # caller got the call.start result
    ringing: dict[str, float] = field(default_factory=dict)  # caller got call.ringing
    incoming: dict[str, float] = field(default_factory=dict)  # agent got call.incoming
    errors: list[str] = field(default_factory=list)
    no_agent: int = 0

    def error(self, text: str) -> None:
        if len(self.errors) < 1000:
            self.errors.append(text)


@dataclass
class AgentBehaviour:
    answer_delay: float = 0.2  # the console rings this long before the agent answers
    hold: float = 1.0  # then they talk this long and hang up


async def login(http: aiohttp.ClientSession, base_url: str, email: str) -> None:
    """The console's login form: GET /login for the CSRF token, POST the form; the cookie jar keeps the session."""
    async with http.get(f"{base_url}/login") as response:
        page = await response.text()
    match = CSRF_RE.search(page)
    if not match:
        raise RuntimeError("login page has no csrf_token")
    form = {"email": email, "password": AGENT_PASSWORD, "csrf_token": match.group(1), "next": "/console"}
    async with http.post(f"{base_url}/login", data=form, allow_redirects=False) as response:
        if response.status != 302:
            raise RuntimeError(f"login of {email} failed: {response.status}")


class Agent:
    def __init__(self, email: str, stats: Stats, behaviour: AgentBehaviour) -> None:
        self.email = email
        self.stats = stats
        self.behaviour = behaviour
        self.http: aiohttp.ClientSession | None = None
        self.conn: Conn | None = None
        self.tasks: set[asyncio.Task] = set()

    async def start(self, base_url: str) -> None:
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        await login(self.http, base_url, self.email)
        ws = await self.http.ws_connect(base_url.replace("http", "ws", 1) + "/ws/v1", origin=base_url)
        self.conn = Conn(ws, self.on_event)
        await self.conn.call("hello")
        result = await self.conn.call("agent.available", available=True)
        if not result.get("available"):
            raise RuntimeError(f"{self.email} could not go available")

    def on_event(self, now: float, message: dict) -> None:
        kind = message.get("type")
        if kind == "call.incoming":
            self.stats.incoming[message["call_id"]] = now
            task = asyncio.create_task(self.take(message["call_id"]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif kind in ("agent.status", "session.replaced", "call.ring_stopped"):
            self.stats.error(f"{self.email}: {message}")

    async def take(self, call_id: str) -> None:
        try:
            if self.behaviour.answer_delay > 0:
                await asyncio.sleep(self.behaviour.answer_delay)
            await self.conn.call("call.answer", call_id=call_id)
            if self.behaviour.hold > 0:
                await asyncio.sleep(self.behaviour.hold)
            await self.conn.call("call.hangup", call_id=call_id)
        except Exception as exc:  # noqa: BLE001 - counted, the run goes on
            self.stats.error(f"{self.email} {call_id}: {exc!r}")

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        if self.http is not None:
            await self.http.close()


class Caller:
    def __init__(self, conn_factory, stats: Stats) -> None:
        self._factory = conn_factory
        self.stats = stats
        self.conn: Conn | None = None
        self._ended: asyncio.Future | None = None

    async def start(self) -> None:
        self.conn = await self._factory(self.on_event)
        await self.conn.call("hello")

    def on_event(self, now: float, message: dict) -> None:
        kind = message.get("type")
        if kind == "call.ringing":
            self.stats.ringing[message["call_id"]] = now
        elif kind == "call.ended":
            if self._ended is not None and not self._ended.done():
                self._ended.set_result(message)

    async def place_call(self, n: int, timeout: float) -> str | None:
        """call.start, then wait for call.ended (the agent hangs up). Returns the call id."""
        self._ended = asyncio.get_running_loop().create_future()
        page = {"url": f"http://127.0.0.1/bench/product/{n}", "title": "Bench product", "referrer": ""}
        try:
            sent, future = await self.conn.send("call.start", queue=QUEUE, page=page)
            received, reply = await asyncio.wait_for(future, timeout)
            if not reply.get("success"):
                self.stats.error(f"call.start: {reply.get('error')}")
                return None
            call_id = reply["result"]["call_id"]
            self.stats.sent[call_id] = sent
            self.stats.result[call_id] = received
            if reply["result"]["state"] == "ended":
                self.stats.no_agent += 1
            await asyncio.wait_for(self._ended, timeout)
            return call_id
        except Exception as exc:  # noqa: BLE001
            self.stats.error(f"caller: {exc!r}")
            return None
        finally:
            self._ended = None


async def open_many(factory, count: int, concurrency: int = 100) -> list:
    sem = asyncio.Semaphore(concurrency)

    async def one():
        async with sem:
            return await factory()

    return await asyncio.gather(*(one() for _ in range(count)))


# ----------------------------------------------------------------------------------------------------- phases

async def idle_phase(child: Child, factory, count: int, settle: float) -> tuple[dict, list]:
    """Server RSS before and after opening `count` connections (each has done its first round trip)."""
    gc.collect()
    await asyncio.sleep(settle / 2)
    before = child.rss_kib()
    started = time.perf_counter()
    conns = await open_many(factory, count)
    opened_in = time.perf_counter() - started
    await asyncio.sleep(settle)
    after = child.rss_kib()
    return {"connections": count, "rss_before_kib": before, "rss_after_kib": after,
            "kib_per_connection": (after - before) / count if count else float("nan"),
            "open_seconds": opened_in}, conns


def join(stats: Stats, call_ids: list[str]) -> dict[str, Any]:
    ring, result, ringing, missing = [], [], [], 0
    for cid in call_ids:
        sent = stats.sent[cid]
        if cid in stats.incoming:
            ring.append(stats.incoming[cid] - sent)
        else:
            missing += 1
        result.append(stats.result[cid] - sent)
        if cid in stats.ringing:
            ringing.append(stats.ringing[cid] - sent)
    return {"click_to_ring": summary(ring), "start_result": summary(result), "caller_ringing": summary(ringing),
            "never_rang": missing}


async def round_trip(conn: Conn, sink: list[float], failures: list[str]) -> None:
    try:
        sent, future = await conn.send("ping")
        received, _ = await asyncio.wait_for(future, 10)
        sink.append(received - sent)
    except Exception as exc:  # noqa: BLE001
        failures.append(repr(exc))


async def interleaved(callers: list[Caller], stats: Stats, rate: float, duration: float, call_timeout: float,
                      talk_conns: list[Conn], echo_conns: list[Conn], *, child: Child | None = None,
                      alongside=None) -> dict:
    """Open loop, three streams at `rate` each, interleaved so that they share the machine's noise:
    a call.start on a free caller at n/rate, a Talk `ping` at (n+1/3)/rate, an echo round trip at (n+2/3)/rate."""
    free = deque(callers)
    total = int(rate * duration)
    call_ids: list[str] = []
    talk_rtt: list[float] = []
    echo_rtt: list[float] = []
    failures: list[str] = []
    lags: list[float] = []
    skipped = 0
    tasks: list[asyncio.Task] = []

    async def one_call(caller: Caller, n: int) -> None:
        call_id = await caller.place_call(n, call_timeout)
        if call_id:
            call_ids.append(call_id)
        free.append(caller)

    schedule = []
    for n in range(total):
        schedule.append((n / rate, "call", n))
        if talk_conns:
            schedule.append(((n + 1 / 3) / rate, "talk", n))
        if echo_conns:
            schedule.append(((n + 2 / 3) / rate, "echo", n))

    cpu = (child.cpu_seconds() if child else 0.0), time.process_time()
    steal = cpu_times(0), cpu_times(1)
    busy0 = cpu_busy(0)
    no_agent = stats.no_agent
    side = asyncio.create_task(alongside()) if alongside else None
    t0 = time.perf_counter() + 0.05
    for offset, kind, n in schedule:
        target = t0 + offset
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(time.perf_counter() - target)
        if kind == "call":
            if not free:
                skipped += 1
                continue
            tasks.append(asyncio.create_task(one_call(free.popleft(), n)))
        elif kind == "talk":
            tasks.append(asyncio.create_task(round_trip(talk_conns[n % len(talk_conns)], talk_rtt, failures)))
        else:
            tasks.append(asyncio.create_task(round_trip(echo_conns[n % len(echo_conns)], echo_rtt, failures)))
    await asyncio.wait_for(asyncio.gather(*tasks), call_timeout + 5)
    side_result = await asyncio.wait_for(side, 30) if side else None
    elapsed = time.perf_counter() - t0
    return {"offered": total, "skipped_no_free_caller": skipped, "completed": len(call_ids),
            **join(stats, call_ids), "no_agent": stats.no_agent - no_agent, "talk_ping": summary(talk_rtt),
            "echo": summary(echo_rtt), "round_trip_failures": failures[:5],
            "max_schedule_lag_ms": max(lags) * 1000 if lags else 0.0,
            "server_cpu": ((child.cpu_seconds() - cpu[0]) / elapsed) if child else None,
            "client_cpu": (time.process_time() - cpu[1]) / elapsed,
            "cpu0_others": (max(0.0, cpu_busy(0) - busy0 - (child.cpu_seconds() - cpu[0])) / elapsed) if child else None,
            "steal": (steal_since(0, steal[0]), steal_since(1, steal[1])), "alongside": side_result}


async def saturation(callers: list[Caller], stats: Stats, levels: list[int], step: float, child: Child) -> list[dict]:
    """Closed loop: `level` callers each place calls back to back (agents answer and hang up at once)."""
    rows = []
    for level in levels:
        group = callers[:level]
        window_ids: list[str] = []
        stop_at = time.perf_counter() + step
        counter = itertools.count()

        async def worker(caller: Caller) -> None:
            while time.perf_counter() < stop_at:
                call_id = await caller.place_call(next(counter), 10)
                if call_id:
                    window_ids.append(call_id)
                else:
                    await asyncio.sleep(0.05)

        cpu_server, cpu_client, t0 = child.cpu_seconds(), time.process_time(), time.perf_counter()
        busy0 = cpu_busy(0)
        await asyncio.wait_for(asyncio.gather(*(worker(c) for c in group)), step + 15)
        elapsed = time.perf_counter() - t0
        cpu_server, cpu_client = child.cpu_seconds() - cpu_server, time.process_time() - cpu_client
        others = max(0.0, cpu_busy(0) - busy0 - cpu_server)  # CPU 0 time of every other process
        rang = [cid for cid in window_ids if cid in stats.incoming]
        rows.append({"concurrent_callers": level, "calls": len(rang), "elapsed": elapsed,
                     "calls_per_s": len(rang) / elapsed, "click_to_ring": join(stats, window_ids)["click_to_ring"],
                     "server_cpu": cpu_server / elapsed, "client_cpu": cpu_client / elapsed,
                     "cpu0_others": others / elapsed,
                     "server_cpu_ms_per_call": cpu_server * 1000 / len(rang) if rang else float("nan")})
        await asyncio.sleep(0.3)
    return rows


# ------------------------------------------------------------------------------------------------------- main

async def run(args, work: Path, emails: list[str], talk_port: int, echo_port: int, pin: bool, results: dict) -> None:
    base_url = f"http://127.0.0.1:{talk_port}"
    talk_ws = f"ws://127.0.0.1:{talk_port}/ws/v1?site={SITE_KEY}"
    echo_ws = f"ws://127.0.0.1:{echo_port}/ws"
    cmd = [sys.executable, "-m", "talk.cli", "demo", "--port", str(talk_port), "--data-dir", str(work / "talk")]
    if args.profile:  # diagnosis only: cProfile slows the server down, the figures are not comparable
        cmd[1:3] = ["-m", "cProfile", "-o", str(args.profile.resolve()), "-m", "talk.cli"]
    elif args.gc_log:
        cmd[1:3] = ["-c", GC_WRAPPER]
    talk = Child("talk", cmd, work / "talk.log", 0 if pin else None)
    echo = Child("echo", [sys.executable, os.path.abspath(__file__), "--serve-echo", str(echo_port)],
                 work / "echo.log", 0 if pin else None)
    results["talk_command"] = " ".join(talk.cmd)
    stats = Stats()
    behaviour = AgentBehaviour(args.answer_delay, args.hold)
    agents: list[Agent] = []
    callers: list[Caller] = []
    conns: list[Conn] = []  # every other socket, closed at the end
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    call_timeout = args.hold + args.answer_delay + 10
    try:
        await asyncio.gather(talk.wait_ready(f"{base_url}/healthz"),
                             echo.wait_ready(f"http://127.0.0.1:{echo_port}/healthz"))
        results["talk_nofile"] = talk.nofile_limit()

        async def talk_conn(on_event=None) -> Conn:
            conn = Conn(await http.ws_connect(talk_ws, origin=base_url, heartbeat=None), on_event)
            conns.append(conn)
            return conn

        async def talk_idle() -> Conn:
            conn = await talk_conn()
            await conn.call("hello", timeout=30)
            return conn

        async def echo_conn() -> Conn:
            conn = Conn(await http.ws_connect(echo_ws, heartbeat=None))
            conns.append(conn)
            await conn.call("hello", timeout=30)  # echoed back: the same depth of handshake as Talk's hello
            return conn

        t = time.perf_counter()
        agents = [Agent(email, stats, behaviour) for email in emails]
        await asyncio.gather(*(a.start(base_url) for a in agents))
        results["agent_login_seconds"] = time.perf_counter() - t
        log(f"{len(agents)} agents logged in and available in {results['agent_login_seconds']:.1f} s")
        callers = [Caller(talk_conn, stats) for _ in range(args.callers)]
        await asyncio.gather(*(c.start() for c in callers))
        echo_conns = await open_many(echo_conn, args.callers)
        log(f"{len(callers)} Talk caller connections and {len(echo_conns)} echo connections open")

        # Warm-up, not recorded.
        await interleaved(callers, stats, args.rate, 1.0, call_timeout, [c.conn for c in callers], echo_conns)

        log(f"opening {args.idle} idle connections to each server ...")
        results["talk_idle"], talk_idle_conns = await idle_phase(talk, talk_idle, args.idle, args.settle)
        results["echo_idle"], echo_idle_conns = await idle_phase(echo, echo_conn, args.idle, args.settle)
        for conn in echo_idle_conns:
            await conn.close()
        log(f"  Talk {results['talk_idle']['kib_per_connection']:.1f} KiB, "
            f"echo {results['echo_idle']['kib_per_connection']:.1f} KiB per connection")
        results["talk_rss_kib"] = talk.rss_kib()

        log(f"click-to-ring: {args.rate:g} calls/s (+ Talk ping and echo at {args.rate:g}/s each) "
            f"for {args.duration:g} s, {args.idle} idle Talk connections open ...")
        results["load_before"] = os.getloadavg()
        window = time.time()
        run = await interleaved(callers, stats, args.rate, args.duration, call_timeout,
                                talk_idle_conns or [c.conn for c in callers], echo_conns, child=talk)
        results["load_after"] = os.getloadavg()
        results["fixed_rate_window"] = (window, time.time())
        results["fixed_rate"] = run
        for key in ("click_to_ring", "talk_ping", "echo"):
            log(f"  {key}: " + fmt_summary(run[key]))

        if args.logins:
            async def logins() -> list[float]:
                took = []
                for i in range(args.logins):
                    await asyncio.sleep(0.5)
                    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as extra:
                        t = time.perf_counter()
                        await login(extra, base_url, emails[i % len(emails)])
                        took.append(time.perf_counter() - t)
                return took

            log(f"click-to-ring while {args.logins} agents log in (console login form) ...")
            results["during_logins"] = await interleaved(
                callers, stats, args.rate, args.logins * 0.5 + 1.5, call_timeout,
                talk_idle_conns or [c.conn for c in callers], echo_conns, child=talk, alongside=logins)
            log("  click_to_ring: " + fmt_summary(results["during_logins"]["click_to_ring"]))

        behaviour.answer_delay = 0.0
        behaviour.hold = 0.0
        levels = [n for n in args.levels if n <= min(len(agents), len(callers))]
        log(f"saturation: closed loop, {levels} concurrent callers, {args.step:g} s each ...")
        results["saturation"] = await saturation(callers, stats, levels, args.step, talk)
        for row in results["saturation"]:
            log(f"  {row['concurrent_callers']:>3} callers: {row['calls_per_s']:.0f} calls/s, "
                f"server CPU {row['server_cpu']:.0%}, client CPU {row['client_cpu']:.0%}, "
                + fmt_summary(row["click_to_ring"]))
        results["errors"] = stats.errors[:20]
        results["error_count"] = len(stats.errors)
        if args.gc_log:
            pauses = [(float(t), float(ms)) for _, t, ms in
                      (line.split() for line in talk.log_tail(100000).splitlines() if line.startswith("BENCH-GC2 "))]
            start, end = results["fixed_rate_window"]
            results["gc2_all"] = [ms for _, ms in pauses]
            results["gc2_fixed_rate"] = [ms for t, ms in pauses if start <= t <= end]
        results["server_log_warnings"] = [line for line in talk.log_tail(2000).splitlines()
                                          if " WARNING " in line or " ERROR " in line or "Traceback" in line][:20]
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        await asyncio.gather(*(a.close() for a in agents), return_exceptions=True)
        await http.close()
        talk.stop()
        echo.stop()


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def fmt_summary(s: dict) -> str:
    return f"n={s['count']} p50={s['p50']:.2f} ms p95={s['p95']:.2f} ms p99={s['p99']:.2f} ms max={s['max']:.2f} ms"


def markdown(args, results: dict) -> str:
    out = []
    fr = results["fixed_rate"]
    ring, echo = fr["click_to_ring"], fr["echo"]

    def row(name: str, s: dict) -> str:
        return f"| {name} | {s['count']} | {s['p50']:.2f} | {s['p95']:.2f} | {s['p99']:.2f} | {s['max']:.2f} |"

    out.append(f"### Latency at {args.rate:g} calls/s for {args.duration:g} s "
               f"({len(results['agents'])} agents, {args.callers} callers, {args.idle} idle caller connections open)\n")
    out.append("| measurement | n | p50 ms | p95 ms | p99 ms | max ms |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    out.append(row("**click-to-ring**: caller `call.start` → agent `call.incoming`", ring))
    out.append(row("caller `call.start` → its `result`", fr["start_result"]))
    out.append(row("caller `call.start` → `call.ringing`", fr["caller_ringing"]))
    out.append(row(f"Talk `ping` round trip ({args.rate:g}/s, interleaved)", fr["talk_ping"]))
    out.append(row(f"bare aiohttp WebSocket echo round trip ({args.rate:g}/s, interleaved)", echo))
    out.append(f"| click-to-ring ÷ echo | | {ring['p50'] / echo['p50']:.1f}× | {ring['p95'] / echo['p95']:.1f}× | "
               f"{ring['p99'] / echo['p99']:.1f}× | {ring['max'] / echo['max']:.1f}× |")
    target = "met" if ring["p99"] <= 25 else "NOT met"
    out.append("")
    out.append(f"Offered {fr['offered']} calls: {fr['completed']} completed, {fr['never_rang']} never rang, "
               f"{fr['no_agent']} no-agent, {fr['skipped_no_free_caller']} skipped (no free caller). "
               f"Load generator's worst schedule lag {fr['max_schedule_lag_ms']:.1f} ms; "
               f"Talk server CPU {fr['server_cpu']:.0%}, load generator CPU {fr['client_cpu']:.0%}; "
               f"other processes (echo server, other tenants) on CPU 0: {fr['cpu0_others']:.0%}; "
               f"steal CPU0/CPU1 {fr['steal'][0]:.1%}/{fr['steal'][1]:.1%}; load average "
               f"{results['load_before'][0]:.2f} before, {results['load_after'][0]:.2f} after. "
               f"Target p99 ≤ 25 ms at 20 calls/s: **{target}**.\n")
    if "during_logins" in results:
        dl = results["during_logins"]
        took = dl["alongside"] or []
        out.append(f"While {len(took)} agent(s) logged in through the form (each login "
                   f"{min(took) * 1000:.0f}–{max(took) * 1000:.0f} ms): click-to-ring "
                   f"p50 {dl['click_to_ring']['p50']:.2f} ms, max {dl['click_to_ring']['max']:.2f} ms; "
                   f"Talk ping max {dl['talk_ping']['max']:.2f} ms; echo max {dl['echo']['max']:.2f} ms "
                   f"(n={dl['click_to_ring']['count']} calls).\n")
    out.append("### Saturation (closed loop, agents answer and hang up at once)\n")
    out.append("| concurrent callers | calls set up | calls/s | click-to-ring p50 ms | p99 ms | Talk CPU "
               "| Talk CPU ms per call | load gen CPU | other processes on CPU 0 |")
    out.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results["saturation"]:
        out.append(f"| {r['concurrent_callers']} | {r['calls']} | {r['calls_per_s']:.0f} | "
                   f"{r['click_to_ring']['p50']:.2f} | {r['click_to_ring']['p99']:.2f} | "
                   f"{r['server_cpu']:.0%} | {r['server_cpu_ms_per_call']:.2f} | {r['client_cpu']:.0%} "
                   f"| {r['cpu0_others']:.0%} |")
    best = max(results["saturation"], key=lambda r: r["calls_per_s"])
    out.append(f"\nCalls set up per second at saturation: **{best['calls_per_s']:.0f}** "
               f"({best['concurrent_callers']} concurrent callers).\n")
    out.append("### Idle connections (first round trip done; server RSS from /proc/PID/status)\n")
    out.append("| server | connections | RSS before MiB | RSS after MiB | KiB per connection | opened in s |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, key in (("Talk caller (`/ws/v1?site=…`, hello)", "talk_idle"), ("bare aiohttp echo", "echo_idle")):
        r = results[key]
        out.append(f"| {name} | {r['connections']} | {r['rss_before_kib'] / 1024:.1f} | "
                   f"{r['rss_after_kib'] / 1024:.1f} | {r['kib_per_connection']:.1f} | {r['open_seconds']:.2f} |")
    if results["talk_idle"]["connections"] < 1000:
        target = f"not tested (only {results['talk_idle']['connections']} opened)"
    else:
        target = "met" if results["talk_idle"]["kib_per_connection"] < 150 else "NOT met"
    out.append(f"\nTarget ≥ 1,000 idle connections under 150 KiB each: **{target}** "
               f"(Talk process open-files limit: {results['talk_nofile']}). "
               f"{len(results['agents'])} agent logins took {results['agent_login_seconds']:.1f} s.")
    if "gc2_all" in results:
        every, window = results["gc2_all"], results["gc2_fixed_rate"]
        out.append(f"\nFull (generation 2) garbage collections in the Talk process (`--gc-log`): {len(every)} in the "
                   f"whole run, pauses {min(every, default=0):.0f}–{max(every, default=0):.0f} ms; during the "
                   f"{args.duration:g} s fixed-rate phase: {len(window)} "
                   f"({', '.join(f'{ms:.0f} ms' for ms in window) or 'none'}).")
    if fr["round_trip_failures"]:
        out.append(f"\nRound trips that failed: {fr['round_trip_failures']}")
    if results.get("error_count"):
        out.append(f"\nErrors: {results['error_count']}, e.g. {results['errors'][:3]}")
    if results.get("server_log_warnings"):
        out.append(f"\nServer log warnings: {results['server_log_warnings'][:5]}")
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=20.0, help="offered calls per second (default 20)")
    p.add_argument("--duration", type=float, default=15.0, help="seconds at the fixed rate (default 15)")
    p.add_argument("--agents", type=int, default=40, help="agent consoles (default 40)")
    p.add_argument("--callers", type=int, default=100, help="caller connections placing calls (default 100)")
    p.add_argument("--idle", type=int, default=1000, help="extra idle caller connections (default 1000)")
    p.add_argument("--answer-delay", type=float, default=0.2, help="s an agent lets it ring before answering")
    p.add_argument("--hold", type=float, default=1.0, help="s an agent talks before hanging up")
    p.add_argument("--logins", type=int, default=3, help="agent logins during a short extra call phase (0: skip)")
    p.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8, 16, 32],
                   help="saturation: concurrent callers per step (default 1,2,4,8,16,32)")
    p.add_argument("--step", type=float, default=3.0, help="saturation: seconds per step (default 3)")
    p.add_argument("--pin", action="store_true", help="servers on CPU 0 (taskset), load generator on CPU 1")
    p.add_argument("--quick", action="store_true", help="~20 s smoke run")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--profile", type=Path, help="run the Talk server under cProfile, write the stats here (diagnosis)")
    p.add_argument("--gc-log", action="store_true",
                   help="run `talk demo` through a wrapper that logs full GC pauses, and report them")
    p.add_argument("--keep", action="store_true", help="keep the temporary data dir (server logs)")
    p.add_argument("--serve-echo", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.settle = 2.0  # s to let the servers settle before reading RSS
    if args.quick:
        args.settle = 0.6
        args.duration, args.agents, args.callers, args.idle, args.logins = 4.0, 10, 30, 200, 1
        args.answer_delay, args.hold, args.levels, args.step = 0.05, 0.2, [1, 4, 10], 1.0
    for name in ("rate", "duration", "agents", "callers"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be positive")
    if not (0 <= args.idle <= 20000 and args.agents <= 500 and args.callers <= 2000 and args.duration <= 300
            and args.rate <= 2000 and 0 <= args.logins <= 20 and args.step <= 60 and len(args.levels) <= 12):
        p.error("bounded: --idle ≤ 20000, --agents ≤ 500, --callers ≤ 2000, --duration ≤ 300, --rate ≤ 2000, "
                "--logins ≤ 20, --step ≤ 60, ≤ 12 levels")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve_echo:
        serve_echo(args.serve_echo)
        return
    pin = args.pin and len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset") is not None
    if args.pin and not pin:
        log("--pin ignored: needs taskset and at least 2 CPUs")
    nofile = raise_nofile(2 * (args.idle + args.callers) + 2 * args.agents + 512)
    if pin:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[1]})
    work = Path(tempfile.mkdtemp(prefix="talk-bench-"))
    results: dict[str, Any] = {"machine": f"{os.cpu_count()} CPUs ({platform.machine()}), Python "
                                          f"{platform.python_version()}, aiohttp {aiohttp.__version__}",
                               "pinned": pin, "bench_nofile": nofile, "args": vars(args)}
    talk_port, echo_port = free_port(), free_port()
    try:
        emails = prepare_talk_database(work / "talk", f"http://127.0.0.1:{talk_port}", args.agents)
        results["agents"] = emails
        asyncio.run(asyncio.wait_for(run(args, work, emails, talk_port, echo_port, pin, results), HARD_DEADLINE))
    finally:
        if args.keep:
            log(f"data and logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"Machine: {results['machine']}; pinned: {pin} (servers on CPU 0, load generator on CPU 1)\n")
    print(markdown(args, results), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
