"""Call facts (analytics/callfacts.py): one row per call with what the reports need of it, kept exact by triggers.

Existing calls are all marked stale here; the server (or `talk db upgrade`) computes their facts afterwards, and
until then the reports compute them from the raw rows.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from analytics.callfacts import drop_trigger_statements, trigger_statements
from talk.models import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "call_facts",
        sa.Column("created_us", sa.BigInteger, primary_key=True),
        sa.Column("call_id", sa.String(40), primary_key=True),
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("queue_id", sa.Integer, nullable=False),
        sa.Column("person_id", sa.Integer, nullable=True),
        sa.Column("visitor_id", sa.String(48), nullable=False),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("has_journey", sa.Boolean, nullable=False),
        sa.Column("session_id", sa.String(48), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("answered_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("outcome", sa.Integer, nullable=False),
        sa.Column("wait_us", sa.BigInteger, nullable=True),
        sa.Column("talk_us", sa.BigInteger, nullable=True),
        sa.Column("rating", sa.Integer, nullable=True),
        sa.Column("commented", sa.Integer, nullable=False),
        sa.Column("voicemails", sa.Integer, nullable=False),
        sa.Column("repeat_caller", sa.Integer, nullable=False),
        sa.Column("converted", sa.Integer, nullable=False),
        sa.Column("seen_before_us", sa.BigInteger, nullable=True),
        sa.Column("seen_after_us", sa.BigInteger, nullable=True),
        sa.Column("landing_page", sa.Text, nullable=True),
        sa.Column("landed", sa.Integer, nullable=False),
        sa.Column("source_kind", sa.String(20), nullable=False),
        sa.Column("source", sa.String(200), nullable=True),
        sa.Column("utm_source", sa.String(200), nullable=True),
        sa.Column("utm_medium", sa.String(200), nullable=True),
        sa.Column("utm_campaign", sa.String(200), nullable=True),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_call_facts_call_id", "call_facts", ["call_id"], unique=True)
    op.create_index("ix_call_facts_visitor", "call_facts", ["visitor_id", "site_id", "created_us"])
    op.create_table(
        "call_fact_pages",
        sa.Column("after", sa.Integer, primary_key=True),
        sa.Column("created_us", sa.BigInteger, primary_key=True),
        sa.Column("call_id", sa.String(40), primary_key=True),
        sa.Column("event_id", sa.BigInteger, primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("first_in_call", sa.Integer, nullable=False),
        sa.Column("event_shared", sa.Integer, nullable=False),
        sa.Column("visitor_shared", sa.Integer, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_call_fact_pages_event_id", "call_fact_pages", ["event_id"])
    op.create_table(
        "call_fact_conversions",
        sa.Column("created_us", sa.BigInteger, primary_key=True),
        sa.Column("call_id", sa.String(40), primary_key=True),
        sa.Column("conversion_id", sa.Integer, primary_key=True),
        sa.Column("cents", sa.BigInteger, nullable=False),
        sa.Column("delay_us", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table("call_facts_stale", sa.Column("call_id", sa.String(40), primary_key=True))
    op.create_table(
        "call_facts_meta",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("window_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_calls_session_id", "calls", ["session_id"])  # the triggers' lookup of a session's calls
    op.create_index("ix_conversions_ts", "conversions", ["ts"])  # the conversion report's buyers of a range
    for statement in trigger_statements(op.get_bind().dialect.name):
        op.execute(sa.text(statement))
    op.execute(sa.text("INSERT INTO call_facts_stale (call_id) SELECT id FROM calls"))


def downgrade() -> None:
    for statement in drop_trigger_statements(op.get_bind().dialect.name):
        op.execute(sa.text(statement))
    op.drop_index("ix_conversions_ts", table_name="conversions")
    op.drop_index("ix_calls_session_id", table_name="calls")
    op.drop_index("ix_call_fact_pages_event_id", table_name="call_fact_pages")
    for table in ("call_facts_meta", "call_facts_stale", "call_fact_conversions", "call_fact_pages"):
        op.drop_table(table)
    op.drop_index("ix_call_facts_visitor", table_name="call_facts")
    op.drop_index("ix_call_facts_call_id", table_name="call_facts")
    op.drop_table("call_facts")
