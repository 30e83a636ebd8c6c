"""Sellers and their masked endpoints: who a buyer calls without either side learning the other's identity.

A seller is an account (role seller) with a public name. On each site it sells on it has one private queue (kind
'seller', named seller-<account id>, the seller its only member), so seller calls ring through the same
queue machinery as agent calls. A masked endpoint is an opaque token (`se_…`) on a call button, call link or QR
code that leads to that queue: revocable, optionally expiring, optionally tied to a listing. A buyer who tries a
revoked or expired token gets a clear message and the attempt is recorded (`endpoint_refusals`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from talk import directory
from talk.directory import SELLER_QUEUE, SELLER_QUEUE_PREFIX, DirectoryError, utcnow
from talk.models import Account, EndpointRefusal, Queue, QueueMember, SellerEndpoint, Site
from talk.types import Role

ENDPOINT_TOKEN_PREFIX = "se_"
MAX_TOKEN = 48
MAX_TEXT = 120  # listing, label, public name
REFUSAL_QUIET = timedelta(seconds=60)  # one refusal per endpoint and visitor a minute: reloads don't flood the table
VISITOR_ID = re.compile(r"^v_[A-Za-z0-9_-]{16,40}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class NotFound(DirectoryError):
    """No such seller, endpoint or voicemail."""


class InvalidField(DirectoryError):
    """One input is not acceptable; `field` names it (the API's field name)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotAllowed(DirectoryError):
    """The account may not do this (another seller's voicemail, a queue it is not a member of)."""


class EndpointUnavailable(DirectoryError):
    """A masked endpoint a buyer cannot call; the message is for the buyer."""

    MESSAGES = {
        "unknown": "This call link is not valid. Check that it was copied completely.",
        "revoked": "This seller can no longer be called through this link.",
        "expired": "This call link has expired. Please contact the seller through the site for a new one.",
    }

    def __init__(self, reason: str, endpoint_id: int | None = None, site_id: int | None = None) -> None:
        super().__init__(self.MESSAGES[reason])
        self.reason = reason
        self.endpoint_id = endpoint_id  # set for 'revoked' and 'expired', so the attempt can be recorded
        self.site_id = site_id

    @property
    def message(self) -> str:
        return str(self)


@dataclass(frozen=True)
class EndpointInfo:
    """What a live masked endpoint leads to: enough to start a call, and nothing about the seller but the public
    name."""

    endpoint_id: int
    token: str
    site_id: int
    queue_id: int
    seller_id: int
    seller_public_name: str
    listing: str | None
    label: str | None = None


@dataclass(frozen=True)
class EndpointSummary:
    """One endpoint as the admin sees it (CLI, API)."""

    token: str
    seller_email: str
    seller_public_name: str
    site_key: str
    listing: str | None
    label: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class CallTarget:
    """What a standalone call page (/c/<token>) calls: an agent queue, or a seller through a masked endpoint."""

    kind: str  # "queue" or "endpoint"
    site_key: str
    display_name: str  # the queue's display name, or the seller's public name
    queue_name: str | None = None
    endpoint: EndpointInfo | None = None


def new_endpoint_token() -> str:
    return ENDPOINT_TOKEN_PREFIX + secrets.token_urlsafe(24)


def public_name_of(account: Account) -> str:
    return account.public_name or account.name


def seller_queue_name(seller_id: int) -> str:
    return f"{SELLER_QUEUE_PREFIX}{seller_id}"


def buyer_alias(secret: bytes, visitor_id: str, seller_id: int) -> str:
    """'Buyer 4821': what a seller calls a buyer. Stable per buyer and seller, unrelated across sellers (so two
    sellers cannot match up a buyer), and the visitor id cannot be recovered from it."""
    digest = hmac.new(secret, f"buyer-alias\x00{seller_id}\x00{visitor_id}".encode(), hashlib.sha256).digest()
    return f"Buyer {1000 + int.from_bytes(digest[:8], 'big') % 9000}"


def clean_text(value: str | None, field: str, required: bool = False) -> str | None:
    """Trimmed text of at most 120 characters without control characters; '' is None unless required."""
    value = (value or "").strip()
    if not value:
        if required:
            raise InvalidField(field, "required")
        return None
    if len(value) > MAX_TEXT:
        raise InvalidField(field, f"at most {MAX_TEXT} characters")
    if _CONTROL.search(value):
        raise InvalidField(field, "no control characters (line breaks, tabs, …)")
    return value


def parse_expiry(value: str) -> datetime:
    """'2027-01-31', '2027-01-31T00:00Z', '2027-01-31T12:00+01:00': an aware UTC datetime (no zone means UTC)."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except (ValueError, OverflowError):
        raise InvalidField("expires_at", f"not an ISO date or datetime: {value[:40]!r}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


async def seller_by_email(db: AsyncSession, email: str) -> Account:
    account = await db.scalar(select(Account).where(Account.email == email.strip().lower()))
    if account is None:
        raise NotFound(f"no account {email}")
    if account.role != Role.SELLER:
        raise InvalidField("seller", f"{account.email} is an account of role {account.role}, not a seller")
    return account


async def seller_queue(db: AsyncSession, seller_id: int, site_id: int) -> Queue | None:
    return await db.scalar(select(Queue).where(Queue.site_id == site_id, Queue.kind == SELLER_QUEUE,
                                               Queue.seller_id == seller_id))


async def _ensure_seller_queue(db: AsyncSession, seller: Account, site: Site) -> Queue:
    queue = await seller_queue(db, seller.id, site.id)
    if queue is None:
        queue = Queue(site_id=site.id, name=seller_queue_name(seller.id), display_name=public_name_of(seller),
                      kind=SELLER_QUEUE, seller_id=seller.id, created_at=utcnow())
        db.add(queue)
        await db.flush()
        db.add(QueueMember(queue_id=queue.id, account_id=seller.id))
        await db.flush()
    return queue


async def create_seller(db: AsyncSession, site_key: str, email: str, name: str, password: str,
                        public_name: str) -> Account:
    """A seller account with its private queue on the site."""
    site = await directory.site_by_key(db, site_key)
    public_name = clean_text(public_name, "public_name", required=True)
    account = await directory.create_account(db, email, name, password, Role.SELLER)
    account.public_name = public_name
    await _ensure_seller_queue(db, account, site)
    return account


async def add_seller_site(db: AsyncSession, email: str, site_key: str) -> Queue:
    """The seller also sells on another site: its queue there (idempotent)."""
    site = await directory.site_by_key(db, site_key)
    return await _ensure_seller_queue(db, await seller_by_email(db, email), site)


async def set_public_name(db: AsyncSession, email: str, public_name: str) -> Account:
    """Rename the seller for buyers, on every site."""
    seller = await seller_by_email(db, email)
    seller.public_name = clean_text(public_name, "public_name", required=True)
    for queue in await db.scalars(select(Queue).where(Queue.kind == SELLER_QUEUE, Queue.seller_id == seller.id)):
        queue.display_name = seller.public_name
    await db.flush()
    return seller


async def create_endpoint(db: AsyncSession, seller_email: str, site_key: str, listing: str | None = None,
                          label: str | None = None, expires_at: datetime | None = None,
                          now: datetime | None = None) -> SellerEndpoint:
    seller = await seller_by_email(db, seller_email)
    site = await directory.site_by_key(db, site_key)
    queue = await seller_queue(db, seller.id, site.id)
    if queue is None:
        raise InvalidField("seller", f"{seller.email} does not sell on site {site_key} (talk seller add-site)")
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidField("expires_at", "needs a time zone (e.g. 2027-01-31T00:00Z)")
        if expires_at <= (now or utcnow()):
            raise InvalidField("expires_at", "in the past")
    endpoint = SellerEndpoint(token=new_endpoint_token(), seller_id=seller.id, site_id=site.id, queue_id=queue.id,
                              listing=clean_text(listing, "listing"), label=clean_text(label, "label"),
                              created_at=now or utcnow(), expires_at=expires_at)
    db.add(endpoint)
    await db.flush()
    return endpoint


async def _endpoint(db: AsyncSession, token: str) -> SellerEndpoint | None:
    if not token.startswith(ENDPOINT_TOKEN_PREFIX) or len(token) > MAX_TOKEN:
        return None  # not one of ours: no query
    return await db.scalar(select(SellerEndpoint).where(SellerEndpoint.token == token))


async def revoke_endpoint(db: AsyncSession, token: str, now: datetime | None = None) -> SellerEndpoint:
    """Revoke for good (idempotent: revoking twice keeps the first time)."""
    endpoint = await _endpoint(db, token)
    if endpoint is None:
        raise NotFound("no masked endpoint with this token")
    if endpoint.revoked_at is None:
        endpoint.revoked_at = now or utcnow()
        await db.flush()
    return endpoint


def _summaries_query():
    return (select(SellerEndpoint, Account, Site.key)
            .join(Account, Account.id == SellerEndpoint.seller_id).join(Site, Site.id == SellerEndpoint.site_id))


def _summary(endpoint: SellerEndpoint, seller: Account, site_key: str) -> EndpointSummary:
    return EndpointSummary(endpoint.token, seller.email, public_name_of(seller), site_key, endpoint.listing,
                           endpoint.label, endpoint.created_at, endpoint.expires_at, endpoint.revoked_at)


async def endpoint_summary(db: AsyncSession, token: str) -> EndpointSummary:
    row = (await db.execute(_summaries_query().where(SellerEndpoint.token == token[:MAX_TOKEN]))).first()
    if row is None:
        raise NotFound("no masked endpoint with this token")
    return _summary(*row)


async def list_endpoints(db: AsyncSession, seller_email: str | None = None) -> list[EndpointSummary]:
    """Every endpoint (of one seller), oldest first."""
    statement = _summaries_query().order_by(SellerEndpoint.id)
    if seller_email is not None:
        statement = statement.where(SellerEndpoint.seller_id == (await seller_by_email(db, seller_email)).id)
    return [_summary(*row) for row in (await db.execute(statement)).all()]


async def resolve_endpoint(db: AsyncSession, token: str, now: datetime) -> EndpointInfo:
    """The live endpoint behind a token, or EndpointUnavailable('unknown' | 'revoked' | 'expired')."""
    endpoint = await _endpoint(db, token)
    if endpoint is None:
        raise EndpointUnavailable("unknown")
    if endpoint.revoked_at is not None:
        raise EndpointUnavailable("revoked", endpoint.id, endpoint.site_id)
    if endpoint.expires_at is not None and endpoint.expires_at <= now:
        raise EndpointUnavailable("expired", endpoint.id, endpoint.site_id)
    seller = await db.get(Account, endpoint.seller_id)
    return EndpointInfo(endpoint.id, endpoint.token, endpoint.site_id, endpoint.queue_id, seller.id,
                        public_name_of(seller), endpoint.listing, endpoint.label)


async def record_refusal(db: AsyncSession, endpoint_id: int, site_id: int, visitor_id: str | None, reason: str,
                         now: datetime | None = None) -> bool:
    """Record a buyer's attempt on a dead endpoint; False when the same visitor's (or an anonymous) attempt on it
    was recorded within the last minute. A visitor id that is not the widget's format is recorded as anonymous."""
    if reason not in ("revoked", "expired"):
        raise ValueError(f"not a refusal reason: {reason!r}")
    now = now or utcnow()
    visitor_id = visitor_id if visitor_id and VISITOR_ID.match(visitor_id) else None
    same_visitor = (EndpointRefusal.visitor_id == visitor_id) if visitor_id else EndpointRefusal.visitor_id.is_(None)
    recent = await db.scalar(select(EndpointRefusal.id).where(
        EndpointRefusal.endpoint_id == endpoint_id, same_visitor, EndpointRefusal.created_at > now - REFUSAL_QUIET,
    ).limit(1))
    if recent is not None:
        return False
    db.add(EndpointRefusal(endpoint_id=endpoint_id, site_id=site_id, visitor_id=visitor_id, reason=reason,
                           created_at=now))
    await db.flush()
    return True


async def target_of_call_token(db: AsyncSession, token: str, now: datetime) -> CallTarget:
    """Whom the call page /c/<token> calls. EndpointUnavailable: 'unknown' for a token that is neither an agent
    queue's nor an endpoint's, 'revoked'/'expired' for a dead endpoint."""
    found = await directory.agent_queue_by_call_token(db, token)
    if found is not None:
        queue, site = found
        return CallTarget("queue", site.key, queue.display_name, queue_name=queue.name)
    info = await resolve_endpoint(db, token, now)
    site_key = await directory.site_key_of(db, info.site_id)
    return CallTarget("endpoint", site_key or "", info.seller_public_name, endpoint=info)
