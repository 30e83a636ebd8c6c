"""The app factory: the one place that assembles every package into the product (used by the CLI and tests)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from analytics import setup_analytics
from analytics.journey import console_journey
from signaling import JOURNEY_PROVIDER_KEY, SIGNALING_KEY, setup_signaling
from signaling.call import Call
from signaling.callstore import snapshot
from signaling.switchboard import CALL_CHANGED
from talk.models import CallRecord
from talk.db import SESSIONMAKER_KEY, setup_database
from talk.demo import seed_demo
from talk.secret import SECRET_KEY, load_secret
from talk.sessions import setup_sessions
from talk.settings import SETTINGS_KEY, Settings
from talk.types import CallState
from talk.webhook_dispatcher import WEBHOOKS_KEY, setup_webhooks
from talk.webhooks import enqueue_call_ended
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


async def call_webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """`call.ended` webhooks from the switchboard's call_changed: the ended call's snapshot, stored and sent by the
    dispatcher (which outlives the switchboard, so calls ended at shutdown are published too)."""
    dispatcher = app[WEBHOOKS_KEY]

    def on_call_changed(call: Call) -> None:
        if call.state is CallState.ENDED:
            dispatcher.publish_soon(enqueue_call_ended, snapshot(call))

    app[SIGNALING_KEY].switchboard.events.on(CALL_CHANGED, on_call_changed)
    yield


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
    setup_webhooks(app)  # before signaling: it outlives the switchboard
    app[JOURNEY_PROVIDER_KEY] = journey_provider(app)
    setup_signaling(app)
    app.cleanup_ctx.append(call_webhooks_ctx)
    setup_analytics(app)
    setup_web(app)
    return app
