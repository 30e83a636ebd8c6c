"""`talk generate` / `talk demo --generate`: synthetic demo data, reproducible from its seed, written as the product
writes it (the call API reads it back), with planted edge cases and a ground truth that plain SQL agrees with, on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from analytics.eventstore import SqliteEventStore
from analytics.generator import MARKUP_COMMENT, GeneratorError, generate
from analytics.generator_truth import Truth
from analytics.ingest import event_rows
from analytics.validation import EventBatch
from signaling.callstore import CallStore
from talk.app import create_app, demo_origins
from talk.apitokens import create_token
from talk.cli import main
from talk.db import SESSIONMAKER_KEY, create_engine, upgrade_schema_async
from talk.demo import seed_demo
from talk.models import CallRecord
from talk.settings import Settings
from tests.conftest import free_port
from tests.e2e import TalkDemo, http_get, talk_command

END = datetime.combine(datetime.now(timezone.utc).date(), time(0), tzinfo=timezone.utc)  # fixed within a day
VISITORS = 400
BERLIN = ZoneInfo("Europe/Berlin")
WINDOW = timedelta(days=7)
TABLES = ("events", "calls", "survey_answers", "voicemails", "conversions")


def copy_seeded(seeded: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("talk.db", "secret.key"):
        shutil.copy(seeded / name, target / name)
    return target


async def generate_into(data_dir: Path, visitors: int = VISITORS, seed: int = 5, **options) -> Truth:
    engine = create_engine(Settings(data_dir=data_dir).resolved_database_url)
    try:
        return await generate(engine, visitors, end=END, seed=seed, **options)
    finally:
        await engine.dispose()


def rows(data_dir: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(data_dir / "talk.db") as db:
        return db.execute(sql, params).fetchall()


def dump(data_dir: Path) -> dict[str, list[tuple]]:
    return {table: rows(data_dir, f"SELECT * FROM {table} ORDER BY 1, 2") for table in TABLES}


def stored(text: str) -> datetime:
    """A datetime as SQLite holds it (UTC text)."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def text(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


@pytest.fixture(scope="module")
def generated(seeded_data_dir, tmp_path_factory) -> tuple[Path, Truth]:
    """One generated data set for the read-only tests."""
    data_dir = copy_seeded(seeded_data_dir, tmp_path_factory.mktemp("generated"))
    return data_dir, asyncio.run(generate_into(data_dir))


# ----- reproducible -----

async def test_same_seed_gives_identical_rows_and_another_seed_other_rows(seeded_data_dir, tmp_path, generated):
    first_dir, first = generated
    again = copy_seeded(seeded_data_dir, tmp_path / "again")
    other = copy_seeded(seeded_data_dir, tmp_path / "other")
    second = await generate_into(again)
    third = await generate_into(other, seed=6)

    assert dump(again) == dump(first_dir)
    assert second.counts == first.counts and second.scenarios == first.scenarios
    assert [c.id for c in second.calls] == [c.id for c in first.calls]
    period = (END.date() - timedelta(days=30), END.date())
    assert second.summary(*period, "Europe/Berlin") == first.summary(*period, "Europe/Berlin")

    different = dump(other)
    for table in TABLES:
        assert different[table] != dump(first_dir)[table], table
    assert not {c.id for c in third.calls} & {c.id for c in first.calls}


async def test_the_same_seed_twice_in_one_database_fails_cleanly_and_writes_nothing(seeded_data_dir, tmp_path):
    data_dir = copy_seeded(seeded_data_dir, tmp_path / "twice")
    await generate_into(data_dir, visitors=40)
    before = dump(data_dir)
    with pytest.raises(GeneratorError, match="another --seed"):
        await generate_into(data_dir, visitors=40)
    assert dump(data_dir) == before  # one transaction: nothing of the failed run is left
    indexes = {name for (name,) in rows(data_dir, "SELECT name FROM sqlite_master WHERE type = 'index' "
                                                  "AND tbl_name = 'events'")}
    assert {"ix_events_visitor_ts", "ix_events_session_ts", "ix_events_site_ts"} <= indexes


# ----- what the data holds -----

