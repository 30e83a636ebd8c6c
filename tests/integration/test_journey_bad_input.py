"""Bad input on the journey endpoints (events, conversions, surveys) and on landing pages: each gets a clear error and
nothing else changes — no row is stored, no CORS grant is given to a foreign origin, no caller is sent off-site."""

from __future__ import annotations

import json
import secrets
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from signaling import CALLSTORE_KEY
from talk import directory
from talk.db import create_engine
from talk.models import Disposition, Queue, Site
from talk.settings import Settings
from tests.support.client import connect_agent, connect_caller, login, new_visitor

FOREIGN = "http://evil.example"
MISSING = object()  # a field left out of the body
TABLES = ("events", "conversions", "survey_answers")


# ----- helpers -----

@dataclass(repr=False)
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    def __repr__(self) -> str:  # shown by pytest when an assertion fails
        return f"<{self.status} {self.body}>"


async def send(http: aiohttp.ClientSession, url: str, body: Any = None, *, origin: str | None,
               content_type: str = "application/json", headers: dict[str, str] | None = None,
               method: str = "POST") -> Reply:
    """A request as a browser (with Origin) or a shop's server (origin=None) sends it; dicts go as JSON."""
    all_headers = {**({"Origin": origin} if origin else {}), **(headers or {})}
    if body is not None:
        all_headers["Content-Type"] = content_type
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    async with http.request(method, url, data=data, headers=all_headers) as response:
        text = await response.text()
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text
        return Reply(response.status, parsed, dict(response.headers))


def assert_error(reply: Reply, status: int, code: str, mentions: str = "") -> None:
    assert reply.status == status, reply
    assert reply.body["error"]["code"] == code, reply
    message = reply.body["error"]["message"]
    assert isinstance(message, str) and message.strip(), reply
    assert mentions in message, reply


def assert_no_cors(reply: Reply) -> None:
    assert "Access-Control-Allow-Origin" not in reply.headers, reply.headers


def assert_cors(reply: Reply, origin: str) -> None:
    assert reply.headers.get("Access-Control-Allow-Origin") == origin, reply.headers
    assert "Origin" in reply.headers.get("Vary", ""), reply.headers


def row_counts(settings: Settings) -> dict[str, int]:
    with sqlite3.connect(settings.data_dir / "talk.db") as db:
        return {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in TABLES}


def query(settings: Settings, sql: str, *params: Any) -> list[tuple]:
    with sqlite3.connect(settings.data_dir / "talk.db") as db:
        return db.execute(sql, params).fetchall()


@contextmanager
def nothing_stored(settings: Settings) -> Iterator[None]:
    before = row_counts(settings)
    yield
    assert row_counts(settings) == before


def site_secret(settings: Settings, key: str = "demo-shop") -> str:
    return query(settings, "SELECT secret_key FROM sites WHERE key = ?", key)[0][0]


def a_batch(count: int = 1, visitor: dict[str, str] | None = None) -> dict[str, Any]:
    """A valid batch of page views as the widget sends it."""
    return {
        "site": "demo-shop", **(visitor or new_visitor()), "sent_at": 1763800000500,
        "events": [{"id": f"e_{secrets.token_urlsafe(16)}", "type": "pageview", "ts": 1763800000000 + n,
                    "url": f"https://shop.example/p/{n}?utm_source=news", "title": f"Product {n}",
                    "referrer": "https://www.google.com/", "props": {"listing": f"SKU-{n}"}}
                   for n in range(count)],
    }


def a_conversion(order_id: str = "A-1001", **changes: Any) -> dict[str, Any]:
    return {"site": "demo-shop", **new_visitor(), "order_id": order_id, "value": 49.0, "currency": "EUR", **changes}


