"""Synthetic, reproducible demo data with its ground truth: `talk demo --generate N` and `talk generate N`.

`await generate(engine, N, seed=…, days=…, end=…)` fills a database that has the demo data of talk/demo.py (site
`demo-shop`, queue `support` and its agents, the demo seller's queue and masked endpoints; their ids are read from
the database) with N synthetic visitors over the `days` before `end`, and returns a `Truth`
(analytics/generator_truth.py, which defines every report figure exactly) computed from the generator's own records.

- Deterministic: everything comes from `random.Random(seed)` and the explicit `end`; the same seed, end, days and
  demo database give identical rows (ids included), another seed other rows. No wall clock, no global random.
- Written as the product writes it: page views are `event_rows`' rows (path, UTM and click ids derived from the URL
  by `analytics.sources.attribution_of`, props JSON null, a salted-hash-like ip_hash), calls the call store's rows
  (state, end reason and times of each outcome as the switchboard sets them, landing URL with `talk_call`),
  voicemails `talk.voicemails`' rows (file `<id>.wav`; no audio file is written, so playing one in the console
  answers "missing"), surveys and conversions as their APIs store them.
- Bulk writes, no ORM objects per row, the whole load in one transaction (all or nothing), in batches of about
  50,000 page views: SQLite through its own sqlite3 connection on one thread (`executemany`; values as SQLAlchemy's
  bind processors make them, like analytics/eventstore.py; the secondary indexes of `events` are dropped and rebuilt
  inside the transaction when the load is at least as big as the table), PostgreSQL through asyncpg's COPY
  (`copy_records_to_table`), the next batch generated while the server takes the last. About 5 page views per
  visitor: `talk generate 200000` writes about 1M.
- Visitors: 10% refuse tracking (no page views; their calls have `has_journey` false, no session and a throwaway
  visitor id each, as signaling gives them); the others have 1–3 sessions (a new session after ≥ 31 minutes) of
  page views on /demo/, /demo/products/…, /demo/listings/…, /demo/about with titles, referrers and traffic sources
  (direct, search, social, referral, UTM campaigns, paid with gclid/fbclid). About 8% call, from the page they are
  on: a listing's `Call seller` reaches the seller through its endpoint (channel seller), other pages the support
  queue; some call again (a retry after an unanswered call, or in a later session). Outcomes follow staffing
  (agents on weekdays 8–20 and Saturday 9–17, UTC+1; the seller 9–21): answered (disposition from the queue's,
  landing page view with talk_call after the end), abandoned while queued or ringing, missed (nobody on duty, ring
  timeout, declined), voicemails for a share of no-agent/declined calls, surveys (1–5, some comments with markup to
  exercise escaping) for a share of answered calls. Sessions may end in a purchase (EUR), far likelier after a
  call; later sessions fall inside or outside the attribution window, so do conversions.
- Planted edge cases (`truth.scenarios`, when N ≥ 20 and the period is long enough): a call crossing midnight in
  Europe/Berlin and one crossing midnight UTC; conversions exactly `window` (inside), `window` − 1 s (inside) and
  `window` + 1 s (outside) after a call's end; a visitor with three calls (abandoned, answered, a seller call missed
  with a voicemail) and one conversion attributed to all three (counted once); calls without a journey, one of them
  converting through a server-side conversion by call id.

Running it twice with the same seed on one database fails and writes nothing (the ids exist already): use another
seed. On SQLite other writers (a running server) wait while it writes.
"""

from __future__ import annotations

import asyncio
import base64
import math
import random
import sqlite3
import sys
import time as clock
from bisect import bisect_right
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from datetime import time as dt_time
from decimal import Decimal
from itertools import accumulate
from statistics import NormalDist
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from analytics import callfacts, visitordays
from analytics.generator_truth import MICROSECOND, CallFact, PageFact, Truth, to_datetime, to_us
from analytics.sources import attribution_of
from talk import db as talk_db
from talk import directory
from talk.demo import DEMO_LISTINGS, DEMO_QUEUE, DEMO_SITE_KEY
from talk.directory import AGENT_QUEUE, is_relative
from talk.models import (
    Account, CallRecord, Conversion, PageEvent, QueueMember, SellerEndpoint, Site, SurveyAnswer, Voicemail,
)
from talk.sellers import buyer_alias, public_name_of
from talk.types import Role

DEFAULT_SEED = 5  # issue 5
DEFAULT_DAYS = 30
BATCH_EVENTS = 50_000
EVENTS_PER_VISITOR = 5  # about, on average (for the choice of rebuilding SQLite's indexes)
SCENARIO_MIN_VISITORS = 20
BERLIN = "Europe/Berlin"

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
SHOP_UTC_OFFSET = HOUR  # staffing hours and the daily traffic curve are in UTC+1
RING_TIMEOUT = 20 * SECOND
VOICEMAIL_MAX_SECONDS = 120.0
SESSION_GAP = 31 * MINUTE  # the widget starts a new session after 30 minutes without activity

NO_CONSENT = 0.10
ANONYMOUS_CALLS = 0.25  # of visitors without consent: they matter only when they call
CALLERS = 0.08
CALL_AGAIN_LATER = 0.25
RETRY = 0.35
CLOSED_NO_CALL = 0.75
SURVEY = 0.32
VOICEMAIL_AGENT, VOICEMAIL_SELLER = 0.30, 0.45
SELLER_FROM_LISTING = 0.85

# The Demo Shop's catalogue (web/demo.py's PRODUCTS; analytics may not import web): slug, name, price in cents.
PRODUCTS = (("blue-kettle", "Blue Kettle", 4900), ("oak-chair", "Oak Chair", 18900),
            ("linen-throw", "Linen Throw", 7900))
LANDING_TITLES = {"/demo/thanks": "Thanks for calling — Demo Shop", "/demo/offer": "Your personal offer — Demo Shop"}
# Traffic per hour of the day (UTC+1): quiet nights, a lunch bump and a long evening.
HOURLY = (2, 1, 1, 1, 1, 2, 4, 7, 9, 10, 11, 12, 12, 11, 10, 10, 11, 12, 14, 16, 16, 13, 8, 4)
SEARCH_REFERRERS = (("https://www.google.com/", 80), ("https://www.bing.com/", 12), ("https://duckduckgo.com/", 8))
SOCIAL_REFERRERS = (("https://www.facebook.com/", 45), ("https://l.instagram.com/", 35), ("https://t.co/", 20))
REFERRAL_REFERRERS = (("https://www.bike-forum.example/threads/commuting", 60),
                      ("https://blog.kitchen-stories.example/kettles", 40))
