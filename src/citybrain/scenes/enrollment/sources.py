"""The departmental tables the scene reads: in-memory snapshots, read only through the gate.

A parent's submission reads two tables and asks several questions; opening a Delta table and
a DuckDB connection for each costs tens of milliseconds, so each process keeps the current
version of a table as an Arrow table and looks for a newer version at most every
REFRESH_SECONDS. Every read still goes through `gate.authorize_read` (grant, scope, masks,
subject filter, the gate's own SQL) and leaves its audit record.

A submission's reads name one key (the parent's phone, the household, a person's ID number):
a scan of the snapshot costs milliseconds per table, so each snapshot also keeps, built on
first use, an index of row numbers per value of a key column. `gated_lookup` takes the rows
of one key from it and applies the gate's decision to each row (`ReadDecision.apply_record`:
row scope, subject filter, fields, masks), so the reader sees exactly what the gate's SQL
would show it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from deltalake import DeltaTable
from sqlalchemy import Engine

from citybrain.core.errors import NotFound
from citybrain.governance import gate
from citybrain.governance.audit import service as audit
from citybrain.governance.principal import Principal
from citybrain.hub.tables import service as tables

REFRESH_SECONDS = 2.0


@dataclass
class Snapshot:
    """A dataset's current version as this process holds it: a DuckDB table and its rows."""

    version: int
    checked: float
    relation: str  # the table holding this version in the process's DuckDB database
    owner: str
    columns: list[str]
    rows: pa.Table  # the same rows, for lookups by key
    indexes: dict[str, dict[Any, list[int]]] = field(default_factory=dict)

    def index(self, column: str) -> dict[Any, list[int]]:
        """Return the row numbers of each value of a column (built once per version)."""
        found = self.indexes.get(column)
        if found is None:
            found = {}
            for number, value in enumerate(self.rows.column(column).to_pylist()):
                if value is not None:  # SQL equality never matches NULL
                    found.setdefault(value, []).append(number)
            with _lock:
                found = self.indexes.setdefault(column, found)
        return found

    def lookup(self, column: str, value: Any) -> list[dict[str, Any]]:
        """Return the raw rows whose column equals the value."""
        numbers = self.index(column).get(value)
        if not numbers:
            return []
        # slices, not take: the snapshot's string columns may be string_view, which take lacks
        return [self.rows.slice(n, 1).to_pylist()[0] for n in numbers]


_cache: dict[tuple[str, str], Snapshot] = {}
_lock = threading.Lock()
# one in-memory DuckDB database per process: opening a connection costs tens of milliseconds,
# a cursor on this one almost nothing; each snapshot is a table of it
_db: duckdb.DuckDBPyConnection | None = None


def cursor() -> duckdb.DuckDBPyConnection:
    """Return a new cursor (its own connection) on the process's snapshot database."""
    global _db
    with _lock:
        if _db is None:
            _db = duckdb.connect()
        return _db.cursor()


def snapshot(*, engine: Engine, data_dir: Path, dataset: str) -> tuple[str, str]:
    """Return the table name of a dataset's current rows (kept per version) and its owner."""
    found = _current(engine=engine, data_dir=data_dir, dataset=dataset)
    return found.relation, found.owner


def _current(*, engine: Engine, data_dir: Path, dataset: str) -> Snapshot:
    key = (str(data_dir.resolve()), dataset)
    moment = time.monotonic()
    cached = _cache.get(key)
    if cached is not None and moment - cached.checked < REFRESH_SECONDS:
        return cached
    department, name = dataset.split("/", 1)
    path = tables.table_path(data_dir, department, name)
    try:
        dt = DeltaTable(str(path))
    except Exception:  # deltalake raises its own TableNotFoundError and plain errors
        raise NotFound(f"the table {dataset} is not on this node") from None
    version = dt.version()
    with _lock:
        cached = _cache.get(key)
        if cached is not None and cached.version == version:
            cached.checked = moment
            return cached
    described = tables.describe_table(
        engine=engine, data_dir=data_dir, department=department, name=name
    )
    rows = tables.snapshot(dt, described.columns).to_table()
    digest = hashlib.sha256("|".join(key).encode()).hexdigest()[:16]
    relation = f"snap_{digest}_{version}"
    con = cursor()
    try:
        con.register("__incoming", rows)
        con.execute(f'create or replace table "{relation}" as select * from __incoming')
        con.unregister("__incoming")
    finally:
        con.close()
    with _lock:
        old = _cache.get(key)
        made = _cache[key] = Snapshot(
            version, moment, relation, described.owner_department, rows.column_names, rows
        )
    if old is not None and old.relation != relation:
        drop = cursor()
        try:
            drop.execute(f'drop table if exists "{old.relation}"')
        finally:
            drop.close()
    return made


