"""Departmental tables as Delta Lake tables: register, load (upsert by key), version, read.

`read_records` and `run_sql` are the only ways records leave a table; the governance gate
wraps exactly these two functions.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError
from sqlalchemy import Engine, insert, select

from citybrain.core.errors import BadInput, Conflict, Forbidden, NotFound, Unprocessable
from citybrain.governance import gate
from citybrain.governance.audit import service as audit
from citybrain.governance.catalog import service as catalog
from citybrain.governance.lineage import service as lineage
from citybrain.governance.principal import Principal, Role
from citybrain.hub.tables.files import FileFormat, read_source
from citybrain.hub.tables.models import (
    ColumnSpec,
    ColumnType,
    LoadResult,
    RecordPage,
    Rejection,
    SqlJob,
    SqlResult,
    TableRead,
    TableSpec,
    VersionRead,
    table_datasets,
    table_loads,
)

ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    ColumnType.string: pa.string(),
    ColumnType.int64: pa.int64(),
    ColumnType.float64: pa.float64(),
    ColumnType.bool: pa.bool_(),
    ColumnType.date: pa.date32(),
    ColumnType.timestamp: pa.timestamp("us", tz="UTC"),
}
MAX_REJECTIONS_KEPT = 1000
WRITER_ROLES = frozenset({Role.steward, Role.service})
_INT = r"^[+-]?\d{1,18}$"
_FLOAT = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_FILTER = re.compile(r"^([a-z][a-z0-9_]*)(==|!=|<=|>=|<|>|=\^)(.*)$", re.S)
_PARAM = re.compile(r"\?|\$\d+")
_SQL_OPS = {"==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def table_path(data_dir: Path, department: str, name: str) -> Path:
    """Return the folder of a Delta table inside the node's data folder."""
    return data_dir / "tables" / department / name


def arrow_schema(columns: list[ColumnSpec]) -> pa.Schema:
    """Return the Arrow schema of a table's columns."""
    return pa.schema([pa.field(c.name, ARROW_TYPES[c.type]) for c in columns])


def _spec_row(engine: Engine, department: str, name: str) -> Any:
    with engine.connect() as conn:
        row = conn.execute(
            select(table_datasets).where(
                table_datasets.c.department == department, table_datasets.c.name == name
            )
        ).first()
    if row is None:
        raise NotFound(f"no departmental table {department}/{name}")
    return row


def _open(data_dir: Path, department: str, name: str, version: int | None = None) -> DeltaTable:
    path = table_path(data_dir, department, name)
    try:
        return DeltaTable(str(path), version=version)
    except TableNotFoundError:
        raise NotFound(f"the files of table {department}/{name} are missing") from None
    except Exception as exc:  # deltalake raises plain exceptions for a version it does not have
        if version is not None:
            raise NotFound(f"table {department}/{name} has no version {version}") from exc
        raise


def snapshot(dt: DeltaTable, columns: list[ColumnSpec]) -> ds.Dataset:
    """Return the Parquet files of a table version as an Arrow dataset with the declared schema.

    delta-rs writes no deletion vectors, so a version's files are exactly its rows; reading
    them as plain Parquet is what Spark or any other engine does with the same snapshot.
    """
    files = dt.file_uris()
    # delta-rs merges write strings as string_view; take the files' own schema so filters
    # pushed down by DuckDB compare like with like
    schema = pq.read_schema(files[0].removeprefix("file://")) if files else arrow_schema(columns)
    return ds.dataset(files, format="parquet", schema=schema)


def check_writer(principal: Principal | None, department: str) -> None:
    """Refuse a write to a department's table by anyone but its staff or the bureau.

    None is a local process run by whoever holds the data folder (the node's administrator).
    """
    if principal is None or principal.role is Role.bureau_admin:
        return
    if principal.org != department or principal.role not in WRITER_ROLES:
        raise Forbidden(
            f"only a steward or service account of {department} (or the bureau) may "
            f"change its tables; the token is {principal.org}/{principal.role.value}"
        )


