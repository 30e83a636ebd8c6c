"""The journey: page events, conversions, survey answers, dispositions, landing pages, API tokens.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from talk.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("queues") as batch:
        batch.add_column(sa.Column("landing_url", sa.Text, nullable=True))
        batch.add_column(sa.Column("redirect_enabled", sa.Boolean, nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("survey_rating_question", sa.String(300), nullable=True))
        batch.add_column(sa.Column("survey_comment_question", sa.String(300), nullable=True))
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("session_id", sa.String(48), nullable=True))
        batch.add_column(sa.Column("has_journey", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("disposition", sa.String(120), nullable=True))
        batch.add_column(sa.Column("landing_url", sa.Text, nullable=True))
    op.create_table(
        "dispositions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("queue_id", sa.Integer, sa.ForeignKey("queues.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("landing_url", sa.Text, nullable=True),
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
        sa.UniqueConstraint("queue_id", "name"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event_id", sa.String(48), nullable=False),
        sa.Column("visitor_id", sa.String(48), nullable=False),
        sa.Column("session_id", sa.String(48), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("referrer", sa.Text, nullable=True),
        *(sa.Column(f"utm_{name}", sa.String(200), nullable=True) for name in ("source", "medium", "campaign", "term", "content")),
        sa.Column("click_id_type", sa.String(16), nullable=True),
        sa.Column("click_id", sa.String(200), nullable=True),
        sa.Column("props", sa.JSON, nullable=True),
        sa.Column("ip_hash", sa.String(32), nullable=True),
        sa.UniqueConstraint("site_id", "event_id"),
    )
    op.create_index("ix_events_visitor_ts", "events", ["visitor_id", "ts"])
    op.create_index("ix_events_session_ts", "events", ["session_id", "ts"])
    op.create_index("ix_events_site_ts", "events", ["site_id", "ts"])
    op.create_table(
        "conversions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
        sa.Column("order_id", sa.String(100), nullable=False),
        sa.Column("visitor_id", sa.String(48), nullable=False),
        sa.Column("value", sa.Numeric(14, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("origin", sa.String(10), nullable=False),
        sa.UniqueConstraint("site_id", "order_id"),
    )
    op.create_index("ix_conversions_visitor_ts", "conversions", ["visitor_id", "ts"])
    op.create_table(
        "survey_answers",
        sa.Column("call_id", sa.String(40), sa.ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("queue_id", sa.Integer, sa.ForeignKey("queues.id"), nullable=False, index=True),
        sa.Column("agent_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=True, index=True),
        sa.Column("rating", sa.Integer, nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    for table in ("api_tokens", "survey_answers", "conversions", "events", "dispositions"):
        op.drop_table(table)
    with op.batch_alter_table("calls") as batch:
        for column in ("landing_url", "disposition", "has_journey", "session_id"):
            batch.drop_column(column)
    with op.batch_alter_table("queues") as batch:
        for column in ("survey_comment_question", "survey_rating_question", "redirect_enabled", "landing_url"):
            batch.drop_column(column)
