"""The seller console (/seller) and voicemail downloads (/voicemail/<id>.wav).

A seller takes masked calls in the browser: the page is a server-rendered shell, `static/seller.js` drives it over
the same /ws/v1 socket as the agent console (a seller's session gets the agent role and only ever receives masked
calls). Everything the seller sees of a buyer is the alias and the listing.

Voicemail audio is served only to a logged-in account that may hear it (`talk.voicemails.voicemail_for_download`):
a seller its own, an agent its queues'. Every other case, a malformed id included, is a plain 404, so the URL tells
nobody whether a voicemail exists.
"""

from __future__ import annotations

import re

import aiohttp_jinja2
from aiohttp import web

from talk import voicemails
from talk.db import SESSIONMAKER_KEY
from talk.directory import DirectoryError
from talk.sessions import csrf_token, current_account_id
from talk.settings import SETTINGS_KEY
from talk.types import Role
from web.auth import require_account

SELLER_ROLES = frozenset({Role.SELLER, Role.ADMIN})

# Our own page: our own scripts and styles only (no inline code, no CDN); voicemail audio from this server, remote
# call audio as a MediaStream.
SELLER_PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

# new_voicemail_id(): "vm_" + token_urlsafe(16) (22 characters); a little slack, never a path.
VOICEMAIL_ID = re.compile(r"^vm_[A-Za-z0-9_-]{8,37}$")
NOT_FOUND_TEXT = "No such voicemail."


async def seller_console(request: web.Request) -> web.Response:
    account = await require_account(request, SELLER_ROLES)
    context = {"account": account, "csrf_token": await csrf_token(request), "ws_path": "/ws/v1"}
    response = aiohttp_jinja2.render_template("seller.html", request, context)
    response.headers["Content-Security-Policy"] = SELLER_PAGE_CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"  # the page names the logged-in account
    return response


async def voicemail_audio(request: web.Request) -> web.FileResponse:
    voicemail_id = request.match_info["voicemail_id"]
    if not VOICEMAIL_ID.match(voicemail_id):
        raise web.HTTPNotFound(text=NOT_FOUND_TEXT)
    account_id = await current_account_id(request)
    if account_id is None:
        raise web.HTTPNotFound(text=NOT_FOUND_TEXT)
    data_dir = request.app[SETTINGS_KEY].data_dir
    try:
        async with request.app[SESSIONMAKER_KEY]() as db:
            path = await voicemails.voicemail_for_download(db, voicemail_id, account_id, data_dir)
    except (DirectoryError, ValueError):  # not found, not this account's, or a stored name that is not a plain file
        raise web.HTTPNotFound(text=NOT_FOUND_TEXT) from None
    headers = {
        "Content-Type": "audio/wav",
        "Cache-Control": "private, no-store",
        "Content-Disposition": f'inline; filename="{voicemail_id}.wav"',
    }
    # FileResponse answers Range requests (206), so an <audio> element can seek.
    return web.FileResponse(path, headers=headers)


def setup_seller_console(app: web.Application) -> None:
    app.router.add_get("/seller", seller_console)
    app.router.add_get(r"/voicemail/{voicemail_id:[^/]{1,100}}.wav", voicemail_audio)
