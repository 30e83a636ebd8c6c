"""Callers counted by their last call in range (analytics/reports/callcounts.py), and person sums.

- `call_facts.next_us` (when the visitor's next stored call on the site was), `multisite` (a visitor id with stored
  calls on several sites) and `undecided` (whether the visitor was seen, or bought, in a range depends on more than
  the range holding the call's day), filled here, with the partial indexes of the calls read on summed days;
- the day sums' last-call figures (`call_fact_days.last_*`, replacing `once_seen` and `once_seen_bought`) and the
  person sums (`call_fact_person_days`: the people and survey reports). call_fact_days is made anew and every day
  marked dirty: the reports read rows until the facts keeper (or catch_up) has written the sums again.

Operators on PostgreSQL: filling the three columns rewrites every row of `call_facts`, which stays twice its size
until compacted: run `VACUUM FULL call_facts` after upgrading (at 10M events: 150,000 calls, seconds).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from analytics import callfacts, factdays

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

DAY_US = 86_400_000_000
# talk.models', frozen here.
FOLLOWED_COLUMNS = ("call_id", "site_id", "visitor_id", "multisite", "seen_before_us", "seen_after_us",
                    "bought_before_us", "bought_after_us")
INDEXES = {"ix_call_facts_followed": (["next_us", "created_us"], "next_us IS NOT NULL"),
           "ix_call_facts_undecided": (["created_us"], "undecided = 1 AND next_us IS NULL"),
           "ix_call_facts_multisite": (["created_us"], "multisite = 1")}
SUMS = ("offered", "answered", "abandoned", "missed", "voicemails", "responses", "rating_sum", "once_calls")


def _remake_day_sums(*counts: str) -> None:
    """call_fact_days anew, with these counts besides SUMS and once_cents, every day dirty."""
    op.drop_table("call_fact_days")
    op.create_table(
        "call_fact_days",
        *(sa.Column(name, sa.Integer(), primary_key=True) for name in ("day", "site_id", "queue_id")),
        sa.Column("channel", sa.String(10), primary_key=True),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in (*SUMS, *counts)),
        sa.Column("once_cents", sa.BigInteger(), nullable=False),
    )
    op.execute("DELETE FROM call_fact_dirty_days")
    op.execute(f"INSERT INTO call_fact_dirty_days (day) SELECT DISTINCT created_us / {DAY_US} FROM call_facts")


def upgrade() -> None:
    op.add_column("call_facts", sa.Column("next_us", sa.BigInteger(), nullable=True))
    op.add_column("call_facts", sa.Column("multisite", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("call_facts", sa.Column("undecided", sa.Integer(), nullable=False, server_default="1"))
    facts = sa.table("call_facts", *(sa.column(name) for name in (
        "created_us", "seen_before_us", "seen_after_us", "bought_before_us", "bought_after_us", "undecided")))
    op.execute(facts.update().values(undecided=sa.case((factdays.undecided(facts), 1), else_=0)))
    op.execute(callfacts.link_calls())
    for name, (columns, where) in INDEXES.items():
        op.create_index(name, "call_facts", columns, postgresql_where=sa.text(where), sqlite_where=sa.text(where),
                        postgresql_include=list(FOLLOWED_COLUMNS))
    op.create_table(
        "call_fact_person_days",
        *(sa.Column(name, sa.Integer(), primary_key=True) for name in ("day", "site_id", "queue_id")),
        sa.Column("channel", sa.String(10), primary_key=True),
        sa.Column("person_id", sa.Integer(), primary_key=True),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in ("calls", "answered", "talked")),
        sa.Column("talk_us", sa.BigInteger(), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in (
            "converted", "responses", "rating_sum", "rated_1", "rated_2", "rated_3", "rated_4", "rated_5")),
    )
    _remake_day_sums("once_converted", "once_conversions", "last_calls", "last_seen", "last_seen_bought")


def downgrade() -> None:
    op.drop_table("call_fact_person_days")
    _remake_day_sums("once_seen", "once_seen_bought", "once_converted", "once_conversions")
    for name in INDEXES:
        op.drop_index(name, "call_facts")
    with op.batch_alter_table("call_facts") as batch:
        batch.drop_column("undecided")
        batch.drop_column("multisite")
        batch.drop_column("next_us")
