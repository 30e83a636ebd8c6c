"""Purchases reported by sites, idempotent on the site's order id."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from analytics.buyerviews import latest_view_before
from talk.models import Conversion


async def record_conversion(db: AsyncSession, *, site_id: int, visitor_id: str, order_id: str, value: float,
                            currency: str, ts: datetime, origin: str) -> bool:
    """True when recorded, False when the site already had this order id (nothing changes then)."""
    insert = postgresql.insert if db.bind.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(Conversion)
        .values(site_id=site_id, visitor_id=visitor_id, order_id=order_id, value=value, currency=currency, ts=ts,
                origin=origin, viewed_at=latest_view_before(site_id, visitor_id, ts))
        .on_conflict_do_nothing(index_elements=["site_id", "order_id"])
        .returning(Conversion.id)
    )
    return (await db.execute(statement)).first() is not None
