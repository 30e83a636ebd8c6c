"""Sellers and masked endpoints on a real database: the lifecycle of an endpoint (create, resolve, revoke, expire,
refusals), seller queues, voicemail records, the CLI, the HTTP API and the demo's listing pages."""

from __future__ import annotations

import re
import sqlite3
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from talk import directory, sellers, voicemails
from talk.apitokens import create_token
from talk.cli import main
from talk.db import create_engine
from talk.demo import DEMO_LISTINGS, DEMO_SELLER, DEMO_SITE_KEY, demo_listing_tokens, seed_demo
from talk.directory import utcnow
from talk.models import Account, CallRecord, EndpointRefusal, Queue, QueueMember, SellerEndpoint
from talk.sellers import EndpointUnavailable, InvalidField, NotAllowed, NotFound
from talk.settings import Settings
from talk.types import Role
from tests.support.client import login

ADMIN_EMAIL, ADMIN_PASSWORD = "admin@demo.test", "admin password"
VISITOR = "v_AAAAAAAAAAAAAAAAAAAAAA"


@pytest.fixture
async def sessions(settings: Settings):
    engine = create_engine(settings.resolved_database_url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


async def new_endpoint(sessions, **kwargs) -> str:
    async with sessions() as db, db.begin():
        return (await sellers.create_endpoint(db, DEMO_SELLER, DEMO_SITE_KEY, **kwargs)).token


# ----- sellers and their queues -----

async def test_a_seller_gets_a_private_queue_that_only_they_answer(sessions):
    async with sessions() as db, db.begin():
        seller = await sellers.create_seller(db, DEMO_SITE_KEY, "Nils@Example.com", "Nils Real", "a password",
                                             "Nils' Workshop")
        queue = await sellers.seller_queue(db, seller.id, (await directory.site_by_key(db, DEMO_SITE_KEY)).id)
        members = list(await db.scalars(select(QueueMember.account_id).where(QueueMember.queue_id == queue.id)))
        site_queues = await directory.site_queues(db, queue.site_id)
        own = await directory.agent_queues(db, seller.id)
    assert (seller.email, seller.role, seller.public_name) == ("nils@example.com", Role.SELLER, "Nils' Workshop")
    assert (queue.name, queue.kind, queue.seller_id, queue.display_name) == (
        f"seller-{seller.id}", "seller", seller.id, "Nils' Workshop")
    assert members == [seller.id]
    # The switchboard treats it like any queue; callers' lists must filter it out by kind.
    info = next(q for q in site_queues if q.id == queue.id)
    assert (info.kind, info.seller_id, info.voicemail_enabled) == ("seller", seller.id, True)
    assert next(q for q in site_queues if q.name == "support").kind == "agents"
    assert [q.id for q in own] == [queue.id]


async def test_a_seller_can_sell_on_another_site_once(sessions):
    async with sessions() as db, db.begin():
        await directory.create_site(db, "Bikes", ["https://bikes.example"], key="bikes")
        with pytest.raises(InvalidField, match="does not sell on site bikes"):
            await sellers.create_endpoint(db, DEMO_SELLER, "bikes")
        first = await sellers.add_seller_site(db, DEMO_SELLER, "bikes")
        again = await sellers.add_seller_site(db, DEMO_SELLER, "bikes")
        endpoint = await sellers.create_endpoint(db, DEMO_SELLER, "bikes")
    assert first.id == again.id and endpoint.queue_id == first.id


async def test_only_seller_accounts_have_endpoints(sessions):
    async with sessions() as db, db.begin():
        with pytest.raises(InvalidField, match="not a seller"):
            await sellers.create_endpoint(db, "agent@demo.test", DEMO_SITE_KEY)
        with pytest.raises(NotFound):
            await sellers.create_endpoint(db, "nobody@demo.test", DEMO_SITE_KEY)
        with pytest.raises(directory.DirectoryError, match="no site"):
            await sellers.create_endpoint(db, DEMO_SELLER, "no-such-site")
        with pytest.raises(directory.DirectoryError, match="kept for sellers"):
            await directory.create_queue(db, DEMO_SITE_KEY, "seller-99")


# ----- an endpoint's life -----

async def test_endpoint_lifecycle_create_resolve_revoke(sessions):
    token = await new_endpoint(sessions, listing="SKU-9", label="Tandem")
    async with sessions() as db:
        info = await sellers.resolve_endpoint(db, token, utcnow())
        seller = await db.scalar(select(Account).where(Account.email == DEMO_SELLER))
    assert (info.token, info.listing, info.label, info.seller_id) == (token, "SKU-9", "Tandem", seller.id)
    assert info.seller_public_name == "Nordic Bikes"  # never the account's name or e-mail

    async with sessions() as db, db.begin():
        revoked = await sellers.revoke_endpoint(db, token)
        again = await sellers.revoke_endpoint(db, token)  # idempotent: the first time stays
    assert revoked.revoked_at is not None and again.revoked_at == revoked.revoked_at

    async with sessions() as db, db.begin():
        with pytest.raises(EndpointUnavailable) as refused:
            await sellers.resolve_endpoint(db, token, utcnow())
        assert refused.value.reason == "revoked" and refused.value.endpoint_id == info.endpoint_id
        assert "can no longer be called" in refused.value.message
        assert await sellers.record_refusal(db, refused.value.endpoint_id, refused.value.site_id, VISITOR, "revoked")
        # A reload a moment later is the same attempt; another visitor's is not.
        assert not await sellers.record_refusal(db, info.endpoint_id, info.site_id, VISITOR, "revoked")
        assert await sellers.record_refusal(db, info.endpoint_id, info.site_id, "v_BBBBBBBBBBBBBBBBBBBBBB", "revoked")
        assert await sellers.record_refusal(db, info.endpoint_id, info.site_id, "not a visitor id", "revoked")
    async with sessions() as db:
        rows = (await db.execute(select(EndpointRefusal.visitor_id, EndpointRefusal.reason, EndpointRefusal.site_id)
                                 .order_by(EndpointRefusal.id))).all()
    assert rows == [(VISITOR, "revoked", info.site_id), ("v_BBBBBBBBBBBBBBBBBBBBBB", "revoked", info.site_id),
                    (None, "revoked", info.site_id)]


async def test_an_expired_endpoint_is_refused_and_recorded(sessions):
    now = utcnow()
    token = await new_endpoint(sessions, expires_at=now + timedelta(hours=1), now=now)
    async with sessions() as db, db.begin():
        assert (await sellers.resolve_endpoint(db, token, now + timedelta(minutes=59))).token == token
        with pytest.raises(EndpointUnavailable) as refused:
            await sellers.resolve_endpoint(db, token, now + timedelta(hours=1))
        assert refused.value.reason == "expired" and "expired" in refused.value.message
        await sellers.record_refusal(db, refused.value.endpoint_id, refused.value.site_id, None, "expired")
        assert await db.scalar(select(func.count()).select_from(EndpointRefusal)
                               .where(EndpointRefusal.reason == "expired")) == 1
        with pytest.raises(InvalidField, match="expires_at: in the past"):
            await sellers.create_endpoint(db, DEMO_SELLER, DEMO_SITE_KEY, expires_at=now - timedelta(seconds=1))


@pytest.mark.parametrize("token", ["se_doesnotexist", "q_not-an-endpoint", "", "se_" + "x" * 100, "tk_abc"])
async def test_unknown_tokens_are_unknown(sessions, token):
    async with sessions() as db:
        with pytest.raises(EndpointUnavailable) as refused:
            await sellers.resolve_endpoint(db, token, utcnow())
    assert refused.value.reason == "unknown" and refused.value.endpoint_id is None


async def test_call_tokens_name_agent_queues_and_endpoints_but_not_seller_queues(sessions):
    token = await new_endpoint(sessions, listing="bike-003")
    async with sessions() as db:
        support = await directory.queue_by_name(db, DEMO_SITE_KEY, "support")
        seller_queue = await db.scalar(select(Queue).where(Queue.kind == "seller"))
        queue_target = await sellers.target_of_call_token(db, support.call_token, utcnow())
        endpoint_target = await sellers.target_of_call_token(db, token, utcnow())
        with pytest.raises(EndpointUnavailable):
            await sellers.target_of_call_token(db, seller_queue.call_token, utcnow())
    assert (queue_target.kind, queue_target.site_key, queue_target.queue_name) == ("queue", DEMO_SITE_KEY, "support")
    assert (endpoint_target.kind, endpoint_target.display_name) == ("endpoint", "Nordic Bikes")
    assert endpoint_target.endpoint.listing == "bike-003"


async def test_listing_endpoints(sessions):
    await new_endpoint(sessions, listing="A")
    async with sessions() as db, db.begin():
        await sellers.create_seller(db, DEMO_SITE_KEY, "other@demo.test", "O", "a password", "Other")
        await sellers.create_endpoint(db, "other@demo.test", DEMO_SITE_KEY, listing="B")
        everyone = await sellers.list_endpoints(db)
        mine = await sellers.list_endpoints(db, DEMO_SELLER)
    assert {e.seller_email for e in everyone} == {DEMO_SELLER, "other@demo.test"}
    assert {e.seller_email for e in mine} == {DEMO_SELLER} and "A" in [e.listing for e in mine]


# ----- voicemail records -----

async def _call(sessions, call_id: str, queue_id: int, site_id: int) -> None:
    async with sessions() as db, db.begin():
        db.add(CallRecord(id=call_id, site_id=site_id, queue_id=queue_id, visitor_id=VISITOR, state="ended",
                          end_reason="no-agent", created_at=utcnow()))


async def test_voicemails_reach_the_seller_or_the_queue_and_can_be_handled(sessions, settings):
    async with sessions() as db:
        seller = await db.scalar(select(Account).where(Account.email == DEMO_SELLER))
        agent = await db.scalar(select(Account).where(Account.email == "agent@demo.test"))
        seller_queue = await db.scalar(select(Queue).where(Queue.kind == "seller", Queue.seller_id == seller.id))
        support = await directory.queue_by_name(db, DEMO_SITE_KEY, "support")
    await _call(sessions, "c_seller", seller_queue.id, seller_queue.site_id)
    await _call(sessions, "c_support", support.id, support.site_id)
    async with sessions() as db, db.begin():
        for_seller = await voicemails.add_voicemail(
            db, call_id="c_seller", site_id=seller_queue.site_id, queue_id=seller_queue.id, recipient_id=seller.id,
            buyer_alias="Buyer 4821", file_name="vm_one.wav", duration_seconds=12.5, listing="bike-001")
        for_queue = await voicemails.add_voicemail(
            db, call_id="c_support", site_id=support.site_id, queue_id=support.id, recipient_id=None,
            buyer_alias="Caller 1", file_name="vm_two.wav", duration_seconds=3)

    async with sessions() as db:
        seller_sees = await voicemails.voicemails_for(db, seller.id)
        agent_sees = await voicemails.voicemails_for(db, agent.id)
    assert [(v.id, v.listing, v.buyer_alias, v.for_seller) for v in seller_sees] == [
        (for_seller.id, "bike-001", "Buyer 4821", True)]
    assert [(v.id, v.queue_display_name, v.for_seller) for v in agent_sees] == [(for_queue.id, "Support", False)]

    async with sessions() as db, db.begin():
        with pytest.raises(NotAllowed):
            await voicemails.mark_handled(db, for_seller.id, agent.id)
        with pytest.raises(NotAllowed):
            await voicemails.voicemail_for_download(db, for_queue.id, seller.id, settings.data_dir)
        with pytest.raises(NotFound, match="file is missing"):
            await voicemails.voicemail_for_download(db, for_seller.id, seller.id, settings.data_dir)
        with pytest.raises(NotFound):
            await voicemails.mark_handled(db, "vm_nope", seller.id)
        handled = await voicemails.mark_handled(db, for_seller.id, seller.id)
    assert handled.handled_at is not None and handled.handled_by == seller.id

    folder = voicemails.voicemail_dir(settings.data_dir)
    folder.mkdir()
    (folder / "vm_one.wav").write_bytes(b"RIFF")
    async with sessions() as db:
        assert await voicemails.voicemails_for(db, seller.id) == []
        assert [v.handled_at for v in await voicemails.voicemails_for(db, seller.id, include_handled=True)] == [
            handled.handled_at]
        path = await voicemails.voicemail_for_download(db, for_seller.id, seller.id, settings.data_dir)
    assert path == (folder / "vm_one.wav").resolve()


# ----- CLI -----

def test_cli_sellers_endpoints_and_links(tmp_path, capsys):
    data = ["--data-dir", str(tmp_path)]
    main(["site", "create", "Bikes", "--origin", "https://bikes.example", "--key", "bikes", *data])
    main(["queue", "create", "bikes", "support", *data])
    main(["seller", "create", "--site", "bikes", "--email", "Ann@Example.com", "--name", "Ann Real",
          "--public-name", "Ann's Bikes", "--password", "long enough", *data])
    assert "seller account ann@example.com" in capsys.readouterr().out

    main(["endpoint", "create", "--seller", "ann@example.com", "--site", "bikes", "--listing", "SKU-1",
          "--label", "Red bike", "--expires-in-days", "30", *data])
    out = capsys.readouterr().out
    token = re.search(r"masked endpoint (se_[A-Za-z0-9_-]+)", out).group(1)
    assert f"http://127.0.0.1:8080/c/{token}" in out and f"/c/{token}.png" in out
    main(["endpoint", "create", "--seller", "ann@example.com", "--site", "bikes", "--expires", "2099-01-31T00:00Z",
          *data])
    main(["endpoint", "revoke", token, *data])
    assert "revoked" in capsys.readouterr().out.splitlines()[-1]
    main(["endpoint", "list", "--seller", "ann@example.com", *data])
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and token in listed[0] and "revoked" in listed[0] and "SKU-1" in listed[0]
    assert "active" in listed[1] and "2099-01-31T00:00" in listed[1]

    main(["queue", "link", "--site", "bikes", "--queue", "support", *data])
    link = re.search(r"http://127\.0\.0\.1:8080/c/(q_[A-Za-z0-9_-]+)\n", capsys.readouterr().out).group(1)
    main(["queue", "configure", "bikes", "support", "--no-voicemail", *data])
    assert "voicemail off" in capsys.readouterr().out

    with sqlite3.connect(tmp_path / "talk.db") as db:
        assert db.execute("SELECT call_token, voicemail_enabled FROM queues WHERE name='support'").fetchone() == (link, 0)
        assert db.execute("SELECT public_name, role FROM accounts").fetchone() == ("Ann's Bikes", "seller")
        rows = db.execute("SELECT listing, label, revoked_at IS NOT NULL FROM seller_endpoints ORDER BY id").fetchall()
    assert rows == [("SKU-1", "Red bike", 1), (None, None, 0)]


@pytest.mark.parametrize("args, message", [
    (["endpoint", "create", "--seller", "nobody@x.test", "--site", "bikes"], "no account nobody@x.test"),
    (["endpoint", "create", "--seller", "s@x.test", "--site", "bikes", "--expires", "2001-01-01"], "in the past"),
    (["endpoint", "create", "--seller", "s@x.test", "--site", "bikes", "--expires", "soon"], "not an ISO date"),
    (["endpoint", "create", "--seller", "s@x.test", "--site", "bikes", "--expires-in-days", "-1"], "positive"),
    (["endpoint", "create", "--seller", "s@x.test", "--site", "bikes", "--listing", "x" * 121], "at most 120"),
    (["endpoint", "revoke", "se_unknown"], "no masked endpoint"),
    (["queue", "link", "--site", "bikes", "--queue", "nope"], "has no queue 'nope'"),
    (["queue", "link", "--site", "bikes", "--queue", "seller-1"], "masked endpoints"),
    (["seller", "create", "--site", "nope", "--email", "t@x.test", "--name", "T", "--public-name", "T",
      "--password", "long enough"], "no site with key"),
], ids=["unknown-seller", "past-expiry", "bad-expiry", "negative-days", "long-listing", "unknown-token",
        "unknown-queue", "seller-queue", "unknown-site"])
def test_cli_refuses_bad_input_clearly(tmp_path, capsys, args, message):
    data = ["--data-dir", str(tmp_path)]
    main(["site", "create", "Bikes", "--origin", "https://bikes.example", "--key", "bikes", *data])
    main(["seller", "create", "--site", "bikes", "--email", "s@x.test", "--name", "S", "--public-name", "S",
          "--password", "long enough", *data])
    with pytest.raises(SystemExit) as exit_:
        main([*args, *data])
    assert exit_.value.code != 0
    assert message in str(exit_.value.code) + capsys.readouterr().err


# ----- HTTP API -----

@pytest.fixture
async def admin(sessions) -> None:
    async with sessions() as db, db.begin():
        await directory.create_account(db, ADMIN_EMAIL, "Ada Admin", ADMIN_PASSWORD, Role.ADMIN)


@pytest.fixture
async def token(sessions) -> str:
    async with sessions() as db, db.begin():
        return await create_token(db, "shop backend")


async def api(http: aiohttp.ClientSession, method: str, url: str, token: str | None = None,
              **kwargs: Any) -> tuple[int, Any]:
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with http.request(method, url, headers=headers, **kwargs) as response:
        try:
            return response.status, await response.json(content_type=None)
        except ValueError:
            return response.status, await response.text()


def assert_error(reply: tuple[int, Any], status: int, code: str, mentions: str = "") -> None:
    assert reply[0] == status, reply
    assert reply[1]["error"]["code"] == code and mentions in reply[1]["error"]["message"], reply


async def test_api_creates_lists_and_revokes_endpoints(server, base_url, http, token):
    status, created = await api(http, "POST", f"{base_url}/api/v1/endpoints", token, json={
        "seller": DEMO_SELLER, "site": DEMO_SITE_KEY, "listing": "bike-009", "label": "Tandem",
        "expires_at": "2099-01-31T00:00Z"})
    assert status == 201, created
    endpoint = created["token"]
    assert re.fullmatch(r"se_[A-Za-z0-9_-]{32}", endpoint)
    assert created["call_url"] == f"{base_url}/c/{endpoint}"
    assert (created["qr_svg"], created["qr_png"]) == (f"{base_url}/c/{endpoint}.svg", f"{base_url}/c/{endpoint}.png")
    assert {k: created[k] for k in ("status", "seller", "public_name", "site", "listing", "label", "revoked_at")} == {
        "status": "active", "seller": DEMO_SELLER, "public_name": "Nordic Bikes", "site": DEMO_SITE_KEY,
        "listing": "bike-009", "label": "Tandem", "revoked_at": None}
    assert created["expires_at"].startswith("2099-01-31T00:00:00")

    status, listed = await api(http, "GET", f"{base_url}/api/v1/endpoints", token, params={"seller": DEMO_SELLER})
    assert status == 200 and endpoint in [e["token"] for e in listed["endpoints"]]
    assert {e["listing"] for e in listed["endpoints"]} >= {"bike-001", "bike-002", "bike-009"}

    status, revoked = await api(http, "DELETE", f"{base_url}/api/v1/endpoints/{endpoint}", token)
    assert status == 200 and revoked["status"] == "revoked" and revoked["revoked_at"]
    status, again = await api(http, "DELETE", f"{base_url}/api/v1/endpoints/{endpoint}", token)
    assert status == 200 and again["revoked_at"] == revoked["revoked_at"]
    assert_error(await api(http, "DELETE", f"{base_url}/api/v1/endpoints/se_nope", token), 404, "not_found")


@pytest.mark.parametrize("method, path", [("GET", "/api/v1/endpoints"), ("POST", "/api/v1/endpoints"),
                                          ("DELETE", "/api/v1/endpoints/se_x")])
async def test_api_needs_a_token_or_an_admin(server, base_url, http, http2, method, path):
    body = {"seller": DEMO_SELLER, "site": DEMO_SITE_KEY}
    assert_error(await api(http, method, base_url + path, json=body), 401, "unauthorized")
    assert_error(await api(http, method, base_url + path, "tk_wrong", json=body), 401, "unauthorized")
    await login(http, base_url, "agent@demo.test")
    assert_error(await api(http, method, base_url + path, json=body, headers={"Origin": base_url}), 403, "forbidden")
    await login(http2, base_url, "marketer@demo.test")
    assert_error(await api(http2, method, base_url + path, json=body, headers={"Origin": base_url}), 403, "forbidden")


async def test_api_for_a_logged_in_admin_only_from_our_own_pages(server, base_url, http, admin):
    await login(http, base_url, ADMIN_EMAIL, ADMIN_PASSWORD)
    body = {"seller": DEMO_SELLER, "site": DEMO_SITE_KEY}
    status, listed = await api(http, "GET", f"{base_url}/api/v1/endpoints")
    assert status == 200 and len(listed["endpoints"]) >= 2
    assert_error(await api(http, "POST", f"{base_url}/api/v1/endpoints", json=body), 403, "forbidden_origin")
    assert_error(await api(http, "POST", f"{base_url}/api/v1/endpoints", json=body,
                           headers={"Origin": "https://evil.example"}), 403, "forbidden_origin")
    status, created = await api(http, "POST", f"{base_url}/api/v1/endpoints", json=body, headers={"Origin": base_url})
    assert status == 201, created


@pytest.mark.parametrize("body, status, code, mentions", [
    ({"site": DEMO_SITE_KEY}, 400, "invalid_request", "seller"),
    ({"seller": DEMO_SELLER}, 400, "invalid_request", "site"),
    ({"seller": DEMO_SELLER, "site": DEMO_SITE_KEY, "extra": 1}, 400, "invalid_request", "extra"),
    ({"seller": DEMO_SELLER, "site": DEMO_SITE_KEY, "listing": 5}, 400, "invalid_request", "listing"),
    ({"seller": DEMO_SELLER, "site": DEMO_SITE_KEY, "listing": "x" * 121}, 400, "invalid_request", "listing"),
    ({"seller": DEMO_SELLER, "site": DEMO_SITE_KEY, "label": "a\nb"}, 400, "invalid_request", "label"),
    ({"seller": DEMO_SELLER, "site": DEMO_SITE_KEY, "expires_at": "next tuesday"}, 400, "invalid_request",
     "expires_at"),
    ({"seller": DEMO_SELLER, "site": DEMO_SITE_KEY, "expires_at": "2001-01-01"}, 400, "invalid_request",
     "expires_at: in the past"),
    ({"seller": "agent@demo.test", "site": DEMO_SITE_KEY}, 400, "invalid_request", "not a seller"),
    ({"seller": "nobody@demo.test", "site": DEMO_SITE_KEY}, 404, "not_found", "seller"),
    ({"seller": DEMO_SELLER, "site": "no-such-site"}, 404, "not_found", "site"),
], ids=["no-seller", "no-site", "extra-field", "listing-type", "listing-long", "label-newline", "bad-expiry",
        "past-expiry", "not-a-seller", "unknown-seller", "unknown-site"])
async def test_api_refuses_bad_endpoints_clearly(server, base_url, http, token, body, status, code, mentions):
    assert_error(await api(http, "POST", f"{base_url}/api/v1/endpoints", token, json=body), status, code, mentions)


async def test_api_refuses_bad_bodies(server, base_url, http, token):
    url = f"{base_url}/api/v1/endpoints"
    assert_error(await api(http, "POST", url, token, data="{nope", headers={"Content-Type": "application/json"}),
                 400, "invalid_json")
    assert_error(await api(http, "POST", url, token, json=["a list"]), 400, "invalid_json")
    assert_error(await api(http, "POST", url, token, data="seller=x", headers={
        "Content-Type": "application/x-www-form-urlencoded"}), 415, "unsupported_media_type")
    assert_error(await api(http, "POST", url, token, json={"seller": DEMO_SELLER, "site": "x" * 5000}),
                 413, "too_large")
    assert_error(await api(http, "GET", url, token, params={"seller": "nobody@demo.test"}), 404, "not_found")
    assert_error(await api(http, "GET", url, token, params={"seller": "x" * 300}), 400, "invalid_request")


# ----- the demo -----

async def test_demo_listing_pages_have_a_call_seller_button(server, base_url, http, sessions):
    async with http.get(f"{base_url}/demo/") as response:
        index = await response.text()
    async with sessions() as db:
        tokens = await demo_listing_tokens(db, utcnow())
    assert set(tokens) == {item["sku"] for item in DEMO_LISTINGS}
    for item in DEMO_LISTINGS:
        assert f'href="/demo/listings/{item["sku"]}"' in index
        async with http.get(f"{base_url}/demo/listings/{item['sku']}") as response:
            assert response.status == 200
            page = await response.text()
        button = re.search(r"<button[^>]*data-talk-seller=[^>]*>([^<]*)</button>", page)
        assert button and button.group(1) == "Call seller", page
        assert f'data-talk-seller="{tokens[item["sku"]]}"' in button.group(0)
        assert f'data-talk-listing="{item["sku"]}"' in button.group(0)
        assert "Nordic Bikes" in page and "Sam Seller" not in page and DEMO_SELLER not in page
    async with http.get(f"{base_url}/demo/listings/nope") as response:
        assert response.status == 404


async def test_demo_seeding_is_idempotent_and_replaces_a_revoked_endpoint(sessions):
    async with sessions() as db:
        before = await demo_listing_tokens(db, utcnow())
    async with sessions() as db, db.begin():
        await seed_demo(db, ["http://127.0.0.1:1"])
    async with sessions() as db, db.begin():
        assert await demo_listing_tokens(db, utcnow()) == before
        assert await db.scalar(select(func.count()).select_from(SellerEndpoint)) == len(DEMO_LISTINGS)
        await sellers.revoke_endpoint(db, before["bike-001"])
    async with sessions() as db, db.begin():
        await seed_demo(db, ["http://127.0.0.1:1"])
    async with sessions() as db:
        after = await demo_listing_tokens(db, utcnow())
        seller_queues = await db.scalar(select(func.count()).select_from(Queue).where(Queue.kind == "seller"))
    assert after["bike-002"] == before["bike-002"] and after["bike-001"] not in (None, before["bike-001"])
    assert seller_queues == 1
