"""The widget's MOS estimate (talk-core.js `mos`) gives the reference values of widget/preflight.md, the same table
the server's `signaling.echo.estimate_mos` is checked against, so the two can never drift apart."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from signaling.echo import estimate_mos
from tests.support.browser import skip_or_fail

WIDGET = Path(__file__).resolve().parent.parent
ROWS = [  # rtt_ms, jitter_ms, loss_pct, MOS: widget/preflight.md
    (0, 0, 0, 4.404), (40, 5, 0, 4.389), (100, 10, 1, 4.306), (300, 0, 5, 3.893), (300, 30, 5, 3.630),
    (500, 40, 10, 2.377), (1000, 100, 40, 1.000),
]


def widget_mos(rows: list[tuple]) -> list[float]:
    node = shutil.which("node")
    if node is None:
        skip_or_fail("node is not installed (it runs the widget's MOS function)")
    source = (WIDGET / "talk-core.js").read_text()
    function = re.search(r"\n  function mos\(rtt, jitter, loss\) \{\n.*?\n  \}\n", source, re.S)
    assert function, "talk-core.js has no `function mos(rtt, jitter, loss)`"
    script = function.group(0) + f"\nconsole.log(JSON.stringify({json.dumps(rows)}.map(r => mos(r[0], r[1], r[2]))));"
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30, check=True).stdout
    return json.loads(out)


def test_widget_mos_matches_the_reference_table():
    got = widget_mos([row[:3] for row in ROWS])
    for row, value in zip(ROWS, got):
        assert value == pytest.approx(row[3], abs=0.001), f"rtt, jitter, loss = {row[:3]}"
        assert value == pytest.approx(estimate_mos(*row[:3]), abs=1e-9)
