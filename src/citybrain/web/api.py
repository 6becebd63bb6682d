"""HTTP routes of the dashboard's data: one aggregate for the whole screen."""

from __future__ import annotations

from fastapi import Depends, Query, Request
from sqlalchemy import Engine

from citybrain.core.config import Settings
from citybrain.core.routing import APIRouter
from citybrain.governance.identity.deps import require_role
from citybrain.governance.principal import GOVERNMENT_ROLES, Principal
from citybrain.web import service
from citybrain.web.models import DashboardSummary, PanelRead

router = APIRouter(prefix="/api/dashboard", tags=["dashboard"])
government = require_role(*GOVERNMENT_ROLES)


@router.get("/summary")
def summary(
    request: Request,
    tree: str = Query("u4ssc", max_length=32),
    cases: int = Query(20, ge=0, le=100),
    principal: Principal = Depends(government),
) -> DashboardSummary:
    """Return the node, its children with state and tree totals, event counts, newest cases."""
    engine: Engine = request.app.state.engine
    settings: Settings = request.app.state.settings
    return service.summary(
        engine=engine, settings=settings, principal=principal, tree=tree, cases=cases
    )


@router.get("/panels")
def panels(principal: Principal = Depends(government)) -> list[PanelRead]:
    """Return the panels the scene plugins add to the dashboard, in plugin order."""
    return service.scene_panels()
