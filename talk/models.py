"""Database schema (SQLAlchemy 2 declarative). Alembic migrations in talk/migrations mirror it."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

from sqlalchemy import (
    JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, Numeric, String, Text, TypeDecorator,
    UniqueConstraint, text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend: SQLite drops the zone, so it is put back on read."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; Talk stores aware UTC datetimes only")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The name buyers see for a seller (None: the account's name); never the e-mail.
    public_name: Mapped[str | None] = mapped_column(String(120))


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    secret_key: Mapped[str] = mapped_column(String(128))
    allowed_origins: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


QUEUE_TOKEN_PREFIX = "q_"


def new_call_token() -> str:
    """The secret part of a queue's standalone call page (/c/<token>); unguessable, so pages can't be enumerated."""
    return QUEUE_TOKEN_PREFIX + secrets.token_urlsafe(24)


class Queue(Base):
    """A queue of agents (kind 'agents'), or a seller's private queue on one site (kind 'seller', name
    'seller-<account id>', the seller its only member): seller calls ring through the same machinery."""

    __tablename__ = "queues"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Post-call: where the caller's tab goes when the call ends (None: no redirect, survey in place).
    landing_url: Mapped[str | None] = mapped_column(Text)
    redirect_enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    survey_rating_question: Mapped[str | None] = mapped_column(String(300))
    survey_comment_question: Mapped[str | None] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(10), default="agents", server_default="agents")
    seller_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    call_token: Mapped[str] = mapped_column(String(48), unique=True, default=new_call_token)
    voicemail_enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")


class Disposition(Base):
    """An outcome an agent can pick for a call of the queue; one with a landing URL overrides the queue's."""

    __tablename__ = "dispositions"
    __table_args__ = (UniqueConstraint("queue_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    landing_url: Mapped[str | None] = mapped_column(Text)
    position: Mapped[int] = mapped_column(Integer, default=0)


class QueueMember(Base):
    """Which agents take calls from which queue."""

    __tablename__ = "queue_members"

    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)


class CallRecord(Base):
    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id"), index=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    visitor_id: Mapped[str] = mapped_column(String(40), index=True)
    state: Mapped[str] = mapped_column(String(16))
    end_reason: Mapped[str | None] = mapped_column(String(32))
    page_url: Mapped[str | None] = mapped_column(Text)
    page_title: Mapped[str | None] = mapped_column(String(300))
    page_referrer: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ringing_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    session_id: Mapped[str | None] = mapped_column(String(48), index=True)
    has_journey: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    disposition: Mapped[str | None] = mapped_column(String(120))
    landing_url: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(String(10), default="agent", server_default="agent")  # or "seller"
    endpoint_id: Mapped[int | None] = mapped_column(ForeignKey("seller_endpoints.id", ondelete="SET NULL"))
    listing: Mapped[str | None] = mapped_column(String(120))


class PageEvent(Base):
    """A page view from the widget. Never holds a raw IP address (ip_hash: salted, salt rotates daily)."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("site_id", "event_id"),
        Index("ix_events_visitor_ts", "visitor_id", "ts"),
        Index("ix_events_session_ts", "session_id", "ts"),
        Index("ix_events_site_ts", "site_id", "ts"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(48))
    visitor_id: Mapped[str] = mapped_column(String(48))
    session_id: Mapped[str] = mapped_column(String(48))
    type: Mapped[str] = mapped_column(String(20))
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    url: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(String(300))
    referrer: Mapped[str | None] = mapped_column(Text)
    utm_source: Mapped[str | None] = mapped_column(String(200))
    utm_medium: Mapped[str | None] = mapped_column(String(200))
    utm_campaign: Mapped[str | None] = mapped_column(String(200))
    utm_term: Mapped[str | None] = mapped_column(String(200))
    utm_content: Mapped[str | None] = mapped_column(String(200))
    click_id_type: Mapped[str | None] = mapped_column(String(16))
    click_id: Mapped[str | None] = mapped_column(String(200))
    props: Mapped[dict | None] = mapped_column(JSON)
    ip_hash: Mapped[str | None] = mapped_column(String(32))


class VisitorDay(Base):
    """One row per visitor, site and UTC day with a page view: the first and last page view of that day, and the
    visitor's previous and next day with a page view (a per-visitor linked list kept by analytics/visitordays.py, so
    distinct visitors over any range are counted without reading the page views)."""

    __tablename__ = "visitor_days"
    __table_args__ = (
        Index("ix_visitor_days_day_site", "day", "site_id"),
        # Rows not yet linked (prev_day NULL): written with their page views, linked in the same transaction.
        Index("ix_visitor_days_unlinked", "site_id", "visitor_id", sqlite_where=text("prev_day IS NULL"),
              postgresql_where=text("prev_day IS NULL")),
    )

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True)
    visitor_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    day: Mapped[int] = mapped_column(Integer, primary_key=True)  # days since 1970-01-01, UTC
    first_ts: Mapped[datetime] = mapped_column(UTCDateTime)
    last_ts: Mapped[datetime] = mapped_column(UTCDateTime)
    prev_day: Mapped[int | None] = mapped_column(Integer)  # -1: none; NULL: not linked yet
    next_day: Mapped[int | None] = mapped_column(Integer)  # NULL: none


class VisitorDayCount(Base):
    """How many visitor_days rows of a site have this (day, prev_day): the distinct visitors of days a..b are the
    rows with a <= day <= b and prev_day < a (each visitor counted on their first day in the range)."""

    __tablename__ = "visitor_day_counts"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    prev_day: Mapped[int] = mapped_column(Integer, primary_key=True)
    visitors: Mapped[int] = mapped_column(Integer)


class Conversion(Base):
    __tablename__ = "conversions"
    __table_args__ = (UniqueConstraint("site_id", "order_id"), Index("ix_conversions_visitor_ts", "visitor_id", "ts"),
                      Index("ix_conversions_ts", "ts"),
                      # The conversion report's buyers, grouped as the index is ordered, from the index alone
                      # (analytics/reports/conversion.py).
                      Index("ix_conversions_buyers", "site_id", "visitor_id", "ts", "viewed_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    order_id: Mapped[str] = mapped_column(String(100))
    visitor_id: Mapped[str] = mapped_column(String(48))
    value: Mapped[float] = mapped_column(Numeric(14, 2, asdecimal=False))
    currency: Mapped[str] = mapped_column(String(3))
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    origin: Mapped[str] = mapped_column(String(10))  # "browser" or "server"
    # A page view of the buyer on the site (the latest at or before `ts` when recorded), or NULL: a hint that lets
    # the conversion report skip a lookup per buyer, cleared by triggers if that page view is deleted
    # (analytics/buyerviews.py).
    viewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SurveyAnswer(Base):
    """One answer per call, kept with the call's agent and queue."""

    __tablename__ = "survey_answers"

    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id"), index=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    rating: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiToken(Base):
    """Bearer tokens for the call and reports APIs; only a hash of the token is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SellerEndpoint(Base):
    """A masked endpoint: an opaque token a site puts on a call button (or a call link / QR code) that reaches a
    seller without revealing who they are; optionally tied to a listing, revocable, optionally expiring."""

    __tablename__ = "seller_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(String(48), unique=True)
    seller_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id", ondelete="CASCADE"))
    listing: Mapped[str | None] = mapped_column(String(120))
    label: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EndpointRefusal(Base):
    """A buyer tried a revoked or expired masked endpoint (from a call page or a call button)."""

    __tablename__ = "endpoint_refusals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("seller_endpoints.id", ondelete="CASCADE"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    visitor_id: Mapped[str | None] = mapped_column(String(48), index=True)
    reason: Mapped[str] = mapped_column(String(10))  # "revoked" or "expired"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Voicemail(Base):
    """A message a caller left when nobody answered: a standard audio file under <data_dir>/voicemail/, for the
    seller (recipient) or, with no recipient, for the members of the queue."""

    __tablename__ = "voicemails"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id", ondelete="CASCADE"), index=True)
    recipient_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    listing: Mapped[str | None] = mapped_column(String(120))
    buyer_alias: Mapped[str] = mapped_column(String(40))
    file_name: Mapped[str] = mapped_column(String(100))
    duration_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    handled_by: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))


class Webhook(Base):
    """A URL of a site that receives events (talk.webhooks) as signed JSON POSTs. The secret signs every delivery;
    it is printed once, when the webhook is registered."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(80))
    events: Mapped[list[str]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """One event for one webhook: stored before it is sent (so it survives a restart), retried with backoff, and
    the outcome of the last attempt kept as the delivery log. `event_id` is the receiver's idempotency key."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(48))
    event_type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10))  # "pending", "delivered" or "failed"
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(300))
    # Whose event it is, when it is about a visitor: forgetting the visitor deletes their deliveries too.
    visitor_id: Mapped[str | None] = mapped_column(String(48), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# What a report reads of the unsummed calls of the days whose sums serve (analytics/factdays.py).
UNSUMMED_COLUMNS = ("call_id", "site_id", "queue_id", "channel", "visitor_id", "repeat_caller", "seen_before_us",
                    "seen_after_us", "bought_before_us", "bought_after_us")
# What a report counting callers by their last call in range reads of the calls it takes from a summed day
# (analytics/factdays.py): those followed by a call after the range, and last calls undecided by their day.
FOLLOWED_COLUMNS = ("call_id", "site_id", "visitor_id", "multisite", "seen_before_us", "seen_after_us",
                    "bought_before_us", "bought_after_us")
# Partial indexes' conditions (spelled alike where read: both planners match them by their text): the calls
# followed by another of their visitor, the last calls the sums cannot tell seen or bought, the multi-site visitors'.
FOLLOWED = "next_us IS NOT NULL"
UNDECIDED_LAST = "undecided = 1 AND next_us IS NULL"
MULTISITE = "multisite = 1"


class CallFacts(Base):
    """What the reports need of one call, computed once from the call, its survey answer, voicemails, page views
    and attributed conversions (analytics/callfacts.py), so a report over a long range reads one narrow row per call
    instead of probing five tables per call. Valid only while the call is not in call_facts_stale, and only for the
    attribution window in call_facts_meta; triggers mark a call stale whenever anything it is computed from changes.
    """

    __tablename__ = "call_facts"
    # Keyed by time: a report's range is one contiguous stretch of the table (SQLite: WITHOUT ROWID, so the rows
    # themselves are stored in that order; 10x faster than an index over rows stored in any order).
    __table_args__ = (Index("ix_call_facts_call_id", "call_id", unique=True),
                      Index("ix_call_facts_visitor", "visitor_id", "site_id", "created_us"),
                      # The calls a report must read on days it takes the sums of (analytics/factdays.py), with
                      # what it reads of them on PostgreSQL (an index-only scan: 3x faster than the heap's rows).
                      Index("ix_call_facts_unsummed", "created_us", postgresql_where=text("unsummed = 1"),
                            sqlite_where=text("unsummed = 1"), postgresql_include=list(UNSUMMED_COLUMNS)),
                      # The same for a report counting callers by their last call in range: the calls followed by
                      # another (by when that one was), and the last calls whose day does not tell seen or bought.
                      Index("ix_call_facts_followed", "next_us", "created_us", postgresql_where=text(FOLLOWED),
                            sqlite_where=text(FOLLOWED), postgresql_include=list(FOLLOWED_COLUMNS)),
                      Index("ix_call_facts_undecided", "created_us", postgresql_where=text(UNDECIDED_LAST),
                            sqlite_where=text(UNDECIDED_LAST), postgresql_include=list(FOLLOWED_COLUMNS)),
                      Index("ix_call_facts_multisite", "created_us", postgresql_where=text(MULTISITE),
                            sqlite_where=text(MULTISITE), postgresql_include=list(FOLLOWED_COLUMNS)),
                      {"sqlite_with_rowid": False})

    created_us: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch microseconds of created_at
    call_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    site_id: Mapped[int] = mapped_column(Integer)
    queue_id: Mapped[int] = mapped_column(Integer)
    person_id: Mapped[int | None] = mapped_column(Integer)
    visitor_id: Mapped[str] = mapped_column(String(48))
    channel: Mapped[str] = mapped_column(String(10))
    has_journey: Mapped[bool] = mapped_column(Boolean)
    session_id: Mapped[str | None] = mapped_column(String(48))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(32))
    outcome: Mapped[int] = mapped_column(Integer)  # analytics.reports.base.OUTCOME_*
    wait_us: Mapped[int | None] = mapped_column(BigInteger)  # answered calls
    talk_us: Mapped[int | None] = mapped_column(BigInteger)  # answered calls that ended
    rating: Mapped[int | None] = mapped_column(Integer)
    commented: Mapped[int] = mapped_column(Integer)  # 1: the survey answer has a comment
    voicemails: Mapped[int] = mapped_column(Integer)
    # 1 when the visitor may have other calls (set when another call's facts are stored, never cleared): rows with
    # 0 are counted as distinct callers without a DISTINCT.
    repeat_caller: Mapped[int] = mapped_column(Integer)
    # created_us of the visitor's next stored call on the site (in (created_us, call_id) order), NULL for their
    # last: the calls in [lo, hi) with none before hi are one per distinct caller, counted without a DISTINCT.
    next_us: Mapped[int | None] = mapped_column(BigInteger)
    # 1 when the visitor id has stored calls on more than one site: such a visitor is one caller but a (site,
    # visitor) pair per site, so their calls are counted DISTINCT, never by their last call.
    multisite: Mapped[int] = mapped_column(Integer, server_default="0")
    # 1 when the day sums cannot count the call for every range holding its day (analytics/factdays.py's
    # `unsummed`): a repeat caller, or a call whose visitor's nearest page views or conversions lie on other days.
    unsummed: Mapped[int] = mapped_column(Integer, server_default="1")
    # 1 when whether the visitor was seen (and bought) in a range depends on more than the range holding the call's
    # day (analytics/factdays.py's `undecided`): such a last call is read on the days whose sums serve.
    undecided: Mapped[int] = mapped_column(Integer, server_default="1")
    converted: Mapped[int] = mapped_column(Integer)  # 1: a conversion is attributed to the call
    # The visitor's page views on the site nearest the call: the latest at or before created_at and the first after
    # it (epoch microseconds). The visitor viewed a page in [lo, hi) containing created_at exactly when the first is
    # >= lo or the second < hi: how the conversion report finds callers seen in its range without probing.
    seen_before_us: Mapped[int | None] = mapped_column(BigInteger)
    seen_after_us: Mapped[int | None] = mapped_column(BigInteger)
    # The same for the visitor's conversions on the site (their `ts`): the visitor bought in [lo, hi) exactly when
    # the first is >= lo or the second < hi (the non-callers' figures subtract callers who bought).
    bought_before_us: Mapped[int | None] = mapped_column(BigInteger)
    bought_after_us: Mapped[int | None] = mapped_column(BigInteger)
    landing_page: Mapped[str | None] = mapped_column(Text)  # landing URL without its talk_call parameter
    landed: Mapped[int] = mapped_column(Integer)  # 1: the landing page view was recorded (with consent)
    source_kind: Mapped[str] = mapped_column(String(20))  # analytics.sources kind, no_consent or unknown
    source: Mapped[str | None] = mapped_column(String(200))
    utm_source: Mapped[str | None] = mapped_column(String(200))
    utm_medium: Mapped[str | None] = mapped_column(String(200))
    utm_campaign: Mapped[str | None] = mapped_column(String(200))


# The condition of the page rows counted DISTINCT (analytics/callpages.py), spelled the same in the partial index and
# in the query that reads by it (both engines match the text of the terms).
SHARED_PAGE = "event_shared = 1 OR visitor_shared = 1"


class CallFactPage(Base):
    """A page view before (`after` 0: of the call's session, up to the call) or after (1: the visitor's, within the
    attribution window, not the call's own landing page view) a call whose facts are computed
    (analytics/callpages.py)."""

    __tablename__ = "call_fact_pages"
    # ix_call_fact_pages_shared: the rows a pages report must read on days it takes the sums of
    # (analytics/factdays.py): a fraction of them, where the primary key would have it read every row.
    __table_args__ = (Index("ix_call_fact_pages_event_id", "event_id"),
                      Index("ix_call_fact_pages_shared", "after", "created_us", postgresql_where=text(SHARED_PAGE),
                            sqlite_where=text(SHARED_PAGE)),
                      {"sqlite_with_rowid": False})

    after: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_us: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # the call's
    call_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    # What spares the pages reports their DISTINCT counts (analytics/callpages.py).
    first_in_call: Mapped[int] = mapped_column(Integer)
    event_shared: Mapped[int] = mapped_column(Integer)
    visitor_shared: Mapped[int] = mapped_column(Integer)
    # The call's facts the pages reports filter and count by, copied from call_facts (refreshed with them), so a
    # report reads these rows alone: looking up each row's call took a third of the report's time. (NULL only in
    # rows that predate them; the migration that added them filled them.)
    site_id: Mapped[int | None] = mapped_column(Integer)
    queue_id: Mapped[int | None] = mapped_column(Integer)
    channel: Mapped[str | None] = mapped_column(String(10))
    visitor_id: Mapped[str | None] = mapped_column(String(48))
    converted: Mapped[int | None] = mapped_column(Integer)


class CallFactConversion(Base):
    """A conversion attributed to a call whose facts are computed: cents and the delay from the call's end."""

    __tablename__ = "call_fact_conversions"
    # By conversion: which stored calls a conversion of the calls computed from raw rows is attributed to too.
    # ix_call_fact_conversions_repeat: the pairs read on the days whose sums serve (analytics/factdays.py).
    __table_args__ = (Index("ix_call_fact_conversions_conversion_id", "conversion_id"),
                      Index("ix_call_fact_conversions_repeat", "created_us", postgresql_where=text("repeat_caller = 1"),
                            sqlite_where=text("repeat_caller = 1")),
                      {"sqlite_with_rowid": False})

    created_us: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # the call's
    call_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    conversion_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cents: Mapped[int] = mapped_column(BigInteger)
    delay_us: Mapped[int] = mapped_column(BigInteger)
    # The call's columns the conversion figures filter and count by, as in call_fact_pages: the figures without a
    # group key read these rows alone (joining them to their calls read every call of the range).
    site_id: Mapped[int | None] = mapped_column(Integer)
    queue_id: Mapped[int | None] = mapped_column(Integer)
    channel: Mapped[str | None] = mapped_column(String(10))
    visitor_id: Mapped[str | None] = mapped_column(String(48))
    # And the call's columns the reports group conversions by (people, landing pages, sources, campaigns): joining
    # the pairs to their calls for them read every call of the range (PostgreSQL, a year: 120-150 ms a statement).
    person_id: Mapped[int | None] = mapped_column(Integer)
    landing_page: Mapped[str | None] = mapped_column(Text)
    source_kind: Mapped[str | None] = mapped_column(String(20))
    source: Mapped[str | None] = mapped_column(String(200))
    utm_source: Mapped[str | None] = mapped_column(String(200))
    utm_medium: Mapped[str | None] = mapped_column(String(200))
    utm_campaign: Mapped[str | None] = mapped_column(String(200))
    # The call's repeat_caller: the day sums (analytics/factdays.py) count the other pairs; these are read.
    repeat_caller: Mapped[int] = mapped_column(Integer, server_default="1")


class CallFactPageDay(Base):
    """Sums of call_fact_pages per UTC day of the calls and per path (analytics/factdays.py): the counts a pages
    report adds up without DISTINCT, so a long range reads a row per day and path instead of every page view."""

    __tablename__ = "call_fact_page_days"

    after: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[int] = mapped_column(Integer, primary_key=True)  # created_us // 86400 s, UTC
    site_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(10), primary_key=True)
    path: Mapped[str] = mapped_column(Text, primary_key=True)
    views: Mapped[int] = mapped_column(Integer)  # rows with event_shared 0
    calls: Mapped[int] = mapped_column(Integer)  # rows with first_in_call 1
    callers: Mapped[int] = mapped_column(Integer)  # first_in_call 1 and visitor_shared 0
    converted: Mapped[int] = mapped_column(Integer)  # first_in_call 1 and converted 1


class CallFactDay(Base):
    """Sums of call_facts per UTC day of the calls, site, queue and channel (analytics/factdays.py): what the
    summary and conversion figures add up without DISTINCT. `once_*`: of calls with repeat_caller 0; `last_*`: of
    calls with no later call of their visitor (next_us NULL)."""

    __tablename__ = "call_fact_days"

    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(10), primary_key=True)
    offered: Mapped[int] = mapped_column(Integer)
    answered: Mapped[int] = mapped_column(Integer)
    abandoned: Mapped[int] = mapped_column(Integer)
    missed: Mapped[int] = mapped_column(Integer)
    voicemails: Mapped[int] = mapped_column(Integer)
    responses: Mapped[int] = mapped_column(Integer)
    rating_sum: Mapped[int] = mapped_column(Integer)
    once_calls: Mapped[int] = mapped_column(Integer)
    once_converted: Mapped[int] = mapped_column(Integer)
    once_conversions: Mapped[int] = mapped_column(Integer)  # conversions attributed to once-callers' calls
    once_cents: Mapped[int] = mapped_column(BigInteger)
    last_calls: Mapped[int] = mapped_column(Integer)
    last_seen: Mapped[int] = mapped_column(Integer)  # with a page view of the visitor on the call's day
    last_seen_bought: Mapped[int] = mapped_column(Integer)  # and a conversion on it


