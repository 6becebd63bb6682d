"""HTTP routes of the enrollment scene: thin callers of the scene's service functions."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from citybrain.core.config import Settings
from citybrain.core.errors import Forbidden
from citybrain.core.routing import APIRouter
from citybrain.federation import trust
from citybrain.federation.models import Relation
from citybrain.governance.identity.deps import current_principal
from citybrain.governance.principal import Principal, Role
from citybrain.scenes.enrollment import appeals, run, service, stats
from citybrain.scenes.enrollment import season as seasons

router = APIRouter(prefix="/api/enrollment", tags=["enrollment"])
ID = r"^[A-Za-z0-9_-]{1,40}$"


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _data(request: Request) -> Path:
    return _settings(request).data_dir


class SeasonOpen(BaseModel):
    """Opening a season: the year and, optionally, the window."""

    model_config = ConfigDict(extra="forbid")

    year: int | None = Field(None, ge=2000, le=2100)
    opens_at: datetime | None = None
    deadline: datetime | None = None


class SeasonStep(BaseModel):
    """The next step of a season."""

    model_config = ConfigDict(extra="forbid")

    step: Literal["close", "commit", "draw", "publish"]


@router.post("/seasons", status_code=201)
def open_season(
    request: Request, body: SeasonOpen, principal: Principal = Depends(current_principal)
) -> seasons.SeasonRead:
    """Open this node's season (needs the Education Bureau's grants; 422 naming the missing)."""
    return seasons.open_season(
        engine=_engine(request),
        data_dir=_data(request),
        code=_settings(request).code,
        principal=principal,
        year=body.year,
        opens_at=body.opens_at,
        deadline=body.deadline,
    )


@router.get("/season")
def current_season(
    request: Request, principal: Principal = Depends(current_principal)
) -> seasons.SeasonRead:
    """Return this node's current season: window, state, and the draws' commitments."""
    _ = principal
    return seasons.current_season(engine=_engine(request), code=_settings(request).code)


@router.get("/seasons/{season_id}")
def get_season(
    request: Request,
    season_id: str = PathParam(pattern=ID),
    principal: Principal = Depends(current_principal),
) -> seasons.SeasonRead:
    """Return one season."""
    _ = principal
    return seasons.get_season(engine=_engine(request), season_id=season_id)


@router.post("/seasons/{season_id}/steps")
def season_step(
    request: Request,
    body: SeasonStep,
    season_id: str = PathParam(pattern=ID),
    principal: Principal = Depends(current_principal),
) -> seasons.SeasonRead:
    """Move the season on: close, commit (the seeds), draw, publish (409 out of order)."""
    engine, data = _engine(request), _data(request)
    if body.step == "close":
        return run.close(engine=engine, data_dir=data, principal=principal, season_id=season_id)
    if body.step == "commit":
        return run.commit(
            engine=engine,
            data_dir=data,
            code=_settings(request).code,
            principal=principal,
            season_id=season_id,
        )
    if body.step == "draw":
        return run.run_draw(engine=engine, data_dir=data, principal=principal, season_id=season_id)
    return run.publish(engine=engine, data_dir=data, principal=principal, season_id=season_id)


@router.get("/household")
def household(
    request: Request, principal: Principal = Depends(current_principal)
) -> service.HouseholdRead:
    """The signed-in parent's children (masked, from the household register) and zones."""
    return service.household_view(
        engine=_engine(request),
        data_dir=_data(request),
        code=_settings(request).code,
        principal=principal,
    )


@router.post("/applications", status_code=201)
def submit(
    request: Request,
    body: service.ApplicationIn,
    principal: Principal = Depends(current_principal),
) -> service.ApplicationRead:
    """Submit an application; the answer carries the priority class and the reason at once."""
    return service.submit(
        engine=_engine(request),
        data_dir=_data(request),
        code=_settings(request).code,
        principal=principal,
        body=body,
    )