CAMPAIGNS = ("spring-sale", "new-arrivals", "bike-week")
SESSIONS = ((1, 55), (2, 30), (3, 15))
RATINGS = ((5, 45), (4, 25), (3, 12), (2, 8), (1, 10))
MARKUP_COMMENT = '<script>alert("xss")</script> nice try'
COMMENTS = (
    "Very helpful, thank you!", "Quick answer, friendly agent.", "Took a while to get through.",
    "Sehr freundlich, danke 👍", "The offer was great.", "Not what I hoped for.",
    MARKUP_COMMENT, "<b>bold</b> & \"quotes\" & 'apostrophes' <i>",
    "Prices?? > 100 € < 200 € — ok", "Seller knew the bike well",
)

# Time on a page: 4 s + a log-normal (median e^3.2 ≈ 25 s, σ 0.9) capped at 15 minutes, as 4,096 quantiles in µs.
DWELL_STEPS = 4096
DWELL = [int((4 + min(math.exp(3.2 + 0.9 * NormalDist().inv_cdf((i + 0.5) / DWELL_STEPS)), 900)) * SECOND)
         for i in range(DWELL_STEPS)]
# Pages per session: 1 + a geometric number (another page with p = 0.725), at most 15, as 1,000 quantiles.
PAGES_PER_SESSION = [min(15, 1 + int(math.log(1 - (i + 0.5) / 1000) / math.log(0.725))) for i in range(1000)]

EVENT_COLUMNS = (
    "site_id", "event_id", "visitor_id", "session_id", "type", "ts", "url", "path", "title", "referrer",
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "click_id_type", "click_id", "props",
    "ip_hash",
)
JSON_NULL = "null"  # what SQLAlchemy's JSON type stores for props=None (event_rows' rows have props None)
if EVENT_COLUMNS != tuple(c.name for c in PageEvent.__table__.columns if c.name != "id"):
    raise RuntimeError("the events table changed: update EVENT_COLUMNS and the rows made in _Generator.view")


class GeneratorError(Exception):
    """The database lacks the demo data, or the data could not be written."""


# ----- what is in the database -----

@dataclass(frozen=True)
class QueueSetup:
    id: int
    name: str
    channel: str  # "agent" or "seller"
    landing_url: str | None
    redirect: bool
    dispositions: tuple[tuple[str, str | None], ...]
    voicemail: bool
    answerers: tuple[int, ...]  # agents of the queue, or the seller


@dataclass(frozen=True)
class EndpointSetup:
    id: int
    queue: QueueSetup
    seller_id: int
    listing: str


@dataclass(frozen=True)
class DemoSetup:
    site_id: int
    site_key: str
    origin: str
    support: QueueSetup
    endpoints: dict[str, EndpointSetup]  # by listing
    seller_name: str


async def load_setup(db: AsyncSession, site_key: str = DEMO_SITE_KEY, at: datetime | None = None) -> DemoSetup:
    """The demo site's ids from the database (talk/demo.py seeds them)."""
    site = await db.scalar(select(Site).where(Site.key == site_key))
    if site is None:
        raise GeneratorError(f"no site {site_key!r}: generated data goes to the demo site; `talk generate` fills an "
                             "empty database or one made by `talk demo`")
    queues = {q.name: q for q in await directory.site_queues(db, site.id)}
    if DEMO_QUEUE not in queues:
        raise GeneratorError(f"site {site_key!r} has no queue {DEMO_QUEUE!r}")

    async def members(queue_id: int, role: Role) -> tuple[int, ...]:
        rows = await db.scalars(select(Account.id).join(QueueMember, QueueMember.account_id == Account.id)
                                .where(QueueMember.queue_id == queue_id, Account.role == role).order_by(Account.id))
        return tuple(rows)

    def queue_setup(info: directory.QueueInfo, answerers: tuple[int, ...]) -> QueueSetup:
        return QueueSetup(info.id, info.name, "agent" if info.kind == AGENT_QUEUE else "seller", info.landing_url,
                          info.redirect_enabled, tuple(info.dispositions), info.voicemail_enabled, answerers)

    support = queue_setup(queues[DEMO_QUEUE], await members(queues[DEMO_QUEUE].id, Role.AGENT))
    if not support.answerers:
        raise GeneratorError(f"queue {DEMO_QUEUE!r} has no agents")
    by_id = {q.id: q for q in queues.values()}
    endpoints: dict[str, EndpointSetup] = {}
    seller_name = ""
    listings = {item["sku"] for item in DEMO_LISTINGS}
    rows = await db.execute(select(SellerEndpoint, Account).join(Account, Account.id == SellerEndpoint.seller_id)
                            .where(SellerEndpoint.site_id == site.id, SellerEndpoint.revoked_at.is_(None))
                            .order_by(SellerEndpoint.id))
    for endpoint, seller in rows.all():
        live = endpoint.expires_at is None or at is None or endpoint.expires_at > at
        if live and endpoint.listing in listings and endpoint.queue_id in by_id:
            queue = queue_setup(by_id[endpoint.queue_id], (seller.id,))
            endpoints[endpoint.listing] = EndpointSetup(endpoint.id, queue, seller.id, endpoint.listing)  # newer win
            seller_name = public_name_of(seller)
    origins = list(site.allowed_origins)
    if not origins:
        raise GeneratorError(f"site {site_key!r} has no allowed origin")
    return DemoSetup(site.id, site.key, origins[0].rstrip("/"), support, endpoints, seller_name)


# ----- generation (pure Python, no I/O) -----

@dataclass
class _Batch:
    events: list[tuple] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    surveys: list[dict[str, Any]] = field(default_factory=list)
    voicemails: list[dict[str, Any]] = field(default_factory=list)
    conversions: list[dict[str, Any]] = field(default_factory=list)


class _Page:
    """A page of the Demo Shop, with where a visitor goes next from it (never the same page: the widget records a
    URL change only)."""

    __slots__ = ("path", "title", "kind", "key", "price", "url", "next", "cumulative", "total")

    def __init__(self, path: str, title: str, kind: str, key: str = "", price: int = 0) -> None:
        self.path, self.title, self.kind, self.key, self.price = path, title, kind, key, price
        self.url = ""
        self.next: list[_Page] = []
        self.cumulative: list[float] = []
        self.total = 0.0


@dataclass
class _Visitor:
    index: int
    id: str
    consent: bool
    times: list[int] = field(default_factory=list)
    first_event: int = 0  # index of its first row in the batch's events
    calls: list[CallFact] = field(default_factory=list)
    last_answered_end: int | None = None


@dataclass
class _Session:
    id: str
    ip_hash: str
    viewed: list[_Page] = field(default_factory=list)
    answered_call: bool = False
    any_call: bool = False


