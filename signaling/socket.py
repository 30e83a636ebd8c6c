"""The WebSocket edge of signaling: upgrade checks (Origin, site key, login), heartbeat, hello timeout and a bounded
send queue. Message logic lives in session.py."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from signaling.protocol import CLOSE_HELLO_TIMEOUT, CLOSE_SLOW_CONSUMER, HARD_FRAME_LIMIT, INVALID_MESSAGE, error
from signaling.session import AGENT, CALLER, Session, SignalingContext
from talk import directory
from talk.directory import DirectoryError, normalize_origin
from talk.models import Account
from talk.sessions import current_account_id
from talk.settings import SETTINGS_KEY
from talk.types import CONSOLE_ROLES, Role

log = logging.getLogger(__name__)

SIGNALING_KEY = web.AppKey("signaling", SignalingContext)
WRITER_GRACE = 2.0  # seconds a closing connection gets to flush its last messages
# The close(code) of every open signaling connection, so a stopping server can close them (signaling/__init__.py).
CONNECTIONS_KEY = web.AppKey("signaling_connections", set)
SIGNALING_ROLES = CONSOLE_ROLES | {Role.SELLER}  # sellers take their masked calls at /seller


def own_origin(request: web.Request) -> str:
    public_url = request.app[SETTINGS_KEY].public_url
    return normalize_origin(public_url) if public_url else f"{request.scheme}://{request.host}".lower()


def _request_origin(request: web.Request) -> str | None:
    try:
        return normalize_origin(request.headers.get("Origin", ""))
    except DirectoryError:
        return None


async def _authorize(request: web.Request, context: SignalingContext) -> dict[str, Any]:
    """Who is connecting, or an HTTP error before the upgrade."""
    origin = _request_origin(request)
    site_key = request.query.get("site")
    if site_key is not None:
        async with context.sessionmaker() as db:
            site = await directory.load_site(db, site_key[:64])
        if site is None:
            raise web.HTTPForbidden(text="unknown site key")
        # Our own origin serves the site's standalone call pages (/c/<token>), so it may call too.
        if origin is None or (origin not in site.allowed_origins and origin != own_origin(request)):
            raise web.HTTPForbidden(text="this origin is not allowed for the site")
        return {"role": CALLER, "site": site, "origin": origin}
    if origin != own_origin(request):
        raise web.HTTPForbidden(text="console connections only from this server's own pages")
    account_id = await current_account_id(request)
    async with context.sessionmaker() as db:
        account = await db.get(Account, account_id) if account_id is not None else None
    if account is None or account.role not in SIGNALING_ROLES:
        raise web.HTTPUnauthorized(text="log in to the console first")
    return {"role": AGENT, "account_id": account.id, "account_name": account.name,
            "is_seller": account.role == Role.SELLER}


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    context = request.app[SIGNALING_KEY]
    settings = request.app[SETTINGS_KEY]
    identity = await _authorize(request, context)
    ws = web.WebSocketResponse(heartbeat=settings.ws_heartbeat, max_msg_size=HARD_FRAME_LIMIT)
    await ws.prepare(request)

    outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=settings.ws_send_queue)
    close_code: list[int] = []

    def close(code: int) -> None:
        if not close_code:
            close_code.append(code)
            # Wake the writer even when the outbox is full; it closes the socket.
            _force_put(outbox, None)

    def send(message: dict[str, Any]) -> None:
        if close_code:
            return
        try:
            outbox.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("cutting off a %s connection that does not read its messages", identity["role"])
            close(CLOSE_SLOW_CONSUMER)
            # Its buffers are full, so a close frame would never get through: drop the TCP connection now, which
            # ends the read loop below and with it the session (and its call).
            if request.transport is not None:
                request.transport.abort()

    session = Session(context=context, role=identity["role"], send=send, close=close, site=identity.get("site"),
                      origin=identity.get("origin"),
                      account_id=identity.get("account_id"), account_name=identity.get("account_name", ""),
                      is_seller=identity.get("is_seller", False))
    writer = asyncio.create_task(_write(ws, outbox, close_code))
    hello_timer = asyncio.get_running_loop().call_later(
        settings.hello_timeout, lambda: None if session.hello_done else close(CLOSE_HELLO_TIMEOUT))
    connections = request.app[CONNECTIONS_KEY]
    connections.add(close)
    try:
        async for frame in ws:
            if frame.type is WSMsgType.TEXT:
                await session.handle_text(frame.data)
            elif frame.type is WSMsgType.BINARY:
                send(error(None, INVALID_MESSAGE, "binary frames are not part of the protocol"))
            if close_code:
                break
    finally:
        connections.discard(close)
        hello_timer.cancel()
        await session.closed()
        close(1000)
        await _finish_writer(writer, request)
    return ws


async def _finish_writer(writer: asyncio.Task, request: web.Request) -> None:
    """Let the writer flush and send the close frame, but never wait on a peer that has stopped reading."""
    done, _ = await asyncio.wait({writer}, timeout=WRITER_GRACE)
    if not done:
        writer.cancel()
        if request.transport is not None:
            request.transport.abort()
        await asyncio.gather(writer, return_exceptions=True)


async def _write(ws: web.WebSocketResponse, outbox: asyncio.Queue, close_code: list[int]) -> None:
    try:
        while True:
            message = await outbox.get()
            if message is None or ws.closed:
                break
            await ws.send_str(json.dumps(message, separators=(",", ":")))
    except (ConnectionError, RuntimeError):
        pass  # the peer is gone; the reader loop notices and cleans up
    finally:
        if not ws.closed:
            await ws.close(code=close_code[0] if close_code else 1000)


def _force_put(queue: asyncio.Queue, item: Any) -> None:
    while True:
        try:
            queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            queue.get_nowait()
