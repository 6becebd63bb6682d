"""NGSI-LD context source registrations: where a distributed query also asks.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ngsild_csource_registrations",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("id", sa.String(512), nullable=False),
        sa.Column("registration", sa.JSON, nullable=False),
        sa.Column("origin", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("tenant", "id", name="pk_ngsild_csource_registrations"),
    )
    op.create_index(
        "ix_ngsild_csource_registrations_origin", "ngsild_csource_registrations", ["origin"]
    )


def downgrade() -> None:
    op.drop_index(
        "ix_ngsild_csource_registrations_origin", table_name="ngsild_csource_registrations"
    )
    op.drop_table("ngsild_csource_registrations")
