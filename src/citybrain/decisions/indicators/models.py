"""Indicator trees (pydantic, loaded from YAML), stored values and runs (SQL), API models."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import JSON, Column, DateTime, Float, Index, Integer, String, Table, Text

from citybrain.core.db import metadata

CODE = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"
TREE_ID = r"^[a-z][a-z0-9_\-]{0,31}$"
ROLLUP = re.compile(r"^(sum|mean|weighted_mean\(([A-Za-z0-9][A-Za-z0-9_.:\-]{0,63})\))$")

indicator_values = Table(
    "indicator_values",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("run_id", String(32), nullable=False),
    Column("tree", String(32), nullable=False),
    Column("item", String(64), nullable=False),  # an item, a group, or "*" for the whole tree
    Column("kind", String(8), nullable=False),  # item | group | tree
    Column("unit", String(15), nullable=False),
    Column("period", String(10), nullable=False),
    Column("value", Float),
    Column("score", Float),
    Column("stars", Integer),
    Column("status", String(8), nullable=False),  # ok | no_data | error
    Column("reason", Text),
    Column("source", String(32), nullable=False),  # local | rollup | child:<code>
    Column("computed_at", DateTime(timezone=True), nullable=False),
    Column("inputs", JSON, nullable=False),  # lineage: tables and sources read
    Column("detail", JSON, nullable=False),  # band used, coverage, weighted children
    Index("ix_indicator_values_lookup", "tree", "item", "unit", "period", "computed_at"),
)

indicator_runs = Table(
    "indicator_runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tree", String(32), nullable=False),
    Column("period", String(10), nullable=False),
    Column("node", String(15), nullable=False),
    Column("trigger", String(16), nullable=False),  # api | cli | schedule | ingest
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("items_ok", Integer, nullable=False),
    Column("items_no_data", Integer, nullable=False),
    Column("items_failed", Integer, nullable=False),
    Column("detail", JSON, nullable=False),
    Index("ix_indicator_runs_tree", "tree", "started_at"),
)


class Direction(StrEnum):
    """Whether a larger value of an item is better or worse."""

    higher_better = "higher_better"
    lower_better = "lower_better"


class Bands(BaseModel):
    """Map a value to a score 0-100: piecewise linear between points, or steps at thresholds."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["linear", "thresholds"]
    points: list[tuple[float, float]] = Field(min_length=1)  # (value, score), values ascending


class Formula(BaseModel):
    """A DuckDB query returning (unit_code, value) rows, and the tables and sources it reads."""

    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, max_length=20_000)
    inputs: list[str] = Field(default_factory=list)  # DEPT/NAME tables and source:NAME views


class Item(BaseModel):
    """A measured indicator."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=CODE)
    name_zh: str
    name_en: str
    weight: float | None = None  # None: an equal share of what the declared siblings leave
    unit: str | None = None
    direction: Direction
    target: float | None = None
    bands: Bands | None = None  # None with a target: score = share of the target, capped at 100
    formula: Formula | None = None  # None: no department of a node holds the data ("no data")
    formula_text: str | None = None  # the published formula in words, when it is not computed
    rollup: str = "sum"  # how a parent combines its children's values
    confirmed: bool = False
    source: str | None = None
    note: str | None = None


class Group(BaseModel):
    """A level-1 or level-2 group of items (or of level-2 groups)."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=CODE)
    name_zh: str
    name_en: str
    weight: float | None = None
    confirmed: bool = False
    source: str | None = None
    note: str | None = None
    groups: list[Group] = Field(default_factory=list)
    items: list[Item] = Field(default_factory=list)


class Tree(BaseModel):
    """An indicator tree: its groups, how weights add up, and how a score becomes stars."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=TREE_ID)
    name_zh: str
    name_en: str
    standard: str | None = None
    confirmed: bool = False
    source: str | None = None
    note: str | None = None
    # "total": group weights are points of the 100-point total (a level-1 weight is the sum of
    # its level-2 weights, as GB/T 33356 counts); "parent": siblings' weights sum to 100
    weight_basis: Literal["total", "parent"] = "parent"
    stars: list[tuple[float, int]]  # (minimum score, stars), highest first
    stars_confirmed: bool = False
    groups: list[Group] = Field(min_length=1)


class UnitValue(BaseModel):
    """One unit's value of an item, as a child node reports it for a roll-up."""

    unit: str
    value: float | None
    weight: float | None = None  # the child's value of the weight item of weighted_mean


