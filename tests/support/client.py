"""Test helpers that speak to a running Talk server like its real clients do (login form, signaling socket)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
from typing import Any

import aiohttp

from talk.demo import DEMO_PASSWORD, DEMO_SITE_KEY

CSRF_RE = re.compile(r'name="csrf_token"\s+value="([^"]+)"')


async def login(session: aiohttp.ClientSession, base_url: str, email: str, password: str = DEMO_PASSWORD) -> None:
    """Log in through the real form (CSRF token included); the session's cookie jar keeps the login."""
    async with session.get(f"{base_url}/login") as response:
        page = await response.text()
    match = CSRF_RE.search(page)
    assert match, "login page has no csrf_token field"
    form = {"email": email, "password": password, "csrf_token": match.group(1), "next": "/console"}
    async with session.post(f"{base_url}/login", data=form, allow_redirects=False) as response:
        assert response.status == 302, await response.text()


class Peer:
    """One signaling connection: numbered requests, replies matched by id, events collected in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._results: dict[int, asyncio.Future] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.received: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type is not aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(frame.data)
            self.received.append(message)
            if message.get("type") == "result" and message.get("id") in self._results:
                future = self._results.pop(message["id"])
                if not future.done():  # a request that timed out has given up on its reply
                    future.set_result(message)
            else:
                self.events.put_nowait(message)

    async def request(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Send a message and return the whole result envelope."""
        msg_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._results[msg_id] = future
        await self.ws.send_str(json.dumps({"id": msg_id, "type": type_, **fields}))
        return await asyncio.wait_for(future, 5)

    async def ok(self, type_: str, **fields: Any) -> dict[str, Any]:
        reply = await self.request(type_, **fields)
        assert reply["success"], reply
        return reply["result"]

    async def next_event(self, type_: str | None = None, timeout: float = 5) -> dict[str, Any]:
        """The next event (of the given type, skipping others)."""
        while True:
            message = await asyncio.wait_for(self.events.get(), timeout)
            if type_ is None or message["type"] == type_:
                return message

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)


def new_visitor() -> dict[str, str]:
    """Anonymous ids as the widget makes them when the visitor's consent allows tracking."""
    return {"visitor_id": f"v_{secrets.token_urlsafe(16)}", "session_id": f"s_{secrets.token_urlsafe(16)}"}


async def connect_caller(session: aiohttp.ClientSession, base_url: str, origin: str | None = None,
                         site: str = DEMO_SITE_KEY, hello: bool = True, visitor: dict | None = None) -> Peer:
    """A widget's connection; `visitor` (see new_visitor) joins its calls to that visitor's journey."""
    ws_url = base_url.replace("http", "ws", 1) + f"/ws/v1?site={site}"
    ws = await session.ws_connect(ws_url, origin=origin or base_url)
    peer = Peer(ws)
    if hello:
        peer.hello = await peer.ok("hello", **(visitor or {}))
    return peer


async def connect_agent(session: aiohttp.ClientSession, base_url: str, email: str = "agent@demo.test",
                        available: bool = True) -> Peer:
    """A logged-in agent console connection (session must carry the login cookie)."""
    ws = await session.ws_connect(base_url.replace("http", "ws", 1) + "/ws/v1", origin=base_url)
    peer = Peer(ws)
    peer.hello = await peer.ok("hello")
    if available:
        await peer.ok("agent.available", available=True)
    return peer


async def connect_seller(session: aiohttp.ClientSession, base_url: str, email: str = "seller@demo.test",
                         password: str = DEMO_PASSWORD, available: bool = True) -> Peer:
    """A seller's console connection (as /seller makes it): logs in through the form, then connects like an agent's
    console (the server gives a seller's session the agent role; it only ever receives masked calls)."""
    await login(session, base_url, email, password)
    return await connect_agent(session, base_url, email=email, available=available)
