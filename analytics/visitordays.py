"""Distinct visitors of any time range without reading the page views: the visitor-day rollup.

The conversion reports compare callers with the visitors who did not call, so they need "how many visitors viewed a
page on the site in [lo, hi)". Counted from `events` that is a distinct count over every page view of the range
(10M rows for a year of a mid-size shop). Instead, `visitor_days` (talk/models.py) keeps one row per site, visitor
and UTC day with a page view: that day's first and last page view, and the visitor's previous and next such day,
and `visitor_day_counts` counts those rows by (site, day, prev_day). Then:

- the visitors of the whole UTC days a..b are the rows with a <= day <= b whose previous day is before a (each
  visitor is counted once, on their first day in the range): a sum over `visitor_day_counts`, at most one row per
  pair of days;
- a range in another time zone starts and ends inside UTC days: the part of day a-1 from `lo` on has a page view
  of the visitor exactly when that day's `last_ts >= lo`, the part of day b+1 before `hi` when its `first_ts < hi`;
  such a visitor is new to the count when their next (previous) day lies outside a..b, and one seen in both edges
  and not in between is counted once. Two single-day lookups.

Upkeep, in the transaction that writes the page views (analytics/eventstore.py): for each (site, visitor, day) the
group stored new page views of, the row's first/last page view is extended by them (replays excluded); a
new row is written unlinked (`prev_day` NULL); the group's visitors' rows are read by primary key, and for those
with a new day the links and counts that change are written (once per visitor per day, not per page view). The
bulk rebuild (the generator, the migration) and retention link with window functions over every unlinked visitor.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, bindparam, exists, or_, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from sqlalchemy.sql import ColumnElement

from talk.models import UTCDateTime, VisitorDay

DAY = timedelta(days=1)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
NO_DAY = -1  # prev_day of a visitor's first day

_EXTEND_DAY = """
INSERT INTO visitor_days (site_id, visitor_id, day, first_ts, last_ts)
VALUES (:site_id, :visitor_id, :day, :first_ts, :last_ts)
ON CONFLICT (site_id, visitor_id, day) DO UPDATE
SET first_ts = {least}(visitor_days.first_ts, excluded.first_ts), last_ts = {greatest}(visitor_days.last_ts, excluded.last_ts)
"""
_EXTEND_DAY_SQLITE = _EXTEND_DAY.format(least="min", greatest="max")  # SQLite's scalar min/max of two values
_AFFECTED = "(SELECT DISTINCT site_id, visitor_id FROM visitor_days WHERE prev_day IS NULL)"
# CROSS JOIN: SQLite then keeps the written order, the few affected visitors outside and their rows looked up by
# primary key (with a plain JOIN under a window function it scanned every row of visitor_days inside).
_ROWS_OF_AFFECTED = f"{_AFFECTED} AS u CROSS JOIN visitor_days AS d"
_OF_AFFECTED = "d.site_id = u.site_id AND d.visitor_id = u.visitor_id"
_LINKED = f"""
SELECT d.site_id, d.visitor_id, d.day, coalesce(lag(d.day) OVER byday, {NO_DAY}) AS prev_day,
       lead(d.day) OVER byday AS next_day
