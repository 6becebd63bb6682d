"""Departmental tables: the registry of Delta tables and the log of their loads.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "table_datasets",
        sa.Column("department", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("owner_department", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("primary_key", sa.JSON, nullable=False),
        sa.Column("columns", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "table_loads",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("department", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.BigInteger),
        sa.Column("accepted", sa.BigInteger, nullable=False),
        sa.Column("rejected", sa.BigInteger, nullable=False),
        sa.Column("rejections", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["department", "name"],
            ["table_datasets.department", "table_datasets.name"],
            name="fk_table_loads_dataset",
        ),
    )
    op.create_index("ix_table_loads_dataset", "table_loads", ["department", "name", "sha256"])


def downgrade() -> None:
    op.drop_index("ix_table_loads_dataset", "table_loads")
    op.drop_table("table_loads")
    op.drop_table("table_datasets")
