"""The same product on PostgreSQL: migrations, demo data, and a call stored through the PostgreSQL upsert."""

from __future__ import annotations


import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from signaling import CALLSTORE_KEY
from talk.app import create_app
from talk.settings import Settings
from tests.conftest import free_port
from tests.support.client import connect_agent, connect_caller, login


pytestmark = pytest.mark.postgres


async def test_call_is_stored_on_postgres(tmp_path, pg_database, http, http2):
    settings = Settings(data_dir=tmp_path, demo=True, port=free_port(), database_url=pg_database)
    server = TestServer(create_app(settings), host="127.0.0.1", port=settings.port)
    await server.start_server()
    base_url = f"http://127.0.0.1:{server.port}"
    try:
        await login(http2, base_url, "agent@demo.test")
        agent = await connect_agent(http2, base_url)
        caller = await connect_caller(http, base_url)
        call_id = (await caller.ok("call.start", queue="support", page={"url": "http://127.0.0.1/demo/"}))["call_id"]
        await agent.next_event("call.incoming")
        await agent.ok("call.answer", call_id=call_id)
        await agent.ok("call.hangup", call_id=call_id)
        assert (await caller.next_event("call.ended"))["reason"] == "completed"
        await server.app[CALLSTORE_KEY].flush()
        await caller.close()
        await agent.close()
    finally:
        await server.close()

    db = await asyncpg.connect(pg_database.replace("+asyncpg", ""))
    try:
        row = await db.fetchrow("SELECT c.*, a.email FROM calls c JOIN accounts a ON a.id = c.agent_id WHERE c.id = $1",
                                call_id)
    finally:
        await db.close()
    assert row["email"] == "agent@demo.test" and row["end_reason"] == "completed" and row["state"] == "ended"
    assert row["created_at"].tzinfo is not None
    assert row["created_at"] <= row["ringing_at"] <= row["answered_at"] <= row["ended_at"]
