"""Standalone call pages (/c/<token>) and their QR codes: a call that starts outside the site (an app, an e-mail, a
printed QR code). Every agent queue and every masked endpoint has one; the page carries the site's widget and one
big call button, and the journey of such a call starts at that page."""

from __future__ import annotations

import asyncio
import io
import secrets
from collections import OrderedDict

import aiohttp_jinja2
import segno
from aiohttp import web

from talk.db import SESSIONMAKER_KEY
from talk.directory import utcnow
from talk.sellers import EndpointUnavailable, record_refusal, target_of_call_token
from talk.settings import SETTINGS_KEY

TOKEN = r"[A-Za-z0-9_-]{1,64}"  # the pattern only keeps the route simple; tokens are looked up, never trusted
QR_SCALE = 8  # pixels per module: a version 3-4 code is ~300-400 px, crisp on screen and in print
QR_BORDER = 4  # the quiet zone the QR standard asks for
QR_CACHE_SECONDS = 3600
QR_TYPES = {"svg": "image/svg+xml", "png": "image/png"}


def public_base(request: web.Request) -> str:
    """The server's public base URL: TALK_PUBLIC_URL when set, else the request's own scheme and host."""
    return request.app[SETTINGS_KEY].public_url.rstrip("/") or f"{request.scheme}://{request.host}"


def call_page_url(request: web.Request, token: str) -> str:
    return f"{public_base(request)}/c/{token}"


def qr_code(url: str, kind: str) -> bytes:
    """The QR code of `url` as SVG or PNG bytes (segno; error correction M survives a little dirt on a print)."""
    out = io.BytesIO()
    segno.make(url, error="m", micro=False).save(out, kind=kind, scale=QR_SCALE, border=QR_BORDER)
    return out.getvalue()


class QrCache:
    """The last few hundred QR images: making one costs 5-8 ms of pure-Python CPU, so it runs in a thread and a
    printed code scanned by many (or a page reloaded) is made once."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._images: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    async def get(self, url: str, kind: str) -> bytes:
        key = (url, kind)
        image = self._images.get(key)
        if image is None:
            image = await asyncio.to_thread(qr_code, url, kind)
            self._images[key] = image
            if len(self._images) > self._size:
                self._images.popitem(last=False)
        else:
            self._images.move_to_end(key)
        return image


QR_CACHE_KEY = web.AppKey("qr_cache", QrCache)


def _csp(request: web.Request, nonce: str) -> str:
    ws = "wss" if public_base(request).startswith("https:") else "ws"
    host = public_base(request).split("://", 1)[1]
    return (f"default-src 'self'; script-src 'self'; style-src 'self' 'nonce-{nonce}'; img-src 'self' data:; "
            f"media-src 'self' blob:; connect-src 'self' {ws}://{host}; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'self'")


async def _target(request: web.Request, record: bool):
    """(target, None) for a live token; (None, EndpointUnavailable) for an unknown or dead one. A dead endpoint's
    attempt is recorded when `record` (the page, not its QR image)."""
    token = request.match_info["token"]
    now = utcnow()
    async with request.app[SESSIONMAKER_KEY]() as db, db.begin():
        try:
            return await target_of_call_token(db, token, now), None
        except EndpointUnavailable as refused:
            if record and refused.endpoint_id is not None:
                await record_refusal(db, refused.endpoint_id, refused.site_id, None, refused.reason, now)
            return None, refused


async def call_page(request: web.Request) -> web.Response:
    target, refused = await _target(request, record=True)
    nonce = secrets.token_urlsafe(16)
    if target is None:
        status = 404 if refused.reason == "unknown" else 410
        context = {"nonce": nonce, "message": refused.message, "title": "Call link not available"}
    else:
        context = {"nonce": nonce, "target": target, "endpoint": target.endpoint,
                   "title": f"Call {target.display_name}"}
        status = 200
    response = aiohttp_jinja2.render_template("callpage.html", request, context, status=status)
    response.headers["Content-Security-Policy"] = _csp(request, nonce)
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"  # tokens are meant for their recipients, not search
    response.headers["Cache-Control"] = "no-store"  # a revoked link must stop working at once
    return response


async def call_page_qr(request: web.Request) -> web.Response:
    target, refused = await _target(request, record=False)
    if target is None:
        error = web.HTTPNotFound if refused.reason == "unknown" else web.HTTPGone
        raise error(text=refused.message)
    kind = request.match_info["kind"]
    body = await request.app[QR_CACHE_KEY].get(call_page_url(request, request.match_info["token"]), kind)
    # Without TALK_PUBLIC_URL the image depends on the Host header: only the browser may keep it then.
    shared = "public" if request.app[SETTINGS_KEY].public_url else "private"
    return web.Response(body=body, content_type=QR_TYPES[kind],
                        headers={"Cache-Control": f"{shared}, max-age={QR_CACHE_SECONDS}",
                                 "X-Robots-Tag": "noindex"})


def setup_call_pages(app: web.Application) -> None:
    app[QR_CACHE_KEY] = QrCache()
    app.router.add_get(f"/c/{{token:{TOKEN}}}", call_page)
    app.router.add_get(f"/c/{{token:{TOKEN}}}.{{kind:svg|png}}", call_page_qr)
