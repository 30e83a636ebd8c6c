"""Demo data for `talk demo`: the Demo Shop site, the support queue, the demo accounts (password "demo") and the
demo seller with a masked endpoint for each of its listings."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from talk import directory, sellers
from talk.models import Account, Queue, SellerEndpoint, Site
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
DEMO_SELLER = "seller@demo.test"
DEMO_SELLER_PUBLIC_NAME = "Nordic Bikes"
# The marketplace part of the Demo Shop: listings of an independent seller, each with its own masked endpoint.
DEMO_LISTINGS = (
    {"sku": "bike-001", "name": "City bike", "price": "640.00",
     "description": "A seven-speed city bike with dynamo lights, mudguards and a rear rack. Ridden one summer."},
    {"sku": "bike-002", "name": "Gravel bike", "price": "1150.00",
     "description": "An aluminium gravel bike, 54 cm frame, hydraulic disc brakes, 40 mm tyres."},
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
    await _seed_seller(db)


async def _seed_seller(db: AsyncSession) -> None:
    seller = await sellers.seller_by_email(db, DEMO_SELLER)
    if not seller.public_name:
        await sellers.set_public_name(db, DEMO_SELLER, DEMO_SELLER_PUBLIC_NAME)
    await sellers.add_seller_site(db, DEMO_SELLER, DEMO_SITE_KEY)
    live = await demo_listing_tokens(db, directory.utcnow())
    for listing in DEMO_LISTINGS:
        if listing["sku"] not in live:  # a fresh endpoint only where none is live (e.g. one revoked while trying)
            await sellers.create_endpoint(db, DEMO_SELLER, DEMO_SITE_KEY, listing=listing["sku"], label=listing["name"])


async def demo_listing_tokens(db: AsyncSession, now: datetime) -> dict[str, str]:
    """The demo seller's live endpoint token for each listing (the newest, if there are several)."""
    rows = await db.execute(
        select(SellerEndpoint.listing, SellerEndpoint.token)
        .join(Account, Account.id == SellerEndpoint.seller_id).join(Site, Site.id == SellerEndpoint.site_id)
        .where(Account.email == DEMO_SELLER, Site.key == DEMO_SITE_KEY, SellerEndpoint.revoked_at.is_(None),
               or_(SellerEndpoint.expires_at.is_(None), SellerEndpoint.expires_at > now))
        .order_by(SellerEndpoint.id)
    )
    return {listing: token for listing, token in rows.all() if listing}  # later rows (newer) win
