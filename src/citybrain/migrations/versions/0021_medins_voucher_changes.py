"""Index the e-vouchers by their last change.

Each process of a node keeps the vouchers it has read and asks the store, twice a second,
which vouchers changed lately (an activation, a new device), instead of reading every voucher
again every few seconds.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the index on the vouchers' change time."""
    op.create_index("ix_medins_vouchers_updated", "medins_vouchers", ["updated_at"])


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ix_medins_vouchers_updated", table_name="medins_vouchers")
