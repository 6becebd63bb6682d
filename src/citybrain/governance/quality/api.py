"""HTTP routes of governance/quality; thin callers of its service."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, Query, Request
from sqlalchemy import Engine

from citybrain.core.routing import APIRouter
from citybrain.governance.identity.deps import require_role
from citybrain.governance.principal import GOVERNMENT_ROLES, Principal, Role
from citybrain.governance.quality import service
from citybrain.governance.quality.models import (
    DatasetQuality,
    DepartmentScore,
    QualityRun,
    Scorecard,
)

router = APIRouter(prefix="/api/quality", tags=["quality"])
government = require_role(*GOVERNMENT_ROLES)
scorer = require_role(Role.bureau_admin, Role.steward)


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


@router.post("/run")
def run(
    request: Request, job: QualityRun, principal: Principal = Depends(scorer)
) -> list[Scorecard]:
    """Score one table, or all the caller may score (the bureau, or the owner's steward)."""
    data_dir: Path = request.app.state.settings.data_dir
    return service.run_quality(
        engine=_engine(request),
        data_dir=data_dir,
        principal=principal,
        dataset_id=job.dataset_id,
        all_tables=job.all,
    )


@router.get("/departments")
def departments(
    request: Request, _principal: Principal = Depends(government)
) -> list[DepartmentScore]:
    """Return each department's mean scores over its datasets' latest scorecards."""
    return service.department_scorecard(engine=_engine(request))


@router.get("/datasets/{dataset_id:path}")
def dataset(
    request: Request,
    dataset_id: str,
    limit: int = Query(30, ge=1, le=1000, description="scorecards of the history"),
    _principal: Principal = Depends(government),
) -> DatasetQuality:
    """Return the latest scorecard of a dataset and its history, newest first."""
    latest = service.latest(engine=_engine(request), dataset_id=dataset_id)
    return DatasetQuality(
        dataset_id=dataset_id,
        latest=latest,
        history=service.history(engine=_engine(request), dataset_id=dataset_id, limit=limit),
    )
