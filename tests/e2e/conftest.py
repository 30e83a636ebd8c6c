"""Browser end-to-end fixtures: the real `talk demo` process and two headless Chromium browsers.

Two browser *processes*, not two contexts: `--use-file-for-fake-audio-capture` is per process, and each side gets its
own tone (caller 440 Hz, agent 880 Hz), so what the other side hears shows whose microphone it came from.

Playwright's sync API runs its own event loop; the tests here are plain sync functions (pytest-asyncio is in auto
mode for the rest of the suite), and the browsers live per module so they never overlap other modules' async tests.
"""

from __future__ import annotations

import array
import math
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e import AGENT_TONE_HZ, CALLER_TONE_HZ, TalkDemo
from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS, skip_or_fail

def write_tone(path: Path, hz: float, seconds: float = 10.0, rate: int = 48000, amplitude: float = 0.5) -> Path:
    """A mono 16-bit sine tone. Chromium loops the file as the fake microphone."""
    peak = int(32767 * amplitude)
    step = 2 * math.pi * hz / rate
    samples = array.array("h", (int(peak * math.sin(step * i)) for i in range(int(seconds * rate))))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


# ---------------------------------------------------------------- the product


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "talk_env(**settings): TALK_* environment for the test's `talk demo`, e.g. TALK_RING_TIMEOUT='2'")


@pytest.fixture
def talk_demo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TalkDemo]:
    """A fresh `talk demo` per test (fresh database, nobody logged in). Its output is added to failure reports.
    `@pytest.mark.talk_env(TALK_RING_TIMEOUT="2")` starts it with those settings."""
    marker = request.node.get_closest_marker("talk_env")
    env = {name: str(value) for name, value in marker.kwargs.items()} if marker else {}
    demo = TalkDemo(tmp_path / "data", env=env).start()
    try:
        yield demo
    finally:
        demo.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    demo = funcargs.get("talk_demo")
    if isinstance(demo, TalkDemo):
        report.sections.append(("talk demo output", demo.output()[-20000:] or "(no output)"))
    pages = funcargs.get("open_page")
    if pages is not None:
        for name, lines in pages.logs.items():
            report.sections.append((f"browser console: {name}", "\n".join(lines[-200:]) or "(nothing logged)"))


# ---------------------------------------------------------------- browsers


@pytest.fixture(scope="module")
def playwright() -> Iterator[object]:
    if not CHROMIUM.exists():
        skip_or_fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("Playwright for Python is not installed (pip install -e '.[test]')")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def tone_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tones")
    return {
        "caller": write_tone(folder / f"caller-{CALLER_TONE_HZ}hz.wav", CALLER_TONE_HZ),
        "agent": write_tone(folder / f"agent-{AGENT_TONE_HZ}hz.wav", AGENT_TONE_HZ),
    }


def _launch(playwright, tone: Path, flags: list[str] = CHROMIUM_FLAGS):
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=[*flags, f"--use-file-for-fake-audio-capture={tone}"],
    )


@pytest.fixture(scope="module")
def caller_browser(playwright, tone_files):
    browser = _launch(playwright, tone_files["caller"])
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def agent_browser(playwright, tone_files):
    browser = _launch(playwright, tone_files["agent"])
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def unprompted_browser(playwright, tone_files):
    """A caller's Chromium WITHOUT --use-fake-ui-for-media-stream: nothing auto-accepts the microphone prompt, so a
    context that was not granted the microphone gets the browser's real denial (getUserMedia → NotAllowedError).
    The fake device stays, so a granted context would still get a microphone."""
    flags = [flag for flag in CHROMIUM_FLAGS if flag != "--use-fake-ui-for-media-stream"]
    browser = _launch(playwright, tone_files["caller"], flags)
    yield browser
    browser.close()


class PageFactory:
    """Opens pages in fresh contexts (own cookies and storage) and records what each page logs."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.logs: dict[str, list[str]] = {}
        self.errors: dict[str, list[str]] = {}
        self._contexts: list = []

    def __call__(self, browser, name: str):
        context = browser.new_context(base_url=self.base_url)
        context.set_default_timeout(10_000)
        self._contexts.append(context)
        page = context.new_page()
        log = self.logs.setdefault(name, [])
        errors = self.errors.setdefault(name, [])
        page.on("console", lambda msg: log.append(f"[{msg.type}] {msg.text}"))
        page.on("pageerror", lambda exc: (errors.append(str(exc)), log.append(f"[pageerror] {exc}")))
        return page

    def close(self) -> None:
        for context in self._contexts:
            try:
                context.close()
            except Exception:  # the browser may already be gone after a crash; teardown must go on
                pass


@pytest.fixture
def open_page(talk_demo: TalkDemo) -> Iterator[Callable]:
    """open_page(browser, name) → a Page on http://127.0.0.1:PORT (relative goto works)."""
    factory = PageFactory(talk_demo.base_url)
    yield factory
    factory.close()


@pytest.fixture
def caller_page(open_page, caller_browser):
    return open_page(caller_browser, "caller")


@pytest.fixture
def agent_page(open_page, agent_browser):
    return open_page(agent_browser, "agent")
