"""Call facts (analytics/callfacts.py) never change a report. On SQLite and PostgreSQL, with a generated data set:

- after generate() (which runs catch_up) no call is stale, every call has facts, and every report read through the
  facts equals the same report from the raw rows (`recount=True`) over several ranges, zones and filters;
- each write the facts depend on, made as the product makes it (a page view after a call and a landing page view
  through the event writer, a conversion, a survey answer, a voicemail, a call updated and one inserted through the
  call store's upsert, a queue's seller changed, a visitor forgotten), marks its calls stale in its own transaction
  (read in `call_facts_stale`), changes the report figure it should, and every report equals the recount before
  and after catch_up; then nothing is stale, the call's facts show the change and equal facts recomputed from
  scratch. Without the write's trigger both the stale check and the report comparison fail;
- a report with another attribution window is computed from the raw rows, before and after the facts follow it;
- refresh consumes a stale id whose call is gone; a page view committed while a refresh runs is not lost (on
  PostgreSQL the trigger re-marks an already stale call with a row lock, so refresh skips it until the writer
  commits)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import case, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from analytics import callfacts, factdays
from analytics.conversions import record_conversion
from analytics.generator import generate
from analytics.ingest import EventWriter
from analytics.privacy import forget_visitor
from analytics.reports import REPORTS, Report, ReportFilters, run_report
from analytics.reports.base import OUTCOME_ANSWERED
from analytics.reports.filters import resolve
from analytics.sources import attribution_of
from analytics.surveys import submit_survey
from signaling.callstore import _FIELDS, CallStore
from talk.app import demo_origins
from talk.db import create_engine, upgrade_schema_async
from talk.demo import seed_demo
from talk.models import (
    CallFactConversion, CallFactDay, CallFactDirtyDay, CallFactPage, CallFactPageDay, CallFacts, CallFactsStale,
    CallRecord, PageEvent, Queue, Site,
)
from talk.settings import Settings
from talk.voicemails import add_voicemail
from tests.integration.test_reports import copy_data, generate_copy

END = datetime(2026, 4, 2, tzinfo=timezone.utc)
DAYS, VISITORS, SEED, WINDOW = 45, 1000, 7, timedelta(days=7)
FIRST, LAST = date(2026, 2, 16), date(2026, 4, 1)
ALL = ReportFilters(FIRST, LAST, "UTC", limit=1000)
CASES = (
    ALL,
    ReportFilters(FIRST, LAST, "Europe/Berlin", site="demo-shop", limit=1000),
    ReportFilters(date(2026, 3, 5), date(2026, 3, 29), "America/New_York", queue="support", limit=1000),
    ReportFilters(FIRST, LAST, "Asia/Kolkata", channel="seller", limit=1000),
)
c, f = CallRecord.__table__, CallFacts.__table__


@dataclass
class Seen:
    """A call's stored facts: its call_facts row (None: none), pages (after, path), conversion ids."""
    row: Any
    pages: set[tuple[int, str]]
    conversions: set[int]


