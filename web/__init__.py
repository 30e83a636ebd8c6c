"""Web: server-rendered pages (login, agent console, demo shop), static files and the widget's assets."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

import widget
from talk.settings import SETTINGS_KEY
from talk.types import CONSOLE_ROLES
from talk.sessions import csrf_token
from web.auth import current_account, home_of, login_page, login_submit, logout, require_account
from web.callpage import setup_call_pages
from web.calls_api import setup_calls_api
from web.demo import setup_demo_routes
from web.http import SITE_CACHE_KEY, SiteCache, api_errors
from web.journey_api import setup_journey_api
from web.openapi import setup_openapi
from web.reports_api import setup_reports_api
from web.reports_dashboard import setup_reports_dashboard
from web.seller import setup_seller_console
from web.sellers_api import setup_sellers_api
from web.webhooks_admin import setup_webhooks_admin

HERE = Path(__file__).parent


# Our own pages (console, login) run only our own scripts; the demo shop is a stand-in for a customer's site.
OWN_PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@web.middleware
async def security_headers(request: web.Request, handler):
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.path in ("/console", "/login"):
        response.headers.setdefault("Content-Security-Policy", OWN_PAGE_CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def console(request: web.Request) -> web.Response:
    account = await require_account(request, CONSOLE_ROLES)
    context = {"account": account, "csrf_token": await csrf_token(request), "ws_path": "/ws/v1"}
    return aiohttp_jinja2.render_template("console.html", request, context)


WIDGET_DIR = Path(widget.__file__).parent


async def widget_asset(request: web.Request) -> web.FileResponse:
    """Only the widget's .js files, cached briefly so a new release reaches sites within minutes."""
    path = WIDGET_DIR / request.match_info["name"]
    if not path.is_file():
        raise web.HTTPNotFound(text="no such widget file")
    response = web.FileResponse(path, headers={"Cache-Control": "public, max-age=300"})
    response.content_type = "application/javascript"
    return response


async def home(request: web.Request) -> web.Response:
    if request.app[SETTINGS_KEY].demo:
        raise web.HTTPFound("/demo/")
    account = await current_account(request)
    raise web.HTTPFound(home_of(account) if account is not None else "/console")


def setup_web(app: web.Application) -> None:
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
    )
    app.middlewares.append(security_headers)
    app.middlewares.append(api_errors)
    app[SITE_CACHE_KEY] = SiteCache()
    router = app.router
    router.add_get("/", home)
    router.add_get("/healthz", healthz)
    router.add_get("/login", login_page)
    router.add_post("/login", login_submit)
    router.add_post("/logout", logout)
    router.add_get("/console", console)
    router.add_static("/static", HERE / "static")
    router.add_get(r"/widget/{name:[a-z][a-z0-9-]*\.js}", widget_asset)
    setup_journey_api(app)
    setup_calls_api(app)
    setup_reports_api(app)
    setup_reports_dashboard(app)
    setup_openapi(app)
    setup_sellers_api(app)
    setup_call_pages(app)
    setup_seller_console(app)
    setup_webhooks_admin(app)
    if app[SETTINGS_KEY].demo:
        setup_demo_routes(app)
