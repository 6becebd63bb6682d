"""Node identity, the dataset registry and child registration: the storage door of this domain."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from citybrain import __version__
from citybrain.core.config import Settings
from citybrain.core.errors import BadInput, NotFound, Unprocessable
from citybrain.geo import service as geo
from citybrain.node.models import (
    ChildRead,
    ChildRegistration,
    ColumnProfile,
    DatasetProfile,
    DatasetRead,
    NodeSummary,
    child_nodes,
    datasets,
    node_identity,
)


def now() -> datetime:
    """Return the current time in UTC (one place, so tests can reason about it)."""
    return datetime.now(UTC)


def validate_identity(*, code: str, level: str) -> None:
    """Refuse a code that is not a unit of Shandong, or a level that does not match it."""
    unit = geo.get_unit(code)
    if unit.level.value not in ("province", "city", "county"):
        raise BadInput(
            f"code {code} is a {unit.level.value}; a node serves a province, city or county"
        )
    if unit.level.value != level:
        raise BadInput(f"code {code} ({unit.name_en}) is a {unit.level.value}, not a {level}")


def init_node(*, engine: Engine, settings: Settings) -> None:
    """Record this node's identity, keeping its creation time across restarts."""
    validate_identity(code=settings.code, level=settings.level.value)
    started = now()
    values = {
        "code": settings.code,
        "level": settings.level.value,
        "parent_url": settings.parent_url,
        "public_url": settings.effective_public_url,
        "version": __version__,
        "started_at": started,
    }
    with engine.begin() as conn:
        row = conn.execute(select(node_identity.c.code)).first()
        if row is None:
            conn.execute(insert(node_identity).values(id=1, created_at=started, **values))
        else:
            if row.code != settings.code:
                raise BadInput(
                    f"the data folder belongs to node {row.code}, not {settings.code}; "
                    "use another --data folder"
                )
            conn.execute(update(node_identity).where(node_identity.c.id == 1).values(**values))


def node_code(*, engine: Engine) -> str:
    """Return the code of the node whose store this is, or refuse a store never started."""
    try:
        with engine.connect() as conn:
            row = conn.execute(select(node_identity.c.code)).first()
    except SQLAlchemyError:
        row = None
    if row is None:
        raise BadInput(
            "this data folder holds no node yet; start it once with citybrain serve "
            "(or run citybrain db upgrade and serve)"
        )
    return str(row.code)


def scan_datasets(*, engine: Engine, data_dir: Path) -> list[DatasetRead]:
    """Register every `<data_dir>/<department>/<table>.parquet` with its row count and schema."""
    found: dict[tuple[str, str], dict[str, object]] = {}
    for path in sorted(data_dir.glob("*/*.parquet")):
        meta = pq.read_metadata(path)
        schema = pq.read_schema(path)
        found[(path.parent.name, path.stem)] = {
            "path": str(path.relative_to(data_dir)),
            "rows": meta.num_rows,
            "bytes": path.stat().st_size,
            "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
        }
    stamp = now()
    with engine.begin() as conn:
        existing = {(r.department, r.name) for r in conn.execute(select(datasets))}
        for (department, name), values in found.items():
            if (department, name) in existing:
                conn.execute(
                    update(datasets)
                    .where(datasets.c.department == department, datasets.c.name == name)
                    .values(updated_at=stamp, **values)
                )
            else:
                conn.execute(
                    insert(datasets).values(
                        department=department,
                        name=name,
                        registered_at=stamp,
                        updated_at=stamp,
                        **values,
                    )
                )
        for department, name in existing - found.keys():
            # a table whose file is gone is no longer held by this node
            conn.execute(
                delete(datasets).where(datasets.c.department == department, datasets.c.name == name)
            )
    return list_datasets(engine=engine)


def list_datasets(*, engine: Engine) -> list[DatasetRead]:
    """Return the departmental tables this node holds."""
    with engine.connect() as conn:
        rows = conn.execute(select(datasets).order_by(datasets.c.department, datasets.c.name))
        return [DatasetRead.model_validate(r, from_attributes=True) for r in rows]


