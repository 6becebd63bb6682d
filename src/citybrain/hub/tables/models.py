"""Departmental tables: registry and load log (SQL), and the API models."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import JSON, BigInteger, Column, DateTime, String, Table, Text

from citybrain.core.db import metadata

NAME = r"^[a-z][a-z0-9_]{0,63}$"

table_datasets = Table(
    "table_datasets",
    metadata,
    Column("department", String(64), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("owner_department", String(64), nullable=False),
    Column("description", Text, nullable=False),
    Column("primary_key", JSON, nullable=False),
    Column("columns", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

table_loads = Table(
    "table_loads",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("department", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("source", String(256), nullable=False),
    Column("format", String(16), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", BigInteger),
    Column("accepted", BigInteger, nullable=False),
    Column("rejected", BigInteger, nullable=False),
    Column("rejections", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


class ColumnType(StrEnum):
    """Types a departmental table column may have."""

    string = "string"
    int64 = "int64"
    float64 = "float64"
    bool = "bool"
    date = "date"
    timestamp = "timestamp"


class ColumnSpec(BaseModel):
    """One column of a departmental table."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    type: ColumnType
    nullable: bool = True
    description: str = ""


class TableSpec(BaseModel):
    """What registering a departmental table declares."""

    model_config = ConfigDict(extra="forbid")

    department: str = Field(pattern=NAME)
    name: str = Field(pattern=NAME)
    owner_department: str | None = Field(None, pattern=NAME)
    description: str = ""
    primary_key: list[str] = Field(min_length=1, max_length=4)
    columns: list[ColumnSpec] = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _keys_are_columns(self) -> TableSpec:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("column names must be unique")
        missing = [k for k in self.primary_key if k not in names]
        if missing:
            raise ValueError(f"primary key column(s) {missing} are not among the columns")
        return self


class TableRead(BaseModel):
    """A registered departmental table with its current version."""

    department: str
    name: str
    owner_department: str
    description: str
    primary_key: list[str]
    columns: list[ColumnSpec]
    version: int
    rows: int
    created_at: datetime


class Rejection(BaseModel):
    """A row refused by a load, with the reason."""

    row: int  # 1-based line of the source (header excluded)
    reason: str


class LoadResult(BaseModel):
    """The outcome of loading one file into a table."""

    id: str
    department: str
    name: str
    source: str
    format: str
    status: str  # applied, unchanged (same file loaded before), rejected (nothing applied)
    version: int | None
    accepted: int
    rejected: int
    rejections: list[Rejection]
    created_at: datetime


class VersionRead(BaseModel):
    """One version of a Delta table."""

    version: int
    timestamp: datetime
    operation: str
    metrics: dict[str, Any]


class RecordPage(BaseModel):
    """A page of records in primary-key order, with the cursor of the next page."""

    records: list[dict[str, Any]]
    next_after: str | None
    version: int


class SqlJob(BaseModel):
    """A read-only SQL query over the node's tables, with bound parameters."""

    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, max_length=20_000)
    params: list[Any] = Field(default_factory=list, max_length=100)
    limit: int = Field(10_000, ge=1, le=100_000)


class SqlResult(BaseModel):
    """Rows of a SQL job."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