class Db:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine, self.session = engine, async_sessionmaker(engine, expire_on_commit=False)

    async def report(self, name: str, filters: ReportFilters = ALL, window: timedelta = WINDOW,
                     recount: bool = False) -> Report:
        async with self.session() as db:  # a session per report: PostgreSQL's snapshot is set before any query
            return await run_report(db, name, filters, window, recount)

    async def assert_exact(self, window: timedelta = WINDOW) -> None:
        for filters in CASES:
            for name in REPORTS:
                fast = await self.report(name, filters, window)
                assert fast == await self.report(name, filters, window, recount=True), (name, filters)

    async def all(self, statement) -> list:
        async with self.session() as db:
            return list((await db.execute(statement)).all())

    async def stale(self) -> set[str]:
        return {r.call_id for r in await self.all(select(CallFactsStale.call_id))}

    async def seen(self, call_id: str) -> Seen:
        rows = await self.all(select(f).where(f.c.call_id == call_id))
        pages = await self.all(select(CallFactPage.after, CallFactPage.path).where(CallFactPage.call_id == call_id))
        pairs = await self.all(select(CallFactConversion.conversion_id).where(CallFactConversion.call_id == call_id))
        return Seen(rows[0] if rows else None, {tuple(p) for p in pages}, {p.conversion_id for p in pairs})

    async def pick(self, *where):
        """The first call (by id) matching `where`, with its stored facts as f_<column>."""
        rows = await self.all(select(c, *(column.label(f"f_{column.name}") for column in f.c))
                              .join(f, f.c.call_id == c.c.id).where(*where).order_by(c.c.id).limit(1))
        assert rows, where
        return rows[0]

    async def calls_of(self, call) -> set[str]:
        return {r.id for r in await self.all(select(c.c.id).where(c.c.visitor_id == call.visitor_id,
                                                                  c.c.site_id == call.site_id))}

    async def catch_up(self, window: timedelta = WINDOW) -> int:
        return await callfacts.catch_up(self.session, window)

    async def assert_day_sums_match_the_rows(self) -> None:
        """No day is dirty, the day sums are those of the stored rows (every change of them marked its day), and
        each call's `unsummed`, `undecided`, `next_us` and `multisite` are what the stored facts give now."""
        assert await self.all(select(CallFactDirtyDay.day)) == []
        for table, rows_of in ((CallFactPageDay.__table__, factdays.page_sums),
                               (CallFactDay.__table__, factdays.call_sums)):
            stored = {tuple(r) for r in await self.all(select(table))}
            assert stored == {tuple(r) for r in await self.all(rows_of(0, 2**62))}, table.name
            assert stored
        wrong = func.count().filter(or_(f.c.unsummed != case((factdays.unsummed(f), 1), else_=0),
                                        f.c.undecided != case((factdays.undecided(f), 1), else_=0)))
        assert (await self.all(select(wrong)))[0][0] == 0
        async with self.session() as db, db.begin():  # next_us and multisite are those the stored calls give now
            assert list(await db.scalars(callfacts.link_calls())) == []
            await db.rollback()
        p = CallFactConversion.__table__  # the pairs' copy of repeat_caller, which they are read by
        differ = select(func.count()).select_from(p.join(f, f.c.call_id == p.c.call_id)).where(
            p.c.repeat_caller != f.c.repeat_caller)
        assert (await self.all(differ))[0][0] == 0

    async def snapshot(self) -> list[dict]:
        """Each facts table as {row without its *_shared columns: those} (analytics/callpages.py: such a flag may
        stay set once no longer needed, which only costs a DISTINCT; it must never be missing)."""
        tables = []
        for table in (f, CallFactPage.__table__, CallFactConversion.__table__):
            rows = [r._mapping for r in await self.all(select(table))]
            tables.append({tuple(v for k, v in r.items() if not k.endswith("_shared")):
                           tuple(v for k, v in r.items() if k.endswith("_shared")) for r in rows})
        return tables


# ----- writes, each as the product does it -----

def page_view(call, ts: datetime, url: str) -> dict:
    """An events row as analytics.ingest.event_rows makes it."""
    attribution = attribution_of(url)
    return {"site_id": call.site_id, "event_id": "e_facts_" + secrets.token_hex(8), "visitor_id": call.visitor_id,
            "session_id": "s_facts_" + secrets.token_hex(8), "type": "pageview", "ts": ts, "url": url,
            "path": attribution.path, "title": "Call facts test", "referrer": None,
            **{f"utm_{k}": v for k, v in attribution.utm.items()}, "click_id_type": attribution.click_id_type,
            "click_id": attribution.click_id, "props": None, "ip_hash": None}


async def ingest(t: Db, row: dict) -> None:
    """Through the event writer (SQLite: its own sqlite3 connection; PostgreSQL: INSERT … ON CONFLICT)."""
    writer = EventWriter(t.engine, max_pending=100, linger=0)
    writer.start()
    try:
        assert await writer.write([row]) == 1
    finally:
        await writer.stop()


async def upsert_call(t: Db, row: dict) -> None:
    await CallStore(t.session)._upsert([{name: row[name] for name in _FIELDS}])


@dataclass
class Expect:
    subject: str  # the call whose stored facts `check` looks at after catch_up
    calls: set[str]  # marked stale by the write (gone=True: deleted; stale, or their facts gone with them)
    report: str  # a report (over ALL) one of whose figures the write changes
    figure: Callable[[Report], Any]
    before: Any
    check: Callable[[Seen], bool]
    gone: bool = False


