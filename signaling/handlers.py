"""Handlers of the client messages, one per type (docs/protocol.md). Each returns the result payload."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select


from signaling.call import Call
from signaling.protocol import (
    BUSY, FORBIDDEN, INVALID_MESSAGE, NOT_FOUND, AgentAvailable, CallAnswer, CallDecline, CallDisposition, CallHangup,
    CallStart, Hello, Ping, ProtocolError,
    RtcAnswer, RtcCandidate, RtcOffer, event,
)
from signaling.session import AGENT, CALLER, Session, handles
from signaling.switchboard import AgentLink
from talk import directory
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
        "queues": [{"name": q.name, "display_name": q.display_name} for q in queues],
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
    queue = session.queues.get(msg.queue)
    if queue is None:
        raise ProtocolError(NOT_FOUND, f"this site has no queue {msg.queue!r}")
    page = msg.page
    call = Call(
        site_id=session.site.id,
        queue_id=queue.id,
        visitor_id=session.visitor_id,
        session_id=session.session_id,
        has_journey=session.has_journey,
        origin=session.origin,
        page_url=page.url if page else "",
        page_title=page.title if page else "",
        page_referrer=page.referrer if page else "",
        journey=None if session.has_journey else EMPTY_JOURNEY,
    )
    session.active_call_id = call.id
    await switchboard.start_call(call, queue, session.send)
    provider = session.context.journey_provider
    if call.journey is None and call.is_active and provider is not None:
        # Looked up after the ring went out, so the database never delays it; the console gets call.journey.
        switchboard.spawn(_load_journey, switchboard, provider, call)
    reason = call.end_reason.value if call.end_reason else None
    return {"call_id": call.id, "state": call.state.value, "reason": reason}


async def _load_journey(switchboard, provider, call: Call) -> None:
    await switchboard.attach_journey(call.id, await provider(call))


def _own_call(session: Session, call_id: str) -> None:
    """A caller acts only on the call started on this connection (not on one from another tab of theirs)."""
    if session.active_call_id != call_id:
        if session.context.switchboard.calls.get(call_id) is None:
            raise ProtocolError(NOT_FOUND, f"no active call {call_id}")
        raise ProtocolError(FORBIDDEN, "this call is not yours")


@handles(CallHangup, CALLER, AGENT)
async def call_hangup(session: Session, msg: CallHangup) -> None:
    if session.role == CALLER:
        _own_call(session, msg.call_id)
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


async def _relay(session: Session, call_id: str, message: dict[str, Any]) -> None:
    if session.role == AGENT:
        await session.context.switchboard.relay(call_id, message, agent_id=session.account_id)
    else:
        _own_call(session, call_id)
        await session.context.switchboard.relay(call_id, message, visitor_id=session.visitor_id)


@handles(RtcOffer, CALLER)
async def rtc_offer(session: Session, msg: RtcOffer) -> None:
    await _relay(session, msg.call_id, event("rtc.offer", call_id=msg.call_id, sdp=msg.sdp))


@handles(RtcAnswer, AGENT)
async def rtc_answer(session: Session, msg: RtcAnswer) -> None:
    await _relay(session, msg.call_id, event("rtc.answer", call_id=msg.call_id, sdp=msg.sdp))


@handles(RtcCandidate, CALLER, AGENT)
async def rtc_candidate(session: Session, msg: RtcCandidate) -> None:
    candidate = msg.candidate.model_dump(exclude_none=True) if msg.candidate else None
    await _relay(session, msg.call_id, event("rtc.candidate", call_id=msg.call_id, candidate=candidate))


HANDLERS = (
    hello, ping, call_start, call_hangup, call_answer, call_decline, call_disposition, agent_available, rtc_offer,
    rtc_answer, rtc_candidate,
)
