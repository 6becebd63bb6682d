"""Tables and API models of federation: peers, tasks, escalations, outbox and inbox."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import (
    JSON,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from citybrain.core.db import metadata

CODE = r"^\d{6}$"
KIND = r"^[a-z][a-z0-9_]{0,63}$"
MESSAGE_ID = r"^[0-9a-f]{32}$"
# a task body or escalation payload is a case file summary, not a data transfer
MAX_BODY_BYTES = 64 * 1024

peers = Table(
    "federation_peers",
    metadata,
    Column("code", String(15), primary_key=True),
    Column("level", String(16), nullable=False),
    Column("relation", String(8), nullable=False),
    Column("url", String(512), nullable=False),
    Column("public_key", Text, nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("last_contact_at", DateTime(timezone=True)),
    Column("version", String(32)),
    Column("status", String(16), nullable=False),
    Column("last_error", Text),
)

tasks = Table(
    "federation_tasks",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("direction", String(8), nullable=False),
    Column("peer_code", String(15), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("title", String(200), nullable=False),
    Column("body", JSON, nullable=False),
    Column("due", Date),
    Column("status", String(16), nullable=False),
    Column("status_seq", Integer, nullable=False),
    Column("history", JSON, nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_federation_tasks_direction", "direction", "created_at"),
)

escalations = Table(
    "federation_escalations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("direction", String(8), nullable=False),
    Column("peer_code", String(15), nullable=False),
    Column("event_id", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

outbox = Table(
    "federation_outbox",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(32), nullable=False),
    Column("peer_code", String(15), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    UniqueConstraint("message_id", name="uq_federation_outbox_message"),
    Index("ix_federation_outbox_state", "state", "peer_code", "seq"),
)

inbox = Table(
    "federation_inbox",
    metadata,
    Column("sender_code", String(15), primary_key=True),
    Column("message_id", String(32), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)


class Relation(StrEnum):
    """How a peer stands to this node."""

    parent = "parent"
    child = "child"


class Direction(StrEnum):
    """Whether this node sent or received a task or escalation."""

    sent = "sent"
    received = "received"


class TaskStatus(StrEnum):
    """Life of a task; `pending` only on the sender, until the receiver has it."""

    pending = "pending"
    received = "received"
    accepted = "accepted"
    in_progress = "in_progress"
    done = "done"
    rejected = "rejected"


# the receiver's moves; done and rejected are final
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.received: frozenset({TaskStatus.accepted, TaskStatus.rejected}),
    TaskStatus.accepted: frozenset({TaskStatus.in_progress, TaskStatus.done, TaskStatus.rejected}),
    TaskStatus.in_progress: frozenset({TaskStatus.done, TaskStatus.rejected}),
}


class OutboxState(StrEnum):
    """States of an outbox message."""

    pending = "pending"
    sent = "sent"
    refused = "refused"


class MessageKind(StrEnum):
    """What an outbox message carries, and the inbox route that receives it."""

    task = "task"
    task_status = "task_status"
    escalation = "escalation"


class TaskCreate(BaseModel):
    """A task a parent sends down to one of its children."""

    to: str = Field(pattern=CODE, description="code of the child node")
    kind: str = Field(pattern=KIND, description="e.g. supervision_case, inspection")
    title: str = Field(min_length=1, max_length=200)
    body: dict[str, Any] = Field(default_factory=dict)
    due: date | None = None


class TaskStatusUpdate(BaseModel):
    """A status change the receiver of a task makes."""

    status: TaskStatus
    note: str = Field("", max_length=2000)


class HistoryEntry(BaseModel):
    """One status change of a task."""

    at: datetime
    status: TaskStatus
    note: str
    by: str
    node: str


class Delivery(BaseModel):
    """Where the outbox message that carries a sent item stands."""

    state: OutboxState
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    sent_at: datetime | None


class TaskRead(BaseModel):
    """A task as this node holds it."""

    id: str
    direction: Direction
    peer: str
    peer_name: str
    kind: str
    title: str
    body: dict[str, Any]
    due: date | None
    status: TaskStatus
    history: list[HistoryEntry]
    created_by: str
    created_at: datetime
    updated_at: datetime
    delivery: Delivery | None = None


class EscalationCreate(BaseModel):
    """An event this node escalates to its parent."""

    event_id: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)
    payload: dict[str, Any] = Field(default_factory=dict)


class EscalationRead(BaseModel):
    """An escalation as this node holds it."""

    id: str
    direction: Direction
    peer: str
    peer_name: str
    event_id: str
    reason: str
    payload: dict[str, Any]
    status: str
    created_by: str
    created_at: datetime
    delivery: Delivery | None = None


class PeerRead(BaseModel):
    """A trusted peer and how contact with it stands."""

    code: str
    name_zh: str
    name_en: str
    level: str
    relation: Relation
    url: str
    registered_at: datetime
    last_contact_at: datetime | None
    lag_seconds: float | None
    version: str | None
    status: str
    state: str  # ok, stale or never
    pending: int
    last_error: str | None


class InboxTask(BaseModel):
    """A task as the sender's outbox delivers it."""

    message_id: str = Field(pattern=MESSAGE_ID)
    id: str = Field(pattern=MESSAGE_ID)
    kind: str = Field(pattern=KIND)
    title: str = Field(min_length=1, max_length=200)
    body: dict[str, Any] = Field(default_factory=dict)
    due: date | None = None
    created_by: str = Field(max_length=256)
    created_at: datetime


class InboxTaskStatus(BaseModel):
    """A status change of a task, sent back by its receiver."""

    message_id: str = Field(pattern=MESSAGE_ID)
    task_id: str = Field(pattern=MESSAGE_ID)
    seq: int = Field(ge=1)
    status: TaskStatus
    note: str = Field("", max_length=2000)
    by: str = Field(max_length=256)
    at: datetime


class InboxEscalation(BaseModel):
    """An escalation as the child's outbox delivers it."""

    message_id: str = Field(pattern=MESSAGE_ID)
    id: str = Field(pattern=MESSAGE_ID)
    event_id: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)
    payload: dict[str, Any] = Field(default_factory=dict)
    created_by: str = Field(max_length=256)
    created_at: datetime


class Receipt(BaseModel):
    """The receiver's answer to a delivered message."""

    message_id: str
    resource_id: str
    duplicate: bool


class DrainReport(BaseModel):
    """What one round of the outbox did."""

    sent: int = 0
    failed: int = 0
    refused: int = 0
    skipped_peers: list[str] = Field(default_factory=list)
