"""Indicators: computed values per tree, item, unit and period (a time series), and runs.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "indicator_values",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("tree", sa.String(32), nullable=False),
        sa.Column("item", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("unit", sa.String(15), nullable=False),
        sa.Column("period", sa.String(10), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("score", sa.Float),
        sa.Column("stars", sa.Integer),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("inputs", sa.JSON, nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_indicator_values"),
    )
    op.create_index(
        "ix_indicator_values_lookup",
        "indicator_values",
        ["tree", "item", "unit", "period", "computed_at"],
    )
    op.create_table(
        "indicator_runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tree", sa.String(32), nullable=False),
        sa.Column("period", sa.String(10), nullable=False),
        sa.Column("node", sa.String(15), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("items_ok", sa.Integer, nullable=False),
        sa.Column("items_no_data", sa.Integer, nullable=False),
        sa.Column("items_failed", sa.Integer, nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_indicator_runs"),
    )
    op.create_index("ix_indicator_runs_tree", "indicator_runs", ["tree", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_indicator_runs_tree", table_name="indicator_runs")
    op.drop_table("indicator_runs")
    op.drop_index("ix_indicator_values_lookup", table_name="indicator_values")
    op.drop_table("indicator_values")