def patched(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of body with the field at a dotted path ('events.0.url') set, or removed when value is MISSING."""
    body = json.loads(json.dumps(body))
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target = body
    for part in parents:
        target = target[part]
    if value is MISSING:
        del target[last]
    else:
        target[last] = value
    return body


@pytest.fixture
def origin(base_url: str) -> str:
    """One of the demo site's allowed origins (the page the widget runs on)."""
    return base_url


@pytest.fixture
async def sessions(settings: Settings):
    engine = create_engine(settings.resolved_database_url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


async def connected_call(server, base_url: str, http: aiohttp.ClientSession, http2: aiohttp.ClientSession,
                         disposition: str | None = None, visitor: dict | None = None) -> tuple[str, dict]:
    """A call that was answered and then hung up by the caller; returns its id and the caller's call.ended."""
    await login(http2, base_url, "agent@demo.test")
    agent = await connect_agent(http2, base_url)
    caller = await connect_caller(http, base_url, visitor=visitor or new_visitor())
    call_id = (await caller.ok("call.start", queue="support"))["call_id"]
    await agent.next_event("call.incoming")
    await agent.ok("call.answer", call_id=call_id)
    await caller.next_event("call.connected")
    if disposition:
        await agent.ok("call.disposition", call_id=call_id, disposition=disposition)
    await caller.ok("call.hangup", call_id=call_id)
    ended = await caller.next_event("call.ended")
    await server.app[CALLSTORE_KEY].flush()
    await caller.close()
    await agent.close()
    return call_id, ended


async def unanswered_call(server, base_url: str, http: aiohttp.ClientSession, site: str = "demo-shop",
                          visitor: dict | None = None) -> str:
    """A call that never connected (no agent on duty: it ends at once)."""
    caller = await connect_caller(http, base_url, site=site, visitor=visitor or new_visitor())
    started = await caller.ok("call.start", queue="support")
    assert started["reason"] == "no-agent"
    await server.app[CALLSTORE_KEY].flush()
    await caller.close()
    return started["call_id"]


# ----- events: body, content type, JSON -----

async def test_events_body_over_32_kib_is_refused(server, base_url, http, origin, settings):
    body = a_batch()
    body["events"][0]["title"] = "x" * 33_000  # would be refused anyway; the size check comes first
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/events", body, origin=origin)
    assert_error(reply, 413, "too_large", "32768")


async def test_events_body_over_32_kib_without_content_length_is_refused(server, base_url, http, origin, settings):
    async def chunks():  # chunked transfer encoding: the server cannot rely on Content-Length
        for _ in range(40):
            yield b" " * 1024
        yield json.dumps(a_batch()).encode()

    with nothing_stored(settings):
        async with http.post(f"{base_url}/api/v1/events", data=chunks(),
                             headers={"Origin": origin, "Content-Type": "application/json"}) as response:
            reply = Reply(response.status, await response.json(), dict(response.headers))
    assert_error(reply, 413, "too_large")


@pytest.mark.parametrize("size, status", [(32 * 1024, 202), (32 * 1024 + 1, 413)])
async def test_events_body_limit_is_exactly_32_kib(server, base_url, http, origin, settings, size, status):
    text = json.dumps(a_batch(count=10))
    body = (text + " " * (size - len(text))).encode()  # JSON may end in whitespace: a valid batch of that size
    assert len(body) == size
    reply = await send(http, f"{base_url}/api/v1/events", body, origin=origin)
    assert reply.status == status, reply


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/html", "application/octet-stream",
                                          "multipart/form-data; boundary=x"])
async def test_events_in_another_content_type_are_refused(server, base_url, http, origin, settings, content_type):
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/events", json.dumps(a_batch()).encode(), origin=origin,
                           content_type=content_type)
    assert_error(reply, 415, "unsupported_media_type")


@pytest.mark.parametrize("body", [
    b"{oops", b"", b"[]", b'"a string"', b"null", b"42",
    b'{"site": "demo-\xff"}',  # not UTF-8
    b"[" * 20_000,  # nested deeper than the parser's recursion limit
], ids=["broken", "empty", "array", "string", "null", "number", "not-utf8", "too-deep"])
async def test_events_body_that_is_not_a_json_object_is_refused(server, base_url, http, origin, settings, body):
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/events", body, origin=origin)
    assert_error(reply, 400, "invalid_json")


