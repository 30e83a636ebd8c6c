"""The Demo Shop at /demo/: a few pages with the widget embedded, served only in demo mode. Its marketplace part
(/demo/listings/{sku}) has a seller's listings, each with a `Call seller` button on the seller's masked endpoint."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from talk.db import SESSIONMAKER_KEY
from talk.demo import DEMO_LISTINGS, DEMO_QUEUE, DEMO_SELLER_PUBLIC_NAME, DEMO_SITE_KEY, demo_listing_tokens
from talk.directory import utcnow

PRODUCTS = (
    {"slug": "blue-kettle", "name": "Blue Kettle", "price": "49.00",
     "description": "A 1.7 litre kettle in enamelled steel that boils in three minutes."},
    {"slug": "oak-chair", "name": "Oak Chair", "price": "189.00",
     "description": "A solid oak dining chair, oiled, with a woven seat."},
    {"slug": "linen-throw", "name": "Linen Throw", "price": "79.00",
     "description": "Stonewashed linen, 130 by 170 cm, in sand and slate."},
)


def _context(**extra) -> dict:
    return {"site_key": DEMO_SITE_KEY, "queue": DEMO_QUEUE, "products": PRODUCTS, "listings": DEMO_LISTINGS,
            "seller_name": DEMO_SELLER_PUBLIC_NAME, **extra}


async def index(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template("demo/index.html", request, _context())


async def about(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template("demo/about.html", request, _context())


async def product(request: web.Request) -> web.Response:
    slug = request.match_info["slug"]
    item = next((p for p in PRODUCTS if p["slug"] == slug), None)
    if item is None:
        raise web.HTTPNotFound(text="No such product in the Demo Shop.")
    return aiohttp_jinja2.render_template("demo/product.html", request, _context(product=item))


async def listing(request: web.Request) -> web.Response:
    sku = request.match_info["sku"]
    item = next((item for item in DEMO_LISTINGS if item["sku"] == sku), None)
    if item is None:
        raise web.HTTPNotFound(text="No such listing in the Demo Shop.")
    async with request.app[SESSIONMAKER_KEY]() as db:  # read each time: an endpoint may have been revoked meanwhile
        token = (await demo_listing_tokens(db, utcnow())).get(sku)
    return aiohttp_jinja2.render_template("demo/listing.html", request, _context(listing=item, token=token))


# Post-call landing pages of the demo queue (talk/demo.py points the queue and its dispositions here).
LANDINGS = {
    "thanks": ("Thanks for calling", "We hope we could help. Tell us how the call went — it takes ten seconds."),
    "offer": ("Your personal offer", "As promised on the phone: 10% off your next order with the code CALL10."),
}


async def landing(request: web.Request) -> web.Response:
    heading, text = LANDINGS.get(request.match_info["name"], (None, None))
    if heading is None:
        raise web.HTTPNotFound(text="No such page in the Demo Shop.")
    return aiohttp_jinja2.render_template("demo/landing.html", request, _context(heading=heading, text=text))


async def to_index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/demo/")


def setup_demo_routes(app: web.Application) -> None:
    app.router.add_get("/demo", to_index)
    app.router.add_get("/demo/", index, name="demo-index")
    app.router.add_get("/demo/about", about, name="demo-about")
    app.router.add_get("/demo/products/{slug}", product, name="demo-product")
    app.router.add_get("/demo/listings/{sku}", listing, name="demo-listing")
    app.router.add_get("/demo/{name:thanks|offer}", landing, name="demo-landing")
