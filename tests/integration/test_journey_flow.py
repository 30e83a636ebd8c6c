"""The journey end to end, through the real HTTP and WebSocket endpoints (the browser version is in tests/e2e):
pages before, the agent seeing them while it rings, disposition with its own landing page, survey, pages after and a
conversion, all returned by the call API."""

from __future__ import annotations

import secrets
import time
from urllib.parse import parse_qs, urlsplit

import aiohttp
from sqlalchemy.ext.asyncio import async_sessionmaker

from signaling import CALLSTORE_KEY
from talk.apitokens import create_token
from talk.db import create_engine
from tests.support.client import connect_agent, connect_caller, login, new_visitor


async def post_pageviews(http, base_url, visitor, *paths, site="demo-shop"):
    events = [{"id": f"e_{secrets.token_urlsafe(16)}", "type": "pageview", "ts": int(time.time() * 1000),
               "url": f"{base_url}{path}", "title": f"Title of {path}", "referrer": ""} for path in paths]
    body = {"site": site, **visitor, "sent_at": int(time.time() * 1000), "events": events}
    async with http.post(f"{base_url}/api/v1/events", json=body, headers={"Origin": base_url}) as response:
        assert response.status == 202, await response.text()
        return await response.json()


async def api_token(settings) -> str:
    engine = create_engine(settings.resolved_database_url)
    async with async_sessionmaker(engine)() as db, db.begin():
        token = await create_token(db, "test")
    await engine.dispose()
    return token