# ----- events: fields -----

LONG_URL = "https://shop.example/" + "a" * 2048


@pytest.mark.parametrize("path, value, field", [
    ("visitor_id", MISSING, "visitor_id"),
    ("session_id", MISSING, "session_id"),
    ("events", MISSING, "events"),
    ("events", [], "events"),
    ("events", "pageview", "events"),
    ("visitor_id", 12345678901234567890, "visitor_id"),
    ("visitor_id", "v_short", "visitor_id"),
    ("visitor_id", "x_AAAAAAAAAAAAAAAAAAAA", "visitor_id"),
    ("visitor_id", "v_AAAAAAAAAAAAAAAA<script>", "visitor_id"),
    ("visitor_id", "v_" + "A" * 41, "visitor_id"),
    ("session_id", "v_AAAAAAAAAAAAAAAAAAAA", "session_id"),
    ("sent_at", "1763800000500", "sent_at"),
    ("events.0.id", MISSING, "events.0.id"),
    ("events.0.id", "e_has spaces in it!!", "events.0.id"),
    ("events.0.type", "click", "events.0.type"),
    ("events.0.ts", "1763800000000", "events.0.ts"),
    ("events.0.ts", -1, "events.0.ts"),
    ("events.0.ts", 1.5, "events.0.ts"),
    ("events.0.url", "javascript:alert(document.cookie)", "events.0.url"),
    ("events.0.url", "ftp://shop.example/file", "events.0.url"),
    ("events.0.url", "/relative/path", "events.0.url"),
    ("events.0.url", LONG_URL, "events.0.url"),
    ("events.0.url", None, "events.0.url"),
    ("events.0.title", "t" * 301, "events.0.title"),
    ("events.0.title", 42, "events.0.title"),
    ("events.0.referrer", "r" * 2049, "events.0.referrer"),
    ("events.0.props", {f"p{n}": n for n in range(21)}, "events.0.props"),
    ("events.0.props", {"k": "v" * 201}, "events.0.props"),
    ("events.0.props", {"k" * 41: 1}, "events.0.props"),
    ("events.0.props", {"nested": {"a": 1}}, "events.0.props"),
    ("events.0.props", ["a", "b"], "events.0.props"),
    ("events.0.ip", "203.0.113.9", "events.0.ip"),  # unknown fields are refused, not ignored
    ("ip", "203.0.113.9", "ip"),
])
async def test_events_with_a_bad_field_are_refused_naming_it(server, base_url, http, origin, settings,
                                                             path, value, field):
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/events", patched(a_batch(), path, value), origin=origin)
    assert_error(reply, 400, "invalid_request", field)
    assert_cors(reply, origin)  # the widget may read why (the origin is allowed)


async def test_51_events_are_refused_and_none_of_them_stored(server, base_url, http, origin, settings):
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/events", a_batch(count=51), origin=origin)
    assert_error(reply, 400, "invalid_request", "events")


async def test_one_bad_event_refuses_the_whole_batch(server, base_url, http, origin, settings):
    body = patched(a_batch(count=5), "events.4.url", "javascript:void(0)")
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/events", body, origin=origin)
    assert_error(reply, 400, "invalid_request", "events.4.url")


# ----- events: site and origin -----

async def test_events_for_an_unknown_site_are_refused(server, base_url, http, origin, settings):
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/events", {**a_batch(), "site": "no-such-shop"}, origin=origin)
    assert_error(reply, 404, "not_found", "site")


@pytest.mark.parametrize("bad_origin", [
    FOREIGN,
    "https://127.0.0.1",  # right host, wrong scheme and port
    "http://127.0.0.1.evil.example",
    "null",  # sandboxed iframes, file:// pages
    None,  # no Origin header at all
])
async def test_events_from_a_foreign_or_missing_origin_are_refused_without_cors(server, base_url, http, settings,
                                                                                bad_origin):
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/events", a_batch(), origin=bad_origin)
    assert_error(reply, 403, "forbidden_origin")
    assert_no_cors(reply)


