"""Every report on a small hand-built data set whose answers are worked out by hand (pages before and after, sources,
campaigns, landing pages, survey distribution, people, wait and talk, time to purchase), on SQLite and PostgreSQL;
local days and hours across daylight saving changes (including a zone whose clocks went back across midnight); the
call timeline; CSV cells that a spreadsheet would run as formulas."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from analytics import visitordays
from analytics.reports import REPORTS, ReportFilters, call_timeline, run_report
from analytics.sources import attribution_of
from talk.apitokens import create_token
from talk.app import create_app
from talk.db import create_engine
from talk.models import (
    Account, CallRecord, Conversion, PageEvent, Queue, SurveyAnswer, Voicemail,
)
from talk.settings import Settings
from tests.conftest import free_port

WINDOW = timedelta(days=7)
T = datetime(2026, 3, 10, 10, 0, tzinfo=timezone.utc)  # a Tuesday; 11:00 in Berlin
DAY = date(2026, 3, 10)
ORIGIN = "http://127.0.0.1:8080"
LANDING = f"{ORIGIN}/demo/thanks"
EVIL = '=HYPERLINK("http://evil.example","click")'


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


@dataclass
class Known:
    sessions: async_sessionmaker[AsyncSession]
    site_id: int
    support_id: int
    seller_queue_id: int
    agent_id: int
    seller_id: int


class Builder:
    """Rows as the product writes them, with readable defaults."""

    def __init__(self, db: AsyncSession, known: Known) -> None:
        self.db, self.known, self.n = db, known, 0

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n:020d}"

    def view(self, visitor: str, session: str, ts: datetime, url: str, referrer: str | None = None) -> None:
        a = attribution_of(url)
        self.db.add(PageEvent(site_id=self.known.site_id, event_id=self._id("e"), visitor_id=visitor,
                              session_id=session, type="pageview", ts=ts, url=url, path=a.path, title="Page",
                              referrer=referrer, utm_source=a.utm["source"], utm_medium=a.utm["medium"],
                              utm_campaign=a.utm["campaign"], click_id_type=a.click_id_type, click_id=a.click_id))

    def call(self, call_id: str, visitor: str, session: str | None, created: datetime, *, ended: float,
             answered: float | None = None, reason: str = "completed", seller: bool = False,
             landing: bool = False) -> None:
        """A call `ended` seconds after `created`; answered calls are the demo agent's (or seller's)."""
        k = self.known
        answerer = (k.seller_id if seller else k.agent_id) if answered is not None else None
        self.db.add(CallRecord(
            id=call_id, site_id=k.site_id, queue_id=k.seller_queue_id if seller else k.support_id,
            agent_id=answerer, visitor_id=visitor, state="ended", end_reason=reason, page_url=f"{ORIGIN}/demo/p/1",
            created_at=created, ringing_at=created + s(2),
            answered_at=created + s(answered) if answered is not None else None, ended_at=created + s(ended),
            session_id=session, has_journey=session is not None, channel="seller" if seller else "agent",
            landing_url=f"{LANDING}?talk_call={call_id}" if landing else None))

    def buy(self, visitor: str, ts: datetime, value: float) -> None:
        self.db.add(Conversion(site_id=self.known.site_id, order_id=self._id("A"), visitor_id=visitor, value=value,
                               currency="EUR", ts=ts, origin="browser"))

    def survey(self, call_id: str, rating: int, comment: str | None, at: datetime) -> None:
        self.db.add(SurveyAnswer(call_id=call_id, queue_id=self.known.support_id, agent_id=self.known.agent_id,
                                 rating=rating, comment=comment, created_at=at))


async def build(known: Known) -> None:
    """A: three pages, calls, is answered (wait 10 s, talk 100 s), lands, views one more page, buys exactly the window
    after the end (49.00, attributed) and 1 µs later (100.00, not). B: arrives from Google, abandons a call, then a
    seller call is missed with a voicemail. C (no consent) is answered (wait 20 s, talk 300 s). D never calls and
    buys (10.00). E calls two days later (outside the range)."""
    async with known.sessions() as db, db.begin():
        b = Builder(db, known)
        b.view("v_a", "s_a", T - s(120), f"{ORIGIN}/demo/?utm_source=newsletter&utm_medium=email&utm_campaign=spring")
        b.view("v_a", "s_a", T - s(60), f"{ORIGIN}/demo/p/1")
        b.view("v_a", "s_a", T - s(30), f"{ORIGIN}/demo/p/2")
        b.call("c_a", "v_a", "s_a", T, answered=10, ended=110, landing=True)
        b.view("v_a", "s_a", T + s(112), f"{LANDING}?talk_call=c_a")
        b.view("v_a", "s_a", T + s(200), f"{ORIGIN}/demo/p/3")
        b.buy("v_a", T + s(110) + WINDOW, 49.0)
        b.buy("v_a", T + s(110) + WINDOW + timedelta(microseconds=1), 100.0)
        b.survey("c_a", 5, "<b>great</b> & thanks", T + s(150))
        b.view("v_b", "s_b", T + s(3600), f"{ORIGIN}/demo/p/1", referrer="https://www.google.com/")
        b.call("c_b", "v_b", "s_b", T + s(3630), ended=30, reason="caller-cancelled")
        b.call("c_d", "v_b", "s_b", T + s(3700), ended=21, reason="no-agent", seller=True)
        db.add(Voicemail(id="vm_1", call_id="c_d", site_id=known.site_id, queue_id=known.seller_queue_id,
                         recipient_id=known.seller_id, buyer_alias="Buyer 1", file_name="vm_1.wav",
                         duration_seconds=5.0, created_at=T + s(3730)))
        b.call("c_c", "v_c_throwaway", None, T + s(7200), answered=20, ended=320, landing=True)
        b.survey("c_c", 2, EVIL, T + s(7600))
        b.view("v_d", "s_d", T + s(100), f"{ORIGIN}/demo/")
        b.buy("v_d", T + s(500), 10.0)
        b.call("c_e", "v_e", None, T + timedelta(days=2), answered=5, ended=50)
        await visitordays.rebuild(db)  # page views written with the ORM, not through the event store


async def known_ids(sessions) -> Known:
    async with sessions() as db:
        support = await db.scalar(select(Queue).where(Queue.name == "support"))
        seller_queue = await db.scalar(select(Queue).where(Queue.kind == "seller"))
        agent = await db.scalar(select(Account.id).where(Account.email == "agent@demo.test"))
    return Known(sessions, support.site_id, support.id, seller_queue.id, agent, seller_queue.seller_id)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, settings) -> str:
    """The seeded SQLite copy, or a fresh PostgreSQL database (seeded by the `known` fixture)."""
    return settings.resolved_database_url if request.param == "sqlite" else request.getfixturevalue("pg_database")


@pytest.fixture
async def known(database_url, tmp_path) -> AsyncIterator[Known]:
    url = database_url
    if url.startswith("postgresql"):
        app = create_app(Settings(data_dir=tmp_path, demo=True, database_url=url))  # migrate and seed the demo
        contexts = [ctx(app) for ctx in app.cleanup_ctx]
        for ctx in contexts:
            await ctx.__anext__()
        for ctx in reversed(contexts):
            await anext(ctx, None)
    engine = create_engine(url)
    try:
        yield await known_ids(async_sessionmaker(engine, expire_on_commit=False))
    finally:
        await engine.dispose()


async def rows(known: Known, name: str, tz: str = "Europe/Berlin", start: date = DAY, end: date = DAY,
               **filters) -> list[dict]:
    async with known.sessions() as db:
        report = await run_report(db, name, ReportFilters(start, end, tz, **filters), WINDOW)
    return report.records()


async def test_every_report_on_known_data(known):
    await build(known)
    summary = (await rows(known, "summary"))[0]
    assert summary == {
        "calls_offered": 4, "calls_answered": 2, "calls_abandoned": 1, "calls_missed": 1, "voicemails": 1,
        "answer_rate": 0.5, "callers": 3, "callers_converted": 1, "conversion_rate_callers": 1 / 3,
        "conversions_after_calls": 1, "revenue_after_calls": 49.0,  # the purchase 1 µs after the window is not
        "non_callers": 1, "non_callers_converted": 1, "conversion_rate_non_callers": 1.0,
        "survey_responses": 2, "survey_rating_sum": 7, "survey_average": 3.5,
    }
    page = ("path", "views", "calls", "callers", "calls_converted", "conversion_rate")
    assert await rows(known, "pages_before") == [dict(zip(page, r)) for r in [
        ("/demo/p/1", 2, 3, 2, 1, 1 / 3), ("/demo/", 1, 1, 1, 1, 1.0), ("/demo/p/2", 1, 1, 1, 1, 1.0)]]
    assert await rows(known, "pages_after") == [dict(zip(page, ("/demo/p/3", 1, 1, 1, 1, 1.0)))]  # not the landing
    group = ("calls", "callers", "calls_converted", "conversion_rate", "conversions", "revenue")
    assert await rows(known, "sources") == [dict(zip(("kind", "source", *group), r)) for r in [
        ("search", "google.com", 2, 1, 0, 0.0, 0, 0.0), ("campaign", "newsletter", 1, 1, 1, 1.0, 1, 49.0),
        ("no_consent", None, 1, 1, 0, 0.0, 0, 0.0)]]
    assert await rows(known, "campaigns") == [
        dict(zip(("utm_source", "utm_medium", "utm_campaign", *group), ("newsletter", "email", "spring", 1, 1, 1, 1.0,
                                                                        1, 49.0)))]
    assert await rows(known, "landing_pages") == [{
        "landing_page": LANDING, "calls": 2, "callers": 2, "landed": 1, "survey_responses": 2,
        "survey_completion": 1.0, "survey_average": 3.5, "calls_converted": 1, "conversion_rate": 0.5,
        "conversions": 1, "revenue": 49.0}]
    distribution = {"rating_1": 0, "rating_2": 1, "rating_3": 0, "rating_4": 0, "rating_5": 1}
    figures = {"survey_responses": 2, "survey_rating_sum": 7, "survey_average": 3.5, **distribution}
    assert await rows(known, "survey") == [
        {"dimension": "all", "id": None, "name": None, **figures},
        {"dimension": "queue", "id": known.support_id, "name": "support", **figures},
        {"dimension": "agent", "id": known.agent_id, "name": "Alex Agent", **figures}]
    comments = await rows(known, "survey_comments")
    assert [(c["call_id"], c["rating"], c["comment"], c["queue"], c["person_name"]) for c in comments] == [
        ("c_c", 2, EVIL, "support", "Alex Agent"), ("c_a", 5, "<b>great</b> & thanks", "support", "Alex Agent")]
    people = ("role", "id", "name", "calls", "calls_answered", "answer_rate", "talk_total_seconds", "talk_avg_seconds",
              "survey_responses", "survey_average", "calls_converted", "conversion_rate", "conversions", "revenue")
    assert await rows(known, "people") == [dict(zip(people, r)) for r in [
        ("agent", known.agent_id, "Alex Agent", 2, 2, 1.0, 400.0, 200.0, 2, 3.5, 1, 0.5, 1, 49.0),
        ("agent", None, None, 1, 0, 0.0, 0.0, None, 0, None, 0, 0.0, 0, 0.0),  # no agent took it
        ("seller", known.seller_id, "Sam Seller", 1, 0, 0.0, 0.0, None, 0, None, 0, 0.0, 0, 0.0)]]
    assert await rows(known, "wait_and_talk") == [{
        "calls_answered": 2, "wait_avg_seconds": 15.0, "wait_median_seconds": 15.0, "wait_p90_seconds": 20.0,
        "wait_max_seconds": 20.0, "calls_talked": 2, "talk_total_seconds": 400.0, "talk_avg_seconds": 200.0,
        "talk_median_seconds": 200.0, "talk_p90_seconds": 300.0, "talk_max_seconds": 300.0}]
    assert (await rows(known, "conversion"))[0] == {
        "calls_offered": 4, "callers": 3, "callers_converted": 1, "conversion_rate_callers": 1 / 3, "non_callers": 1,
        "non_callers_converted": 1, "conversion_rate_non_callers": 1.0, "conversions_after_calls": 1,
        "revenue_after_calls": 49.0, "orders_per_call": 0.25, "time_to_purchase_median_seconds": WINDOW.total_seconds(),
        "time_to_purchase_avg_seconds": WINDOW.total_seconds()}
    by_hour = {(r["weekday_name"], r["hour"]): r for r in await rows(known, "calls_by_hour_of_week")}
    assert {key: (r["calls_offered"], r["calls_answered"], r["voicemails"]) for key, r in by_hour.items()
            if r["calls_offered"]} == {("Tuesday", 11): (1, 1, 0), ("Tuesday", 12): (2, 0, 1),
                                       ("Tuesday", 13): (1, 1, 0)}
    assert [r["calls_offered"] for r in await rows(known, "calls_by_day", start=DAY, end=DAY + timedelta(days=2))] \
        == [4, 0, 1]

    # Filters: channel, queue; a day with nothing.
    assert (await rows(known, "summary", channel="seller"))[0]["calls_offered"] == 1
    assert (await rows(known, "summary", queue="support", site="demo-shop"))[0]["calls_offered"] == 3
    empty = (await rows(known, "summary", start=DAY - timedelta(days=5), end=DAY - timedelta(days=5)))[0]
    assert empty["calls_offered"] == 0 and empty["answer_rate"] is None and empty["survey_average"] is None
    for name in REPORTS:  # nothing breaks on an empty range
        await rows(known, name, start=date(2020, 1, 1), end=date(2020, 1, 1))


async def test_call_timeline(known):
    await build(known)
    async with known.sessions() as db:
        timeline = await call_timeline(db, "c_a", WINDOW)
        assert await call_timeline(db, "c_nope", WINDOW) is None
        anonymous = await call_timeline(db, "c_c", WINDOW)
    assert [p["path"] for p in timeline["pages_before"]] == ["/demo/", "/demo/p/1", "/demo/p/2"]
    assert [p["path"] for p in timeline["pages_after"]] == ["/demo/p/3"]
    assert [c["value"] for c in timeline["conversions"]] == [49.0]
    assert timeline["call"]["wait_seconds"] == 10.0 and timeline["call"]["talk_seconds"] == 100.0
    assert timeline["call"]["outcome"] == "answered" and timeline["survey"]["rating"] == 5
    assert timeline["person"]["name"] == "Alex Agent" and timeline["source"]["kind"] == "campaign"
    assert timeline["landing_url"] == f"{LANDING}?talk_call=c_a"
    assert anonymous["visitor_id"] is None and anonymous["pages_before"] == [] and anonymous["source"] is None


async def test_local_days_and_hours_across_clock_changes(known):
    """Berlin springs forward (29 March 2026), New York falls back (1 November 2026: 01:30 happens twice), and in
    St. John's the clocks went back from 00:01 to 23:01 on 7 November 2010, so an instant after that day's first
    midnight is on the day before again: the local date, not lo <= ts < hi, decides a call's day."""
    utc = timezone.utc
    times = {
        "c_berlin_1": datetime(2026, 3, 29, 0, 30, tzinfo=utc),  # 01:30 CET, Sunday
        "c_berlin_2": datetime(2026, 3, 29, 1, 30, tzinfo=utc),  # 03:30 CEST
        "c_ny_1": datetime(2026, 11, 1, 5, 30, tzinfo=utc),  # 01:30 EDT, Sunday
        "c_ny_2": datetime(2026, 11, 1, 6, 30, tzinfo=utc),  # 01:30 EST
        "c_sj_1": datetime(2010, 11, 7, 2, 30, 30, tzinfo=utc),  # 00:00:30 NDT on 7 November
        "c_sj_2": datetime(2010, 11, 7, 2, 45, tzinfo=utc),  # 23:15 NST on 6 November (after the first midnight)
    }
    async with known.sessions() as db, db.begin():
        b = Builder(db, known)
        for call_id, created in times.items():
            b.call(call_id, f"v_{call_id}", None, created, ended=5, reason="no-agent")

    def hours(tz: str, start: date, end: date):
        return rows(known, "calls_by_hour_of_week", tz, start, end)

    berlin = {(r["weekday"], r["hour"]): r["calls_offered"] for r in await hours("Europe/Berlin", date(2026, 3, 29),
                                                                                   date(2026, 3, 29))}
    assert {k: n for k, n in berlin.items() if n} == {(6, 1): 1, (6, 3): 1}
    new_york = await hours("America/New_York", date(2026, 11, 1), date(2026, 11, 1))
    assert {(r["weekday"], r["hour"]): r["calls_offered"] for r in new_york if r["calls_offered"]} == {(6, 1): 2}

    zone = ZoneInfo("America/St_Johns")
    expected = {}
    for call_id in ("c_sj_1", "c_sj_2"):
        day = times[call_id].astimezone(zone).date()  # the truth's rule for calls
        expected[day.isoformat()] = expected.get(day.isoformat(), 0) + 1
    assert expected == {"2010-11-07": 1, "2010-11-06": 1}
    by_day = await rows(known, "calls_by_day", "America/St_Johns", date(2010, 11, 6), date(2010, 11, 7))
    assert {r["date"]: r["calls_offered"] for r in by_day} == expected
    only_7th = await rows(known, "summary", "America/St_Johns", date(2010, 11, 7), date(2010, 11, 7))
    assert only_7th[0]["calls_offered"] == 1