@router.get("/applications")
def list_applications(
    request: Request,
    season: str | None = Query(None, pattern=ID),
    county: str | None = Query(None, pattern=r"^\d{6}$"),
    status: Literal["eligible", "not_eligible", "placed", "unplaced"] | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=10_000_000),
    principal: Principal = Depends(current_principal),
) -> list[service.ApplicationRead]:
    """The parent's own applications, or (Education Bureau) the season's, filtered."""
    return service.list_applications(
        engine=_engine(request),
        principal=principal,
        season_id=season,
        county=county,
        status=status,
        limit=limit,
        offset=offset,
    )


@router.get("/applications/{application_id}")
def get_application(
    request: Request,
    application_id: str = PathParam(pattern=ID),
    principal: Principal = Depends(current_principal),
) -> service.ApplicationRead:
    """One application with its checks, class, reason and (once published) result."""
    return service.get_application(
        engine=_engine(request), principal=principal, application_id=application_id
    )


@router.post("/applications/{application_id}/appeals", status_code=201)
def file_appeal(
    request: Request,
    body: appeals.AppealIn,
    application_id: str = PathParam(pattern=ID),
    principal: Principal = Depends(current_principal),
) -> appeals.AppealRead:
    """Appeal a criterion of the parent's own application that was answered no."""
    return appeals.file_appeal(
        engine=_engine(request),
        data_dir=_data(request),
        principal=principal,
        application_id=application_id,
        body=body,
    )


@router.get("/appeals")
def list_appeals(
    request: Request,
    status: Literal["pending", "upheld", "dismissed"] | None = None,
    application: str | None = Query(None, pattern=ID),
    principal: Principal = Depends(current_principal),
) -> list[appeals.AppealRead]:
    """The parent's appeals, or (Education Bureau) every appeal, filtered."""
    return appeals.list_appeals(
        engine=_engine(request), principal=principal, status=status, application_id=application
    )


@router.post("/appeals/{appeal_id}/decision")
def decide_appeal(
    request: Request,
    body: appeals.DecisionIn,
    appeal_id: str = PathParam(pattern=ID),
    principal: Principal = Depends(current_principal),
) -> appeals.AppealRead:
    """A reviewer upholds (re-classifying the child) or dismisses an appeal."""
    return appeals.decide(
        engine=_engine(request),
        data_dir=_data(request),
        code=_settings(request).code,
        principal=principal,
        appeal_id=appeal_id,
        body=body,
    )


@router.get("/notices")
def notices(
    request: Request, principal: Principal = Depends(current_principal)
) -> list[service.Notice]:
    """The signed-in parent's notices, newest first."""
    return service.list_notices(engine=_engine(request), principal=principal)


@router.get("/stats")
def node_stats(request: Request, principal: Principal = Depends(current_principal)) -> Any:
    """Statistics per county and for this node (at the province: rolled up from the cities)."""
    stats.require_reader(principal)
    return stats.node_stats(
        engine=_engine(request), data_dir=_data(request), code=_settings(request).code
    )


@router.get("/stats/export")
def export_stats(request: Request, principal: Principal = Depends(current_principal)) -> Any:
    """This node's statistics for its parent (counts only), to its node token or staff."""
    if principal.role is Role.node:
        trust.require_peer_relation(
            engine=_engine(request),
            own_code=_settings(request).code,
            principal=principal,
            relation=Relation.parent,
        )
    else:
        stats.require_reader(principal)
    return stats.node_stats(
        engine=_engine(request), data_dir=_data(request), code=_settings(request).code
    )


@router.post("/stats/rollup")
def rollup(request: Request, principal: Principal = Depends(current_principal)) -> Any:
    """Ask every child node for its statistics now (bureau_admin)."""
    if principal.role is not Role.bureau_admin:
        raise Forbidden("a roll-up is started by a bureau_admin")
    return stats.rollup(engine=_engine(request), settings=_settings(request), principal=principal)
