"""Event ingestion under load: requests are grouped into few transactions, and past the pending limit the server
refuses (503 + Retry-After) instead of queueing without bound; a refused batch leaves nothing behind."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time

import pytest
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
        if response.status == 503:  # a browser's retry can only see the refusal with CORS headers
            assert response.headers.get("Access-Control-Allow-Origin") in ("*", base_url)
            assert "Retry-After" in response.headers.get("Access-Control-Expose-Headers", "")
        return response.status, response.headers.get("Retry-After"), await response.json()


def stored_ids(settings) -> set[str]:
    with sqlite3.connect(settings.data_dir / "talk.db") as db:
        return {row[0] for row in db.execute("SELECT event_id FROM events")}


def wal_commits(settings) -> int:
    """Transactions committed to SQLite's write-ahead log since its last reset, read from the file itself (a frame
    whose header carries the database size ends a commit), whoever's connection wrote them."""
    wal = settings.data_dir / "talk.db-wal"
    data = wal.read_bytes() if wal.exists() else b""
    if len(data) < 32:
        return 0
    page_size, salts = int.from_bytes(data[8:12], "big"), data[16:24]
    commits, offset = 0, 32
    while offset + 24 + page_size <= len(data) and data[offset + 8:offset + 16] == salts:
        commits += int.from_bytes(data[offset + 4:offset + 8], "big") != 0
        offset += 24 + page_size
    return commits


async def test_concurrent_requests_share_transactions(server, base_url, http, settings):
    await post(http, base_url, batch(base_url, 1))  # whatever start-up writes is done; the WAL holds a commit
    before = wal_commits(settings)
    assert before >= 1
    bodies = [batch(base_url, 2) for _ in range(20)]
    results = await asyncio.gather(*(post(http, base_url, body) for body in bodies))
    assert [status for status, _, _ in results] == [202] * 20
    assert len(stored_ids(settings)) == 41
    commits = wal_commits(settings) - before
    assert 1 <= commits <= 3, f"{commits} commits for 20 requests"


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
