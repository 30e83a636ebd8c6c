"""The call API (GET /api/v1/calls/{id} and GET /api/v1/calls): who may read it, the list's filters and its cursor
pagination, and clear errors for bad parameters. Calls are made through the real WebSocket."""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import datetime, timezone
from typing import Any

import aiohttp
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker

from signaling import CALLSTORE_KEY
from talk import directory
from talk.apitokens import create_token
from talk.db import create_engine
from talk.models import CallRecord
from talk.settings import Settings
from tests.support.client import connect_agent, connect_caller, login, new_visitor

# ----- helpers -----

@pytest.fixture
async def sessions(settings: Settings):
    engine = create_engine(settings.resolved_database_url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


@pytest.fixture
async def token(sessions) -> str:
    """An API token as `talk token create` makes it."""
    async with sessions() as db, db.begin():
        return await create_token(db, "reports")


async def api(http: aiohttp.ClientSession, url: str, token: str | None = None, authorization: str | None = None,
              **params: Any) -> tuple[int, Any]:
    headers = {"Authorization": authorization or f"Bearer {token}"} if (token or authorization) else {}
    async with http.get(url, params=params, headers=headers) as response:
        text = await response.text()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, text  # not JSON (an unhandled error): shown as is when an assertion fails


def assert_error(reply: tuple[int, Any], status: int, code: str, mentions: str = "") -> None:
    got_status, body = reply
    assert got_status == status, reply
    assert body["error"]["code"] == code, reply
    assert body["error"]["message"].strip() and mentions in body["error"]["message"], reply


async def no_agent_call(server, base_url: str, http: aiohttp.ClientSession, queue: str = "support") -> str:
    """The quickest call: no agent is on duty, so it ends at once (reason no-agent) and is stored."""
    caller = await connect_caller(http, base_url, visitor=new_visitor())
    started = await caller.ok("call.start", queue=queue)
    assert started["reason"] == "no-agent", started
    await caller.close()
    await server.app[CALLSTORE_KEY].flush()
    return started["call_id"]


async def answered_call(server, base_url: str, http: aiohttp.ClientSession, agent_http: aiohttp.ClientSession,
                        visitor: dict[str, str] | None = None) -> tuple[str, int]:
    """A call the demo agent answers, sets a disposition for, and the caller hangs up; returns (call id, agent id)."""
    await login(agent_http, base_url, "agent@demo.test")
    agent = await connect_agent(agent_http, base_url)
    caller = await connect_caller(http, base_url, visitor=visitor or new_visitor())
    call_id = (await caller.ok("call.start", queue="support", page={"url": f"{base_url}/demo/p/1", "title": "Kettle",
                                                                      "referrer": ""}))["call_id"]
    await agent.next_event("call.incoming")
    await agent.ok("call.answer", call_id=call_id)
    await caller.next_event("call.connected")
    await agent.ok("call.disposition", call_id=call_id, disposition="Offer sent")
    await caller.ok("call.hangup", call_id=call_id)
    await caller.next_event("call.ended")
    await caller.close()
    await agent.close()
    await server.app[CALLSTORE_KEY].flush()
    return call_id, agent.hello["account"]["id"]


async def redate(sessions, call_id: str, created_at: datetime) -> None:
    async with sessions() as db, db.begin():
        await db.execute(update(CallRecord).where(CallRecord.id == call_id).values(created_at=created_at))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def ids(body: dict[str, Any]) -> list[str]:
    return [call["id"] for call in body["calls"]]


def site_secret(settings: Settings) -> str:
    with sqlite3.connect(settings.data_dir / "talk.db") as db:
        return db.execute("SELECT secret_key FROM sites WHERE key = 'demo-shop'").fetchone()[0]


def b64(text: str | bytes) -> str:
    return base64.urlsafe_b64encode(text.encode() if isinstance(text, str) else text).decode()


# ----- who may read -----

@pytest.mark.parametrize("path", ["/api/v1/calls", "/api/v1/calls/{call_id}"])
@pytest.mark.parametrize("authorization, login_email", [
    (None, None),
    ("Bearer tk_not_a_real_token", None),
    ("Bearer ", None),
    ("Bearer {token}x", None),
    ("Basic {token}", None),
    ("{token}", None),
    ("Bearer {secret}", None),  # a site secret is not an API token
    (None, "agent@demo.test"),
    (None, "seller@demo.test"),
], ids=["none", "unknown-token", "empty-token", "altered-token", "basic-scheme", "no-scheme", "site-secret",
        "agent-login", "seller-login"])
async def test_call_api_refuses_missing_or_wrong_credentials(server, base_url, http, settings, token, path,
                                                             authorization, login_email):
    call_id = await no_agent_call(server, base_url, http)
    if login_email:
        await login(http, base_url, login_email)
    if authorization:
        authorization = authorization.format(token=token, secret=site_secret(settings))
    reply = await api(http, base_url + path.format(call_id=call_id), authorization=authorization)
    assert_error(reply, 401, "unauthorized")
    assert "calls" not in reply[1] and "id" not in reply[1]


async def test_call_api_answers_an_api_token(server, base_url, http, token):
    call_id = await no_agent_call(server, base_url, http)
    status, listed = await api(http, f"{base_url}/api/v1/calls", token)
    assert status == 200 and ids(listed) == [call_id], listed
    status, call = await api(http, f"{base_url}/api/v1/calls/{call_id}", token)
    assert status == 200, call
    assert (call["id"], call["site"], call["queue"], call["state"], call["end_reason"], call["agent"]) == \
        (call_id, "demo-shop", "support", "ended", "no-agent", None)


async def test_call_api_answers_a_logged_in_marketer(server, base_url, http, http2):
    call_id = await no_agent_call(server, base_url, http)
    await login(http2, base_url, "marketer@demo.test")
    status, listed = await api(http2, f"{base_url}/api/v1/calls")
    assert status == 200 and ids(listed) == [call_id], listed
    status, call = await api(http2, f"{base_url}/api/v1/calls/{call_id}")
    assert status == 200 and call["id"] == call_id, call


async def test_a_wrong_token_is_refused_even_with_a_marketer_login(server, base_url, http):
    await login(http, base_url, "marketer@demo.test")
    assert_error(await api(http, f"{base_url}/api/v1/calls", "tk_wrong"), 401, "unauthorized")


async def test_an_unknown_call_is_not_found(server, base_url, http, token):
    assert_error(await api(http, f"{base_url}/api/v1/calls/c_no_such_call", token), 404, "not_found")


async def test_one_call_has_its_agent_outcome_journey_survey_and_purchase(server, base_url, http, http2, token,
                                                                          settings):
    visitor = new_visitor()
    origin = {"Origin": base_url}
    now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    before = {"site": "demo-shop", **visitor, "sent_at": now_ms, "events": [
        {"id": "e_before_call_0000001", "type": "pageview", "ts": now_ms - 20_000,
         "url": "https://shop.example/?utm_source=news&utm_medium=email&utm_campaign=nov", "title": "Home"},
        {"id": "e_before_call_0000002", "type": "pageview", "ts": now_ms - 5_000,
         "url": "https://shop.example/p/1", "title": "Blue Kettle"}]}
    async with http.post(f"{base_url}/api/v1/events", json=before, headers=origin) as response:
        assert response.status == 202
    call_id, agent_id = await answered_call(server, base_url, http, http2, visitor=visitor)
    async with http.post(f"{base_url}/api/v1/surveys/{call_id}", json={"rating": 5, "comment": "Helpful"},
                         headers=origin) as response:
        assert response.status == 201
    purchase = {"site": "demo-shop", **visitor, "order_id": "A-1001", "value": 49.0, "currency": "EUR"}
    async with http.post(f"{base_url}/api/v1/conversions", json=purchase, headers=origin) as response:
        assert response.status == 201

    status, call = await api(http, f"{base_url}/api/v1/calls/{call_id}", token)

    assert status == 200, call
    assert call["agent"] == {"id": agent_id, "name": "Alex Agent", "email": "agent@demo.test"}
    assert (call["state"], call["end_reason"], call["disposition"]) == ("ended", "completed", "Offer sent")
    assert call["landing_url"] == f"{base_url}/demo/offer?talk_call={call_id}"
    assert call["visitor_id"] == visitor["visitor_id"] and call["session_id"] == visitor["session_id"]
    assert [p["path"] for p in call["pages_before"]] == ["/", "/p/1"]
    assert call["source"]["kind"] == "campaign" and call["source"]["source"] == "news"
    assert call["survey"]["rating"] == 5 and call["survey"]["comment"] == "Helpful"
    assert [(c["order_id"], c["value"], c["currency"]) for c in call["conversions"]] == [("A-1001", 49.0, "EUR")]
    assert call["created_at"] <= call["answered_at"] <= call["ended_at"]


# ----- list: filters -----

async def test_list_filters_by_from_and_to(server, base_url, http, token, sessions):
    days = {
        "jan10_noon": utc(2025, 1, 10, 12), "jan11_midnight": utc(2025, 1, 11), "jan11_noon": utc(2025, 1, 11, 12),
        "jan12_noon": utc(2025, 1, 12, 12),
    }
    call_of = {}
    for name, created_at in days.items():
        call_of[name] = await no_agent_call(server, base_url, http)
        await redate(sessions, call_of[name], created_at)

    async def listed(**params: str) -> list[str]:
        status, body = await api(http, f"{base_url}/api/v1/calls", token, **params)
        assert status == 200, body
        return [name for call_id in ids(body) for name, c in call_of.items() if c == call_id]

    assert await listed() == ["jan12_noon", "jan11_noon", "jan11_midnight", "jan10_noon"]
    assert await listed(**{"from": "2025-01-11"}) == ["jan12_noon", "jan11_noon", "jan11_midnight"]  # inclusive
    assert await listed(to="2025-01-11") == ["jan10_noon"]  # exclusive
    assert await listed(**{"from": "2025-01-11", "to": "2025-01-12"}) == ["jan11_noon", "jan11_midnight"]
    assert await listed(**{"from": "2025-01-11T06:00:00"}) == ["jan12_noon", "jan11_noon"]  # UTC when no zone
    assert await listed(**{"from": "2025-01-11T13:00:00+01:00"}) == ["jan12_noon", "jan11_noon"]  # = 12:00 UTC
    assert await listed(to="2025-01-11T12:00:00Z") == ["jan11_midnight", "jan10_noon"]
    assert await listed(**{"from": "2025-01-13"}) == []


async def test_list_filters_by_queue(server, base_url, http, token, sessions):
    async with sessions() as db, db.begin():  # before the caller's hello, which reads the site's queues
        await directory.create_queue(db, "demo-shop", "sales", "Sales")
    support = [await no_agent_call(server, base_url, http, "support") for _ in range(2)]
    sales = [await no_agent_call(server, base_url, http, "sales")]

    for queue, expected in (("support", support), ("sales", sales), ("no-such-queue", [])):
        status, body = await api(http, f"{base_url}/api/v1/calls", token, queue=queue)
        assert status == 200, body
        assert sorted(ids(body)) == sorted(expected), queue
        assert all(call["queue"] == queue for call in body["calls"])


async def test_list_filters_by_agent(server, base_url, http, http2, token):
    unanswered = [await no_agent_call(server, base_url, http) for _ in range(2)]
    answered, agent_id = await answered_call(server, base_url, http, http2)

    status, body = await api(http, f"{base_url}/api/v1/calls", token, agent=str(agent_id))
    assert status == 200 and ids(body) == [answered], body
    assert body["calls"][0]["agent"]["email"] == "agent@demo.test"
    status, body = await api(http, f"{base_url}/api/v1/calls", token, agent="999")
    assert status == 200 and ids(body) == [], body
    status, body = await api(http, f"{base_url}/api/v1/calls", token)
    assert sorted(ids(body)) == sorted([*unanswered, answered])


# ----- list: pagination -----

@pytest.mark.parametrize("same_time", [False, True], ids=["distinct-times", "all-at-one-instant"])
async def test_cursor_pagination_returns_every_call_once_newest_first(server, base_url, http, token, sessions,
                                                                      same_time):
    made = [await no_agent_call(server, base_url, http) for _ in range(7)]
    if same_time:  # the cursor must break ties by id, or calls at one instant are skipped or repeated
        for call_id in made:
            await redate(sessions, call_id, utc(2025, 3, 1, 9))
        expected = sorted(made, reverse=True)
    else:
        expected = list(reversed(made))  # made one after another: the newest is the last

    pages, cursor = [], None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        status, body = await api(http, f"{base_url}/api/v1/calls", token, **params)
        assert status == 200, body
        pages.append(ids(body))
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 5, "the cursor never ends"

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [call_id for page in pages for call_id in page] == expected


async def test_a_page_that_holds_the_rest_has_no_next_cursor(server, base_url, http, token):
    made = [await no_agent_call(server, base_url, http) for _ in range(3)]
    status, body = await api(http, f"{base_url}/api/v1/calls", token, limit="3")
    assert status == 200 and sorted(ids(body)) == sorted(made) and body["next_cursor"] is None, body


async def test_pagination_is_stable_while_new_calls_come_in(server, base_url, http, token):
    made = [await no_agent_call(server, base_url, http) for _ in range(4)]
    status, first = await api(http, f"{base_url}/api/v1/calls", token, limit="2")
    newer = await no_agent_call(server, base_url, http)
    status, second = await api(http, f"{base_url}/api/v1/calls", token, limit="2", cursor=first["next_cursor"])
    assert ids(first) + ids(second) == list(reversed(made))
    assert newer not in ids(second)


# ----- list: bad parameters -----

@pytest.mark.parametrize("params, field", [
    pytest.param({"limit": "abc"}, "limit", id="limit-word"),
    pytest.param({"limit": "2.5"}, "limit", id="limit-fraction"),
    pytest.param({"limit": ""}, "limit", id="limit-empty"),
    pytest.param({"agent": "alex"}, "agent", id="agent-word"),
    pytest.param({"from": "yesterday"}, "from", id="from-word"),
    pytest.param({"from": "2025-13-01"}, "from", id="from-month-13"),
    pytest.param({"to": "2025-01-01T25:00"}, "to", id="to-hour-25"),
    pytest.param({"to": "01/02/2025"}, "to", id="to-not-iso"),
    pytest.param({"from": "9999-12-31T23:59:59-01:00"}, "from", id="from-past-year-9999-in-utc"),
    pytest.param({"cursor": "!!!"}, "cursor", id="cursor-not-base64"),
    pytest.param({"cursor": "abc"}, "cursor", id="cursor-bad-padding"),
    pytest.param({"cursor": b64("not json")}, "cursor", id="cursor-not-json"),
    pytest.param({"cursor": b64(b"\xff\xfe")}, "cursor", id="cursor-not-utf8"),
    pytest.param({"cursor": b64('"x"')}, "cursor", id="cursor-string"),
    pytest.param({"cursor": b64("null")}, "cursor", id="cursor-null"),
    pytest.param({"cursor": b64("[1, 2]")}, "cursor", id="cursor-numbers"),
    pytest.param({"cursor": b64('["2025-01-01T00:00:00+00:00"]')}, "cursor", id="cursor-one-item"),
    pytest.param({"cursor": b64('["not a date", "c_x"]')}, "cursor", id="cursor-not-a-date"),
    pytest.param({"cursor": b64('["2025-01-01T00:00:00", "c_x"]')}, "cursor", id="cursor-without-time-zone"),
])
async def test_bad_list_parameters_are_refused(server, base_url, http, token, params, field):
    assert_error(await api(http, f"{base_url}/api/v1/calls", token, **params), 400, "invalid_request", field)


@pytest.mark.parametrize("limit", ["0", "-1", "201", "100000"])
async def test_a_limit_outside_1_to_200_is_refused(server, base_url, http, token, limit):
    """docs/api.md: limit is 1–200; out of range is a 400 invalid_request, not silently changed."""
    assert_error(await api(http, f"{base_url}/api/v1/calls", token, limit=limit), 400, "invalid_request", "limit")


async def test_an_agent_id_too_large_for_the_database_is_refused(server, base_url, http, token):
    assert_error(await api(http, f"{base_url}/api/v1/calls", token, agent="9" * 30), 400, "invalid_request", "agent")