class _Generator:
    def __init__(self, setup: DemoSetup, seed: int, start_us: int, end_us: int, window_us: int, alias_key: bytes,
                 ts_value: Callable[[int], Any], truth: Truth) -> None:
        self.setup = setup
        self.rng = random.Random(seed)
        self.start, self.end, self.window = start_us, end_us, window_us
        self.alias_key = alias_key
        self.ts_value = ts_value  # microseconds -> what the sink stores in events.ts
        self.site_id = setup.site_id
        self.truth = truth
        self.batch = _Batch()
        self.visitors_done = 0
        self.counts = {"visitors": 0, "visitors_without_consent": 0, "sessions": 0, "events": 0, "calls": 0,
                       "surveys": 0, "voicemails": 0, "conversions": 0}
        self._tokens = ""
        self._token_at = 0
        self.after_call = 0
        origin = setup.origin
        self.home = _Page("/demo/", "Home — Demo Shop", "home")
        self.about = _Page("/demo/about", "About — Demo Shop", "about")
        self.products = [_Page(f"/demo/products/{slug}", f"{name} — Demo Shop", "product", slug, price)
                         for slug, name, price in PRODUCTS]
        self.listings = [_Page(f"/demo/listings/{item['sku']}",
                               f"{item['name']} — {setup.seller_name or 'Seller'} — Demo Shop", "listing",
                               item["sku"], round(float(item["price"]) * 100)) for item in DEMO_LISTINGS]
        self.pages = [self.home, self.about, *self.products, *self.listings]
        weights = {"home": 14, "about": 5, "product": 16, "listing": 9}
        for page in self.pages:
            page.url = origin + page.path
            page.next = [p for p in self.pages if p is not page]
            page.cumulative = list(accumulate(weights[p.kind] for p in page.next))
            page.total = page.cumulative[-1]
        self.hour_cum = list(accumulate(HOURLY))
        self._weighted: dict[int, tuple] = {}  # pick()'s tables, by the (module-level, constant) weighted tuple

    # --- small helpers ---

    def token(self) -> str:
        """22 characters of base64url (the widget's ids: v_/s_/e_ + 22), from the seeded generator."""
        at = self._token_at
        if at + 22 > len(self._tokens):
            self._tokens, at = base64.urlsafe_b64encode(self.rng.randbytes(33 * 1024)).decode(), 0
        self._token_at = at + 22
        return self._tokens[at:at + 22]

    def uniform_us(self, low_s: float, high_s: float) -> int:
        return int(self.rng.uniform(low_s, high_s) * SECOND)

    def pick(self, weighted: tuple[tuple[Any, int], ...]) -> Any:
        """One of the values, by weight."""
        table = self._weighted.get(id(weighted))
        if table is None:
            values, weights = zip(*weighted)
            table = self._weighted[id(weighted)] = (values, list(accumulate(weights)))
        values, cumulative = table
        return values[bisect_right(cumulative, self.rng.random() * cumulative[-1])]

    def next_page(self, page: _Page) -> _Page:
        return page.next[bisect_right(page.cumulative, self.rng.random() * page.total)]

    def dwell(self) -> int:
        """Time on a page: 4 s + a log-normal (median ≈ 25 s), at most 15 minutes, by table lookup."""
        x = self.rng.random() * DWELL_STEPS
        i = int(x)
        return DWELL[i] + int((x - i) * SECOND)

    def random_start(self) -> int:
        """A moment in the period, following the daily traffic curve."""
        rng = self.rng
        days = (self.end - self.start) // DAY + 1
        for _ in range(20):
            day = (self.start + SHOP_UTC_OFFSET) // DAY + rng.randrange(days)
            hour = bisect_right(self.hour_cum, rng.random() * self.hour_cum[-1])
            t = day * DAY + hour * HOUR + rng.randrange(HOUR) - SHOP_UTC_OFFSET
            if self.start <= t < self.end:
                return t
        return self.start + rng.randrange(self.end - self.start)

    @staticmethod
    def local(t: int) -> tuple[int, int]:
        """(weekday with Monday 0, hour) in the shop's UTC+1."""
        local = t + SHOP_UTC_OFFSET
        return (local // DAY + 3) % 7, (local % DAY) // HOUR  # 1970-01-01 was a Thursday

    def staffed(self, queue: QueueSetup, t: int) -> bool:
        weekday, hour = self.local(t)
        if queue.channel == "seller":
            return 9 <= hour < 21
        return (weekday < 5 and 8 <= hour < 20) or (weekday == 5 and 9 <= hour < 17)

    # --- rows ---

    def view(self, v: _Visitor, session: _Session, t: int, page: _Page | None, url: str,
             referrer: str | None) -> None:
        """One page view, as event_rows makes it (page None: the landing page Talk sent the caller to)."""
        event_id = "e_" + self.token()
        if page is not None and url is page.url:  # no query: nothing to derive
            self.batch.events.append((self.site_id, event_id, v.id, session.id, "pageview", self.ts_value(t), url,
                                      page.path, page.title, referrer, None, None, None, None, None, None, None,
                                      JSON_NULL, session.ip_hash))
        else:
            a = attribution_of(url)
            utm = a.utm
            title = page.title if page is not None else LANDING_TITLES.get(a.path, "Demo Shop")
            self.batch.events.append((
                self.site_id, event_id, v.id, session.id, "pageview", self.ts_value(t), url, a.path, title, referrer,
                utm["source"], utm["medium"], utm["campaign"], utm["term"], utm["content"], a.click_id_type,
                a.click_id, JSON_NULL, session.ip_hash))
        v.times.append(t)
        if page is not None:
            session.viewed.append(page)

    def conversion(self, v: _Visitor, t: int, cents: int, origin: str) -> None:
        order_id = "A-" + self.token()[:12]
        # conversions.viewed_at (analytics/buyerviews.py): the latest of the visitor's page views generated so far
        # at or before the purchase (a page view always, if not always the latest: a hint, never wrong).
        viewed = max((seen for seen in v.times if seen <= t), default=None)
        self.batch.conversions.append({
            "site_id": self.setup.site_id, "order_id": order_id, "visitor_id": v.id, "value": cents / 100,
            "currency": "EUR", "ts": to_datetime(t), "origin": origin,
            "viewed_at": None if viewed is None else to_datetime(viewed)})
        self.truth.add_conversion(v.index, t, cents, order_id)
        self.counts["conversions"] += 1

    def landing_url(self, queue: QueueSetup, disposition: str | None, call_id: str) -> str | None:
        """The switchboard's _landing_url: the disposition's page, else the queue's, on the caller's origin."""
        if not queue.redirect:
            return None
        url = dict(queue.dispositions).get(disposition or "") or queue.landing_url
        if not url:
            return None
        if is_relative(url):
            url = self.setup.origin + url
        parts = urlsplit(url)
        query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), ("talk_call", call_id)])
        return urlunsplit(parts._replace(query=query))

    def outcome(self, queue: QueueSetup, t: int) -> str:
        r = self.rng.random()
        if not self.staffed(queue, t):
            return "answered" if r < 0.06 else "no-agent"
        if queue.channel == "seller":
            table = (("answered", 0.62), ("cancelled-ringing", 0.72), ("cancelled-queued", 0.75),
                     ("ring-timeout", 0.87), ("declined", 0.95))
        else:
            table = (("answered", 0.72), ("cancelled-queued", 0.80), ("cancelled-ringing", 0.85),
                     ("caller-gone", 0.87), ("ring-timeout", 0.94), ("declined", 0.97))
        for name, upto in table:
            if r < upto:
                return name
        return "no-agent"

    def call(self, v: _Visitor, created: int, page_url: str, page_title: str, page_referrer: str,
             session: _Session | None, queue: QueueSetup, endpoint: EndpointSetup | None = None,
             outcome: str | None = None, talk_s: float | None = None, voicemail: bool | None = None,
             survey: bool | None = None) -> CallFact | None:
        """A call and what follows it (landing page view, survey, voicemail). None if it would not be over by the
        end of the period (generated data has no live calls)."""
        rng = self.rng
        outcome = outcome or self.outcome(queue, created)
        answerer = rng.choice(queue.answerers)
        ringing = answered = agent = None
        if outcome == "answered":
            ringing = created + int(min(rng.expovariate(1 / 8), 120) * SECOND) + self.uniform_us(0.02, 0.2)
            answered = ringing + self.uniform_us(1.5, 15)
            talk = talk_s if talk_s is not None else min(max(rng.lognormvariate(math.log(180), 0.8), 10), 2700)
            ended = answered + int(talk * SECOND)
            r = rng.random()
            if r < 0.93:
                reason = "completed"
            elif r < 0.965:
                reason = "caller-disconnected"
            else:
                reason = "failed" if queue.channel == "seller" else "agent-disconnected"
            agent = answerer
        elif outcome in ("cancelled-queued", "caller-gone"):
            ended = created + self.uniform_us(3, 90)
            reason = "caller-cancelled" if outcome == "cancelled-queued" else "caller-disconnected"
        elif outcome == "cancelled-ringing":
            ringing = created + self.uniform_us(0.05, 20)
            ended = ringing + self.uniform_us(2, 19.5)
            reason, agent = "caller-cancelled", answerer  # the ringing agent stays on the record
        elif outcome == "ring-timeout":  # rang out; nobody else on duty
            ringing = created + self.uniform_us(0.05, 20)
            ended = ringing + RING_TIMEOUT + self.uniform_us(0.001, 0.05)
            reason = "no-agent"
        elif outcome == "declined":
            ringing = created + self.uniform_us(0.05, 20)
            ended = ringing + self.uniform_us(1, 12)
            reason = "agent-declined"
        elif outcome == "no-agent":  # nobody on duty: ends at once
            ended = created + self.uniform_us(0.005, 0.08)
            reason = "no-agent"
        else:
            raise ValueError(f"unknown outcome {outcome!r}")
        if ended + 10 * MINUTE >= self.end:
            return None
        call_id = "c_" + self.token()
        disposition = None
        if answered is not None and queue.dispositions and rng.random() < 0.85:
            disposition = rng.choice(queue.dispositions)[0]
        landing = self.landing_url(queue, disposition, call_id) if answered is not None else None
        fact = CallFact(
            id=call_id, visitor=v.index, visitor_id=v.id, site_id=self.setup.site_id, queue_id=queue.id,
            queue_name=queue.name, channel=queue.channel, created_us=created, ringing_us=ringing,
            answered_us=answered, ended_us=ended, end_reason=reason, agent_id=agent, has_journey=session is not None,
            session_id=session.id if session is not None else None, page_url=page_url, page_title=page_title,
            page_referrer=page_referrer, disposition=disposition, landing_url=landing,
            endpoint_id=endpoint.id if endpoint else None, listing=endpoint.listing if endpoint else None,
        )
        self.batch.calls.append({
            "id": call_id, "site_id": fact.site_id, "queue_id": queue.id, "agent_id": agent, "visitor_id": v.id,
            "state": "ended", "end_reason": reason, "page_url": page_url, "page_title": page_title,
            "page_referrer": page_referrer, "created_at": to_datetime(created), "ringing_at": to_datetime(ringing),
            "answered_at": to_datetime(answered), "ended_at": to_datetime(ended), "session_id": fact.session_id,
            "has_journey": fact.has_journey, "disposition": disposition, "landing_url": landing,
            "channel": queue.channel, "endpoint_id": fact.endpoint_id, "listing": fact.listing,
        })
        self.counts["calls"] += 1
        v.calls.append(fact)
        self.truth.add_call(fact)
        after = ended
        if landing and session is not None:
            after = ended + self.uniform_us(0.3, 2.5)  # the tab goes to the landing page: a page view of it
            self.view(v, session, after, None, landing, page_url)
        if answered is not None:
            if session is not None:
                session.answered_call = True
            v.last_answered_end = ended
            if rng.random() < SURVEY if survey is None else survey:
                self.survey(fact, after + self.uniform_us(6, 120))
        elif reason in ("no-agent", "agent-declined") and queue.voicemail:
            share = VOICEMAIL_SELLER if queue.channel == "seller" else VOICEMAIL_AGENT
            if rng.random() < share if voicemail is None else voicemail:
                after = self.voicemail(fact, v, queue, endpoint, ended)
        if session is not None:
            session.any_call = True
        self.after_call = after  # the caller's last activity: the landing page view or the end of the voicemail
        return fact

    def survey(self, call: CallFact, t: int, comment: str | None = None) -> None:
        rng = self.rng
        call.survey_rating = self.pick(RATINGS)
        call.survey_comment = comment or (rng.choice(COMMENTS) if rng.random() < 0.4 else None)
        self.batch.surveys.append({"call_id": call.id, "queue_id": call.queue_id, "agent_id": call.agent_id,
                                   "rating": call.survey_rating, "comment": call.survey_comment,
                                   "created_at": to_datetime(t)})
        self.counts["surveys"] += 1

    def voicemail(self, call: CallFact, v: _Visitor, queue: QueueSetup, endpoint: EndpointSetup | None,
                  ended: int) -> int:
        rng = self.rng
        duration = round(min(rng.uniform(3, 100), VOICEMAIL_MAX_SECONDS), 2)
        created = ended + self.uniform_us(2, 6) + int(duration * SECOND)
        voicemail_id = "vm_" + self.token()
        seller = endpoint.seller_id if endpoint else None
        handled_at = handled_by = None
        if rng.random() < 0.55:
            handled = created + self.uniform_us(300, 30 * 3600)
            if handled < self.end:
                handled_at, handled_by = to_datetime(handled), seller or rng.choice(queue.answerers)
        self.batch.voicemails.append({
            "id": voicemail_id, "call_id": call.id, "site_id": call.site_id, "queue_id": call.queue_id,
            "recipient_id": seller, "listing": call.listing,
            "buyer_alias": buyer_alias(self.alias_key, v.id, seller) if seller else "Caller",
            "file_name": f"{voicemail_id}.wav", "duration_seconds": duration, "created_at": to_datetime(created),
            "handled_at": handled_at, "handled_by": handled_by})
        call.voicemail_id = voicemail_id
        self.counts["voicemails"] += 1
        return created

    # --- visitors ---

    def new_visitor(self, consent: bool) -> _Visitor:
        """A visitor, finished (finish_visitor) before the next one starts."""
        v = _Visitor(len(self.truth._visitor_ids), "v_" + self.token(), consent)
        v.first_event = len(self.batch.events)
        return v

    def finish_visitor(self, v: _Visitor) -> None:
        index = self.truth.add_visitor(v.id, v.times)
        assert index == v.index
        if any(c.has_journey for c in v.calls):
            self.truth.add_journey(index, [PageFact(t, e[3], e[6], e[7], e[8], e[9]) for t, e in
                                           zip(v.times, self.batch.events[v.first_event:])])
        self.counts["events"] += len(v.times)
        self.counts["visitors"] += 1
        self.counts["visitors_without_consent"] += not v.consent

    def new_session(self) -> _Session:
        self.counts["sessions"] += 1
        return _Session("s_" + self.token(), "%032x" % self.rng.getrandbits(128))

    def entry(self) -> tuple[_Page, str, str | None]:
        """The first page of a session: page, query string and referrer, from a traffic source."""
        rng = self.rng
        r = rng.random()
        product = rng.choice(self.products)
        if r < 0.34:  # direct
            return (self.home if rng.random() < 0.6 else product), "", None
        if r < 0.60:  # search
            page = self.home if rng.random() < 0.3 else product if rng.random() < 0.85 else rng.choice(self.listings)
            return page, "", self.pick(SEARCH_REFERRERS)
        if r < 0.70:  # social
            return (product if rng.random() < 0.7 else rng.choice(self.listings)), "", self.pick(SOCIAL_REFERRERS)
        if r < 0.75:  # referral
            return (rng.choice(self.listings) if rng.random() < 0.5 else product), "", self.pick(REFERRAL_REFERRERS)
        if r < 0.88:  # e-mail campaign
            query = f"?utm_source=newsletter&utm_medium=email&utm_campaign={rng.choice(CAMPAIGNS)}"
            return product, query, None
        click = self.token() + self.token()[:14]
        if rng.random() < 0.7:  # Google Ads
            query = f"?gclid={click}" if rng.random() < 0.3 else \
                f"?utm_source=google&utm_medium=cpc&utm_campaign=brand&gclid={click}"
            return product, query, "https://www.google.com/"
        return (rng.choice(self.listings), f"?utm_source=facebook&utm_medium=paid_social&utm_campaign=retargeting"
                f"&fbclid={click}", "https://m.facebook.com/")

    def agent_or_seller(self, page: _Page) -> tuple[QueueSetup, EndpointSetup | None]:
        endpoint = self.setup.endpoints.get(page.key) if page.kind == "listing" else None
        if endpoint is not None and self.rng.random() < SELLER_FROM_LISTING:
            return endpoint.queue, endpoint
        return self.setup.support, None

    def session(self, v: _Visitor, t: int, call: bool) -> int:
        """A session from t; returns its last activity (or self.end when it ran into the end)."""
        rng = self.rng
        session = self.new_session()
        page, query, referrer = self.entry()
        url = page.url + query if query else page.url
        pages = PAGES_PER_SESSION[int(rng.random() * len(PAGES_PER_SESSION))]
        call_at = rng.randrange(pages) if call else -1
        last = t
        for i in range(pages):
            if t >= self.end:
                return self.end
            self.view(v, session, t, page, url, referrer)
            last = t
            if i == call_at:
                t, url = self.calls_from_page(v, session, t, page, url, referrer)
                last = t
            referrer, page = url, self.next_page(page)
            url = page.url
            if i + 1 < pages:
                t += self.dwell()
        self.maybe_convert(v, session, last)
        return last

    def calls_from_page(self, v: _Visitor, session: _Session, t: int, page: _Page, url: str,
                        referrer: str | None) -> tuple[int, str]:
        """The visitor calls from this page, maybe again after an unanswered call; returns the last activity and
        the URL the tab is on then (the landing page, if the call sent it there)."""
        rng = self.rng
        queue, endpoint = self.agent_or_seller(page)
        created = t + self.uniform_us(5, 90)
        if not self.staffed(queue, created) and rng.random() < CLOSED_NO_CALL:
            return t, url  # the opening hours next to the button put most people off
        for _attempt in range(3):
            fact = self.call(v, created, url, page.title, referrer or "", session, queue, endpoint)
            if fact is None:
                break
            t = self.after_call
            if fact.answered_us is not None:
                return t, fact.landing_url or url
            if rng.random() >= RETRY:
                break
            created = t + self.uniform_us(30, 240)
        return t, url

    def maybe_convert(self, v: _Visitor, session: _Session, last: int) -> None:
        rng = self.rng
        if session.answered_call:
            p = 0.28
        elif session.any_call:
            p = 0.10
        elif v.last_answered_end is not None and last - v.last_answered_end <= self.window:
            p = 0.15
        else:
            p = 0.02
        if rng.random() >= p:
            return
        t = last + self.uniform_us(20, 300)
        if t >= self.end:
            return
        listings = [p for p in session.viewed if p.kind == "listing"]
        if listings and rng.random() < 0.5:
            cents = rng.choice(listings).price
        else:
            seen = [p for p in session.viewed if p.kind == "product"] or self.products
            cents = sum(rng.choice(seen).price for _ in range(rng.choice((1, 1, 1, 2, 3))))
        self.conversion(v, t, cents, "browser" if rng.random() < 0.85 else "server")

    def random_visitor(self) -> None:
        rng = self.rng
        if rng.random() < NO_CONSENT:
            v = self.new_visitor(consent=False)
            if rng.random() < ANONYMOUS_CALLS:
                created = self.random_start()
                if self.staffed(self.setup.support, created) or rng.random() >= CLOSED_NO_CALL:
                    self.anonymous_call(v, created)
            self.finish_visitor(v)
            return
        v = self.new_visitor(consent=True)
        sessions = self.pick(SESSIONS)
        caller = rng.random() < CALLERS
        call_session = rng.randrange(sessions) if caller else -1
        t = self.random_start()
        for s in range(sessions):
            if t >= self.end:
                break
            call = s == call_session or (caller and s > call_session and rng.random() < CALL_AGAIN_LATER)
            t = self.session(v, t, call) + SESSION_GAP + int(rng.expovariate(1 / 3) * DAY)
        self.finish_visitor(v)

    def anonymous_call(self, v: _Visitor, created: int, outcome: str | None = None,
                       convert_after: int | None = None) -> CallFact | None:
        """A call without consent: no journey, no session, a throwaway visitor id; maybe a server-side purchase by
        the call id (the shop's backend knows the order came after the call)."""
        rng = self.rng
        page = rng.choice(self.products + self.listings)
        queue, endpoint = self.agent_or_seller(page)
        referrer = rng.choice(("", self.home.url, "https://www.google.com/"))
        fact = self.call(v, created, page.url, page.title, referrer, None, queue, endpoint, outcome=outcome)
        if fact is None:
            return None
        if convert_after is None and fact.answered_us is not None and rng.random() < 0.2:
            convert_after = self.uniform_us(600, 9 * 86400)
        if convert_after is not None and fact.ended_us + convert_after < self.end:
            self.conversion(v, fact.ended_us + convert_after, page.price or PRODUCTS[0][2], "server")
        return fact

    # --- planted edge cases ---

    def scenarios(self) -> int:
        """The edge cases the reports' tests need, as visitors; returns how many visitors they took."""
        berlin = ZoneInfo(BERLIN)
        day0 = to_datetime(self.start).astimezone(berlin).date() + timedelta(days=2)

        def at_berlin(days: int, hour: int, minute: int, second: int = 0) -> int:  # wall-clock time, DST or not
            return to_us(datetime.combine(day0 + timedelta(days=days), dt_time(hour, minute, second), tzinfo=berlin))

        def at_utc(days: int, hour: int, minute: int, second: float = 0) -> int:
            midnight = datetime.combine(day0 + timedelta(days=days), datetime.min.time(), tzinfo=timezone.utc)
            return to_us(midnight) + ((hour * 60 + minute) * 60) * SECOND + int(second * SECOND)

        found: dict[str, Any] = {}
        used = 0
        support = self.setup.support
        product = self.products[1]
        listing = self.listings[0]
        endpoint = self.setup.endpoints.get(listing.key)

        def fits(*instants: int) -> bool:
            return all(self.start <= t and t + DAY < self.end for t in instants)

        def browse(v: _Visitor, t: int, pages: list[_Page], referrer: str | None = None) -> tuple[_Session, int]:
            session = self.new_session()
            for page in pages:
                self.view(v, session, t, page, page.url, referrer)
                referrer = page.url
                t += 40 * SECOND
            return session, t - 40 * SECOND

        def answered_call(v: _Visitor, start: int, talk_s: float, survey: bool = False) -> CallFact:
            session, last = browse(v, start, [self.home, product], "https://www.google.com/")
            call = self.call(v, last + 15 * SECOND, product.url, product.title, self.home.url,
                             session, support, outcome="answered", talk_s=talk_s, survey=False)
            assert call is not None
            if survey:  # with markup in the comment, for the reports' escaping
                self.survey(call, self.after_call + 30 * SECOND, comment=MARKUP_COMMENT)
            return call

        # A call from 23:58 to about 00:04 in Berlin, and one from 23:59:30 to about 00:03 UTC.
        for name, start in (("midnight_berlin", at_berlin(0, 23, 57, 5)), ("midnight_utc", at_utc(1, 23, 58, 35))):
            if fits(start):
                v = self.new_visitor(consent=True)
                call = answered_call(v, start - 40 * SECOND, talk_s=330, survey=True)
                found[name] = call.id
                self.finish_visitor(v)
                used += 1

        # Conversions at exactly the window, the window - 1 s (inside) and the window + 1 s (outside) after the end.
        for name, offset, hour in (("window_exact", 0, 10), ("window_minus_1s", -SECOND, 11),
                                   ("window_plus_1s", SECOND, 12)):
            if not fits(at_utc(1, hour, 0), at_utc(1, hour, 30) + self.window + HOUR):
                continue
            v = self.new_visitor(consent=True)
            call = answered_call(v, at_utc(1, hour, 0), talk_s=240)
            when = call.ended_us + self.window + offset
            session, _ = browse(v, when - 5 * MINUTE, [self.home, product])
            self.conversion(v, when, product.price, "browser")
            found[name] = {"call_id": call.id, "order_id": self.truth._conv_order[-1], "visitor_id": v.id}
            self.finish_visitor(v)
            used += 1

        # Three calls of one visitor: abandoned, answered after a retry, a seller call missed with a voicemail; then
        # one purchase within the window of all three.
        if endpoint is not None and fits(at_utc(3, 10, 0), at_utc(5, 17, 0)):
            v = self.new_visitor(consent=True)
            session, last = browse(v, at_utc(3, 10, 0), [self.home, product], "https://www.bing.com/")
            first = self.call(v, last + 20 * SECOND, product.url, product.title, self.home.url,
                              session, support, outcome="cancelled-queued")
            second = self.call(v, first.ended_us + 2 * MINUTE, product.url, product.title,
                               self.home.url, session, support, outcome="answered", talk_s=600)
            session, last = browse(v, at_utc(5, 16, 0), [self.home, listing])
            third = self.call(v, last + 30 * SECOND, listing.url, listing.title, self.home.url,
                              session, endpoint.queue, endpoint, outcome="no-agent", voicemail=True)
            session, last = browse(v, at_utc(5, 16, 40), [listing])
            self.conversion(v, last + MINUTE, listing.price, "browser")
            found["several_calls"] = {"visitor_id": v.id, "call_ids": [first.id, second.id, third.id],
                                      "order_id": self.truth._conv_order[-1]}
            self.finish_visitor(v)
            used += 1

        # Calls without a journey (no consent): one answered and bought (server-side, by call id), one missed.
        no_journey = []
        for outcome, start, convert in (("answered", at_utc(2, 11, 0), 2 * DAY), ("no-agent", at_utc(2, 20, 0), None)):
            if fits(start):
                v = self.new_visitor(consent=False)
                call = self.anonymous_call(v, start, outcome=outcome, convert_after=convert)
                if call is not None:
                    no_journey.append(call.id)
                self.finish_visitor(v)
                used += 1
        if no_journey:
            found["no_journey"] = no_journey
        self.truth.scenarios.update(found)
        return used

    # --- batches ---

    def next_batch(self, visitors: int, batch_events: int) -> _Batch:
        self.batch = _Batch()
        if self.visitors_done == 0 and visitors >= SCENARIO_MIN_VISITORS:
            self.visitors_done += self.scenarios()
        while self.visitors_done < visitors and len(self.batch.events) < batch_events:
            self.random_visitor()
            self.visitors_done += 1
        return self.batch


