"""HTTP routes of federation: tasks, escalations, peers, and the inbox other nodes call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Any

from fastapi import Depends, Path, Query, Request
from pydantic import BaseModel
from sqlalchemy import Engine

from citybrain.core.config import Settings
from citybrain.core.routing import APIRouter
from citybrain.federation import service, trust
from citybrain.federation.models import (
    MESSAGE_ID,
    Direction,
    EscalationCreate,
    EscalationRead,
    InboxEscalation,
    InboxTask,
    InboxTaskStatus,
    PeerRead,
    Receipt,
    Relation,
    TaskCreate,
    TaskRead,
    TaskStatus,
    TaskStatusUpdate,
)
from citybrain.governance.identity.deps import current_principal, require_role
from citybrain.governance.principal import Principal, Role

router = APIRouter(prefix="/api/federation", tags=["federation"])

# staff and systems of this node; peer nodes only reach the inbox below
_government = require_role(Role.bureau_admin, Role.steward, Role.operator, Role.service)
_handlers = require_role(Role.bureau_admin, Role.operator)
_bureau = require_role(Role.bureau_admin)


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _data(request: Request) -> FsPath:
    return _settings(request).data_dir


def _peer(request: Request, principal: Principal, relation: Relation) -> dict[str, Any]:
    """Admit only a registered peer of that relation, and note that it was in touch."""
    engine = _engine(request)
    peer = trust.require_peer_relation(
        engine=engine, own_code=_settings(request).code, principal=principal, relation=relation
    )
    trust.touch_peer(engine=engine, code=peer["code"])
    return peer


@router.post("/tasks", status_code=201)
def send_task(
    request: Request,
    task: TaskCreate,
    principal: Principal = Depends(_bureau),
) -> TaskRead:
    """Send a task down to a registered child node."""
    return service.send_task(
        engine=_engine(request),
        data_dir=_data(request),
        own_code=_settings(request).code,
        principal=principal,
        task=task,
    )


@router.get("/tasks")
def list_tasks(
    request: Request,
    direction: Direction | None = None,
    status: TaskStatus | None = None,
    limit: int = Query(100, ge=1, le=1000),
    principal: Principal = Depends(_government),
) -> list[TaskRead]:
    """List the tasks this node sent and received."""
    return service.list_tasks(
        engine=_engine(request), direction=direction, status=status, limit=limit
    )


@router.get("/tasks/{task_id}")
def get_task(
    request: Request,
    task_id: str = Path(pattern=MESSAGE_ID),
    principal: Principal = Depends(_government),
) -> TaskRead:
    """Return one task with its history and delivery state."""
    return service.get_task(engine=_engine(request), task_id=task_id)


@router.post("/tasks/{task_id}/status")
def update_status(
    request: Request,
    change: TaskStatusUpdate,
    task_id: str = Path(pattern=MESSAGE_ID),
    principal: Principal = Depends(_handlers),
) -> TaskRead:
    """Move a received task to a new status; the sender learns it through the outbox."""
    return service.update_task_status(
        engine=_engine(request),
        data_dir=_data(request),
        own_code=_settings(request).code,
        principal=principal,
        task_id=task_id,
        change=change,
    )


@router.post("/escalations", status_code=201)
def escalate(
    request: Request,
    escalation: EscalationCreate,
    principal: Principal = Depends(_handlers),
) -> EscalationRead:
    """Escalate an event to this node's parent."""
    return service.escalate(
        engine=_engine(request),
        data_dir=_data(request),
        own_code=_settings(request).code,
        principal=principal,
        escalation=escalation,
    )


@router.get("/escalations")
def list_escalations(
    request: Request,
    direction: Direction | None = None,
    limit: int = Query(100, ge=1, le=1000),
    principal: Principal = Depends(_government),
) -> list[EscalationRead]:
    """List the escalations this node sent and received."""
    return service.list_escalations(engine=_engine(request), direction=direction, limit=limit)


@router.get("/peers")
def peers(request: Request, principal: Principal = Depends(_government)) -> list[PeerRead]:
    """List the parent and children with last contact, lag, version and pending messages."""
    return service.peer_status(engine=_engine(request))


def _inbox(
    request: Request,
    principal: Principal,
    relation: Relation,
    receive: Callable[..., Receipt],
    message: BaseModel,
) -> Receipt:
    """Check the calling peer's relation, then hand the message to its receiver."""
    peer = _peer(request, principal, relation)
    return receive(
        engine=_engine(request),
        data_dir=_data(request),
        sender=peer["code"],
        message=message,
        principal=principal,
    )


@router.post("/inbox/tasks")
def inbox_task(
    request: Request, message: InboxTask, principal: Principal = Depends(current_principal)
) -> Receipt:
    """Receive a task from the parent node (peer token of the parent only)."""
    return _inbox(request, principal, Relation.parent, service.receive_task, message)


@router.post("/inbox/task-status")
def inbox_task_status(
    request: Request, message: InboxTaskStatus, principal: Principal = Depends(current_principal)
) -> Receipt:
    """Receive a status change of a task this node sent (peer token of a child only)."""
    return _inbox(request, principal, Relation.child, service.receive_task_status, message)


@router.post("/inbox/escalations")
def inbox_escalation(
    request: Request, message: InboxEscalation, principal: Principal = Depends(current_principal)
) -> Receipt:
    """Receive an escalation from a child node (peer token of a child only)."""
    return _inbox(request, principal, Relation.child, service.receive_escalation, message)
