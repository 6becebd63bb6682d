"""Audit: no table; the hash-chained audit log lives in files of the data folder.

The log is DATA_DIR/audit/log.jsonl (one canonical JSON record per line, hash-chained) and its
signed checkpoints are DATA_DIR/audit/checkpoints.jsonl (see citybrain.governance.audit). A
file is kept rather than a table so that the evidence survives the loss or replacement of the
operational store, can be verified with nothing but the node's public key, and appends cost
one write and one fsync. This revision stays in the chain as a documented no-op.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create nothing: the audit log is a file (DATA_DIR/audit/log.jsonl)."""


def downgrade() -> None:
    """Drop nothing: the audit log is a file and is never removed by a migration."""