@pytest.mark.parametrize("malformed", [
    "http://127.0.0.1:{port}.evil.example",  # not a port: urlsplit raises ValueError, not DirectoryError
    "http://127.0.0.1:99999",  # port out of range
    "http://[::1",  # unbalanced IPv6 bracket
])
async def test_events_from_a_malformed_origin_are_refused_not_crashed_on(server, base_url, http, settings, malformed):
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/events", a_batch(),
                           origin=malformed.format(port=settings.port))
    assert_error(reply, 403, "forbidden_origin")
    assert_no_cors(reply)


async def test_events_are_accepted_with_cors_and_a_replay_is_stored_once(server, base_url, http, origin, settings):
    batch = a_batch(count=3)
    before = row_counts(settings)["events"]

    first = await send(http, f"{base_url}/api/v1/events", batch, origin=origin)
    assert first.status == 202 and first.body == {"accepted": 3, "duplicates": 0}, first
    assert_cors(first, origin)
    assert row_counts(settings)["events"] == before + 3  # 202 only once committed

    with nothing_stored(settings):
        replay = await send(http, f"{base_url}/api/v1/events", batch, origin=origin)
    assert replay.status == 202 and replay.body == {"accepted": 0, "duplicates": 3}, replay
    assert_cors(replay, origin)

    ids = [e["id"] for e in batch["events"]]
    stored = query(settings, f"SELECT event_id, COUNT(*) FROM events WHERE event_id IN ({','.join('?' * 3)})"
                             " GROUP BY event_id", *ids)
    assert sorted(stored) == sorted((i, 1) for i in ids)


async def test_a_replay_with_new_events_stores_only_the_new_ones(server, base_url, http, origin, settings):
    batch = a_batch(count=2)
    await send(http, f"{base_url}/api/v1/events", batch, origin=origin)
    before = row_counts(settings)["events"]
    more = {**batch, "events": [*batch["events"], *a_batch(count=1)["events"]]}
    reply = await send(http, f"{base_url}/api/v1/events", more, origin=origin)
    assert reply.body == {"accepted": 1, "duplicates": 2}, reply
    assert row_counts(settings)["events"] == before + 1


async def test_the_same_event_twice_in_one_batch_is_stored_and_counted_once(server, base_url, http, origin, settings):
    batch = a_batch(count=1)
    batch["events"].append(dict(batch["events"][0]))
    before = row_counts(settings)["events"]
    reply = await send(http, f"{base_url}/api/v1/events", batch, origin=origin)
    assert row_counts(settings)["events"] == before + 1
    assert reply.status == 202 and reply.body == {"accepted": 1, "duplicates": 1}, reply


async def test_events_sent_as_text_plain_by_send_beacon_are_accepted(server, base_url, http, origin, settings):
    reply = await send(http, f"{base_url}/api/v1/events", a_batch(), origin=origin,
                       content_type="text/plain;charset=UTF-8")
    assert reply.status == 202 and reply.body == {"accepted": 1, "duplicates": 0}, reply
    assert_cors(reply, origin)


async def test_the_other_allowed_origin_is_accepted_too(server, base_url, http, settings):
    localhost = f"http://localhost:{settings.port}"
    reply = await send(http, f"{base_url}/api/v1/events", a_batch(), origin=localhost)
    assert reply.status == 202, reply
    assert_cors(reply, localhost)


# ----- CORS preflight -----