def total(column: str) -> Callable[[Report], Any]:
    return lambda report: report.totals[column]


def first(column: str) -> Callable[[Report], Any]:
    return lambda report: report.records()[0][column]


def row_where(column: str, value: Any) -> Callable[[Report], Any]:
    return lambda report: next((r for r in report.records() if r[column] == value), None)


async def expect(t: Db, subject: str, calls: set[str] | None, name: str, figure, check, gone=False) -> Expect:
    """What the write about to be made must do (calls None: the subject only), with the figure before it."""
    return Expect(subject, calls or {subject}, name, figure, figure(await t.report(name)), check, gone)


async def page_view_after_call(t: Db) -> Expect:
    call = await t.pick(c.c.has_journey.is_(True), c.c.ended_at.is_not(None))
    path = "/demo/facts-after"
    e = await expect(t, call.id, None, "pages_after", row_where("path", path), lambda s: (1, path) in s.pages)
    await ingest(t, page_view(call, call.ended_at + timedelta(hours=1), "https://shop.example" + path))
    return e


async def landing_page_view(t: Db) -> Expect:
    call = await t.pick(c.c.has_journey.is_(True), f.c.landed == 1)
    own = PageEvent.url.contains(f"talk_call={call.id}", autoescape=True)
    view = (await t.all(select(PageEvent).where(own).order_by(PageEvent.id)))[0].PageEvent
    async with t.session() as db, db.begin():  # setup: its landing view deleted, so it has not landed
        await db.execute(delete(PageEvent).where(own))
    assert call.id in await t.stale()  # (the events delete trigger)
    await t.catch_up()
    assert (await t.seen(call.id)).row.landed == 0
    figure = lambda report: row_where("landing_page", call.f_landing_page)(report)["landed"]
    e = await expect(t, call.id, None, "landing_pages", figure, lambda s: s.row.landed == 1)
    await ingest(t, page_view(call, view.ts, view.url))
    return e


async def conversion_after_call(t: Db) -> Expect:
    call = await t.pick(c.c.ended_at.is_not(None), f.c.converted == 0)
    e = await expect(t, call.id, await t.calls_of(call), "conversion", first("conversions_after_calls"),
                     lambda s: s.row.converted == 1 and len(s.conversions) == 1)
    async with t.session() as db, db.begin():
        assert await record_conversion(db, site_id=call.site_id, visitor_id=call.visitor_id, order_id="facts-c",
                                       value=42.5, currency="EUR", ts=call.ended_at + timedelta(hours=2),
                                       origin="server")
    return e


async def survey_answer(t: Db) -> Expect:
    call = await t.pick(c.c.answered_at.is_not(None), f.c.rating.is_(None))
    e = await expect(t, call.id, None, "survey", first("survey_responses"), lambda s: s.row.rating == 1)
    async with t.session() as db, db.begin():
        await submit_survey(db, call.id, 1, "facts test", call.ended_at + timedelta(minutes=1))
    return e


async def voicemail(t: Db) -> Expect:
    call = await t.pick(c.c.answered_at.is_(None))
    e = await expect(t, call.id, None, "calls_by_day", total("voicemails"),
                     lambda s: s.row.voicemails == call.f_voicemails + 1)
    async with t.session() as db, db.begin():
        await add_voicemail(db, call_id=call.id, site_id=call.site_id, queue_id=call.queue_id, recipient_id=None,
                            buyer_alias="facts", file_name="vm_facts.wav", duration_seconds=3.0,
                            created_at=call.ended_at)
    return e


async def call_updated(t: Db) -> Expect:
    call = await t.pick(c.c.answered_at.is_(None), c.c.end_reason == "no-agent")
    e = await expect(t, call.id, None, "calls_by_day", total("calls_answered"),
                     lambda s: s.row.outcome == OUTCOME_ANSWERED and s.row.wait_us > 0 and s.row.talk_us > 0)
    middle = call.created_at + (call.ended_at - call.created_at) / 2
    await upsert_call(t, {**call._mapping, "answered_at": middle, "end_reason": "completed"})
    return e