FROM {_ROWS_OF_AFFECTED} WHERE {_OF_AFFECTED}
WINDOW byday AS (PARTITION BY d.site_id, d.visitor_id ORDER BY d.day)
"""
# In this order: take the affected visitors' linked rows out of the counts, count them as they will be linked,
# then link them (which clears the "affected" mark the first two statements find them by).
_RELINK = (
    f"""UPDATE visitor_day_counts SET visitors = visitor_day_counts.visitors - old.n
    FROM (SELECT d.site_id, d.day, d.prev_day, count(*) AS n FROM {_ROWS_OF_AFFECTED}
          WHERE {_OF_AFFECTED} AND d.prev_day IS NOT NULL GROUP BY d.site_id, d.day, d.prev_day) AS old
    WHERE visitor_day_counts.site_id = old.site_id AND visitor_day_counts.day = old.day
      AND visitor_day_counts.prev_day = old.prev_day""",
    f"""INSERT INTO visitor_day_counts (site_id, day, prev_day, visitors)
    SELECT site_id, day, prev_day, count(*) FROM ({_LINKED}) AS linked WHERE true GROUP BY site_id, day, prev_day
    ON CONFLICT (site_id, day, prev_day) DO UPDATE SET visitors = visitor_day_counts.visitors + excluded.visitors""",
    f"""UPDATE visitor_days SET prev_day = linked.prev_day, next_day = linked.next_day
    FROM ({_LINKED}) AS linked
    WHERE visitor_days.site_id = linked.site_id AND visitor_days.visitor_id = linked.visitor_id
      AND visitor_days.day = linked.day""",
)
_DAY_OF_TS = {
    # Without the fraction: strftime rounds to the millisecond first, so 23:59:59.9995 would fall on the next day.
    "sqlite": "CAST(strftime('%s', substr(ts, 1, 19)) AS INTEGER) / 86400",
    "postgresql": "CAST(floor(EXTRACT(EPOCH FROM ts) / 86400) AS INTEGER)",
}


def day_of(ts: datetime) -> int:
    """The UTC day number (days since 1970-01-01) of an aware datetime."""
    return (ts - EPOCH) // DAY


def start_of(day: int) -> datetime:
    return EPOCH + day * DAY


Span = tuple[int, str, int, datetime, datetime]  # site_id, visitor_id, day, first and last page view of the rows


def day_spans(new_rows: list[dict[str, Any]]) -> list[Span]:
    """The (site, visitor, day) of newly stored page views with their first and last time, sorted. Only rows that
    were stored count: a replayed event id carrying another time must not move a day's first or last view."""
    spans: dict[tuple[int, str, int], list[datetime]] = {}
    for row in new_rows:
        key = (row["site_id"], row["visitor_id"], day_of(row["ts"]))
        span = spans.setdefault(key, [row["ts"], row["ts"]])
        span[0], span[1] = min(span[0], row["ts"]), max(span[1], row["ts"])
    return sorted((*key, first, last) for key, (first, last) in spans.items())


def first_of_each(rows: list[dict[str, Any]], stored: set[tuple[int, str]]) -> list[dict[str, Any]]:
    """The rows whose (site_id, event_id) is in `stored` (the ids this group inserted), the first of each id (as
    the insert kept the first)."""
    left, new = set(stored), []
    for row in rows:
        key = (row["site_id"], row["event_id"])
        if key in left:
            left.discard(key)
            new.append(row)
    return new


# ------------------------------------------------------------------------------------------------ upkeep


ROLLUP_LOCK = 0x74616C6B7664  # PostgreSQL advisory lock key of the rollup ("talkvd")


async def lock_rollup(db: AsyncSession) -> None:
    if db.bind.dialect.name == "postgresql":
        await db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ROLLUP_LOCK})



_SQLITE_TS = UTCDateTime().dialect_impl(sqlite.dialect()).bind_processor(sqlite.dialect())


def _span_parameters(span: Span, ts=lambda value: value) -> dict[str, Any]:
    site_id, visitor_id, day, first, last = span
    return {"site_id": site_id, "visitor_id": visitor_id, "day": day, "first_ts": ts(first), "last_ts": ts(last)}


_ROWS_OF = "SELECT site_id, visitor_id, day, prev_day, next_day FROM visitor_days WHERE site_id = {} AND visitor_id IN ({})"
_SET_LINKS = """UPDATE visitor_days SET prev_day = :prev_day, next_day = :next_day
WHERE site_id = :site_id AND visitor_id = :visitor_id AND day = :day"""
_ADD_COUNT = """INSERT INTO visitor_day_counts (site_id, day, prev_day, visitors) VALUES (:site_id, :day, :prev_day, :delta)
ON CONFLICT (site_id, day, prev_day) DO UPDATE SET visitors = visitor_day_counts.visitors + excluded.visitors"""


def links_to_fix(rows) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """From every row (site_id, visitor_id, day, prev_day, next_day) of some visitors: the rows whose links must
    change and the changes of the counts, for the visitors with a new (unlinked) day; nothing for the others. In
    Python rather than with window functions in SQL: one primary-key read of the group's visitors, then writes of
    only what changed (the set-based statements cost 4-5 round trips per group on PostgreSQL)."""
    visitors: dict[tuple[int, str], list] = defaultdict(list)
    for row in rows:
        visitors[(row[0], row[1])].append(tuple(row))
    updates, deltas = [], Counter()
    for (site_id, visitor_id), days in visitors.items():
        if all(row[3] is not None for row in days):
            continue
        days.sort(key=lambda row: row[2])
        for i, (_, _, day, prev_day, next_day) in enumerate(days):
            want_prev = days[i - 1][2] if i else NO_DAY
            want_next = days[i + 1][2] if i + 1 < len(days) else None
            if (prev_day, next_day) == (want_prev, want_next):
                continue
            updates.append({"site_id": site_id, "visitor_id": visitor_id, "day": day, "prev_day": want_prev,
                            "next_day": want_next})
            if prev_day != want_prev:
                if prev_day is not None:
                    deltas[(site_id, day, prev_day)] -= 1
                deltas[(site_id, day, want_prev)] += 1
    changes = [{"site_id": site, "day": day, "prev_day": prev, "delta": delta}
               for (site, day, prev), delta in sorted(deltas.items()) if delta]
    return updates, changes


