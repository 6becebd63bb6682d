"""Tables of the NGSI-LD context store."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from citybrain.core.db import metadata

ngsild_tenants = Table(
    "ngsild_tenants",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

ngsild_entities = Table(
    "ngsild_entities",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("id", String(512), primary_key=True),
    Column("entity", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("modified_at", DateTime(timezone=True), nullable=False),
    # box and grid cell of the first location value: the geo-query pre-filter
    Column("loc_minx", Float),
    Column("loc_miny", Float),
    Column("loc_maxx", Float),
    Column("loc_maxy", Float),
    Column("loc_cell", BigInteger),
    # led by the cell: a lookup by id then always takes the primary key (migration 0019)
    Index("ix_ngsild_entities_cell", "loc_cell", "tenant"),
)

ngsild_entity_types = Table(
    "ngsild_entity_types",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("id", String(512), primary_key=True),
    Column("type", String(512), primary_key=True),
)

ngsild_history = Table(
    "ngsild_history",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant", String(128), nullable=False),
    Column("entity_id", String(512), nullable=False),
    Column("attribute", String(512), nullable=False),
    Column("dataset_id", String(512)),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("number", Float),
    Column("instance", JSON, nullable=False),
)

ngsild_subscriptions = Table(
    "ngsild_subscriptions",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("id", String(512), primary_key=True),
    Column("subscription", JSON, nullable=False),
    Column("context", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_notification", DateTime(timezone=True)),
    Column("last_success", DateTime(timezone=True)),
    Column("last_failure", DateTime(timezone=True)),
    Column("times_sent", BigInteger, nullable=False),
    Column("times_failed", BigInteger, nullable=False),
)

ngsild_outbox = Table(
    "ngsild_outbox",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant", String(128), nullable=False),
    Column("subscription_id", String(512), nullable=False),
    Column("endpoint", JSON, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
    Column("last_error", Text),
)

# when a transient entity, or the first transient attribute instance of one, expires
# (clause 4.22); a row may be stale (the entity changed since): the reaper checks the entity
ngsild_expiries = Table(
    "ngsild_expiries",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("entity_id", String(512), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_ngsild_expiries_at", "at"),
)