async def call_inserted(t: Db) -> Expect:
    # A visitor who called once so far: their call becomes a repeat caller's (counted DISTINCT, no longer summed).
    # (Converted: its attributed conversions become a repeat caller's too.)
    call = await t.pick(c.c.has_journey.is_(True), c.c.agent_id.is_not(None), f.c.repeat_caller == 0,
                        f.c.unsummed == 0, f.c.converted == 1)
    new_id, created = "c_facts_new_" + secrets.token_hex(4), call.created_at + timedelta(minutes=3)
    e = await expect(t, new_id, None, "calls_by_day", total("calls_offered"),
                     lambda s: s.row.outcome == OUTCOME_ANSWERED and s.row.created_at == created)
    await upsert_call(t, {**call._mapping, "id": new_id, "created_at": created,
                          "ringing_at": created + timedelta(seconds=2), "answered_at": created + timedelta(seconds=9),
                          "ended_at": created + timedelta(minutes=4), "end_reason": "completed", "landing_url": None})
    return e


async def session_shared(t: Db) -> Expect:
    """A call of another visitor id in the session of a stored call (a client may send any ids): the stored call's
    page views before it, counted in the day sums as unique, are now shared with a call computed from raw rows."""
    call = await t.pick(c.c.has_journey.is_(True), c.c.agent_id.is_not(None), c.c.session_id.is_not(None))
    path = min(path for after, path in (await t.seen(call.id)).pages if after == 0)
    new_id, created = "c_facts_shared_" + secrets.token_hex(4), call.created_at + timedelta(minutes=2)
    e = await expect(t, new_id, None, "pages_before", lambda report: row_where("path", path)(report)["calls"],
                     lambda s: (0, path) in s.pages)
    await upsert_call(t, {**call._mapping, "id": new_id, "visitor_id": "v_facts_other_" + secrets.token_hex(4),
                          "created_at": created, "ringing_at": created, "answered_at": created + timedelta(seconds=5),
                          "ended_at": created + timedelta(minutes=1), "end_reason": "completed", "landing_url": None})
    return e


async def seen_the_day_before(t: Db) -> Expect:
    """A new visitor's call just after a UTC midnight, their only page view just before it: once stored, the day
    sums cannot tell whether they were seen in a range (it depends on the range holding the day before too)."""
    call = await t.pick(c.c.has_journey.is_(True), c.c.agent_id.is_not(None))
    midnight = call.created_at.replace(hour=0, minute=0, second=0, microsecond=0)
    visitor = SimpleNamespace(site_id=call.site_id, visitor_id="v_facts_night_" + secrets.token_hex(4))
    view = page_view(visitor, midnight - timedelta(minutes=30), "https://shop.example/demo/facts-night")
    new_id, created = "c_facts_night_" + secrets.token_hex(4), midnight + timedelta(minutes=20)
    e = await expect(t, new_id, None, "summary", first("callers"), lambda s: s.row.unsummed == 1)
    await ingest(t, view)
    await upsert_call(t, {**call._mapping, "id": new_id, "visitor_id": visitor.visitor_id,
                          "session_id": view["session_id"], "created_at": created, "ringing_at": created,
                          "answered_at": created + timedelta(seconds=5), "ended_at": created + timedelta(minutes=1),
                          "end_reason": "completed", "landing_url": None})
    return e


async def seller_changed(t: Db) -> Expect:
    call = await t.pick(c.c.channel == "seller", c.c.agent_id.is_(None))
    queue_calls = {r.id for r in await t.all(select(c.c.id).where(c.c.queue_id == call.queue_id))}
    new_seller = 3 if call.f_person_id != 3 else 1  # demo accounts: 1 agent, 2 seller, 3 marketer
    figure = lambda report: {(r["role"], r["id"], r["calls"]) for r in report.records()}
    e = await expect(t, call.id, queue_calls, "people", figure, lambda s: s.row.person_id == new_seller)
    async with t.session() as db, db.begin():
        await db.execute(update(Queue).where(Queue.id == call.queue_id).values(seller_id=new_seller))
    return e


async def visitor_forgotten(t: Db) -> Expect:
    call = await t.pick(c.c.has_journey.is_(True), f.c.converted == 1)
    e = await expect(t, call.id, await t.calls_of(call), "calls_by_day", total("calls_offered"),
                     lambda s: s.row is None and not s.pages and not s.conversions, gone=True)
    assert (await t.seen(call.id)).pages  # it had stored page views: they must go with it
    async with t.session() as db, db.begin():
        assert (await forget_visitor(db, call.visitor_id))["calls"] == len(e.calls)
    return e