# ----- over HTTP: CSV cells are data, never formulas -----

@pytest.fixture
async def server_url(settings, tmp_path) -> AsyncIterator[tuple[str, str, Known]]:
    settings = Settings(data_dir=settings.data_dir, demo=True, port=free_port(), retention_days=36500)
    engine = create_engine(settings.resolved_database_url)
    known = await known_ids(async_sessionmaker(engine, expire_on_commit=False))
    await build(known)
    async with known.sessions() as db, db.begin():
        token = await create_token(db, "reports")
    server = TestServer(create_app(settings), host="127.0.0.1", port=settings.port)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}", token, known
    finally:
        await server.close()
        await engine.dispose()


async def test_csv_cells_that_look_like_formulas_are_defused(server_url, http):
    base_url, token, _ = server_url
    params = {"from": DAY.isoformat(), "to": DAY.isoformat(), "tz": "Europe/Berlin"}
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(f"{base_url}/api/v1/reports/survey_comments", params={**params, "format": "csv"},
                        headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Disposition"].startswith('attachment; filename="talk-survey_comments-')
        header, *lines = list(csv.reader(io.StringIO(await response.text())))
    comments = [line[header.index("comment")] for line in lines]
    assert comments == ["'" + EVIL, "<b>great</b> & thanks"]  # a formula is defused; markup stays text
    async with http.get(f"{base_url}/api/v1/reports/survey_comments", params=params, headers=headers) as response:
        body = await response.json()
    assert [row["comment"] for row in body["rows"]] == [EVIL, "<b>great</b> & thanks"]  # JSON: as typed
