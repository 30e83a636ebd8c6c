"""Browser end-to-end tests, plus `TalkDemo`: the real `talk demo` command run as a subprocess.

`TalkDemo` lives here, not in conftest.py, so that tests without a browser (tests/integration/test_smoke_cli.py)
can import it: this module imports nothing from Playwright.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.browser import in_ci, skip_or_fail  # noqa: F401  (re-exported for the browser tests)

STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
# The fake microphones' tones (see conftest.py): what each side hears shows whose microphone it came from.
CALLER_TONE_HZ = 440
AGENT_TONE_HZ = 880

# Straight to 127.0.0.1, whatever *_proxy variables the machine has.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def talk_command() -> list[str]:
    """The installed `talk` console script (next to this Python first), else the same CLI via `-m`."""
    script = shutil.which("talk", path=str(Path(sys.executable).parent)) or shutil.which("talk")
    return [script] if script else [sys.executable, "-m", "talk.cli"]


def http_get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with _http.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class TalkDemo:
    """`talk demo --port P --data-dir DIR` in a subprocess; stdout and stderr go to DIR/../talk-demo.log.

    `env`: TALK_* settings for this server only (e.g. {"TALK_RING_TIMEOUT": "2"}), applied after the shell's
    TALK_* variables have been removed.
    """

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.env = dict(env or {})
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-talk-demo.log"
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.returncode: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "talk.db"

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = STARTUP_TIMEOUT) -> "TalkDemo":
        """Start and wait for /healthz. Retries on a new port if another process took the free port meanwhile."""
        for _ in range(3):
            self.port = free_port()
            self._spawn()
            try:
                self._wait_healthy(timeout)
                return self
            except _PortTaken:
                continue
        raise RuntimeError(f"talk demo could not bind a port in 3 attempts:\n{self.output()}")

    def _env(self) -> dict[str, str]:
        # Hermetic: no TALK_* from the developer's shell (a TALK_DATABASE_URL or TALK_CONFIG would leak in).
        env = {k: v for k, v in os.environ.items() if not k.startswith("TALK_")}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        return env

    def _spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [*talk_command(), "demo", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env())
        self.returncode = None

    def cli(self, *args: str, timeout: float = 30.0) -> str:
        """`talk ARGS --data-dir DIR` against this demo's data (e.g. `token create e2e`) with the same environment;
        returns its stdout, fails with its output if it exits non-zero."""
        cmd = [*talk_command(), *args, "--data-dir", str(self.data_dir)]
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=self._env(),
                              timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}:\n{done.stdout}{done.stderr}")
        return done.stdout

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.base_url}/healthz"
        while True:
            code = self.process.poll()
            if code is not None:
                self.returncode = code
                if "address already in use" in self.output().lower():
                    raise _PortTaken()
                raise RuntimeError(f"talk demo exited with code {code} before it was healthy:\n{self.output()}")
            try:
                status, body = http_get(url, timeout=1.0)
                if status == 200 and json.loads(body) == {"status": "ok"}:
                    return
            except (OSError, ValueError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"talk demo was not healthy at {url} within {timeout:.0f} s:\n{self.output()}")
            time.sleep(0.1)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (aiohttp shuts down gracefully), SIGKILL if it hangs. Returns the exit code."""
        process = self.process
        if process is None:
            return self.returncode
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.returncode = process.returncode
        self.process = None
        return self.returncode


    def kill(self) -> int | None:
        """SIGKILL: the server vanishes without closing anything, as in a crash or a lost network."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)
        return self.stop()


class _PortTaken(Exception):
    pass
