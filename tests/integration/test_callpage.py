"""Standalone call pages (/c/<token>) and their QR codes, through the real server: the right widget and button for
a queue and for a masked endpoint, nothing about the seller but the public name, escaped text, a clear 410 for a
dead link (and the attempt on record), and QR codes that really encode the page's URL."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import AsyncIterator
from datetime import timedelta
from html.parser import HTMLParser
from xml.etree import ElementTree

import aiohttp
import pytest
import segno
from aiohttp.test_utils import TestServer
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from talk import directory, sellers
from talk.app import create_app
from talk.db import create_engine
from talk.demo import DEMO_SELLER, DEMO_SITE_KEY
from talk.directory import utcnow
from talk.models import EndpointRefusal, Queue, SellerEndpoint
from talk.settings import Settings
from tests.conftest import free_port

HOSTILE_LISTING = '"><script>alert(1)</script>'
HOSTILE_LABEL = "<img src=x onerror=alert(1)> & 'quotes'"


@pytest.fixture
async def sessions(settings: Settings):
    engine = create_engine(settings.resolved_database_url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


async def endpoint_token(sessions, **kwargs) -> str:
    async with sessions() as db, db.begin():
        return (await sellers.create_endpoint(db, DEMO_SELLER, DEMO_SITE_KEY, **kwargs)).token


async def queue_token(sessions, name: str = "support") -> str:
    async with sessions() as db:
        return (await directory.queue_by_name(db, DEMO_SITE_KEY, name)).call_token


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[aiohttp.ClientResponse, bytes]:
    async with http.get(url) as response:
        return response, await response.read()


class Elements(HTMLParser):
    """Every start tag with its (unescaped) attributes, and the text of each button."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.buttons: list[tuple[dict[str, str | None], str]] = []
        self._button: dict | None = None
        self._text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "button":
            self._button, self._text = dict(attrs), []

    def handle_data(self, data):
        if self._button is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "button" and self._button is not None:
            self.buttons.append((self._button, "".join(self._text).strip()))
            self._button = None

    def scripts(self) -> list[dict]:
        return [attrs for tag, attrs in self.tags if tag == "script"]


# ----- pages -----

async def test_a_queue_page_calls_the_queue_with_the_sites_widget(server, base_url, http, sessions):
    token = await queue_token(sessions)
    response, body = await fetch(http, f"{base_url}/c/{token}")
    assert response.status == 200 and response.content_type == "text/html"
    page = Elements(body.decode())
    assert page.scripts() == [{"src": "/widget/talk.js", "data-site": DEMO_SITE_KEY, "data-queue": "support",
                               "data-button": "false", "async": None}]
    assert page.buttons == [({"type": "button", "class": "call", "data-talk-queue": "support"}, "Call Support")]
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert [attrs for tag, attrs in page.tags if tag == "style"] == [{"nonce": nonce}]
    assert response.headers["Cache-Control"] == "no-store" and "noindex" in response.headers["X-Robots-Tag"]


async def test_an_endpoint_page_calls_the_seller_and_shows_only_the_public_name(server, base_url, http, sessions):
    token = await endpoint_token(sessions, listing="bike-007", label="Cargo bike")
    response, body = await fetch(http, f"{base_url}/c/{token}")
    assert response.status == 200
    text = body.decode()
    page = Elements(text)
    assert page.scripts() == [{"src": "/widget/talk.js", "data-site": DEMO_SITE_KEY, "data-button": "false",
                               "async": None}]
    assert page.buttons == [({"type": "button", "class": "call", "data-talk-seller": token,
                              "data-talk-listing": "bike-007"}, "Call seller")]
    assert "Nordic Bikes" in text and "Cargo bike" in text
    for secret in (DEMO_SELLER, "Sam Seller", "seller-"):  # e-mail, real name, the private queue
        assert secret not in text


async def test_an_endpoint_without_a_listing_has_no_listing_attribute(server, base_url, http, sessions):
    token = await endpoint_token(sessions)
    _, body = await fetch(http, f"{base_url}/c/{token}")
    [(attrs, label)] = Elements(body.decode()).buttons
    assert attrs["data-talk-seller"] == token and "data-talk-listing" not in attrs and label == "Call seller"


async def test_hostile_listing_and_label_text_is_escaped(server, base_url, http, sessions):
    token = await endpoint_token(sessions, listing=HOSTILE_LISTING, label=HOSTILE_LABEL)
    _, body = await fetch(http, f"{base_url}/c/{token}")
    text = body.decode()
    assert "<script>alert" not in text and "<img" not in text
    page = Elements(text)
    assert [tag for tag, _ in page.tags if tag in ("script", "img")] == ["script"]  # only the widget's
    [(attrs, _)] = page.buttons
    assert attrs["data-talk-listing"] == HOSTILE_LISTING  # the attribute carries the text exactly, as text
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; &#39;quotes&#39;" in text