class CallFactPersonDay(Base):
    """Sums of call_facts per UTC day of the calls, site, queue, channel and person (analytics/factdays.py): what
    the people and survey reports add up. `person_id` 0: calls with no person (agent calls no agent took)."""

    __tablename__ = "call_fact_person_days"

    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(10), primary_key=True)
    person_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    calls: Mapped[int] = mapped_column(Integer)
    answered: Mapped[int] = mapped_column(Integer)
    talked: Mapped[int] = mapped_column(Integer)  # answered calls that ended
    talk_us: Mapped[int] = mapped_column(BigInteger)
    converted: Mapped[int] = mapped_column(Integer)
    responses: Mapped[int] = mapped_column(Integer)
    rating_sum: Mapped[int] = mapped_column(Integer)
    rated_1: Mapped[int] = mapped_column(Integer)  # survey answers per rating
    rated_2: Mapped[int] = mapped_column(Integer)
    rated_3: Mapped[int] = mapped_column(Integer)
    rated_4: Mapped[int] = mapped_column(Integer)
    rated_5: Mapped[int] = mapped_column(Integer)


class CallFactDirtyDay(Base):
    """UTC days whose day sums are out of date: written with the facts they sum, in the same transaction, and
    cleared by the rebuild that brings them up to date. Reports read such days' rows instead of their sums."""

    __tablename__ = "call_fact_dirty_days"

    day: Mapped[int] = mapped_column(Integer, primary_key=True)


class CallFactsStale(Base):
    """Calls whose facts are missing, out of date or of a call deleted since: written by triggers, emptied by
    analytics/callfacts.py (which also removes the facts of deleted calls)."""

    __tablename__ = "call_facts_stale"

    call_id: Mapped[str] = mapped_column(String(40), primary_key=True)


class CallFactsMeta(Base):
    """One row: the attribution window the call facts are computed with."""

    __tablename__ = "call_facts_meta"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    window_us: Mapped[int] = mapped_column(BigInteger)
