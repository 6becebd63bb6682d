"""Tables and API models of the node domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from citybrain.core.db import metadata

node_identity = Table(
    "node_identity",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("code", String(15), nullable=False),
    Column("level", String(16), nullable=False),
    Column("parent_url", String(512)),
    Column("public_url", String(512), nullable=False),
    Column("version", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

child_nodes = Table(
    "child_nodes",
    metadata,
    Column("code", String(15), primary_key=True),
    Column("level", String(16), nullable=False),
    Column("url", String(512), nullable=False),
    Column("version", String(32), nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("last_summary", JSON, nullable=False),
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("department", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("path", String(1024), nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("columns", JSON, nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("department", "name", name="uq_datasets_department_name"),
)


class DatasetRead(BaseModel):
    """A departmental table held by this node."""

    department: str
    name: str
    rows: int
    bytes: int
    columns: list[dict[str, str]]
    updated_at: datetime


class ColumnProfile(BaseModel):
    """Counts of one column, computed by DuckDB over the table's Parquet file."""

    name: str
    type: str
    non_null: int
    distinct_approx: int


class DatasetProfile(BaseModel):
    """Row count and column profile of one departmental table (no records)."""

    department: str
    name: str
    rows: int
    columns: list[ColumnProfile]


class DatasetBrief(BaseModel):
    """What a parent keeps of a child's dataset."""

    department: str
    name: str
    rows: int


class ChildRegistration(BaseModel):
    """What a child node sends when it registers with its parent."""

    code: str = Field(pattern=r"^\d{6}$", description="GB/T 2260 code of the child")
    level: str = Field(pattern=r"^(city|county)$")
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=512)
    version: str = Field(max_length=32)
    datasets: list[DatasetBrief] = Field(default_factory=list, max_length=1000)
    public_key: str | None = Field(
        None, max_length=4096, description="the child's Ed25519 public key (PEM), checked"
    )
    capabilities: list[str] = Field(default_factory=list, max_length=100)


class ChildRead(BaseModel):
    """A registered child node as its parent sees it."""

    code: str
    name_zh: str
    name_en: str
    level: str
    url: str
    version: str
    registered_at: datetime
    last_seen_at: datetime
    lag_seconds: float
    last_summary: dict[str, Any]


class NodeSummary(BaseModel):
    """Identity and data of this node."""

    code: str
    name_zh: str
    name_en: str
    level: str
    parent_url: str | None
    public_url: str
    version: str
    started_at: datetime
    datasets: list[DatasetRead]
    children: int
