"""API tokens for the call and reports APIs: shown once at creation, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from talk.models import ApiToken

PREFIX = "tk_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(db: AsyncSession, name: str) -> str:
    token = PREFIX + secrets.token_urlsafe(32)
    db.add(ApiToken(name=name, token_hash=_digest(token), created_at=datetime.now(timezone.utc)))
    await db.flush()
    return token


async def check_token(db: AsyncSession, token: str) -> ApiToken | None:
    """The token's record, or None. A high-entropy token hashed with SHA-256 needs no slow hash."""
    if not token.startswith(PREFIX) or len(token) > 100:
        return None
    record = await db.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(token)))
    if record is not None:
        record.last_used_at = datetime.now(timezone.utc)
    return record
