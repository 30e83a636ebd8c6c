"""`talk demo` as a user runs it: a subprocess on a free port that becomes healthy, serves the Demo Shop,
prints where to go and how to log in, and exits cleanly when stopped. No browser needed."""

from __future__ import annotations

import json

from talk.demo import DEMO_ACCOUNTS, DEMO_PASSWORD
from tests.e2e import TalkDemo, http_get


def test_talk_demo_starts_serves_prints_logins_and_stops_cleanly(tmp_path):
    demo = TalkDemo(tmp_path / "data")
    try:
        demo.start(timeout=20.0)  # polls /healthz until {"status": "ok"}, bounded

        status, body = http_get(f"{demo.base_url}/healthz")
        assert (status, json.loads(body)) == (200, {"status": "ok"})

        status, body = http_get(f"{demo.base_url}/demo/")
        assert status == 200
        assert b"/widget/talk.js" in body and b'data-site="demo-shop"' in body

        status, _ = http_get(f"{demo.base_url}/widget/talk.js")
        assert status == 200

        assert (demo.data_dir / "talk.db").is_file()
    finally:
        returncode = demo.stop()

    output = demo.output()
    assert f"Talk demo is running at {demo.base_url}" in output, output
    assert f"{demo.base_url}/demo/" in output, output
    assert f"{demo.base_url}/console" in output, output
    for email, _name, _role in DEMO_ACCOUNTS:
        assert f"login: {email} / {DEMO_PASSWORD}" in output, output
    assert returncode == 0, f"talk demo exited with {returncode} after SIGTERM:\n{output}"
    assert "Traceback" not in output, output