# ----- writing -----

class _Table:
    """A table's columns and SQLAlchemy's bind processors for them, so stored values are what the ORM writes."""

    def __init__(self, model, dialect, skip_id: bool) -> None:
        self.name = model.__tablename__
        columns = [c for c in model.__table__.columns if not (skip_id and c.name == "id")]
        self.columns = [c.name for c in columns]
        # A TypeDecorator's processor includes its process_bind_param (UTCDateTime: aware UTC only).
        self.processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]

    def values(self, row: dict[str, Any]) -> tuple:
        return tuple(process(row.get(name)) if process is not None else row.get(name)
                     for name, process in zip(self.columns, self.processors))


def _tables(dialect) -> dict[str, _Table]:
    return {"calls": _Table(CallRecord, dialect, False), "survey_answers": _Table(SurveyAnswer, dialect, False),
            "voicemails": _Table(Voicemail, dialect, False), "conversions": _Table(Conversion, dialect, True)}


_NAIVE_EPOCH = datetime(1970, 1, 1)
CENT = Decimal("0.01")


class SqliteTs:
    """SQLAlchemy's SQLite DATETIME text for a UTC instant (what UTCDateTime stores: 'YYYY-MM-DD HH:MM:SS.ffffff'),
    without its per-row cost: the text up to the minute is cached."""

    def __init__(self) -> None:
        self._minutes: dict[int, str] = {}

    def __call__(self, us: int) -> str:
        seconds, fraction = divmod(us, SECOND)
        minute, second = divmod(seconds, 60)
        prefix = self._minutes.get(minute)
        if prefix is None:
            if len(self._minutes) > 200_000:
                self._minutes.clear()
            prefix = self._minutes[minute] = (_NAIVE_EPOCH + timedelta(minutes=minute)).strftime("%Y-%m-%d %H:%M:")
        return "%s%02d.%06d" % (prefix, second, fraction)


