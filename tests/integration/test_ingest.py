"""Event ingestion under load: requests are grouped into few transactions, and past the pending limit the server
refuses (503 + Retry-After) instead of queueing without bound; a refused batch leaves nothing behind."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time

import pytest
from sqlalchemy import event

from talk.db import ENGINE_KEY
from tests.support.client import new_visitor


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"ingest_max_pending": 100, "ingest_linger_ms": 300})


def batch(base_url: str, n: int) -> dict:
    now = int(time.time() * 1000)
    events = [{"id": f"e_{secrets.token_urlsafe(16)}", "type": "pageview", "ts": now, "url": f"{base_url}/demo/{i}"}
              for i in range(n)]
    return {"site": "demo-shop", **new_visitor(), "sent_at": now, "events": events}


async def post(http, base_url, body):
    async with http.post(f"{base_url}/api/v1/events", json=body, headers={"Origin": base_url}) as response:
        return response.status, response.headers.get("Retry-After"), await response.json()


def stored_ids(settings) -> set[str]:
    with sqlite3.connect(settings.data_dir / "talk.db") as db:
        return {row[0] for row in db.execute("SELECT event_id FROM events")}


async def test_concurrent_requests_share_transactions(server, base_url, http, settings):
    commits = []
    event.listen(server.app[ENGINE_KEY].sync_engine, "commit", lambda _conn: commits.append(1))
    bodies = [batch(base_url, 2) for _ in range(20)]
    results = await asyncio.gather(*(post(http, base_url, body) for body in bodies))
    assert [status for status, _, _ in results] == [202] * 20
    assert len(stored_ids(settings)) == 40
    assert len(commits) <= 3, f"{len(commits)} commits for 20 requests"


async def test_past_the_pending_limit_batches_are_refused_whole(server, base_url, http, settings):
    bodies = [batch(base_url, 50) for _ in range(3)]  # 150 events against a limit of 100, all within one linger
    results = await asyncio.gather(*(post(http, base_url, body) for body in bodies))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [202, 202, 503]
    refused = next(body for body, (status, _, _) in zip(bodies, results) if status == 503)
    status, retry_after, reply = next(r for r in results if r[0] == 503)
    assert retry_after == "1" and reply["error"]["code"] == "overloaded"
    ids = stored_ids(settings)
    assert len(ids) == 100 and not ids & {e["id"] for e in refused["events"]}
    # Once the queue drained, the refused batch goes through.
    assert (await post(http, base_url, refused))[0] == 202