def _visitors_by_site(spans: list[Span]) -> dict[int, list[str]]:
    by_site: dict[int, set[str]] = defaultdict(set)
    for site_id, visitor_id, *_ in spans:
        by_site[site_id].add(visitor_id)
    return {site_id: sorted(visitors) for site_id, visitors in by_site.items()}


def upkeep_sqlite(connection: sqlite3.Connection, spans: list[Span]) -> None:
    """In the caller's transaction on a raw sqlite3 connection (the event store's own)."""
    if not spans:
        return
    connection.executemany(_EXTEND_DAY_SQLITE, [_span_parameters(span, _SQLITE_TS) for span in spans])
    rows = []
    for site_id, visitors in _visitors_by_site(spans).items():
        rows += connection.execute(_ROWS_OF.format("?", ", ".join("?" * len(visitors))), (site_id, *visitors))
    updates, changes = links_to_fix(rows)
    if updates:
        connection.executemany(_SET_LINKS, updates)
    if changes:
        connection.executemany(_ADD_COUNT, changes)


_EXTEND_DAY_STATEMENT = text(_EXTEND_DAY_SQLITE).bindparams(
    bindparam("first_ts", type_=UTCDateTime), bindparam("last_ts", type_=UTCDateTime))
_ROWS_OF_STATEMENT = text(_ROWS_OF.replace("IN ({})", "IN {}").format(":site_id", ":visitors")).bindparams(
    bindparam("visitors", expanding=True))


async def upkeep(connection: AsyncConnection | AsyncSession, spans: list[Span]) -> None:
    """In the caller's transaction through SQLAlchemy, on SQLite (an in-memory database, tests)."""
    if not spans:
        return
    await connection.execute(_EXTEND_DAY_STATEMENT, [_span_parameters(span) for span in spans])
    rows = []
    for site_id, visitors in _visitors_by_site(spans).items():
        rows += (await connection.execute(_ROWS_OF_STATEMENT, {"site_id": site_id, "visitors": visitors})).all()
    updates, changes = links_to_fix(rows)
    if updates:
        await connection.execute(text(_SET_LINKS), updates)
    if changes:
        await connection.execute(text(_ADD_COUNT), changes)


def _pg(sql: str, names: list[str]) -> str:
    """The statement with asyncpg's $n placeholders for the named ones."""
    for n, name in enumerate(names, 1):
        sql = sql.replace(f":{name}", f"${n}")
    return sql


_SPAN_NAMES = ["site_id", "visitor_id", "day", "first_ts", "last_ts"]
_LOCK_PG = ("SELECT pg_advisory_xact_lock_shared($1), (SELECT count(pg_advisory_xact_lock(h)) FROM "
            "(SELECT hashtextextended(k, 0) AS h FROM unnest($2::text[]) AS k ORDER BY 1) AS ordered)")
_EXTEND_DAY_PG = _pg(_EXTEND_DAY.format(least="LEAST", greatest="GREATEST"), _SPAN_NAMES)
_SET_LINKS_PG = _pg(_SET_LINKS, ["prev_day", "next_day", "site_id", "visitor_id", "day"])
_ADD_COUNT_PG = _pg(_ADD_COUNT, ["site_id", "day", "prev_day", "delta"])
_ROWS_OF_PG = _ROWS_OF.replace("IN ({})", "= ANY({})").format("$1", "$2::text[]")


