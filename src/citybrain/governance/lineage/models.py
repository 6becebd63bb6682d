"""Lineage: edges from the inputs of a derived dataset to it, and the graph API models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, String, Table, UniqueConstraint

from citybrain.core.db import metadata

lineage_edges = Table(
    "lineage_edges",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("output", String(300), nullable=False),
    Column("input", String(300), nullable=False),
    Column("activity", String(64), nullable=False),
    Column("detail", JSON, nullable=False),
    # one row per (output, input, activity): repeated runs count up instead of piling up
    Column("runs", BigInteger, nullable=False),
    Column("first_at", DateTime(timezone=True), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("output", "input", "activity", name="uq_lineage_edges_output"),
    Index("ix_lineage_edges_input", "input"),
)


class LineageNode(BaseModel):
    """A node of the graph: a dataset, a file, a URL, an indicator or a scorecard."""

    id: str
    kind: str  # table, entity_type, file, url, indicator, quality


class LineageEdge(BaseModel):
    """Data flowed from source (an input) to target (an output) by an activity."""

    source: str
    target: str
    activity: str
    runs: int
    first_at: datetime
    at: datetime
    detail: dict[str, Any]


class LineageGraph(BaseModel):
    """The neighbourhood of a dataset: what it comes from and what is made from it."""

    root: str
    depth: int
    nodes: list[LineageNode]
    edges: list[LineageEdge]
    upstream: list[str]
    downstream: list[str]
