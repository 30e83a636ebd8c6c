"""The voicemail desk: after an unanswered call that offered it, the caller records a message for the seller (or the
queue), which is stored as a file and a row and announced to whoever is online to take it.

Flow (docs/protocol.md): `call.ended` carries `voicemail: {max_seconds}` → the caller sends `voicemail.start`, then
`rtc.offer` (answered by the server's recorder with `rtc.answer`) and `rtc.candidate`s for the same call id →
`voicemail.stop` (or the length limit, or hanging up / leaving) finishes it → the caller gets `voicemail.saved`,
the recipient's console `voicemail.new`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from signaling.call import Call
from signaling.callstore import CallStore
from signaling.protocol import FORBIDDEN, ILLEGAL_STATE, NOT_FOUND, ProtocolError, event
from signaling.heaptrim import HeapTrimmer
from signaling.recorder import VoicemailRecorder
from signaling.rtcpeer import MediaError
from talk import voicemails
from talk.types import CallState

log = logging.getLogger(__name__)

OFFER_SECONDS = 120.0  # how long after the call ended the caller may still start the voicemail
MAX_OFFERS = 10_000

Send = Callable[[dict[str, Any]], None]
# (queue id, recipient account id or None, event): tell the consoles that take this voicemail.
Notify = Callable[[int, int | None, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class _Offer:
    call_id: str
    visitor_id: str
    site_id: int
    queue_id: int
    recipient_id: int | None  # the seller of a masked call; None: the queue's agents
    listing: str | None
    buyer_alias: str
    expires: float


@dataclass
class _Recording:
    offer: _Offer
    voicemail_id: str
    recorder: VoicemailRecorder
    send: Send
    finished: asyncio.Task | None = None


class VoicemailDesk:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], callstore: CallStore, folder: Path,
                 ice_servers: list[dict[str, Any]], max_seconds: float, notify: Notify,
                 trimmer: HeapTrimmer | None = None) -> None:
        self._trimmer = trimmer
        self._sessionmaker = sessionmaker
        self._callstore = callstore
        self._folder = folder
        self._ice_servers = ice_servers
        self.max_seconds = max_seconds
        self._notify = notify
        self._offers: dict[str, _Offer] = {}
        self._recordings: dict[str, _Recording] = {}

    def call_changed(self, call: Call, recipient_id: int | None) -> None:
        """An ended call that offered voicemail: remember the offer for a while."""
        if call.state is not CallState.ENDED or not call.voicemail_offered:
            return
        now = time.monotonic()
        if len(self._offers) >= MAX_OFFERS:
            self._offers = {k: o for k, o in self._offers.items() if o.expires > now}
        self._offers[call.id] = _Offer(call.id, call.visitor_id, call.site_id, call.queue_id, recipient_id,
                                       call.listing, call.caller_label if call.masked else "Caller",
                                       now + OFFER_SECONDS)

    def is_recording(self, call_id: str) -> bool:
        return call_id in self._recordings

    async def start(self, call_id: str, visitor_id: str, send: Send) -> dict[str, Any]:
        if call_id in self._recordings:
            raise ProtocolError(ILLEGAL_STATE, "a voicemail for this call is already being recorded")
        offer = self._offers.get(call_id)
        if offer is None or offer.expires < time.monotonic():
            raise ProtocolError(NOT_FOUND, f"no voicemail can be left for call {call_id}")
        if offer.visitor_id != visitor_id:
            raise ProtocolError(FORBIDDEN, "this call is not yours")
        del self._offers[call_id]  # one voicemail per call
        voicemail_id = voicemails.new_voicemail_id()
        self._folder.mkdir(parents=True, exist_ok=True)
        recording = _Recording(offer, voicemail_id, None, send)  # type: ignore[arg-type]
        recording.recorder = VoicemailRecorder(
            self._ice_servers, self._folder / f"{voicemail_id}.wav", self.max_seconds,
            on_finished=lambda _seconds: self._finish_soon(recording))
        self._recordings[call_id] = recording
        return {"voicemail_id": voicemail_id, "max_seconds": self.max_seconds}

    def _recording(self, call_id: str, visitor_id: str) -> _Recording:
        recording = self._recordings.get(call_id)
        if recording is None:
            raise ProtocolError(NOT_FOUND, f"no voicemail being recorded for call {call_id}")
        if recording.offer.visitor_id != visitor_id:
            raise ProtocolError(FORBIDDEN, "this call is not yours")
        return recording

    async def negotiate(self, call_id: str, visitor_id: str, sdp: str) -> str:
        recording = self._recording(call_id, visitor_id)
        try:
            return await recording.recorder.negotiate(sdp)
        except MediaError:
            self._recordings.pop(call_id, None)  # the recorder stopped itself; nothing was recorded
            raise

    async def add_candidate(self, call_id: str, visitor_id: str, candidate: dict[str, Any] | None) -> None:
        await self._recording(call_id, visitor_id).recorder.add_candidate(candidate)

    async def stop(self, call_id: str, visitor_id: str) -> dict[str, Any]:
        recording = self._recording(call_id, visitor_id)
        return await self._finish_soon(recording)

    async def caller_gone(self, visitor_id: str, call_ids: set[str]) -> None:
        """The caller's connection closed: keep what was recorded so far."""
        for call_id in call_ids:
            recording = self._recordings.get(call_id)
            if recording is not None and recording.offer.visitor_id == visitor_id:
                await self._finish_soon(recording)

    def _finish_soon(self, recording: _Recording) -> asyncio.Task:
        if recording.finished is None:
            recording.finished = asyncio.ensure_future(self._finish(recording))
        return recording.finished

    async def _finish(self, recording: _Recording) -> dict[str, Any]:
        offer = recording.offer
        try:
            duration = await recording.recorder.stop()
            saved = {"call_id": offer.call_id, "voicemail_id": recording.voicemail_id, "duration": round(duration, 2)}
            if duration <= 0:
                recording.send(event("voicemail.saved", **saved, saved=False))
                return {**saved, "saved": False}
            await self._store(recording, duration)
            recording.send(event("voicemail.saved", **saved, saved=True))
            return {**saved, "saved": True}
        finally:
            self._recordings.pop(offer.call_id, None)
            if self._trimmer is not None:
                self._trimmer.request()

    async def _store(self, recording: _Recording, duration: float) -> None:
        offer = recording.offer
        await self._callstore.flush()  # the voicemail row refers to the call's row
        async with self._sessionmaker() as db, db.begin():
            row = await voicemails.add_voicemail(
                db, call_id=offer.call_id, site_id=offer.site_id, queue_id=offer.queue_id,
                recipient_id=offer.recipient_id, buyer_alias=offer.buyer_alias,
                file_name=recording.recorder.path.name, duration_seconds=duration, listing=offer.listing,
                voicemail_id=recording.voicemail_id)
            created_at = row.created_at
        announcement = event("voicemail.new", voicemail={
            "id": recording.voicemail_id, "listing": offer.listing, "buyer_alias": offer.buyer_alias,
            "duration_seconds": round(duration, 2), "created_at": created_at.isoformat(),
            "url": f"/voicemail/{recording.voicemail_id}.wav"})
        try:
            await self._notify(offer.queue_id, offer.recipient_id, announcement)
        except Exception:  # the voicemail is stored; a console that missed the news lists it on its next hello
            log.exception("could not announce voicemail %s", recording.voicemail_id)

    async def close_all(self) -> None:
        """Server stopping: finish every recording (what was recorded is kept)."""
        await asyncio.gather(*(self._finish_soon(r) for r in list(self._recordings.values())),
                             return_exceptions=True)
