"""HTTP routes of governance/catalog; thin callers of its service."""

from __future__ import annotations

from pathlib import Path as FsPath

from fastapi import Depends, Query, Request, Response
from sqlalchemy import Engine

from citybrain.core.config import Settings
from citybrain.core.datalevel import DataLevel
from citybrain.core.errors import BadInput, CityBrainError
from citybrain.core.routing import APIRouter
from citybrain.governance.audit import service as audit
from citybrain.governance.catalog import dcat, service
from citybrain.governance.catalog.models import (
    CatalogEntry,
    CatalogEntryCreate,
    CatalogPage,
    SharingType,
    Theme,
)
from citybrain.governance.identity.deps import require_role
from citybrain.governance.principal import GOVERNMENT_ROLES, Principal

router = APIRouter(tags=["catalog"])
government = require_role(*GOVERNMENT_ROLES)


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _data(request: Request) -> FsPath:
    data_dir: FsPath = request.app.state.settings.data_dir
    return data_dir


def _ready(request: Request) -> Engine:
    """Return the engine after the node's built-in entries exist (once per app)."""
    engine = _engine(request)
    if not getattr(request.app.state, "catalog_builtin_done", False):
        service.ensure_builtin_entries(engine=engine, data_dir=_data(request))
        request.app.state.catalog_builtin_done = True
    return engine


def node_name(settings: Settings) -> str:
    """Return the Chinese name of the unit the node serves, or its code."""
    from citybrain.geo import service as geo

    try:
        return f"{geo.get_unit(settings.code).name_zh}城市大脑"
    except CityBrainError:
        return f"CityBrain {settings.code}"


@router.get("/catalog/dcat", response_class=Response)
def export_dcat(
    request: Request,
    format: dcat.DcatFormat = Query(dcat.DcatFormat.jsonld, description="jsonld or turtle"),
) -> Response:
    """Export the catalog as DCAT-AP 3 (JSON-LD or Turtle): metadata of every dataset."""
    engine = _ready(request)
    settings: Settings = request.app.state.settings
    graph = dcat.catalog_graph(
        entries=service.list_entries(engine=engine),
        node_code=settings.code,
        node_name=node_name(settings),
        base_url=settings.effective_public_url,
    )
    return Response(
        content=dcat.serialise(graph, format).encode("utf-8"),
        media_type=dcat.MEDIA_TYPES[format],
    )


@router.get("/api/catalog")
def search(
    request: Request,
    q: str | None = Query(None, max_length=200, description="words in id, title, description"),
    owner: str | None = Query(None, max_length=64),
    theme: Theme | None = None,
    level: DataLevel | None = None,
    sharing_type: SharingType | None = None,
    open_data: bool | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=1_000_000),
    _principal: Principal = Depends(government),
) -> CatalogPage:
    """Search the catalog (any government principal: metadata is not governed data)."""
    return service.search(
        engine=_ready(request),
        text=q,
        owner=owner,
        theme=theme.value if theme else None,
        level=level.value if level else None,
        sharing_type=sharing_type.value if sharing_type else None,
        open_data=open_data,
        limit=limit,
        offset=offset,
    )


@router.get("/api/catalog/{dataset_id:path}")
def get_entry(
    request: Request, dataset_id: str, _principal: Principal = Depends(government)
) -> CatalogEntry:
    """Return one catalog entry."""
    if len(dataset_id) > 200:
        raise BadInput("a dataset id has at most 200 characters")
    return service.get_entry(engine=_ready(request), dataset_id=dataset_id)


@router.post("/api/catalog", status_code=201)
def register(
    request: Request, entry: CatalogEntryCreate, principal: Principal = Depends(government)
) -> CatalogEntry:
    """Register an entry (the owner department's steward or the bureau)."""
    created = service.register_entry(engine=_ready(request), entry=entry, principal=principal)
    audit.append(
        data_dir=_data(request),
        principal=principal,
        action="catalog.register",
        resource=created.id,
        result="ok",
        detail={"level": created.data_level.value, "sharing_type": created.sharing_type.value},
    )
    return created


@router.put("/api/catalog/{dataset_id:path}")
def replace(
    request: Request,
    dataset_id: str,
    entry: CatalogEntryCreate,
    principal: Principal = Depends(government),
) -> CatalogEntry:
    """Replace an entry (the owner department's steward or the bureau)."""
    updated = service.update_entry(
        engine=_ready(request), dataset_id=dataset_id, entry=entry, principal=principal
    )
    audit.append(
        data_dir=_data(request),
        principal=principal,
        action="catalog.update",
        resource=updated.id,
        result="ok",
        detail={"level": updated.data_level.value, "sharing_type": updated.sharing_type.value},
    )
    return updated