@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/conversions", "/api/v1/surveys/c_anything"])
async def test_preflight_from_an_allowed_origin_is_granted(server, base_url, http, origin, path):
    headers = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    reply = await send(http, base_url + path, origin=origin, headers=headers, method="OPTIONS")
    assert reply.status == 204, reply
    assert_cors(reply, origin)
    assert "POST" in reply.headers["Access-Control-Allow-Methods"]
    assert "content-type" in reply.headers["Access-Control-Allow-Headers"].lower()


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/conversions", "/api/v1/surveys/c_anything"])
@pytest.mark.parametrize("bad_origin", [FOREIGN, None, "http://127.0.0.1:{port}.evil.example"])
async def test_preflight_from_a_foreign_origin_is_refused(server, base_url, http, settings, path, bad_origin):
    headers = {"Access-Control-Request-Method": "POST"}
    reply = await send(http, base_url + path, method="OPTIONS", headers=headers,
                       origin=bad_origin.format(port=settings.port) if bad_origin else None)
    assert reply.status == 403, reply
    assert_no_cors(reply)


# ----- conversions from the browser -----

async def test_browser_conversion_is_recorded_once_and_a_replay_changes_nothing(server, base_url, http, origin,
                                                                                settings):
    conversion = a_conversion("A-1001")
    reply = await send(http, f"{base_url}/api/v1/conversions", conversion, origin=origin)
    assert reply.status == 201 and reply.body == {"status": "recorded"}, reply
    assert_cors(reply, origin)

    with nothing_stored(settings):
        replay = await send(http, f"{base_url}/api/v1/conversions", {**conversion, "value": 999.0}, origin=origin)
    assert replay.status == 200 and replay.body == {"status": "duplicate"}, replay
    assert_cors(replay, origin)
    rows = query(settings, "SELECT visitor_id, value, currency, origin FROM conversions WHERE order_id = 'A-1001'")
    assert rows == [(conversion["visitor_id"], 49.0, "EUR", "browser")]


@pytest.mark.parametrize("field, value", [
    ("currency", "eur"),
    ("currency", "EURO"),
    ("currency", "E1R"),
    ("value", -1),
    ("value", -0.01),
    ("value", 1_000_000_001),
    ("value", "49.0"),
    ("value", True),
    ("value", None),
    ("value", MISSING),
    ("order_id", ""),
    ("order_id", "A" * 101),
    ("order_id", 1001),
    ("visitor_id", MISSING),
    ("visitor_id", "v_bad"),
    ("session_id", "nope"),
    ("call_id", "c_someone_elses_call"),  # only the shop's server may attribute a purchase to a call
])
async def test_browser_conversion_with_a_bad_field_is_refused(server, base_url, http, origin, settings, field, value):
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/conversions", patched(a_conversion(), field, value), origin=origin)
    assert_error(reply, 400, "invalid_request", field)


@pytest.mark.parametrize("body", [b"not json", b"[1]"])
async def test_browser_conversion_that_is_not_a_json_object_is_refused(server, base_url, http, origin, settings, body):
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/conversions", body, origin=origin)
    assert_error(reply, 400, "invalid_json")


async def test_browser_conversion_over_4_kib_is_refused(server, base_url, http, origin, settings):
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/conversions", a_conversion(pad="x" * 5000), origin=origin)
    assert_error(reply, 413, "too_large")


@pytest.mark.parametrize("bad_origin", [FOREIGN, None])
async def test_browser_conversion_from_a_foreign_origin_is_refused(server, base_url, http, settings, bad_origin):
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/conversions", a_conversion(), origin=bad_origin)
    assert_error(reply, 403, "forbidden_origin")
    assert_no_cors(reply)


async def test_browser_conversion_for_an_unknown_site_is_refused(server, base_url, http, origin, settings):
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/conversions", a_conversion(site="no-such-shop"), origin=origin)
    assert_error(reply, 404, "not_found")


# ----- conversions from the shop's server -----

def server_conversion(order_id: str = "S-1", **changes: Any) -> dict[str, Any]:
    return {"visitor_id": new_visitor()["visitor_id"], "order_id": order_id, "value": 120.5, "currency": "USD",
            **changes}


