"""Login, logout and the guard for console pages."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from talk import directory
from talk.db import SESSIONMAKER_KEY
from talk.models import Account
from talk.sessions import check_csrf, csrf_token, current_account_id, forget, remember
from talk.types import Role

MAX_FORM_FIELD = 1024


def safe_next(value: str | None, default: str = "/console") -> str:
    """Only local paths: never an open redirect to another site."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


async def current_account(request: web.Request) -> Account | None:
    account_id = await current_account_id(request)
    if account_id is None:
        return None
    async with request.app[SESSIONMAKER_KEY]() as db:
        return await db.get(Account, account_id)


async def require_account(request: web.Request, roles: frozenset[str]) -> Account:
    account = await current_account(request)
    if account is None:
        raise web.HTTPFound(f"/login?next={request.path}")
    if account.role not in roles:
        raise web.HTTPForbidden(text="Your account has no access to this page.")
    return account


def home_of(account) -> str:
    """Where an account goes after logging in when no page asked for it: sellers have their own console."""
    return "/seller" if account.role == Role.SELLER else "/console"


async def login_page(request: web.Request) -> web.Response:
    account = await current_account(request)
    if account is not None:
        raise web.HTTPFound(safe_next(request.query.get("next"), default=home_of(account)))
    return await _render_login(request, None, safe_next(request.query.get("next"), default=""))


async def login_submit(request: web.Request) -> web.Response:
    form = await request.post()
    await check_csrf(request, _field(form, "csrf_token"))
    next_path = safe_next(_field(form, "next"), default="")
    async with request.app[SESSIONMAKER_KEY]() as db, db.begin():
        account = await directory.authenticate(db, _field(form, "email"), _field(form, "password"))
    if account is None:
        return await _render_login(request, "Wrong e-mail or password.", next_path, status=401)
    await remember(request, account.id)
    raise web.HTTPFound(next_path or home_of(account))


async def logout(request: web.Request) -> web.Response:
    form = await request.post()
    await check_csrf(request, _field(form, "csrf_token"))
    await forget(request)
    raise web.HTTPFound("/login")


async def _render_login(request: web.Request, error: str | None, next_path: str, status: int = 200) -> web.Response:
    context = {"csrf_token": await csrf_token(request), "error": error, "next": next_path}
    return aiohttp_jinja2.render_template("login.html", request, context, status=status)


def _field(form, name: str) -> str:
    value = form.get(name, "")
    if not isinstance(value, str):
        raise web.HTTPBadRequest(text=f"{name} must be a text field")
    if len(value) > MAX_FORM_FIELD:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM_FIELD, actual_size=len(value))
    return value
