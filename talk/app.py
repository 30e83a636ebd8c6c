"""The app factory: the one place that assembles every package into the product (used by the CLI and tests)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from signaling import setup_signaling
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
    setup_signaling(app)
    setup_web(app)
    return app
