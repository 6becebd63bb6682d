"""Pydantic models of the audit log: records, pages, checkpoints and verification reports.

The log itself is a JSON Lines file, not a database table, so there are no SQLAlchemy tables.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class AuditRecord(BaseModel):
    """One record of the log: who did what to which resource, under which grant, and the result."""

    seq: int
    at: str
    actor: str
    org: str | None
    role: str | None
    action: str
    resource: str
    grant: str | None
    purpose: str | None
    rows: int | None
    result: str
    detail: dict[str, Any] = Field(default_factory=dict)
    prev: str
    hash: str


class AuditPage(BaseModel):
    """A page of records in log order and the cursor (`after_seq`) of the next page."""

    records: list[AuditRecord]
    next_after_seq: int | None = Field(
        None, description="pass as after_seq to read the next page; null on the last page"
    )


class Checkpoint(BaseModel):
    """A signed statement that the record at `seq` has chain hash `hash`."""

    seq: int
    hash: str
    at: str
    offset: int = Field(description="byte offset of the log just after the record at seq")
    key: str = Field(description="SHA-256 fingerprint of the node's Ed25519 public key (raw)")
    signature: str = Field(description='base64 Ed25519 signature over the bytes "seq:hash"')


class VerifyReport(BaseModel):
    """What `verify` found: whether the chain holds and, if not, where it first breaks and why."""

    ok: bool
    records: int = Field(description="records read before the first break (all when ok)")
    checkpoints: int = Field(description="signed checkpoints checked")
    first_broken_seq: int | None = Field(None, description="seq where the chain first breaks")
    line: int | None = Field(None, description="1-based line of the log where it breaks")
    reason: str | None = None
    last_seq: int = 0
    last_hash: str | None = None
    torn_tail: str | None = Field(
        None,
        description="a last line without its newline (a write cut short; never acknowledged); "
        "the next append moves it to audit/torn.jsonl",
    )
    seconds: float = 0.0
