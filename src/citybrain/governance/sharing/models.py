"""Sharing: access requests, their decisions, and the grants they produce."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from citybrain.core.db import metadata
from citybrain.governance.catalog.models import DATASET_ID

NAME = r"^[a-z][a-z0-9_]{0,63}$"
MAX_DAYS = 1095  # three years: a longer need is asked for again, with a fresh purpose

access_requests = Table(
    "access_requests",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("dataset_id", String(200), nullable=False),
    Column("requester_org", String(64), nullable=False),
    Column("requested_by", String(256), nullable=False),
    # the owner and level as the catalog said when the request was made: who decides, and
    # whether the bureau must, are fixed for the life of the request
    Column("owner_org", String(64), nullable=False),
    Column("data_level", String(16), nullable=False),
    Column("fields", JSON, nullable=False),
    Column("row_scope", JSON, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("legal_basis", Text, nullable=False),
    Column("duration_days", Integer, nullable=False),
    Column("pseudonymise", Boolean, nullable=False),
    Column("questions", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("owner_decision", JSON),
    Column("bureau_decision", JSON),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("grant_id", String(32)),
    Index("ix_access_requests_requester", "requester_org", "status"),
    Index("ix_access_requests_owner", "owner_org", "status"),
    Index("ix_access_requests_status", "status"),
)

grants = Table(
    "grants",
    metadata,
    Column("id", String(32), primary_key=True),
    Column(
        "request_id",
        String(32),
        ForeignKey("access_requests.id", name="fk_grants_request"),
        nullable=False,
    ),
    Column("kind", String(16), nullable=False),
    Column("dataset_id", String(200), nullable=False),
    Column("grantee_org", String(64), nullable=False),
    Column("owner_org", String(64), nullable=False),
    Column("fields", JSON, nullable=False),
    Column("row_scope", JSON, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("legal_basis", Text, nullable=False),
    Column("pseudonymise", Boolean, nullable=False),
    Column("questions", JSON, nullable=False),
    Column("granted_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("revoked_by", String(256)),
    Column("revoke_reason", Text),
    # the gate asks "which grant does this org hold on this dataset" on every read
    Index("ix_grants_dataset_grantee", "dataset_id", "grantee_org"),
    Index("ix_grants_owner", "owner_org"),
)


class RequestKind(StrEnum):
    """What a request asks for: records, or yes/no answers to verification questions."""

    records = "records"
    verification = "verification"


class RequestStatus(StrEnum):
    """Where a request stands in its workflow."""

    pending_owner = "pending_owner"
    pending_bureau = "pending_bureau"
    approved = "approved"
    rejected = "rejected"
    withdrawn = "withdrawn"


PENDING = frozenset({RequestStatus.pending_owner, RequestStatus.pending_bureau})


class GrantStatus(StrEnum):
    """State of a grant at a moment."""

    active = "active"
    expired = "expired"
    revoked = "revoked"


class AccessRequestCreate(BaseModel):
    """What an organisation asks for: which dataset, fields, rows, why, and for how long."""

    model_config = ConfigDict(extra="forbid")

    kind: RequestKind = RequestKind.records
    dataset_id: str = Field(
        pattern=DATASET_ID, max_length=200, description="DEPT/NAME or ngsi-ld:TYPE"
    )
    fields: list[str] = Field(min_length=1, max_length=500)
    row_scope: dict[str, list[str | int]] = Field(default_factory=dict, max_length=20)
    purpose: str = Field(min_length=1, max_length=2000)
    legal_basis: str = Field(min_length=1, max_length=2000)
    duration_days: int = Field(ge=1, le=MAX_DAYS)
    pseudonymise: bool = False
    questions: list[str] = Field(default_factory=list, max_length=50)

    @field_validator("purpose", "legal_basis")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        if "\x00" in value:
            # PostgreSQL text cannot hold NUL; refuse it on every store alike
            raise ValueError("must not contain NUL characters")
        return value.strip()

    @field_validator("fields", "questions")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("must not repeat a name")
        return value

    @field_validator("row_scope")
    @classmethod
    def _scope_values(cls, value: dict[str, list[str | int]]) -> dict[str, list[str | int]]:
        for column, values in value.items():
            if not values:
                raise ValueError(f"row scope column {column!r} needs at least one value")
            if len(values) > 10_000:
                raise ValueError(f"row scope column {column!r} has more than 10000 values")
        return value

    @model_validator(mode="after")
    def _questions_match_kind(self) -> AccessRequestCreate:
        if self.kind is RequestKind.verification:
            if not self.questions:
                raise ValueError("a verification request names at least one question")
            bad = [q for q in self.questions if not _is_name(q)]
            if bad:
                raise ValueError(f"question names must be lower-case identifiers, not {bad}")
        elif self.questions:
            raise ValueError("questions belong to verification requests, not records requests")
        return self


def _is_name(value: str) -> bool:
    return re.fullmatch(NAME, value) is not None


class Decision(BaseModel):
    """One step's decision: who, when, what, and why."""

    by: str
    at: datetime
    decision: str  # approved or rejected
    reason: str | None = None


class DecisionBody(BaseModel):
    """The body of an approve, reject or withdraw call."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=2000)


class RevokeBody(BaseModel):
    """The body of a revocation: the reason is required."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


class AccessRequestRead(BaseModel):
    """An access request with its decisions and, once approved, its grant."""

    id: str
    kind: RequestKind
    dataset_id: str
    requester_org: str
    requested_by: str
    owner_org: str
    data_level: str
    fields: list[str]
    row_scope: dict[str, list[Any]]
    purpose: str
    legal_basis: str
    duration_days: int
    pseudonymise: bool
    questions: list[str]
    status: RequestStatus
    owner_decision: Decision | None
    bureau_decision: Decision | None
    created_at: datetime
    grant_id: str | None


class GrantRead(BaseModel):
    """A grant: what an organisation may read of a dataset, why, and until when."""

    id: str
    request_id: str
    kind: RequestKind
    dataset_id: str
    grantee_org: str
    owner_org: str
    fields: list[str]
    row_scope: dict[str, list[Any]]
    purpose: str
    legal_basis: str
    pseudonymise: bool
    questions: list[str]
    granted_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None
    status: GrantStatus  # at the moment it was read
