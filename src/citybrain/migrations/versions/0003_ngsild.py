"""NGSI-LD context entities: tenants, entities in expanded normalized form, and their types.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ngsild_tenants",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "ngsild_entities",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("id", sa.String(512), primary_key=True),
        sa.Column("entity", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "ngsild_entity_types",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("id", sa.String(512), primary_key=True),
        sa.Column("type", sa.String(512), primary_key=True),
    )
    op.create_index("ix_ngsild_entity_types_type", "ngsild_entity_types", ["tenant", "type"])


def downgrade() -> None:
    op.drop_index("ix_ngsild_entity_types_type", "ngsild_entity_types")
    op.drop_table("ngsild_entity_types")
    op.drop_table("ngsild_entities")
    op.drop_table("ngsild_tenants")
