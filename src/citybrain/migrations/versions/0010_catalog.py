"""Catalog, quality scorecards and lineage.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalog_entries",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("title_zh", sa.String(200)),
        sa.Column("title_en", sa.String(200)),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("owner_department", sa.String(64), nullable=False),
        sa.Column("theme", sa.String(32), nullable=False),
        sa.Column("update_frequency", sa.String(16), nullable=False),
        sa.Column("fields", sa.JSON, nullable=False),
        sa.Column("data_level", sa.String(16), nullable=False),
        sa.Column("sharing_type", sa.String(16), nullable=False),
        sa.Column("open_data", sa.Boolean, nullable=False),
        sa.Column("subject_field", sa.String(64)),
        sa.Column("scope_fields", sa.JSON, nullable=False),
        sa.Column("keywords", sa.JSON, nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_catalog_entries_owner", "catalog_entries", ["owner_department"])
    op.create_table(
        "quality_scorecards",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("dataset_id", sa.String(200), nullable=False),
        sa.Column("owner_department", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.BigInteger),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("completeness", sa.Float, nullable=False),
        sa.Column("validity", sa.Float, nullable=False),
        sa.Column("uniqueness", sa.Float, nullable=False),
        sa.Column("timeliness", sa.Float, nullable=False),
        sa.Column("consistency", sa.Float),
        sa.Column("overall", sa.Float, nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_quality_scorecards_dataset", "quality_scorecards", ["dataset_id", "at"])
    op.create_table(
        "lineage_edges",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("output", sa.String(300), nullable=False),
        sa.Column("input", sa.String(300), nullable=False),
        sa.Column("activity", sa.String(64), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("runs", sa.BigInteger, nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("output", "input", "activity", name="uq_lineage_edges_output"),
    )
    op.create_index("ix_lineage_edges_input", "lineage_edges", ["input"])


def downgrade() -> None:
    op.drop_index("ix_lineage_edges_input", "lineage_edges")
    op.drop_table("lineage_edges")
    op.drop_index("ix_quality_scorecards_dataset", "quality_scorecards")
    op.drop_table("quality_scorecards")
    op.drop_index("ix_catalog_entries_owner", "catalog_entries")
    op.drop_table("catalog_entries")
