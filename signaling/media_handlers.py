"""Handlers of the media messages (docs/protocol.md): WebRTC negotiation, voicemail, pre-flight checks, and the
consoles' voicemail inbox.

An `rtc.offer` goes to one of three places: a voicemail being recorded (the server's recorder answers), a masked
seller call (the server's bridge answers each side's offer with its own leg: neither side ever sees the other's SDP
or candidates), or an ordinary agent call (relayed peer to peer).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from signaling.bridge import Leg
from signaling.protocol import (
    FORBIDDEN, MEDIA_ERROR, NOT_FOUND, PreflightCandidate, PreflightStart, PreflightStop, ProtocolError, RtcAnswer,
    RtcCandidate, RtcOffer, VoicemailHandled, VoicemailList, VoicemailStart, VoicemailStop, event,
)
from signaling.rtcpeer import MediaError
from signaling.session import AGENT, CALLER, Session, handles
from talk import voicemails
from talk.directory import DirectoryError

T = TypeVar("T")


async def _media(step: Awaitable[T]) -> T:
    try:
        return await step
    except MediaError as exc:
        raise ProtocolError(MEDIA_ERROR, str(exc)) from None


def _leg(session: Session) -> Leg:
    return Leg.CALLER if session.role == CALLER else Leg.CALLEE


def _party(session: Session) -> dict[str, Any]:
    return {"agent_id": session.account_id} if session.role == AGENT else {"visitor_id": session.visitor_id}


def _recording_voicemail(session: Session, call_id: str) -> bool:
    return session.role == CALLER and session.active_call_id == call_id \
        and session.context.voicemail.is_recording(call_id)


@handles(RtcOffer, CALLER, AGENT)
async def rtc_offer(session: Session, msg: RtcOffer) -> None:
    context = session.context
    if _recording_voicemail(session, msg.call_id):
        answer = await _media(context.voicemail.negotiate(msg.call_id, session.visitor_id or "", msg.sdp))
        session.send(event("rtc.answer", call_id=msg.call_id, sdp=answer))
        return
    if session.role == CALLER:
        session.own_call(msg.call_id)
    call = context.switchboard.connected_call(msg.call_id, **_party(session))
    if call.masked:
        answer = await _media(context.bridge.negotiate(call.id, _leg(session), msg.sdp))
        session.send(event("rtc.answer", call_id=call.id, sdp=answer))
        return
    if session.role == AGENT:
        raise ProtocolError(FORBIDDEN, "in an agent call the caller makes the offer; answer it with rtc.answer")
    await context.switchboard.relay(msg.call_id, event("rtc.offer", call_id=msg.call_id, sdp=msg.sdp),
                                    visitor_id=session.visitor_id)


@handles(RtcAnswer, AGENT)
async def rtc_answer(session: Session, msg: RtcAnswer) -> None:
    await session.context.switchboard.relay(msg.call_id, event("rtc.answer", call_id=msg.call_id, sdp=msg.sdp),
                                            agent_id=session.account_id)


@handles(RtcCandidate, CALLER, AGENT)
async def rtc_candidate(session: Session, msg: RtcCandidate) -> None:
    context = session.context
    candidate = msg.candidate.model_dump(exclude_none=True) if msg.candidate else None
    if _recording_voicemail(session, msg.call_id):
        await _media(context.voicemail.add_candidate(msg.call_id, session.visitor_id or "", candidate))
        return
    if session.role == CALLER:
        session.own_call(msg.call_id)
    call = context.switchboard.connected_call(msg.call_id, **_party(session))
    if call.masked:
        await _media(context.bridge.add_candidate(call.id, _leg(session), candidate))
        return
    await context.switchboard.relay(msg.call_id, event("rtc.candidate", call_id=msg.call_id, candidate=candidate),
                                    **_party(session))


# ----- voicemail (callers record; consoles list and handle) -----

@handles(VoicemailStart, CALLER)
async def voicemail_start(session: Session, msg: VoicemailStart) -> dict[str, Any]:
    if session.active_call_id != msg.call_id:
        raise ProtocolError(NOT_FOUND, f"no voicemail can be left for call {msg.call_id}")
    return await session.context.voicemail.start(msg.call_id, session.visitor_id or "", session.send)


@handles(VoicemailStop, CALLER)
async def voicemail_stop(session: Session, msg: VoicemailStop) -> dict[str, Any]:
    if session.active_call_id != msg.call_id:
        raise ProtocolError(NOT_FOUND, f"no voicemail being recorded for call {msg.call_id}")
    return await session.context.voicemail.stop(msg.call_id, session.visitor_id or "")


def voicemail_json(info: voicemails.VoicemailInfo) -> dict[str, Any]:
    return {
        "id": info.id, "queue": info.queue_display_name, "listing": info.listing, "label": info.label,
        "buyer_alias": info.buyer_alias, "duration_seconds": round(info.duration_seconds, 2),
        "created_at": info.created_at.isoformat(), "handled": info.handled_at is not None,
        "url": f"/voicemail/{info.id}.wav",
    }


@handles(VoicemailList, AGENT)
async def voicemail_list(session: Session, msg: VoicemailList) -> dict[str, Any]:
    async with session.context.sessionmaker() as db:
        found = await voicemails.voicemails_for(db, session.account_id, include_handled=msg.include_handled)
    return {"voicemails": [voicemail_json(v) for v in found]}


@handles(VoicemailHandled, AGENT)
async def voicemail_handled(session: Session, msg: VoicemailHandled) -> dict[str, Any]:
    try:
        async with session.context.sessionmaker() as db, db.begin():
            await voicemails.mark_handled(db, msg.voicemail_id, session.account_id)
    except DirectoryError as exc:
        raise ProtocolError(NOT_FOUND, str(exc)) from None
    return {"handled": True}


# ----- pre-flight echo -----

@handles(PreflightStart, CALLER)
async def preflight_start(session: Session, msg: PreflightStart) -> dict[str, Any]:
    for old in list(session.preflights):  # one check per connection: a new one replaces the last (ended or not)
        session.preflights.discard(old)
        await session.context.echo.close(old)
    preflight_id, answer = await _media(session.context.echo.negotiate(msg.sdp))
    session.preflights.add(preflight_id)
    return {"preflight_id": preflight_id, "sdp": answer}


def _own_preflight(session: Session, preflight_id: str) -> None:
    if preflight_id not in session.preflights:
        raise ProtocolError(NOT_FOUND, f"no pre-flight check {preflight_id} on this connection")


@handles(PreflightCandidate, CALLER)
async def preflight_candidate(session: Session, msg: PreflightCandidate) -> None:
    _own_preflight(session, msg.preflight_id)
    candidate = msg.candidate.model_dump(exclude_none=True) if msg.candidate else None
    await _media(session.context.echo.add_candidate(msg.preflight_id, candidate))


@handles(PreflightStop, CALLER)
async def preflight_stop(session: Session, msg: PreflightStop) -> None:
    _own_preflight(session, msg.preflight_id)
    session.preflights.discard(msg.preflight_id)
    await session.context.echo.close(msg.preflight_id)


MEDIA_HANDLERS = (
    rtc_offer, rtc_answer, rtc_candidate, voicemail_start, voicemail_stop, voicemail_list, voicemail_handled,
    preflight_start, preflight_candidate, preflight_stop,
)