def test_edge_cases_are_in_the_data(generated):
    data_dir, truth = generated
    scenarios = truth.scenarios
    calls = {r[0]: r for r in rows(data_dir, "SELECT id, visitor_id, created_at, ended_at, has_journey, session_id, "
                                             "channel, answered_at FROM calls")}

    # A call crossing midnight in Europe/Berlin, counted on the day it was made; and one crossing midnight UTC.
    crossing = [i for i, r in calls.items()
                if stored(r[2]).astimezone(BERLIN).date() != stored(r[3]).astimezone(BERLIN).date()]
    assert scenarios["midnight_berlin"] in crossing
    call = calls[scenarios["midnight_berlin"]]
    made, ended = stored(call[2]).astimezone(BERLIN).date(), stored(call[3]).astimezone(BERLIN).date()
    assert ended == made + timedelta(days=1)
    per_day = {d["date"]: d for d in truth.calls_per_day(made, ended, "Europe/Berlin")}
    for day in (made, ended):
        lo = text(datetime.combine(day, time(0), tzinfo=BERLIN))
        hi = text(datetime.combine(day + timedelta(days=1), time(0), tzinfo=BERLIN))
        [(count,)] = rows(data_dir, "SELECT count(*) FROM calls WHERE created_at >= ? AND created_at < ?", lo, hi)
        assert per_day[day]["calls_offered"] == count
    utc_call = calls[scenarios["midnight_utc"]]
    assert stored(utc_call[2]).date() != stored(utc_call[3]).date()

    # Conversions exactly the window, the window - 1 s and the window + 1 s after a call's end.
    deltas = {}
    for order_id, visitor_id, ts in rows(data_dir, "SELECT order_id, visitor_id, ts FROM conversions"):
        for r in calls.values():
            if r[1] == visitor_id:
                deltas.setdefault(order_id, []).append(stored(ts) - stored(r[3]))
    second = timedelta(seconds=1)
    for name, delta, inside in (("window_exact", WINDOW, True), ("window_minus_1s", WINDOW - second, True),
                                ("window_plus_1s", WINDOW + second, False)):
        planted = scenarios[name]
        assert deltas[planted["order_id"]] == [delta], name
        expected = truth.expected_journey(planted["call_id"])["conversions"]
        assert (planted["order_id"] in expected) is inside, name

    # A visitor with several calls (agent and seller), one purchase within the window of all three.
    several = scenarios["several_calls"]
    mine = [r for r in calls.values() if r[1] == several["visitor_id"]]
    assert len(mine) == 3 and {r[6] for r in mine} == {"agent", "seller"}
    assert rows(data_dir, "SELECT visitor_id FROM calls GROUP BY visitor_id HAVING count(*) >= 2")
    attributed_to = [i for i in several["call_ids"] if several["order_id"] in truth.expected_journey(i)["conversions"]]
    assert attributed_to == several["call_ids"]

    # Calls without a journey: no session, a visitor id of their own with no page views.
    for call_id in scenarios["no_journey"]:
        r = calls[call_id]
        assert r[4] == 0 and r[5] is None
        assert rows(data_dir, "SELECT count(*) FROM events WHERE visitor_id = ?", r[1]) == [(0,)]
    assert rows(data_dir, "SELECT count(*) FROM calls WHERE has_journey = 0 AND session_id IS NOT NULL") == [(0,)]

    # Survey comments with markup, for the reports' escaping; voicemails named as the recorder names them.
    assert (MARKUP_COMMENT,) in rows(data_dir, "SELECT comment FROM survey_answers")
    voicemails = rows(data_dir, "SELECT v.id, v.file_name, v.buyer_alias, c.channel, v.recipient_id FROM voicemails v "
                                "JOIN calls c ON c.id = v.call_id")
    assert voicemails and all(file == f"{vm}.wav" for vm, file, *_ in voicemails)
    assert all(alias.startswith("Buyer ") and recipient for _, _, alias, channel, recipient in voicemails
               if channel == "seller")


def test_calls_are_recorded_as_the_switchboard_records_them(generated):
    data_dir, truth = generated
    found = rows(data_dir, "SELECT c.id, c.state, c.end_reason, c.created_at, c.ringing_at, c.answered_at, c.ended_at, "
                           "c.agent_id, c.landing_url, q.name, c.channel, c.endpoint_id, c.listing, c.disposition "
                           "FROM calls c JOIN queues q ON q.id = c.queue_id")
    assert len(found) == truth.counts["calls"] and len(found) == len(truth.calls)
    reasons = set()
    for (call_id, state, reason, created, ringing, answered, ended, agent, landing, queue, channel, endpoint, listing,
         disposition) in found:
        reasons.add(reason)
        times = [stored(t) for t in (created, ringing, answered, ended) if t]
        assert state == "ended" and times == sorted(times), call_id
        if answered:
            assert agent is not None and reason in ("completed", "caller-disconnected", "agent-disconnected", "failed")
        else:
            assert reason in ("caller-cancelled", "caller-disconnected", "no-agent", "agent-declined")
            assert landing is None and disposition is None
        if reason in ("no-agent", "agent-declined"):
            assert agent is None, call_id  # a declined or rung-out call went back to the queue without an agent
        if queue == "support" and answered:  # the demo queue redirects: to its page or the disposition's
            assert landing.endswith(f"?talk_call={call_id}")
            assert ("/demo/offer" in landing) == (disposition == "Offer sent")
        assert (channel == "seller") == (endpoint is not None) == (listing is not None) == queue.startswith("seller-")
    assert {"completed", "caller-cancelled", "no-agent"} <= reasons


