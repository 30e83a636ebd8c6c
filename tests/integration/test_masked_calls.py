"""Masked seller calls end to end over the real signaling socket, with real aiortc peers on both sides.

A buyer calls the demo seller through a masked endpoint token; both parties make their own WebRTC offer to the
server's media bridge (call.connected with media "server") and hear each other's tone (buyer 440 Hz, seller 880 Hz)
without ever learning the other's identity or network details: every message each side receives is recorded and
checked against the other side's own SDP and identity. Also: dead and unknown endpoints, intruders on a call,
malformed SDP, voicemail (recorded, listed, downloaded over HTTP, handled), the seller console page, and that the
bridge keeps nothing after a call.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import wave
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from sqlalchemy import func, select

from signaling.socket import SIGNALING_KEY
from talk import directory, sellers
from talk.db import SESSIONMAKER_KEY
from talk.demo import DEMO_LISTINGS, DEMO_SELLER, DEMO_SELLER_PUBLIC_NAME, DEMO_SITE_KEY, demo_listing_tokens
from talk.directory import utcnow
from talk.models import EndpointRefusal
from talk.sellers import EndpointUnavailable
from talk.types import Role
from talk.voicemails import voicemail_dir
from tests.support.client import Peer, connect_agent, connect_caller, connect_seller, login, new_visitor
from tests.support.media import Ear, Tone

BUYER_HZ, SELLER_HZ = 440, 880
TIMEOUT = 15
SELLER_ACCOUNT_NAME = "Sam Seller"  # the demo seller's own name: buyers must only ever see the public name
LISTING = DEMO_LISTINGS[0]  # bike-001, "City bike"
ALIAS = re.compile(r"^Buyer \d{4}$")
# What the buyer's browser knows and the seller must never learn; markers no other text contains.
PAGE = {"url": "https://demo.test/p/private-page-marker", "title": "Private title marker",
        "referrer": "https://search.test/?q=private-query-marker"}
JOURNEY_PATHS = ("/demo/journey-page-marker", "/demo/another-journey-page-marker")
OTHER_SELLER = ("other-seller@demo.test", "Olga Other", "other password", "Olga's Outlet")

CANDIDATE = re.compile(r"(?:^a=|^|\s)candidate:\S+ \d+ \S+ \d+ (\S+) (\d+) typ ", re.M)


# ---------------------------------------------------------------- fixtures and helpers


async def post_pageviews(http: aiohttp.ClientSession, base_url: str, visitor: dict[str, str], *paths: str) -> None:
    """Page views of the visitor, as the widget sends them (so the buyer has a journey to leak)."""
    now = int(time.time() * 1000)
    events = [{"id": f"e_{secrets.token_urlsafe(16)}", "type": "pageview", "ts": now, "url": f"{base_url}{path}",
               "title": f"Title of {path}", "referrer": ""} for path in paths]
    body = {"site": DEMO_SITE_KEY, **visitor, "sent_at": now, "events": events}
    async with http.post(f"{base_url}/api/v1/events", json=body, headers={"Origin": base_url}) as response:
        assert response.status == 202, await response.text()


@pytest.fixture
async def browsers() -> AsyncIterator[Callable[[], aiohttp.ClientSession]]:
    """More people than http/http2: each call gives a new client with its own cookie jar."""
    made: list[aiohttp.ClientSession] = []

    def new() -> aiohttp.ClientSession:
        made.append(aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
        return made[-1]

    yield new
    for session in made:
        await session.close()


@pytest.fixture
def db(server):
    """The server's own database sessions."""
    return server.app[SESSIONMAKER_KEY]


@pytest.fixture
async def token(db) -> str:
    """The demo seller's live endpoint for the first demo listing."""
    async with db() as session:
        return (await demo_listing_tokens(session, utcnow()))[LISTING["sku"]]


@pytest.fixture
async def closing() -> AsyncIterator[list]:
    """Everything a test opens (signaling peers, media sides) is closed at its end, even when it fails."""
    things: list = []
    yield things
    for thing in reversed(things):
        try:
            await thing.close()
        except Exception:  # closing is best effort; the test's own failure is what matters
            pass


