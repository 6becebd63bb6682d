"""Quality scorecards: one row per run and dataset, kept as a time series; API models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import JSON, BigInteger, Column, DateTime, Float, Index, String, Table

from citybrain.core.db import metadata

quality_scorecards = Table(
    "quality_scorecards",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("dataset_id", String(200), nullable=False),
    Column("owner_department", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("version", BigInteger),
    Column("rows", BigInteger, nullable=False),
    Column("completeness", Float, nullable=False),
    Column("validity", Float, nullable=False),
    Column("uniqueness", Float, nullable=False),
    Column("timeliness", Float, nullable=False),
    Column("consistency", Float),
    Column("overall", Float, nullable=False),
    Column("detail", JSON, nullable=False),
    Index("ix_quality_scorecards_dataset", "dataset_id", "at"),
)


class Scorecard(BaseModel):
    """Scores 0-100 of one dataset at one time; counts only, never records."""

    id: str
    dataset_id: str
    owner_department: str
    at: datetime
    version: int | None
    rows: int
    completeness: float
    validity: float
    uniqueness: float
    timeliness: float
    consistency: float | None  # None when no consistency rule applies on this node
    overall: float
    detail: dict[str, Any]


class DatasetQuality(BaseModel):
    """The latest scorecard of a dataset and its history, newest first."""

    dataset_id: str
    latest: Scorecard
    history: list[Scorecard]


class DepartmentScore(BaseModel):
    """Mean scores of a department's datasets (their latest scorecards)."""

    department: str
    datasets: int
    completeness: float
    validity: float
    uniqueness: float
    timeliness: float
    consistency: float | None
    overall: float
    at: datetime  # the newest of the scorecards counted


class QualityRun(BaseModel):
    """Which datasets to score: one, or every table the caller may score."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: str | None = Field(None, max_length=200)
    all: bool = False