async def test_rows_are_what_the_product_writes(generated, tmp_path):
    """Page views equal what event_rows and the SQLite event store make of the same page views; calls what the call
    store writes."""
    source, truth = generated
    data_dir = copy_seeded(source, tmp_path / "formats")
    columns = ("site_id", "visitor_id", "session_id", "type", "ts", "url", "path", "title", "referrer", "utm_source",
               "utm_medium", "utm_campaign", "utm_term", "utm_content", "click_id_type", "click_id", "props", "ip_hash")
    sample = rows(data_dir, f"SELECT event_id, {', '.join(columns)} FROM events "
                            "WHERE url LIKE '%?%' OR rowid % 50 = 0 ORDER BY rowid LIMIT 80")
    click, utm = 1 + columns.index("click_id"), 1 + columns.index("utm_source")
    assert any(r[click] for r in sample) and any(r[utm] for r in sample)  # derived from the URL, as event_rows does
    again = []
    for event_id, *values in sample:
        row = dict(zip(columns, values))
        ts = stored(row["ts"])
        batch = EventBatch.model_validate({
            "site": "demo-shop", "visitor_id": row["visitor_id"], "session_id": row["session_id"],
            "events": [{"id": "e_again" + event_id[2:], "type": "pageview", "ts": int(ts.timestamp() * 1000),
                        "url": row["url"], "title": row["title"], "referrer": row["referrer"] or ""}]})
        [made] = event_rows(batch, row["site_id"], ts, row["ip_hash"])  # no sent_at: stored as received, at ts
        again.append(made)
    store = SqliteEventStore(str(data_dir / "talk.db"))
    try:
        assert await store.write_group([again]) == [len(again)]
    finally:
        await store.close()
    rewritten = {event_id[len("e_again"):]: values for event_id, *values in
                 rows(data_dir, f"SELECT event_id, {', '.join(columns)} FROM events WHERE event_id LIKE 'e_again%'")}
    assert len(rewritten) == len(sample)
    for event_id, *values in sample:
        assert rewritten[event_id[2:]] == values, event_id

    engine = create_engine(Settings(data_dir=data_dir).resolved_database_url)
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with sessions() as db:
            records = list(await db.scalars(select(CallRecord).order_by(CallRecord.id).limit(10)))
        copies = [{**{c.name: getattr(r, c.name) for c in CallRecord.__table__.columns}, "id": "c_again" + r.id[2:]}
                  for r in records]
        await CallStore(sessions)._upsert(copies)
    finally:
        await engine.dispose()
    original = rows(data_dir, "SELECT * FROM calls WHERE id NOT LIKE 'c_again%' ORDER BY id LIMIT 10")
    copied = rows(data_dir, "SELECT * FROM calls WHERE id LIKE 'c_again%' ORDER BY id")
    assert [r[1:] for r in copied] == [r[1:] for r in original]


# ----- the truth against plain SQL -----

