"""Enrollment scene: seasons, applications, appeals, notices, the province's child statistics.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrollment_seasons",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("node_code", sa.String(12), nullable=False),
        sa.Column("year", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("counties", sa.JSON, nullable=False),
        sa.Column("opens_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("grants", sa.JSON, nullable=False),
        sa.Column("draws", sa.JSON, nullable=False),
        sa.Column("opened_by", sa.String(256), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
        sa.Column("drawn_at", sa.DateTime(timezone=True)),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_enrollment_seasons"),
        sa.UniqueConstraint("node_code", "year", name="uq_enrollment_seasons_node_code"),
    )
    op.create_table(
        "enrollment_applications",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("season_id", sa.String(32), nullable=False),
        sa.Column("county_code", sa.String(12), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("child_id_number", sa.String(18), nullable=False),
        sa.Column("child_name", sa.String(64), nullable=False),
        sa.Column("child", sa.String(40), nullable=False),
        sa.Column("parent_phone", sa.String(16), nullable=False),
        sa.Column("parent_id_number", sa.String(18), nullable=False),
        sa.Column("household_id", sa.String(40), nullable=False),
        sa.Column("basis", sa.String(16), nullable=False),
        sa.Column("address_id", sa.String(40)),
        sa.Column("zone_id", sa.String(40), nullable=False),
        sa.Column("choices", sa.JSON, nullable=False),
        sa.Column("lon", sa.Float, nullable=False),
        sa.Column("lat", sa.Float, nullable=False),
        sa.Column("sibling", sa.Boolean, nullable=False),
        sa.Column("checks", sa.JSON, nullable=False),
        sa.Column("priority_class", sa.Integer),
        sa.Column("class_name", sa.String(64)),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("school_id", sa.String(40)),
        sa.Column("stage", sa.String(16)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_enrollment_applications"),
        sa.UniqueConstraint(
            "season_id", "child_id_number", name="uq_enrollment_applications_season_id"
        ),
    )
    op.create_index(
        "ix_enrollment_applications_parent",
        "enrollment_applications",
        ["season_id", "parent_phone"],
    )
    op.create_index(
        "ix_enrollment_applications_county",
        "enrollment_applications",
        ["season_id", "county_code", "level"],
    )
    op.create_table(
        "enrollment_appeals",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("application_id", sa.String(32), nullable=False),
        sa.Column("season_id", sa.String(32), nullable=False),
        sa.Column("county_code", sa.String(12), nullable=False),
        sa.Column("criterion", sa.String(64), nullable=False),
        sa.Column("statement", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decision_reason", sa.Text),
        sa.Column("decided_by", sa.String(256)),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_enrollment_appeals"),
    )
    op.create_index("ix_enrollment_appeals_application", "enrollment_appeals", ["application_id"])
    op.create_index("ix_enrollment_appeals_season", "enrollment_appeals", ["season_id", "status"])
    op.create_table(
        "enrollment_notices",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("application_id", sa.String(32), nullable=False),
        sa.Column("parent_phone", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_enrollment_notices"),
    )
    op.create_index("ix_enrollment_notices_phone", "enrollment_notices", ["parent_phone"])
    op.create_table(
        "enrollment_child_stats",
        sa.Column("child_code", sa.String(12), nullable=False),
        sa.Column("year", sa.Integer, nullable=False),
        sa.Column("stats", sa.JSON, nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("child_code", "year", name="pk_enrollment_child_stats"),
    )


def downgrade() -> None:
    op.drop_table("enrollment_child_stats")
    op.drop_index("ix_enrollment_notices_phone", table_name="enrollment_notices")
    op.drop_table("enrollment_notices")
    op.drop_index("ix_enrollment_appeals_season", table_name="enrollment_appeals")
    op.drop_index("ix_enrollment_appeals_application", table_name="enrollment_appeals")
    op.drop_table("enrollment_appeals")
    op.drop_index("ix_enrollment_applications_county", table_name="enrollment_applications")
    op.drop_index("ix_enrollment_applications_parent", table_name="enrollment_applications")
    op.drop_table("enrollment_applications")
    op.drop_table("enrollment_seasons")
