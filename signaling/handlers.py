"""Handlers of the client messages, one per type (docs/protocol.md). Each returns the result payload."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select

from signaling.call import Call
from signaling.protocol import (
    BUSY, ENDPOINT_UNAVAILABLE, FORBIDDEN, INVALID_MESSAGE, NOT_FOUND, AgentAvailable, CallAnswer, CallDecline,
    CallDisposition, CallHangup, CallStart, Hello, Ping, ProtocolError,
)
from signaling.session import AGENT, CALLER, Session, handles
from signaling.switchboard import AgentLink
from talk import directory, sellers
from talk.models import Account, CallRecord, Disposition


EMPTY_JOURNEY = {"pages": [], "source": None, "earlier_calls": []}


def _queue_json(queue: directory.QueueInfo) -> dict[str, Any]:
    return {"name": queue.name, "display_name": queue.display_name, "dispositions": queue.disposition_names}


@handles(Hello, CALLER, AGENT, before_hello=True)
async def hello(session: Session, msg: Hello) -> dict[str, Any]:
    if session.role == CALLER:
        return await _caller_hello(session, msg)
    return await _agent_hello(session)


async def _caller_hello(session: Session, msg: Hello) -> dict[str, Any]:
    # The widget's own anonymous ids join calls to journeys; without them (no consent) this connection gets a
    # throwaway id and its calls no journey.
    session.has_journey = msg.visitor_id is not None and msg.session_id is not None
    session.visitor_id = msg.visitor_id if session.has_journey else f"v_{secrets.token_urlsafe(16)}"
    session.session_id = msg.session_id if session.has_journey else None
    async with session.context.sessionmaker() as db:
        queues = await directory.site_queues(db, session.site.id)
    session.queues = {q.name: q for q in queues}  # call.start looks here: no query on the way to the ring
    session.hello_done = True
    return {
        "visitor_id": session.visitor_id,
        "ice_servers": session.context.ice_servers,
        # Sellers' private queues are reached only through their masked endpoints: never listed.
        "queues": [{"name": q.name, "display_name": q.display_name} for q in queues
                   if q.kind == directory.AGENT_QUEUE],
    }


async def _agent_hello(session: Session) -> dict[str, Any]:
    async with session.context.sessionmaker() as db:
        account = await db.get(Account, session.account_id)
        queues = await directory.agent_queues(db, session.account_id)
    link = AgentLink(account.id, account.name, session.send, session.close)
    await session.context.switchboard.agent_online(link, queues)
    session.agent_link = link
    session.account_name = account.name
    session.hello_done = True
    return {
        "account": {"id": account.id, "name": account.name, "email": account.email},
        "queues": [_queue_json(q) for q in queues],
        "available": False,
        "ice_servers": session.context.ice_servers,
        "ring_timeout": session.context.ring_timeout,
    }


@handles(Ping, CALLER, AGENT)
async def ping(session: Session, msg: Ping) -> dict[str, Any]:
    return {"pong": True}


@handles(CallStart, CALLER)
async def call_start(session: Session, msg: CallStart) -> dict[str, Any]:
    switchboard = session.context.switchboard
    current = switchboard.calls.get(session.active_call_id or "")
    if current is not None and current.is_active:
        raise ProtocolError(BUSY, f"call {current.id} is still {current.state.value}; hang up first")
    page = msg.page
    call = Call(
        site_id=session.site.id,
        queue_id=0,
        visitor_id=session.visitor_id,
        session_id=session.session_id,
        has_journey=session.has_journey,
        origin=session.origin,
        page_url=page.url if page else "",
        page_title=page.title if page else "",
        page_referrer=page.referrer if page else "",
        journey=None if session.has_journey else EMPTY_JOURNEY,
    )
    queue = await _seller_queue(session, msg, call) if msg.seller else _agent_queue(session, msg.queue or "")
    call.queue_id = queue.id
    session.active_call_id = call.id
    await switchboard.start_call(call, queue, session.send)
    provider = session.context.journey_provider
    if call.journey is None and call.is_active and provider is not None and not call.masked:
        # Looked up after the ring went out, so the database never delays it; the console gets call.journey.
        switchboard.spawn(_load_journey, switchboard, provider, call)
    reason = call.end_reason.value if call.end_reason else None
    return {"call_id": call.id, "state": call.state.value, "reason": reason}


def _agent_queue(session: Session, name: str) -> directory.QueueInfo:
    queue = session.queues.get(name)
    if queue is None or queue.kind != directory.AGENT_QUEUE:
        raise ProtocolError(NOT_FOUND, f"this site has no queue {name!r}")
    return queue


async def _seller_queue(session: Session, msg: CallStart, call: Call) -> directory.QueueInfo:
    """A masked call through an endpoint token: the seller's private queue; the call learns the seller's public
    name and the buyer's alias, which is all each side will see of the other."""
    now = datetime.now(timezone.utc)
    async with session.context.sessionmaker() as db:
        try:
            endpoint = await sellers.resolve_endpoint(db, msg.seller or "", now)
            if endpoint.site_id != session.site.id:
                raise sellers.EndpointUnavailable("unknown")
        except sellers.EndpointUnavailable as exc:
            if exc.endpoint_id is not None and exc.site_id == session.site.id:
                await _record_refusal(session, exc)
            raise ProtocolError(ENDPOINT_UNAVAILABLE, exc.message) from None
    queue = next((q for q in session.queues.values() if q.id == endpoint.queue_id), None)
    if queue is None:  # the endpoint was made after this connection's hello
        async with session.context.sessionmaker() as db:
            session.queues = {q.name: q for q in await directory.site_queues(db, session.site.id)}
        queue = next((q for q in session.queues.values() if q.id == endpoint.queue_id), None)
    if queue is None:
        raise ProtocolError(ENDPOINT_UNAVAILABLE, sellers.EndpointUnavailable.MESSAGES["unknown"])
    call.channel = "seller"
    call.endpoint_id = endpoint.endpoint_id
    call.seller_id = endpoint.seller_id
    call.listing = endpoint.listing or msg.listing
    call.seller_name = endpoint.seller_public_name
    call.caller_label = sellers.buyer_alias(session.context.alias_key, session.visitor_id, endpoint.seller_id)
    return queue


