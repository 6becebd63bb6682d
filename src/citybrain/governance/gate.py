"""The gate: the one function that decides every read of governed data, from every path.

`authorize_read` answers who may read which fields of which rows of a dataset, and how each
field is shown; it raises Forbidden (and leaves evidence in the audit log) when the answer is
no. The readers (the records API, SQL jobs, NGSI-LD queries, scenes, federation) apply the
decision with `ReadDecision.select_sql` (DuckDB, vectorised) or `ReadDecision.apply_record`
(one JSON object), then call `record_read` with the number of rows they returned.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine

from citybrain.core.errors import BadInput, Forbidden
from citybrain.governance.audit import service as audit
from citybrain.governance.keys import node_key
from citybrain.governance.masking import (
    MaskKind,
    mask_sql,
    mask_text,
    pseudonym_key,
    pseudonym_sql,
    pseudonymise,
)
from citybrain.governance.principal import Principal, Role

ENTITY_PREFIX = "ngsi-ld:"
# masks that identify a person: a pseudonymising grant replaces them with keyed pseudonyms
IDENTIFYING = frozenset({MaskKind.id_number, MaskKind.phone, MaskKind.pseudonym})


@dataclass(frozen=True, slots=True)
class FieldView:
    """One visible field and how it is shown."""

    name: str
    mask: MaskKind = MaskKind.none


@dataclass(frozen=True)
class ReadDecision:
    """What one principal may read of one dataset: fields, rows and masks."""

    dataset_id: str
    principal: Principal
    basis: str  # owner, grant, citizen, open
    fields: tuple[FieldView, ...] | None  # None: every field of the dataset, in the clear
    row_scope: dict[str, tuple[str, ...]] = field(default_factory=dict)
    subject: tuple[str, str] | None = None  # citizens: (column, their own value)
    grant_id: str | None = None
    purpose: str | None = None
    pseudonym_key: str | None = None

    @property
    def restricted(self) -> bool:
        """Return True when anything is filtered, projected or masked."""
        return (
            self.fields is not None
            or bool(self.row_scope)
            or self.subject is not None
            or self.pseudonym_key is not None
        )

    def visible(self, all_fields: list[str]) -> list[FieldView]:
        """Return the visible fields among the dataset's, in the dataset's order."""
        if self.fields is None:
            return [FieldView(name) for name in all_fields]
        views = {f.name: f for f in self.fields}
        return [views[name] for name in all_fields if name in views]

    def check_fields(self, wanted: list[str] | None) -> None:
        """Refuse a projection that names a field outside the decision."""
        if self.fields is None or not wanted:
            return
        allowed = {f.name for f in self.fields}
        outside = [w for w in wanted if w not in allowed]
        if outside:
            raise Forbidden(
                f"field(s) {', '.join(outside)} of {self.dataset_id} are outside "
                f"{'grant ' + self.grant_id if self.grant_id else 'what you may read'}"
            )

    def outside_scope(self, column: str, value: str) -> bool:
        """Return True when an equality on a scoped column names a value outside the scope."""
        values = self.row_scope.get(column)
        return values is not None and value not in values

    def _show_sql(self, view: FieldView, column: str) -> str:
        if self.pseudonym_key is not None and view.mask in IDENTIFYING:
            return pseudonym_sql(self.pseudonym_key, column)
        if view.mask is MaskKind.pseudonym:
            return mask_sql(MaskKind.hidden, column)
        return mask_sql(view.mask, column)

    def select_sql(
        self, source: str, all_fields: list[str], hidden: list[str] | None = None
    ) -> tuple[str, list[Any]]:
        """Return the gated relation over `source` as SQL with its parameters.

        `hidden` columns (such as primary keys for paging) ride along raw as `__hidden_N`;
        callers must never return them.
        """
        exprs = [
            f"{self._show_sql(v, _quote(v.name))} AS {_quote(v.name)}"
            for v in self.visible(all_fields)
        ]
        exprs += [f"{_quote(h)} AS __hidden_{i}" for i, h in enumerate(hidden or [])]
        conditions: list[str] = []
        params: list[Any] = []
        for column, values in sorted(self.row_scope.items()):
            if not values:
                conditions.append("false")
                continue
            marks = ", ".join("?" for _ in values)
            conditions.append(f"CAST({_quote(column)} AS VARCHAR) IN ({marks})")
            params.extend(values)
        if self.subject is not None:
            conditions.append(f"CAST({_quote(self.subject[0])} AS VARCHAR) = ?")
            params.append(self.subject[1])
        sql = f"SELECT {', '.join(exprs) or 'NULL AS __none'} FROM {source}"
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        return sql, params

    def row_allowed(self, record: dict[str, Any]) -> bool:
        """Return True when a raw record lies inside the row scope and subject filter."""
        for column, values in self.row_scope.items():
            if _text(record.get(column)) not in values:
                return False
        if self.subject is not None and _text(record.get(self.subject[0])) != self.subject[1]:
            return False
        return True

    def show_value(self, view: FieldView, value: Any) -> Any:
        """Show one raw value as the decision says (masked, pseudonymised or clear)."""
        if value is None or view.mask is MaskKind.none:
            return value
        text = _text(value)
        if self.pseudonym_key is not None and view.mask in IDENTIFYING:
            return pseudonymise(self.pseudonym_key, text)
        if view.mask is MaskKind.pseudonym:
            return mask_text(MaskKind.hidden, text)
        return mask_text(view.mask, text)

    def apply_record(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Filter, project and mask one flat record; None when the row is outside."""
        if not self.row_allowed(record):
            return None
        if self.fields is None:
            return dict(record)
        out: dict[str, Any] = {}
        for view in self.fields:
            if view.name in record:
                out[view.name] = self.show_value(view, record[view.name])
        return out


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return "" if value is None else str(value)