async def test_server_conversion_with_the_site_secret_is_recorded(server, base_url, http, settings):
    body = server_conversion("S-1")
    reply = await send(http, f"{base_url}/api/v1/conversions", body, origin=None,
                       headers={"Authorization": f"Bearer {site_secret(settings)}"})
    assert reply.status == 201 and reply.body == {"status": "recorded"}, reply
    assert_no_cors(reply)
    rows = query(settings, "SELECT visitor_id, value, currency, origin FROM conversions WHERE order_id = 'S-1'")
    assert rows == [(body["visitor_id"], 120.5, "USD", "server")]


async def test_server_conversion_by_call_id_is_the_callers_purchase(server, base_url, http, settings):
    visitor = new_visitor()
    call_id = await unanswered_call(server, base_url, http, visitor=visitor)
    body = patched(server_conversion("S-2", call_id=call_id), "visitor_id", MISSING)
    reply = await send(http, f"{base_url}/api/v1/conversions", body, origin=None,
                       headers={"Authorization": f"Bearer {site_secret(settings)}"})
    assert reply.status == 201, reply
    assert query(settings, "SELECT visitor_id FROM conversions WHERE order_id = 'S-2'") == [(visitor["visitor_id"],)]


@pytest.mark.parametrize("authorization", [
    "Bearer sk_wrong", "Bearer ", "Bearer", "Basic {secret}", "{secret}", "Bearer {secret}x", "Bearer demo-shop",
])
async def test_server_conversion_with_wrong_credentials_is_refused(server, base_url, http, settings, authorization):
    headers = {"Authorization": authorization.format(secret=site_secret(settings))}
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/conversions", server_conversion(), origin=None, headers=headers)
    assert_error(reply, 401, "unauthorized")


@pytest.mark.parametrize("path, value, status, code, field", [
    ("call_id", "c_no_such_call", 404, "not_found", "call"),
    ("visitor_id", MISSING, 400, "invalid_request", "visitor_id"),  # neither visitor_id nor call_id
    ("site", "demo-shop", 400, "invalid_request", "site"),  # the secret says which site
    ("currency", "usd", 400, "invalid_request", "currency"),
    ("value", "120.50", 400, "invalid_request", "value"),
])
async def test_bad_server_conversion_is_refused(server, base_url, http, settings, path, value, status, code, field):
    headers = {"Authorization": f"Bearer {site_secret(settings)}"}
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/conversions", patched(server_conversion(), path, value),
                           origin=None, headers=headers)
    assert_error(reply, status, code, field)


async def test_server_conversion_cannot_claim_another_sites_call(server, base_url, http, settings, sessions):
    async with sessions() as db, db.begin():  # a second shop on the same origins, with its own queue
        await directory.create_site(db, "Other Shop", [base_url], key="other-shop")
        await directory.create_queue(db, "other-shop", "support")
    others_call = await unanswered_call(server, base_url, http, site="other-shop")
    headers = {"Authorization": f"Bearer {site_secret(settings, 'demo-shop')}"}
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/conversions", server_conversion(call_id=others_call),
                           origin=None, headers=headers)
    assert_error(reply, 404, "not_found")


# ----- surveys -----

async def test_survey_of_an_unknown_call_is_not_found(server, base_url, http, origin, settings):
    with nothing_stored(settings):
        got = await send(http, f"{base_url}/api/v1/surveys/c_no_such_call", origin=origin, method="GET")
        posted = await send(http, f"{base_url}/api/v1/surveys/c_no_such_call", {"rating": 5}, origin=origin)
    assert_error(got, 404, "not_found")
    assert_error(posted, 404, "not_found")


async def test_survey_of_a_call_that_never_connected_is_not_found(server, base_url, http, origin, settings):
    call_id = await unanswered_call(server, base_url, http)
    with nothing_stored(settings):
        got = await send(http, f"{base_url}/api/v1/surveys/{call_id}", origin=origin, method="GET")
        posted = await send(http, f"{base_url}/api/v1/surveys/{call_id}", {"rating": 5}, origin=origin)
    assert_error(got, 404, "not_found")
    assert_error(posted, 404, "not_found")


