"""The attributed conversions carry their call's group keys (person, landing page, source, UTM campaign), so the
reports that group conversions (people, landing pages, sources, campaigns) read `call_fact_conversions` alone.
Filled from the call facts with one statement (analytics/callfacts.py's copy_call_columns_to_conversions).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from analytics import callfacts

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = (("person_id", sa.Integer()), ("landing_page", sa.Text()), ("source_kind", sa.String(20)),
           ("source", sa.String(200)), ("utm_source", sa.String(200)), ("utm_medium", sa.String(200)),
           ("utm_campaign", sa.String(200)))


def upgrade() -> None:
    for name, kind in COLUMNS:
        op.add_column("call_fact_conversions", sa.Column(name, kind, nullable=True))
    op.execute(callfacts.copy_call_columns_to_conversions(tuple(name for name, _ in COLUMNS)))


def downgrade() -> None:
    with op.batch_alter_table("call_fact_conversions") as batch:
        for name, _ in COLUMNS:
            batch.drop_column(name)