class Media:
    """One party's audio: an aiortc peer connection sending a tone, offering to the server over `peer`."""

    def __init__(self, peer: Peer, hz: int) -> None:
        self.peer = peer
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # never a public STUN server in tests
        self.ear = Ear()
        self.ear.attach(self.pc)
        self.pc.addTrack(Tone(hz))
        self.answer: str | None = None

    @property
    def local_sdp(self) -> str:
        return self.pc.localDescription.sdp

    async def offer(self, call_id: str, trickle: bool = True) -> None:
        """Offer to the server, apply its rtc.answer event; then trickle our candidates (aiortc puts them all in
        the SDP; a browser sends them one by one) and end-of-candidates."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self.peer.ok("rtc.offer", call_id=call_id, sdp=self.local_sdp)
        answer = await self.peer.next_event("rtc.answer", timeout=TIMEOUT)
        assert answer["call_id"] == call_id
        self.answer = answer["sdp"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=self.answer, type="answer"))
        if trickle:
            for line in self.local_sdp.splitlines():
                if line.startswith("a=candidate:"):
                    candidate = {"candidate": line[2:], "sdpMid": "0", "sdpMLineIndex": 0}
                    await self.peer.ok("rtc.candidate", call_id=call_id, candidate=candidate)
        await self.peer.ok("rtc.candidate", call_id=call_id, candidate=None)

    async def close(self) -> None:
        await self.pc.close()
        await self.ear.close()


async def hear_each_other(buyer: Media, seller: Media, frames: int = 50) -> None:
    """Both sides receive `frames` more frames (50 = one second of audio), or fail saying how far they got."""
    targets = (buyer.ear.frames + frames, seller.ear.frames + frames)

    async def both() -> None:
        while buyer.ear.frames < targets[0] or seller.ear.frames < targets[1]:
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(both(), TIMEOUT)
    except TimeoutError:
        pytest.fail(f"audio did not flow: buyer got {buyer.ear.frames} frames, seller {seller.ear.frames}")


def assert_tones(buyer: Media, seller: Media) -> None:
    assert abs(buyer.ear.dominant_hz() - SELLER_HZ) < 20, "the buyer should hear the seller's 880 Hz tone"
    assert abs(seller.ear.dominant_hz() - BUYER_HZ) < 20, "the seller should hear the buyer's 440 Hz tone"


async def ring(buyer: Peer, seller: Peer, token: str, **start: Any) -> tuple[str, dict[str, Any]]:
    """The buyer calls through the endpoint; the seller's console rings. Returns the call id and call.incoming."""
    started = await buyer.ok("call.start", seller=token, **start)
    assert started["state"] == "ringing", started
    incoming = await seller.next_event("call.incoming")
    assert incoming["call_id"] == started["call_id"]
    return started["call_id"], incoming


