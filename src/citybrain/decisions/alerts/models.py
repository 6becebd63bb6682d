"""Tables of alerts (deduplication state, fired alerts) and their pydantic models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel

from citybrain.core.db import metadata

alert_state = sa.Table(
    "alert_state",
    metadata,
    # rule id + unit or entity: one alert at a time per key
    sa.Column("dedup_key", sa.String(600), primary_key=True),
    sa.Column("rule_id", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(512), nullable=False),
    sa.Column("case_id", sa.String(32)),
    sa.Column("last_fired_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("suppressed", sa.Integer, nullable=False),
)

alert_firings = sa.Table(
    "alert_firings",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("rule_id", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(512), nullable=False),
    sa.Column("case_id", sa.String(32), nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_alert_firings_fired", "fired_at"),
)


class Hit(BaseModel):
    """A rule's condition holding for one unit or entity at one moment."""

    rule_id: str
    subject: str  # the unit code or the entity id
    value: float | None
    message: str
    detail: dict[str, Any]
    point: tuple[float, float] | None = None


class AlertRead(BaseModel):
    """A fired alert and the case it opened."""

    id: str
    rule_id: str
    subject: str
    case_id: str
    value: float | None
    detail: dict[str, Any]
    fired_at: datetime


class EvaluationReport(BaseModel):
    """What one evaluation round found and did."""

    rules: int = 0
    hits: int = 0
    fired: list[AlertRead] = []
    suppressed: int = 0
    errors: list[str] = []
