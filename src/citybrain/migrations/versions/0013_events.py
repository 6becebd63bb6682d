"""Event centre: cases, their transitions log, escalations waiting for the parent node.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_cases",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("urgency", sa.String(16), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("address", sa.String(500)),
        sa.Column("lon", sa.Float),
        sa.Column("lat", sa.Float),
        sa.Column("area_code", sa.String(15), nullable=False),
        sa.Column("department", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reporter", sa.String(256), nullable=False),
        sa.Column("reporter_org", sa.String(64), nullable=False),
        sa.Column("contact_phone", sa.String(32)),
        sa.Column("external_ref", sa.String(256)),
        sa.Column("classified_type", sa.String(64)),
        sa.Column("confidence", sa.Float),
        sa.Column("deadline", sa.DateTime(timezone=True)),
        sa.Column("extensions", sa.Integer, nullable=False),
        sa.Column("returns", sa.Integer, nullable=False),
        sa.Column("urges", sa.Integer, nullable=False),
        sa.Column("escalated", sa.Boolean, nullable=False),
        sa.Column("satisfaction", sa.Integer),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True)),
        sa.Column("dispatched_at", sa.DateTime(timezone=True)),
        sa.Column("handled_at", sa.DateTime(timezone=True)),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
        sa.Column("rated_at", sa.DateTime(timezone=True)),
        sa.Column("version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_event_cases"),
    )
    op.create_index("ix_event_cases_state", "event_cases", ["state", "department"])
    op.create_index("ix_event_cases_external_ref", "event_cases", ["external_ref"])
    op.create_index("ix_event_cases_created_at", "event_cases", ["created_at"])
    op.create_table(
        "event_transitions",
        sa.Column("seq", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("transition", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=False),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("department", sa.String(64)),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("actor_org", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_event_transitions"),
    )
    op.create_index("ix_event_transitions_case_id", "event_transitions", ["case_id", "seq"])
    op.create_index("ix_event_transitions_at", "event_transitions", ["at"])
    op.create_table(
        "event_escalations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_event_escalations"),
    )
    op.create_index("ix_event_escalations_status", "event_escalations", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_event_escalations_status", table_name="event_escalations")
    op.drop_table("event_escalations")
    op.drop_index("ix_event_transitions_at", table_name="event_transitions")
    op.drop_index("ix_event_transitions_case_id", table_name="event_transitions")
    op.drop_table("event_transitions")
    op.drop_index("ix_event_cases_created_at", table_name="event_cases")
    op.drop_index("ix_event_cases_external_ref", table_name="event_cases")
    op.drop_index("ix_event_cases_state", table_name="event_cases")
    op.drop_table("event_cases")