def postgres_ts(us: int) -> datetime:
    return to_datetime(us)


class _SqliteSink:
    """The whole load is one transaction on the sink's own sqlite3 connection and thread (all or nothing; readers
    keep working under WAL, writers wait). When the load is at least as big as what `events` holds, its secondary
    indexes are dropped first and rebuilt at the end, inside the same transaction: building an index once is several
    times cheaper than keeping it up to date row by row, and a failed load restores them with everything else."""

    def __init__(self, path: str, expected_events: int) -> None:
        self.ts_value = SqliteTs()
        self._path = path
        self._expected = expected_events
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generator-sqlite")
        self._connection: sqlite3.Connection | None = None
        self._indexes: list[str] = []
        self._tables = _tables(sqlite.dialect())
        marks = ", ".join("?" * len(EVENT_COLUMNS))
        self._events_sql = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({marks})"

    # Generating the next batch while sqlite3 writes this one gains nothing: both need the GIL for most of their
    # work (sqlite3 binds every parameter under it) and convoy on it (measured: 10-30% slower than one after another).
    overlap = False

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def begin(self) -> None:
        await self._run(self._begin)

    def _begin(self) -> None:
        connection = self._connection = sqlite3.connect(self._path, isolation_level=None)
        talk_db.sqlite_pragmas(connection, None)
        connection.execute("PRAGMA cache_size=-262144")  # 256 MiB: the indexes being written stay in memory
        connection.execute("BEGIN IMMEDIATE")
        existing = connection.execute("SELECT count(*) FROM events").fetchone()[0]
        if self._expected >= existing:
            rows = connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'"
                                      " AND sql IS NOT NULL ORDER BY name").fetchall()
            for name, sql in rows:
                if "UNIQUE" not in sql.upper():  # unique ones stay: they refuse duplicates as rows come in
                    connection.execute(f'DROP INDEX "{name}"')
                    self._indexes.append(sql)

    async def write(self, batch: _Batch) -> None:
        await self._run(self._write, batch)

    def _write(self, batch: _Batch) -> None:
        connection = self._connection
        connection.executemany(self._events_sql, batch.events)
        for name, rows in (("calls", batch.calls), ("survey_answers", batch.surveys),
                           ("voicemails", batch.voicemails), ("conversions", batch.conversions)):
            if rows:
                table = self._tables[name]
                sql = f"INSERT INTO {name} ({', '.join(table.columns)}) VALUES ({', '.join('?' * len(table.columns))})"
                connection.executemany(sql, [table.values(row) for row in rows])

    async def commit(self) -> None:
        await self._run(self._commit)

    async def analyze(self, tables: tuple[str, ...]) -> None:
        """(SQLite plans without statistics, as the server's database always has.)"""

    def _commit(self) -> None:
        for sql in self._indexes:
            self._connection.execute(sql)
        for sql in visitordays.rebuild_statements("sqlite"):  # the rollup of what was loaded
            self._connection.execute(sql)
        self._connection.execute("COMMIT")

    async def close(self) -> None:
        def close_connection() -> None:
            if self._connection is not None:
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
                self._connection.close()
                self._connection = None

        await self._run(close_connection)
        self._thread.shutdown(wait=True)


