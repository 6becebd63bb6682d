"""HTTP routes of notifications: subscriptions (CRUD) and the deliveries of the outbox."""

from __future__ import annotations

from fastapi import Depends, Query, Request, Response
from sqlalchemy import Engine

from citybrain.core.routing import APIRouter
from citybrain.decisions.notify import service
from citybrain.decisions.notify.models import (
    DeliveryRead,
    SubscriptionCreate,
    SubscriptionRead,
    SubscriptionUpdate,
)
from citybrain.governance.identity.deps import current_principal
from citybrain.governance.principal import Principal

router = APIRouter(prefix="/api/notify", tags=["notify"])


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


@router.get("/subscriptions")
def list_subscriptions(
    request: Request, principal: Principal = Depends(current_principal)
) -> list[SubscriptionRead]:
    """List the subscriptions the caller may manage."""
    return service.list_subscriptions(engine=_engine(request), principal=principal)


@router.post("/subscriptions", status_code=201)
def create_subscription(
    body: SubscriptionCreate, request: Request, principal: Principal = Depends(current_principal)
) -> SubscriptionRead:
    """Subscribe a department or a person to happenings by a channel."""
    return service.create_subscription(
        engine=_engine(request),
        data_dir=request.app.state.settings.data_dir,
        principal=principal,
        body=body,
    )


@router.get("/subscriptions/{subscription_id}")
def get_subscription(
    subscription_id: str, request: Request, principal: Principal = Depends(current_principal)
) -> SubscriptionRead:
    """Return one subscription."""
    return service.get_subscription(
        engine=_engine(request), principal=principal, subscription_id=subscription_id
    )


@router.patch("/subscriptions/{subscription_id}")
def update_subscription(
    subscription_id: str,
    body: SubscriptionUpdate,
    request: Request,
    principal: Principal = Depends(current_principal),
) -> SubscriptionRead:
    """Change a subscription's happenings, target, secret or active flag."""
    return service.update_subscription(
        engine=_engine(request),
        data_dir=request.app.state.settings.data_dir,
        principal=principal,
        subscription_id=subscription_id,
        body=body,
    )


@router.delete("/subscriptions/{subscription_id}", status_code=204)
def delete_subscription(
    subscription_id: str, request: Request, principal: Principal = Depends(current_principal)
) -> Response:
    """Remove a subscription."""
    service.delete_subscription(
        engine=_engine(request),
        data_dir=request.app.state.settings.data_dir,
        principal=principal,
        subscription_id=subscription_id,
    )
    return Response(status_code=204)


@router.get("/deliveries")
def list_deliveries(
    request: Request,
    case_id: str | None = Query(None, max_length=32),
    state: str | None = Query(None, max_length=16),
    limit: int = Query(100, ge=1, le=1000),
    principal: Principal = Depends(current_principal),
) -> list[DeliveryRead]:
    """List notifications and how their delivery went, newest first."""
    return service.list_deliveries(
        engine=_engine(request), principal=principal, case_id=case_id, state=state, limit=limit
    )
