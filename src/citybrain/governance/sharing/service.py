"""Sharing: access requests -> owner and bureau decisions -> grants; expiry and revocation.

The workflow of a request, by the dataset's sharing type and level (docs/governance.md):

- unconditional, asked by a government principal, no sensitive personal field: approved at
  once, the grant is created with the request;
- conditional (or unconditional with sensitive fields, or a verification request on a
  not-shared dataset): ``pending_owner`` until a steward of the owner department decides;
  then ``pending_bureau`` for important and core data until a bureau_admin decides;
- not_shared: records requests are refused, verification requests follow the conditional path.

`active_grant` is what the gate calls on every read of governed data: one indexed query.
Time comes from the module's `clock` (or a `now`/`at` argument) so expiry can be tested
without waiting.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, insert, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from citybrain.core.datalevel import DataLevel
from citybrain.core.errors import (
    BadInput,
    Conflict,
    Forbidden,
    NotFound,
    Unprocessable,
)
from citybrain.governance.audit import service as audit
from citybrain.governance.catalog import service as catalog
from citybrain.governance.catalog.models import CatalogEntry, Personal, SharingType
from citybrain.governance.principal import BUREAU_ORG, Principal, Role
from citybrain.governance.sharing.models import (
    PENDING,
    AccessRequestCreate,
    AccessRequestRead,
    Decision,
    GrantRead,
    GrantStatus,
    RequestKind,
    RequestStatus,
    access_requests,
    grants,
)

# who may ask for data on behalf of an organisation: people and systems that answer for it
REQUESTER_ROLES = frozenset({Role.steward, Role.service, Role.bureau_admin})
# levels whose sharing the bureau approves after the owner
BUREAU_LEVELS = frozenset({DataLevel.important, DataLevel.core})
RoleView = Literal["all", "requested", "to_decide"]
MAX_LIST = 1000


def _system_now() -> datetime:
    return datetime.now(UTC)


clock: Callable[[], datetime] = _system_now
"""The service's clock; tests replace it to move time without sleeping."""


def _dataset(engine: Engine, dataset_id: str) -> CatalogEntry:
    """Return the catalog entry of a dataset (raises NotFound); the one place sharing reads it."""
    return catalog.get_entry(engine=engine, dataset_id=dataset_id)


def _utc(value: datetime) -> datetime:
    """Return an aware UTC datetime; SQLite hands back naive ones, stored as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now(now: datetime | None = None) -> datetime:
    return _utc(now if now is not None else clock())


def _reason(reason: str | None) -> str | None:
    """Return a decision's reason stripped, None when blank; refuse NUL characters."""
    if reason is None or not reason.strip():
        return None
    if "\x00" in reason:
        raise BadInput("a reason must not contain NUL characters")
    return reason.strip()


def _new_id() -> str:
    return uuid.uuid4().hex


# ---- reading rows ------------------------------------------------------------------------


def _decision(raw: Any) -> Decision | None:
    return Decision.model_validate(raw) if raw else None


def _request_read(row: Any) -> AccessRequestRead:
    return AccessRequestRead(
        id=row.id,
        kind=RequestKind(row.kind),
        dataset_id=row.dataset_id,
        requester_org=row.requester_org,
        requested_by=row.requested_by,
        owner_org=row.owner_org,
        data_level=row.data_level,
        fields=list(row.fields),
        row_scope=dict(row.row_scope),
        purpose=row.purpose,
        legal_basis=row.legal_basis,
        duration_days=row.duration_days,
        pseudonymise=bool(row.pseudonymise),
        questions=list(row.questions),
        status=RequestStatus(row.status),
        owner_decision=_decision(row.owner_decision),
        bureau_decision=_decision(row.bureau_decision),
        created_at=_utc(row.created_at),
        grant_id=row.grant_id,
    )


def _grant_status(row: Any, moment: datetime) -> GrantStatus:
    if row.revoked_at is not None:
        return GrantStatus.revoked
    if _utc(row.expires_at) <= moment:
        return GrantStatus.expired
    return GrantStatus.active