@pytest.mark.parametrize("body, field", [
    pytest.param({"rating": 0}, "rating", id="rating-0"),
    pytest.param({"rating": 6}, "rating", id="rating-6"),
    pytest.param({"rating": "5"}, "rating", id="rating-string"),
    pytest.param({"rating": 4.5}, "rating", id="rating-fraction"),
    pytest.param({"rating": True}, "rating", id="rating-bool"),
    pytest.param({"comment": "great"}, "rating", id="rating-missing"),
    pytest.param({"rating": 5, "comment": "c" * 1001}, "comment", id="comment-1001-chars"),
    pytest.param({"rating": 5, "comment": 42}, "comment", id="comment-number"),
    pytest.param({"rating": 5, "agent_id": 2}, "agent_id", id="unknown-field"),
])
async def test_bad_survey_answers_are_refused(server, base_url, http, http2, origin, settings, body, field):
    call_id, _ = await connected_call(server, base_url, http, http2)
    with nothing_stored(settings):
        reply = await send(http, f"{base_url}/api/v1/surveys/{call_id}", body, origin=origin)
    assert_error(reply, 400, "invalid_request", field)
    got = await send(http, f"{base_url}/api/v1/surveys/{call_id}", origin=origin, method="GET")
    assert got.status == 200 and got.body["answered"] is False, got


async def test_a_second_survey_answer_is_a_conflict_and_the_first_is_kept(server, base_url, http, http2, origin,
                                                                          settings):
    call_id, ended = await connected_call(server, base_url, http, http2)
    assert ended["survey"] is True
    form = await send(http, f"{base_url}/api/v1/surveys/{call_id}", origin=origin, method="GET")
    assert form.status == 200 and form.body["answered"] is False, form
    assert_cors(form, origin)

    first = await send(http, f"{base_url}/api/v1/surveys/{call_id}", {"rating": 4, "comment": "c" * 1000},
                       origin=origin)
    assert first.status == 201 and first.body == {"status": "recorded"}, first

    with nothing_stored(settings):
        second = await send(http, f"{base_url}/api/v1/surveys/{call_id}", {"rating": 1, "comment": "changed"},
                            origin=origin)
    assert_error(second, 409, "conflict")
    assert_cors(second, origin)
    assert query(settings, "SELECT rating, comment FROM survey_answers WHERE call_id = ?", call_id) == [(4, "c" * 1000)]
    again = await send(http, f"{base_url}/api/v1/surveys/{call_id}", origin=origin, method="GET")
    assert again.body["answered"] is True, again


@pytest.mark.parametrize("bad_origin", [FOREIGN, None])
async def test_survey_from_a_foreign_origin_is_refused(server, base_url, http, http2, settings, bad_origin):
    call_id, _ = await connected_call(server, base_url, http, http2)
    with nothing_stored(settings):
        got = await send(http, f"{base_url}/api/v1/surveys/{call_id}", origin=bad_origin, method="GET")
        posted = await send(http, f"{base_url}/api/v1/surveys/{call_id}", {"rating": 5}, origin=bad_origin)
    for reply in (got, posted):
        assert_error(reply, 403, "forbidden_origin")
        assert_no_cors(reply)


# ----- landing pages off the site's allowed origins -----

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "talk.cli", *args], capture_output=True, text=True, timeout=60)


def queue_settings(data_dir: Path) -> tuple[str | None, list[tuple[str, str | None]]]:
    with sqlite3.connect(data_dir / "talk.db") as db:
        landing = db.execute("SELECT landing_url FROM queues WHERE name = 'support'").fetchone()[0]
        dispositions = db.execute("SELECT name, landing_url FROM dispositions ORDER BY position").fetchall()
    return landing, dispositions