def dataset_profile(
    *, engine: Engine, data_dir: Path, department: str, name: str
) -> DatasetProfile:
    """Profile one table with DuckDB: row count, and per column its non-null and distinct counts."""
    with engine.connect() as conn:
        row = conn.execute(
            select(datasets).where(datasets.c.department == department, datasets.c.name == name)
        ).first()
    if row is None:
        raise NotFound(f"this node holds no table {department}/{name}")
    path = data_dir / row.path
    con = duckdb.connect()
    try:
        columns = [c["name"] for c in row.columns]
        # names come from the registered schema, quoted as identifiers; the path is a parameter
        parts = ", ".join(
            f'count("{c}"), approx_count_distinct("{c}")'
            for c in (n.replace('"', '""') for n in columns)
        )
        values = con.execute(
            f"select count(*), {parts} from read_parquet(?)", [str(path)]
        ).fetchone()
    finally:
        con.close()
    assert values is not None
    return DatasetProfile(
        department=department,
        name=name,
        rows=int(values[0]),
        columns=[
            ColumnProfile(
                name=c,
                type=row.columns[i]["type"],
                non_null=int(values[1 + 2 * i]),
                distinct_approx=int(values[2 + 2 * i]),
            )
            for i, c in enumerate(columns)
        ],
    )


def register_child(*, engine: Engine, settings: Settings, child: ChildRegistration) -> ChildRead:
    """Record (or refresh) a child node, after checking it really is one of ours."""
    unit = geo.get_unit(child.code)
    if unit.level.value != child.level:
        raise Unprocessable(f"code {child.code} is a {unit.level.value}, not a {child.level}")
    if unit.parent != settings.code:
        raise Unprocessable(
            f"{child.code} ({unit.name_en}) belongs to {unit.parent}, "
            f"not to this node {settings.code}"
        )
    stamp = now()
    summary = {
        "datasets": [d.model_dump() for d in child.datasets],
        "capabilities": child.capabilities,
    }
    values = {
        "level": child.level,
        "url": child.url,
        "version": child.version,
        "last_seen_at": stamp,
        "last_summary": summary,
    }
    with engine.begin() as conn:
        exists = conn.execute(
            select(child_nodes.c.code).where(child_nodes.c.code == child.code)
        ).first()
        if exists:
            conn.execute(
                update(child_nodes).where(child_nodes.c.code == child.code).values(**values)
            )
        else:
            conn.execute(insert(child_nodes).values(code=child.code, registered_at=stamp, **values))
    return next(c for c in list_children(engine=engine) if c.code == child.code)


def list_children(*, engine: Engine) -> list[ChildRead]:
    """Return the registered children with how long ago each was last heard from."""
    stamp = now()
    with engine.connect() as conn:
        rows = list(conn.execute(select(child_nodes).order_by(child_nodes.c.code)))
    result = []
    for r in rows:
        unit = geo.get_unit(r.code)
        seen = r.last_seen_at if r.last_seen_at.tzinfo else r.last_seen_at.replace(tzinfo=UTC)
        registered = (
            r.registered_at if r.registered_at.tzinfo else r.registered_at.replace(tzinfo=UTC)
        )
        result.append(
            ChildRead(
                code=r.code,
                name_zh=unit.name_zh,
                name_en=unit.name_en,
                level=r.level,
                url=r.url,
                version=r.version,
                registered_at=registered,
                last_seen_at=seen,
                lag_seconds=round((stamp - seen).total_seconds(), 3),
                last_summary=r.last_summary,
            )
        )
    return result


def node_summary(*, engine: Engine) -> NodeSummary:
    """Return this node's identity, its tables and how many children it has."""
    with engine.connect() as conn:
        ident = conn.execute(select(node_identity)).one()
        n_children = len(conn.execute(select(child_nodes.c.code)).all())
    unit = geo.get_unit(ident.code)
    started = ident.started_at if ident.started_at.tzinfo else ident.started_at.replace(tzinfo=UTC)
    return NodeSummary(
        code=ident.code,
        name_zh=unit.name_zh,
        name_en=unit.name_en,
        level=ident.level,
        parent_url=ident.parent_url,
        public_url=ident.public_url,
        version=ident.version,
        started_at=started,
        datasets=list_datasets(engine=engine),
        children=n_children,
    )