async def last_call_deleted(t: Db) -> Expect:
    """A repeat caller's last call is deleted: their earlier call, summed as followed by it, is their last one now
    (until refreshed, the stale call's stored facts alone name the visitor)."""
    earlier = f.alias("earlier")
    call = await t.pick(f.c.next_us.is_(None), f.c.multisite == 0, exists().where(
        earlier.c.visitor_id == f.c.visitor_id, earlier.c.site_id == f.c.site_id,
        earlier.c.next_us == f.c.created_us, earlier.c.created_us < f.c.created_us - 2 * factdays.DAY_US))
    e = await expect(t, call.id, {call.id}, "calls_by_day", total("calls_offered"), lambda s: s.row is None,
                     gone=True)
    async with t.session() as db, db.begin():
        await db.execute(delete(CallRecord).where(CallRecord.id == call.id))
    return e


async def visitor_on_another_site(t: Db) -> Expect:
    """A visitor id already calling on one site calls on another (a client may send any id): one caller, but a
    (site, visitor) pair per site for the non-caller figures."""
    middle = datetime.combine(FIRST, time(), timezone.utc) + timedelta(days=20)
    call = await t.pick(c.c.has_journey.is_(True), c.c.agent_id.is_not(None), f.c.next_us.is_(None),
                        c.c.created_at > middle)
    new_id, created = "c_facts_site_" + secrets.token_hex(4), call.created_at - timedelta(days=3)
    e = await expect(t, new_id, None, "calls_by_day", total("calls_offered"), lambda s: s.row.multisite == 1)
    async with t.session() as db, db.begin():
        site = Site(key="facts-other-" + secrets.token_hex(4), name="Other shop", secret_key="x" * 32,
                    allowed_origins=[], created_at=created)
        db.add(site)
        await db.flush()
        queue = Queue(site_id=site.id, name="sales", display_name="Sales", created_at=created)
        db.add(queue)
        await db.flush()
    await upsert_call(t, {**call._mapping, "id": new_id, "site_id": site.id, "queue_id": queue.id, "created_at": created,
                          "ringing_at": created, "answered_at": created + timedelta(seconds=5),
                          "ended_at": created + timedelta(minutes=1), "end_reason": "completed", "landing_url": None})
    return e


async def called_again_after_a_range(t: Db) -> Expect:
    """A caller seen in the middle of CASES' New York range calls again after it: in that range their call there is
    their last (followed by one after hi), so they are a caller and seen in it, though the sums no longer count it."""
    call = await t.pick(c.c.has_journey.is_(True), c.c.agent_id.is_not(None), f.c.next_us.is_(None),
                        f.c.multisite == 0, f.c.seen_before_us >= f.c.created_us - factdays.DAY_US // 2,
                        c.c.created_at >= datetime(2026, 3, 10, tzinfo=timezone.utc),
                        c.c.created_at < datetime(2026, 3, 25, tzinfo=timezone.utc))
    new_id, created = "c_facts_again_" + secrets.token_hex(4), datetime(2026, 3, 31, 12, tzinfo=timezone.utc)
    e = await expect(t, call.id, {new_id}, "calls_by_day", total("calls_offered"),
                     lambda s: s.row.next_us is not None)
    await upsert_call(t, {**call._mapping, "id": new_id, "created_at": created, "ringing_at": created,
                          "answered_at": created + timedelta(seconds=5), "ended_at": created + timedelta(minutes=1),
                          "end_reason": "completed", "landing_url": None})
    return e


WRITES: dict[str, Callable[[Db], Awaitable[Expect]]] = {
    "a-page-view-after-call": page_view_after_call, "b-landing-page-view": landing_page_view,
    "c-conversion": conversion_after_call, "d-survey-answer": survey_answer, "e-voicemail": voicemail,
    "f-call-updated": call_updated, "h-call-inserted": call_inserted, "j-queue-seller": seller_changed,
    "g-visitor-forgotten": visitor_forgotten, "k-session-shared": session_shared,
    "l-seen-the-day-before": seen_the_day_before, "m-last-call-deleted": last_call_deleted,
    "n-visitor-on-another-site": visitor_on_another_site, "o-called-again-after-a-range": called_again_after_a_range,
}


