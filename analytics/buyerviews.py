"""A known page view of each buyer: `conversions.viewed_at`, so the conversion report need not probe per buyer.

The non-caller figures need, for every (site, visitor) with a conversion in [lo, hi), whether that visitor also
viewed a page of the site in [lo, hi). Probing the visitor-day rollup once per buyer cost about half a second over
a year at 10M page views (81,561 buyers). Nearly every buyer viewed a page shortly before buying, so each conversion
keeps the time of one page view of its visitor on its site, the latest at or before the purchase when recorded:
when that time lies in [lo, hi) the buyer was seen, without a probe. Otherwise (NULL, or outside the range) the
report probes the rollup as before.

It is a hint that is never wrong, not a value kept current: a page view arriving later (even one between the
stored view and the purchase) leaves it as it is, which only costs a probe. What must never happen is a time naming
a page view that no longer exists, or one of another visitor: so deleting a page view (privacy, retention) clears
the `viewed_at` of its visitor's conversions on the site at that time, and changing a conversion's visitor or site
clears its own, by triggers (below), in the deleting transaction, whichever code path deletes.

Set when recorded (analytics/conversions.py) and by the generator (from the page views it made); `fill` sets
it for conversions stored before the column existed (the migration).
"""

from __future__ import annotations

from sqlalchemy import and_, func, select, update
from sqlalchemy.sql import ColumnElement

from analytics.reports.sqltime import unindexed
from talk.models import Conversion, PageEvent


def latest_view_before(site_id, visitor_id, ts) -> ColumnElement:
    """SQL: the time of the visitor's latest page view on the site at or before `ts` (NULL when none)."""
    e = PageEvent.__table__
    return (select(func.max(e.c.ts))
            .where(e.c.visitor_id == visitor_id, unindexed(e.c.site_id) == site_id, e.c.ts <= ts)
            .scalar_subquery())


def fill():
    """UPDATE: viewed_at of every conversion without one (after a bulk load; harmless to run again)."""
    conv = Conversion.__table__
    return (update(conv).where(conv.c.viewed_at.is_(None))
            .values(viewed_at=latest_view_before(conv.c.site_id, conv.c.visitor_id, conv.c.ts)))


def seen_between(conv, lo, hi) -> ColumnElement[bool]:
    """SQL: the conversion row's known page view lies in [lo, hi) (false when there is none)."""
    return and_(conv.c.viewed_at >= lo, conv.c.viewed_at < hi)


# ----- triggers -----

_SQLITE = {
    # (`+site_id`: the visitor's index, never the whole site's conversions.)
    "buyer_views_events_delete": """CREATE TRIGGER buyer_views_events_delete AFTER DELETE ON events BEGIN
        UPDATE conversions SET viewed_at = NULL
        WHERE visitor_id = OLD.visitor_id AND +site_id = OLD.site_id AND viewed_at = OLD.ts; END""",
    "buyer_views_conversions_update": """CREATE TRIGGER buyer_views_conversions_update
        AFTER UPDATE OF visitor_id, site_id ON conversions
        WHEN NEW.visitor_id IS NOT OLD.visitor_id OR NEW.site_id IS NOT OLD.site_id BEGIN
        UPDATE conversions SET viewed_at = NULL WHERE id = NEW.id; END""",
}
# PostgreSQL: retention deletes page views by the million, so one statement-level trigger over the deleted rows.
_PG_FUNCTIONS = {
    "buyer_views_forget_views": """
        BEGIN
          UPDATE conversions AS c SET viewed_at = NULL
          FROM (SELECT DISTINCT site_id, visitor_id, ts FROM gone) AS g
          WHERE c.visitor_id = g.visitor_id AND c.site_id = g.site_id AND c.viewed_at = g.ts;
          RETURN NULL;
        END""",
    "buyer_views_moved": """
        BEGIN
          IF NEW.visitor_id IS DISTINCT FROM OLD.visitor_id OR NEW.site_id IS DISTINCT FROM OLD.site_id THEN
            NEW.viewed_at := NULL;
          END IF;
          RETURN NEW;
        END""",
}
_PG_TRIGGERS = {
    "buyer_views_events_delete": ("events", "AFTER DELETE ON events REFERENCING OLD TABLE AS gone FOR EACH STATEMENT "
                                            "EXECUTE FUNCTION buyer_views_forget_views()"),
    "buyer_views_conversions_update": ("conversions", "BEFORE UPDATE ON conversions FOR EACH ROW "
                                                      "EXECUTE FUNCTION buyer_views_moved()"),
}


def trigger_statements(dialect: str) -> list[str]:
    """DDL creating the triggers that keep viewed_at true (the migration runs it)."""
    if dialect == "sqlite":
        return list(_SQLITE.values())
    if dialect == "postgresql":
        return ([f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $${body}$$"
                 for name, body in _PG_FUNCTIONS.items()]
                + [f"CREATE TRIGGER {name} {definition}" for name, (_, definition) in _PG_TRIGGERS.items()])
    raise ValueError(f"buyer views: no triggers for {dialect}")


def drop_trigger_statements(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {name}" for name in _SQLITE]
    return ([f"DROP TRIGGER IF EXISTS {name} ON {table}" for name, (table, _) in _PG_TRIGGERS.items()]
            + [f"DROP FUNCTION IF EXISTS {name}()" for name in _PG_FUNCTIONS])
