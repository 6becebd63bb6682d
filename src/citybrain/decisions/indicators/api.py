"""HTTP routes of the indicators; thin callers of its service."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from citybrain.core.config import Settings
from citybrain.core.errors import BadInput
from citybrain.core.routing import APIRouter
from citybrain.decisions.indicators import service
from citybrain.decisions.indicators.models import (
    ChildResult,
    Comparison,
    ComputeRequest,
    ComputeResult,
    Explanation,
    TreeRead,
    TreeSummary,
    ValueRead,
)
from citybrain.federation.rollup import RollupResult
from citybrain.governance.audit import service as audit
from citybrain.governance.identity.deps import require_role
from citybrain.governance.principal import GOVERNMENT_ROLES, Principal, Role

router = APIRouter(prefix="/api/indicators", tags=["indicators"])


class RollupRequest(BaseModel):
    """Which tree to roll up, and how long to wait for the children."""

    model_config = ConfigDict(extra="forbid")

    tree: str = Field(max_length=32)
    deadline: float = Field(5.0, gt=0, le=60)


government = require_role(*GOVERNMENT_ROLES)
computer = require_role(Role.bureau_admin, Role.operator)


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


@router.get("/trees")
def trees(_principal: Principal = Depends(government)) -> list[TreeSummary]:
    """List the indicator trees."""
    return service.list_trees()


@router.get("/trees/{tree}")
def tree(tree: str, _principal: Principal = Depends(government)) -> TreeRead:
    """Return a tree with its groups, items, weights, formulas and bands."""
    return service.describe_tree(tree=tree)


@router.post("/compute")
def compute(
    request: Request, job: ComputeRequest, principal: Principal = Depends(computer)
) -> ComputeResult:
    """Compute a tree now for this node's unit and its child units."""
    settings: Settings = request.app.state.settings
    data_dir: Path = settings.data_dir
    return service.compute(
        engine=_engine(request),
        data_dir=data_dir,
        code=settings.code,
        level=settings.level.value,
        tree=job.tree,
        period=job.period,
        principal=principal,
        trigger="api",
    )


@router.get("/export")
def export(
    request: Request,
    tree: str = Query(..., max_length=32),
    principal: Principal = Depends(government),
) -> list[ChildResult]:
    """Return this node's latest values of its own unit, as its parent rolls them up."""
    settings: Settings = request.app.state.settings
    service.describe_tree(tree=tree)
    out = service.export_results(engine=_engine(request), tree=tree, unit=settings.code)
    audit.append(
        data_dir=settings.data_dir,
        principal=principal,
        action="indicator.export",
        resource=f"indicator:{tree}",
        result="ok",
        rows=len(out),
    )
    return out


@router.post("/rollup")
def rollup(
    request: Request, job: RollupRequest, principal: Principal = Depends(computer)
) -> RollupResult:
    """Pull the children's values of a tree now and roll them up into this node's unit."""
    from citybrain.federation import rollup as federation_rollup

    settings: Settings = request.app.state.settings
    return federation_rollup.rollup(
        engine=_engine(request),
        settings=settings,
        tree=job.tree,
        principal=principal,
        deadline=job.deadline,
    )


@router.get("/values")
def values(
    request: Request,
    tree: str = Query(..., max_length=32),
    item: str | None = Query(None, max_length=64),
    unit: str | None = Query(None, max_length=15),
    period: str | None = Query(None, max_length=10),
    history: bool = Query(False, description="every computation, not only the latest"),
    limit: int = Query(1000, ge=1, le=10000),
    _principal: Principal = Depends(government),
) -> list[ValueRead]:
    """Return stored values of a tree, the latest per item, unit and period."""
    return service.values(
        engine=_engine(request),
        tree=tree,
        item=item,
        unit=unit,
        period=period,
        history=history,
        limit=limit,
    )


@router.get("/explain")
def explain(
    request: Request,
    tree: str = Query(..., max_length=32),
    item: str = Query("*", max_length=64, description="an item, a group, or * for the tree"),
    unit: str = Query(..., max_length=15),
    period: str | None = Query(None, max_length=10),
    _principal: Principal = Depends(government),
) -> Explanation:
    """Explain a score down to its inputs (formula, value, band, score, stars, children)."""
    return service.explain(engine=_engine(request), tree=tree, item=item, unit=unit, period=period)


@router.get("/compare")
def compare(
    request: Request,
    tree: str = Query(..., max_length=32),
    units: str = Query(..., max_length=3000, description="CODE,CODE,..."),
    item: str | None = Query(None, max_length=64),
    period: str | None = Query(None, max_length=10),
    _principal: Principal = Depends(government),
) -> Comparison:
    """Put units side by side on a tree's level-1 groups, or on one group's children."""
    codes = [u.strip() for u in units.split(",") if u.strip()]
    if not codes:
        raise BadInput("units is a comma-separated list of administrative codes")
    return service.compare(
        engine=_engine(request), tree=tree, units=codes, period=period, item=item
    )
