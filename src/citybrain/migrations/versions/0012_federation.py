"""Federation: trusted peers, tasks, escalations, the outbox and the idempotent inbox.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "federation_peers",
        sa.Column("code", sa.String(15), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("relation", sa.String(8), nullable=False),
        sa.Column("url", sa.String(512), nullable=False),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_contact_at", sa.DateTime(timezone=True)),
        sa.Column("version", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.PrimaryKeyConstraint("code", name="pk_federation_peers"),
    )
    op.create_table(
        "federation_tasks",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("peer_code", sa.String(15), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("due", sa.Date),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_seq", sa.Integer, nullable=False),
        sa.Column("history", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_federation_tasks"),
    )
    op.create_index(
        "ix_federation_tasks_direction", "federation_tasks", ["direction", "created_at"]
    )
    op.create_table(
        "federation_escalations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("peer_code", sa.String(15), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_federation_escalations"),
    )
    op.create_table(
        "federation_outbox",
        sa.Column("seq", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(32), nullable=False),
        sa.Column("peer_code", sa.String(15), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("seq", name="pk_federation_outbox"),
        sa.UniqueConstraint("message_id", name="uq_federation_outbox_message"),
    )
    op.create_index(
        "ix_federation_outbox_state", "federation_outbox", ["state", "peer_code", "seq"]
    )
    op.create_table(
        "federation_inbox",
        sa.Column("sender_code", sa.String(15), nullable=False),
        sa.Column("message_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sender_code", "message_id", name="pk_federation_inbox"),
    )


def downgrade() -> None:
    op.drop_table("federation_inbox")
    op.drop_index("ix_federation_outbox_state", "federation_outbox")
    op.drop_table("federation_outbox")
    op.drop_table("federation_escalations")
    op.drop_index("ix_federation_tasks_direction", "federation_tasks")
    op.drop_table("federation_tasks")
    op.drop_table("federation_peers")
