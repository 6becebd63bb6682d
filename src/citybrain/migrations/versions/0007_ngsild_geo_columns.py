"""NGSI-LD entity rows carry the box and grid cell of their location, for geo-queries.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = ("loc_minx", "loc_miny", "loc_maxx", "loc_maxy")


def upgrade() -> None:
    with op.batch_alter_table("ngsild_entities") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Float, nullable=True))
        batch.add_column(sa.Column("loc_cell", sa.BigInteger, nullable=True))
    op.create_index("ix_ngsild_entities_cell", "ngsild_entities", ["tenant", "loc_cell"])
    # entities written before this revision get their columns from their stored location
    from citybrain.hub.ngsild.prefilter import geo_columns

    bind = op.get_bind()
    table = sa.table(
        "ngsild_entities",
        sa.column("tenant", sa.String),
        sa.column("id", sa.String),
        sa.column("entity", sa.JSON),
        *(sa.column(n, sa.Float) for n in COLUMNS),
        sa.column("loc_cell", sa.BigInteger),
    )
    rows = bind.execute(sa.select(table.c.tenant, table.c.id, table.c.entity)).all()
    for row in rows:
        columns = geo_columns(dict(row.entity))
        if columns["loc_minx"] is not None:
            bind.execute(
                sa.update(table)
                .where(table.c.tenant == row.tenant, table.c.id == row.id)
                .values(**columns)
            )


def downgrade() -> None:
    op.drop_index("ix_ngsild_entities_cell", "ngsild_entities")
    with op.batch_alter_table("ngsild_entities") as batch:
        for name in (*COLUMNS, "loc_cell"):
            batch.drop_column(name)
