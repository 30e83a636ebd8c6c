"""One signaling connection's logic, independent of the socket: parse, authorize, dispatch, reply.

It takes an injected `send` callable, so unit tests drive it without a WebSocket (the socket handler in
socket.py owns heartbeat, the bounded send queue and timeouts).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from signaling.protocol import (
    ALREADY_HELLO, FORBIDDEN, HELLO_REQUIRED, INTERNAL_ERROR, NOT_FOUND, UNKNOWN_TYPE, Message, ProtocolError, error,
    parse_envelope, result, validate,
)
from signaling.bridge import MediaBridge
from signaling.call import Call
from signaling.echo import EchoService
from signaling.voicemail import VoicemailDesk
from signaling.callstore import CallStore
from signaling.switchboard import AgentLink, Send, Switchboard
from talk.directory import QueueInfo, SiteInfo

log = logging.getLogger(__name__)

CALLER = "caller"
AGENT = "agent"

Handler = Callable[["Session", Any], Awaitable[dict[str, Any] | None]]
# Looks up what the agent's console shows about a caller (app.py wires analytics in; signaling can't import it).
JourneyProvider = Callable[[Call], Awaitable[dict[str, Any]]]


def handles(model: type[Message], *roles: str, before_hello: bool = False):
    """Mark a coroutine as the handler of one message type, for the given roles."""

    def mark(fn: Handler) -> Handler:
        fn.message_model = model  # type: ignore[attr-defined]
        fn.roles = frozenset(roles)  # type: ignore[attr-defined]
        fn.before_hello = before_hello  # type: ignore[attr-defined]
        return fn

    return mark


def handler_table(handlers: tuple[Handler, ...]) -> dict[str, Handler]:
    table: dict[str, Handler] = {}
    for fn in handlers:
        name = fn.message_model.model_fields["type"].annotation.__args__[0]  # type: ignore[attr-defined]
        if name in table:
            raise ValueError(f"two handlers for {name}")
        table[name] = fn
    return table


@dataclass(frozen=True)
class SignalingContext:
    """What every session needs from the app, bundled once at start-up."""

    switchboard: Switchboard
    callstore: CallStore
    sessionmaker: async_sessionmaker[AsyncSession]
    handlers: dict[str, Handler]
    journey_provider: JourneyProvider | None
    ice_servers: list[dict[str, Any]]
    max_message_bytes: int
    ring_timeout: float
    bridge: MediaBridge  # masked calls' media
    voicemail: VoicemailDesk
    echo: EchoService  # pre-flight checks
    alias_key: bytes  # buyer aliases ("Buyer 4821") are an HMAC under this key


@dataclass
class Session:
    context: SignalingContext
    role: str
    send: Send
    close: Callable[[int], None]
    site: SiteInfo | None = None  # callers
    origin: str | None = None  # callers: the (allowed) origin of the page the widget runs on
    queues: dict[str, QueueInfo] = field(default_factory=dict)  # callers: the site's queues, read at hello
    account_id: int | None = None  # agents
    account_name: str = ""
    hello_done: bool = False
    visitor_id: str | None = None
    session_id: str | None = None
    has_journey: bool = False
    active_call_id: str | None = None
    agent_link: AgentLink | None = None
    is_seller: bool = False  # an agent-role connection of a seller account (masked calls only)
    preflights: set[str] = field(default_factory=set)  # callers: echo sessions opened on this connection

    def own_call(self, call_id: str) -> None:
        """A caller acts only on the call started on this connection (not on one from another tab of theirs)."""
        if self.active_call_id != call_id:
            if self.context.switchboard.calls.get(call_id) is None:
                raise ProtocolError(NOT_FOUND, f"no active call {call_id}")
            raise ProtocolError(FORBIDDEN, "this call is not yours")

    async def handle_text(self, raw: str | bytes) -> None:
        msg_id: int | None = None
        try:
            data = parse_envelope(raw, self.context.max_message_bytes)
            msg_id = data["id"]
            reply = await self._dispatch(data)
            self.send(result(msg_id, reply))
        except ProtocolError as exc:
            self.send(error(exc.msg_id if exc.msg_id is not None else msg_id, exc.code, exc.message))
        except Exception:
            # One bad message must never take the connection (or another call) down with it.
            log.exception("signaling handler failed (role=%s)", self.role)
            self.send(error(msg_id, INTERNAL_ERROR, "the server could not handle this message"))

    async def _dispatch(self, data: dict[str, Any]) -> dict[str, Any] | None:
        handler = self.context.handlers.get(data["type"])
        if handler is None:
            raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {data['type'][:64]!r}")
        if self.role not in handler.roles:  # type: ignore[attr-defined]
            raise ProtocolError(FORBIDDEN, f"{data['type']} is not allowed for a {self.role}")
        is_hello = handler.before_hello  # type: ignore[attr-defined]
        if is_hello and self.hello_done:
            raise ProtocolError(ALREADY_HELLO, "hello was already sent on this connection")
        if not is_hello and not self.hello_done:
            raise ProtocolError(HELLO_REQUIRED, "send hello first")
        message = validate(handler.message_model, data)  # type: ignore[attr-defined]
        return await handler(self, message)

    async def closed(self) -> None:
        """The connection is gone: its call ends (a voicemail in progress is kept), its echo tests stop, its agent
        goes off duty."""
        context = self.context
        if self.active_call_id is not None:
            await context.switchboard.caller_gone(self.active_call_id)
            await context.voicemail.caller_gone(self.visitor_id or "", {self.active_call_id})
        for preflight_id in list(self.preflights):
            await context.echo.close(preflight_id)
        if self.agent_link is not None:
            await context.switchboard.agent_offline(self.agent_link)
