"""Webhooks: a site's URLs that receive `call.ended`, `survey.submitted` and `conversion.attributed` as signed JSON.

This module is the registry (register, list, enable, remove), the signature, and the durable outbox: `enqueue`
stores one delivery per matching active webhook in the caller's own transaction, so an event is on record exactly
when the thing it reports is. `talk.webhook_dispatcher` sends what is stored (retries, backoff, the delivery log).

URLs are registered by the operator only (`talk webhook add`), so a URL on the local network (or localhost) is
allowed. Should registration ever be opened to site owners, refuse private, loopback and link-local addresses at
connect time (after DNS resolution), or requests could be aimed at internal services (SSRF).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from talk.directory import DirectoryError, site_by_key
from talk.models import CallRecord, Queue, Site, SurveyAnswer, Webhook, WebhookDelivery

CALL_ENDED = "call.ended"
SURVEY_SUBMITTED = "survey.submitted"
CONVERSION_ATTRIBUTED = "conversion.attributed"
EVENT_TYPES = (CALL_ENDED, SURVEY_SUBMITTED, CONVERSION_ATTRIBUTED)

SIGNATURE_HEADER = "Talk-Signature"
TIMESTAMP_HEADER = "Talk-Timestamp"
EVENT_HEADER = "Talk-Event"
DELIVERY_HEADER = "Talk-Delivery"

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATUSES = (PENDING, DELIVERED, FAILED)

MAX_URL = 2048
SECRET_PREFIX = "whsec_"
SIGNATURE_TOLERANCE = 300  # seconds a receiver should accept between Talk-Timestamp and its own clock
MAX_ERROR = 300


class WebhookError(DirectoryError):
    """Bad input to a webhook operation (the CLI prints it as `talk: …`)."""


class WebhookNotFound(WebhookError):
    pass


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# ----- signing -----

def _bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def sign(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """`sha256=` + hex HMAC-SHA256, keyed with the webhook's secret, of `{timestamp}.{body}` (the exact body bytes)."""
    message = f"{timestamp}.".encode() + _bytes(body)
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str, body: bytes | str, signature: str, *,
           tolerance: float = SIGNATURE_TOLERANCE, now: float | None = None) -> bool:
    """What a receiver does: the signature matches (in constant time) and the timestamp is recent (no replays)."""
    if not isinstance(timestamp, str) or not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body).encode(), (signature or "").encode())


# ----- registry -----

def check_url(url: str) -> str:
    """http(s) with a host, at most 2048 characters, no credentials (they would show in every listing: the
    signature is the authentication), no fragment, no spaces or control characters."""
    url = url.strip()
    if not url or len(url) > MAX_URL:
        raise WebhookError(f"url: 1 to {MAX_URL} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise WebhookError("url: no spaces or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number or out of range
    except ValueError:
        raise WebhookError(f"url: not a URL: {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError("url: must be http:// or https:// with a host")
    if parts.username is not None or parts.password is not None:
        raise WebhookError("url: no user name or password in the URL; receivers check the signature instead")
    if parts.fragment:
        raise WebhookError("url: no #fragment")
    return url


def check_events(events: Iterable[str] | None) -> list[str]:
    """The events a webhook subscribes to, in the catalog's order; None or empty means all of them."""
    wanted = {e.strip() for e in events or () if e.strip()}
    unknown = wanted - set(EVENT_TYPES)
    if unknown:
        raise WebhookError(f"events: unknown {', '.join(sorted(unknown))} (known: {', '.join(EVENT_TYPES)})")
    return [e for e in EVENT_TYPES if e in wanted] if wanted else list(EVENT_TYPES)


async def register_webhook(db: AsyncSession, site_key: str, url: str, events: Iterable[str] | None = None,
                           now: datetime | None = None) -> Webhook:
    """A new active webhook with a fresh secret (show it to the operator now: it is never shown again)."""
    site = await site_by_key(db, site_key)
    webhook = Webhook(site_id=site.id, url=check_url(url), secret=SECRET_PREFIX + secrets.token_urlsafe(32),
                      events=check_events(events), active=True, created_at=now or utcnow())
    db.add(webhook)
    await db.flush()
    return webhook


async def webhook_by_id(db: AsyncSession, webhook_id: int) -> Webhook:
    webhook = await db.get(Webhook, webhook_id) if 0 < webhook_id < 2**31 else None
    if webhook is None:
        raise WebhookNotFound(f"no webhook with id {webhook_id}")
    return webhook


async def remove_webhook(db: AsyncSession, webhook_id: int) -> Webhook:
    """Removes the webhook and its delivery log; pending deliveries are not sent."""
    webhook = await webhook_by_id(db, webhook_id)
    await db.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook.id))
    await db.delete(webhook)
    await db.flush()
    return webhook


