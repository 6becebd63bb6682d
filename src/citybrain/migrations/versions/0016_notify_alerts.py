"""Notifications (subscriptions, the delivery outbox) and alerts (dedup state, firings).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notify_subscriptions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("subscriber_kind", sa.String(16), nullable=False),
        sa.Column("subscriber", sa.String(256), nullable=False),
        sa.Column("happenings", sa.JSON, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("target", sa.String(1000), nullable=False),
        sa.Column("secret", sa.String(256)),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notify_subscriptions"),
    )
    op.create_index(
        "ix_notify_subscriptions_subscriber",
        "notify_subscriptions",
        ["subscriber_kind", "subscriber"],
    )
    op.create_table(
        "notify_outbox",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("subscription_id", sa.String(32), nullable=False),
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("happening", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("department", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_notify_outbox"),
        sa.UniqueConstraint("idempotency_key", name="uq_notify_outbox_idempotency_key"),
    )
    op.create_index("ix_notify_outbox_due", "notify_outbox", ["state", "next_at"])
    op.create_table(
        "alert_state",
        sa.Column("dedup_key", sa.String(600), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("case_id", sa.String(32)),
        sa.Column("last_fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("suppressed", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("dedup_key", name="pk_alert_state"),
    )
    op.create_table(
        "alert_firings",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_firings"),
    )
    op.create_index("ix_alert_firings_fired", "alert_firings", ["fired_at"])


def downgrade() -> None:
    op.drop_index("ix_alert_firings_fired", table_name="alert_firings")
    op.drop_table("alert_firings")
    op.drop_table("alert_state")
    op.drop_index("ix_notify_outbox_due", table_name="notify_outbox")
    op.drop_table("notify_outbox")
    op.drop_index("ix_notify_subscriptions_subscriber", table_name="notify_subscriptions")
    op.drop_table("notify_subscriptions")
