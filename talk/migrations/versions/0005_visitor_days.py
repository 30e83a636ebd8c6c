"""The visitor-day rollup (analytics/visitordays.py): distinct visitors of any range without reading page views.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from analytics.visitordays import rebuild_statements
from talk.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "visitor_days",
        sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("visitor_id", sa.String(48), primary_key=True),
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("first_ts", UTCDateTime(), nullable=False),
        sa.Column("last_ts", UTCDateTime(), nullable=False),
        sa.Column("prev_day", sa.Integer, nullable=True),
        sa.Column("next_day", sa.Integer, nullable=True),
    )
    op.create_index("ix_visitor_days_day_site", "visitor_days", ["day", "site_id"])
    op.create_index("ix_visitor_days_unlinked", "visitor_days", ["site_id", "visitor_id"],
                    sqlite_where=sa.text("prev_day IS NULL"), postgresql_where=sa.text("prev_day IS NULL"))
    op.create_table(
        "visitor_day_counts",
        sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("prev_day", sa.Integer, primary_key=True),
        sa.Column("visitors", sa.Integer, nullable=False),
    )
    for statement in rebuild_statements(op.get_bind().dialect.name):  # the page views already stored
        op.execute(sa.text(statement))


def downgrade() -> None:
    op.drop_table("visitor_day_counts")
    op.drop_index("ix_visitor_days_unlinked", table_name="visitor_days")
    op.drop_index("ix_visitor_days_day_site", table_name="visitor_days")
    op.drop_table("visitor_days")
