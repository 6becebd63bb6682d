"""Tables of the event centre and the pydantic models of its API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field

from citybrain.core.db import metadata

Urgency = Literal["normal", "urgent", "critical"]
MAX_TEXT = 4000

event_cases = sa.Table(
    "event_cases",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("category", sa.String(16), nullable=False),
    sa.Column("urgency", sa.String(16), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("address", sa.String(500)),
    sa.Column("lon", sa.Float),
    sa.Column("lat", sa.Float),
    sa.Column("area_code", sa.String(15), nullable=False),
    sa.Column("department", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reporter", sa.String(256), nullable=False),
    sa.Column("reporter_org", sa.String(64), nullable=False),
    sa.Column("contact_phone", sa.String(32)),
    sa.Column("external_ref", sa.String(256)),
    sa.Column("classified_type", sa.String(64)),
    sa.Column("confidence", sa.Float),
    sa.Column("deadline", sa.DateTime(timezone=True)),
    sa.Column("extensions", sa.Integer, nullable=False),
    sa.Column("returns", sa.Integer, nullable=False),
    sa.Column("urges", sa.Integer, nullable=False),
    sa.Column("escalated", sa.Boolean, nullable=False),
    sa.Column("satisfaction", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("verified_at", sa.DateTime(timezone=True)),
    sa.Column("dispatched_at", sa.DateTime(timezone=True)),
    sa.Column("handled_at", sa.DateTime(timezone=True)),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    sa.Column("rated_at", sa.DateTime(timezone=True)),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Index("ix_event_cases_state", "state", "department"),
    sa.Index("ix_event_cases_external_ref", "external_ref"),
    sa.Index("ix_event_cases_created_at", "created_at"),
)

event_transitions = sa.Table(
    "event_transitions",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.String(32), nullable=False),
    sa.Column("transition", sa.String(32), nullable=False),
    sa.Column("from_state", sa.String(16), nullable=False),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("department", sa.String(64)),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("actor_org", sa.String(64), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Index("ix_event_transitions_case_id", "case_id", "seq"),
    sa.Index("ix_event_transitions_at", "at"),
)

event_escalations = sa.Table(
    "event_escalations",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("case_id", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    sa.Index("ix_event_escalations_status", "status", "created_at"),
)


class CaseCreate(BaseModel):
    """A report from a grid worker (or any client that knows the event type)."""

    event_type: str = Field(max_length=64)
    description: str = Field(max_length=MAX_TEXT)
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)
    address: str | None = Field(None, max_length=500)
    urgency: Urgency = "normal"
    reporter: str | None = Field(None, max_length=200)


class HotlineCreate(BaseModel):
    """A 12345 work order: the caller's words, phone and where."""

    text: str = Field(max_length=MAX_TEXT)
    phone: str | None = Field(None, max_length=32, pattern=r"^\+?[0-9\- ]{3,32}$")
    lon: float | None = Field(None, ge=-180, le=180)
    lat: float | None = Field(None, ge=-90, le=90)
    address: str | None = Field(None, max_length=500)
    urgency: Urgency = "normal"


class TransitionRequest(BaseModel):
    """Arguments of a transition; which are needed depends on the transition."""

    note: str = Field("", max_length=MAX_TEXT)
    department: str | None = Field(None, max_length=64)
    days: int | None = Field(None, ge=1, le=30)
    rating: int | None = Field(None, ge=1, le=5)


class ClassifyRequest(BaseModel):
    """A text to classify."""

    text: str = Field(max_length=MAX_TEXT)


class Classification(BaseModel):
    """The classifier's suggestion and the department the matrix routes it to."""

    event_type: str
    name_zh: str
    confidence: float
    department: str


class CaseRead(BaseModel):
    """A case as the API shows it (the caller's phone masked)."""

    id: str
    source: str
    event_type: str
    event_type_zh: str
    category: str
    urgency: str
    description: str
    address: str | None
    lon: float | None
    lat: float | None
    area_code: str
    department: str
    state: str
    open: bool
    reporter: str
    contact_phone: str | None
    external_ref: str | None
    classified_type: str | None
    confidence: float | None
    deadline: datetime | None
    overdue: bool
    extensions: int
    returns: int
    urges: int
    escalated: bool
    satisfaction: int | None
    created_at: datetime
    updated_at: datetime
    dispatched_at: datetime | None
    handled_at: datetime | None
    closed_at: datetime | None
    version: int
    allowed_transitions: list[str]


class TransitionRead(BaseModel):
    """One row of a case's timeline."""

    seq: int
    case_id: str
    transition: str
    from_state: str
    to_state: str
    department: str | None
    actor: str
    actor_org: str
    at: datetime
    note: str


class EscalationRead(BaseModel):
    """An escalation waiting for (or sent to) the parent node."""

    id: str
    case_id: str
    reason: str
    status: str
    created_by: str
    created_at: datetime
    sent_at: datetime | None
    case: dict[str, Any]


class IntakeResult(BaseModel):
    """What a notification of alarms produced."""

    created: list[str]
    duplicates: list[str]
    ignored: int


class DepartmentStats(BaseModel):
    """Performance of one department over a period."""

    department: str
    received: int
    closed: int
    on_time: int
    on_time_rate: float | None
    avg_handling_days: float | None
    satisfaction_mean: float | None
    ratings: int
    returns: int
    overdue: int


class StatsRead(BaseModel):
    """Performance of every department over a period."""

    start: datetime
    end: datetime
    now: datetime
    departments: list[DepartmentStats]