def register_table(
    *, engine: Engine, data_dir: Path, spec: TableSpec, principal: Principal | None = None
) -> TableRead:
    """Register a table and create its empty Delta table (version 0)."""
    check_writer(principal, spec.department)
    path = table_path(data_dir, spec.department, spec.name)
    with engine.begin() as conn:
        exists = conn.execute(
            select(table_datasets.c.name).where(
                table_datasets.c.department == spec.department, table_datasets.c.name == spec.name
            )
        ).first()
        if exists:
            raise Conflict(f"table {spec.department}/{spec.name} is registered already")
        if path.exists():
            # files left by an earlier, unregistered attempt; the registry is the truth
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_deltalake(str(path), arrow_schema(spec.columns).empty_table(), mode="error")
        conn.execute(
            insert(table_datasets).values(
                department=spec.department,
                name=spec.name,
                owner_department=spec.owner_department or spec.department,
                description=spec.description,
                primary_key=spec.primary_key,
                columns=[c.model_dump(mode="json") for c in spec.columns],
                created_at=datetime.now(UTC),
            )
        )
    audit.append(
        data_dir=data_dir,
        principal=principal,
        action="table.register",
        resource=f"{spec.department}/{spec.name}",
        result="ok",
    )
    # a new table is governed at once: its built-in (or default) catalog entry is made now
    catalog.ensure_builtin_entries(engine=engine, data_dir=data_dir)
    return describe_table(
        engine=engine, data_dir=data_dir, department=spec.department, name=spec.name
    )


def _table_read(row: Any, dt: DeltaTable) -> TableRead:
    rows = snapshot(dt, [ColumnSpec.model_validate(c) for c in row.columns]).count_rows()
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return TableRead(
        department=row.department,
        name=row.name,
        owner_department=row.owner_department,
        description=row.description,
        primary_key=row.primary_key,
        columns=[ColumnSpec.model_validate(c) for c in row.columns],
        version=dt.version(),
        rows=rows,
        created_at=created,
    )


def describe_table(*, engine: Engine, data_dir: Path, department: str, name: str) -> TableRead:
    """Return a table's declaration, current version and row count."""
    row = _spec_row(engine, department, name)
    return _table_read(row, _open(data_dir, department, name))


def list_tables(*, engine: Engine, data_dir: Path) -> list[TableRead]:
    """Return every registered table."""
    with engine.connect() as conn:
        rows = list(
            conn.execute(
                select(table_datasets).order_by(table_datasets.c.department, table_datasets.c.name)
            )
        )
    return [_table_read(r, _open(data_dir, r.department, r.name)) for r in rows]