def _grant_read(row: Any, moment: datetime) -> GrantRead:
    return GrantRead(
        id=row.id,
        request_id=row.request_id,
        kind=RequestKind(row.kind),
        dataset_id=row.dataset_id,
        grantee_org=row.grantee_org,
        owner_org=row.owner_org,
        fields=list(row.fields),
        row_scope=dict(row.row_scope),
        purpose=row.purpose,
        legal_basis=row.legal_basis,
        pseudonymise=bool(row.pseudonymise),
        questions=list(row.questions),
        granted_at=_utc(row.granted_at),
        expires_at=_utc(row.expires_at),
        revoked_at=_utc(row.revoked_at) if row.revoked_at is not None else None,
        revoked_by=row.revoked_by,
        revoke_reason=row.revoke_reason,
        status=_grant_status(row, moment),
    )


def _require_government(principal: Principal) -> None:
    if not principal.is_government:
        raise Forbidden("access requests and grants are for government principals")


def _sees(principal: Principal, *orgs: str) -> bool:
    """Return True when the principal may see something concerning these organisations."""
    return principal.role is Role.bureau_admin or principal.org in orgs


def _request_row(conn: Connection, principal: Principal, request_id: str) -> Any:
    row = conn.execute(select(access_requests).where(access_requests.c.id == request_id)).first()
    # a request of other organisations is answered like a missing one: nothing leaks
    if row is None or not _sees(principal, row.requester_org, row.owner_org):
        raise NotFound(f"no access request {request_id}")
    return row


def _grant_row(conn: Connection, principal: Principal, grant_id: str) -> Any:
    row = conn.execute(select(grants).where(grants.c.id == grant_id)).first()
    if row is None or not _sees(principal, row.grantee_org, row.owner_org):
        raise NotFound(f"no grant {grant_id}")
    return row


# ---- creating requests and grants --------------------------------------------------------


def _check_body(principal: Principal, entry: CatalogEntry, body: AccessRequestCreate) -> None:
    """Refuse a request the dataset's description does not allow, with the reason."""
    dataset = entry.id
    if entry.owner_department == principal.org:
        raise Unprocessable(
            f"{principal.org} owns {dataset}; an owner reads its own data without a grant"
        )
    if body.kind is RequestKind.records and entry.sharing_type is SharingType.not_shared:
        raise Unprocessable(f"{dataset} is not shared; ask for a verification grant instead")
    names = {f.name for f in entry.fields}
    unknown = [f for f in body.fields if f not in names]
    if unknown:
        raise Unprocessable(
            f"{dataset} has no field(s) {', '.join(unknown)}; its fields are "
            f"{', '.join(sorted(names))}"
        )
    scope_fields = list(entry.scope_fields)
    off_scope = [c for c in body.row_scope if c not in scope_fields]
    if off_scope:
        allowed = ", ".join(scope_fields) if scope_fields else "none"
        raise Unprocessable(
            f"row_scope may only name scope fields of {dataset} ({allowed}), "
            f"not {', '.join(off_scope)}"
        )
    if not body.row_scope and scope_fields and principal.org != BUREAU_ORG:
        # a department asks for the rows its purpose needs, never for the whole province
        raise Unprocessable(
            f"name the rows you need: row_scope must limit {dataset} by {' or '.join(scope_fields)}"
        )


def _insert_grant(conn: Connection, row: Any, moment: datetime) -> str:
    grant_id = _new_id()
    conn.execute(
        insert(grants).values(
            id=grant_id,
            request_id=row.id,
            kind=row.kind,
            dataset_id=row.dataset_id,
            grantee_org=row.requester_org,
            owner_org=row.owner_org,
            fields=list(row.fields),
            row_scope=dict(row.row_scope),
            purpose=row.purpose,
            legal_basis=row.legal_basis,
            pseudonymise=bool(row.pseudonymise),
            questions=list(row.questions),
            granted_at=moment,
            expires_at=moment + timedelta(days=row.duration_days),
        )
    )
    conn.execute(
        update(access_requests).where(access_requests.c.id == row.id).values(grant_id=grant_id)
    )
    return grant_id


def _audit_grant(
    *, data_dir: Path, principal: Principal, conn: Connection, grant_id: str, request_id: str
) -> None:
    grant = conn.execute(select(grants).where(grants.c.id == grant_id)).one()
    audit.append(
        data_dir=data_dir,
        principal=principal,
        action="grant.create",
        resource=grant.dataset_id,
        result="ok",
        grant_id=grant_id,
        purpose=grant.purpose,
        detail={
            "request": request_id,
            "grantee": grant.grantee_org,
            "kind": grant.kind,
            "fields": list(grant.fields),
            "row_scope": dict(grant.row_scope),
            "expires_at": _utc(grant.expires_at).isoformat(),
        },
    )