async def test_call_joined_to_its_journey(server, base_url, http, http2, settings):
    visitor = new_visitor()
    await post_pageviews(http, base_url, visitor, "/demo/", "/demo/about?utm_source=news&utm_medium=email",
                         "/demo/products/blue-kettle")
    await login(http2, base_url, "agent@demo.test")
    agent = await connect_agent(http2, base_url)
    assert agent.hello["queues"][0]["dispositions"] == ["Question answered", "Offer sent"]
    caller = await connect_caller(http, base_url, visitor=visitor)
    call_id = (await caller.ok("call.start", queue="support", page={"url": f"{base_url}/demo/products/blue-kettle"}))["call_id"]

    incoming = await agent.next_event("call.incoming")
    assert incoming["dispositions"] == ["Question answered", "Offer sent"]
    journey = incoming["journey"] or (await agent.next_event("call.journey"))["journey"]
    assert [p["path"] for p in journey["pages"]] == ["/demo/", "/demo/about", "/demo/products/blue-kettle"]
    assert journey["pages"][0]["time_on_page"] is not None
    assert journey["source"]["kind"] == "direct" and journey["earlier_calls"] == []

    await agent.ok("call.answer", call_id=call_id)
    await agent.ok("call.disposition", call_id=call_id, disposition="Offer sent")
    await agent.ok("call.hangup", call_id=call_id)
    ended = await caller.next_event("call.ended")
    landing = urlsplit(ended["landing_url"])
    assert ended["survey"] is True
    assert f"{landing.scheme}://{landing.netloc}" == base_url and landing.path == "/demo/offer"
    assert parse_qs(landing.query)["talk_call"] == [call_id]

    # The disposition may still change after the end; the later choice is what counts.
    await agent.ok("call.disposition", call_id=call_id, disposition="Question answered")

    origin = {"Origin": base_url}
    async with http.get(f"{base_url}/api/v1/surveys/{call_id}", headers=origin) as response:
        assert (await response.json())["answered"] is False
    async with http.post(f"{base_url}/api/v1/surveys/{call_id}", json={"rating": 5, "comment": "<b>great</b>"},
                         headers=origin) as response:
        assert response.status == 201
    await post_pageviews(http, base_url, visitor, f"/demo/offer?talk_call={call_id}", "/demo/products/oak-chair",
                         "/demo/products/linen-throw")
    conversion = {"site": "demo-shop", **visitor, "order_id": "A-1", "value": 189, "currency": "EUR"}
    async with http.post(f"{base_url}/api/v1/conversions", json=conversion, headers=origin) as response:
        assert response.status == 201

    await server.app[CALLSTORE_KEY].flush()
    token = await api_token(settings)
    async with http.get(f"{base_url}/api/v1/calls/{call_id}", headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200, await response.text()
        call = await response.json()
    assert [p["path"] for p in call["pages_before"]] == ["/demo/", "/demo/about", "/demo/products/blue-kettle"]
    # The landing page Talk sent the caller to is the call's outcome (landing_url), not one of the pages after.
    assert [p["path"] for p in call["pages_after"]] == ["/demo/products/oak-chair", "/demo/products/linen-throw"]
    assert call["survey"]["rating"] == 5 and call["survey"]["comment"] == "<b>great</b>"
    assert call["conversions"] == [{"order_id": "A-1", "value": 189.0, "currency": "EUR", "ts": call["conversions"][0]["ts"]}]
    assert call["disposition"] == "Question answered" and call["agent"]["email"] == "agent@demo.test"
    assert call["end_reason"] == "completed" and call["landing_url"] == ended["landing_url"]
    assert call["source"]["kind"] == "direct"

    # A second call by the same visitor shows the first among the earlier calls.
    second = (await caller.ok("call.start", queue="support"))["call_id"]
    incoming = await agent.next_event("call.incoming")
    journey = incoming["journey"] or (await agent.next_event("call.journey"))["journey"]
    assert [c["call_id"] for c in journey["earlier_calls"]] == [call_id]
    await caller.ok("call.hangup", call_id=second)
    await caller.close()
    await agent.close()


async def test_a_call_without_consent_has_no_journey(server, base_url, http, http2, settings):
    visitor = new_visitor()
    await post_pageviews(http, base_url, visitor, "/demo/")  # tracked earlier, but this call carries no ids
    await login(http2, base_url, "agent@demo.test")
    agent = await connect_agent(http2, base_url)
    caller = await connect_caller(http, base_url)
    call_id = (await caller.ok("call.start", queue="support"))["call_id"]
    incoming = await agent.next_event("call.incoming")
    assert incoming["journey"] == {"pages": [], "source": None, "earlier_calls": []}
    await agent.ok("call.answer", call_id=call_id)
    await caller.ok("call.hangup", call_id=call_id)
    ended = await caller.next_event("call.ended")
    assert ended["landing_url"].endswith(f"/demo/thanks?talk_call={call_id}")  # the queue's default landing page
    await server.app[CALLSTORE_KEY].flush()
    token = await api_token(settings)
    async with http.get(f"{base_url}/api/v1/calls/{call_id}", headers={"Authorization": f"Bearer {token}"}) as response:
        call = await response.json()
    assert call["pages_before"] == [] and call["pages_after"] == [] and call["visitor_id"] is None
    await caller.close()
    await agent.close()


async def test_the_landing_page_on_our_own_origin_reads_its_survey_without_an_origin_header(server, base_url, http):
    """Browsers send no Origin on a same-origin GET: the demo's own landing page must still get its survey."""
    visitor = new_visitor()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as agent_http:
        await login(agent_http, base_url, "agent@demo.test")
        agent = await connect_agent(agent_http, base_url)
        caller = await connect_caller(http, base_url, visitor=visitor)
        call_id = (await caller.ok("call.start", queue="support"))["call_id"]
        await agent.next_event("call.incoming")
        await agent.ok("call.answer", call_id=call_id)
        await caller.ok("call.hangup", call_id=call_id)
        await server.app[CALLSTORE_KEY].flush()
        async with http.get(f"{base_url}/api/v1/surveys/{call_id}", headers={"Sec-Fetch-Site": "same-origin"}) as response:
            assert response.status == 200 and "Access-Control-Allow-Origin" not in response.headers
        async with http.get(f"{base_url}/api/v1/surveys/{call_id}", headers={"Sec-Fetch-Site": "cross-site"}) as response:
            assert response.status == 403
        async with http.post(f"{base_url}/api/v1/surveys/{call_id}", json={"rating": 4}) as response:
            assert response.status == 403  # writes always need an allowed Origin
        await caller.close()
        await agent.close()