LOADED_TABLES = ("events", "calls", "survey_answers", "voicemails", "conversions", "visitor_days",
                 "visitor_day_counts", "call_facts_stale")
FACTS_TABLES = ("call_facts", "call_fact_pages", "call_fact_conversions", "call_facts_stale")


class _PostgresSink:
    """COPY (asyncpg's copy_records_to_table) through the connection under SQLAlchemy's pool, the whole load in one
    transaction (all or nothing; MVCC: nobody waits)."""

    ts_value = staticmethod(postgres_ts)
    overlap = True  # the server indexes one batch while the next one is generated

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection = None
        self._raw = None
        self._transaction = None
        self._tables = _tables(postgresql.asyncpg.dialect())

    async def begin(self) -> None:
        self._connection = await self._engine.connect()
        self._raw = (await self._connection.get_raw_connection()).driver_connection
        self._transaction = self._raw.transaction()
        await self._transaction.start()

    async def write(self, batch: _Batch) -> None:
        connection = self._raw
        if batch.events:
            await connection.copy_records_to_table("events", records=batch.events, columns=list(EVENT_COLUMNS))
        for name, rows in (("calls", batch.calls), ("survey_answers", batch.surveys),
                           ("voicemails", batch.voicemails), ("conversions", batch.conversions)):
            if rows:
                table = self._tables[name]
                records = [table.values(row) for row in rows]
                if name == "conversions":  # NUMERIC: COPY wants a Decimal
                    at = table.columns.index("value")
                    records = [(*r[:at], Decimal(r[at]).quantize(CENT), *r[at + 1:]) for r in records]
                await connection.copy_records_to_table(name, records=records, columns=table.columns)

    async def commit(self) -> None:
        for sql in visitordays.rebuild_statements("postgresql"):  # the rollup of what was loaded
            await self._raw.execute(sql)
        await self._transaction.commit()
        self._transaction = None

    async def analyze(self, tables: tuple[str, ...]) -> None:
        """After the load, and after the call facts computed for it. Fresh statistics for what was just loaded:
        until autovacuum gets to it, the planner would guess from empty tables (the reports' plans were seconds
        slower). VACUUM also sets the visibility map, without which no index-only scan is possible (8 s for 10M page
        views)."""
        for table in tables:
            await self._raw.execute(f"VACUUM ANALYZE {table}")

    async def close(self) -> None:
        if self._transaction is not None:
            await self._transaction.rollback()
        if self._connection is not None:
            await self._connection.close()


