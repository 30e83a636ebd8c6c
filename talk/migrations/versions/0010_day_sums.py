"""Day sums of the call facts (analytics/factdays.py): `call_fact_days` (summary and conversion figures) and
`call_fact_page_days` (pages reports), the dirty-day marks that keep them exact (`call_fact_dirty_days`), the calls
the sums leave to be read (`call_facts.unsummed`, and the attributed conversions' copy of `repeat_caller`, filled
here) and the partial indexes of the rows read on summed days (`ix_call_facts_unsummed`, `ix_call_fact_pages_shared`,
`ix_call_fact_conversions_repeat`). Every day holding stored facts is marked dirty: the
reports read those days' rows until the facts keeper (or catch_up) has written their sums.

Operators on PostgreSQL: filling the two columns rewrites every row of `call_facts` and `call_fact_conversions`,
which stay twice their size (and the reports reading them slower) until compacted: run `VACUUM FULL call_facts,
call_fact_conversions` (or pg_repack) after upgrading (at 10M events: 150,000 calls, seconds).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from analytics import callfacts, factdays

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

SHARED_PAGE = "event_shared = 1 OR visitor_shared = 1"  # talk.models.SHARED_PAGE, frozen here
DAY_US = 86_400_000_000
UNSUMMED_COLUMNS = ("call_id", "site_id", "queue_id", "channel", "visitor_id", "repeat_caller", "seen_before_us",
                    "seen_after_us", "bought_before_us", "bought_after_us")  # talk.models', frozen here


def upgrade() -> None:
    op.create_table(
        "call_fact_page_days",
        sa.Column("after", sa.Integer(), primary_key=True),
        sa.Column("day", sa.Integer(), primary_key=True),
        sa.Column("site_id", sa.Integer(), primary_key=True),
        sa.Column("queue_id", sa.Integer(), primary_key=True),
        sa.Column("channel", sa.String(10), primary_key=True),
        sa.Column("path", sa.Text(), primary_key=True),
        sa.Column("views", sa.Integer(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("callers", sa.Integer(), nullable=False),
        sa.Column("converted", sa.Integer(), nullable=False),
    )
    op.create_table(
        "call_fact_days",
        *(sa.Column(name, sa.Integer(), primary_key=True) for name in ("day", "site_id", "queue_id")),
        sa.Column("channel", sa.String(10), primary_key=True),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in (
            "offered", "answered", "abandoned", "missed", "voicemails", "responses", "rating_sum", "once_calls",
            "once_seen", "once_seen_bought", "once_converted", "once_conversions")),
        sa.Column("once_cents", sa.BigInteger(), nullable=False),
    )
    op.create_table("call_fact_dirty_days", sa.Column("day", sa.Integer(), primary_key=True))
    op.add_column("call_facts", sa.Column("unsummed", sa.Integer(), nullable=False, server_default="1"))
    facts = sa.table("call_facts", *(sa.column(name) for name in (
        "created_us", "repeat_caller", "seen_before_us", "seen_after_us", "bought_before_us", "bought_after_us",
        "unsummed")))
    op.execute(facts.update().values(unsummed=sa.case((factdays.unsummed(facts), 1), else_=0)))
    op.create_index("ix_call_facts_unsummed", "call_facts", ["created_us"], postgresql_where=sa.text("unsummed = 1"),
                    sqlite_where=sa.text("unsummed = 1"), postgresql_include=list(UNSUMMED_COLUMNS))
    op.add_column("call_fact_conversions", sa.Column("repeat_caller", sa.Integer(), nullable=False,
                                                     server_default="1"))
    op.execute(callfacts.copy_call_columns_to_conversions(("repeat_caller",)))
    op.create_index("ix_call_fact_conversions_repeat", "call_fact_conversions", ["created_us"],
                    postgresql_where=sa.text("repeat_caller = 1"), sqlite_where=sa.text("repeat_caller = 1"))
    op.create_index("ix_call_fact_pages_shared", "call_fact_pages", ["after", "created_us"],
                    postgresql_where=sa.text(SHARED_PAGE), sqlite_where=sa.text(SHARED_PAGE))
    op.execute(f"INSERT INTO call_fact_dirty_days (day) SELECT DISTINCT created_us / {DAY_US} FROM call_facts")


def downgrade() -> None:
    op.drop_index("ix_call_fact_pages_shared", "call_fact_pages")
    op.drop_index("ix_call_fact_conversions_repeat", "call_fact_conversions")
    with op.batch_alter_table("call_fact_conversions") as batch:
        batch.drop_column("repeat_caller")
    op.drop_index("ix_call_facts_unsummed", "call_facts")
    with op.batch_alter_table("call_facts") as batch:
        batch.drop_column("unsummed")
    op.drop_table("call_fact_dirty_days")
    op.drop_table("call_fact_days")
    op.drop_table("call_fact_page_days")
