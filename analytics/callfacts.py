"""Call facts: what the reports need of each call, computed once and kept exact by triggers.

A report over a year reads every call of the year, and for each one probed its survey answer, voicemails,
conversions, session's first page view and page views before and after it: five lookups per call, seconds at 10M
page views. `call_facts` (talk/models.py) holds those answers, one narrow row per call, with `call_fact_pages` (the
page views before and after each call) and `call_fact_conversions` (the conversions attributed to it), so a report
is an aggregate over rows of the range.

Exactness: a call's facts are valid only while the call is not in `call_facts_stale`. Database triggers (below)
put a call there in the same transaction as any write its facts are computed from — the call row itself, a page view
or conversion of its visitor or session, its survey answer, its voicemails, its queue's seller — whichever code
path writes (asyncpg COPY, the ORM, the CLI), with one exception: on SQLite, new page views are marked by the event
store, per group (`sqlite_marks_for_views`; a row trigger cost a third of its time), so page views inserted into
SQLite some other way must mark their calls themselves (the generator needs not: its calls are all new). The reports
(analytics/reports/base.py's `calls_in`) read valid facts for the calls that have them and compute the stale ones
from the raw rows with the same expressions, in one snapshot: the figures are those of a full recount whatever the
state of the facts. Keeping them fresh (`refresh`, run by `FactsKeeper` in the background, and by `catch_up` after
a bulk load or an upgrade) only decides how much is computed from raw rows at read time.

The facts depend on the attribution window (conversions and pages after a call); `call_facts_meta` records the
window they were computed with, and reports asked with another window compute everything from the raw rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from aiohttp import web
from sqlalchemy import case, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from analytics import factdays
from analytics.callpages import of_calls, store_pages
from analytics.reports.base import attributed_to, cents, fact_sources, live_facts
from analytics.reports.sqltime import MICROSECOND, epoch_us
from analytics.reports.traffic import SOURCE_INPUTS, first_view, source_of
from talk.models import (
    CallFactConversion, CallFactPage, CallFacts, CallFactsMeta, CallFactsStale, CallRecord, Conversion,
)

log = logging.getLogger(__name__)

BATCH = 500  # calls per refresh transaction: short enough not to hold SQLite's write lock for long
INTERVAL = 1.0  # seconds between the keeper's rounds
REFRESH_LOCK = 0x7A1C_FAC7  # PostgreSQL advisory lock key of refresh (and of the day sums' rebuild)
REBUILD_DAYS = 31  # days of sums rewritten per transaction

# ----- triggers -----

# SQLite: row triggers, except for page views stored: a row trigger there cost 20 µs per page view, a third of what
# the event store spends on one; the event store marks their calls per group instead (sqlite_marks_for_views).
# `+site_id`: without ANALYZE statistics SQLite could pick the site index (every call of the site) over the
# visitor's or session's.
# Not INSERT OR IGNORE: a trigger's conflict clause gives way to the firing statement's, and an upsert of a call
# (the call store's INSERT … ON CONFLICT DO UPDATE) made it fail on a call already stale.
_NOT_STALE = "NOT EXISTS (SELECT 1 FROM call_facts_stale AS s WHERE s.call_id = {id})"
_SQLITE_CALLS_OF_VISITOR = ("INSERT INTO call_facts_stale (call_id) SELECT id FROM calls WHERE visitor_id = "
                            "{row}.visitor_id AND +site_id = {row}.site_id AND " + _NOT_STALE.format(id="calls.id") + ";")
_SQLITE_CALLS_OF_SESSION = ("INSERT INTO call_facts_stale (call_id) SELECT id FROM calls WHERE session_id = "
                            "{row}.session_id AND +site_id = {row}.site_id AND " + _NOT_STALE.format(id="calls.id") + ";")
_SQLITE_CALL = ("INSERT INTO call_facts_stale (call_id) SELECT {row}.{column} WHERE "
                + _NOT_STALE.format(id="{row}.{column}") + ";")


# Only the columns the facts read: conversions.viewed_at (analytics/buyerviews.py) is filled by a migration and
# cleared by triggers, which must not mark calls stale.
_CONVERSION_UPDATE = "UPDATE OF site_id, visitor_id, ts, value"


def _sqlite_triggers() -> dict[str, str]:
    def trigger(name: str, when: str, table: str, *body: str) -> tuple[str, str]:
        return name, f"CREATE TRIGGER {name} AFTER {when} ON {table} BEGIN {' '.join(body)} END"

    return dict([
        trigger("call_facts_calls_insert", "INSERT", "calls", _SQLITE_CALL.format(row="NEW", column="id")),
        trigger("call_facts_calls_update", "UPDATE", "calls", _SQLITE_CALL.format(row="NEW", column="id")),
        trigger("call_facts_calls_delete", "DELETE", "calls", _SQLITE_CALL.format(row="OLD", column="id")),
        trigger("call_facts_events_delete", "DELETE", "events", _SQLITE_CALLS_OF_VISITOR.format(row="OLD"),
                _SQLITE_CALLS_OF_SESSION.format(row="OLD")),
        *(trigger(f"call_facts_conversions_{name}", when, "conversions",
                  *(_SQLITE_CALLS_OF_VISITOR.format(row=row) for row in rows))
          for name, when, rows in (("insert", "INSERT", ("NEW",)), ("update", _CONVERSION_UPDATE, ("OLD", "NEW")),
                                   ("delete", "DELETE", ("OLD",)))),
        *(trigger(f"call_facts_{name}_{when.lower()}", when, table, _SQLITE_CALL.format(row=row, column="call_id"))
          for name, table, whens in (("surveys", "survey_answers", ("INSERT", "UPDATE", "DELETE")),
                                     ("voicemails", "voicemails", ("INSERT", "DELETE")))
          for when in whens for row in ("OLD" if when == "DELETE" else "NEW",)),
        trigger("call_facts_queues_update", "UPDATE OF seller_id", "queues",
                "INSERT INTO call_facts_stale (call_id) SELECT id FROM calls WHERE queue_id = NEW.id AND "
                + _NOT_STALE.format(id="calls.id") + ";"),
    ])


# PostgreSQL: page views arrive by the thousand per statement (the event writer's groups, COPY): one statement-level
# trigger per statement over its transition table. The rest are rows one at a time. Ids are inserted in order, so two
# transactions marking the same calls take their locks in the same order. A call already stale is marked again with
# an update, not skipped: the row lock it takes until the writer commits makes refresh pass the call by (SKIP LOCKED)
# instead of computing it without the writer's rows and taking it off the list (tests/integration/test_callfacts.py).
_MARKED = "ON CONFLICT (call_id) DO UPDATE SET call_id = EXCLUDED.call_id"
_PG_FUNCTIONS = {
    "call_facts_mark_call": """
        BEGIN
          IF TG_TABLE_NAME = 'calls' AND TG_OP = 'DELETE' THEN
            INSERT INTO call_facts_stale (call_id) VALUES (OLD.id) {MARKED};
          ELSIF TG_TABLE_NAME = 'calls' THEN
            INSERT INTO call_facts_stale (call_id) VALUES (NEW.id) {MARKED};
          ELSIF TG_OP = 'DELETE' THEN
            INSERT INTO call_facts_stale (call_id) VALUES (OLD.call_id) {MARKED};
          ELSE
            INSERT INTO call_facts_stale (call_id) VALUES (NEW.call_id) {MARKED};
          END IF;
          RETURN NULL;
        END""",
    "call_facts_mark_visitor": """
        BEGIN
          IF TG_OP <> 'INSERT' THEN
            INSERT INTO call_facts_stale (call_id) SELECT id FROM calls
            WHERE visitor_id = OLD.visitor_id AND site_id = OLD.site_id ORDER BY id {MARKED};
          END IF;
          IF TG_OP <> 'DELETE' THEN
            INSERT INTO call_facts_stale (call_id) SELECT id FROM calls
            WHERE visitor_id = NEW.visitor_id AND site_id = NEW.site_id ORDER BY id {MARKED};
          END IF;
          RETURN NULL;
        END""",
    "call_facts_mark_views": """
        BEGIN
          INSERT INTO call_facts_stale (call_id)
          SELECT c.id FROM (SELECT DISTINCT site_id, visitor_id FROM changed) v
            JOIN calls c ON c.visitor_id = v.visitor_id AND c.site_id = v.site_id
          UNION
          SELECT c.id FROM (SELECT DISTINCT site_id, session_id FROM changed) s
            JOIN calls c ON c.session_id = s.session_id AND c.site_id = s.site_id
          ORDER BY 1 {MARKED};
          RETURN NULL;
        END""",
    "call_facts_mark_queue": """
        BEGIN
          IF NEW.seller_id IS DISTINCT FROM OLD.seller_id THEN
            INSERT INTO call_facts_stale (call_id) SELECT id FROM calls WHERE queue_id = NEW.id ORDER BY id
            {MARKED};
          END IF;
          RETURN NULL;
        END""",
}
_PG_TRIGGERS = {
    "call_facts_calls_insert": "AFTER INSERT ON calls FOR EACH ROW EXECUTE FUNCTION call_facts_mark_call()",
    "call_facts_calls_update": "AFTER UPDATE ON calls FOR EACH ROW EXECUTE FUNCTION call_facts_mark_call()",
    "call_facts_calls_delete": "AFTER DELETE ON calls FOR EACH ROW EXECUTE FUNCTION call_facts_mark_call()",
    "call_facts_events_insert": ("AFTER INSERT ON events REFERENCING NEW TABLE AS changed FOR EACH STATEMENT "
                                 "EXECUTE FUNCTION call_facts_mark_views()"),
    "call_facts_events_delete": ("AFTER DELETE ON events REFERENCING OLD TABLE AS changed FOR EACH STATEMENT "
                                 "EXECUTE FUNCTION call_facts_mark_views()"),
    "call_facts_conversions": (f"AFTER INSERT OR {_CONVERSION_UPDATE} OR DELETE ON conversions FOR EACH ROW "
                               "EXECUTE FUNCTION call_facts_mark_visitor()"),
    "call_facts_surveys": ("AFTER INSERT OR UPDATE OR DELETE ON survey_answers FOR EACH ROW "
                           "EXECUTE FUNCTION call_facts_mark_call()"),
    "call_facts_voicemails": ("AFTER INSERT OR DELETE ON voicemails FOR EACH ROW "
                              "EXECUTE FUNCTION call_facts_mark_call()"),
    "call_facts_queues": "AFTER UPDATE ON queues FOR EACH ROW EXECUTE FUNCTION call_facts_mark_queue()",
}


def sqlite_marks_for_views(rows: list[dict]) -> list[tuple[str, tuple]]:
    """(SQL, parameters) that mark stale, on SQLite, the calls of the visitors and sessions of these page views: what
    PostgreSQL's trigger on `events` does, for the event store to run in the transaction that stores them (per
    group: one statement per site and few hundred visitors or sessions)."""
    by_site: dict[int, tuple[set, set]] = {}
    for row in rows:
        visitors, sessions = by_site.setdefault(row["site_id"], (set(), set()))
        visitors.add(row["visitor_id"])
        sessions.add(row["session_id"])
    statements = []
    for site_id, keys in by_site.items():
        for column, values in zip(("visitor_id", "session_id"), keys):
            values = sorted(values)
            for at in range(0, len(values), 400):
                chunk = values[at:at + 400]
                statements.append((f"INSERT OR IGNORE INTO call_facts_stale (call_id) SELECT id FROM calls "
                                   f"WHERE {column} IN ({', '.join('?' * len(chunk))}) AND +site_id = ?",
                                   (*chunk, site_id)))
    return statements


def trigger_statements(dialect: str, only: str | None = None) -> list[str]:
    """DDL creating the triggers that mark calls stale (the migration runs it); `only`: just the triggers whose
    name starts so (not the PostgreSQL functions: those are replaced in place)."""
    if only is not None:
        return [statement for statement in trigger_statements(dialect)
                if statement.startswith(f"CREATE TRIGGER {only}")]
    if dialect == "sqlite":
        return list(_sqlite_triggers().values())
    if dialect == "postgresql":
        functions = [f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql "
                     f"AS $${body.replace('{MARKED}', _MARKED)}$$" for name, body in _PG_FUNCTIONS.items()]
        return functions + [f"CREATE TRIGGER {name} {definition}" for name, definition in _PG_TRIGGERS.items()]
    raise ValueError(f"call facts: no triggers for {dialect}")


def drop_trigger_statements(dialect: str, only: str | None = None) -> list[str]:
    if only is not None:
        return [statement for statement in drop_trigger_statements(dialect)
                if statement.startswith(f"DROP TRIGGER IF EXISTS {only}")]
    if dialect == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {name}" for name in _sqlite_triggers()]
    table_of = {name: definition.split(" ON ")[1].split()[0] for name, definition in _PG_TRIGGERS.items()}
    return ([f"DROP TRIGGER IF EXISTS {name} ON {table}" for name, table in table_of.items()]
            + [f"DROP FUNCTION IF EXISTS {name}()" for name in _PG_FUNCTIONS])


# ----- computing facts -----

def window_us(window: timedelta) -> int:
    return window // MICROSECOND


async def use_window(db: AsyncSession, window: timedelta) -> bool:
    """Record that facts are kept for `window`; when they were kept for another one, every call becomes stale.
    True when that changed anything. The caller commits."""
    meta = CallFactsMeta.__table__
    current = await db.scalar(select(meta.c.window_us).where(meta.c.id == 1))
    if current == window_us(window):
        return False
    if current is None:
        await db.execute(insert(meta).values(id=1, window_us=window_us(window)))
    else:
        await db.execute(meta.update().where(meta.c.id == 1).values(window_us=window_us(window)))
    await mark_all_stale(db)
    return True


async def mark_all_stale(db: AsyncSession) -> None:
    stale, c = CallFactsStale.__table__, CallRecord.__table__
    await db.execute(delete(stale))
    await db.execute(insert(stale).from_select(["call_id"], select(c.c.id)))


async def _claim(db: AsyncSession, limit: int) -> list[str]:
    """Take up to `limit` stale calls off the list. On PostgreSQL rows another node is refreshing are skipped, and a
    writer marking one of these calls again waits for this transaction, then marks it anew."""
    stale = CallFactsStale.__table__
    batch = select(stale.c.call_id).order_by(stale.c.call_id).limit(limit)
    if db.bind.dialect.name == "postgresql":
        batch = batch.with_for_update(skip_locked=True)
    return list(await db.scalars(delete(stale).where(stale.c.call_id.in_(batch.scalar_subquery()))
                                 .returning(stale.c.call_id)))


def _facts_of(db: AsyncSession, ids: list[str], window: timedelta):
    """The facts of the calls `ids` from their raw rows, and the inputs of their source (the session's first page
    view) for source_of."""
    c = CallRecord.__table__
    names = [name for name in SOURCE_INPUTS if name != "has_journey"] + ["utm_campaign"]
    view, on = first_view(db, c, names)
    inputs = [c.c.has_journey.label("source_has_journey"), *(view.c[name].label(f"source_{name}") for name in names)]
    return (select(*live_facts(window), *inputs).select_from(fact_sources().outerjoin(view, on))
            .where(c.c.id.in_(ids)))


# The call's columns the attributed conversions carry (copied from its facts, stored just before).
CONVERSION_CALL_COLUMNS = ("site_id", "queue_id", "channel", "visitor_id", "person_id", "landing_page", "source_kind",
                           "source", "utm_source", "utm_medium", "utm_campaign", "repeat_caller")
CONVERSION_COLUMNS = ("created_us", "call_id", "conversion_id", "cents", "delay_us", *CONVERSION_CALL_COLUMNS)


def _conversions_of(ids: list[str], window: timedelta):
    """CONVERSION_COLUMNS of the conversions attributed to the calls `ids` (whose facts are stored)."""
    c, conv, f = CallRecord.__table__, Conversion.__table__, CallFacts.__table__
    return (select(epoch_us(c.c.created_at), c.c.id, conv.c.id, cents(conv.c.value),
                   epoch_us(conv.c.ts) - epoch_us(c.c.ended_at), *(f.c[name] for name in CONVERSION_CALL_COLUMNS))
            .select_from(c.join(f, f.c.call_id == c.c.id).join(conv, attributed_to(conv, c, window)))
            .where(c.c.id.in_(ids)))


def copy_call_columns_to_conversions(names: tuple[str, ...] = CONVERSION_CALL_COLUMNS):
    """UPDATE: the stored attributed conversions get their call's columns `names` from its facts (the migrations
    that add such columns; refresh writes them with the pairs)."""
    p, f = CallFactConversion.__table__, CallFacts.__table__
    return (update(p).values({name: f.c[name] for name in names})
            .where(f.c.created_us == p.c.created_us, f.c.call_id == p.c.call_id))


async def _forget(db: AsyncSession, ids: list[str]) -> list[tuple[int, str]]:
    """Delete the stored facts of these calls (the pages and conversions by their primary keys, which hold the
    call's created_us); the created_us and visitor_id of those deleted."""
    f = CallFacts.__table__
    rows = (await db.execute(select(f.c.created_us, f.c.call_id, f.c.visitor_id).where(f.c.call_id.in_(ids)))).all()
    if not rows:
        return []
    keys = [(created_us, call_id) for created_us, call_id, _visitor in rows]
    for table in (CallFactPage.__table__, CallFactConversion.__table__, f):
        await db.execute(delete(table).where(*of_calls(table, keys)))
    return [(created_us, visitor_id) for created_us, _call_id, visitor_id in rows]


def link_calls(visitors: list[str] | None = None):
    """UPDATE: next_us and multisite of every stored call (of these `visitors`), from the stored calls
    (analytics/reports/callcounts.py counts callers by them), where they changed, RETURNING the calls' created_us."""
    f = CallFacts.__table__
    visitor = f.c.visitor_id
    linked = select(f.c.created_us, f.c.call_id,
                    func.lead(f.c.created_us).over(partition_by=(f.c.site_id, visitor),
                                                   order_by=(f.c.created_us, f.c.call_id)).label("next_us"),
                    case((func.min(f.c.site_id).over(partition_by=visitor)
                          != func.max(f.c.site_id).over(partition_by=visitor), 1), else_=0).label("multisite"))
    if visitors is not None:
        linked = linked.where(visitor.in_(visitors))
    linked = linked.subquery("linked")
    return (update(f).values(next_us=linked.c.next_us, multisite=linked.c.multisite)
            .where(f.c.created_us == linked.c.created_us, f.c.call_id == linked.c.call_id,
                   or_(f.c.next_us.is_distinct_from(linked.c.next_us), f.c.multisite != linked.c.multisite))
            .returning(f.c.created_us))


async def _link_visitors(db: AsyncSession, visitors: list[str]) -> list[int]:
    """link_calls for these visitors; the created_us of the calls changed (their day sums change)."""
    changed = []
    for at in range(0, len(visitors), 400):
        changed += await db.scalars(link_calls(visitors[at:at + 400]))
    return changed


async def _flag_repeat_callers(db: AsyncSession, visitors: list[str]) -> list[int]:
    """repeat_caller = 1 (and unsummed = 1: analytics/factdays.py) on every stored call of these visitors who have
    more than one, and on their attributed conversions; the created_us of the calls flagged."""
    f, p = CallFacts.__table__, CallFactConversion.__table__
    flagged = []
    for at in range(0, len(visitors), 400):
        repeat = (select(f.c.visitor_id).where(f.c.visitor_id.in_(visitors[at:at + 400]))
                  .group_by(f.c.visitor_id).having(func.count() > 1))
        keys = (await db.execute(update(f).where(f.c.visitor_id.in_(repeat), f.c.repeat_caller == 0)
                                 .values(repeat_caller=1, unsummed=1).returning(f.c.created_us, f.c.call_id))).all()
        if keys:
            await db.execute(update(p).where(*of_calls(p, keys)).values(repeat_caller=1))
        flagged += [created_us for created_us, _call_id in keys]
    return flagged


async def refresh(db: AsyncSession, window: timedelta, limit: int = BATCH) -> int:
    """Compute the facts of up to `limit` stale calls, in the caller's transaction (commit it). The number of calls
    taken off the stale list: 0 when none is left."""
    # One refresh at a time, whichever node: the pages' sharing flags are set against the stored rows, which a
    # concurrent refresh's uncommitted rows would be missing from.
    await _lock_refresh(db)
    ids = await _claim(db, limit)
    if not ids:
        return 0
    forgotten = await _forget(db, ids)
    touched = [created_us for created_us, _visitor in forgotten]
    rows = []
    for row in (await db.execute(_facts_of(db, ids, window))).mappings():
        facts = {key: value for key, value in row.items() if not key.startswith("source_")}
        inputs = [row[f"source_{name}"] for name in SOURCE_INPUTS]
        kind, source = source_of(*inputs)
        campaign = row["source_utm_campaign"] if row["has_journey"] else None
        utm = (row["source_utm_source"], row["source_utm_medium"], campaign) if campaign is not None else (None,) * 3
        rows.append({**facts, "source_kind": kind, "source": source, "repeat_caller": 0,
                     "utm_source": utm[0], "utm_medium": utm[1], "utm_campaign": utm[2]})
    touched += [row["created_us"] for row in rows]
    if rows:  # (ids of calls deleted since they were marked have no rows)
        await db.execute(insert(CallFacts), rows)
        touched += await _flag_repeat_callers(db, sorted({row["visitor_id"] for row in rows}))
        f = CallFacts.__table__
        await db.execute(update(f).where(f.c.call_id.in_(ids)).values(
            unsummed=case((factdays.unsummed(f), 1), else_=0), undecided=case((factdays.undecided(f), 1), else_=0)))
    touched += await _link_visitors(db, sorted({row["visitor_id"] for row in rows}
                                               | {visitor for _created_us, visitor in forgotten}))
    touched += await store_pages(db, ids, window)
    pairs = CallFactConversion.__table__
    await db.execute(insert(pairs).from_select(list(CONVERSION_COLUMNS), _conversions_of(ids, window)))
    await factdays.mark_dirty(db, touched)
    return len(ids)


async def catch_up(sessionmaker: async_sessionmaker[AsyncSession], window: timedelta,
                   progress: Callable[[int], None] | None = None) -> int:
    """Refresh until no call is stale (each batch its own transaction), then bring the day sums up to date; the
    number of calls refreshed."""
    async with sessionmaker() as db, db.begin():
        await use_window(db, window)
    done = await _refresh_all(sessionmaker, window, progress)
    await rebuild_day_sums(sessionmaker)
    return done


async def rebuild_day_sums(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Rewrite the dirty days' sums (analytics/factdays.py), a month of days per transaction, under the refresh
    lock: a refresh changing a day's rows meanwhile marks it dirty again after the rebuild. The days rewritten."""
    done = 0
    while True:
        async with sessionmaker() as db, db.begin():
            await _lock_refresh(db)
            n = await factdays.rebuild(db, limit=REBUILD_DAYS)
        if not n:
            return done
        done += n


async def _lock_refresh(db: AsyncSession) -> None:
    if db.bind.dialect.name == "postgresql":  # (SQLite writers take turns anyway)
        await db.execute(select(func.pg_advisory_xact_lock(REFRESH_LOCK)))


async def _refresh_all(sessionmaker: async_sessionmaker[AsyncSession], window: timedelta,
                       progress: Callable[[int], None] | None = None) -> int:
    done = 0
    while True:
        async with sessionmaker() as db, db.begin():
            n = await refresh(db, window)
        if not n:
            return done
        done += n
        if progress is not None:
            progress(done)


class FactsKeeper:
    """Refreshes stale call facts in the background: every INTERVAL seconds, until none is left. A failing round
    is logged and tried again next time (the reports stay exact meanwhile, only slower)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], window: timedelta,
                 interval: float = INTERVAL) -> None:
        self._sessionmaker, self._window, self._interval = sessionmaker, window, interval
        self._task: asyncio.Task | None = None
        self.refreshed = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="call-facts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        window_set = False
        while True:
            try:
                if not window_set:
                    self.refreshed += await catch_up(self._sessionmaker, self._window)
                    window_set = True
                elif await self._any_stale():  # (a read: SQLite's write lock only when there is work)
                    self.refreshed += await _refresh_all(self._sessionmaker, self._window)
                if await self._any_dirty():
                    await rebuild_day_sums(self._sessionmaker)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("call facts: refresh failed; trying again later")
            await asyncio.sleep(self._interval)

    async def _any_dirty(self) -> bool:
        async with self._sessionmaker() as db:
            return await factdays.any_dirty(db)

    async def _any_stale(self) -> bool:
        async with self._sessionmaker() as db:
            return await db.scalar(select(CallFactsStale.call_id).limit(1)) is not None


def call_facts_ctx(sessionmaker_of, window: timedelta, key: web.AppKey):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        keeper = FactsKeeper(sessionmaker_of(app), window)
        app[key] = keeper
        keeper.start()
        yield
        await keeper.stop()

    return ctx