def current(*, engine: Engine, data_dir: Path, dataset: str) -> Snapshot:
    """Return the current snapshot of a dataset (for lookups by key behind a gate decision)."""
    return _current(engine=engine, data_dir=data_dir, dataset=dataset)


def forget(data_dir: Path) -> None:
    """Drop the cached snapshots of one node (tests that replace a node's files)."""
    root = str(data_dir.resolve())
    with _lock:
        gone = [k for k in _cache if k[0] == root]
        relations = [_cache.pop(k).relation for k in gone]
    if relations:
        con = cursor()
        try:
            for relation in relations:
                con.execute(f'drop table if exists "{relation}"')
        finally:
            con.close()


def record(
    *,
    data_dir: Path,
    decision: gate.ReadDecision,
    rows: int,
    detail: dict[str, Any],
    durable: bool,
) -> None:
    """Write the evidence of a gated read (as `gate.record_read` does), durable or not.

    A submission writes several records; only its last needs the fsync, which covers the
    lines written before it.
    """
    audit.append(
        data_dir=data_dir,
        principal=decision.principal,
        action="read",
        resource=decision.dataset_id,
        result="allowed",
        grant_id=decision.grant_id,
        purpose=decision.purpose,
        rows=rows,
        detail={"basis": decision.basis, **detail},
        durable=durable,
    )


def gated_rows(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal,
    dataset: str,
    where: str,
    params: list[Any],
    purpose: str,
    fields: list[str] | None = None,
    durable: bool = False,
) -> list[dict[str, Any]]:
    """Read the rows of a dataset the gate shows this principal, filtered by `where`.

    `where` applies to what the reader sees (masked values stay masked), like the records API;
    `fields` are the fields it uses, refused (403, audited) when outside the reader's grant.
    """
    found = _current(engine=engine, data_dir=data_dir, dataset=dataset)
    decision = gate.authorize_read(
        engine=engine,
        data_dir=data_dir,
        principal=principal,
        dataset_id=dataset,
        fields=fields,
        owner=found.owner,
    )
    con = cursor()
    try:
        relation, gate_params = decision.select_sql(f'"{found.relation}"', found.columns)
        fetched = con.sql(
            f"select * from ({relation}) where {where}", params=gate_params + params
        ).to_arrow_table()
        rows: list[dict[str, Any]] = fetched.to_pylist() if fetched is not None else []
    finally:
        con.close()
    record(
        data_dir=data_dir,
        decision=decision,
        rows=len(rows),
        detail={"scene": "enrollment", "purpose": purpose},
        durable=durable,
    )
    return rows


def gated_lookup(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal,
    dataset: str,
    key: str | None,
    value: Any,
    match: dict[str, Any],
    purpose: str,
    fields: list[str] | None = None,
    durable: bool = False,
) -> list[dict[str, Any]]:
    """Read the rows of one key value that the gate shows this principal, as `gated_rows` does.

    `key` is a raw column to look the rows up by; None looks them up by the decision's subject
    column (a citizen's own rows). `match` are equalities on what the reader sees (masked
    values stay masked), like `where` of `gated_rows`. Same decision, same audit record.
    """
    found = _current(engine=engine, data_dir=data_dir, dataset=dataset)
    decision = gate.authorize_read(
        engine=engine,
        data_dir=data_dir,
        principal=principal,
        dataset_id=dataset,
        fields=fields,
        owner=found.owner,
    )
    if key is None:
        if decision.subject is None:
            raise ValueError("a lookup by subject needs a decision with a subject filter")
        key, value = decision.subject
    rows: list[dict[str, Any]] = []
    for raw in found.lookup(key, value):
        shown = decision.apply_record(raw)
        if shown is not None and all(
            (seen := shown.get(k)) is not None and seen == v for k, v in match.items()
        ):
            rows.append(shown)
    record(
        data_dir=data_dir,
        decision=decision,
        rows=len(rows),
        detail={"scene": "enrollment", "purpose": purpose},
        durable=durable,
    )
    return rows
