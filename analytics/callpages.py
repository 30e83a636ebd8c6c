"""The page views before and after each call whose facts are computed (`call_fact_pages`), with what the pages
reports need to count them without DISTINCT.

The pages reports count per path distinct page views, distinct calls and distinct visitors. Over a year at 10M page
views that is 270,000 (call, page view) rows per direction, and DISTINCT counts over them cost a second. Most rows
are unique in all three respects, so each row carries flags that say when it is not:

- `first_in_call`: this is the call's first page view (lowest id) with this path in this direction: counting these
  counts each (call, path) once.
- `event_shared`: another call has this page view in this direction (e.g. two calls from one session).
- `visitor_shared`: another call of the visitor (on the site) has a page view of this path in this direction.

A report counts the rows without the flag directly and only the flagged rows DISTINCT. The shared flags may be set
when no longer needed (after the other call was deleted): that only sends the row to the DISTINCT count, which is
exact either way; they are never missing where needed, because each refresh flags its own rows against every stored
row and the stored rows against its own (refreshes never run concurrently: analytics/callfacts.py). Rows of calls
computed from raw rows in a report (stale calls) count as shared (analytics/reports/pages.py).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from sqlalchemy import and_, insert, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from analytics.reports.pages import viewed_after, viewed_before
from talk.models import CallFactPage, CallFacts, CallRecord, PageEvent

CHUNK = 400  # values per IN list (SQLite allows 32,766 parameters; PostgreSQL 32,767)
CALL_COLUMNS = ("site_id", "queue_id", "channel", "visitor_id", "converted")  # copied from call_facts


def _pages_of(ids: list[str], window: timedelta):
    """The calls' page views, with the calls' facts (stored just before) the reports read with them."""
    c, e, f = CallRecord.__table__, PageEvent.__table__, CallFacts.__table__
    for after, matching in ((0, viewed_before), (1, viewed_after(window))):
        yield (select(literal_column(str(after)).label("after"), f.c.created_us, c.c.id.label("call_id"),
                      e.c.id.label("event_id"), e.c.path, *(f.c[name] for name in CALL_COLUMNS))
               .select_from(c.join(f, f.c.call_id == c.c.id).join(e, and_(*matching(e, c))))
               .where(c.c.id.in_(ids), c.c.has_journey.is_(True)))


def _chunks(values: list) -> list[list]:
    return [values[i:i + CHUNK] for i in range(0, len(values), CHUNK)]


async def _other_events(db: AsyncSession, rows: list[dict], ids: set[str]) -> set[tuple]:
    """(after, event_id) of stored rows of other calls with the page views of the new rows."""
    p = CallFactPage.__table__
    found = set()
    for chunk in _chunks(sorted({row["event_id"] for row in rows})):
        for after, event_id, call_id in await db.execute(
                select(p.c.after, p.c.event_id, p.c.call_id).where(p.c.event_id.in_(chunk))):
            if call_id not in ids:
                found.add((after, event_id))
    return found


async def _other_paths(db: AsyncSession, rows: list[dict], ids: set[str]) -> dict[tuple, list[tuple]]:
    """The stored rows of the new rows' visitors' other calls: (after, site, visitor, path) → their keys (after,
    created_us, call_id, path)."""
    f, p = CallFacts.__table__, CallFactPage.__table__
    calls = []
    for chunk in _chunks(sorted({row["visitor_id"] for row in rows})):
        calls += (await db.execute(select(f.c.created_us, f.c.call_id, f.c.site_id, f.c.visitor_id)
                                   .where(f.c.visitor_id.in_(chunk)))).all()
    owner = {(created_us, call_id): (site_id, visitor_id) for created_us, call_id, site_id, visitor_id in calls
             if call_id not in ids}
    found: dict[tuple, list[tuple]] = defaultdict(list)
    for chunk in _chunks(sorted(owner)):
        for after, created_us, call_id, path in await db.execute(
                select(p.c.after, p.c.created_us, p.c.call_id, p.c.path).where(*of_calls(p, chunk))):
            found[after, *owner[created_us, call_id], path].append((after, created_us, call_id, path))
    return found


def of_calls(table, keys: list[tuple]) -> list:
    """WHERE terms for the rows of a call_fact_* table of the calls `keys` (created_us, call_id): both columns by
    IN lists, which PostgreSQL can look up by index (it cannot a list of row values), and exact all the same, as a
    call's id determines its created_us. `after` of call_fact_pages, first in its primary key, is named too."""
    terms = [table.c.created_us.in_(sorted({key[0] for key in keys})), table.c.call_id.in_([key[1] for key in keys])]
    return [table.c.after.in_((0, 1)), *terms] if "after" in table.c else terms


