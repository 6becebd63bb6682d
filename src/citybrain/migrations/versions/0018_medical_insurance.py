"""Medical-insurance scene: vouchers, settlements, findings, cases.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "medins_vouchers",
        sa.Column("voucher_id", sa.String(32), nullable=False),
        sa.Column("person_id", sa.String(64), nullable=False),
        sa.Column("id_masked", sa.String(32), nullable=False),
        sa.Column("name_masked", sa.String(64), nullable=False),
        sa.Column("gender", sa.String(1), nullable=False),
        sa.Column("birth_date", sa.String(10), nullable=False),
        sa.Column("insured_county", sa.String(12), nullable=False),
        sa.Column("scheme", sa.String(16), nullable=False),
        sa.Column("phone_hmac", sa.String(64), nullable=False),
        sa.Column("device_tag", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("activated_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("voucher_id", name="pk_medins_vouchers"),
        sa.UniqueConstraint("person_id", name="uq_medins_vouchers_person_id"),
    )
    op.create_table(
        "medins_voucher_uses",
        sa.Column("nonce", sa.String(32), nullable=False),
        sa.Column("voucher_id", sa.String(32), nullable=False),
        sa.Column("institution_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("used_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("settlement_id", sa.String(32)),
        sa.PrimaryKeyConstraint("nonce", name="pk_medins_voucher_uses"),
    )
    op.create_index("ix_medins_voucher_uses_expires", "medins_voucher_uses", ["expires_at"])
    op.create_table(
        "medins_voucher_counts",
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("day", "name", name="pk_medins_voucher_counts"),
    )
    op.create_table(
        "medins_terminals",
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("institution_id", sa.String(32), nullable=False),
        sa.Column("org", sa.String(64), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("client_id", name="pk_medins_terminals"),
    )
    op.create_table(
        "medins_settlements",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("institution_id", sa.String(32), nullable=False),
        sa.Column("txn_id", sa.String(64), nullable=False),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("person_id", sa.String(64), nullable=False),
        sa.Column("voucher_id", sa.String(32), nullable=False),
        sa.Column("nonce", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("settled_on", sa.String(10), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("paid", sa.Boolean, nullable=False),
        sa.Column("total_amount", sa.Float, nullable=False),
        sa.Column("fund_amount", sa.Float, nullable=False),
        sa.Column("record", sa.JSON, nullable=False),
        sa.Column("answer", sa.JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_medins_settlements"),
        sa.UniqueConstraint("institution_id", "txn_id", name="uq_medins_settlements_txn"),
        sa.UniqueConstraint("nonce", name="uq_medins_settlements_nonce"),
    )
    op.create_index(
        "ix_medins_settlements_person", "medins_settlements", ["person_id", "settled_on"]
    )
    op.create_index("ix_medins_settlements_created", "medins_settlements", ["created_at"])
    op.create_table(
        "medins_findings",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("finding_key", sa.String(200), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("rule_version", sa.String(16), nullable=False),
        sa.Column("grade", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("settlement_id", sa.String(64)),
        sa.Column("institution_id", sa.String(32), nullable=False),
        sa.Column("person_id", sa.String(64)),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("found_at", TZ, nullable=False),
        sa.Column("case_id", sa.String(32)),
        sa.PrimaryKeyConstraint("id", name="pk_medins_findings"),
        sa.UniqueConstraint("finding_key", name="uq_medins_findings_finding_key"),
    )
    op.create_index("ix_medins_findings_rule", "medins_findings", ["rule_id", "institution_id"])
    op.create_table(
        "medins_cases",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("finding_id", sa.String(32)),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("institution_id", sa.String(32), nullable=False),
        sa.Column("person_id", sa.String(64)),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("deadline", TZ, nullable=False),
        sa.Column("history", sa.JSON, nullable=False),
        sa.Column("event_case_id", sa.String(32)),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("task_id", sa.String(64)),
        sa.Column("assigned_to", sa.String(12)),
        sa.Column("assigned_task_id", sa.String(64)),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_medins_cases"),
        sa.UniqueConstraint("task_id", name="uq_medins_cases_task_id"),
    )
    op.create_index("ix_medins_cases_stage", "medins_cases", ["status", "stage"])


def downgrade() -> None:
    for name in (
        "medins_cases",
        "medins_findings",
        "medins_settlements",
        "medins_terminals",
        "medins_voucher_counts",
        "medins_voucher_uses",
        "medins_vouchers",
    ):
        op.drop_table(name)
