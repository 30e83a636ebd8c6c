"""Sellers and masked calls: public names, seller queues and call tokens, masked endpoints, refusals, voicemail.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import secrets

import sqlalchemy as sa
from alembic import op

from talk.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("public_name", sa.String(120), nullable=True))

    with op.batch_alter_table("queues") as batch:
        batch.add_column(sa.Column("kind", sa.String(10), nullable=False, server_default="agents"))
        batch.add_column(sa.Column("seller_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("call_token", sa.String(48), nullable=True))
        batch.add_column(sa.Column("voicemail_enabled", sa.Boolean, nullable=False, server_default=sa.true()))
        batch.create_foreign_key("fk_queues_seller_id_accounts", "accounts", ["seller_id"], ["id"], ondelete="CASCADE")
        batch.create_index("ix_queues_seller_id", ["seller_id"])
    # Every existing queue gets its own fresh, unguessable call page token before the column becomes required.
    connection = op.get_bind()
    for (queue_id,) in connection.execute(sa.text("SELECT id FROM queues")).all():
        connection.execute(sa.text("UPDATE queues SET call_token = :token WHERE id = :id"),
                           {"token": "q_" + secrets.token_urlsafe(24), "id": queue_id})
    with op.batch_alter_table("queues") as batch:
        batch.alter_column("call_token", existing_type=sa.String(48), nullable=False)
        batch.create_unique_constraint("uq_queues_call_token", ["call_token"])

    op.create_table(
        "seller_endpoints",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token", sa.String(48), nullable=False, unique=True),
        sa.Column("seller_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
        sa.Column("queue_id", sa.Integer, sa.ForeignKey("queues.id", ondelete="CASCADE"), nullable=False),
        sa.Column("listing", sa.String(120), nullable=True),
        sa.Column("label", sa.String(120), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "endpoint_refusals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("endpoint_id", sa.Integer, sa.ForeignKey("seller_endpoints.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
        sa.Column("visitor_id", sa.String(48), nullable=True, index=True),
        sa.Column("reason", sa.String(10), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
    )

    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("channel", sa.String(10), nullable=False, server_default="agent"))
        batch.add_column(sa.Column("endpoint_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("listing", sa.String(120), nullable=True))
        batch.create_foreign_key("fk_calls_endpoint_id_seller_endpoints", "seller_endpoints", ["endpoint_id"], ["id"],
                                 ondelete="SET NULL")

    op.create_table(
        "voicemails",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("call_id", sa.String(40), sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
        sa.Column("queue_id", sa.Integer, sa.ForeignKey("queues.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("recipient_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=True,
                  index=True),
        sa.Column("listing", sa.String(120), nullable=True),
        sa.Column("buyer_alias", sa.String(40), nullable=False),
        sa.Column("file_name", sa.String(100), nullable=False),
        sa.Column("duration_seconds", sa.Float, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
        sa.Column("handled_at", UTCDateTime(), nullable=True),
        sa.Column("handled_by", sa.Integer, sa.ForeignKey("accounts.id", ondelete="SET NULL"), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("voicemails")
    with op.batch_alter_table("calls") as batch:
        batch.drop_constraint("fk_calls_endpoint_id_seller_endpoints", type_="foreignkey")
        for column in ("listing", "endpoint_id", "channel"):
            batch.drop_column(column)
    op.drop_table("endpoint_refusals")
    op.drop_table("seller_endpoints")
    with op.batch_alter_table("queues") as batch:
        batch.drop_constraint("uq_queues_call_token", type_="unique")
        batch.drop_constraint("fk_queues_seller_id_accounts", type_="foreignkey")
        batch.drop_index("ix_queues_seller_id")
        for column in ("voicemail_enabled", "call_token", "seller_id", "kind"):
            batch.drop_column(column)
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("public_name")