@pytest.mark.parametrize("dead", ["revoked", "expired"])
async def test_a_dead_endpoint_page_says_so_with_410_and_records_the_attempt(server, base_url, http, sessions, dead):
    now = utcnow()
    token = await endpoint_token(sessions, listing="bike-008", expires_at=now + timedelta(seconds=1), now=now)
    async with sessions() as db, db.begin():
        if dead == "revoked":
            await sellers.revoke_endpoint(db, token)
        else:
            await db.execute(update(SellerEndpoint).where(SellerEndpoint.token == token)
                             .values(expires_at=now - timedelta(seconds=1)))
    response, body = await fetch(http, f"{base_url}/c/{token}")
    text = body.decode()
    assert response.status == 410
    assert sellers.EndpointUnavailable.MESSAGES[dead] in text.replace("&#39;", "'")
    assert Elements(text).scripts() == [] and Elements(text).buttons == []
    await fetch(http, f"{base_url}/c/{token}")  # a reload is the same attempt
    async with sessions() as db:
        refusals = (await db.execute(select(EndpointRefusal.reason, EndpointRefusal.visitor_id))).all()
    assert refusals == [(dead, None)]
    for kind in ("svg", "png"):
        assert (await fetch(http, f"{base_url}/c/{token}.{kind}"))[0].status == 410


@pytest.mark.parametrize("token", ["se_unknown", "q_unknown", "x", "se_" + "a" * 60, "se_" + "a" * 100])
async def test_unknown_tokens_are_404(server, base_url, http, token):
    response, body = await fetch(http, f"{base_url}/c/{token}")
    assert response.status == 404
    assert "<script" not in body.decode()
    assert (await fetch(http, f"{base_url}/c/{token}.png"))[0].status == 404


async def test_a_sellers_private_queue_has_no_call_page(server, base_url, http, sessions):
    async with sessions() as db:
        token = await db.scalar(select(Queue.call_token).where(Queue.kind == "seller"))
    assert (await fetch(http, f"{base_url}/c/{token}"))[0].status == 404


# ----- QR codes -----

def png_modules(png: bytes, size: int, scale: int, border: int) -> list[list[int]]:
    """Decode a 1-bit greyscale PNG (what segno writes) and read one pixel in the middle of each module."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        data = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data)
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert (depth, colour, interlace) == (1, 0, 0) and width == height == (size + 2 * border) * scale
    raw, stride = zlib.decompress(idat), (width + 7) // 8
    rows, previous = [], bytearray(stride)
    for y in range(height):
        filter_type, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left, up = (line[i - 1] if i else 0), previous[i]
            up_left = previous[i - 1] if i else 0
            if filter_type == 1:
                line[i] = (line[i] + left) & 0xFF
            elif filter_type == 2:
                line[i] = (line[i] + up) & 0xFF
            elif filter_type == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif filter_type == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else up_left)) & 0xFF
        rows.append(line)
        previous = line

    def dark(x: int, y: int) -> int:
        return 0 if rows[y][x // 8] >> (7 - x % 8) & 1 else 1  # greyscale: 0 is black

    centre = scale // 2
    return [[dark((border + c) * scale + centre, (border + r) * scale + centre) for c in range(size)]
            for r in range(size)]


def svg_modules(svg: bytes, size: int, border: int) -> list[list[int]]:
    """Parse the SVG as XML and trace segno's path (runs of dark modules drawn as horizontal strokes)."""
    root = ElementTree.fromstring(svg)
    [path] = root.iter("{http://www.w3.org/2000/svg}path")
    grid = [[0] * size for _ in range(size)]
    x = y = 0.0
    for command, a, b in re.findall(r"([Mmh])\s*(-?[\d.]+)(?:\s+(-?[\d.]+))?", path.get("d")):
        if command == "M":
            x, y = float(a), float(b)
        elif command == "m":
            x, y = x + float(a), y + float(b)
        else:
            for column in range(int(x), int(x + float(a))):
                grid[int(y) - border][column - border] = 1
            x += float(a)
    return grid


def expected_modules(url: str) -> list[list[int]]:
    return [list(row) for row in segno.make(url, error="m", micro=False).matrix]


@pytest.mark.parametrize("kind", ["queue", "endpoint"])
async def test_qr_codes_encode_the_call_page_url(server, base_url, http, sessions, kind):
    token = await (queue_token(sessions) if kind == "queue" else endpoint_token(sessions, listing="bike-001"))
    expected = expected_modules(f"{base_url}/c/{token}")
    size = len(expected)

    response, png = await fetch(http, f"{base_url}/c/{token}.png")
    assert response.status == 200 and response.content_type == "image/png"
    assert "max-age=" in response.headers["Cache-Control"]
    assert png_modules(png, size, scale=8, border=4) == expected

    response, svg = await fetch(http, f"{base_url}/c/{token}.svg")
    assert response.status == 200 and response.content_type == "image/svg+xml"
    assert svg_modules(svg, size, border=4) == expected
    # A different URL gives a different code: the comparison above really tells URLs apart.
    assert expected_modules(f"{base_url}/c/{token}x") != expected


@pytest.fixture
async def public_server(settings: Settings) -> AsyncIterator[TestServer]:
    public = settings.model_copy(update={"public_url": "https://talk.example.com/", "port": free_port()})
    server = TestServer(create_app(public), host="127.0.0.1", port=public.port)
    await server.start_server()
    yield server
    await server.close()


async def test_behind_a_proxy_the_qr_code_uses_the_public_url(public_server, http, sessions):
    token = await queue_token(sessions)
    base_url = f"http://127.0.0.1:{public_server.port}"
    response, png = await fetch(http, f"{base_url}/c/{token}.png")
    expected = expected_modules(f"https://talk.example.com/c/{token}")
    assert png_modules(png, len(expected), scale=8, border=4) == expected
    assert response.headers["Cache-Control"].startswith("public")
    response, _ = await fetch(http, f"{base_url}/c/{token}")
    assert "wss://talk.example.com" in response.headers["Content-Security-Policy"]
