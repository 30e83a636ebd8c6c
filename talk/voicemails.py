"""Voicemail records: who a message is for, listing and buyer alias, where its audio file is, handled or not.

The audio is a standard audio file under <data_dir>/voicemail/ (the recorder in signaling writes it; `file_name`
is relative to that folder). A voicemail left for a seller (through a masked endpoint) has the seller as
recipient; one left in an agent queue has no recipient and belongs to every member of the queue.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from talk.directory import utcnow
from talk.models import CallRecord, Queue, QueueMember, SellerEndpoint, Voicemail
from talk.sellers import NotAllowed, NotFound, clean_text

VOICEMAIL_DIR = "voicemail"
VOICEMAIL_PREFIX = "vm_"
FILE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$")  # one plain file in the folder: no path, no '..'


@dataclass(frozen=True)
class VoicemailInfo:
    """A voicemail as the console lists it: never the buyer's identity, only the alias."""

    id: str
    queue_id: int
    queue_display_name: str
    listing: str | None
    label: str | None  # the listing's label on the endpoint the buyer called, when the call came through one
    buyer_alias: str
    duration_seconds: float
    created_at: datetime
    handled_at: datetime | None
    for_seller: bool


def new_voicemail_id() -> str:
    return VOICEMAIL_PREFIX + secrets.token_urlsafe(16)


def voicemail_dir(data_dir: Path) -> Path:
    return Path(data_dir) / VOICEMAIL_DIR


def check_file_name(file_name: str) -> str:
    if not FILE_NAME.match(file_name) or ".." in file_name:
        raise ValueError(f"not a plain file name in the voicemail folder: {file_name!r}")
    return file_name


async def add_voicemail(db: AsyncSession, *, call_id: str, site_id: int, queue_id: int, recipient_id: int | None,
                        buyer_alias: str, file_name: str, duration_seconds: float, listing: str | None = None,
                        voicemail_id: str | None = None, created_at: datetime | None = None) -> Voicemail:
    """Record a finished voicemail. The call's record must be stored first (flush the call store)."""
    voicemail = Voicemail(
        id=voicemail_id or new_voicemail_id(), call_id=call_id, site_id=site_id, queue_id=queue_id,
        recipient_id=recipient_id, listing=clean_text(listing, "listing"), buyer_alias=buyer_alias[:40],
        file_name=check_file_name(file_name), duration_seconds=max(0.0, float(duration_seconds)),
        created_at=created_at or utcnow(),
    )
    db.add(voicemail)
    await db.flush()
    return voicemail


def _visible_to(account_id: int):
    """A seller's own voicemails, and the recipient-less voicemails of the queues the account answers."""
    member_queues = select(QueueMember.queue_id).where(QueueMember.account_id == account_id)
    return or_(Voicemail.recipient_id == account_id,
               Voicemail.recipient_id.is_(None) & Voicemail.queue_id.in_(member_queues))


async def voicemails_for(db: AsyncSession, account_id: int, include_handled: bool = False) -> list[VoicemailInfo]:
    """The account's voicemails, newest first."""
    # The call tells which endpoint (and so which listing label) the buyer came through.
    statement = (select(Voicemail, Queue.display_name, SellerEndpoint.label)
                 .join(Queue, Queue.id == Voicemail.queue_id)
                 .join(CallRecord, CallRecord.id == Voicemail.call_id)
                 .outerjoin(SellerEndpoint, SellerEndpoint.id == CallRecord.endpoint_id)
                 .where(_visible_to(account_id))
                 .order_by(Voicemail.created_at.desc(), Voicemail.id))
    if not include_handled:
        statement = statement.where(Voicemail.handled_at.is_(None))
    return [
        VoicemailInfo(vm.id, vm.queue_id, queue_name, vm.listing, label, vm.buyer_alias, vm.duration_seconds,
                      vm.created_at, vm.handled_at, vm.recipient_id is not None)
        for vm, queue_name, label in (await db.execute(statement)).all()
    ]


async def _accessible(db: AsyncSession, voicemail_id: str, account_id: int) -> Voicemail:
    voicemail = await db.get(Voicemail, voicemail_id[:40])
    if voicemail is None:
        raise NotFound("no voicemail with this id")
    allowed = await db.scalar(select(Voicemail.id).where(Voicemail.id == voicemail.id, _visible_to(account_id)))
    if allowed is None:
        raise NotAllowed("this voicemail is not for you")
    return voicemail


async def mark_handled(db: AsyncSession, voicemail_id: str, account_id: int) -> Voicemail:
    """Mark as handled (idempotent: the first time and account stay)."""
    voicemail = await _accessible(db, voicemail_id, account_id)
    if voicemail.handled_at is None:
        voicemail.handled_at = utcnow()
        voicemail.handled_by = account_id
        await db.flush()
    return voicemail


async def voicemail_for_download(db: AsyncSession, voicemail_id: str, account_id: int, data_dir: Path) -> Path:
    """The audio file of a voicemail the account may hear; NotFound when the row or the file is gone."""
    voicemail = await _accessible(db, voicemail_id, account_id)
    folder = voicemail_dir(data_dir).resolve()
    path = (folder / check_file_name(voicemail.file_name)).resolve()
    if path.parent != folder or not path.is_file():
        raise NotFound("the voicemail's audio file is missing")
    return path