def create_request(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal,
    body: AccessRequestCreate,
    now: datetime | None = None,
) -> AccessRequestRead:
    """File an access request for the principal's organisation; grant at once when allowed."""
    if principal.role not in REQUESTER_ROLES:
        raise Forbidden(
            "only a department's steward or service account, or the bureau, may request access"
        )
    entry = _dataset(engine, body.dataset_id)
    _check_body(principal, entry, body)
    personal = {f.name: f.personal for f in entry.fields}
    sensitive = [f for f in body.fields if personal.get(f) is Personal.sensitive]
    at_once = (
        entry.sharing_type is SharingType.unconditional
        and principal.is_government
        and not sensitive
    )
    moment = _now(now)
    request_id = _new_id()
    status = RequestStatus.approved if at_once else RequestStatus.pending_owner
    with engine.begin() as conn:
        conn.execute(
            insert(access_requests).values(
                id=request_id,
                kind=body.kind.value,
                dataset_id=entry.id,
                requester_org=principal.org,
                requested_by=principal.label(),
                owner_org=entry.owner_department,
                data_level=entry.data_level.value,
                fields=body.fields,
                row_scope=body.row_scope,
                purpose=body.purpose,
                legal_basis=body.legal_basis,
                duration_days=body.duration_days,
                pseudonymise=body.pseudonymise,
                questions=body.questions,
                status=status.value,
                created_at=moment,
            )
        )
        row = conn.execute(select(access_requests).where(access_requests.c.id == request_id)).one()
        grant_id = _insert_grant(conn, row, moment) if at_once else None
        # evidence is written before the commit: without it, the request is not made
        audit.append(
            data_dir=data_dir,
            principal=principal,
            action="sharing.request",
            resource=entry.id,
            result="ok",
            grant_id=grant_id,
            purpose=body.purpose,
            detail={
                "request": request_id,
                "kind": body.kind.value,
                "status": status.value,
                "fields": body.fields,
                "row_scope": body.row_scope,
                "legal_basis": body.legal_basis,
                "duration_days": body.duration_days,
            },
        )
        if grant_id is not None:
            _audit_grant(
                data_dir=data_dir,
                principal=principal,
                conn=conn,
                grant_id=grant_id,
                request_id=request_id,
            )
        row = conn.execute(select(access_requests).where(access_requests.c.id == request_id)).one()
    return _request_read(row)


# ---- decisions ---------------------------------------------------------------------------


def _check_decider(principal: Principal, row: Any, status: RequestStatus) -> str:
    """Return the step the principal decides ("owner" or "bureau"), or refuse."""
    owner_steward = principal.role is Role.steward and principal.org == row.owner_org
    if status is RequestStatus.pending_owner:
        if owner_steward:
            return "owner"
        raise Forbidden(f"request {row.id} waits for a steward of {row.owner_org}")
    if principal.role is Role.bureau_admin:
        return "bureau"
    if owner_steward:
        raise Conflict(
            f"{row.owner_org} has decided request {row.id} already; it waits for the bureau"
        )
    raise Forbidden(f"request {row.id} waits for the bureau (bureau_admin)")


def _decide(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal,
    request_id: str,
    approve: bool,
    reason: str | None,
    now: datetime | None,
) -> AccessRequestRead:
    _require_government(principal)
    reason = _reason(reason)
    if not approve and reason is None:
        raise BadInput("a rejection needs a reason")
    moment = _now(now)
    with engine.begin() as conn:
        row = _request_row(conn, principal, request_id)
        status = RequestStatus(row.status)
        if status not in PENDING:
            raise Conflict(f"request {request_id} is {status.value}; it takes no more decisions")
        step = _check_decider(principal, row, status)
        decision = Decision(
            by=principal.label(),
            at=moment,
            decision="approved" if approve else "rejected",
            reason=reason,
        ).model_dump(mode="json")
        if not approve:
            new_status = RequestStatus.rejected
        elif step == "owner" and DataLevel(row.data_level) in BUREAU_LEVELS:
            new_status = RequestStatus.pending_bureau
        else:
            new_status = RequestStatus.approved
        column = "owner_decision" if step == "owner" else "bureau_decision"
        done = conn.execute(
            update(access_requests)
            .where(access_requests.c.id == request_id, access_requests.c.status == status.value)
            .values({column: decision, "status": new_status.value})
        )
        if done.rowcount != 1:
            # another decision landed between our read and our write
            raise Conflict(f"request {request_id} was decided meanwhile; read it again")
        grant_id = (
            _insert_grant(conn, row, moment) if new_status is RequestStatus.approved else None
        )
        audit.append(
            data_dir=data_dir,
            principal=principal,
            action="sharing.approve" if approve else "sharing.reject",
            resource=row.dataset_id,
            result="ok",
            grant_id=grant_id,
            purpose=row.purpose,
            detail={
                "request": request_id,
                "step": step,
                "status": new_status.value,
                "reason": reason,
            },
        )
        if grant_id is not None:
            _audit_grant(
                data_dir=data_dir,
                principal=principal,
                conn=conn,
                grant_id=grant_id,
                request_id=request_id,
            )
        row = conn.execute(select(access_requests).where(access_requests.c.id == request_id)).one()
    return _request_read(row)


