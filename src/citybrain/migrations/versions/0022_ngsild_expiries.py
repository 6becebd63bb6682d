"""When transient NGSI-LD entities and attribute instances expire (clause 4.22).

One row per entity that carries an expiresAt, at the earliest of them, indexed by time, so
that the node's reaper finds what is due without reading every entity.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the expiry table."""
    op.create_table(
        "ngsild_expiries",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("entity_id", sa.String(512), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ngsild_expiries_at", "ngsild_expiries", ["at"])


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ix_ngsild_expiries_at", table_name="ngsild_expiries")
    op.drop_table("ngsild_expiries")