def _typed(
    column: pa.ChunkedArray | pa.Array, spec: ColumnSpec
) -> tuple[pa.Array, np.ndarray[Any, Any]]:
    """Convert a text column to the declared type; return the values and a mask of bad rows."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    target = ARROW_TYPES[spec.type]
    if arr.type == target:
        return arr, np.zeros(len(arr), dtype=bool)
    if not pa.types.is_string(arr.type):
        try:
            return arr.cast(target), np.zeros(len(arr), dtype=bool)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise Unprocessable(
                f"column {spec.name} is {arr.type} in the file but {spec.type.value} in the table"
            ) from None
    text = pc.utf8_trim_whitespace(arr)
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    present = pc.is_valid(text)
    if spec.type is ColumnType.string:
        return text, np.zeros(len(arr), dtype=bool)
    if spec.type in (ColumnType.int64, ColumnType.float64):
        ok = pc.match_substring_regex(text, _INT if spec.type is ColumnType.int64 else _FLOAT)
        good = pc.and_kleene(present, ok)
        clean = pc.if_else(good, text, pa.scalar(None, pa.string()))
        bad = pc.and_(present, pc.invert(pc.fill_null(ok, False)))
        return clean.cast(target), np.asarray(bad.to_numpy(zero_copy_only=False), dtype=bool)
    if spec.type is ColumnType.bool:
        lower = pc.utf8_lower(text)
        truthy = pc.is_in(lower, pa.array(["true", "1", "yes"]))
        falsy = pc.is_in(lower, pa.array(["false", "0", "no"]))
        ok = pc.or_(truthy, falsy)
        values = pc.if_else(pc.and_kleene(present, ok), truthy, pa.scalar(None, pa.bool_()))
        bad = pc.and_(present, pc.invert(ok))
        return values, np.asarray(bad.to_numpy(zero_copy_only=False), dtype=bool)
    if spec.type is ColumnType.date:
        parsed = pc.strptime(text, format="%Y-%m-%d", unit="s", error_is_null=True)
        bad = pc.and_(present, pc.is_null(parsed))
        return parsed.cast(pa.date32()), np.asarray(bad.to_numpy(zero_copy_only=False), dtype=bool)
    # timestamps: ISO 8601, with an offset or Z; without one they are taken as UTC
    out: list[datetime | None] = []
    bad_rows = np.zeros(len(text), dtype=bool)
    for i, value in enumerate(text.to_pylist()):
        if value is None:
            out.append(None)
            continue
        try:
            stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
            out.append(stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC))
        except ValueError:
            out.append(None)
            bad_rows[i] = True
    return pa.array(out, target), bad_rows


def _validate(
    table: pa.Table, lines: list[int], columns: list[ColumnSpec], primary_key: list[str]
) -> tuple[pa.Table, list[Rejection]]:
    """Type every column, refuse rows with bad values, missing keys or repeated keys."""
    n = table.num_rows
    reasons: list[list[str]] = [[] for _ in range(n)]
    typed: dict[str, pa.Array] = {}
    for spec in columns:
        values, bad = _typed(table.column(spec.name), spec)
        for i in np.flatnonzero(bad):
            reasons[i].append(f"{spec.name} is not a valid {spec.type.value}")
        required = spec.name in primary_key or not spec.nullable
        if required:
            missing = (
                np.asarray(pc.is_null(values).to_numpy(zero_copy_only=False), dtype=bool) & ~bad
            )
            for i in np.flatnonzero(missing):
                reasons[i].append(f"{spec.name} is required")
        typed[spec.name] = values
    candidate = pa.table(typed, schema=arrow_schema(columns))
    ok = np.array([not r for r in reasons], dtype=bool)
    # a key may appear once per load; later repeats are refused, not silently merged
    keys = candidate.select(primary_key).to_pylist()
    seen: set[tuple[Any, ...]] = set()
    for position, key in enumerate(keys):
        if not ok[position]:
            continue
        k = tuple(key.values())
        if k in seen:
            reasons[position].append(f"duplicate key {list(k)} in this file")
            ok[position] = False
        seen.add(k)
    rejections = [
        Rejection(row=lines[i], reason="; ".join(reasons[i])) for i in np.flatnonzero(~ok)
    ]
    return candidate.filter(pa.array(ok)), rejections


def load_file(
    *,
    engine: Engine,
    data_dir: Path,
    department: str,
    name: str,
    data: bytes,
    fmt: FileFormat,
    source: str,
    principal: Principal | None = None,
) -> LoadResult:
    """Upsert a file's valid rows by primary key as one new table version; report the rest."""
    check_writer(principal, department)
    row = _spec_row(engine, department, name)
    columns = [ColumnSpec.model_validate(c) for c in row.columns]
    primary_key: list[str] = list(row.primary_key)
    digest = hashlib.sha256(data).hexdigest()
    stamp = datetime.now(UTC)
    load_id = uuid.uuid4().hex
    with engine.connect() as conn:
        previous = conn.execute(
            select(table_loads)
            .where(
                table_loads.c.department == department,
                table_loads.c.name == name,
                table_loads.c.sha256 == digest,
                table_loads.c.status == "applied",
            )
            .limit(1)
        ).first()
    if previous is not None:
        # the same bytes were applied before: an upsert by key would change nothing
        return LoadResult(
            id=load_id,
            department=department,
            name=name,
            source=source,
            format=fmt.value,
            status="unchanged",
            version=previous.version,
            accepted=0,
            rejected=0,
            rejections=[],
            created_at=stamp,
        )
    raw, lines, rejections = read_source(data, fmt, [c.name for c in columns])
    accepted, invalid = _validate(raw, lines, columns, primary_key)
    rejections = sorted(rejections + invalid, key=lambda r: r.row)
    version: int | None = None
    status = "rejected"
    if accepted.num_rows:
        dt = _open(data_dir, department, name)
        predicate = " AND ".join(f"t.{k} = s.{k}" for k in primary_key)
        (
            dt.merge(source=accepted, predicate=predicate, source_alias="s", target_alias="t")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )
        version = dt.version()
        status = "applied"
    with engine.begin() as conn:
        conn.execute(
            insert(table_loads).values(
                id=load_id,
                department=department,
                name=name,
                source=source[:256],
                format=fmt.value,
                sha256=digest,
                status=status,
                version=version,
                accepted=accepted.num_rows,
                rejected=len(rejections),
                rejections=[r.model_dump() for r in rejections[:MAX_REJECTIONS_KEPT]],
                created_at=stamp,
            )
        )
    if version is not None:
        catalog.mark_updated(engine=engine, dataset_id=f"{department}/{name}", at=stamp)
        lineage.record_lineage(
            engine=engine,
            output=f"{department}/{name}",
            inputs=[f"file:{''.join(ch for ch in source if ch.isprintable())[:250] or 'upload'}"],
            activity="table.load",
            detail={"version": version, "rows": accepted.num_rows},
            at=stamp,
        )
    audit.append(
        data_dir=data_dir,
        principal=principal,
        action="table.load",
        resource=f"{department}/{name}",
        result=status,
        rows=accepted.num_rows,
        detail={"version": version, "rejected": len(rejections), "sha256": digest[:16]},
    )
    return LoadResult(
        id=load_id,
        department=department,
        name=name,
        source=source,
        format=fmt.value,
        status=status,
        version=version,
        accepted=accepted.num_rows,
        rejected=len(rejections),
        rejections=rejections[:MAX_REJECTIONS_KEPT],
        created_at=stamp,
    )