def approve(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal,
    request_id: str,
    reason: str | None = None,
    now: datetime | None = None,
) -> AccessRequestRead:
    """Approve the step of a request that waits for the principal; grant on the last step."""
    return _decide(
        engine=engine,
        data_dir=data_dir,
        principal=principal,
        request_id=request_id,
        approve=True,
        reason=reason,
        now=now,
    )


def reject(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal,
    request_id: str,
    reason: str | None,
    now: datetime | None = None,
) -> AccessRequestRead:
    """Reject a request at the step that waits for the principal; a reason is required."""
    return _decide(
        engine=engine,
        data_dir=data_dir,
        principal=principal,
        request_id=request_id,
        approve=False,
        reason=reason,
        now=now,
    )


def withdraw(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal,
    request_id: str,
    reason: str | None = None,
    now: datetime | None = None,
) -> AccessRequestRead:
    """Withdraw a pending request of the principal's own organisation."""
    _require_government(principal)
    reason = _reason(reason)
    moment = _now(now)
    with engine.begin() as conn:
        row = _request_row(conn, principal, request_id)
        status = RequestStatus(row.status)
        if status not in PENDING:
            raise Conflict(f"request {request_id} is {status.value}; it cannot be withdrawn")
        if principal.org != row.requester_org or principal.role not in REQUESTER_ROLES:
            raise Forbidden(
                f"only a steward, service or bureau principal of {row.requester_org} "
                "may withdraw its request"
            )
        done = conn.execute(
            update(access_requests)
            .where(access_requests.c.id == request_id, access_requests.c.status == status.value)
            .values(status=RequestStatus.withdrawn.value)
        )
        if done.rowcount != 1:
            raise Conflict(f"request {request_id} was decided meanwhile; read it again")
        audit.append(
            data_dir=data_dir,
            principal=principal,
            action="sharing.withdraw",
            resource=row.dataset_id,
            result="ok",
            purpose=row.purpose,
            detail={"request": request_id, "reason": reason, "at": moment.isoformat()},
        )
        row = conn.execute(select(access_requests).where(access_requests.c.id == request_id)).one()
    return _request_read(row)


# ---- revocation --------------------------------------------------------------------------


def revoke_grant(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal,
    grant_id: str,
    reason: str | None,
    now: datetime | None = None,
) -> GrantRead:
    """Revoke a grant (a steward of the owner department or the bureau); a reason is required."""
    _require_government(principal)
    reason = _reason(reason)
    if reason is None:
        raise BadInput("a revocation needs a reason")
    moment = _now(now)
    with engine.begin() as conn:
        row = _grant_row(conn, principal, grant_id)
        owner_steward = principal.role is Role.steward and principal.org == row.owner_org
        if not owner_steward and principal.role is not Role.bureau_admin:
            raise Forbidden(f"only a steward of {row.owner_org} or the bureau may revoke a grant")
        if row.revoked_at is not None:
            raise Conflict(f"grant {grant_id} is revoked already")
        done = conn.execute(
            update(grants)
            .where(grants.c.id == grant_id, grants.c.revoked_at.is_(None))
            .values(revoked_at=moment, revoked_by=principal.label(), revoke_reason=reason)
        )
        if done.rowcount != 1:
            raise Conflict(f"grant {grant_id} is revoked already")
        audit.append(
            data_dir=data_dir,
            principal=principal,
            action="grant.revoke",
            resource=row.dataset_id,
            result="ok",
            grant_id=grant_id,
            purpose=row.purpose,
            detail={"request": row.request_id, "grantee": row.grantee_org, "reason": reason},
        )
        row = conn.execute(select(grants).where(grants.c.id == grant_id)).one()
    return _grant_read(row, moment)


