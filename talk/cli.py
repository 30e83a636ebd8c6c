"""The `talk` command: run the server, run the demo, migrate the database, and admin tasks."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import resource
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from analytics.privacy import forget_visitor
from talk import directory, sellers, webhooks
from talk.voicemails import voicemail_dir
from talk.apitokens import create_token
from talk.app import create_app
from talk.db import create_engine, upgrade_schema
from talk.demo import DEMO_ACCOUNTS, DEMO_PASSWORD
from talk.settings import Settings
from talk.types import Role


def _settings(args: argparse.Namespace, **extra) -> Settings:
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("data_dir", args.data_dir)) if v is not None}
    return Settings(**overrides, **extra)


async def _freeze_startup_objects(_app: web.Application) -> None:
    """Move everything loaded at start-up (~110k objects: SQLAlchemy, pydantic, Alembic, templates) out of the
    garbage collector's reach. Each full collection otherwise walks them all and pauses every call for ~50 ms."""
    gc.collect()
    gc.freeze()


def _raise_open_files_limit() -> None:
    """Every browser holds a socket: a default soft limit of 1,024 would refuse callers long before memory runs out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass  # keep the limit we were given; the operator's service manager sets it then


def _run(settings: Settings, banner: Callable[[str], None]) -> None:
    _raise_open_files_limit()
    app = create_app(settings)
    app.on_startup.append(_freeze_startup_objects)  # after the cleanup contexts: the schema and caches are loaded
    web.run_app(app, host=settings.host, port=settings.port, print=banner)


def cmd_serve(args: argparse.Namespace) -> None:
    settings = _settings(args)
    _run(settings, _banner(settings))


def cmd_demo(args: argparse.Namespace) -> None:
    settings = _settings(args, demo=True)
    _run(settings, _demo_banner(settings))


def _base_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return settings.public_url.rstrip("/") or f"http://{host}:{settings.port}"


def _banner(settings: Settings) -> Callable[[str], None]:
    def show(_default: str) -> None:
        print(f"Talk is running at {_base_url(settings)} (data in {settings.data_dir}). Ctrl+C stops it.", flush=True)

    return show


def _demo_banner(settings: Settings) -> Callable[[str], None]:
    def show(_default: str) -> None:
        base = _base_url(settings)
        print(f"Talk demo is running at {base}  (Ctrl+C stops it)", flush=True)
        print(f"  Demo Shop (the shopper):   {base}/demo/", flush=True)
        print(f"  Agent console:             {base}/console", flush=True)
        for email, _name, role in DEMO_ACCOUNTS:
            print(f"  {role.value:<9} login: {email} / {DEMO_PASSWORD}", flush=True)

    return show


def cmd_db_upgrade(args: argparse.Namespace) -> None:
    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_schema(settings.resolved_database_url)
    print("database schema is up to date")
    from analytics.callfacts import catch_up  # (talk/cli.py assembles the product: it may import everything)

    async def facts() -> int:
        engine = create_engine(settings.resolved_database_url)
        try:
            return await catch_up(async_sessionmaker(engine, expire_on_commit=False),
                                  timedelta(days=settings.attribution_days))
        finally:
            await engine.dispose()

    print(f"call facts computed for {asyncio.run(facts()):,} calls")


def _admin(args: argparse.Namespace, action: Callable[[AsyncSession], Awaitable[str]]) -> None:
    settings = _settings(args)

    async def run() -> str:
        engine = create_engine(settings.resolved_database_url)
        try:
            async with async_sessionmaker(engine, expire_on_commit=False)() as db, db.begin():
                return await action(db)
        finally:
            await engine.dispose()

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_schema(settings.resolved_database_url)
    try:
        print(asyncio.run(run()))
    except directory.DirectoryError as exc:
        sys.exit(f"talk: {exc}")


def cmd_site_create(args: argparse.Namespace) -> None:
    async def action(db: AsyncSession) -> str:
        site = await directory.create_site(db, args.name, args.origin, key=args.key)
        return f"site {site.name}: key {site.key}, secret {site.secret_key}, origins {', '.join(site.allowed_origins)}"

    _admin(args, action)


def cmd_queue_create(args: argparse.Namespace) -> None:
    async def action(db: AsyncSession) -> str:
        queue = await directory.create_queue(db, args.site, args.name, args.display_name)
        return f"queue {queue.name} ({queue.display_name}) on site {args.site}"

    _admin(args, action)


def _new_password(args: argparse.Namespace) -> str:
    password = args.password or getpass.getpass("Password for the new account: ")
    if len(password) < 8:
        sys.exit("talk: the password must have at least 8 characters")
    return password


def cmd_account_create(args: argparse.Namespace) -> None:
    password = _new_password(args)

    async def action(db: AsyncSession) -> str:
        account = await directory.create_account(db, args.email, args.name or args.email, password, Role(args.role))
        for ref in args.queue:
            site_key, _, queue_name = ref.partition(":")
            await directory.add_queue_member(db, site_key, queue_name, account.email)
        return f"{account.role} account {account.email} (id {account.id})"

    _admin(args, action)


def _disposition(value: str) -> tuple[str, str | None]:
    name, _, url = value.partition("=")
    if not name.strip():
        raise argparse.ArgumentTypeError("a disposition is NAME or NAME=LANDING_URL")
    return name.strip(), url.strip() or None


def cmd_queue_configure(args: argparse.Namespace) -> None:
    async def action(db: AsyncSession) -> str:
        queue = await directory.configure_queue(
            db, args.site, args.name, landing_url=args.landing_url, redirect=args.redirect,
            dispositions=args.disposition or ([] if args.clear_dispositions else None),
            rating_question=args.rating_question, comment_question=args.comment_question, voicemail=args.voicemail)
        return (f"queue {queue.name}: landing page {queue.landing_url or '(none)'}, "
                f"redirect {'on' if queue.redirect_enabled else 'off'}, "
                f"voicemail {'on' if queue.voicemail_enabled else 'off'}")

    _admin(args, action)


def _call_links(settings: Settings, token: str) -> str:
    url = f"{_base_url(settings)}/c/{token}"
    return f"call page {url}\nQR code {url}.svg {url}.png"


def cmd_queue_link(args: argparse.Namespace) -> None:
    settings = _settings(args)

    async def action(db: AsyncSession) -> str:
        queue = await directory.queue_by_name(db, args.site, args.queue)
        if queue.kind != directory.AGENT_QUEUE:
            raise directory.DirectoryError("a seller's queue has no call page: give out its masked endpoints")
        return f"queue {queue.name} ({queue.display_name}) on site {args.site}\n" + _call_links(settings, queue.call_token)

    _admin(args, action)


def cmd_seller_create(args: argparse.Namespace) -> None:
    password = _new_password(args)

    async def action(db: AsyncSession) -> str:
        seller = await sellers.create_seller(db, args.site, args.email, args.name, password, args.public_name)
        return f"seller account {seller.email} (id {seller.id}), shown to buyers as {seller.public_name!r}, on {args.site}"

    _admin(args, action)


def cmd_seller_add_site(args: argparse.Namespace) -> None:
    async def action(db: AsyncSession) -> str:
        await sellers.add_seller_site(db, args.email, args.site)
        return f"seller {args.email.strip().lower()} sells on {args.site}"

    _admin(args, action)


def _expiry(value: str):
    try:
        return sellers.parse_expiry(value)
    except directory.DirectoryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_endpoint_create(args: argparse.Namespace) -> None:
    settings = _settings(args)
    if args.expires_in_days is not None and args.expires_in_days <= 0:
        sys.exit("talk: --expires-in-days must be a positive number")

    async def action(db: AsyncSession) -> str:
        now = directory.utcnow()
        expires = args.expires or (now + timedelta(days=args.expires_in_days) if args.expires_in_days else None)
        endpoint = await sellers.create_endpoint(db, args.seller, args.site, listing=args.listing, label=args.label,
                                                 expires_at=expires, now=now)
        until = f", expires {endpoint.expires_at.isoformat(timespec='minutes')}" if endpoint.expires_at else ""
        return f"masked endpoint {endpoint.token}{until}\n" + _call_links(settings, endpoint.token)

    _admin(args, action)


def cmd_endpoint_revoke(args: argparse.Namespace) -> None:
    async def action(db: AsyncSession) -> str:
        endpoint = await sellers.revoke_endpoint(db, args.token)
        return f"masked endpoint {endpoint.token} revoked ({endpoint.revoked_at.isoformat(timespec='seconds')})"

    _admin(args, action)


def cmd_endpoint_list(args: argparse.Namespace) -> None:
    async def action(db: AsyncSession) -> str:
        now = directory.utcnow()
        found = await sellers.list_endpoints(db, args.seller)
        lines = [f"{e.token}  {e.status(now):<7}  {e.site_key}  {e.seller_email} ({e.seller_public_name})  "
                 f"listing {e.listing or '-'}  label {e.label or '-'}  "
                 f"expires {e.expires_at.isoformat(timespec='minutes') if e.expires_at else 'never'}" for e in found]
        return "\n".join(lines) or "no masked endpoints"

    _admin(args, action)


def cmd_token_create(args: argparse.Namespace) -> None:
    async def action(db: AsyncSession) -> str:
        token = await create_token(db, args.name)
        return f"API token {args.name!r} (shown only now; keep it secret):\n{token}"

    _admin(args, action)


def cmd_privacy_forget(args: argparse.Namespace) -> None:
    async def action(db: AsyncSession) -> str:
        counts = await forget_visitor(db, args.visitor_id, voicemail_dir(_settings(args).data_dir))
        return "deleted " + ", ".join(f"{n} {what}" for what, n in counts.items())

    _admin(args, action)


def _events(value: str) -> list[str]:
    try:
        return webhooks.check_events(value.split(","))
    except webhooks.WebhookError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _when(value) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


def cmd_webhook_add(args: argparse.Namespace) -> None:
    async def action(db: AsyncSession) -> str:
        hook = await webhooks.register_webhook(db, args.site, args.url, args.events)
        return (f"webhook {hook.id} on {args.site}: {hook.url}\nevents {', '.join(hook.events)}\n"
                f"signing secret (shown only now; keep it secret):\n{hook.secret}")

    _admin(args, action)


def cmd_webhook_list(args: argparse.Namespace) -> None:
    async def action(db: AsyncSession) -> str:
        lines = [f"{h.id}  {'active' if h.active else 'disabled':<8}  {h.site_key}  {h.url}  {','.join(h.events)}  "
                 f"pending {h.counts['pending']}, delivered {h.counts['delivered']}, failed {h.counts['failed']}"
                 for h in await webhooks.list_webhooks(db)]
        return "\n".join(lines) or "no webhooks"

    _admin(args, action)


def cmd_webhook_remove(args: argparse.Namespace) -> None:
    async def action(db: AsyncSession) -> str:
        hook = await webhooks.remove_webhook(db, args.id)
        return f"webhook {hook.id} ({hook.url}) removed, with its deliveries"

    _admin(args, action)


def cmd_webhook_active(args: argparse.Namespace) -> None:
    async def action(db: AsyncSession) -> str:
        hook = await webhooks.set_active(db, args.id, args.active)
        return f"webhook {hook.id} ({hook.url}) {'enabled' if hook.active else 'disabled'}"

    _admin(args, action)


def cmd_webhook_deliveries(args: argparse.Namespace) -> None:
    async def action(db: AsyncSession) -> str:
        if args.webhook is not None:
            await webhooks.webhook_by_id(db, args.webhook)
        found = await webhooks.list_deliveries(db, args.webhook, webhooks.FAILED if args.failed else None, args.limit)
        lines = [f"{d.id}  webhook {d.webhook_id}  {d.event_type:<21}  {d.event_id}  {d.status:<9}  "
                 f"attempts {d.attempts}  code {d.last_status_code or '-'}  created {_when(d.created_at)}  "
                 f"{'delivered ' + _when(d.delivered_at) if d.delivered_at else 'next ' + _when(d.next_attempt_at)}"
                 f"  error {d.last_error or '-'}" for d in found]
        return "\n".join(lines) or "no deliveries"

    _admin(args, action)


def _generate_data(args: argparse.Namespace, visitors: int, demo: bool) -> None:
    """N synthetic visitors (analytics/generator.py). The demo data is created first in demo mode, or when the
    database has no site at all: never demo accounts (password "demo") next to real ones."""
    from datetime import datetime, timezone

    from sqlalchemy import select

    from analytics.generator import GeneratorError, StderrProgress, generate, report
    from talk.app import demo_origins
    from talk.demo import seed_demo
    from talk.models import Site
    from talk.secret import load_secret, subkey

    settings = _settings(args, demo=demo)

    async def run():
        engine = create_engine(settings.resolved_database_url)
        try:
            async with async_sessionmaker(engine, expire_on_commit=False)() as db, db.begin():
                if demo or await db.scalar(select(Site.id).limit(1)) is None:
                    await seed_demo(db, demo_origins(settings))
            return await generate(engine, visitors, end=args.end or datetime.now(timezone.utc), seed=args.seed,
                                  days=args.days, attribution_days=settings.attribution_days,
                                  alias_key=subkey(load_secret(settings), "buyer-alias"), progress=StderrProgress())
        finally:
            await engine.dispose()

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_schema(settings.resolved_database_url)
    try:
        print(report(asyncio.run(run()), args.seed), flush=True)
    except GeneratorError as exc:
        if not demo:
            sys.exit(f"talk: {exc}")
        print(f"talk: {exc}; serving the data that is there", file=sys.stderr, flush=True)


def cmd_generate(args: argparse.Namespace) -> None:
    _generate_data(args, args.visitors, demo=False)


def cmd_demo_generated(args: argparse.Namespace) -> None:
    if args.generate:
        _generate_data(args, args.generate, demo=True)
    cmd_demo(args)


def _add_generate_commands(sub, common: argparse.ArgumentParser) -> None:
    """`talk generate N` and `talk demo --generate N`."""
    from analytics.generator import DEFAULT_DAYS, DEFAULT_SEED, parse_end

    def count(value: str) -> int:
        if not value.isdigit():
            raise argparse.ArgumentTypeError("a whole number of visitors, 0 or more")
        return int(value)

    def days(value: str) -> int:
        if not value.isdigit() or not 1 <= int(value) <= 3650:
            raise argparse.ArgumentTypeError("a whole number of days from 1 to 3650")
        return int(value)

    def end(value: str):
        try:
            return parse_end(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"same seed, same data (default {DEFAULT_SEED})")
        p.add_argument("--days", type=days, default=DEFAULT_DAYS, help=f"days of data (default {DEFAULT_DAYS})")
        p.add_argument("--end", type=end, help="when the period ends: ISO date (that whole day) or datetime, UTC "
                       "(default: now)")

    demo = sub.choices["demo"]
    demo.add_argument("--generate", type=count, metavar="N",
                      help="first fill the database with N synthetic visitors' journeys, calls, surveys, purchases")
    options(demo)
    demo.set_defaults(fn=cmd_demo_generated)
    p = sub.add_parser("generate", parents=[common], help="fill the database with N synthetic visitors (demo site; "
                       "about 5 page views each), without serving")
    p.add_argument("visitors", type=count, metavar="N")
    options(p)
    p.set_defaults(fn=cmd_generate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talk", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", help="address to listen on (TALK_HOST)")
    common.add_argument("--port", type=int, help="port to listen on (TALK_PORT)")
    common.add_argument("--data-dir", type=Path, help="data directory (TALK_DATA_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("serve", parents=[common], help="run the server").set_defaults(fn=cmd_serve)
    sub.add_parser("demo", parents=[common], help="run the server with the Demo Shop and demo accounts").set_defaults(fn=cmd_demo)

    db = sub.add_parser("db", help="database maintenance").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", parents=[common], help="create or upgrade the schema").set_defaults(fn=cmd_db_upgrade)

    site = sub.add_parser("site", help="sites that embed the widget").add_subparsers(dest="site_command", required=True)
    p = site.add_parser("create", parents=[common], help="create a site")
    p.add_argument("name")
    p.add_argument("--origin", action="append", required=True, help="allowed origin, e.g. https://shop.example.com (repeatable)")
    p.add_argument("--key", help="site key (default: generated)")
    p.set_defaults(fn=cmd_site_create)

    queue = sub.add_parser("queue", help="call queues").add_subparsers(dest="queue_command", required=True)
    p = queue.add_parser("create", parents=[common], help="create a queue on a site")
    p.add_argument("site", help="site key")
    p.add_argument("name", help="queue name used by the widget, e.g. support")
    p.add_argument("--display-name")
    p.set_defaults(fn=cmd_queue_create)

    p = queue.add_parser("configure", parents=[common], help="post-call landing page, dispositions, survey")
    p.add_argument("site", help="site key")
    p.add_argument("name", help="queue name")
    p.add_argument("--landing-url", help="page the caller goes to when the call ends ('' for none); a path like "
                   "/thanks stays on the caller's origin, a full URL must be on the site's allowed origins")
    p.add_argument("--redirect", action=argparse.BooleanOptionalAction, default=None,
                   help="send callers to the landing page (--no-redirect: survey in place)")
    p.add_argument("--disposition", action="append", type=_disposition,
                   help="NAME or NAME=LANDING_URL, in display order (repeatable; replaces the list)")
    p.add_argument("--clear-dispositions", action="store_true")
    p.add_argument("--rating-question", help="the survey's 1-5 question ('' for the widget's own text)")
    p.add_argument("--comment-question", help="the survey's comment prompt ('' for the widget's own text)")
    p.add_argument("--voicemail", action=argparse.BooleanOptionalAction, default=None,
                   help="let callers leave a voicemail when nobody answers (--no-voicemail: the call just ends)")
    p.set_defaults(fn=cmd_queue_configure)

    p = queue.add_parser("link", parents=[common], help="print the queue's call page URL and QR code URLs")
    p.add_argument("--site", required=True, help="site key")
    p.add_argument("--queue", required=True, help="queue name")
    p.set_defaults(fn=cmd_queue_link)

    seller = sub.add_parser("seller", help="seller accounts").add_subparsers(dest="seller_command", required=True)
    p = seller.add_parser("create", parents=[common], help="create a seller account with its queue on a site")
    p.add_argument("--site", required=True, help="site key")
    p.add_argument("--email", required=True)
    p.add_argument("--name", required=True, help="the seller's own name (never shown to buyers)")
    p.add_argument("--public-name", required=True, help="the name buyers see, e.g. the shop's name")
    p.add_argument("--password", help="(default: asked for)")
    p.set_defaults(fn=cmd_seller_create)
    p = seller.add_parser("add-site", parents=[common], help="let a seller sell (and be called) on another site")
    p.add_argument("--email", required=True)
    p.add_argument("--site", required=True, help="site key")
    p.set_defaults(fn=cmd_seller_add_site)

    endpoint = sub.add_parser("endpoint", help="sellers' masked endpoints").add_subparsers(
        dest="endpoint_command", required=True)
    p = endpoint.add_parser("create", parents=[common], help="create a masked endpoint; prints its token and call page")
    p.add_argument("--seller", required=True, help="the seller's e-mail")
    p.add_argument("--site", required=True, help="site key")
    p.add_argument("--listing", help="the listing it calls about, e.g. a SKU")
    p.add_argument("--label", help="what buyers see besides the seller's public name, e.g. the listing's title")
    expiry = p.add_mutually_exclusive_group()
    expiry.add_argument("--expires", type=_expiry, help="ISO date or datetime, e.g. 2027-01-31T00:00Z (no zone: UTC)")
    expiry.add_argument("--expires-in-days", type=float)
    p.set_defaults(fn=cmd_endpoint_create)
    p = endpoint.add_parser("revoke", parents=[common], help="revoke a masked endpoint for good")
    p.add_argument("token")
    p.set_defaults(fn=cmd_endpoint_revoke)
    p = endpoint.add_parser("list", parents=[common], help="list masked endpoints")
    p.add_argument("--seller", help="only this seller's (e-mail)")
    p.set_defaults(fn=cmd_endpoint_list)

    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command", required=True)
    p = token.add_parser("create", parents=[common], help="create an API token for the call and reports APIs")
    p.add_argument("name")
    p.set_defaults(fn=cmd_token_create)

    webhook = sub.add_parser("webhook", help="sites' webhooks and their delivery log").add_subparsers(
        dest="webhook_command", required=True)
    p = webhook.add_parser("add", parents=[common], help="register a URL for a site's events; prints its secret")
    p.add_argument("--site", required=True, help="site key")
    p.add_argument("--url", required=True, help="http(s) URL that receives the signed POSTs")
    p.add_argument("--events", type=_events,
                   help=f"comma-separated, of {','.join(webhooks.EVENT_TYPES)} (default: all)")
    p.set_defaults(fn=cmd_webhook_add)
    p = webhook.add_parser("list", parents=[common], help="list webhooks with their deliveries by status")
    p.set_defaults(fn=cmd_webhook_list)
    p = webhook.add_parser("remove", parents=[common], help="remove a webhook and its delivery log")
    p.add_argument("id", type=int)
    p.set_defaults(fn=cmd_webhook_remove)
    for name, active, text in (("enable", True, "send events again"), ("disable", False, "stop sending events")):
        p = webhook.add_parser(name, parents=[common], help=f"{text} to a webhook")
        p.add_argument("id", type=int)
        p.set_defaults(fn=cmd_webhook_active, active=active)
    p = webhook.add_parser("deliveries", parents=[common], help="the delivery log, newest first")
    p.add_argument("--webhook", type=int, help="only this webhook's")
    p.add_argument("--failed", action="store_true", help="only deliveries that failed for good")
    p.add_argument("--limit", type=int, default=50, choices=range(1, 1001), metavar="1-1000")
    p.set_defaults(fn=cmd_webhook_deliveries)

    privacy = sub.add_parser("privacy", help="privacy operations").add_subparsers(dest="privacy_command", required=True)
    p = privacy.add_parser("forget", parents=[common], help="delete every row about a visitor")
    p.add_argument("visitor_id")
    p.set_defaults(fn=cmd_privacy_forget)

    account = sub.add_parser("account", help="console accounts").add_subparsers(dest="account_command", required=True)
    p = account.add_parser("create", parents=[common], help="create an account")
    p.add_argument("email")
    p.add_argument("--name")
    p.add_argument("--role", choices=[r.value for r in Role], default=Role.AGENT.value)
    p.add_argument("--password", help="(default: asked for)")
    p.add_argument("--queue", action="append", default=[], help="SITE_KEY:QUEUE this agent answers (repeatable)")
    p.set_defaults(fn=cmd_account_create)
    _add_generate_commands(sub, common)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