def _sink(engine: AsyncEngine, expected_events: int):
    if engine.dialect.name == "sqlite":
        if engine.url.database in (None, "", ":memory:"):
            raise GeneratorError("generating needs an SQLite file, not an in-memory database")
        return _SqliteSink(engine.url.database, expected_events)
    if engine.dialect.name == "postgresql":
        return _PostgresSink(engine)
    raise GeneratorError(f"no bulk writer for {engine.dialect.name}")


# ----- the entry point -----

async def generate(engine: AsyncEngine, visitors: int, *, end: datetime, seed: int = DEFAULT_SEED,
                   days: float = DEFAULT_DAYS, attribution_days: float = 7.0, site_key: str = DEMO_SITE_KEY,
                   alias_key: bytes | None = None, progress: Callable[[int, int], None] | None = None,
                   batch_events: int = BATCH_EVENTS) -> Truth:
    """Write N synthetic visitors' data for the `days` before `end` (aware; exclusive) and return its truth.

    `attribution_days`: the window the truth attributes with (TALK_ATTRIBUTION_DAYS). `alias_key`: the server's
    buyer-alias key (talk.secret.subkey(secret, "buyer-alias")) so voicemails of seller calls carry the aliases the
    product would show; default a key derived from the seed. `progress(done, total)` is called after each batch."""
    if visitors < 0:
        raise ValueError("visitors: not negative")
    if days <= 0:
        raise ValueError("days: more than 0")
    if end.tzinfo is None:
        raise ValueError("end: an aware datetime")
    end_us = to_us(end)
    start_us = end_us - int(days * DAY)
    window = timedelta(days=attribution_days)
    async with AsyncSession(engine) as db:
        setup = await load_setup(db, site_key, end)
    truth = Truth(setup.site_id, setup.site_key, window, to_datetime(start_us), to_datetime(end_us))
    alias_key = alias_key or f"talk-generator-{seed}".encode()
    sink = _sink(engine, EVENTS_PER_VISITOR * visitors)
    generator = _Generator(setup, seed, start_us, end_us, window // MICROSECOND, alias_key, sink.ts_value, truth)
    started = clock.perf_counter()
    writing: asyncio.Task | None = None  # the batch being written
    written = 0  # visitors written once it is

    async def wait_for_write() -> None:
        nonlocal writing
        if writing is not None:
            await writing
            writing = None
            if progress and written < visitors:
                progress(written, visitors)

    try:
        await sink.begin()
        while True:
            batch = await asyncio.to_thread(generator.next_batch, visitors, batch_events)
            await wait_for_write()
            writing, written = asyncio.create_task(sink.write(batch)), generator.visitors_done
            if not sink.overlap:
                await wait_for_write()
            if generator.visitors_done >= visitors:
                break
        await wait_for_write()
        await sink.commit()  # (and SQLite's rebuilt indexes)
        await sink.analyze(LOADED_TABLES)  # (without statistics the facts' first batch ran for over 8 minutes)
        # The triggers marked every call loaded stale: compute their facts now, so the reports read them.
        await callfacts.catch_up(async_sessionmaker(engine, expire_on_commit=False), window)
        await sink.analyze(FACTS_TABLES)
        if progress:
            progress(visitors, visitors)
    except (sqlite3.IntegrityError, _asyncpg_unique_violation()) as exc:
        raise GeneratorError(f"could not write the generated rows ({exc}); was seed {seed} already generated into "
                             "this database? Use another --seed") from exc
    finally:
        if writing is not None and not writing.done():
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
        await sink.close()
    truth.counts.update(generator.counts)
    truth.seconds = clock.perf_counter() - started
    return truth


def _asyncpg_unique_violation() -> type[BaseException]:
    try:
        import asyncpg
    except ImportError:  # PostgreSQL support not installed
        return sqlite3.IntegrityError
    return asyncpg.UniqueViolationError


def parse_end(value: str) -> datetime:
    """`--end`: an ISO date (the period ends with that day, UTC) or datetime (no zone: UTC)."""
    try:
        if len(value.strip()) == 10:
            day = datetime.fromisoformat(value.strip()).date()
            return datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"not an ISO date or datetime: {value[:40]!r}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def report(truth: Truth, seed: int) -> str:
    """One line about what was generated, for the CLI."""
    c = truth.counts
    rate = c["events"] / truth.seconds if truth.seconds else 0
    return (f"generated {c['visitors']:,} visitors from {truth.start:%Y-%m-%d %H:%M} to {truth.end:%Y-%m-%d %H:%M} UTC "
            f"(seed {seed}): {c['events']:,} page views in {c['sessions']:,} sessions, {c['calls']:,} calls, "
            f"{c['surveys']:,} survey answers, {c['voicemails']:,} voicemails, {c['conversions']:,} purchases "
            f"in {truth.seconds:.1f} s ({rate:,.0f} page views/s)")


class StderrProgress:
    """A progress line on stderr every 5% (tqdm and rich are not dependencies of Talk)."""

    def __init__(self, label: str = "generating", stream=None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.shown = -1
        self.started = clock.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        percent = 100 if total == 0 else done * 100 // total
        step = percent // 5 * 5
        if step > self.shown:
            self.shown = step
            elapsed = clock.perf_counter() - self.started
            print(f"{self.label}: {step:3d}% ({done:,} of {total:,} visitors, {elapsed:.1f} s)", file=self.stream,
                  flush=True)

