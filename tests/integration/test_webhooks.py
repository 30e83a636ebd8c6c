"""Webhooks against a real local receiver: signed deliveries of real calls, surveys and purchases; retries with
backoff, failures in the delivery log (CLI, JSON, admin page); a slow receiver never holds up another site's."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from signaling import CALLSTORE_KEY
from talk import directory, webhooks
from talk.apitokens import create_token
from talk.app import create_app
from talk.cli import main
from talk.db import create_engine
from talk.demo import DEMO_SITE_KEY
from talk.models import Account, Site, WebhookDelivery
from talk.settings import Settings
from talk.types import Role
from talk.webhook_dispatcher import WEBHOOK_OPTIONS_KEY, WEBHOOKS_KEY, DispatchOptions, WebhookDispatcher
from tests.conftest import free_port
from tests.support.client import connect_agent, connect_caller, login, new_visitor

FAST = DispatchOptions(schedule=(0.2, 0.4), timeout=1.0, poll_interval=0.5)
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@demo.test", "admin password"


def _documented_verifier():
    """The receiver's check is the recipe in docs/api.md itself, run as it is printed there."""
    section = (Path(__file__).parents[2] / "docs" / "api.md").read_text().split("### Verifying a delivery (Python)")[1]
    namespace: dict[str, Any] = {}
    exec(section.split("```python", 1)[1].split("```", 1)[0], namespace)
    return namespace["verify_signature"]


verify_signature = _documented_verifier()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool
    at: float

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


class Receiver:
    """A site's webhook endpoints (/hooks/<name>) on a real local aiohttp server. Each checks the signature with its
    secret (401 when it does not match), then answers the statuses scripted for it in turn (then 200)."""

    def __init__(self) -> None:
        self.base = ""
        self.secrets: dict[str, str] = {}
        self.script: dict[str, list[int]] = defaultdict(list)
        self.always: dict[str, int] = {}
        self.delay: dict[str, float] = {}
        self.received: dict[str, list[Received]] = defaultdict(list)
        self._queues: dict[str, asyncio.Queue[Received]] = defaultdict(asyncio.Queue)
        self.in_flight = 0
        self.max_in_flight = 0

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.read()
        got = Received(dict(request.headers), body, verify_signature(self.secrets.get(name, ""), request.headers, body),
                       time.monotonic())
        self.received[name].append(got)
        self._queues[name].put_nowait(got)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay.get(name, 0))
        finally:
            self.in_flight -= 1
        if not got.verified:
            return web.Response(status=401, text="bad signature")
        status = self.script[name].pop(0) if self.script[name] else self.always.get(name, 200)
        return web.Response(status=status, text="ok" if status < 300 else "no")

    async def next(self, name: str, timeout: float = 5) -> Received:
        return await asyncio.wait_for(self._queues[name].get(), timeout)

    def nothing_more(self, name: str) -> bool:
        return self._queues[name].empty()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/{name}", rec.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rec.base = f"http://127.0.0.1:{port}/hooks"
    yield rec
    await runner.cleanup()