def _flag(rows: list[dict], shared_events: set[tuple], shared_paths: dict[tuple, list]) -> None:
    """Set the three flags of the new rows, among themselves and against the stored rows' (shared_*)."""
    calls_of_event, calls_of_path = defaultdict(set), defaultdict(set)
    first: dict[tuple, int] = {}
    for row in rows:
        calls_of_event[row["after"], row["event_id"]].add(row["call_id"])
        calls_of_path[row["after"], row["site_id"], row["visitor_id"], row["path"]].add(row["call_id"])
        key = (row["after"], row["call_id"], row["path"])
        first[key] = min(first.get(key, row["event_id"]), row["event_id"])
    for row in rows:
        event, path = (row["after"], row["event_id"]), (row["after"], row["site_id"], row["visitor_id"], row["path"])
        row["first_in_call"] = int(first[row["after"], row["call_id"], row["path"]] == row["event_id"])
        row["event_shared"] = int(event in shared_events or len(calls_of_event[event]) > 1)
        row["visitor_shared"] = int(path in shared_paths or len(calls_of_path[path]) > 1)


async def _flag_stored(db: AsyncSession, events: set[tuple], rows: list[tuple]) -> set[int]:
    """Flag the stored rows the new ones share with: by page view (after, event_id) and by key (after, created_us,
    call_id, path), a statement per few hundred. The created_us of the rows flagged (the day sums to rebuild)."""
    p = CallFactPage.__table__
    touched = {created_us for _after, created_us, _call_id, _path in rows}
    # By page view alone: the other direction's row of the page view, if any, is flagged too, which is allowed.
    for chunk in _chunks(sorted({event_id for _after, event_id in events})):
        touched.update(await db.scalars(update(p).where(p.c.event_shared == 0, p.c.event_id.in_(chunk))
                                        .values(event_shared=1).returning(p.c.created_us)))
    calls_of: dict[tuple, set] = defaultdict(set)
    for after, created_us, call_id, path in rows:
        calls_of[after, path].add((created_us, call_id))
    for (after, path), calls in sorted(calls_of.items()):
        for chunk in _chunks(sorted(calls)):
            await db.execute(update(p).where(p.c.visitor_shared == 0, p.c.after == after, p.c.path == path,
                                             *of_calls(p, chunk)[1:]).values(visitor_shared=1))
    return touched


async def store_pages(db: AsyncSession, ids: list[str], window: timedelta) -> set[int]:
    """Write the page views before and after the calls `ids` (whose stored pages were deleted) with their flags,
    and flag the stored rows they share a page view or a visitor's path with. The created_us of the calls whose
    stored rows were written or flagged (analytics/factdays.py: their days' sums are out of date)."""
    rows = []
    for statement in _pages_of(ids, window):
        rows += [dict(row) for row in (await db.execute(statement)).mappings()]
    if not rows:
        return set()
    mine = set(ids)
    stored_events = await _other_events(db, rows, mine)
    stored_paths = await _other_paths(db, rows, mine)
    _flag(rows, stored_events, stored_paths)
    columns = ("after", "created_us", "call_id", "event_id", "path", "first_in_call", "event_shared", "visitor_shared",
               *CALL_COLUMNS)
    await db.execute(insert(CallFactPage), [{key: row[key] for key in columns} for row in rows])
    new_events = {(row["after"], row["event_id"]) for row in rows}
    new_paths = {(row["after"], row["site_id"], row["visitor_id"], row["path"]) for row in rows}
    flagged = await _flag_stored(db, stored_events & new_events,
                                 [key for path in new_paths & stored_paths.keys() for key in stored_paths[path]])
    return flagged | {row["created_us"] for row in rows}
