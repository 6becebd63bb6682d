"""HTTP routes of departmental tables: register, load, versions, records, SQL jobs."""

from __future__ import annotations

from pathlib import Path as FsPath

from fastapi import Depends, Path, Query, Request
from sqlalchemy import Engine

from citybrain.core.errors import BadInput
from citybrain.core.routing import APIRouter
from citybrain.governance.identity.deps import current_principal
from citybrain.governance.principal import Principal
from citybrain.hub.tables import service
from citybrain.hub.tables.files import FileFormat
from citybrain.hub.tables.models import (
    NAME,
    LoadResult,
    RecordPage,
    SqlJob,
    SqlResult,
    TableRead,
    TableSpec,
    VersionRead,
)

router = APIRouter(prefix="/api", tags=["tables"])
_MEDIA = {
    "text/csv": FileFormat.csv,
    "application/x-ndjson": FileFormat.jsonl,
    "application/jsonl": FileFormat.jsonl,
    "application/vnd.apache.parquet": FileFormat.parquet,
    "application/octet-stream": FileFormat.parquet,
}


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _data(request: Request) -> FsPath:
    data_dir: FsPath = request.app.state.settings.data_dir
    return data_dir


@router.post("/tables", status_code=201)
def register(
    request: Request, spec: TableSpec, principal: Principal = Depends(current_principal)
) -> TableRead:
    """Register a departmental table with its schema and primary key."""
    return service.register_table(
        engine=_engine(request), data_dir=_data(request), spec=spec, principal=principal
    )


@router.get("/tables")
def list_tables(request: Request) -> list[TableRead]:
    """List the departmental tables of this node."""
    return service.list_tables(engine=_engine(request), data_dir=_data(request))


@router.get("/tables/{department}/{name}")
def describe(
    request: Request,
    department: str = Path(pattern=NAME),
    name: str = Path(pattern=NAME),
) -> TableRead:
    """Describe one table: schema, key, current version and rows."""
    return service.describe_table(
        engine=_engine(request), data_dir=_data(request), department=department, name=name
    )


@router.post("/tables/{department}/{name}/loads")
async def load(
    request: Request,
    department: str = Path(pattern=NAME),
    name: str = Path(pattern=NAME),
    source: str = Query("upload", max_length=256, description="name of the file, for the log"),
    principal: Principal = Depends(current_principal),
) -> LoadResult:
    """Upsert a CSV, JSON Lines or Parquet body by key as one new version."""
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media not in _MEDIA:
        raise BadInput(
            f"unsupported content type {media or 'none'!r}; send text/csv, "
            "application/x-ndjson or application/vnd.apache.parquet"
        )
    body = await request.body()
    return service.load_file(
        engine=_engine(request),
        data_dir=_data(request),
        department=department,
        name=name,
        data=body,
        fmt=_MEDIA[media],
        source=source,
        principal=principal,
    )


@router.get("/tables/{department}/{name}/versions")
def versions(
    request: Request,
    department: str = Path(pattern=NAME),
    name: str = Path(pattern=NAME),
) -> list[VersionRead]:
    """List the versions of a table, newest first."""
    return service.list_versions(
        engine=_engine(request), data_dir=_data(request), department=department, name=name
    )


@router.get("/tables/{department}/{name}/records")
def records(
    request: Request,
    department: str = Path(pattern=NAME),
    name: str = Path(pattern=NAME),
    filter: list[str] = Query(default_factory=list, max_length=20, description="column==value"),
    fields: str | None = Query(None, max_length=2000, description="comma-separated columns"),
    after: str | None = Query(None, max_length=2000, description="cursor of the next page"),
    limit: int = Query(100, ge=1, le=10_000),
    version: int | None = Query(None, ge=0, description="read an older version"),
    grant: str | None = Query(None, max_length=64, description="the grant to read under"),
    principal: Principal = Depends(current_principal),
) -> RecordPage:
    """Read records in key order with filters, projection and keyset pagination."""
    wanted = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
    return service.read_records(
        engine=_engine(request),
        data_dir=_data(request),
        department=department,
        name=name,
        filters=filter,
        fields=wanted,
        after=after,
        limit=limit,
        version=version,
        principal=principal,
        grant_id=grant,
    )


@router.post("/sql")
def sql(
    request: Request, job: SqlJob, principal: Principal = Depends(current_principal)
) -> SqlResult:
    """Run one read-only SQL query over the tables (department.name), parameters bound."""
    return service.run_sql(
        engine=_engine(request), data_dir=_data(request), principal=principal, job=job
    )