async def _record_refusal(session: Session, exc: "sellers.EndpointUnavailable") -> None:
    visitor = session.visitor_id if session.has_journey else None
    async with session.context.sessionmaker() as db, db.begin():
        await sellers.record_refusal(db, exc.endpoint_id, exc.site_id, visitor, exc.reason)


async def _load_journey(switchboard, provider, call: Call) -> None:
    await switchboard.attach_journey(call.id, await provider(call))


@handles(CallHangup, CALLER, AGENT)
async def call_hangup(session: Session, msg: CallHangup) -> None:
    if session.role == CALLER:
        session.own_call(msg.call_id)
        await session.context.switchboard.caller_hangup(msg.call_id, session.visitor_id)
    else:
        await session.context.switchboard.agent_hangup(msg.call_id, session.account_id)


@handles(CallAnswer, AGENT)
async def call_answer(session: Session, msg: CallAnswer) -> None:
    await session.context.switchboard.answer(msg.call_id, session.account_id)


@handles(CallDecline, AGENT)
async def call_decline(session: Session, msg: CallDecline) -> None:
    await session.context.switchboard.decline(msg.call_id, session.account_id)


@handles(CallDisposition, AGENT)
async def call_disposition(session: Session, msg: CallDisposition) -> None:
    if await session.context.switchboard.set_disposition(msg.call_id, session.account_id, msg.disposition):
        return
    # The call has ended: change its record (after the store has written the final snapshot, which it would
    # otherwise overwrite).
    await session.context.callstore.flush()
    async with session.context.sessionmaker() as db, db.begin():
        record = await db.get(CallRecord, msg.call_id)
        if record is None or record.answered_at is None:
            raise ProtocolError(NOT_FOUND, f"no answered call {msg.call_id}")
        if record.agent_id != session.account_id:
            raise ProtocolError(FORBIDDEN, "only the agent who took the call can set its disposition")
        names = set(await db.scalars(select(Disposition.name).where(Disposition.queue_id == record.queue_id)))
        if msg.disposition not in names:
            raise ProtocolError(INVALID_MESSAGE, f"disposition: not one of this queue's: {sorted(names)}")
        record.disposition = msg.disposition


@handles(AgentAvailable, AGENT)
async def agent_available(session: Session, msg: AgentAvailable) -> dict[str, Any]:
    available = await session.context.switchboard.set_available(session.account_id, msg.available)
    return {"available": available}


CALL_HANDLERS = (
    hello, ping, call_start, call_hangup, call_answer, call_decline, call_disposition, agent_available,
)