# ---- reading -----------------------------------------------------------------------------


def get_request(*, engine: Engine, principal: Principal, request_id: str) -> AccessRequestRead:
    """Return one request that concerns the principal's organisation (404 otherwise)."""
    _require_government(principal)
    with engine.connect() as conn:
        return _request_read(_request_row(conn, principal, request_id))


def list_requests(
    *,
    engine: Engine,
    principal: Principal,
    status: RequestStatus | None = None,
    role_view: RoleView = "all",
    dataset_id: str | None = None,
    limit: int = MAX_LIST,
) -> list[AccessRequestRead]:
    """List requests concerning the principal, newest first.

    ``all``: requests from its organisation and about its datasets (the bureau: every one);
    ``requested``: those its organisation made; ``to_decide``: those waiting for its decision.
    """
    _require_government(principal)
    t = access_requests
    bureau = principal.role is Role.bureau_admin
    conditions: list[ColumnElement[bool]] = []
    if role_view == "requested":
        conditions.append(t.c.requester_org == principal.org)
    elif role_view == "to_decide":
        if bureau:
            conditions.append(t.c.status == RequestStatus.pending_bureau.value)
        elif principal.role is Role.steward:
            conditions.append(t.c.status == RequestStatus.pending_owner.value)
            conditions.append(t.c.owner_org == principal.org)
        else:
            return []
    elif role_view == "all":
        if not bureau:
            conditions.append(
                or_(t.c.requester_org == principal.org, t.c.owner_org == principal.org)
            )
    else:
        raise BadInput(f"unknown view {role_view!r}; use all, requested or to_decide")
    if status is not None:
        conditions.append(t.c.status == RequestStatus(status).value)
    if dataset_id is not None:
        conditions.append(t.c.dataset_id == dataset_id)
    query = select(t).where(*conditions).order_by(t.c.created_at.desc(), t.c.id).limit(limit)
    with engine.connect() as conn:
        return [_request_read(r) for r in conn.execute(query)]


def list_grants(
    *,
    engine: Engine,
    principal: Principal,
    dataset_id: str | None = None,
    active_only: bool = False,
    at: datetime | None = None,
    limit: int = MAX_LIST,
) -> list[GrantRead]:
    """List grants held by or given by the principal's organisation (the bureau: all)."""
    _require_government(principal)
    moment = _now(at)
    conditions: list[ColumnElement[bool]] = []
    if principal.role is not Role.bureau_admin:
        conditions.append(
            or_(grants.c.grantee_org == principal.org, grants.c.owner_org == principal.org)
        )
    if dataset_id is not None:
        conditions.append(grants.c.dataset_id == dataset_id)
    if active_only:
        conditions.append(grants.c.revoked_at.is_(None))
        conditions.append(grants.c.expires_at > moment)
        conditions.append(grants.c.granted_at <= moment)
    query = (
        select(grants)
        .where(*conditions)
        .order_by(grants.c.granted_at.desc(), grants.c.id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [_grant_read(r, moment) for r in conn.execute(query)]


def get_grant(
    *, engine: Engine, principal: Principal, grant_id: str, at: datetime | None = None
) -> GrantRead:
    """Return one grant that concerns the principal's organisation (404 otherwise)."""
    _require_government(principal)
    with engine.connect() as conn:
        return _grant_read(_grant_row(conn, principal, grant_id), _now(at))


def active_grant(
    *,
    engine: Engine,
    dataset_id: str,
    org: str,
    kind: RequestKind | str = RequestKind.records,
    grant_id: str | None = None,
    at: datetime | None = None,
) -> GrantRead | None:
    """Return the active grant of an org on a dataset (the named one, else the newest), or None."""
    moment = _now(at)
    query = select(grants).where(
        grants.c.dataset_id == dataset_id,
        grants.c.grantee_org == org,
        grants.c.kind == RequestKind(kind).value,
        grants.c.revoked_at.is_(None),
        grants.c.expires_at > moment,
        grants.c.granted_at <= moment,
    )
    if grant_id is not None:
        query = query.where(grants.c.id == grant_id)
    query = query.order_by(grants.c.granted_at.desc(), grants.c.id.desc()).limit(1)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return _grant_read(row, moment) if row is not None else None
