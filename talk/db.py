"""The database: async engine and session factory on the app, schema kept current by Alembic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from talk.settings import SETTINGS_KEY

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

ENGINE_KEY = web.AppKey("db_engine", AsyncEngine)
SESSIONMAKER_KEY = web.AppKey("db_sessionmaker", async_sessionmaker[AsyncSession])


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def upgrade_schema(database_url: str) -> None:
    """Bring the schema to the newest revision. Blocking: env.py runs its own event loop."""
    command.upgrade(alembic_config(database_url), "head")


async def upgrade_schema_async(database_url: str) -> None:
    # Alembic's env.py calls asyncio.run(), which cannot nest in a running loop: give it a thread.
    await asyncio.to_thread(upgrade_schema, database_url)


def create_engine(database_url: str) -> AsyncEngine:
    options = {}
    if database_url.startswith("postgresql+asyncpg"):
        # PostgreSQL's JIT compiles any query its planner costs above jit_above_cost: the report queries (index
        # probes per call, tens of milliseconds) paid 20-30 ms of compilation each and ran no faster for it.
        # asyncpg prepares every statement, and after five runs PostgreSQL may switch a prepared statement to a
        # generic plan, blind to the range's size: one report went from 0.2 s to 4-11 s on its sixth run.
        # work_mem 32MB: the reports' "call facts not stale" test is a NOT IN over the stale calls, which PostgreSQL
        # hashes only within work_mem (4MB by default: about 60,000 ids); past that it would compare every fact row
        # with every stale id, and after an upgrade or a changed attribution window every call is stale for a while.
        options["connect_args"] = {"server_settings": {"jit": "off", "plan_cache_mode": "force_custom_plan",
                                                       "work_mem": "32MB"}}
    engine = create_async_engine(database_url, pool_pre_ping=not database_url.startswith("sqlite"), **options)
    if database_url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    return engine


def sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers (reports, the CLI) work while the server writes; synchronous=FULL makes a commit survive a
    # power cut, which acknowledged events are promised (writes are grouped, so it costs one fsync per group);
    # foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    await upgrade_schema_async(url)
    engine = create_engine(url)
    app[ENGINE_KEY] = engine
    app[SESSIONMAKER_KEY] = async_sessionmaker(engine, expire_on_commit=False)
    yield
    await engine.dispose()


def setup_database(app: web.Application) -> None:
    app.cleanup_ctx.append(database_ctx)