async def answer(buyer: Peer, seller: Peer, call_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The seller answers; both receive call.connected. Returns (buyer's, seller's)."""
    await seller.ok("call.answer", call_id=call_id)
    return await buyer.next_event("call.connected"), await seller.next_event("call.connected")


async def talking(buyer: Peer, seller: Peer, token: str, closing: list,
                  **start: Any) -> tuple[str, Media, Media, dict[str, Any]]:
    """A masked call with audio flowing both ways. Returns the call id, both Media and the seller's call.incoming."""
    call_id, incoming = await ring(buyer, seller, token, **start)
    await answer(buyer, seller, call_id)
    buyer_media, seller_media = Media(buyer, BUYER_HZ), Media(seller, SELLER_HZ)
    closing.extend([buyer_media, seller_media])
    await buyer_media.offer(call_id)
    await seller_media.offer(call_id)
    await hear_each_other(buyer_media, seller_media)
    return call_id, buyer_media, seller_media, incoming


async def error_of(peer: Peer, type_: str, **fields: Any) -> dict[str, Any]:
    reply = await peer.request(type_, **fields)
    assert reply["success"] is False, f"{type_} should have been refused: {reply}"
    return reply["error"]


async def eventually(check: Callable[[], bool], what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


def bridge_is_empty(server) -> Callable[[], bool]:
    return lambda: server.app[SIGNALING_KEY].bridge.active_calls == 0


def sdp_identity(sdp: str) -> dict[str, set]:
    """What in an SDP identifies its peer on the network: ICE credentials, DTLS fingerprints, candidate addresses."""
    return {
        "ufrags": set(re.findall(r"^a=ice-ufrag:(\S+)", sdp, re.M)),
        "pwds": set(re.findall(r"^a=ice-pwd:(\S+)", sdp, re.M)),
        "fingerprints": {f.split(" ", 1)[1] for f in re.findall(r"^a=fingerprint:(.+?)\s*$", sdp, re.M)},
        "addresses": set(CANDIDATE.findall(sdp)),
    }


def received_identity(messages: list[dict[str, Any]]) -> dict[str, set]:
    """The same, from everything a client received: every SDP and every candidate in any message."""
    found: dict[str, set] = {"ufrags": set(), "pwds": set(), "fingerprints": set(), "addresses": set()}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "sdp" and isinstance(item, str):
                    for name, values in sdp_identity(item).items():
                        found[name] |= values
                elif key == "candidate" and isinstance(item, str):
                    found["addresses"] |= set(CANDIDATE.findall(item))
                elif key == "usernameFragment" and isinstance(item, str):
                    found["ufrags"].add(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(messages)
    return found


def assert_nothing_of(other_sdp: str, received: list[dict[str, Any]], who: str) -> None:
    """Nothing of `other_sdp` (the other party's own local description) in anything `who` received."""
    theirs, seen = sdp_identity(other_sdp), received_identity(received)
    assert theirs["ufrags"] and theirs["pwds"] and theirs["fingerprints"] and theirs["addresses"], other_sdp
    assert seen["ufrags"] and seen["addresses"], f"{who} should have received the server's answer"
    dump = json.dumps(received)
    for name in ("ufrags", "pwds", "fingerprints", "addresses"):
        assert not theirs[name] & seen[name], f"{who} received the other party's {name}: {theirs[name] & seen[name]}"
    for secret in theirs["pwds"] | theirs["fingerprints"]:
        assert secret not in dump, f"{who} received {secret!r}"
    for ufrag in theirs["ufrags"]:
        assert f"ice-ufrag:{ufrag}" not in dump and f'"usernameFragment": "{ufrag}"' not in dump
    for host, port in theirs["addresses"]:
        assert f"{host} {port} typ" not in dump, f"{who} received the other party's candidate {host}:{port}"


# ---------------------------------------------------------------- calls


async def test_buyer_and_seller_hear_each_other_and_learn_nothing_of_each_other(
        server, base_url, http, http2, token, closing):
    visitor = new_visitor()
    await post_pageviews(http, base_url, visitor, *JOURNEY_PATHS)  # a journey the seller must never see
    seller = await connect_seller(http2, base_url)
    closing.append(seller)
    buyer = await connect_caller(http, base_url, visitor=visitor)
    closing.append(buyer)
    assert buyer.hello["visitor_id"] == visitor["visitor_id"]
    assert seller.hello["account"]["email"] == DEMO_SELLER

    call_id, buyer_media, seller_media, incoming = await talking(buyer, seller, token, closing, page=PAGE,
                                                                 listing="not-the-endpoints-listing")
    assert_tones(buyer_media, seller_media)

    # The seller's ring: the buyer's alias and the endpoint's own listing; no page, no journey, ever.
    assert incoming["masked"] is True
    assert ALIAS.match(incoming["caller"]["label"]), incoming
    assert incoming["listing"] == LISTING["sku"]  # the endpoint's listing wins over the buyer's
    assert "page" not in incoming and "journey" not in incoming
    alias = incoming["caller"]["label"]

    # call.connected: each side learns only the other's public label, and both offer to the server.
    buyer_connected = next(m for m in buyer.received if m.get("type") == "call.connected")
    seller_connected = next(m for m in seller.received if m.get("type") == "call.connected")
    assert buyer_connected == {"type": "call.connected", "call_id": call_id, "peer": {"name": DEMO_SELLER_PUBLIC_NAME},
                               "offerer": True, "media": "server"}
    assert seller_connected == {"type": "call.connected", "call_id": call_id, "peer": {"name": alias},
                                "offerer": True, "media": "server"}

    # In a masked call there is nothing to relay: the seller's answer SDP would otherwise reach the buyer.
    relay = await error_of(seller, "rtc.answer", call_id=call_id, sdp=seller_media.local_sdp)
    assert relay["code"] == "illegal_state"

    await hear_each_other(buyer_media, seller_media, frames=10)  # still flowing after the refused relay
    await buyer.ok("call.hangup", call_id=call_id)
    assert (await buyer.next_event("call.ended"))["reason"] == "completed"
    assert (await seller.next_event("call.ended"))["reason"] == "completed"
    await eventually(bridge_is_empty(server), "the bridge closes the call after the hang-up")

    # The same buyer calling again is the same alias to this seller.
    again, incoming_again = await ring(buyer, seller, token)
    assert incoming_again["caller"]["label"] == alias
    await buyer.ok("call.hangup", call_id=again)
    assert (await seller.next_event("call.ended"))["reason"] == "caller-cancelled"

    # Everything the seller received, results included: nothing about the buyer but the alias and the listing.
    seller_dump = json.dumps(seller.received)
    for secret in (visitor["visitor_id"], visitor["session_id"], *PAGE.values(), *JOURNEY_PATHS, "private-", "-marker"):
        assert secret not in seller_dump, f"the seller received {secret!r}"
    assert not [m for m in seller.received if m.get("type") in ("call.journey", "rtc.offer", "rtc.candidate")]
    assert_nothing_of(buyer_media.local_sdp, seller.received, "the seller")
    with pytest.raises(AssertionError):  # the check itself finds what it looks for: the server's answer to the seller
        assert_nothing_of(seller_media.answer, seller.received, "the seller (self-check)")

    # Everything the buyer received: the seller's public name only, nothing of the seller's account or SDP.
    buyer_dump = json.dumps(buyer.received)
    assert DEMO_SELLER_PUBLIC_NAME in buyer_dump
    for secret in (SELLER_ACCOUNT_NAME, DEMO_SELLER, "seller@", '"account"', '"email"'):
        assert secret not in buyer_dump, f"the buyer received {secret!r}"
    assert not [m for m in buyer.received if m.get("type") in ("rtc.offer", "rtc.candidate")]
    assert_nothing_of(seller_media.local_sdp, buyer.received, "the buyer")


async def test_dead_and_unknown_endpoints_are_refused_with_a_message_for_the_buyer(server, base_url, http, db):
    past = utcnow() - timedelta(hours=2)
    async with db() as session, session.begin():
        revoked = await sellers.create_endpoint(session, DEMO_SELLER, DEMO_SITE_KEY, listing="bike-002")
        await sellers.revoke_endpoint(session, revoked.token)
        expired = await sellers.create_endpoint(session, DEMO_SELLER, DEMO_SITE_KEY, listing="bike-002",
                                                expires_at=past + timedelta(hours=1), now=past)
        ids = {"revoked": revoked.id, "expired": expired.id}
        tokens = {"revoked": revoked.token, "expired": expired.token}

    async def refusals(endpoint_id: int | None = None) -> int:
        statement = select(func.count()).select_from(EndpointRefusal)
        if endpoint_id is not None:
            statement = statement.where(EndpointRefusal.endpoint_id == endpoint_id)
        async with db() as session:
            return await session.scalar(statement)

    visitor = new_visitor()
    buyer = await connect_caller(http, base_url, visitor=visitor)
    try:
        for reason in ("revoked", "expired"):
            error = await error_of(buyer, "call.start", seller=tokens[reason])
            assert error == {"code": "endpoint_unavailable", "message": EndpointUnavailable.MESSAGES[reason]}
            assert await refusals(ids[reason]) == 1
        async with db() as session:
            rows = (await session.scalars(select(EndpointRefusal).order_by(EndpointRefusal.id))).all()
        assert [(r.reason, r.visitor_id) for r in rows] == [("revoked", visitor["visitor_id"]),
                                                              ("expired", visitor["visitor_id"])]

        before = await refusals()
        unknown = "se_" + secrets.token_urlsafe(24)
        error = await error_of(buyer, "call.start", seller=unknown)
        assert error == {"code": "endpoint_unavailable", "message": EndpointUnavailable.MESSAGES["unknown"]}
        assert await refusals() == before  # nothing to record an unknown token against

        # Refused calls leave the connection usable and start no call.
        assert await buyer.ok("ping") == {"pong": True}
        assert not server.app[SIGNALING_KEY].switchboard.calls
    finally:
        await buyer.close()


async def test_nobody_else_can_act_on_a_masked_call_and_its_audio_keeps_flowing(
        server, base_url, http, http2, browsers, token, closing):
    seller = await connect_seller(http2, base_url)
    buyer = await connect_caller(http, base_url, visitor=new_visitor())
    intruder = await connect_caller(browsers(), base_url, visitor=new_visitor())
    agent_http = browsers()
    await login(agent_http, base_url, "agent@demo.test")
    agent = await connect_agent(agent_http, base_url)
    closing.extend([seller, buyer, intruder, agent])
    call_id, buyer_media, seller_media, _ = await talking(buyer, seller, token, closing)
    frames = (buyer_media.ear.frames, seller_media.ear.frames)

    # Another buyer's connection: consoles' messages are not for callers; the call is not theirs.
    intruder_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    closing.append(intruder_pc)
    intruder_pc.addTrack(Tone(660))
    await intruder_pc.setLocalDescription(await intruder_pc.createOffer())
    sdp = intruder_pc.localDescription.sdp
    assert (await error_of(intruder, "call.answer", call_id=call_id))["code"] == "forbidden"
    assert (await error_of(intruder, "call.decline", call_id=call_id))["code"] == "forbidden"
    assert (await error_of(intruder, "rtc.offer", call_id=call_id, sdp=sdp))["code"] == "forbidden"
    assert (await error_of(intruder, "rtc.candidate", call_id=call_id, candidate=None))["code"] == "forbidden"
    assert (await error_of(intruder, "call.hangup", call_id=call_id))["code"] == "forbidden"
    assert (await error_of(intruder, "voicemail.start", call_id=call_id))["code"] == "not_found"
    assert (await error_of(intruder, "rtc.offer", call_id="c_" + secrets.token_urlsafe(12), sdp=sdp))["code"] \
        == "not_found"

    # An agent's console: not their call either.
    assert (await error_of(agent, "call.answer", call_id=call_id))["code"] == "forbidden"
    assert (await error_of(agent, "rtc.offer", call_id=call_id, sdp=sdp))["code"] == "forbidden"
    assert (await error_of(agent, "call.hangup", call_id=call_id))["code"] == "forbidden"

    # The parties themselves cannot renegotiate their way into another leg.
    assert (await error_of(buyer, "rtc.offer", call_id=call_id, sdp=sdp))["code"] == "media_error"

    await hear_each_other(buyer_media, seller_media)
    assert buyer_media.ear.frames > frames[0] and seller_media.ear.frames > frames[1]
    assert_tones(buyer_media, seller_media)
    for peer in (intruder, agent):
        assert not [m for m in peer.received if m.get("call_id") == call_id and m.get("type") != "result"]

    await seller.ok("call.hangup", call_id=call_id)
    assert (await buyer.next_event("call.ended"))["reason"] == "completed"
    await eventually(bridge_is_empty(server), "the bridge closes the call after the seller hangs up")


MALFORMED_OFFERS = {
    "not SDP": "hello, I am not a session description",
    "no audio": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
    "garbled audio": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio x RTP/SAVPF ?\r\na=rtpmap:zz\r\n",
}


async def test_malformed_sdp_is_a_media_error_and_the_other_call_goes_on(
        server, base_url, http, http2, browsers, db, token, closing):
    async with db() as session, session.begin():
        await sellers.create_seller(session, DEMO_SITE_KEY, OTHER_SELLER[0], OTHER_SELLER[1], OTHER_SELLER[2],
                                    OTHER_SELLER[3])
        other_token = (await sellers.create_endpoint(session, OTHER_SELLER[0], DEMO_SITE_KEY, listing="lamp-9")).token
    seller = await connect_seller(http2, base_url)
    other_seller = await connect_seller(browsers(), base_url, OTHER_SELLER[0], OTHER_SELLER[2])
    buyer = await connect_caller(http, base_url, visitor=new_visitor())
    other_buyer = await connect_caller(browsers(), base_url, visitor=new_visitor())
    closing.extend([seller, other_seller, buyer, other_buyer])
    call_id, buyer_media, seller_media, _ = await talking(buyer, seller, token, closing)

    # A second masked call, connected; both of its parties send garbage instead of an offer.
    other_call, _ = await ring(other_buyer, other_seller, other_token)
    await answer(other_buyer, other_seller, other_call)
    for party in (other_buyer, other_seller):
        for name, sdp in MALFORMED_OFFERS.items():
            error = await error_of(party, "rtc.offer", call_id=other_call, sdp=sdp)
            assert error["code"] == "media_error", (name, error)
        bad = {"candidate": "candidate:not a candidate", "sdpMid": "0", "sdpMLineIndex": 0}
        assert (await error_of(party, "rtc.candidate", call_id=other_call, candidate=bad))["code"] == "media_error"
        assert await party.ok("ping") == {"pong": True}  # the connection is fine

    # The first call never noticed.
    await hear_each_other(buyer_media, seller_media)
    assert_tones(buyer_media, seller_media)

    # Nothing was left half-made: the second call can still negotiate properly and carry audio.
    other_buyer_media, other_seller_media = Media(other_buyer, BUYER_HZ), Media(other_seller, SELLER_HZ)
    closing.extend([other_buyer_media, other_seller_media])
    await other_buyer_media.offer(other_call)
    await other_seller_media.offer(other_call)
    await hear_each_other(other_buyer_media, other_seller_media)
    assert server.app[SIGNALING_KEY].bridge.active_calls == 2

    await buyer.ok("call.hangup", call_id=call_id)
    await other_seller.ok("call.hangup", call_id=other_call)
    for peer in (buyer, seller, other_buyer, other_seller):
        assert (await peer.next_event("call.ended"))["reason"] == "completed"
    await eventually(bridge_is_empty(server), "the bridge closes both calls")


# ---------------------------------------------------------------- voicemail


async def leave_voicemail(buyer: Peer, call_id: str, seconds: float, closing: list) -> dict[str, Any]:
    """Record `seconds` of the buyer's tone; returns voicemail.stop's result (after voicemail.saved arrived)."""
    started = await buyer.ok("voicemail.start", call_id=call_id)
    assert started["voicemail_id"].startswith("vm_")
    media = Media(buyer, BUYER_HZ)
    closing.append(media)
    await media.offer(call_id)
    await asyncio.sleep(seconds)
    stopped = await buyer.ok("voicemail.stop", call_id=call_id)
    saved = await buyer.next_event("voicemail.saved", timeout=TIMEOUT)
    assert saved == {"type": "voicemail.saved", **stopped}
    assert stopped["voicemail_id"] == started["voicemail_id"]
    return stopped


def wav_tone(path: Path) -> tuple[float, float]:
    """(seconds, dominant frequency) of a WAV file."""
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        rate, frames = wav.getframerate(), wav.readframes(wav.getnframes())
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float32)
    tail = samples[-rate // 2:]  # the last half second: well after the connection started
    spectrum = np.abs(np.fft.rfft(tail * np.hanning(len(tail))))
    return len(samples) / rate, float(np.argmax(spectrum)) * rate / len(tail)


async def download(http: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    async with http.get(url, headers=headers, allow_redirects=False) as response:
        return response.status, dict(response.headers), await response.read()


async def test_voicemail_for_an_offline_seller_is_recorded_listed_downloaded_and_handled(
        server, base_url, settings, http, http2, browsers, db, token, closing):
    buyer = await connect_caller(http, base_url, visitor=new_visitor())
    closing.append(buyer)
    started = await buyer.ok("call.start", seller=token)
    assert (started["state"], started["reason"]) == ("ended", "no-agent")
    ended = await buyer.next_event("call.ended")
    assert ended == {"type": "call.ended", "call_id": started["call_id"], "reason": "no-agent",
                     "voicemail": {"max_seconds": settings.voicemail_max_seconds}}

    stopped = await leave_voicemail(buyer, started["call_id"], 3.0, closing)
    assert stopped["saved"] is True and 2.4 <= stopped["duration"] <= 3.6, stopped
    voicemail_id = stopped["voicemail_id"]
    # One voicemail per call.
    assert (await error_of(buyer, "voicemail.start", call_id=started["call_id"]))["code"] == "not_found"

    path = voicemail_dir(settings.data_dir) / f"{voicemail_id}.wav"
    assert path.is_file() and not path.with_name(path.name + ".part").exists()
    seconds, hz = wav_tone(path)
    assert abs(seconds - stopped["duration"]) < 0.1 and abs(hz - BUYER_HZ) < 20, (seconds, hz)

    # The seller logs in afterwards and finds it in the inbox.
    seller = await connect_seller(http2, base_url, available=False)
    closing.append(seller)
    listed = (await seller.ok("voicemail.list"))["voicemails"]
    assert [v["id"] for v in listed] == [voicemail_id]
    item = listed[0]
    assert ALIAS.match(item["buyer_alias"]), item
    assert (item["listing"], item["label"], item["handled"]) == (LISTING["sku"], LISTING["name"], False)
    assert abs(item["duration_seconds"] - stopped["duration"]) < 0.05
    assert item["url"] == f"/voicemail/{voicemail_id}.wav"

    # The seller's session downloads it: the file as recorded, private, seekable.
    url = base_url + item["url"]
    status, headers, body = await download(http2, url)
    assert status == 200 and body == path.read_bytes()
    assert headers["Content-Type"] == "audio/wav"
    assert headers["Cache-Control"] == "private, no-store"
    status, headers, body = await download(http2, url, Range="bytes=44-1043")
    assert status == 206 and body == path.read_bytes()[44:1044]
    assert headers["Content-Range"] == f"bytes 44-1043/{path.stat().st_size}"

    # Nobody else: not logged in, another seller, an agent (a seller's voicemail is not their queue's), a wrong id.
    async with db() as session, session.begin():
        await sellers.create_seller(session, DEMO_SITE_KEY, *OTHER_SELLER)
    other_seller_http, agent_http = browsers(), browsers()
    await login(other_seller_http, base_url, OTHER_SELLER[0], OTHER_SELLER[2])
    await login(agent_http, base_url, "agent@demo.test")
    for who, client in (("anonymous", http), ("other seller", other_seller_http), ("agent", agent_http)):
        status, _, body = await download(client, url)
        assert status == 404 and b"RIFF" not in body, who
    for bad in ("vm_" + secrets.token_urlsafe(16), "vm_..%2F..%2Ftalk.db", "not-a-voicemail", "vm_%00"):
        assert (await download(http2, f"{base_url}/voicemail/{bad}.wav"))[0] == 404, bad
    other_seller = await connect_agent(other_seller_http, base_url, available=False)
    closing.append(other_seller)
    assert (await other_seller.ok("voicemail.list"))["voicemails"] == []
    assert (await error_of(other_seller, "voicemail.handled", voicemail_id=voicemail_id))["code"] == "not_found"

    # Handled: gone from the inbox, still there with include_handled, and still downloadable.
    assert await seller.ok("voicemail.handled", voicemail_id=voicemail_id) == {"handled": True}
    assert (await seller.ok("voicemail.list"))["voicemails"] == []
    [handled] = (await seller.ok("voicemail.list", include_handled=True))["voicemails"]
    assert (handled["id"], handled["handled"]) == (voicemail_id, True)
    assert await seller.ok("voicemail.handled", voicemail_id=voicemail_id) == {"handled": True}  # idempotent
    assert (await error_of(seller, "voicemail.handled", voicemail_id="vm_nope"))["code"] == "not_found"
    assert (await download(http2, url))[0] == 200


async def test_a_declined_call_leaves_a_voicemail_the_online_seller_is_told_about(
        server, base_url, settings, http, http2, token, closing):
    visitor = new_visitor()
    seller = await connect_seller(http2, base_url)
    buyer = await connect_caller(http, base_url, visitor=visitor)
    closing.extend([seller, buyer])
    call_id, incoming = await ring(buyer, seller, token)
    await seller.ok("call.decline", call_id=call_id)
    ended = await buyer.next_event("call.ended")
    assert (ended["reason"], ended["voicemail"]) == ("agent-declined", {"max_seconds": settings.voicemail_max_seconds})

    stopped = await leave_voicemail(buyer, call_id, 1.0, closing)
    assert stopped["saved"] is True
    news = await seller.next_event("voicemail.new", timeout=TIMEOUT)
    voicemail = news["voicemail"]
    assert voicemail["id"] == stopped["voicemail_id"]
    assert (voicemail["listing"], voicemail["buyer_alias"]) == (LISTING["sku"], incoming["caller"]["label"])
    assert voicemail["url"] == f"/voicemail/{voicemail['id']}.wav"
    assert abs(voicemail["duration_seconds"] - stopped["duration"]) < 0.05
    assert visitor["visitor_id"] not in json.dumps(seller.received)
    status, headers, _ = await download(http2, base_url + voicemail["url"])
    assert (status, headers["Content-Type"]) == (200, "audio/wav")


# ---------------------------------------------------------------- the seller console page


async def test_the_seller_console_is_for_sellers_and_runs_only_its_own_script(
        server, base_url, http, http2, browsers, db):
    status, headers, _ = await download(http, f"{base_url}/seller")
    assert (status, headers["Location"]) == (302, "/login?next=/seller")

    await login(http, base_url, "agent@demo.test")
    assert (await download(http, f"{base_url}/seller"))[0] == 403

    async with db() as session, session.begin():
        await directory.create_account(session, "admin@demo.test", "Ada Admin", "admin password", Role.ADMIN)
    admin_http = browsers()
    await login(admin_http, base_url, "admin@demo.test", "admin password")
    assert (await download(admin_http, f"{base_url}/seller"))[0] == 200

    await login(http2, base_url, DEMO_SELLER)
    status, headers, body = await download(http2, f"{base_url}/seller")
    page = body.decode()
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
    assert headers["X-Frame-Options"] == "DENY"
    assert re.findall(r"<script\b[^>]*>", page) == ['<script src="/static/voicemail.js" defer>',
                                                     '<script src="/static/seller.js" defer>']
    assert not re.search(r"<script\b[^>]*>(?!</script>)", page), "no inline script"
    assert not re.search(r"\son[a-z]+\s*=", page), "no inline event handlers"
    assert "http://" not in page and "https://" not in page, "no external resources"
    for label in ("Answer", "Decline", "Mute", "Hang up", "Available"):
        assert f">{label}<" in page, label
    assert DEMO_SELLER_PUBLIC_NAME in page
    for asset, kind in (("voicemail.js", "javascript"), ("seller.js", "javascript"), ("seller.css", "text/css")):
        status, headers, _ = await download(http2, f"{base_url}/static/{asset}")
        assert status == 200 and kind in headers["Content-Type"], asset
