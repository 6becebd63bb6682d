"""Tables shared by the connectors."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, String, Table

from citybrain.core.db import metadata

connector_checkpoints = Table(
    "connector_checkpoints",
    metadata,
    Column("connector", String(128), primary_key=True),
    Column("key", String(512), primary_key=True),
    Column("value", String(512), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
