"""NGSI-LD subscriptions and the durable outbox of their notifications.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ngsild_subscriptions",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("id", sa.String(512), primary_key=True),
        sa.Column("subscription", sa.JSON, nullable=False),
        sa.Column("context", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_notification", sa.DateTime(timezone=True)),
        sa.Column("last_success", sa.DateTime(timezone=True)),
        sa.Column("last_failure", sa.DateTime(timezone=True)),
        sa.Column("times_sent", sa.BigInteger, nullable=False),
        sa.Column("times_failed", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "ngsild_outbox",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("subscription_id", sa.String(512), nullable=False),
        sa.Column("endpoint", sa.JSON, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
    )
    op.create_index(
        "ix_ngsild_outbox_pending", "ngsild_outbox", ["delivered_at", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_ngsild_outbox_pending", "ngsild_outbox")
    op.drop_table("ngsild_outbox")
    op.drop_table("ngsild_subscriptions")