# ----- the checks, the same on both engines -----

async def check_generated(t: Db) -> None:
    assert await t.stale() == set()
    (calls,), (facts,) = [(await t.all(select(func.count()).select_from(table)))[0] for table in (c, f)]
    assert calls == facts > 50
    assert not await t.all(select(c.c.id).where(c.c.id.not_in(select(f.c.call_id))))
    await t.assert_exact()
    await t.assert_day_sums_match_the_rows()
    await check_copied_call_columns(t)


async def check_copied_call_columns(t: Db) -> None:
    """The attributed conversions' call columns as the migrations fill them equal what refresh wrote."""
    p = CallFactConversion.__table__
    columns = [p.c[name] for name in callfacts.CONVERSION_CALL_COLUMNS]
    pairs = select(p.c.call_id, p.c.conversion_id, *columns).order_by(p.c.call_id, p.c.conversion_id)
    written = await t.all(pairs)
    assert len(written) > 20 and any(r.source_kind for r in written) and any(r.person_id for r in written)
    assert {r.repeat_caller for r in written} == {0, 1}
    async with t.session() as db, db.begin():  # (repeat_caller: NOT NULL, and 1 by default)
        await db.execute(update(p).values({column.name: None if column.name != "repeat_caller" else 2
                                           for column in columns}))
        await db.execute(callfacts.copy_call_columns_to_conversions())
    assert await t.all(pairs) == written


async def check_write(t: Db, kind: str) -> None:
    assert await t.stale() == set()
    e = await WRITES[kind](t)
    stale = await t.stale()
    if e.gone:  # deleted calls' facts are never read: they are stale, or went with them in the same transaction
        for call_id in e.calls:
            assert call_id in stale or await t.seen(call_id) == Seen(None, set(), set()), (kind, call_id)
    else:
        assert e.calls <= stale, (kind, e.calls - stale)
    during = e.figure(await t.report(e.report))
    assert during != e.before, (kind, "the write should change this figure", during)
    await t.assert_exact()  # stale calls from the raw rows
    assert await t.catch_up() >= (0 if e.gone else 1)
    assert await t.stale() == set()
    assert e.figure(await t.report(e.report)) == during, kind
    await t.assert_exact()  # now from the refreshed facts
    await t.assert_day_sums_match_the_rows()
    assert e.check(await t.seen(e.subject)), (kind, await t.seen(e.subject))
    kept = await t.snapshot()  # the facts kept up incrementally are those computed from scratch
    async with t.session() as db, db.begin():
        await callfacts.mark_all_stale(db)
    await t.catch_up()
    for stored, scratch in zip(kept, await t.snapshot()):
        assert stored.keys() == scratch.keys(), kind
        assert all(a >= b for key in stored for a, b in zip(stored[key], scratch[key])), kind


async def check_other_window(t: Db) -> None:
    other = timedelta(days=3)
    async with t.session() as db:
        assert (await resolve(db, ALL, False, WINDOW)).facts and not (await resolve(db, ALL, False, other)).facts
    assert (await t.report("conversion", window=other)).rows != (await t.report("conversion")).rows
    await t.assert_exact(other)
    await t.catch_up(other)  # facts kept for 3 days now: the 7-day reports are computed from the raw rows
    async with t.session() as db:
        assert (await resolve(db, ALL, False, other)).facts and not (await resolve(db, ALL, False, WINDOW)).facts
    assert await t.stale() == set()
    await t.assert_exact(other)
    await t.assert_exact(WINDOW)


async def check_one_snapshot(t: Db) -> None:
    """A session's reports read one snapshot: a call committed meanwhile by another session is not in them (the day
    sums chosen in one statement must be those the next statements read), and is in a new session's."""
    call = await t.pick(c.c.agent_id.is_not(None))
    async with t.session() as db:
        before = await run_report(db, "summary", ALL, WINDOW)
        created = call.created_at + timedelta(minutes=1)
        await upsert_call(t, {**call._mapping, "id": "c_facts_snap_" + secrets.token_hex(4), "created_at": created,
                              "visitor_id": "v_facts_snap_" + secrets.token_hex(4), "landing_url": None})
        assert await run_report(db, "summary", ALL, WINDOW) == before
    after = await t.report("summary")
    assert after.records()[0]["calls_offered"] == before.records()[0]["calls_offered"] + 1
    await t.catch_up()


