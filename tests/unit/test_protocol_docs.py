"""docs/protocol.md documents every message type the server handles and every event it sends."""

import re
from pathlib import Path

from signaling import HANDLERS
from signaling.protocol import SERVER_EVENTS
from signaling.session import handler_table

DOC = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
HEADINGS = set(re.findall(r"^###\s+(.+)$", DOC, flags=re.M))
DOCUMENTED = {name for heading in HEADINGS for name in re.findall(r"`([a-z_.]+)`", heading)}


def test_every_client_message_is_documented():
    missing = set(handler_table(HANDLERS)) - DOCUMENTED
    assert not missing, f"client messages without a ### heading in docs/protocol.md: {sorted(missing)}"


def test_every_server_event_is_documented():
    missing = set(SERVER_EVENTS) - DOCUMENTED
    assert not missing, f"server events without a ### heading in docs/protocol.md: {sorted(missing)}"


def test_every_error_code_is_documented():
    from signaling import protocol

    codes = {v for k, v in vars(protocol).items() if k.isupper() and isinstance(v, str) and k not in ("HARD_FRAME_LIMIT",)}
    missing = {code for code in codes if f"`{code}`" not in DOC}
    assert not missing, f"error codes missing from docs/protocol.md: {sorted(missing)}"
