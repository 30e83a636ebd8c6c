"""Accounts, sites and queues: creating them (CLI, demo) and looking them up (login, signaling)."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from talk.models import QUEUE_TOKEN_PREFIX, Account, Disposition, Queue, QueueMember, Site
from talk.types import Role

_hasher = PasswordHasher()  # stateless configuration object, safe to share


AGENT_QUEUE = "agents"  # Queue.kind: a queue of agents, public to the site's widget
SELLER_QUEUE = "seller"  # Queue.kind: one seller's private queue on a site (talk.sellers)
SELLER_QUEUE_PREFIX = "seller-"  # seller queues are named seller-<account id>; agent queues may not be


class DirectoryError(ValueError):
    """Bad input to an admin operation (unknown site, duplicate email, malformed origin)."""


@dataclass(frozen=True)
class QueueInfo:
    id: int
    site_id: int
    name: str
    display_name: str
    landing_url: str | None = None
    redirect_enabled: bool = True
    dispositions: tuple[tuple[str, str | None], ...] = ()  # (name, landing URL or None), in display order
    site_origins: tuple[str, ...] = ()
    kind: str = AGENT_QUEUE  # SELLER_QUEUE: not to be listed to callers (only masked endpoints reach it)
    seller_id: int | None = None
    voicemail_enabled: bool = True

    @property
    def disposition_names(self) -> list[str]:
        return [name for name, _ in self.dispositions]


@dataclass(frozen=True)
class SiteInfo:
    id: int
    key: str
    name: str
    allowed_origins: tuple[str, ...]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def normalize_origin(origin: str) -> str:
    """'https://Shop.example.com/' -> 'https://shop.example.com'; rejects anything that is not scheme://host[:port]."""
    try:
        parts = urlsplit(origin.strip())
        default_port = {"http": 80, "https": 443}.get(parts.scheme)
        port = f":{parts.port}" if parts.port and parts.port != default_port else ""  # browsers omit default ports
    except ValueError:  # an unbalanced "[", a port that is not a number or out of range
        raise DirectoryError(f"not an origin (scheme://host[:port]): {origin!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise DirectoryError(f"not an origin (scheme://host[:port]): {origin!r}")
    return f"{parts.scheme}://{parts.hostname.lower()}{port}"


async def create_account(db: AsyncSession, email: str, name: str, password: str, role: Role) -> Account:
    email = email.strip().lower()
    if await db.scalar(select(Account).where(Account.email == email)):
        raise DirectoryError(f"an account with e-mail {email} exists already")
    account = Account(email=email, name=name, password_hash=hash_password(password), role=str(role), created_at=utcnow())
    db.add(account)
    await db.flush()
    return account


def _password_matches(password_hash: str | None, password: str) -> bool:
    if password_hash is None:
        _hasher.hash(password)  # spend the same time as a real check, so e-mails can't be probed by timing
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def authenticate(db: AsyncSession, email: str, password: str) -> Account | None:
    account = await db.scalar(select(Account).where(Account.email == email.strip().lower()))
    # argon2 is deliberately slow (~0.2 s of CPU): in a thread, so calls keep ringing while someone logs in.
    matches = await asyncio.to_thread(_password_matches, account.password_hash if account else None, password)
    if account is None or not matches:
        return None
    if _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = await asyncio.to_thread(hash_password, password)
    return account


async def create_site(db: AsyncSession, name: str, origins: list[str], key: str | None = None) -> Site:
    site = Site(
        key=key or f"site_{secrets.token_urlsafe(12)}",
        name=name,
        secret_key=f"sk_{secrets.token_urlsafe(32)}",
        allowed_origins=sorted({normalize_origin(o) for o in origins}),
        created_at=utcnow(),
    )
    db.add(site)
    await db.flush()
    return site


async def site_by_key(db: AsyncSession, key: str) -> Site:
    site = await db.scalar(select(Site).where(Site.key == key))
    if site is None:
        raise DirectoryError(f"no site with key {key!r}")
    return site


async def create_queue(db: AsyncSession, site_key: str, name: str, display_name: str | None = None) -> Queue:
    site = await site_by_key(db, site_key)
    if name.startswith(SELLER_QUEUE_PREFIX):
        raise DirectoryError(f"queue names starting with {SELLER_QUEUE_PREFIX!r} are kept for sellers' own queues")
    if await db.scalar(select(Queue).where(Queue.site_id == site.id, Queue.name == name)):
        raise DirectoryError(f"site {site_key} has a queue {name!r} already")
    queue = Queue(site_id=site.id, name=name, display_name=display_name or name.title(), created_at=utcnow())
    db.add(queue)
    await db.flush()
    return queue


async def add_queue_member(db: AsyncSession, site_key: str, queue_name: str, email: str) -> None:
    site = await site_by_key(db, site_key)
    queue = await db.scalar(select(Queue).where(Queue.site_id == site.id, Queue.name == queue_name))
    account = await db.scalar(select(Account).where(Account.email == email.strip().lower()))
    if queue is None or account is None:
        raise DirectoryError(f"no queue {queue_name!r} on {site_key} or no account {email}")
    await db.merge(QueueMember(queue_id=queue.id, account_id=account.id))


async def queue_by_name(db: AsyncSession, site_key: str, name: str) -> Queue:
    site = await site_by_key(db, site_key)
    queue = await db.scalar(select(Queue).where(Queue.site_id == site.id, Queue.name == name))
    if queue is None:
        raise DirectoryError(f"site {site_key} has no queue {name!r}")
    return queue


async def agent_queue_by_call_token(db: AsyncSession, token: str) -> tuple[Queue, Site] | None:
    """The agent queue whose standalone call page is /c/<token> (seller queues are reached by masked endpoints)."""
    if not token.startswith(QUEUE_TOKEN_PREFIX) or len(token) > 48:
        return None
    row = (await db.execute(select(Queue, Site).join(Site, Site.id == Queue.site_id)
                            .where(Queue.call_token == token, Queue.kind == AGENT_QUEUE))).first()
    return (row[0], row[1]) if row else None


def is_relative(url: str) -> bool:
    """A path on the caller's own origin ('/offer'), not a scheme-relative URL ('//elsewhere')."""
    return url.startswith("/") and not url.startswith("//") and "\\" not in url


def check_landing_url(url: str, site_origins: list[str] | tuple[str, ...]) -> str:
    """Landing pages must be on the site's own origins (or a path on the caller's page's origin): Talk never
    redirects callers anywhere else."""
    if is_relative(url):
        return url
    try:
        origin = normalize_origin(f"{urlsplit(url).scheme}://{urlsplit(url).netloc}")
    except (DirectoryError, ValueError):
        raise DirectoryError(f"not a landing page URL: {url!r}") from None
    if origin not in site_origins:
        raise DirectoryError(f"{url} is not on the site's allowed origins ({', '.join(site_origins)})")
    return url


async def configure_queue(db: AsyncSession, site_key: str, name: str, *, landing_url: str | None = None,
                          redirect: bool | None = None, dispositions: list[tuple[str, str | None]] | None = None,
                          rating_question: str | None = None, comment_question: str | None = None,
                          voicemail: bool | None = None) -> Queue:
    """Post-call settings of a queue; only the arguments given change. Dispositions replace the old list."""
    site = await site_by_key(db, site_key)
    queue = await queue_by_name(db, site_key, name)
    if voicemail is not None:
        queue.voicemail_enabled = voicemail
    if landing_url is not None:
        queue.landing_url = check_landing_url(landing_url, site.allowed_origins) if landing_url else None
    if redirect is not None:
        queue.redirect_enabled = redirect
    if rating_question is not None:
        queue.survey_rating_question = rating_question or None
    if comment_question is not None:
        queue.survey_comment_question = comment_question or None
    if dispositions is not None:
        await db.execute(delete(Disposition).where(Disposition.queue_id == queue.id))
        for position, (label, url) in enumerate(dispositions):
            checked = check_landing_url(url, site.allowed_origins) if url else None
            db.add(Disposition(queue_id=queue.id, name=label, landing_url=checked, position=position))
    await db.flush()
    return queue


async def load_site(db: AsyncSession, key: str) -> SiteInfo | None:
    site = await db.scalar(select(Site).where(Site.key == key))
    if site is None:
        return None
    return SiteInfo(site.id, site.key, site.name, tuple(site.allowed_origins))


async def _queue_infos(db: AsyncSession, queues: list[Queue]) -> list[QueueInfo]:
    if not queues:
        return []
    ids = [q.id for q in queues]
    dispositions: dict[int, list[tuple[str, str | None]]] = {}
    for d in await db.scalars(select(Disposition).where(Disposition.queue_id.in_(ids)).order_by(Disposition.position)):
        dispositions.setdefault(d.queue_id, []).append((d.name, d.landing_url))
    sites = {s.id: s for s in await db.scalars(select(Site).where(Site.id.in_({q.site_id for q in queues})))}
    return [
        QueueInfo(q.id, q.site_id, q.name, q.display_name, q.landing_url, q.redirect_enabled,
                  tuple(dispositions.get(q.id, ())), tuple(sites[q.site_id].allowed_origins),
                  q.kind, q.seller_id, q.voicemail_enabled)
        for q in queues
    ]


async def origin_is_allowed_anywhere(db: AsyncSession, origin: str) -> bool:
    try:
        wanted = normalize_origin(origin)
    except DirectoryError:
        return False
    return any(wanted in origins for origins in await db.scalars(select(Site.allowed_origins)))


async def site_key_of(db: AsyncSession, site_id: int) -> str | None:
    return await db.scalar(select(Site.key).where(Site.id == site_id))


async def site_by_secret(db: AsyncSession, secret: str) -> SiteInfo | None:
    site = await db.scalar(select(Site).where(Site.secret_key == secret))
    return SiteInfo(site.id, site.key, site.name, tuple(site.allowed_origins)) if site else None


async def site_queues(db: AsyncSession, site_id: int) -> list[QueueInfo]:
    """Every queue of the site, sellers' private queues included: callers' lists must filter on `kind`."""
    return await _queue_infos(db, list(await db.scalars(select(Queue).where(Queue.site_id == site_id).order_by(Queue.name))))


async def agent_queues(db: AsyncSession, account_id: int) -> list[QueueInfo]:
    rows = await db.scalars(
        select(Queue).join(QueueMember, QueueMember.queue_id == Queue.id).where(QueueMember.account_id == account_id)
    )
    return await _queue_infos(db, list(rows))
