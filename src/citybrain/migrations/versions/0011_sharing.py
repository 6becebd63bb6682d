"""Sharing: access requests, approvals and grants.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_requests",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("dataset_id", sa.String(200), nullable=False),
        sa.Column("requester_org", sa.String(64), nullable=False),
        sa.Column("requested_by", sa.String(256), nullable=False),
        sa.Column("owner_org", sa.String(64), nullable=False),
        sa.Column("data_level", sa.String(16), nullable=False),
        sa.Column("fields", sa.JSON, nullable=False),
        sa.Column("row_scope", sa.JSON, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("legal_basis", sa.Text, nullable=False),
        sa.Column("duration_days", sa.Integer, nullable=False),
        sa.Column("pseudonymise", sa.Boolean, nullable=False),
        sa.Column("questions", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("owner_decision", sa.JSON),
        sa.Column("bureau_decision", sa.JSON),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("grant_id", sa.String(32)),
        sa.PrimaryKeyConstraint("id", name="pk_access_requests"),
    )
    op.create_index("ix_access_requests_requester", "access_requests", ["requester_org", "status"])
    op.create_index("ix_access_requests_owner", "access_requests", ["owner_org", "status"])
    op.create_index("ix_access_requests_status", "access_requests", ["status"])
    op.create_table(
        "grants",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("dataset_id", sa.String(200), nullable=False),
        sa.Column("grantee_org", sa.String(64), nullable=False),
        sa.Column("owner_org", sa.String(64), nullable=False),
        sa.Column("fields", sa.JSON, nullable=False),
        sa.Column("row_scope", sa.JSON, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("legal_basis", sa.Text, nullable=False),
        sa.Column("pseudonymise", sa.Boolean, nullable=False),
        sa.Column("questions", sa.JSON, nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_by", sa.String(256)),
        sa.Column("revoke_reason", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_grants"),
        sa.ForeignKeyConstraint(["request_id"], ["access_requests.id"], name="fk_grants_request"),
    )
    # the gate's lookup: one grant of one org on one dataset
    op.create_index("ix_grants_dataset_grantee", "grants", ["dataset_id", "grantee_org"])
    op.create_index("ix_grants_owner", "grants", ["owner_org"])


def downgrade() -> None:
    op.drop_index("ix_grants_owner", "grants")
    op.drop_index("ix_grants_dataset_grantee", "grants")
    op.drop_table("grants")
    op.drop_index("ix_access_requests_status", "access_requests")
    op.drop_index("ix_access_requests_owner", "access_requests")
    op.drop_index("ix_access_requests_requester", "access_requests")
    op.drop_table("access_requests")
