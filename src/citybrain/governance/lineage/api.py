"""HTTP routes of governance/lineage; thin callers of its service."""

from __future__ import annotations

from fastapi import Depends, Query, Request
from sqlalchemy import Engine

from citybrain.core.routing import APIRouter
from citybrain.governance.identity.deps import require_role
from citybrain.governance.lineage import service
from citybrain.governance.lineage.models import LineageGraph
from citybrain.governance.principal import GOVERNMENT_ROLES, Principal

router = APIRouter(prefix="/api", tags=["lineage"])
government = require_role(*GOVERNMENT_ROLES)


@router.get("/lineage/{dataset_id:path}")
def graph(
    request: Request,
    dataset_id: str,
    depth: int = Query(3, ge=1, le=service.MAX_DEPTH),
    _principal: Principal = Depends(government),
) -> LineageGraph:
    """Return the lineage graph around a dataset: its inputs and what is derived from it."""
    engine: Engine = request.app.state.engine
    return service.lineage_graph(engine=engine, dataset_id=dataset_id, depth=depth)
