"""Anonymous visitor identity for callers: a random id plus an HMAC, so a browser can't claim someone else's id."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets


def _mac(key: bytes, visitor_id: str) -> str:
    digest = hmac.new(key, visitor_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


def issue_visitor(key: bytes) -> tuple[str, str]:
    visitor_id = f"v_{secrets.token_urlsafe(12)}"
    return visitor_id, f"{visitor_id}.{_mac(key, visitor_id)}"


def verify_visitor(key: bytes, token: str | None) -> str | None:
    """The visitor id the token proves, or None for a missing, malformed or forged token."""
    if not token or token.count(".") != 1:
        return None
    visitor_id, mac = token.split(".")
    if not visitor_id.startswith("v_") or not hmac.compare_digest(mac, _mac(key, visitor_id)):
        return None
    return visitor_id