def test_truth_summary_agrees_with_plain_sql(generated):
    data_dir, truth = generated
    midnight_day = stored(rows(data_dir, "SELECT created_at FROM calls WHERE id = ?",
                               truth.scenarios["midnight_berlin"])[0][0]).astimezone(BERLIN).date()
    ranges = [(END.date() - timedelta(days=31), END.date(), "Europe/Berlin"),
              (midnight_day, midnight_day, "Europe/Berlin"), (midnight_day, midnight_day + timedelta(days=6), "UTC"),
              (midnight_day, midnight_day, "America/New_York")]
    checked = 0
    for start, end, tz in ranges:
        zone = ZoneInfo(tz)
        lo = text(datetime.combine(start, time(0), tzinfo=zone))
        hi = text(datetime.combine(end + timedelta(days=1), time(0), tzinfo=zone))
        for queue, channel in ((None, None), ("support", None), (None, "seller")):
            where = "c.created_at >= ? AND c.created_at < ?" + (" AND q.name = ?" if queue else "") + \
                    (" AND c.channel = ?" if channel else "")
            params = [lo, hi, *([queue] if queue else []), *([channel] if channel else [])]
            [(offered, answered, callers)] = rows(
                data_dir, "SELECT count(*), count(c.answered_at), count(DISTINCT c.visitor_id) FROM calls c "
                          f"JOIN queues q ON q.id = c.queue_id WHERE {where}", *params)
            [(voicemails,)] = rows(data_dir, "SELECT count(*) FROM voicemails v JOIN calls c ON c.id = v.call_id "
                                             f"JOIN queues q ON q.id = c.queue_id WHERE {where}", *params)
            [(responses, rating_sum)] = rows(
                data_dir, "SELECT count(*), coalesce(sum(s.rating), 0) FROM survey_answers s "
                          f"JOIN calls c ON c.id = s.call_id JOIN queues q ON q.id = c.queue_id WHERE {where}", *params)
            summary = truth.summary(start, end, tz, queue=queue, channel=channel)
            assert (summary["calls_offered"], summary["calls_answered"], summary["callers"], summary["voicemails"],
                    summary["survey_responses"], summary["survey_rating_sum"]) == \
                (offered, answered, callers, voicemails, responses, rating_sum), (start, end, tz, queue, channel)
            assert summary["calls_answered"] + summary["calls_abandoned"] + summary["calls_missed"] == offered
            checked += offered
    assert checked > truth.counts["calls"]  # the ranges held calls (the whole period and the midnight day)
    whole = truth.summary(END.date() - timedelta(days=31), END.date(), "Europe/Berlin")
    assert whole["calls_offered"] == len(truth.calls) and whole["callers_converted"] >= 1 and whole["non_callers"] > 0
    assert truth.summary(END.date() - timedelta(days=31), END.date(), "UTC", site="other-shop")["calls_offered"] == 0


# ----- the product reads it -----

async def test_call_api_returns_the_generated_journeys(generated, tmp_path):
    source, truth = generated
    data_dir = copy_seeded(source, tmp_path / "api")
    settings = Settings(data_dir=data_dir, demo=True, port=free_port())
    server = TestServer(create_app(settings), host="127.0.0.1", port=settings.port)
    await server.start_server()
    try:
        async with server.app[SESSIONMAKER_KEY]() as db, db.begin():
            token = await create_token(db, "generator")
        with_journey = [c for c in truth.calls if c.has_journey]
        picked = [*truth.scenarios["several_calls"]["call_ids"], truth.scenarios["midnight_berlin"],
                  *(truth.scenarios[n]["call_id"] for n in ("window_exact", "window_minus_1s", "window_plus_1s")),
                  *truth.scenarios["no_journey"], *(c.id for c in with_journey[::4])]
        async with aiohttp.ClientSession() as http:
            for call_id in picked:
                async with http.get(f"http://127.0.0.1:{server.port}/api/v1/calls/{call_id}",
                                    headers={"Authorization": f"Bearer {token}"}) as response:
                    assert response.status == 200, await response.text()
                    body = await response.json()
                call, expected = truth.call(call_id), truth.expected_journey(call_id)
                assert [p["url"] for p in body["pages_before"]] == expected["pages_before"], call_id
                assert [p["url"] for p in body["pages_after"]] == expected["pages_after"], call_id
                assert [c["order_id"] for c in body["conversions"]] == expected["conversions"], call_id
                assert (body["end_reason"], body["landing_url"], body["disposition"]) == \
                    (call.end_reason, call.landing_url, call.disposition)
                assert datetime.fromisoformat(body["created_at"]) == call.created_at
                assert datetime.fromisoformat(body["ended_at"]) == call.ended_at
                assert (body["survey"] or {}).get("rating") == call.survey_rating
                assert body["visitor_id"] == (call.visitor_id if call.has_journey else None)
                if call.has_journey:
                    assert body["pages_before"] and body["source"]["kind"]
    finally:
        await server.close()
    several = [truth.expected_journey(i) for i in truth.scenarios["several_calls"]["call_ids"]]
    assert several[1]["pages_before"] and several[1]["pages_after"]  # the answered one: before and after
    no_journey = truth.expected_journey(truth.scenarios["no_journey"][0])
    assert no_journey["pages_before"] == [] and len(no_journey["conversions"]) == 1  # bought, by call id


# ----- PostgreSQL -----