class ChildResult(BaseModel):
    """A stored value a child node sends up (its own unit's items), for ingest_child_results."""

    model_config = ConfigDict(extra="forbid")

    tree: str = Field(pattern=TREE_ID)
    item: str = Field(pattern=CODE)
    unit: str = Field(pattern=r"^\d{6}$")
    period: str = Field(max_length=10)
    value: float | None
    status: Literal["ok", "no_data", "error"] = "ok"
    computed_at: datetime


class NodeRead(BaseModel):
    """A group or item as the API shows a tree."""

    code: str
    kind: Literal["group", "item"]
    level: int
    name_zh: str
    name_en: str
    weight: float | None
    effective_weight: float  # the share of its parent after filling unknown weights
    confirmed: bool
    source: str | None = None
    note: str | None = None
    unit: str | None = None
    direction: str | None = None
    target: float | None = None
    bands: dict[str, Any] | None = None
    formula: str | None = None
    formula_text: str | None = None
    inputs: list[str] = []
    rollup: str | None = None
    children: list[NodeRead] = []


class TreeSummary(BaseModel):
    """A tree in the list of trees."""

    id: str
    name_zh: str
    name_en: str
    standard: str | None
    confirmed: bool
    groups: int
    items: int
    items_with_formula: int


class TreeRead(TreeSummary):
    """A whole tree with its scoring rules."""

    source: str | None
    note: str | None
    weight_basis: str
    stars: list[tuple[float, int]]
    stars_confirmed: bool
    children: list[NodeRead]


class ComputeRequest(BaseModel):
    """Compute a tree now for this node's unit and its child units."""

    model_config = ConfigDict(extra="forbid")

    tree: str = Field(pattern=TREE_ID)
    period: str | None = Field(None, max_length=10)


class ItemFailure(BaseModel):
    """An item whose formula failed, and why."""

    item: str
    reason: str


class ComputeResult(BaseModel):
    """What one computation did."""

    run_id: str
    tree: str
    period: str
    units: list[str]
    items_ok: int
    items_no_data: int
    items_failed: int
    failures: list[ItemFailure]
    computed_at: datetime
    seconds: float


class ValueRead(BaseModel):
    """A stored value of an item, a group or the tree, for one unit and period."""

    tree: str
    item: str
    kind: str
    unit: str
    period: str
    value: float | None
    score: float | None
    stars: int | None
    status: str
    reason: str | None
    source: str
    computed_at: datetime
    inputs: list[str]


class ExplainChild(BaseModel):
    """A child of a group in an explanation, with what it contributes."""

    code: str
    kind: str
    name_en: str
    weight: float
    score: float | None
    stars: int | None
    status: str
    contribution: float | None  # weight share x score, in points of the group's score


class Explanation(BaseModel):
    """A score down to its inputs."""

    tree: str
    item: str
    kind: str
    unit: str
    period: str
    name_zh: str
    name_en: str
    status: str
    reason: str | None
    value: float | None
    score: float | None
    stars: int | None
    unit_of_measure: str | None = None
    direction: str | None = None
    target: float | None = None
    formula: str | None = None
    inputs: list[str] = []
    bands: dict[str, Any] | None = None
    band: dict[str, Any] | None = None  # the segment or step the value fell in
    stars_rule: list[tuple[float, int]]
    coverage: float | None = None  # share of the group's weight that had a score
    children: list[ExplainChild] = []
    computed_at: datetime
    confirmed: bool


class Comparison(BaseModel):
    """Units side by side: the tree, its level-1 groups (or one node's children), per unit."""

    tree: str
    period: str | None
    units: list[str]
    rows: list[dict[str, Any]]  # {code, name_en, kind, values: {unit: {value, score, stars}}}