async def upkeep_asyncpg(connection, spans: list[Span]) -> None:
    """PostgreSQL, on the asyncpg connection under the caller's (already begun) transaction: the same as `upkeep`
    in four round trips of plain asyncpg (through SQLAlchemy each statement cost about 1.4 ms: the writer's groups
    were 2.6x slower). Several writers (nodes) may write the same visitor at once, and under READ COMMITTED a
    transaction does not see another's uncommitted days: so each writer first takes its visitors' advisory locks,
    in one order (no deadlock), and the rollup lock shared; privacy operations take that one exclusively
    (`lock_rollup`)."""
    if not spans:
        return
    visitors = sorted({f"{site_id}:{visitor_id}" for site_id, visitor_id, *_ in spans})
    await connection.execute(_LOCK_PG, ROLLUP_LOCK, visitors)
    await connection.executemany(_EXTEND_DAY_PG, spans)
    rows = []
    for site_id, names in _visitors_by_site(spans).items():
        rows += await connection.fetch(_ROWS_OF_PG, site_id, names)
    updates, changes = links_to_fix(rows)
    if updates:
        await connection.executemany(_SET_LINKS_PG, [(u["prev_day"], u["next_day"], u["site_id"], u["visitor_id"],
                                                      u["day"]) for u in updates])
    if changes:
        await connection.executemany(_ADD_COUNT_PG, [(c["site_id"], c["day"], c["prev_day"], c["delta"])
                                                     for c in changes])


def _fill(dialect: str, where: str = "true") -> str:
    day = _DAY_OF_TS[dialect]
    return f"""INSERT INTO visitor_days (site_id, visitor_id, day, first_ts, last_ts)
    SELECT site_id, visitor_id, {day}, min(ts), max(ts) FROM events WHERE {where} GROUP BY site_id, visitor_id, {day}
    ON CONFLICT (site_id, visitor_id, day) DO UPDATE SET first_ts = excluded.first_ts, last_ts = excluded.last_ts"""


def rebuild_statements(dialect: str) -> list[str]:
    """Every visitor-day from `events` (new rows unlinked, existing ones with first/last recomputed), then linked."""
    return [_fill(dialect), *_RELINK]


async def rebuild(db: AsyncSession) -> None:
    """The rollup of every page view stored (for page views written around the event store, e.g. by tests)."""
    await db.flush()
    for statement in rebuild_statements(db.bind.dialect.name):
        await db.execute(text(statement))


async def forget_visitor(db: AsyncSession, visitor_id: str) -> int:
    """Delete the visitor's rows and take them out of the counts (privacy.forget_visitor)."""
    await db.execute(text(
        """UPDATE visitor_day_counts SET visitors = visitor_day_counts.visitors - old.n
        FROM (SELECT site_id, day, prev_day, count(*) AS n FROM visitor_days
              WHERE visitor_id = :visitor_id AND prev_day IS NOT NULL GROUP BY site_id, day, prev_day) AS old
        WHERE visitor_day_counts.site_id = old.site_id AND visitor_day_counts.day = old.day
          AND visitor_day_counts.prev_day = old.prev_day"""), {"visitor_id": visitor_id})
    result = await db.execute(text("DELETE FROM visitor_days WHERE visitor_id = :visitor_id"),
                              {"visitor_id": visitor_id})
    return result.rowcount


async def drop_before(db: AsyncSession, cutoff: datetime) -> int:
    """Retention: the page views before `cutoff` were deleted. The visitors with a day up to the cutoff's are taken
    out of the counts and marked, their days before the cutoff's deleted, the cutoff's day refilled from what is
    left of it, and they are relinked and counted again."""
    day = day_of(cutoff)
    params = {"day": day}
    # Driven by the few visitors of the oldest days (index on day), their rows by primary key: the job runs every
    # few hours and on SQLite holds the write lock meanwhile, so it must not walk the whole rollup.
    old = "(SELECT DISTINCT site_id, visitor_id FROM visitor_days WHERE day <= :day)"
    await db.execute(text(
        f"""UPDATE visitor_day_counts SET visitors = visitor_day_counts.visitors - old.n
        FROM (SELECT d.site_id, d.day, d.prev_day, count(*) AS n FROM {old} AS u CROSS JOIN visitor_days AS d
              WHERE {_OF_AFFECTED} AND d.prev_day IS NOT NULL GROUP BY d.site_id, d.day, d.prev_day) AS old
        WHERE visitor_day_counts.site_id = old.site_id AND visitor_day_counts.day = old.day
          AND visitor_day_counts.prev_day = old.prev_day"""), params)
    await db.execute(text(f"""UPDATE visitor_days SET prev_day = NULL FROM {old} AS u
        WHERE visitor_days.site_id = u.site_id AND visitor_days.visitor_id = u.visitor_id"""), params)
    dropped = (await db.execute(text("DELETE FROM visitor_days WHERE day <= :day"), params)).rowcount
    # By site: `events` has no index on ts alone, (site_id, ts) serves a day's page views of each site.
    refill = text(_fill(db.bind.dialect.name, "site_id IN (SELECT id FROM sites) AND ts >= :lo AND ts < :hi"))
    await db.execute(refill.bindparams(bindparam("lo", type_=UTCDateTime), bindparam("hi", type_=UTCDateTime)),
                     {"lo": start_of(day), "hi": start_of(day + 1)})
    for statement in _RELINK[1:]:  # counted out above already
        await db.execute(text(statement))
    await db.execute(text("DELETE FROM visitor_day_counts WHERE visitors = 0"))
    return dropped


