"""NGSI-LD temporal history: one row per attribute instance written.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ngsild_history",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("entity_id", sa.String(512), nullable=False),
        sa.Column("attribute", sa.String(512), nullable=False),
        sa.Column("dataset_id", sa.String(512)),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("number", sa.Float),
        sa.Column("instance", sa.JSON, nullable=False),
    )
    op.create_index(
        "ix_ngsild_history_lookup", "ngsild_history", ["tenant", "entity_id", "attribute", "at"]
    )


def downgrade() -> None:
    op.drop_index("ix_ngsild_history_lookup", "ngsild_history")
    op.drop_table("ngsild_history")
