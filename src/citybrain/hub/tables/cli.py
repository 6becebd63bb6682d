"""`citybrain tables`: register, load, inspect and query a node's departmental tables."""

from __future__ import annotations

import json
from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from citybrain.core.config import load_settings
from citybrain.core.db import check_connection, create_engine_for, upgrade
from citybrain.core.errors import BadInput
from citybrain.governance.principal import Principal, Role
from citybrain.hub.tables import service
from citybrain.hub.tables.files import guess_format
from citybrain.hub.tables.models import SqlJob, TableSpec

app = typer.Typer(no_args_is_help=True)
DATA = typer.Option(..., "--data", help="the node's data folder")


def _open(data: Path) -> tuple[Engine, Path]:
    settings = load_settings(data_dir=data)
    data.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(settings.effective_database_url)
    check_connection(engine)
    upgrade(engine)
    return engine, settings.data_dir


def _split(qualified: str) -> tuple[str, str]:
    department, _, name = qualified.partition("/")
    if not department or not name:
        raise BadInput(f"name a table as department/name, not {qualified!r}")
    return department, name


def _principal(org: str, role: str) -> Principal:
    """Return the principal a local command acts as (the data folder's holder chooses)."""
    try:
        return Principal(subject="cli", org=org, role=Role(role), issuer="local")
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise BadInput(f"unknown role {role!r}; roles are {roles}") from None


@app.command("register")
def register(
    spec_file: Path = typer.Argument(..., help="YAML or JSON table declaration"),
    data: Path = DATA,
) -> None:
    """Register a table from a YAML declaration (department, name, primary_key, columns)."""
    try:
        raw = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BadInput(f"cannot read {spec_file}: {exc}") from None
    try:
        spec = TableSpec.model_validate(raw)
    except ValueError as exc:
        raise BadInput(f"{spec_file} is not a valid table declaration: {exc}") from None
    engine, data_dir = _open(data)
    table = service.register_table(engine=engine, data_dir=data_dir, spec=spec)
    typer.echo(f"registered {table.department}/{table.name} at version {table.version}")


@app.command("load")
def load(
    table: str = typer.Argument(..., help="department/name"),
    file: Path = typer.Argument(..., help="a .csv, .jsonl or .parquet file"),
    data: Path = DATA,
) -> None:
    """Upsert a file into a table as one new version; print what was refused and why."""
    department, name = _split(table)
    fmt = guess_format(file.name)
    try:
        body = file.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {file}: {exc.strerror}") from None
    engine, data_dir = _open(data)
    result = service.load_file(
        engine=engine,
        data_dir=data_dir,
        department=department,
        name=name,
        data=body,
        fmt=fmt,
        source=file.name,
    )
    console = Console()
    console.print(
        f"{result.status}: {result.accepted} rows accepted, {result.rejected} refused, "
        f"version {result.version}"
    )
    for rejection in result.rejections[:20]:
        console.print(f"  line {rejection.row}: {rejection.reason}", highlight=False)


@app.command("list")
def list_tables(data: Path = DATA) -> None:
    """List the registered tables."""
    engine, data_dir = _open(data)
    out = Table("table", "owner", "key", "version", "rows")
    for t in service.list_tables(engine=engine, data_dir=data_dir):
        out.add_row(
            f"{t.department}/{t.name}",
            t.owner_department,
            ",".join(t.primary_key),
            str(t.version),
            f"{t.rows:,}",
        )
    Console().print(out)


@app.command("versions")
def versions(table: str = typer.Argument(..., help="department/name"), data: Path = DATA) -> None:
    """List a table's versions."""
    department, name = _split(table)
    engine, data_dir = _open(data)
    for v in service.list_versions(
        engine=engine, data_dir=data_dir, department=department, name=name
    ):
        typer.echo(f"{v.version}\t{v.timestamp.isoformat()}\t{v.operation}")


@app.command("records")
def records(
    table: str = typer.Argument(..., help="department/name"),
    data: Path = DATA,
    filter: list[str] = typer.Option([], "--filter", help="column==value (repeatable)"),
    fields: str | None = typer.Option(None, help="comma-separated columns"),
    limit: int = typer.Option(20, help="rows per page"),
    after: str | None = typer.Option(None, help="cursor printed by the previous page"),
    org: str | None = typer.Option(None, help="read as this organisation (default: the owner)"),
    role: str = typer.Option("steward", help="role to read as"),
    grant: str | None = typer.Option(None, help="the grant to read under"),
) -> None:
    """Print a page of records as JSON lines, then the cursor of the next page."""
    department, name = _split(table)
    engine, data_dir = _open(data)
    page = service.read_records(
        engine=engine,
        data_dir=data_dir,
        principal=_principal(org or department, role),
        grant_id=grant,
        department=department,
        name=name,
        filters=filter,
        fields=fields.split(",") if fields else None,
        after=after,
        limit=limit,
    )
    for record in page.records:
        typer.echo(json.dumps(record, ensure_ascii=False))
    if page.next_after:
        typer.echo(f"# next: --after {page.next_after}")


@app.command("sql")
def sql(
    query: str = typer.Argument(..., help="one SELECT"),
    data: Path = DATA,
    org: str = typer.Option(..., help="run as this organisation"),
    role: str = typer.Option("steward", help="role to run as"),
) -> None:
    """Run a read-only SQL query over the tables (department.name) and print the rows."""
    engine, data_dir = _open(data)
    result = service.run_sql(
        engine=engine, data_dir=data_dir, principal=_principal(org, role), job=SqlJob(sql=query)
    )
    typer.echo("\t".join(result.columns))
    for row in result.rows:
        typer.echo("\t".join("" if v is None else str(v) for v in row))
