"""HTTP routes of the node domain: health, version, identity, children, datasets."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Path, Request, Response
from sqlalchemy import Engine

from citybrain import __version__
from citybrain.core.config import Settings
from citybrain.core.db import check_connection
from citybrain.core.errors import CityBrainError, Forbidden
from citybrain.core.routing import APIRouter
from citybrain.federation import outbox, trust
from citybrain.federation.models import Relation
from citybrain.governance.identity.deps import current_principal
from citybrain.governance.principal import Principal
from citybrain.node import service
from citybrain.node.models import (
    ChildRead,
    ChildRegistration,
    DatasetProfile,
    DatasetRead,
    NodeSummary,
)

router = APIRouter(tags=["node"])


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _tables_state(request: Request) -> str:
    state = getattr(request.app.state, "tables", "ready")
    if state is not None:
        return str(state)
    # a worker that is not the primary: the primary records the state in the data folder
    from citybrain.app import tables_state_path

    try:
        return tables_state_path(_settings(request).data_dir).read_text().strip() or "importing"
    except OSError:
        return "importing"


@router.get("/health")
def health(request: Request) -> dict[str, Any]:
    """Report liveness and whether the operational store answers."""
    settings = _settings(request)
    try:
        check_connection(_engine(request))
        database = "ok"
    except CityBrainError as exc:
        database = exc.message
    return {
        "status": "ok" if database == "ok" else "degraded",
        "code": settings.code,
        "level": settings.level.value,
        "database": database,
        # "importing" while the large synthetic tables load after start (app.py)
        "tables": _tables_state(request),
    }


@router.get("/version")
def version() -> dict[str, str]:
    """Report the versions of CityBrain and of the standards it speaks."""
    return {"citybrain": __version__, "ngsi-ld": "1.8.1", "open311": "GeoReport v2"}


@router.get("/api/node")
def node(request: Request) -> NodeSummary:
    """Describe this node: identity, tables and number of children."""
    return service.node_summary(engine=_engine(request))


@router.get("/api/nodes")
def children(request: Request) -> list[ChildRead]:
    """List the child nodes registered with this node."""
    return service.list_children(engine=_engine(request))


@router.post("/api/nodes/register")
def register(
    request: Request,
    response: Response,
    child: ChildRegistration,
    principal: Principal = Depends(current_principal),
) -> ChildRead:
    """Register (or refresh) a child node; the call must carry that child's peer token."""
    engine, settings = _engine(request), _settings(request)
    peer = trust.require_peer_relation(
        engine=engine, own_code=settings.code, principal=principal, relation=Relation.child
    )
    if child.code != peer["code"]:
        raise Forbidden(f"node {peer['code']} cannot register as {child.code}")
    if (
        child.public_key is not None
        and trust.parse_public_key(child.public_key) != (peer["public_key"])
    ):
        raise Forbidden(f"node {child.code} sent a public key other than the one registered for it")
    registered = service.register_child(engine=engine, settings=settings, child=child)
    trust.touch_peer(engine=engine, code=child.code, version=child.version, url=child.url)
    # the child is back: what waits for it goes out on the next round, not after its backoff
    outbox.nudge(engine=engine, peer_code=child.code)
    response.headers["CityBrain-Version"] = __version__
    return registered


@router.get("/api/datasets")
def datasets(request: Request) -> list[DatasetRead]:
    """List the departmental tables of this node."""
    return service.list_datasets(engine=_engine(request))


_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


@router.get("/api/datasets/{department}/{name}")
def dataset_profile(
    request: Request,
    department: str = Path(pattern=_NAME_PATTERN),
    name: str = Path(pattern=_NAME_PATTERN),
) -> DatasetProfile:
    """Profile one departmental table: rows, and non-null and distinct counts per column."""
    return service.dataset_profile(
        engine=_engine(request),
        data_dir=_settings(request).data_dir,
        department=department,
        name=name,
    )