async def set_active(db: AsyncSession, webhook_id: int, active: bool) -> Webhook:
    """A disabled webhook gets no new events; its pending deliveries wait until it is enabled again."""
    webhook = await webhook_by_id(db, webhook_id)
    webhook.active = active
    await db.flush()
    return webhook


@dataclass(frozen=True)
class WebhookSummary:
    id: int
    site_key: str
    url: str
    events: list[str]
    active: bool
    created_at: datetime
    counts: dict[str, int]  # deliveries by status


async def list_webhooks(db: AsyncSession, webhook_id: int | None = None) -> list[WebhookSummary]:
    query = select(Webhook, Site.key).join(Site, Site.id == Webhook.site_id).order_by(Webhook.id)
    if webhook_id is not None:
        query = query.where(Webhook.id == webhook_id)
    rows = (await db.execute(query)).all()
    counts: dict[int, dict[str, int]] = {}
    ids = [w.id for w, _ in rows]
    if ids:
        for hook_id, status, n in await db.execute(
                select(WebhookDelivery.webhook_id, WebhookDelivery.status, func.count())
                .where(WebhookDelivery.webhook_id.in_(ids))
                .group_by(WebhookDelivery.webhook_id, WebhookDelivery.status)):
            counts.setdefault(hook_id, {})[status] = n
    return [WebhookSummary(w.id, key, w.url, list(w.events), w.active, w.created_at,
                           {s: counts.get(w.id, {}).get(s, 0) for s in STATUSES}) for w, key in rows]