def fast_app(settings: Settings, options: DispatchOptions = FAST) -> web.Application:
    app = create_app(settings)
    app[WEBHOOK_OPTIONS_KEY] = options  # backoff in fractions of a second
    return app


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[TestServer]:
    """Talk with a fast backoff schedule (the conftest's, otherwise)."""
    server = TestServer(fast_app(settings), host="127.0.0.1", port=settings.port)
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def sessions(settings: Settings):
    engine = create_engine(settings.resolved_database_url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


async def add_webhook(sessions, receiver: Receiver, name: str, site: str = DEMO_SITE_KEY,
                      events: list[str] | None = None) -> int:
    async with sessions() as db, db.begin():
        hook = await webhooks.register_webhook(db, site, receiver.url(name), events)
    receiver.secrets[name] = hook.secret
    return hook.id


async def site_id(sessions, key: str = DEMO_SITE_KEY) -> int:
    async with sessions() as db:
        return await db.scalar(select(Site.id).where(Site.key == key))


async def deliveries(sessions, webhook_id: int) -> list[WebhookDelivery]:
    async with sessions() as db:
        return await webhooks.list_deliveries(db, webhook_id)


async def settled(sessions, webhook_id: int, count: int = 1, timeout: float = 8) -> list[WebhookDelivery]:
    """The webhook's deliveries once `count` of them are no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        found = await deliveries(sessions, webhook_id)
        if sum(d.status != webhooks.PENDING for d in found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def publish(server: TestServer, sessions, subject: str, site: str = DEMO_SITE_KEY) -> int:
    """An event straight through the dispatcher (the real publishing points are tested on their own)."""
    return await server.app[WEBHOOKS_KEY].publish(webhooks.enqueue, await site_id(sessions, site), webhooks.CALL_ENDED,
                                                  subject, {"call_id": subject})


async def answered_call(base_url: str, http, agent_http, visitor: dict) -> tuple[str, dict]:
    """A call answered by the demo agent, given a disposition, then hung up by the agent."""
    await login(agent_http, base_url, "agent@demo.test")
    agent = await connect_agent(agent_http, base_url)
    caller = await connect_caller(http, base_url, visitor=visitor)
    call_id = (await caller.ok("call.start", queue="support", page={"url": f"{base_url}/demo/"}))["call_id"]
    await agent.next_event("call.incoming")
    await agent.ok("call.answer", call_id=call_id)
    await agent.ok("call.disposition", call_id=call_id, disposition="Offer sent")
    await agent.ok("call.hangup", call_id=call_id)
    ended = await caller.next_event("call.ended")
    await caller.close()
    await agent.close()
    return call_id, ended


# ----- the events -----

async def test_a_real_call_ending_reaches_the_receiver_signed(server, base_url, http, http2, sessions, receiver):
    hook_id = await add_webhook(sessions, receiver, "shop")
    visitor = new_visitor()
    call_id, ended = await answered_call(base_url, http, http2, visitor)

    got = await receiver.next("shop")
    assert got.verified
    event = got.event
    assert got.headers["Talk-Event"] == event["type"] == "call.ended"
    assert got.headers["Talk-Delivery"] == event["id"] and event["id"].startswith("evt_")
    assert got.headers["Content-Type"] == "application/json" and event["site"] == DEMO_SITE_KEY
    async with sessions() as db:
        agent_id = await db.scalar(select(Account.id).where(Account.email == "agent@demo.test"))
    data = event["data"]
    assert {k: data[k] for k in ("call_id", "queue", "channel", "agent_id", "seller_id", "end_reason", "disposition",
                                 "landing_url", "visitor_id")} == {
        "call_id": call_id, "queue": "support", "channel": "agent", "agent_id": agent_id, "seller_id": None,
        "end_reason": "completed", "disposition": "Offer sent", "landing_url": ended["landing_url"],
        "visitor_id": visitor["visitor_id"]}
    assert data["created_at"] <= data["ringing_at"] <= data["answered_at"] <= data["ended_at"]
    assert set(data) == {"call_id", "queue", "channel", "agent_id", "seller_id", "listing", "end_reason", "disposition",
                         "landing_url", "created_at", "ringing_at", "answered_at", "ended_at", "visitor_id"}  # no IP

    # Tampering with any signed part fails the receiver's check.
    secret, headers = receiver.secrets["shop"], got.headers
    assert verify_signature(secret, headers, got.body)
    assert not verify_signature(secret, headers, got.body.replace(b"completed", b"no-agent"))
    assert not verify_signature(secret, {**headers, "Talk-Timestamp": str(int(headers["Talk-Timestamp"]) - 1)},
                                got.body)
    assert not verify_signature("whsec_someone_else", headers, got.body)
    assert webhooks.verify(secret, headers["Talk-Timestamp"], got.body, headers["Talk-Signature"])

    [delivery] = await settled(sessions, hook_id)
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        "delivered", 1, 200, None)
    assert delivery.event_id == event["id"] and delivery.visitor_id == visitor["visitor_id"]


async def test_survey_and_attributed_conversion_reach_the_receiver(server, base_url, http, http2, sessions, receiver):
    every = await add_webhook(sessions, receiver, "all")
    calls_only = await add_webhook(sessions, receiver, "calls", events=["call.ended"])
    visitor = new_visitor()
    call_id, _ended = await answered_call(base_url, http, http2, visitor)
    assert (await receiver.next("all")).event["type"] == "call.ended"
    assert (await receiver.next("calls")).event["type"] == "call.ended"

    await server.app[CALLSTORE_KEY].flush()  # the ended call is on record (as it is long before a survey or purchase)
    origin = {"Origin": base_url}
    async with http.post(f"{base_url}/api/v1/surveys/{call_id}", json={"rating": 4, "comment": "<b>kind</b>"},
                         headers=origin) as response:
        assert response.status == 201
    got = await receiver.next("all")
    assert got.verified and got.event["type"] == got.headers["Talk-Event"] == "survey.submitted"
    assert {k: got.event["data"][k] for k in ("call_id", "rating", "comment", "queue", "visitor_id")} == {
        "call_id": call_id, "rating": 4, "comment": "<b>kind</b>", "queue": "support",
        "visitor_id": visitor["visitor_id"]}

    # A purchase by someone who never called is attributed to no call: no event. The caller's purchase is.
    stranger = {"site": DEMO_SITE_KEY, **new_visitor(), "order_id": "B-1", "value": 10, "currency": "EUR"}
    async with http.post(f"{base_url}/api/v1/conversions", json=stranger, headers=origin) as response:
        assert response.status == 201
    bought = {"site": DEMO_SITE_KEY, **visitor, "order_id": "A-1", "value": 189.5, "currency": "EUR"}
    async with http.post(f"{base_url}/api/v1/conversions", json=bought, headers=origin) as response:
        assert response.status == 201
    got = await receiver.next("all")
    assert got.verified and got.headers["Talk-Event"] == "conversion.attributed"
    data = got.event["data"]
    assert {k: data[k] for k in ("order_id", "value", "currency", "origin", "visitor_id", "call_ids")} == {
        "order_id": "A-1", "value": 189.5, "currency": "EUR", "origin": "browser", "visitor_id": visitor["visitor_id"],
        "call_ids": [call_id]}
    async with http.post(f"{base_url}/api/v1/conversions", json=bought, headers=origin) as response:
        assert response.status == 200  # a duplicate order: nothing new, no second event

    found = await settled(sessions, every, count=3)
    assert sorted(d.event_type for d in found) == ["call.ended", "conversion.attributed", "survey.submitted"]
    assert all(d.status == "delivered" for d in found)
    assert [d.event_type for d in await deliveries(sessions, calls_only)] == ["call.ended"]
    await asyncio.sleep(0.3)
    assert receiver.nothing_more("all") and receiver.nothing_more("calls")


# ----- retries and failures -----

async def test_a_failing_receiver_is_retried_with_backoff_and_the_log_shows_it(server, sessions, receiver):
    hook_id = await add_webhook(sessions, receiver, "flaky")
    receiver.script["flaky"] = [500, 500]
    assert await publish(server, sessions, "c_retry") == 1
    first, second, third = [await receiver.next("flaky") for _ in range(3)]
    assert all(r.verified for r in (first, second, third))
    assert first.headers["Talk-Delivery"] == second.headers["Talk-Delivery"] == third.headers["Talk-Delivery"]
    assert first.body == third.body
    assert second.at - first.at >= 0.19 and third.at - second.at >= 0.39  # the injected schedule (0.2 s, 0.4 s)

    [delivery] = await settled(sessions, hook_id)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 3, 200)
    assert delivery.last_error == "HTTP 500 Internal Server Error"  # the latest failure stays on record
    assert delivery.delivered_at is not None and delivery.next_attempt_at is None


async def test_a_receiver_that_always_fails_ends_failed_and_is_in_every_log(server, base_url, http, sessions,
                                                                              receiver, settings, capsys):
    down = await add_webhook(sessions, receiver, "down")
    receiver.always["down"] = 503
    async with sessions() as db, db.begin():  # nothing listens there: connection refused
        closed = (await webhooks.register_webhook(db, DEMO_SITE_KEY, f"http://127.0.0.1:{free_port()}/h")).id
        token = await create_token(db, "reports")
    await publish(server, sessions, "c_doomed")

    [failed] = await settled(sessions, down)
    assert (failed.status, failed.attempts, failed.last_status_code) == ("failed", 3, 503)
    assert failed.last_error == "HTTP 503 Service Unavailable" and failed.next_attempt_at is None
    assert len(receiver.received["down"]) == 3
    [refused] = await settled(sessions, closed)
    assert (refused.status, refused.attempts, refused.last_status_code) == ("failed", 3, None)
    assert refused.last_error.startswith("ClientConnectorError")

    # The JSON delivery log, for an API token.
    auth = {"Authorization": f"Bearer {token}"}
    async with http.get(f"{base_url}/api/v1/webhooks/{down}/deliveries?status=failed", headers=auth) as response:
        assert response.status == 200, await response.text()
        log = await response.json()
    assert log["webhook"]["url"] == receiver.url("down") and log["webhook"]["delivery_counts"]["failed"] == 1
    [entry] = log["deliveries"]
    assert {k: entry[k] for k in ("id", "status", "attempts", "last_status_code", "last_error", "event_type")} == {
        "id": failed.id, "status": "failed", "attempts": 3, "last_status_code": 503,
        "last_error": "HTTP 503 Service Unavailable", "event_type": "call.ended"}
    assert entry["payload"]["data"] == {"call_id": "c_doomed"} and log["next_cursor"] is None
    async with http.get(f"{base_url}/api/v1/webhooks/{down}/deliveries?status=delivered", headers=auth) as response:
        assert (await response.json())["deliveries"] == []

    # The CLI's.
    await asyncio.to_thread(main, ["webhook", "deliveries", "--failed", "--data-dir", str(settings.data_dir)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    line = next(line for line in lines if line.startswith(f"{failed.id}  "))
    assert "failed" in line and "attempts 3" in line and "code 503" in line and "HTTP 503 Service Unavailable" in line
    await asyncio.to_thread(main, ["webhook", "list", "--data-dir", str(settings.data_dir)])
    assert f"{down}  active    {DEMO_SITE_KEY}  {receiver.url('down')}" in capsys.readouterr().out


async def test_a_receiver_that_checks_with_another_secret_refuses_and_that_is_logged(server, sessions, receiver):
    hook_id = await add_webhook(sessions, receiver, "impostor")
    receiver.secrets["impostor"] = "whsec_not_the_one_talk_signs_with"
    await publish(server, sessions, "c_checked")
    got = await receiver.next("impostor")
    assert not got.verified
    [delivery] = await settled(sessions, hook_id)
    assert delivery.status == "failed" and delivery.last_error == "HTTP 401 Unauthorized"


async def test_a_slow_webhook_does_not_delay_another_sites_deliveries(server, sessions, receiver):
    async with sessions() as db, db.begin():
        await directory.create_site(db, "Other Shop", ["https://other.example"], key="other-shop")
    await add_webhook(sessions, receiver, "slow")
    receiver.delay["slow"] = 2.0  # past the 1 s timeout: every attempt hangs until it times out
    other = await add_webhook(sessions, receiver, "quick", site="other-shop")
    for n in range(12):  # more than the dispatcher's 8 slots
        await publish(server, sessions, f"c_backlog_{n}")
    await receiver.next("slow")  # the slow receiver holds an attempt now, and has a backlog

    started = time.monotonic()
    await publish(server, sessions, "c_other", site="other-shop")
    got = await receiver.next("quick", timeout=2)
    assert got.verified and got.event["site"] == "other-shop"
    assert got.at - started < 0.5
    [delivery] = await settled(sessions, other)
    assert delivery.status == "delivered" and delivery.attempts == 1


async def test_deliveries_are_bounded_in_number_at_once(settings, sessions, receiver):
    dispatcher = WebhookDispatcher(sessions, DispatchOptions(concurrency=2, timeout=2, poll_interval=0.2))
    hooks = [await add_webhook(sessions, receiver, f"hook{n}") for n in range(4)]
    for n in range(4):
        receiver.delay[f"hook{n}"] = 0.3
    await dispatcher.start()
    try:
        assert await dispatcher.publish(webhooks.enqueue, await site_id(sessions), webhooks.SURVEY_SUBMITTED,
                                        "c_many", {"call_id": "c_many"}) == 4
        for hook_id in hooks:
            assert [d.status for d in await settled(sessions, hook_id)] == ["delivered"]
    finally:
        await dispatcher.stop()
    assert receiver.max_in_flight == 2


async def test_a_pending_delivery_survives_a_restart(settings, sessions, receiver):
    hook_id = await add_webhook(sessions, receiver, "later")
    receiver.script["later"] = [503]
    first = TestServer(fast_app(settings, DispatchOptions(schedule=(5.0,), timeout=1.0)), host="127.0.0.1",
                       port=settings.port)
    await first.start_server()
    try:
        await first.app[WEBHOOKS_KEY].publish(webhooks.enqueue, await site_id(sessions), webhooks.CALL_ENDED,
                                              "c_restart", {"call_id": "c_restart"})
        assert (await receiver.next("later")).verified
        [pending] = await settled(sessions, hook_id, count=0)
        while pending.attempts == 0:
            [pending] = await deliveries(sessions, hook_id)
        assert (pending.status, pending.attempts) == ("pending", 1)
    finally:
        await first.close()  # stops with the delivery pending for another 5 s

    async with sessions() as db, db.begin():  # the retry is due now, as if the server had been down a while
        (await db.get(WebhookDelivery, pending.id)).next_attempt_at = webhooks.utcnow()
    second = TestServer(fast_app(settings), host="127.0.0.1", port=settings.port)
    await second.start_server()
    try:
        again = await receiver.next("later")
        assert again.verified and again.headers["Talk-Delivery"] == pending.event_id
        [delivered] = await settled(sessions, hook_id)
        assert (delivered.status, delivered.attempts) == ("delivered", 2)
    finally:
        await second.close()


async def test_a_disabled_webhook_gets_no_new_events_and_a_removed_one_no_more(server, sessions, receiver):
    hook_id = await add_webhook(sessions, receiver, "paused")
    async with sessions() as db, db.begin():
        await webhooks.set_active(db, hook_id, False)
    assert await publish(server, sessions, "c_paused") == 0
    async with sessions() as db, db.begin():
        await webhooks.set_active(db, hook_id, True)
    assert await publish(server, sessions, "c_resumed") == 1
    assert (await receiver.next("paused")).event["data"] == {"call_id": "c_resumed"}
    assert await publish(server, sessions, "c_resumed") == 0  # the same event again: already stored
    async with sessions() as db, db.begin():
        await webhooks.remove_webhook(db, hook_id)
    assert await publish(server, sessions, "c_gone") == 0
    assert await deliveries(sessions, hook_id) == []


# ----- the admin surface -----

def cli(settings: Settings, *args: str) -> None:
    main([*args, "--data-dir", str(settings.data_dir)])


async def test_cli_adds_lists_and_removes_webhooks(settings, sessions, capsys):
    await asyncio.to_thread(cli, settings, "webhook", "add", "--site", DEMO_SITE_KEY, "--url",
                            "https://shop.example/hooks/talk", "--events", "survey.submitted,call.ended")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("webhook ") and out[0].endswith(": https://shop.example/hooks/talk")
    assert out[1] == "events call.ended, survey.submitted" and out[-1].startswith("whsec_")
    hook_id = int(out[0].split()[1])
    async with sessions() as db:
        [hook] = await webhooks.list_webhooks(db, hook_id)
    assert hook.events == ["call.ended", "survey.submitted"]

    await asyncio.to_thread(cli, settings, "webhook", "list")
    listing = capsys.readouterr().out
    assert "https://shop.example/hooks/talk" in listing and out[-1] not in listing  # the secret is shown only once
    await asyncio.to_thread(cli, settings, "webhook", "disable", str(hook_id))
    assert "disabled" in capsys.readouterr().out
    await asyncio.to_thread(cli, settings, "webhook", "remove", str(hook_id))
    assert "removed" in capsys.readouterr().out
    await asyncio.to_thread(cli, settings, "webhook", "list")
    assert capsys.readouterr().out.strip() == "no webhooks"


@pytest.mark.parametrize("args, message", [
    (["webhook", "add", "--site", DEMO_SITE_KEY, "--url", "ftp://shop.example/h"], "http"),
    (["webhook", "add", "--site", DEMO_SITE_KEY, "--url", "https://u:p@shop.example/h"], "password"),
    (["webhook", "add", "--site", "no-such-site", "--url", "https://shop.example/h"], "no site with key"),
    (["webhook", "add", "--site", DEMO_SITE_KEY, "--url", "https://shop.example/h", "--events", "call.started"],
     "unknown call.started"),
    (["webhook", "remove", "999"], "no webhook with id 999"),
    (["webhook", "deliveries", "--webhook", "999"], "no webhook with id 999"),
])
def test_cli_refuses_bad_input_clearly(settings, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        cli(settings, *args)
    assert exit_.value.code != 0
    assert message in str(exit_.value.code) + capsys.readouterr().err


async def test_forgetting_a_visitor_removes_their_deliveries(server, settings, sessions, receiver, capsys):
    hook_id = await add_webhook(sessions, receiver, "private")
    await server.app[WEBHOOKS_KEY].publish(webhooks.enqueue, await site_id(sessions), webhooks.SURVEY_SUBMITTED,
                                           "c_p", {"call_id": "c_p"}, visitor_id="v_forget_me_please_now")
    await receiver.next("private")
    await asyncio.to_thread(cli, settings, "privacy", "forget", "v_forget_me_please_now")
    assert "1 webhook_deliveries" in capsys.readouterr().out
    assert await deliveries(sessions, hook_id) == []


@pytest.fixture
async def admin(sessions) -> None:
    async with sessions() as db, db.begin():
        await directory.create_account(db, ADMIN_EMAIL, "Ada Admin", ADMIN_PASSWORD, Role.ADMIN)


async def test_admin_page_lists_webhooks_and_deliveries_escaped(server, base_url, http, http2, sessions, receiver,
                                                                 admin):
    async with sessions() as db, db.begin():
        hook = await webhooks.register_webhook(db, DEMO_SITE_KEY, receiver.url("page") + "?tag=<b>x</b>")
    receiver.secrets["page"] = hook.secret
    receiver.always["page"] = 418
    await publish(server, sessions, "c_page")
    await settled(sessions, hook.id)

    async with http.get(f"{base_url}/admin/webhooks", allow_redirects=False) as response:
        assert response.status == 302 and response.headers["Location"] == "/login?next=/admin/webhooks"
    await login(http2, base_url, "marketer@demo.test")
    async with http2.get(f"{base_url}/admin/webhooks") as response:
        assert response.status == 403

    await login(http, base_url, ADMIN_EMAIL, ADMIN_PASSWORD)
    async with http.get(f"{base_url}/admin/webhooks?status=failed") as response:
        assert response.status == 200
        page = await response.text()
        assert "script-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Cache-Control"] == "no-store"
    assert "?tag=&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert 'data-delivery="' in page and 'data-status="failed"' in page
    assert "HTTP 418 I&#39;m a Teapot" in page  # escaped like everything else
    async with http.get(f"{base_url}/admin/webhooks?status=nope") as response:
        assert response.status == 400


async def test_delivery_log_api_is_for_tokens_and_admins(server, base_url, http, http2, sessions, receiver, admin):
    hook_id = await add_webhook(sessions, receiver, "api")
    for n in range(3):
        await publish(server, sessions, f"c_api_{n}")
    await settled(sessions, hook_id, count=3)
    url = f"{base_url}/api/v1/webhooks/{hook_id}/deliveries"

    async with http.get(url) as response:
        assert response.status == 401 and (await response.json())["error"]["code"] == "unauthorized"
    async with http.get(url, headers={"Authorization": "Bearer tk_wrong"}) as response:
        assert response.status == 401
    await login(http2, base_url, "marketer@demo.test")
    async with http2.get(url) as response:
        assert response.status == 403 and (await response.json())["error"]["code"] == "forbidden"

    await login(http, base_url, ADMIN_EMAIL, ADMIN_PASSWORD)
    async with http.get(url, params={"limit": "2"}) as response:
        assert response.status == 200
        page = await response.json()
    assert [d["payload"]["data"]["call_id"] for d in page["deliveries"]] == ["c_api_2", "c_api_1"]
    async with http.get(url, params={"limit": "2", "before": str(page["next_cursor"])}) as response:
        rest = await response.json()
    assert [d["payload"]["data"]["call_id"] for d in rest["deliveries"]] == ["c_api_0"] and rest["next_cursor"] is None
    for query, status in (({"status": "nope"}, 400), ({"limit": "0"}, 400), ({"limit": "x"}, 400),
                          ({"before": "-1"}, 400)):
        async with http.get(url, params=query) as response:
            assert response.status == status, query
    async with http.get(f"{base_url}/api/v1/webhooks/999999/deliveries") as response:
        assert response.status == 404
    async with http.get(f"{base_url}/api/v1/webhooks/abc/deliveries") as response:
        assert response.status == 400


@pytest.mark.postgres
async def test_webhooks_on_postgres(tmp_path, pg_database, http, http2, receiver):
    """The outbox (ON CONFLICT), the leases and the retries on PostgreSQL, with a real call ending."""
    settings = Settings(data_dir=tmp_path, demo=True, port=free_port(), database_url=pg_database)
    server = TestServer(fast_app(settings), host="127.0.0.1", port=settings.port)
    await server.start_server()
    engine = create_engine(pg_database)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        hook_id = await add_webhook(sessions, receiver, "pg")
        receiver.script["pg"] = [500]
        call_id, _ended = await answered_call(f"http://127.0.0.1:{server.port}", http, http2, new_visitor())
        first, second = await receiver.next("pg"), await receiver.next("pg")
        assert first.verified and second.verified and second.event["data"]["call_id"] == call_id
        [delivery] = await settled(sessions, hook_id)
        assert (delivery.status, delivery.attempts, delivery.last_error) == (
            "delivered", 2, "HTTP 500 Internal Server Error")
        async with sessions() as db, db.begin():  # the same event again is stored once
            call = {"id": call_id, "site_id": await site_id(sessions), "queue_id": 1, "visitor_id": "v_x"}
            assert await webhooks.enqueue_call_ended(db, call) == 0
    finally:
        await server.close()
        await engine.dispose()
