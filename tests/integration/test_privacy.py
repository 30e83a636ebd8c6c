"""Privacy: forgetting one visitor removes everything about them and nothing about anyone else; retention deletes
what is older than the limit and keeps the rest; the raw client IP address is never stored anywhere."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from analytics.privacy import enforce_retention
from signaling import CALLSTORE_KEY
from talk.db import create_engine
from talk.models import CallRecord, Conversion, PageEvent, Queue, SellerEndpoint, Site, SurveyAnswer
from talk.sellers import record_refusal
from talk.voicemails import add_voicemail, voicemail_dir
from talk.settings import Settings
from tests.support.client import Peer, connect_agent, connect_caller, login, new_visitor

CLIENT_IP = "127.0.0.1"  # the test client's address as the server sees it


@pytest.fixture
async def sessions(settings: Settings):
    engine = create_engine(settings.resolved_database_url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def query(settings: Settings, sql: str, *params: Any) -> list[tuple]:
    with sqlite3.connect(settings.data_dir / "talk.db") as db:
        return db.execute(sql, params).fetchall()


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]) -> int:
    async with http.post(url, json=body, headers=headers) as response:
        return response.status


def page_views(visitor: dict[str, str], count: int, tag: str) -> dict[str, Any]:
    now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    return {"site": "demo-shop", **visitor, "sent_at": now_ms, "events": [
        {"id": f"e_{tag}_{n:016d}", "type": "pageview", "ts": now_ms - 1000 * (count - n),
         "url": f"https://shop.example/p/{n}?utm_source=news", "title": f"Product {n}"} for n in range(count)]}


async def answered_call(server, base_url: str, http: aiohttp.ClientSession, agent: Peer,
                        visitor: dict[str, str]) -> str:
    caller = await connect_caller(http, base_url, visitor=visitor)
    call_id = (await caller.ok("call.start", queue="support"))["call_id"]
    await agent.next_event("call.incoming")
    await agent.ok("call.answer", call_id=call_id)
    await caller.next_event("call.connected")
    await caller.ok("call.hangup", call_id=call_id)
    await caller.next_event("call.ended")
    await agent.next_event("call.ended")
    await caller.close()
    await server.app[CALLSTORE_KEY].flush()
    return call_id


ROWS_ABOUT_A_VISITOR = {
    "events": "SELECT COUNT(*) FROM events WHERE visitor_id = ?",
    "calls": "SELECT COUNT(*) FROM calls WHERE visitor_id = ?",
    "survey_answers": "SELECT COUNT(*) FROM survey_answers JOIN calls ON calls.id = survey_answers.call_id"
                      " WHERE calls.visitor_id = ?",
    "conversions": "SELECT COUNT(*) FROM conversions WHERE visitor_id = ?",
}


def rows_about(settings: Settings, visitor_id: str) -> dict[str, int]:
    return {what: query(settings, sql, visitor_id)[0][0] for what, sql in ROWS_ABOUT_A_VISITOR.items()}


# ----- forgetting a visitor -----

async def voicemail_and_refusal(settings: Settings, call_id: str, visitor_id: str) -> Path:
    """A voicemail (row and recording) on the call, and an attempt of the visitor on a revoked seller link."""
    engine = create_engine(settings.resolved_database_url)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as db, db.begin():
            call = await db.get(CallRecord, call_id)
            endpoint_id = await db.scalar(select(SellerEndpoint.id).limit(1))
            voicemail = await add_voicemail(db, call_id=call_id, site_id=call.site_id, queue_id=call.queue_id,
                                            recipient_id=None, buyer_alias="Caller",
                                            file_name=f"vm_{call_id}.wav", duration_seconds=1.0)
            assert await record_refusal(db, endpoint_id, call.site_id, visitor_id, "revoked")
    finally:
        await engine.dispose()
    recording = voicemail_dir(settings.data_dir) / voicemail.file_name
    recording.parent.mkdir(parents=True, exist_ok=True)
    recording.write_bytes(b"RIFF")
    return recording


async def test_privacy_forget_deletes_one_visitor_and_nobody_else(server, base_url, http, http2, settings):
    origin = {"Origin": base_url}
    await login(http2, base_url, "agent@demo.test")
    agent = await connect_agent(http2, base_url)
    forgotten, kept = new_visitor(), new_visitor()
    calls = {}
    for name, visitor in (("forgotten", forgotten), ("kept", kept)):
        assert await post(http, f"{base_url}/api/v1/events", page_views(visitor, 3, name), origin) == 202
        calls[name] = await answered_call(server, base_url, http, agent, visitor)
        assert await post(http, f"{base_url}/api/v1/surveys/{calls[name]}", {"rating": 4}, origin) == 201
        purchase = {"site": "demo-shop", **visitor, "order_id": f"order-{name}", "value": 10, "currency": "EUR"}
        assert await post(http, f"{base_url}/api/v1/conversions", purchase, origin) == 201
    await agent.close()
    await server.app[CALLSTORE_KEY].flush()
    recordings = {name: await voicemail_and_refusal(settings, calls[name], visitor["visitor_id"])
                  for name, visitor in (("forgotten", forgotten), ("kept", kept))}
    everything = {"events": 3, "calls": 1, "survey_answers": 1, "conversions": 1}
    assert rows_about(settings, forgotten["visitor_id"]) == rows_about(settings, kept["visitor_id"]) == everything

    result = subprocess.run(
        [sys.executable, "-m", "talk.cli", "privacy", "forget", forgotten["visitor_id"], "--data-dir",
         str(settings.data_dir)], capture_output=True, text=True, timeout=60)  # the server keeps running (WAL)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("deleted 1 voicemails, 1 survey_answers, 1 calls, 3 events, 1 visitor_days, "
                                     "1 conversions, 1 endpoint_refusals")
    assert rows_about(settings, forgotten["visitor_id"]) == {"events": 0, "calls": 0, "survey_answers": 0,
                                                             "conversions": 0}
    assert not recordings["forgotten"].exists() and recordings["kept"].exists()
    assert query(settings, "SELECT call_id FROM voicemails") == [(calls["kept"],)]
    assert query(settings, "SELECT visitor_id FROM endpoint_refusals") == [(kept["visitor_id"],)]
    assert query(settings, "SELECT COUNT(*) FROM survey_answers WHERE call_id = ?", calls["forgotten"]) == [(0,)]
    assert rows_about(settings, kept["visitor_id"]) == everything
    async with http.get(f"{base_url}/api/v1/surveys/{calls['forgotten']}", headers=origin) as response:
        assert response.status == 404  # the server has nothing left about the call either


def test_forgetting_an_unknown_visitor_deletes_nothing(settings):
    before = query(settings, "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM calls),"
                             " (SELECT COUNT(*) FROM conversions), (SELECT COUNT(*) FROM survey_answers)")
    result = subprocess.run([sys.executable, "-m", "talk.cli", "privacy", "forget", "v_nobody_like_this_0000",
                             "--data-dir", str(settings.data_dir)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("deleted 0 voicemails, 0 survey_answers, 0 calls, 0 events, 0 visitor_days, "
                                     "0 conversions, 0 endpoint_refusals")
    assert query(settings, "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM calls),"
                           " (SELECT COUNT(*) FROM conversions), (SELECT COUNT(*) FROM survey_answers)") == before


# ----- retention -----

NOW = datetime(2100, 1, 1, tzinfo=timezone.utc)  # far in the future: nothing the server made can be in the way
KEEP = timedelta(days=396)
AGES = {"old": NOW - KEEP - timedelta(seconds=1), "at_limit": NOW - KEEP, "recent": NOW - timedelta(days=1)}


async def test_retention_deletes_what_is_older_than_the_limit_and_keeps_the_rest(settings, sessions):
    async with sessions() as db, db.begin():
        site_id = await db.scalar(select(Site.id).where(Site.key == "demo-shop"))
        queue_id = await db.scalar(select(Queue.id).where(Queue.site_id == site_id, Queue.name == "support"))
        for age, ts in AGES.items():
            visitor, session = f"v_{age}_visitor_000000", f"s_{age}_session_000000"
            db.add(PageEvent(site_id=site_id, event_id=f"e_{age}_event_000000", visitor_id=visitor, session_id=session,
                             type="pageview", ts=ts, url="https://shop.example/p/1", path="/p/1", title="Kettle"))
            db.add(Conversion(site_id=site_id, order_id=f"order-{age}", visitor_id=visitor, value=10.0, currency="EUR",
                              ts=ts, origin="browser"))
            db.add(CallRecord(id=f"c_{age}", site_id=site_id, queue_id=queue_id, visitor_id=visitor, state="ended",
                              end_reason="completed", created_at=ts, answered_at=ts,
                              ended_at=ts + timedelta(minutes=5)))
            await db.flush()
            db.add(SurveyAnswer(call_id=f"c_{age}", queue_id=queue_id, rating=5, created_at=ts + timedelta(minutes=6)))

    async with sessions() as db, db.begin():
        deleted = await enforce_retention(db, NOW, KEEP)

    assert deleted == {"survey_answers": 1, "calls": 1, "events": 1, "visitor_days": 0, "conversions": 1,
                       "endpoint_refusals": 0}  # (rows written with the ORM, not the event store: no visitor days)
    def left(sql: str) -> list[str]:
        return [row[0] for row in query(settings, sql)]

    kept = ["at_limit", "recent"]
    assert left("SELECT event_id FROM events ORDER BY ts") == [f"e_{age}_event_000000" for age in kept]
    assert left("SELECT order_id FROM conversions ORDER BY ts") == [f"order-{age}" for age in kept]
    assert left("SELECT id FROM calls ORDER BY created_at") == [f"c_{age}" for age in kept]
    assert left("SELECT call_id FROM survey_answers ORDER BY created_at") == [f"c_{age}" for age in kept]


async def test_retention_with_todays_date_keeps_todays_rows(server, base_url, http, settings, sessions):
    visitor = new_visitor()
    assert await post(http, f"{base_url}/api/v1/events", page_views(visitor, 2, "today"), {"Origin": base_url}) == 202
    async with sessions() as db, db.begin():
        deleted = await enforce_retention(db, datetime.now(timezone.utc), timedelta(days=1))
    assert deleted["events"] == 0
    assert query(settings, "SELECT COUNT(*) FROM events WHERE visitor_id = ?", visitor["visitor_id"]) == [(2,)]


# ----- the raw IP address is never stored -----

def text_values(settings: Settings) -> list[tuple[str, str, str]]:
    """(table, column, value as text) for every non-null value of every column of every table."""
    found = []
    with sqlite3.connect(settings.data_dir / "talk.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]
            for column in columns:
                for (value,) in db.execute(f'SELECT "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL'):
                    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                    found.append((table, column, text))
    return found


async def test_the_client_ip_address_is_never_stored(server, base_url, http, settings):
    forwarded = "203.0.113.77"  # a proxy header a client can send: must not be stored either
    headers = {"Origin": base_url, "X-Forwarded-For": forwarded, "X-Real-IP": forwarded}
    visitor = new_visitor()
    assert await post(http, f"{base_url}/api/v1/events", page_views(visitor, 2, "ip_a"), headers) == 202
    assert await post(http, f"{base_url}/api/v1/events", page_views(visitor, 1, "ip_b"), headers) == 202
    purchase = {"site": "demo-shop", **visitor, "order_id": "ip-order", "value": 5, "currency": "EUR"}
    assert await post(http, f"{base_url}/api/v1/conversions", purchase, headers) == 201
    caller = await connect_caller(http, base_url, visitor=visitor)
    await caller.ok("call.start", queue="support")
    await caller.close()
    await server.app[CALLSTORE_KEY].flush()

    values = text_values(settings)
    own_origin = f"http://{CLIENT_IP}:{settings.port}"  # the demo site's allowed origin: the server, not the client
    assert any(own_origin in text for table, _, text in values if table == "sites"), "the scan reads text columns"
    leaks = [(table, column, text) for table, column, text in values
             if CLIENT_IP in text.replace(own_origin, "") or forwarded in text]
    assert leaks == []

    site_id = query(settings, "SELECT id FROM sites WHERE key = 'demo-shop'")[0][0]
    hashes = {h for (h,) in query(settings, "SELECT ip_hash FROM events WHERE visitor_id = ?", visitor["visitor_id"])}
    assert len(hashes) == 1, hashes  # the same address on the same day: one hash
    ip_hash = hashes.pop()
    assert re.fullmatch(r"[0-9a-f]{32}", ip_hash or ""), ip_hash
    unsalted = {hashlib.md5(CLIENT_IP.encode()).hexdigest(), hashlib.sha256(CLIENT_IP.encode()).hexdigest()[:32],
                hashlib.sha256(f"{site_id}|{CLIENT_IP}".encode()).hexdigest()[:32]}
    assert ip_hash not in unsalted  # a salted hash, not one anybody can recompute from the address
