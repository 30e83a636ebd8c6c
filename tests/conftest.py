"""Shared fixtures: a real Talk app (demo data, SQLite in a temp dir) served on a real port."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from talk.app import create_app
from talk.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def seeded_data_dir(tmp_path_factory) -> Path:
    """One migrated, demo-seeded data dir per test run; each test gets a copy (hashing demo passwords is slow)."""
    data_dir = tmp_path_factory.mktemp("seed")

    async def seed() -> None:
        app = create_app(Settings(data_dir=data_dir, demo=True))
        runner_ctx = [ctx(app) for ctx in app.cleanup_ctx]
        for ctx in runner_ctx:
            await ctx.__anext__()
        for ctx in reversed(runner_ctx):
            await anext(ctx, None)

    asyncio.run(seed())
    return data_dir


@pytest.fixture
def settings(tmp_path, seeded_data_dir) -> Settings:
    for name in ("talk.db", "secret.key"):
        shutil.copy(seeded_data_dir / name, tmp_path / name)
    return Settings(data_dir=tmp_path, demo=True, port=free_port(), ring_timeout=5, hello_timeout=1)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[TestServer]:
    server = TestServer(create_app(settings), host="127.0.0.1", port=settings.port)
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
def base_url(server: TestServer) -> str:
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A browser-like client with its own cookie jar (use one per person)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


@pytest.fixture
async def http2() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session
