"""HTTP routes of governance/sharing: access requests, decisions and grants; thin callers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path as FsPath

from fastapi import Depends, Path, Query, Request
from sqlalchemy import Engine

from citybrain.core.routing import APIRouter
from citybrain.governance.catalog.models import DATASET_ID
from citybrain.governance.identity.deps import current_principal
from citybrain.governance.principal import Principal
from citybrain.governance.sharing import service
from citybrain.governance.sharing.models import (
    AccessRequestCreate,
    AccessRequestRead,
    DecisionBody,
    GrantRead,
    RequestStatus,
    RevokeBody,
)

router = APIRouter(prefix="/api", tags=["sharing"])
ID = r"^[0-9a-f]{32}$"


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _data(request: Request) -> FsPath:
    data_dir: FsPath = request.app.state.settings.data_dir
    return data_dir


@router.post("/sharing/requests", status_code=201)
def create_request(
    request: Request,
    body: AccessRequestCreate,
    principal: Principal = Depends(current_principal),
) -> AccessRequestRead:
    """Ask for records or verification answers of another department's dataset."""
    return service.create_request(
        engine=_engine(request), data_dir=_data(request), principal=principal, body=body
    )


@router.get("/sharing/requests")
def list_requests(
    request: Request,
    status: RequestStatus | None = Query(None, description="only requests in this state"),
    view: service.RoleView = Query(
        "all", description="all, requested (by my org) or to_decide (waiting for me)"
    ),
    dataset_id: str | None = Query(None, pattern=DATASET_ID, max_length=200),
    principal: Principal = Depends(current_principal),
) -> list[AccessRequestRead]:
    """List the requests that concern the caller's organisation, newest first."""
    return service.list_requests(
        engine=_engine(request),
        principal=principal,
        status=status,
        role_view=view,
        dataset_id=dataset_id,
    )


@router.get("/sharing/requests/{request_id}")
def get_request(
    request: Request,
    request_id: str = Path(pattern=ID),
    principal: Principal = Depends(current_principal),
) -> AccessRequestRead:
    """Return one request with its decisions."""
    return service.get_request(engine=_engine(request), principal=principal, request_id=request_id)


def _decide(
    request: Request,
    decide: Callable[..., AccessRequestRead],
    body: DecisionBody | None,
    request_id: str,
    principal: Principal,
) -> AccessRequestRead:
    """Run one decision of the sharing workflow with the caller as the one deciding."""
    return decide(
        engine=_engine(request),
        data_dir=_data(request),
        principal=principal,
        request_id=request_id,
        reason=body.reason if body else None,
    )


@router.post("/sharing/requests/{request_id}/approve")
def approve(
    request: Request,
    body: DecisionBody | None = None,
    request_id: str = Path(pattern=ID),
    principal: Principal = Depends(current_principal),
) -> AccessRequestRead:
    """Approve the step of a request that waits for the caller."""
    return _decide(request, service.approve, body, request_id, principal)


@router.post("/sharing/requests/{request_id}/reject")
def reject(
    request: Request,
    body: DecisionBody | None = None,
    request_id: str = Path(pattern=ID),
    principal: Principal = Depends(current_principal),
) -> AccessRequestRead:
    """Reject a request at the step that waits for the caller, with a reason."""
    return _decide(request, service.reject, body, request_id, principal)


@router.post("/sharing/requests/{request_id}/withdraw")
def withdraw(
    request: Request,
    body: DecisionBody | None = None,
    request_id: str = Path(pattern=ID),
    principal: Principal = Depends(current_principal),
) -> AccessRequestRead:
    """Withdraw a pending request of the caller's organisation."""
    return _decide(request, service.withdraw, body, request_id, principal)


@router.get("/grants")
def list_grants(
    request: Request,
    dataset_id: str | None = Query(None, pattern=DATASET_ID, max_length=200),
    active: bool = Query(False, description="only grants active now"),
    principal: Principal = Depends(current_principal),
) -> list[GrantRead]:
    """List the grants the caller's organisation holds or has given."""
    return service.list_grants(
        engine=_engine(request), principal=principal, dataset_id=dataset_id, active_only=active
    )


@router.get("/grants/{grant_id}")
def get_grant(
    request: Request,
    grant_id: str = Path(pattern=ID),
    principal: Principal = Depends(current_principal),
) -> GrantRead:
    """Return one grant and whether it is active."""
    return service.get_grant(engine=_engine(request), principal=principal, grant_id=grant_id)


@router.post("/grants/{grant_id}/revoke")
def revoke(
    request: Request,
    body: RevokeBody,
    grant_id: str = Path(pattern=ID),
    principal: Principal = Depends(current_principal),
) -> GrantRead:
    """Revoke a grant at once (a steward of the owner department or the bureau)."""
    return service.revoke_grant(
        engine=_engine(request),
        data_dir=_data(request),
        principal=principal,
        grant_id=grant_id,
        reason=body.reason,
    )