def list_versions(
    *, engine: Engine, data_dir: Path, department: str, name: str
) -> list[VersionRead]:
    """Return the versions of a table, newest first."""
    _spec_row(engine, department, name)
    history = _open(data_dir, department, name).history()
    result = []
    for item in history:
        metrics = item.get("operationMetrics") or {}
        result.append(
            VersionRead(
                version=int(item.get("version", 0)),
                timestamp=datetime.fromtimestamp(int(item.get("timestamp", 0)) / 1000, UTC),
                operation=str(item.get("operation", "")),
                metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
            )
        )
    return result


def _literal(value: str, spec: ColumnSpec) -> Any:
    """Turn a filter or cursor value into the column's Python type, or refuse it."""
    try:
        if spec.type is ColumnType.int64:
            return int(value)
        if spec.type is ColumnType.float64:
            return float(value)
        if spec.type is ColumnType.bool:
            if value.lower() not in ("true", "false"):
                raise ValueError(value)
            return value.lower() == "true"
        if spec.type is ColumnType.date:
            return date.fromisoformat(value)
        if spec.type is ColumnType.timestamp:
            stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    except ValueError:
        raise BadInput(f"{value!r} is not a valid {spec.type.value} for {spec.name}") from None
    return value


def _json_value(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def encode_cursor(values: list[Any]) -> str:
    """Encode the key of the last row returned as an opaque cursor."""
    raw = json.dumps([_json_value(v) for v in values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, keys: list[ColumnSpec]) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != len(keys):
            raise ValueError("length")
    except (ValueError, json.JSONDecodeError):
        raise BadInput("the 'after' cursor is not one this node issued") from None
    return [_literal(str(v), spec) for v, spec in zip(values, keys, strict=True)]


def read_records(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal,
    department: str,
    name: str,
    filters: list[str] | None = None,
    fields: list[str] | None = None,
    after: str | None = None,
    limit: int = 100,
    version: int | None = None,
    grant_id: str | None = None,
) -> RecordPage:
    """Read records in key order with filters, projection and keyset pagination, gated.

    Filters apply to what the reader sees (masked values stay masked), so a grantee cannot
    probe hidden values through them.
    """
    if not 1 <= limit <= 10_000:
        raise BadInput("limit must be between 1 and 10000")
    row = _spec_row(engine, department, name)
    all_columns = {c["name"]: ColumnSpec.model_validate(c) for c in row.columns}
    unknown = [f for f in fields or [] if f not in all_columns]
    if unknown:
        raise BadInput(f"unknown field(s) {', '.join(unknown)} in table {department}/{name}")
    decision = gate.authorize_read(
        engine=engine,
        data_dir=data_dir,
        principal=principal,
        dataset_id=f"{department}/{name}",
        fields=fields,
        grant_id=grant_id,
        owner=str(row.owner_department),
    )
    columns = {v.name: all_columns[v.name] for v in decision.visible(list(all_columns))}
    primary_key: list[str] = list(row.primary_key)
    wanted = fields or list(columns)
    conditions: list[str] = []
    params: list[Any] = []
    for raw in filters or []:
        match = _FILTER.match(raw)
        if not match or match.group(1) not in columns:
            # the value is not echoed: filters often carry personal data
            named = match.group(1) if match else raw.split("=", 1)[0][:64]
            raise BadInput(
                f"bad filter on {named!r}: use column==value (or != < <= > >=, =^ for a "
                "prefix) on a column you may read"
            )
        column, op, value = match.groups()
        spec = columns[column]
        if op == "==" and decision.outside_scope(column, value):
            reason = (
                f"{column}=={value} is outside the row scope of grant {decision.grant_id} "
                f"({', '.join(decision.row_scope[column])})"
            )
            audit.append(
                data_dir=data_dir,
                principal=principal,
                action="read",
                resource=f"{department}/{name}",
                result="refused",
                grant_id=decision.grant_id,
                detail={"reason": reason},
            )
            raise Forbidden(reason)
        if op == "=^":
            if spec.type is not ColumnType.string:
                raise BadInput(
                    f"prefix filters need a string column; {column} is {spec.type.value}"
                )
            conditions.append(f'starts_with("{column}", ?)')
            params.append(value)
        else:
            conditions.append(f'"{column}" {_SQL_OPS[op]} ?')
            params.append(_literal(value, spec))
    key_specs = [all_columns[k] for k in primary_key]
    # paging runs on the raw key, carried as hidden columns; a reader who sees the key masked
    # or not at all gets a sealed cursor, so raw key values never reach them
    sealed = decision.restricted
    keys = [f"__hidden_{i}" for i in range(len(primary_key))]
    if after:
        raw_values = gate.unseal_cursor(data_dir, after) if sealed else None
        if sealed and raw_values is not None:
            after = encode_cursor(raw_values)
        key_values = _decode_cursor(after, key_specs)
        left = ", ".join(keys)
        right = ", ".join("?" for _ in keys)
        conditions.append(f"({left}) > ({right})" if len(keys) > 1 else f"{keys[0]} > ?")
        params.extend(key_values)
    dt = _open(data_dir, department, name, version)
    gated, gate_params = decision.select_sql("t", list(all_columns), hidden=primary_key)
    query = (
        "select "
        + ", ".join([f'"{c}"' for c in wanted] + keys)
        + f" from ({gated})"
        + (" where " + " and ".join(conditions) if conditions else "")
        + " order by "
        + ", ".join(keys)
        + f" limit {limit + 1}"
    )
    con = duckdb.connect()
    try:
        con.register("t", snapshot(dt, list(all_columns.values())))
        result = con.sql(query, params=gate_params + params).to_arrow_table()
    finally:
        con.close()
    rows = result.to_pylist()
    more = len(rows) > limit
    rows = rows[:limit]
    next_after = None
    if more and rows:
        last = [_json_value(rows[-1][k]) for k in keys]
        next_after = gate.seal_cursor(data_dir, last) if sealed else encode_cursor(last)
    records = [{k: _json_value(r[k]) for k in wanted} for r in rows]
    gate.record_read(
        data_dir=data_dir,
        decision=decision,
        rows=len(records),
        detail={"version": dt.version(), "filters": len(filters or [])},
    )
    return RecordPage(records=records, next_after=next_after, version=dt.version())


def run_sql(*, engine: Engine, data_dir: Path, principal: Principal, job: SqlJob) -> SqlResult:
    """Run one read-only SELECT over the tables it names (department.name), each gated."""
    try:
        statements = duckdb.extract_statements(job.sql)
    except duckdb.Error as exc:
        raise BadInput(f"the SQL does not parse: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise BadInput("a SQL job is exactly one statement")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise BadInput("a SQL job may only read: use SELECT (or WITH ... SELECT)")
    try:
        # the name finder cannot bind parameters; NULL in their place names the same tables
        named = duckdb.get_table_names(_PARAM.sub("NULL", job.sql), qualified=True)
    except duckdb.Error as exc:
        raise BadInput(f"the SQL does not parse: {str(exc).splitlines()[0]}") from None
    known = {f"{t.department}.{t.name}": t for t in list_tables(engine=engine, data_dir=data_dir)}
    used = []
    for ref in sorted(named):
        parts = [p.strip('"') for p in ref.split(".")]
        qualified = ".".join(parts[-2:])
        if qualified not in known:
            raise BadInput(
                f"the SQL job names {ref!r}, which is not a table of this node "
                "(name tables as department.name)"
            )
        used.append(known[qualified])
    decisions = [
        (
            table,
            gate.authorize_read(
                engine=engine,
                data_dir=data_dir,
                principal=principal,
                dataset_id=f"{table.department}/{table.name}",
                action="sql",
                owner=table.owner_department,
            ),
        )
        for table in used
    ]
    con = duckdb.connect()
    try:
        for table, decision in decisions:
            con.execute(f'create schema if not exists "{table.department}"')
            alias = f"__{table.department}__{table.name}"
            dt = _open(data_dir, table.department, table.name)
            con.register(alias, snapshot(dt, table.columns))
            gated, gate_params = decision.select_sql(f'"{alias}"', [c.name for c in table.columns])
            # a view cannot take parameters: the row scope's values are inlined as literals
            view = _inline(gated, gate_params)
            con.execute(f'create view "{table.department}"."{table.name}" as {view}')
        # jobs see the gated views only: no files, no extensions, no settings changes
        con.execute("set enable_external_access = false")
        con.execute("set lock_configuration = true")
        try:
            cursor = con.execute(job.sql, job.params)
            names = [d[0] for d in cursor.description or []]
            fetched = cursor.fetchmany(job.limit + 1)
        except duckdb.Error as exc:
            raise BadInput(f"the SQL job failed: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    rows = [[_json_value(v) for v in r] for r in fetched[: job.limit]]
    for _table, decision in decisions:
        gate.record_read(
            data_dir=data_dir,
            decision=decision,
            rows=len(rows),
            action="sql",
            detail={"sql_sha256": hashlib.sha256(job.sql.encode()).hexdigest()[:16]},
        )
    return SqlResult(columns=names, rows=rows, truncated=len(fetched) > job.limit)


def evaluate(
    *, engine: Engine, data_dir: Path, tables: list[str], sql: str, params: list[Any]
) -> list[tuple[Any, ...]]:
    """Run a system query whose answer is not records (a yes/no, a score) over raw tables.

    Only the gate's verification service, quality scoring and the grid workers' sign-in (which
    finds the worker of a phone the caller proved to hold) call this; they return answers,
    never departmental records, and their callers audit them.
    """
    con = duckdb.connect()
    try:
        for dataset in tables:
            department, name = dataset.split("/", 1)
            row = _spec_row(engine, department, name)
            columns = [ColumnSpec.model_validate(c) for c in row.columns]
            con.execute(f'create schema if not exists "{department}"')
            con.register(
                f"__{department}__{name}", snapshot(_open(data_dir, department, name), columns)
            )
            con.execute(
                f'create view "{department}"."{name}" as select * from "__{department}__{name}"'
            )
        con.execute("set enable_external_access = false")
        return [tuple(r) for r in con.execute(sql, params).fetchall()]
    finally:
        con.close()


def _inline(sql: str, params: list[Any]) -> str:
    """Replace ? placeholders of a gated relation with quoted string literals."""
    pieces = sql.split("?")
    if len(pieces) != len(params) + 1:
        raise ValueError("placeholder count does not match the parameters")
    out = pieces[0]
    for value, rest in zip(params, pieces[1:], strict=True):
        out += "'" + str(value).replace("'", "''") + "'" + rest
    return out
