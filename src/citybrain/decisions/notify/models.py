"""Tables of notifications (subscriptions, the delivery outbox) and their pydantic models."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from pydantic import BaseModel, Field

from citybrain.core.db import metadata


class Happening(StrEnum):
    """What happened to a case that a subscriber may want to hear about."""

    dispatch = "dispatch"
    urge = "urge"
    overdue = "overdue"
    closure = "closure"
    escalation = "escalation"


class Channel(StrEnum):
    """How a notification travels."""

    webhook = "webhook"
    email = "email"
    mqtt = "mqtt"


class SubscriberKind(StrEnum):
    """Who subscribes: a department (its cases) or a person (the cases they reported)."""

    department = "department"
    person = "person"


# the transitions of the event centre that are happenings; others are not notified
TRANSITION_HAPPENINGS: dict[str, Happening] = {
    "dispatch": Happening.dispatch,
    "reassign": Happening.dispatch,
    "urge": Happening.urge,
    "overdue": Happening.overdue,
    "close": Happening.closure,
    "escalate": Happening.escalation,
}

notify_subscriptions = sa.Table(
    "notify_subscriptions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("subscriber_kind", sa.String(16), nullable=False),
    sa.Column("subscriber", sa.String(256), nullable=False),
    sa.Column("happenings", sa.JSON, nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("target", sa.String(1000), nullable=False),
    sa.Column("secret", sa.String(256)),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_notify_subscriptions_subscriber", "subscriber_kind", "subscriber"),
)

notify_outbox = sa.Table(
    "notify_outbox",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    # case id + transition seq (or the overdue deadline) + subscription: one notification each
    sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
    sa.Column("subscription_id", sa.String(32), nullable=False),
    sa.Column("case_id", sa.String(32), nullable=False),
    sa.Column("happening", sa.String(16), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("department", sa.String(64), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # pending | sent | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    sa.Index("ix_notify_outbox_due", "state", "next_at"),
)


class SubscriptionCreate(BaseModel):
    """A subscription: who, to which happenings, by which channel and where."""

    subscriber_kind: SubscriberKind = SubscriberKind.department
    subscriber: str = Field(min_length=1, max_length=256)
    happenings: list[Happening] = Field(default_factory=lambda: list(Happening), min_length=1)
    channel: Channel
    target: str = Field(min_length=1, max_length=1000)
    secret: str | None = Field(None, min_length=8, max_length=256)
    active: bool = True


class SubscriptionUpdate(BaseModel):
    """The fields of a subscription that may change."""

    happenings: list[Happening] | None = Field(None, min_length=1)
    target: str | None = Field(None, min_length=1, max_length=1000)
    secret: str | None = Field(None, min_length=8, max_length=256)
    active: bool | None = None


class SubscriptionRead(BaseModel):
    """A stored subscription (the HMAC secret is never shown)."""

    id: str
    subscriber_kind: SubscriberKind
    subscriber: str
    happenings: list[Happening]
    channel: Channel
    target: str
    signed: bool
    active: bool
    created_by: str
    created_at: datetime


class DeliveryRead(BaseModel):
    """One notification in the outbox and how its delivery went."""

    id: str
    subscription_id: str
    case_id: str
    happening: str
    channel: str
    department: str
    state: str
    attempts: int
    next_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


class DeliveryReport(BaseModel):
    """What one delivery round did."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