# ------------------------------------------------------------------------------------------------ reading


def _whole_days(lo: datetime, hi: datetime) -> tuple[int, int, bool, bool]:
    """[lo, hi) as the whole UTC days a..b, whether it also has a tail of day a-1 and a head of day b+1."""
    a = day_of(lo) if lo == start_of(day_of(lo)) else day_of(lo) + 1
    b = day_of(hi) - 1
    return a, b, lo < start_of(a), hi > start_of(b + 1)


def viewed_between(site_id, visitor_id, lo: datetime, hi: datetime,
                   mostly_false: bool = False) -> ColumnElement[bool] | None:
    """SQL: the (site, visitor) columns have a page view in [lo, hi), by a primary-key probe of `visitor_days` (far
    smaller than `events`' visitor index); None when [lo, hi) lies inside one UTC day without touching either end.
    Without a head or tail the edge terms are false by themselves (no row of day a-1 has last_ts >= the start of
    day a), so no case needs its own SQL. `mostly_false`: for visitors expected unseen, one probe over the days
    from a-1 to b+1 instead of three (which a false answer runs all of)."""
    a, b, head, tail = _whole_days(lo, hi)
    if head and tail and a - 1 == b + 1:
        return None
    d = VisitorDay.__table__
    mine = [d.c.site_id == site_id, d.c.visitor_id == visitor_id]
    if mostly_false:
        # On day a-1 only last_ts >= lo can hold, on day b+1 only first_ts < hi; the days between always do.
        return exists().where(*mine, d.c.day.between(a - 1, b + 1),
                              or_(d.c.day.between(a, b), and_(d.c.last_ts >= lo, d.c.first_ts < hi)))
    # Three probes rather than one with an OR: the whole days' (usually true, decided first) reads the primary key
    # index only, never the rows.
    return or_(exists().where(*mine, d.c.day.between(a, b)),
               exists().where(*mine, d.c.day == a - 1, d.c.last_ts >= lo),
               exists().where(*mine, d.c.day == b + 1, d.c.first_ts < hi))


async def visitors_seen(db: AsyncSession, lo: datetime, hi: datetime, site_id: int | None) -> int | None:
    """Distinct (site, visitor) with a page view in [lo, hi) on the site (any site: the sum over sites). None when
    the range lies inside one UTC day without touching either end (the caller counts page views instead)."""
    a, b, head, tail = _whole_days(lo, hi)
    if head and tail and a - 1 == b + 1:
        return None
    on_site = "" if site_id is None else " AND site_id = :site_id"
    params = {"a": a, "b": b, "lo": lo, "hi": hi, "site_id": site_id}
    typed = [bindparam("lo", type_=UTCDateTime), bindparam("hi", type_=UTCDateTime)]

    async def number(sql: str) -> int:
        statement = text(sql)
        used = {name: value for name, value in params.items() if f":{name}" in sql}
        statement = statement.bindparams(*(p for p in typed if p.key in used))
        return int(await db.scalar(statement, used) or 0)

    total = await number("SELECT coalesce(sum(visitors), 0) FROM visitor_day_counts "
                         f"WHERE day >= :a AND day <= :b AND prev_day < :a{on_site}")
    if head:
        total += await number(f"SELECT count(*) FROM visitor_days WHERE day = :a - 1 AND last_ts >= :lo{on_site} "
                              "AND (next_day IS NULL OR next_day > :b)")
    if tail:
        total += await number(f"SELECT count(*) FROM visitor_days WHERE day = :b + 1 AND first_ts < :hi{on_site} "
                              "AND prev_day < :a")
    if head and tail:
        total -= await number(
            "SELECT count(*) FROM visitor_days AS x JOIN visitor_days AS y ON y.site_id = x.site_id "
            "AND y.visitor_id = x.visitor_id AND y.day = x.next_day WHERE x.day = :a - 1 AND x.last_ts >= :lo "
            f"AND x.next_day = :b + 1 AND y.first_ts < :hi{'' if site_id is None else ' AND x.site_id = :site_id'}")
    return total