def _mask_of(entry_field: Any) -> MaskKind:
    """Return the mask a catalog field asks for; personal fields without one are hidden."""
    personal = str(getattr(entry_field, "personal", "none") or "none")
    raw = getattr(entry_field, "mask", None)
    mask = MaskKind(str(getattr(raw, "value", raw))) if raw else MaskKind.none
    if mask is MaskKind.none and personal != "none":
        return MaskKind.hidden
    return mask


def _refuse(
    *, data_dir: Path, principal: Principal, dataset_id: str, action: str, reason: str
) -> Forbidden:
    audit.append(
        data_dir=data_dir,
        principal=principal,
        action=action,
        resource=dataset_id,
        result="refused",
        detail={"reason": reason},
    )
    return Forbidden(reason)


def authorize_read(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal,
    dataset_id: str,
    fields: list[str] | None = None,
    grant_id: str | None = None,
    action: str = "read",
    owner: str | None = None,
) -> ReadDecision:
    """Decide whether a principal may read a dataset, and what of it; refuse with 403.

    `owner` is the owning department the storage knows (a table's registry row); it lets the
    owner read a dataset the catalog does not describe yet.
    """
    from citybrain.governance.catalog import service as catalog
    from citybrain.governance.sharing import service as sharing

    def refuse(reason: str) -> Forbidden:
        return _refuse(
            data_dir=data_dir,
            principal=principal,
            dataset_id=dataset_id,
            action=action,
            reason=reason,
        )

    if principal.role is Role.auditor:
        raise refuse("auditors read the audit log, not the data")
    entry = catalog.find_entry(engine=engine, dataset_id=dataset_id)
    if entry is None and owner is not None and principal.org == owner and principal.is_government:
        return ReadDecision(dataset_id, principal, "owner", None)
    if entry is None:
        if dataset_id.startswith(ENTITY_PREFIX) and principal.is_government:
            # context data the catalog does not describe is the node's open context
            decision = ReadDecision(dataset_id, principal, "open", None)
            decision.check_fields(fields)
            return decision
        raise refuse(
            f"{dataset_id} has no catalog entry, so only its owner may read it; "
            "ask the owner to describe it in the catalog"
        )
    owner = str(entry.owner_department)
    if principal.org == owner and principal.is_government and grant_id is None:
        return ReadDecision(dataset_id, principal, "owner", None)
    if bool(entry.open_data) and grant_id is None:
        return ReadDecision(dataset_id, principal, "open", None)
    if principal.role is Role.citizen:
        subject_field = entry.subject_field
        if not subject_field or not principal.phone:
            raise refuse(f"citizens may not read {dataset_id}")
        decision = ReadDecision(
            dataset_id, principal, "citizen", None, subject=(str(subject_field), principal.phone)
        )
        return decision
    grant = sharing.active_grant(
        engine=engine, dataset_id=dataset_id, org=principal.org, kind="records", grant_id=grant_id
    )
    if grant is None:
        which = f"grant {grant_id} is not active for" if grant_id else "there is no active grant of"
        raise refuse(
            f"{which} {principal.org} on {dataset_id}; request access at /api/sharing/requests"
        )
    masks = {f.name: _mask_of(f) for f in entry.fields}
    views = tuple(FieldView(name, masks.get(name, MaskKind.none)) for name in grant.fields)
    scope = {str(k): tuple(str(v) for v in vs) for k, vs in (grant.row_scope or {}).items()}
    decision = ReadDecision(
        dataset_id,
        principal,
        "grant",
        views,
        row_scope=scope,
        grant_id=str(grant.id),
        purpose=str(grant.purpose),
        pseudonym_key=pseudonym_key(data_dir, str(grant.id)) if grant.pseudonymise else None,
    )
    try:
        decision.check_fields(fields)
    except Forbidden as exc:
        raise refuse(exc.message) from None
    return decision


def record_read(
    *,
    data_dir: Path,
    decision: ReadDecision,
    rows: int,
    action: str = "read",
    resource: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append the evidence of a read the gate allowed: who, what, grant, purpose, rows."""
    audit.append(
        data_dir=data_dir,
        principal=decision.principal,
        action=action,
        resource=resource or decision.dataset_id,
        result="allowed",
        grant_id=decision.grant_id,
        purpose=decision.purpose,
        rows=rows,
        detail={"basis": decision.basis, **(detail or {})},
    )


def _cursor_key(data_dir: Path) -> bytes:
    raw = node_key(data_dir).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return hmac.new(raw, b"cursor", hashlib.sha256).digest()


def seal_cursor(data_dir: Path, values: list[Any]) -> str:
    """Encrypt a paging cursor, so raw key values never reach a reader who sees them masked."""
    nonce = os.urandom(12)
    sealed = AESGCM(_cursor_key(data_dir)).encrypt(nonce, orjson.dumps(values), b"cursor")
    return "s." + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def unseal_cursor(data_dir: Path, cursor: str) -> list[Any]:
    """Decrypt a cursor made by seal_cursor, or refuse it."""
    try:
        raw = base64.urlsafe_b64decode(cursor[2:] + "=" * (-len(cursor[2:]) % 4))
        plain = AESGCM(_cursor_key(data_dir)).decrypt(raw[:12], raw[12:], b"cursor")
        values = orjson.loads(plain)
    except (ValueError, InvalidTag, orjson.JSONDecodeError):
        raise BadInput("the 'after' cursor is not one this node issued") from None
    if not isinstance(values, list):
        raise BadInput("the 'after' cursor is not one this node issued")
    return values
