"""HTTP routes of alerts: the rules, an evaluation on demand, the alerts fired."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Query, Request
from sqlalchemy import Engine

from citybrain.core.routing import APIRouter
from citybrain.decisions.alerts import service
from citybrain.decisions.alerts.models import AlertRead, EvaluationReport
from citybrain.governance.identity.deps import current_principal, require_role
from citybrain.governance.principal import Principal, Role

router = APIRouter(prefix="/api/alerts", tags=["alerts"])
EVALUATORS = Depends(require_role(Role.bureau_admin, Role.operator))


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


@router.get("/rules")
def list_rules(
    request: Request, principal: Principal = Depends(current_principal)
) -> list[dict[str, Any]]:
    """List the alert rules this node evaluates."""
    data_dir = request.app.state.settings.data_dir
    return [service.describe(r) for r in service.node_rules(data_dir)]


@router.post("/evaluate")
def evaluate(
    request: Request,
    principal: Principal = EVALUATORS,
) -> EvaluationReport:
    """Evaluate every rule now; new hits open cases, repeats are suppressed."""
    settings = request.app.state.settings
    return service.evaluate_once(
        engine=_engine(request), data_dir=settings.data_dir, settings=settings
    )


@router.get("")
def list_alerts(
    request: Request,
    rule: str | None = Query(None, max_length=64),
    limit: int = Query(100, ge=1, le=1000),
    principal: Principal = Depends(current_principal),
) -> list[AlertRead]:
    """List the alerts fired, newest first, with the cases they opened."""
    return service.list_alerts(engine=_engine(request), rule_id=rule, limit=limit)