@pytest.mark.postgres
async def test_postgres_gets_the_same_data_and_sql_agrees(pg_database, generated, tmp_path):
    sqlite_dir, sqlite_truth = generated
    await upgrade_schema_async(pg_database)
    engine = create_engine(pg_database)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as db, db.begin():
            await seed_demo(db, demo_origins(Settings(data_dir=tmp_path, demo=True)))  # as the SQLite copy was
        truth = await generate(engine, VISITORS, end=END, seed=5)
    finally:
        await engine.dispose()
    period = (END.date() - timedelta(days=31), END.date())
    assert truth.counts == sqlite_truth.counts
    assert truth.summary(*period, "Europe/Berlin") == sqlite_truth.summary(*period, "Europe/Berlin")

    db = await asyncpg.connect(pg_database.replace("+asyncpg", ""))
    try:
        per_day = await db.fetch("SELECT (created_at AT TIME ZONE 'Europe/Berlin')::date AS day, count(*) AS offered, "
                                 "count(answered_at) AS answered FROM calls GROUP BY 1")
        events = await db.fetch("SELECT event_id, visitor_id, session_id, ts, url, path, title, referrer, utm_source, "
                                "utm_campaign, click_id_type, click_id, props::text, ip_hash FROM events")
        conversions = await db.fetch("SELECT order_id, value, ts FROM conversions")
    finally:
        await db.close()
    days = {d["date"]: d for d in truth.calls_per_day(*period, "Europe/Berlin")}
    for r in per_day:
        assert (days[r["day"]]["calls_offered"], days[r["day"]]["calls_answered"]) == (r["offered"], r["answered"])
    assert sum(r["offered"] for r in per_day) == len(truth.calls)

    in_sqlite = rows(sqlite_dir, "SELECT event_id, visitor_id, session_id, ts, url, path, title, referrer, utm_source, "
                                 "utm_campaign, click_id_type, click_id, props, ip_hash FROM events")
    assert sorted((*r[:3], stored(r[3]), *r[4:]) for r in in_sqlite) == sorted(tuple(r) for r in events)
    assert sorted((o, v, stored(t)) for o, v, t in rows(sqlite_dir, "SELECT order_id, value, ts FROM conversions")) == \
        sorted((r["order_id"], float(r["value"]), r["ts"]) for r in conversions)


# ----- the command line -----

def test_talk_generate_fills_an_empty_database_and_refuses_a_real_one(tmp_path, capsys):
    data_dir = tmp_path / "fresh"
    main(["generate", "150", "--seed", "7", "--days", "14", "--end", END.date().isoformat(),
          "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    assert "100% (150 of 150 visitors" in err
    line = out.strip().splitlines()[-1]
    assert line.startswith("generated 150 visitors") and "(seed 7)" in line
    [(events,)] = rows(data_dir, "SELECT count(*) FROM events")
    [(calls,)] = rows(data_dir, "SELECT count(*) FROM calls")
    assert f"{events:,} page views" in line and f"{calls:,} calls" in line and events > 300
    [(first, last)] = rows(data_dir, "SELECT min(ts), max(ts) FROM events")
    assert stored(first) >= END - timedelta(days=13) and stored(last) < END + timedelta(days=1)  # --end: that day

    real = tmp_path / "real"
    main(["site", "create", "Real Shop", "--origin", "https://shop.example.com", "--key", "real",
          "--data-dir", str(real)])
    with pytest.raises(SystemExit) as refused:
        main(["generate", "10", "--data-dir", str(real)])
    assert "empty database or one made by `talk demo`" in str(refused.value.code)
    assert rows(real, "SELECT count(*) FROM accounts") == [(0,)]  # no demo accounts next to real ones

    for bad in (["generate", "-3"], ["generate", "5", "--days", "0"], ["generate", "5", "--end", "soon"]):
        with pytest.raises(SystemExit):
            main([*bad, "--data-dir", str(tmp_path / "bad")])
    assert "--end" in capsys.readouterr().err


class GeneratingDemo(TalkDemo):
    """`talk demo --generate N …` in a subprocess."""

    def __init__(self, data_dir: Path, *options: str) -> None:
        super().__init__(data_dir)
        self.options = options

    def _spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [*talk_command(), "demo", *self.options, "--port", str(self.port), "--data-dir", str(self.data_dir)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self._env())


def test_talk_demo_generate_serves_the_generated_calls(tmp_path):
    demo = GeneratingDemo(tmp_path / "demo", "--generate", "120", "--seed", "9", "--end", END.isoformat())
    try:
        demo.start(timeout=60.0)
        token = demo.cli("token", "create", "generated").strip().splitlines()[-1]
        status, body = http_get(f"{demo.base_url}/api/v1/calls?limit=200", headers={"Authorization": f"Bearer {token}"})
    finally:
        returncode = demo.stop()
    output = demo.output()
    assert status == 200, body
    generated = next(line for line in output.splitlines() if line.startswith("generated 120 visitors"))
    calls = json.loads(body)["calls"]
    assert calls and f" {len(calls):,} calls" in generated, generated
    assert "Talk demo is running at" in output and returncode == 0, output