async def check_deleted_call_in_stale(t: Db) -> None:
    assert await t.stale() == set()
    gone = await t.pick(c.c.answered_at.is_(None), f.c.voicemails == 0)
    kept = await t.pick(c.c.id != gone.id)
    async with t.session() as db, db.begin():
        await db.execute(delete(CallRecord).where(CallRecord.id == gone.id))
        marked = set(await db.scalars(select(CallFactsStale.call_id)))  # (the trigger may have marked it)
        await db.execute(insert(CallFactsStale), [{"call_id": i} for i in {gone.id, kept.id} - marked])
    async with t.session() as db, db.begin():
        assert await callfacts.refresh(db, WINDOW) == 2
    assert await t.stale() == set()
    assert await t.seen(gone.id) == Seen(None, set(), set())
    assert (await t.seen(kept.id)).row is not None
    await t.assert_exact()


async def check_refresh_during_a_write(t: Db) -> None:
    """A call already stale; a page view of its caller is written (triggers run) but not yet committed while
    refresh runs: once both are done the call must be stale again or have the page view in its facts."""
    call = await t.pick(c.c.has_journey.is_(True), c.c.ended_at.is_not(None))
    async with t.session() as db, db.begin():
        await db.execute(update(CallRecord).where(CallRecord.id == call.id).values(disposition="facts race"))
    assert call.id in await t.stale()
    path = "/demo/facts-race"
    async with t.session() as writer:
        await writer.execute(insert(PageEvent).values(
            page_view(call, call.ended_at + timedelta(hours=1), "https://shop.example" + path)))

        async def refresh() -> int:
            async with t.session() as db, db.begin():
                return await callfacts.refresh(db, WINDOW)

        refreshing = asyncio.create_task(refresh())
        await asyncio.wait({refreshing}, timeout=2)  # SQLite: waits for the writer's lock; PostgreSQL: does not
        await writer.commit()
        await refreshing
    fast, full = await t.report("pages_after"), await t.report("pages_after", recount=True)
    assert row_where("path", path)(full) is not None
    assert call.id in await t.stale() or (1, path) in (await t.seen(call.id)).pages, "the page view was lost"
    assert fast == full


# ----- SQLite -----

@pytest.fixture(scope="module")
def generated(seeded_data_dir, tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("facts")
    generate_copy(seeded_data_dir, data_dir, VISITORS, SEED)
    return data_dir


@pytest.fixture
async def sqlite_db(generated, tmp_path):
    engine = create_engine(Settings(data_dir=copy_data(generated, tmp_path / "data")).resolved_database_url)
    try:
        yield Db(engine)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("check", [check_generated, check_other_window, check_deleted_call_in_stale,
                                   check_refresh_during_a_write, check_one_snapshot],
                         ids=lambda check: check.__name__[6:])
async def test_sqlite(sqlite_db, check):
    await check(sqlite_db)


@pytest.mark.parametrize("kind", list(WRITES))
async def test_sqlite_write_marks_its_calls_stale_and_reports_stay_exact(sqlite_db, kind):
    await check_write(sqlite_db, kind)


# ----- PostgreSQL: the same checks, one after another on one data set -----

@pytest.fixture
async def pg_db(pg_database, tmp_path):
    await upgrade_schema_async(pg_database)
    engine = create_engine(pg_database)
    try:
        async with async_sessionmaker(engine)() as db, db.begin():
            await seed_demo(db, demo_origins(Settings(data_dir=tmp_path, demo=True)))  # as the SQLite copy was
        await generate(engine, VISITORS, end=END, seed=SEED, days=DAYS, attribution_days=WINDOW.days)
        yield Db(engine)
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_postgres_facts_stay_exact_through_every_write(pg_db):
    await check_generated(pg_db)
    for kind in WRITES:
        await check_write(pg_db, kind)
    await check_deleted_call_in_stale(pg_db)
    await check_one_snapshot(pg_db)
    await check_other_window(pg_db)


@pytest.mark.postgres
async def test_postgres_a_page_view_committed_after_a_refresh_began_is_not_lost(pg_db):
    await check_refresh_during_a_write(pg_db)