@pytest.fixture(scope="module")
def kettle_shop(tmp_path_factory) -> Path:
    """A data dir made with the CLI: site kettles (https://shop.example), queue support with its landing pages."""
    data_dir = tmp_path_factory.mktemp("kettles")
    data = ["--data-dir", str(data_dir)]
    for args in (["site", "create", "Kettle Shop", "--origin", "https://shop.example", "--key", "kettles"],
                 ["queue", "create", "kettles", "support"],
                 ["queue", "configure", "kettles", "support", "--landing-url", "https://shop.example/thanks",
                  "--disposition", "Offer sent=https://shop.example/offer", "--disposition", "Answered"]):
        result = run_cli(*args, *data)
        assert result.returncode == 0, result.stderr
    return data_dir


@pytest.mark.parametrize("args", [
    ["--landing-url", "https://evil.example/x"],
    ["--landing-url", "//evil.example/x"],
    ["--landing-url", "javascript:alert(1)"],
    ["--landing-url", "https://shop.example@evil.example/x"],
    ["--landing-url", "https://shop.example:99999/x"],
    ["--disposition", "Offer sent=https://evil.example/offer"],
    ["--landing-url", "https://shop.example/ok", "--disposition", "Offer sent=http://shop.example/offer"],
], ids=["foreign", "scheme-relative", "javascript", "userinfo", "bad-port", "disposition", "wrong-scheme"])
def test_cli_refuses_a_landing_page_off_the_sites_origins(kettle_shop, tmp_path, args):
    data_dir = tmp_path / "data"
    shutil.copytree(kettle_shop, data_dir)
    before = queue_settings(data_dir)

    result = run_cli("queue", "configure", "kettles", "support", *args, "--data-dir", str(data_dir))

    assert result.returncode != 0
    assert "talk:" in result.stderr and ("allowed origins" in result.stderr or "not a landing page" in result.stderr), \
        result.stderr
    assert "Traceback" not in result.stderr
    assert queue_settings(data_dir) == before  # neither the landing page nor the dispositions changed
    assert before[0] == "https://shop.example/thanks"


FOREIGN_LANDINGS = [
    "https://evil.example/x",
    "//evil.example/x",
    "/\\evil.example/x",
    "javascript:alert(document.cookie)",
    "{origin}@evil.example/x",
    "{origin}.evil.example/x",
]


@pytest.mark.parametrize("landing", FOREIGN_LANDINGS)
async def test_a_foreign_disposition_landing_page_never_reaches_the_caller(server, base_url, http, http2, settings,
                                                                           sessions, landing):
    async with sessions() as db, db.begin():  # bypassing the CLI's check; queues are read at hello, so first
        queue_id = await db.scalar(select(Queue.id).join(Site).where(Site.key == "demo-shop", Queue.name == "support"))
        db.add(Disposition(queue_id=queue_id, name="Sneaky", landing_url=landing.format(origin=base_url), position=9))

    call_id, ended = await connected_call(server, base_url, http, http2, disposition="Sneaky")

    assert ended["reason"] == "completed" and ended["survey"] is True
    assert ended["landing_url"] is None, ended
    assert query(settings, "SELECT disposition, landing_url FROM calls WHERE id = ?", call_id) == [("Sneaky", None)]


@pytest.mark.parametrize("landing", FOREIGN_LANDINGS)
async def test_a_foreign_queue_landing_page_never_reaches_the_caller(server, base_url, http, http2, settings,
                                                                     sessions, landing):
    async with sessions() as db, db.begin():
        queue = await db.scalar(select(Queue).join(Site).where(Site.key == "demo-shop", Queue.name == "support"))
        queue.landing_url = landing.format(origin=base_url)

    _, ended = await connected_call(server, base_url, http, http2)  # no disposition: the queue's page applies
    assert ended["landing_url"] is None, ended


async def test_an_allowed_disposition_landing_page_reaches_the_caller(server, base_url, http, http2, settings):
    """The control for the two tests above: the same flow does redirect to a page on the site's origin."""
    call_id, ended = await connected_call(server, base_url, http, http2, disposition="Offer sent")
    assert ended["landing_url"] == f"{base_url}/demo/offer?talk_call={call_id}"
