"""The scene's operational tables (migration 0018): vouchers, their uses, settlements, cases."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from citybrain.core.db import metadata

vouchers = Table(
    "medins_vouchers",
    metadata,
    Column("voucher_id", String(32), primary_key=True),
    Column("person_id", String(64), nullable=False, unique=True),
    Column("id_masked", String(32), nullable=False),
    Column("name_masked", String(64), nullable=False),
    Column("gender", String(1), nullable=False),
    Column("birth_date", String(10), nullable=False),
    Column("insured_county", String(12), nullable=False),
    Column("scheme", String(16), nullable=False),
    # keyed hash of the phone the voucher was activated with: the phone itself is not kept
    Column("phone_hmac", String(64), nullable=False),
    Column("device_tag", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("activated_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # the changes since a moment: how every process of the node refreshes its voucher cache
    Index("ix_medins_vouchers_updated", "updated_at"),
)

# the replay store: one row per token nonce ever accepted; a token is usable once
voucher_uses = Table(
    "medins_voucher_uses",
    metadata,
    Column("nonce", String(32), primary_key=True),
    Column("voucher_id", String(32), nullable=False),
    Column("institution_id", String(32), nullable=False),
    Column("kind", String(24), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("settlement_id", String(32)),
    Index("ix_medins_voucher_uses_expires", "expires_at"),
)

voucher_counts = Table(
    "medins_voucher_counts",
    metadata,
    Column("day", String(10), primary_key=True),
    Column("name", String(32), primary_key=True),
    Column("count", Integer, nullable=False),
)

terminals = Table(
    "medins_terminals",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("institution_id", String(32), nullable=False),
    Column("org", String(64), nullable=False),
    Column("label", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

settlements = Table(
    "medins_settlements",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("institution_id", String(32), nullable=False),
    Column("txn_id", String(64), nullable=False),
    Column("body_hash", String(64), nullable=False),
    Column("person_id", String(64), nullable=False),
    Column("voucher_id", String(32), nullable=False),
    Column("nonce", String(32), nullable=False, unique=True),
    Column("kind", String(24), nullable=False),
    Column("settled_on", String(10), nullable=False),
    Column("outcome", String(8), nullable=False),
    Column("paid", Boolean, nullable=False),
    Column("total_amount", Float, nullable=False),
    Column("fund_amount", Float, nullable=False),
    Column("record", JSON, nullable=False),
    Column("answer", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("institution_id", "txn_id", name="uq_medins_settlements_txn"),
    Index("ix_medins_settlements_person", "person_id", "settled_on"),
    Index("ix_medins_settlements_created", "created_at"),
)

findings = Table(
    "medins_findings",
    metadata,
    Column("id", String(32), primary_key=True),
    # what makes a finding the same one when a sweep runs again: source, rule, settlement
    Column("finding_key", String(200), nullable=False, unique=True),
    Column("source", String(16), nullable=False),
    Column("rule_id", String(64), nullable=False),
    Column("rule_version", String(16), nullable=False),
    Column("grade", String(16), nullable=False),
    Column("outcome", String(8), nullable=False),
    Column("settlement_id", String(64)),
    Column("institution_id", String(32), nullable=False),
    Column("person_id", String(64)),
    Column("amount", Float, nullable=False),
    Column("reason", Text, nullable=False),
    Column("detail", JSON, nullable=False),
    Column("found_at", DateTime(timezone=True), nullable=False),
    Column("case_id", String(32)),
    Index("ix_medins_findings_rule", "rule_id", "institution_id"),
)

cases = Table(
    "medins_cases",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("finding_id", String(32)),
    Column("rule_id", String(64), nullable=False),
    Column("institution_id", String(32), nullable=False),
    Column("person_id", String(64)),
    Column("amount", Float, nullable=False),
    Column("summary", Text, nullable=False),
    Column("stage", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("deadline", DateTime(timezone=True), nullable=False),
    Column("history", JSON, nullable=False),
    Column("event_case_id", String(32)),
    Column("origin", String(16), nullable=False),
    Column("task_id", String(64), unique=True),
    Column("assigned_to", String(12)),
    Column("assigned_task_id", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),
    Index("ix_medins_cases_stage", "status", "stage"),
)