async def list_deliveries(db: AsyncSession, webhook_id: int | None = None, status: str | None = None,
                          limit: int = 50, before_id: int | None = None) -> list[WebhookDelivery]:
    """The delivery log, newest first."""
    query = select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(limit)
    if webhook_id is not None:
        query = query.where(WebhookDelivery.webhook_id == webhook_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if before_id is not None:
        query = query.where(WebhookDelivery.id < before_id)
    return list(await db.scalars(query))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def delivery_json(delivery: WebhookDelivery, with_payload: bool = True) -> dict[str, Any]:
    body = {
        "id": delivery.id, "webhook_id": delivery.webhook_id, "event_id": delivery.event_id,
        "event_type": delivery.event_type, "status": delivery.status, "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code, "last_error": delivery.last_error,
        "created_at": _iso(delivery.created_at), "next_attempt_at": _iso(delivery.next_attempt_at),
        "delivered_at": _iso(delivery.delivered_at),
    }
    if with_payload:
        body["payload"] = delivery.payload
    return body


# ----- the outbox -----

def event_id(site_id: int, event_type: str, subject: str) -> str:
    """The same event always gets the same id (a call ends once, an order is recorded once): storing it twice is a
    no-op, and receivers can deduplicate on it (Talk-Delivery)."""
    digest = hashlib.sha256(f"{site_id}\n{event_type}\n{subject}".encode()).digest()
    return "evt_" + base64.urlsafe_b64encode(digest).decode()[:32]


async def enqueue(db: AsyncSession, site_id: int, event_type: str, subject: str, data: dict[str, Any], *,
                  visitor_id: str | None = None, now: datetime | None = None) -> int:
    """Store one pending delivery of the event for each active webhook of the site that subscribes to it, in the
    caller's transaction. Returns how many were new (wake the dispatcher after the commit when > 0)."""
    hooks = [w for w in await db.scalars(select(Webhook).where(Webhook.site_id == site_id, Webhook.active.is_(True)))
             if event_type in w.events]
    if not hooks:
        return 0
    now = now or utcnow()
    ident = event_id(site_id, event_type, subject)
    site_key = await db.scalar(select(Site.key).where(Site.id == site_id))
    payload = {"id": ident, "type": event_type, "created_at": now.isoformat(), "site": site_key, "data": data}
    rows = [{"webhook_id": w.id, "event_id": ident, "event_type": event_type, "payload": payload, "status": PENDING,
             "attempts": 0, "next_attempt_at": now, "visitor_id": visitor_id, "created_at": now} for w in hooks]
    insert = postgresql.insert if db.bind.dialect.name == "postgresql" else sqlite.insert
    statement = (insert(WebhookDelivery).values(rows)
                 .on_conflict_do_nothing(index_elements=["webhook_id", "event_id"]).returning(WebhookDelivery.id))
    return len((await db.execute(statement)).all())


def _parties(call: Mapping[str, Any], queue: Queue | None) -> dict[str, Any]:
    """Who took the call: an agent's account id, or for a masked call the seller's (never the buyer's identity)."""
    seller = call.get("channel") == "seller"
    return {"channel": call.get("channel") or "agent", "queue": queue.name if queue else None,
            "agent_id": None if seller else call.get("agent_id"),
            "seller_id": (queue.seller_id if queue else None) if seller else None}


async def enqueue_call_ended(db: AsyncSession, call: Mapping[str, Any]) -> int:
    """`call.ended` from a call's record (a CallRecord's columns, e.g. signaling's snapshot of the ended call).
    The visitor id only when the call was made with the visitor's consent (as in the call API); never an IP."""
    queue = await db.get(Queue, call["queue_id"])
    visitor_id = call["visitor_id"] if call.get("has_journey") else None
    data = {
        "call_id": call["id"], **_parties(call, queue), "listing": call.get("listing"),
        "end_reason": call.get("end_reason"), "disposition": call.get("disposition"),
        "landing_url": call.get("landing_url"), "created_at": _iso(call.get("created_at")),
        "ringing_at": _iso(call.get("ringing_at")), "answered_at": _iso(call.get("answered_at")),
        "ended_at": _iso(call.get("ended_at")), "visitor_id": visitor_id,
    }
    return await enqueue(db, call["site_id"], CALL_ENDED, call["id"], data, visitor_id=visitor_id)


async def enqueue_survey_submitted(db: AsyncSession, call_id: str) -> int:
    """`survey.submitted` for the call's (just stored) answer."""
    row = (await db.execute(
        select(CallRecord, SurveyAnswer, Queue).join(SurveyAnswer, SurveyAnswer.call_id == CallRecord.id)
        .join(Queue, Queue.id == CallRecord.queue_id).where(CallRecord.id == call_id))).first()
    if row is None:
        return 0
    call, answer, queue = row
    visitor_id = call.visitor_id if call.has_journey else None
    data = {"call_id": call.id, **_parties({"channel": call.channel, "agent_id": call.agent_id}, queue),
            "rating": answer.rating, "comment": answer.comment, "created_at": _iso(answer.created_at),
            "visitor_id": visitor_id}
    return await enqueue(db, call.site_id, SURVEY_SUBMITTED, call.id, data, visitor_id=visitor_id)


async def attributed_call_ids(db: AsyncSession, site_id: int, visitor_id: str, ts: datetime,
                              window: timedelta) -> list[str]:
    """The visitor's calls a purchase at `ts` is attributed to: those that ended within the attribution window
    before it. The same rule as analytics.journey.conversions_after (which reads it from the call's side)."""
    return list(await db.scalars(
        select(CallRecord.id)
        .where(CallRecord.site_id == site_id, CallRecord.visitor_id == visitor_id, CallRecord.ended_at.is_not(None),
               CallRecord.ended_at < ts, CallRecord.ended_at >= ts - window)
        .order_by(CallRecord.ended_at, CallRecord.id)))


async def enqueue_conversion_attributed(db: AsyncSession, *, site_id: int, visitor_id: str, order_id: str,
                                        value: float, currency: str, ts: datetime, origin: str,
                                        window: timedelta) -> int:
    """`conversion.attributed` when the purchase just recorded is attributed to at least one call."""
    call_ids = await attributed_call_ids(db, site_id, visitor_id, ts, window)
    if not call_ids:
        return 0
    data = {"order_id": order_id, "value": value, "currency": currency, "ts": _iso(ts), "origin": origin,
            "visitor_id": visitor_id, "call_ids": call_ids}
    return await enqueue(db, site_id, CONVERSION_ATTRIBUTED, order_id, data, visitor_id=visitor_id, now=ts)


# ----- privacy -----

async def forget_visitor(db: AsyncSession, visitor_id: str) -> int:
    """Delete the deliveries about a visitor (sent or not): part of forgetting them."""
    return (await db.execute(delete(WebhookDelivery).where(WebhookDelivery.visitor_id == visitor_id))).rowcount


async def prune_deliveries(db: AsyncSession, before: datetime) -> int:
    """Delete the log of deliveries created before `before` that are no longer pending (retention)."""
    return (await db.execute(delete(WebhookDelivery).where(
        WebhookDelivery.created_at < before, WebhookDelivery.status != PENDING))).rowcount
