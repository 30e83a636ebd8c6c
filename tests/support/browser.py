"""What every browser test shares: where Chromium is, the flags it runs with here, and skip-or-fail when it's absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling out on this closed network; the media flags give
# a fake microphone and camera that need no permission prompt.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_or_fail(reason: str, module_level: bool = False) -> None:
    """Skip on a developer machine; in CI a missing browser must fail, so the browser tests can never silently vanish."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: browser tests are required here)", pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)
