"""The few SQL expressions that SQLite and PostgreSQL spell differently, as SQLAlchemy constructs.

Timestamps are `UTCDateTime` columns: PostgreSQL `timestamptz`; SQLite text 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC
(SQLAlchemy's storage format, always with six fraction digits), which sorts and compares as time does. Every construct
here is exact to the microsecond on both engines; none depends on the session's time zone.

- `epoch_seconds(ts)`: whole seconds since 1970-01-01 UTC, rounded down (BIGINT).
- `epoch_us(ts)`: microseconds since 1970-01-01 UTC (BIGINT), for exact durations (`epoch_us(b) - epoch_us(a)`).
- `plus(ts, delta)`: the timestamp `delta` later, of the column's own type, so it compares with other timestamps
  (and an index on the other side stays usable).
- `position(haystack, needle)`: 1-based position of a substring, 0 when absent (case-sensitive, no wildcards).
- `binary(text)`: the text under byte-wise collation, so ORDER BY ties break the same way on both engines.
- `unindexed(column)`: the column, but SQLite's planner may not pick an index for the term (unary `+`, SQLite's
  documented idiom). Without ANALYZE statistics SQLite sees `events.site_id = ? AND ts <= ?` and
  `events.session_id = ? AND ts <= ?` as equally good and picks the first index, scanning the whole site per call.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import BigInteger, Integer
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from talk.models import UTCDateTime

MICROSECOND = timedelta(microseconds=1)


class epoch_seconds(FunctionElement):  # noqa: N801 (SQL function style)
    type = BigInteger()
    name = "epoch_seconds"
    inherit_cache = True


class epoch_us(FunctionElement):  # noqa: N801
    type = BigInteger()
    name = "epoch_us"
    inherit_cache = True


class plus(FunctionElement):  # noqa: N801
    """plus(ts, microseconds: int literal); build it with `later(ts, delta)`."""

    type = UTCDateTime()
    name = "plus"
    inherit_cache = True


class position(FunctionElement):  # noqa: N801
    type = Integer()
    name = "position"
    inherit_cache = True


class binary(FunctionElement):  # noqa: N801
    name = "binary"
    inherit_cache = True

    @property
    def type(self):  # the text's own type
        return list(self.clauses)[0].type


class unindexed(FunctionElement):  # noqa: N801
    name = "unindexed"
    inherit_cache = True

    @property
    def type(self):
        return list(self.clauses)[0].type


def later(ts, delta: timedelta) -> plus:
    """The timestamp `delta` after `ts` (a whole number of microseconds, rendered as an integer literal)."""
    from sqlalchemy import literal_column

    return plus(ts, literal_column(str(int(delta // MICROSECOND)), BigInteger()))


def _args(element, compiler, **kw) -> list[str]:
    return [compiler.process(clause, **kw) for clause in element.clauses]


@compiles(epoch_seconds)
@compiles(epoch_us)
@compiles(plus)
@compiles(position)
@compiles(binary)
@compiles(unindexed)
def _generic(element, compiler, **kw) -> str:
    """Other dialects (and str() of a statement, for logs): the construct's name as a function call."""
    return f"{element.name}({', '.join(_args(element, compiler, **kw))})"


# ----- SQLite -----

def _sqlite_seconds(ts: str) -> str:
    # Of the text without its fraction: strftime reads the fraction too and rounds the time to the millisecond, so
    # from .9995 s on it would give the next second.
    return f"CAST(strftime('%s', substr({ts}, 1, 19)) AS INTEGER)"


def _sqlite_us(ts: str) -> str:
    return f"({_sqlite_seconds(ts)} * 1000000 + CAST(substr({ts}, 21, 6) AS INTEGER))"


@compiles(epoch_seconds, "sqlite")
def _epoch_seconds_sqlite(element, compiler, **kw) -> str:
    (ts,) = _args(element, compiler, **kw)
    return _sqlite_seconds(ts)


@compiles(epoch_us, "sqlite")
def _epoch_us_sqlite(element, compiler, **kw) -> str:
    (ts,) = _args(element, compiler, **kw)
    return _sqlite_us(ts)


@compiles(plus, "sqlite")
def _plus_sqlite(element, compiler, **kw) -> str:
    ts, us = _args(element, compiler, **kw)
    if int(us) % 1000000 == 0:
        # Whole seconds (attribution windows): the fraction stays as it is; about 3x cheaper than the general case,
        # which matters in joins that compute it once per call.
        return f"(datetime(substr({ts}, 1, 19), '{int(us) // 1000000:+d} seconds') || substr({ts}, 20))"
    total = f"({_sqlite_us(ts)} + {us})"
    # Back to the storage format; the modulo is never negative for instants after 1970.
    return (f"(strftime('%Y-%m-%d %H:%M:%S', {total} / 1000000, 'unixepoch') || '.' || "
            f"substr('000000' || ({total} % 1000000), -6, 6))")


@compiles(position, "sqlite")
def _position_sqlite(element, compiler, **kw) -> str:
    haystack, needle = _args(element, compiler, **kw)
    return f"instr({haystack}, {needle})"


@compiles(binary, "sqlite")
def _binary_sqlite(element, compiler, **kw) -> str:
    (text,) = _args(element, compiler, **kw)
    return f"({text} COLLATE BINARY)"


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element, compiler, **kw) -> str:
    (column,) = _args(element, compiler, **kw)
    return f"+{column}"


# ----- PostgreSQL -----

@compiles(epoch_seconds, "postgresql")
def _epoch_seconds_pg(element, compiler, **kw) -> str:
    (ts,) = _args(element, compiler, **kw)
    return f"CAST(floor(EXTRACT(EPOCH FROM {ts})) AS BIGINT)"  # EXTRACT is numeric (exact) since PostgreSQL 14


@compiles(epoch_us, "postgresql")
def _epoch_us_pg(element, compiler, **kw) -> str:
    (ts,) = _args(element, compiler, **kw)
    return f"CAST(EXTRACT(EPOCH FROM {ts}) * 1000000 AS BIGINT)"


@compiles(plus, "postgresql")
def _plus_pg(element, compiler, **kw) -> str:
    ts, us = _args(element, compiler, **kw)
    # Microseconds only: an interval in days would follow the session time zone's daylight saving changes.
    return f"({ts} + ({us}) * INTERVAL '1 microsecond')"


@compiles(position, "postgresql")
def _position_pg(element, compiler, **kw) -> str:
    haystack, needle = _args(element, compiler, **kw)
    return f"strpos({haystack}, {needle})"


@compiles(binary, "postgresql")
def _binary_pg(element, compiler, **kw) -> str:
    (text,) = _args(element, compiler, **kw)
    return f'({text} COLLATE "C")'


@compiles(unindexed, "postgresql")
def _unindexed_pg(element, compiler, **kw) -> str:
    (column,) = _args(element, compiler, **kw)
    return column
