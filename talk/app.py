"""The app factory: the one place that assembles every package into the product (used by the CLI and tests)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from analytics import setup_analytics
from analytics.journey import console_journey
from signaling import JOURNEY_PROVIDER_KEY, setup_signaling
from signaling.call import Call
from signaling.callstore import snapshot
from talk.models import CallRecord
from talk.db import SESSIONMAKER_KEY, setup_database
from talk.demo import seed_demo
from talk.secret import SECRET_KEY, load_secret
from talk.sessions import setup_sessions
from talk.settings import SETTINGS_KEY, Settings
from web import setup_web

MAX_REQUEST_BYTES = 256 * 1024


def demo_origins(settings: Settings) -> list[str]:
    origins = [f"http://127.0.0.1:{settings.port}", f"http://localhost:{settings.port}"]
    if settings.host not in ("0.0.0.0", "::", "127.0.0.1", "localhost"):
        origins.append(f"http://{settings.host}:{settings.port}")
    if settings.public_url:
        origins.append(settings.public_url)
    return origins


async def demo_data_ctx(app: web.Application) -> AsyncIterator[None]:
    async with app[SESSIONMAKER_KEY]() as db, db.begin():
        await seed_demo(db, demo_origins(app[SETTINGS_KEY]))
    yield


def journey_provider(app: web.Application):
    """What the console shows about a ringing caller, from analytics, for signaling (which can't import it)."""

    async def provide(call: Call) -> dict:
        async with app[SESSIONMAKER_KEY]() as db:
            return await console_journey(db, CallRecord(**snapshot(call)))  # not yet stored: a transient record

    return provide


def create_app(settings: Settings) -> web.Application:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[SETTINGS_KEY] = settings
    secret = load_secret(settings)
    app[SECRET_KEY] = secret
    setup_sessions(app, secret, secure_cookie=settings.public_url.startswith("https://"))
    setup_database(app)
    if settings.demo:
        app.cleanup_ctx.append(demo_data_ctx)
    app[JOURNEY_PROVIDER_KEY] = journey_provider(app)
    setup_signaling(app)
    setup_analytics(app)
    setup_web(app)
    return app
