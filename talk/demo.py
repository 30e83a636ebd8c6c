"""Demo data for `talk demo`: the Demo Shop site, the support queue and the demo accounts (password "demo")."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from talk import directory
from talk.models import Account, Queue, Site
from talk.types import Role

DEMO_SITE_KEY = "demo-shop"
DEMO_QUEUE = "support"
DEMO_PASSWORD = "demo"
DEMO_LANDING = "/demo/thanks"  # relative: the caller's own origin, whichever of the demo's origins they use
DEMO_DISPOSITIONS = [("Question answered", None), ("Offer sent", "/demo/offer")]
DEMO_ACCOUNTS = (
    ("agent@demo.test", "Alex Agent", Role.AGENT),
    ("seller@demo.test", "Sam Seller", Role.SELLER),
    ("marketer@demo.test", "Mia Marketer", Role.MARKETER),
)


async def seed_demo(db: AsyncSession, origins: list[str]) -> None:
    """Idempotent: creates what is missing and points the demo site at this run's origins."""
    site = await db.scalar(select(Site).where(Site.key == DEMO_SITE_KEY))
    if site is None:
        site = await directory.create_site(db, "Demo Shop", origins, key=DEMO_SITE_KEY)
    else:
        site.allowed_origins = sorted({directory.normalize_origin(o) for o in origins})
    if not await db.scalar(select(Queue).where(Queue.site_id == site.id, Queue.name == DEMO_QUEUE)):
        await directory.create_queue(db, DEMO_SITE_KEY, DEMO_QUEUE, "Support")
        await directory.configure_queue(db, DEMO_SITE_KEY, DEMO_QUEUE, landing_url=DEMO_LANDING,
                                        dispositions=DEMO_DISPOSITIONS)
    for email, name, role in DEMO_ACCOUNTS:
        if not await db.scalar(select(Account).where(Account.email == email)):
            await directory.create_account(db, email, name, DEMO_PASSWORD, role)
    await directory.add_queue_member(db, DEMO_SITE_KEY, DEMO_QUEUE, "agent@demo.test")
