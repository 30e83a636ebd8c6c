"""Buyers' page views for the non-caller figures without a lookup per buyer: `conversions.viewed_at`
(analytics/buyerviews.py) and the calls' nearest conversions (`call_facts.bought_before_us`, `bought_after_us`);
the call's columns the reports read, copied into `call_fact_pages` and `call_fact_conversions`.

All are filled here with one statement each, rather than by marking every call stale (recomputing the facts of
150,000 calls takes minutes; these columns take seconds).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from analytics import buyerviews, callfacts
from analytics.reports.base import nearest_us
from talk.models import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("conversions", sa.Column("viewed_at", UTCDateTime(), nullable=True))
    op.add_column("call_facts", sa.Column("bought_before_us", sa.BigInteger, nullable=True))
    op.add_column("call_facts", sa.Column("bought_after_us", sa.BigInteger, nullable=True))
    # The call facts' trigger on conversions now fires on updates of the columns the facts read only, so that
    # filling viewed_at marks no call stale.
    dialect = op.get_bind().dialect.name
    for statement in [*callfacts.drop_trigger_statements(dialect, only="call_facts_conversions"),
                      *callfacts.trigger_statements(dialect, only="call_facts_conversions")]:
        op.execute(sa.text(statement))
    op.execute(buyerviews.fill())
    op.create_index("ix_conversions_buyers", "conversions", ["site_id", "visitor_id", "ts", "viewed_at"])
    f = sa.table("call_facts", sa.column("site_id"), sa.column("visitor_id"), sa.column("created_at", UTCDateTime()),
                 sa.column("bought_before_us"), sa.column("bought_after_us"))
    conv = sa.table("conversions", sa.column("site_id"), sa.column("visitor_id"), sa.column("ts", UTCDateTime()))
    op.execute(sa.update(f).values(
        bought_before_us=nearest_us(f, conv, conv.c.ts <= f.c.created_at, sa.func.max),
        bought_after_us=nearest_us(f, conv, conv.c.ts > f.c.created_at, sa.func.min)))
    _copy_call_columns_to_pages()
    for statement in buyerviews.trigger_statements(dialect):
        op.execute(sa.text(statement))


PAGE_COLUMNS = (("site_id", sa.Integer), ("queue_id", sa.Integer), ("channel", sa.String(10)),
                ("visitor_id", sa.String(48)), ("converted", sa.Integer))


def _copy_call_columns_to_pages() -> None:
    """call_fact_pages and call_fact_conversions get the call's columns the reports read with them
    (analytics/callpages.py's CALL_COLUMNS, analytics/callfacts.py's CONVERSION_COLUMNS)."""
    for table, columns in (("call_fact_pages", PAGE_COLUMNS), ("call_fact_conversions", PAGE_COLUMNS[:4])):
        for name, kind in columns:
            op.add_column(table, sa.Column(name, kind, nullable=True))
        names = [name for name, _ in columns]
        p = sa.table(table, sa.column("created_us"), sa.column("call_id"), *map(sa.column, names))
        f = sa.table("call_facts", sa.column("created_us"), sa.column("call_id"), *map(sa.column, names))
        op.execute(sa.update(p).values({name: f.c[name] for name in names})
                   .where(f.c.created_us == p.c.created_us, f.c.call_id == p.c.call_id))


def downgrade() -> None:
    for statement in buyerviews.drop_trigger_statements(op.get_bind().dialect.name):
        op.execute(sa.text(statement))
    for table, columns in (("call_fact_pages", PAGE_COLUMNS), ("call_fact_conversions", PAGE_COLUMNS[:4])):
        with op.batch_alter_table(table) as batch:
            for name, _ in columns:
                batch.drop_column(name)
    with op.batch_alter_table("call_facts") as batch:
        batch.drop_column("bought_after_us")
        batch.drop_column("bought_before_us")
    op.drop_index("ix_conversions_buyers", table_name="conversions")
    with op.batch_alter_table("conversions") as batch:
        batch.drop_column("viewed_at")
