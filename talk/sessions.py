"""Console login sessions: a signed, encrypted cookie (aiohttp-session + Fernet) and CSRF tokens bound to it.

Shared by web (login form, pages) and signaling (the console's WebSocket), hence in core.
"""

from __future__ import annotations

import hmac
import secrets

import aiohttp_session
from aiohttp import web
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from talk.secret import SECRET_KEY, subkey

SESSION_COOKIE = "talk_session"
SESSION_MAX_AGE = 12 * 3600
_ACCOUNT = "account_id"
_CSRF = "csrf"


def setup_sessions(app: web.Application, secret: bytes, secure_cookie: bool) -> None:
    fernet_key = subkey(secret, "session-cookie")  # 32 raw bytes; the storage base64-encodes them for Fernet
    storage = EncryptedCookieStorage(
        fernet_key,
        cookie_name=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=secure_cookie,
    )
    aiohttp_session.setup(app, storage)


async def current_account_id(request: web.Request) -> int | None:
    session = await aiohttp_session.get_session(request)
    value = session.get(_ACCOUNT)
    return value if isinstance(value, int) else None


async def remember(request: web.Request, account_id: int) -> None:
    # A fresh session on login prevents fixation: nothing from before login carries over.
    session = await aiohttp_session.new_session(request)
    session[_ACCOUNT] = account_id
    session[_CSRF] = secrets.token_urlsafe(32)


async def forget(request: web.Request) -> None:
    session = await aiohttp_session.get_session(request)
    session.invalidate()


async def csrf_token(request: web.Request) -> str:
    """The session's CSRF token (synchronizer pattern), created on first use."""
    session = await aiohttp_session.get_session(request)
    token = session.get(_CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[_CSRF] = token
    return token


async def check_csrf(request: web.Request, submitted: str | None) -> None:
    session = await aiohttp_session.get_session(request)
    expected = session.get(_CSRF)
    if not isinstance(expected, str) or not submitted or not hmac.compare_digest(expected, submitted):
        raise web.HTTPForbidden(text="CSRF token missing or wrong; reload the page and try again.")


__all__ = ["SECRET_KEY", "setup_sessions", "current_account_id", "remember", "forget", "csrf_token", "check_csrf"]
