"""Where the event writer's groups go: one transaction per group, returning how many rows of each request were new.

Two implementations behind one method, `write_group(requests) -> [new rows per request]`:

- `SqlAlchemyEventStore` (PostgreSQL, and any other backend): one multi-row `INSERT … ON CONFLICT DO NOTHING
  RETURNING`, which tells exactly which rows were new even when another node inserts the same ids concurrently.
- `SqliteEventStore` (the default embedded database): its own `sqlite3` connection on one dedicated thread, so a whole
  group is one thread hand-off: `executemany` per request (whose rowcount is the request's new rows) and one commit.
  Through SQLAlchemy and aiosqlite the same group cost 2–2.7× the CPU of `executemany` per row plus ≈1.2 ms per
  transaction, on the event loop that also serves the HTTP requests (docs/benchmarks.md, "Event ingestion").
  The values still go through SQLAlchemy's own bind processors, so the stored text is what the ORM reads back.

Both keep the visitor-day rollup (analytics/visitordays.py) in the group's transaction, and on SQLite mark the calls
of the group's visitors and sessions stale for the call facts (analytics/callfacts.py; PostgreSQL's trigger does).
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from analytics import callfacts, visitordays
from talk import db as talk_db
from talk.models import PageEvent

Rows = list[dict[str, Any]]


class EventStore(Protocol):
    async def write_group(self, requests: list[Rows]) -> list[int]: ...

    async def close(self) -> None: ...


def event_store(engine: AsyncEngine) -> EventStore:
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        return SqliteEventStore(engine.url.database)
    return SqlAlchemyEventStore(engine)


class SqlAlchemyEventStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._statement = (
            insert(PageEvent)
            .on_conflict_do_nothing(index_elements=["site_id", "event_id"])
            .returning(PageEvent.site_id, PageEvent.event_id)
        )

    async def write_group(self, requests: list[Rows]) -> list[int]:
        rows = [row for request in requests for row in request]
        async with self._engine.begin() as connection:
            result = await connection.execute(self._statement, rows)  # (which begins the transaction)
            inserted = {(r.site_id, r.event_id) for r in result}
            spans = visitordays.day_spans(visitordays.first_of_each(rows, inserted))
            if self._engine.dialect.name == "postgresql":
                raw = await connection.get_raw_connection()
                await visitordays.upkeep_asyncpg(raw.driver_connection, spans)
            else:
                await visitordays.upkeep(connection, spans)
                for sql, parameters in callfacts.sqlite_marks_for_views(rows):  # (PostgreSQL: its trigger)
                    await connection.exec_driver_sql(sql, parameters)
        counts = []
        for request in requests:
            new = 0
            for row in request:  # an id sent twice in one group was inserted once: count it once
                key = (row["site_id"], row["event_id"])
                if key in inserted:
                    inserted.discard(key)
                    new += 1
            counts.append(new)
        return counts

    async def close(self) -> None:
        pass


class SqliteEventStore:
    def __init__(self, path: str) -> None:
        self._path = path
        # One thread owns the connection (sqlite3 objects stay on the thread that made them).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="event-store")
        self._connection: sqlite3.Connection | None = None
        dialect = sqlite.dialect()
        self._columns = [c for c in PageEvent.__table__.columns if c.name != "id"]
        self._processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in self._columns]
        names = ", ".join(c.name for c in self._columns)
        marks = ", ".join("?" for _ in self._columns)
        self._sql = (f"INSERT INTO {PageEvent.__tablename__} ({names}) VALUES ({marks}) "
                     "ON CONFLICT (site_id, event_id) DO NOTHING")

    def _parameters(self, row: dict[str, Any]) -> tuple:
        values = []
        for column, process in zip(self._columns, self._processors):
            value = row.get(column.name)
            values.append(process(value) if process is not None else value)
        return tuple(values)

    async def write_group(self, requests: list[Rows]) -> list[int]:
        # Parameters are built here, on the loop, so the thread holds the GIL only for sqlite3's own work.
        parameters = [[self._parameters(row) for row in request] for request in requests]
        rows = [row for request in requests for row in request]
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._write, parameters, rows)

    def _write(self, requests: list[list[tuple]], rows: Rows) -> list[int]:
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            stored = self._stored_ids(connection, rows)  # before the insert: what it adds is the rest
            counts = []
            for parameters in requests:
                cursor = connection.executemany(self._sql, parameters)
                counts.append(cursor.rowcount)  # rows inserted; ids already stored (or earlier in the group) skip
            fresh = {(row["site_id"], row["event_id"]) for row in rows} - stored
            visitordays.upkeep_sqlite(connection, visitordays.day_spans(visitordays.first_of_each(rows, fresh)))
            for sql, parameters in callfacts.sqlite_marks_for_views(rows):
                connection.execute(sql, parameters)
            connection.execute("COMMIT")
            return counts
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    @staticmethod
    def _stored_ids(connection: sqlite3.Connection, rows: Rows) -> set[tuple[int, str]]:
        """Which of the rows' (site_id, event_id) are stored already (one lookup per site, by the unique index)."""
        by_site: dict[int, set[str]] = {}
        for row in rows:
            by_site.setdefault(row["site_id"], set()).add(row["event_id"])
        stored = set()
        for site_id, ids in by_site.items():
            marks = ", ".join("?" * len(ids))
            found = connection.execute(f"SELECT event_id FROM {PageEvent.__tablename__} WHERE site_id = ? AND "
                                       f"event_id IN ({marks})", (site_id, *ids))
            stored.update((site_id, event_id) for (event_id,) in found)
        return stored

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            # Autocommit mode (isolation_level=None): the transaction is exactly the BEGIN … COMMIT above.
            connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
            talk_db.sqlite_pragmas(connection, None)
            self._connection = connection
        return self._connection

    async def close(self) -> None:
        def close_connection() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await asyncio.get_running_loop().run_in_executor(self._thread, close_connection)
        self._thread.shutdown(wait=True)
