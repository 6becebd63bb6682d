"""The grid-cell index of NGSI-LD entities leads with the cell, not the tenant.

With the tenant first, PostgreSQL with statistics not yet gathered (a bulk load of a
million entities takes less than autovacuum's minute) took the cell index for a tenant's
lookup by id and read every entity of the tenant for each batch; led by the cell, the index
serves only geo pre-filters and the lookup by id takes the primary key.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_ngsild_entities_cell", "ngsild_entities")
    op.create_index("ix_ngsild_entities_cell", "ngsild_entities", ["loc_cell", "tenant"])


def downgrade() -> None:
    op.drop_index("ix_ngsild_entities_cell", "ngsild_entities")
    op.create_index("ix_ngsild_entities_cell", "ngsild_entities", ["tenant", "loc_cell"])
