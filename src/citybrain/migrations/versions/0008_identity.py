"""Identity: organisations, users, service accounts, API keys, one-time codes, throttling.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identity_orgs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name_zh", sa.String(128), nullable=False),
        sa.Column("name_en", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_identity_orgs"),
    )
    op.create_table(
        "identity_users",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("org", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("phone", sa.String(16)),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_identity_users"),
        sa.UniqueConstraint("username", name="uq_identity_users_username"),
        sa.ForeignKeyConstraint(
            ["org"], ["identity_orgs.id"], name="fk_identity_users_org_identity_orgs"
        ),
    )
    op.create_table(
        "identity_service_accounts",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("org", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("client_id", name="pk_identity_service_accounts"),
        sa.ForeignKeyConstraint(
            ["org"], ["identity_orgs.id"], name="fk_identity_service_accounts_org_identity_orgs"
        ),
    )
    op.create_table(
        "identity_api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("org", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_identity_api_keys"),
        sa.UniqueConstraint("prefix", name="uq_identity_api_keys_prefix"),
        sa.ForeignKeyConstraint(
            ["org"], ["identity_orgs.id"], name="fk_identity_api_keys_org_identity_orgs"
        ),
    )
    op.create_table(
        "identity_otp_codes",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("phone_hash", sa.String(64), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_identity_otp_codes"),
    )
    op.create_index(
        "ix_identity_otp_codes_phone_hash", "identity_otp_codes", ["phone_hash", "created_at"]
    )
    op.create_table(
        "identity_signin_failures",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("key", name="pk_identity_signin_failures"),
    )


def downgrade() -> None:
    op.drop_table("identity_signin_failures")
    op.drop_index("ix_identity_otp_codes_phone_hash", table_name="identity_otp_codes")
    op.drop_table("identity_otp_codes")
    op.drop_table("identity_api_keys")
    op.drop_table("identity_service_accounts")
    op.drop_table("identity_users")
    op.drop_table("identity_orgs")
