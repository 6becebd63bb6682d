"""Commands of governance/catalog; thin callers of its service."""

from __future__ import annotations

import json
from pathlib import Path

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from citybrain.core.config import load_settings
from citybrain.core.db import check_connection, create_engine_for, upgrade
from citybrain.core.errors import BadInput
from citybrain.governance.audit import service as audit
from citybrain.governance.catalog import dcat, service
from citybrain.governance.catalog.api import node_name
from citybrain.governance.catalog.models import CatalogEntryCreate
from citybrain.governance.principal import SYSTEM

app = typer.Typer(no_args_is_help=True)
DATA = typer.Option(..., "--data", help="the node's data folder")


def _open(data: Path) -> tuple[Engine, Path]:
    settings = load_settings(data_dir=data)
    data.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(settings.effective_database_url)
    check_connection(engine)
    upgrade(engine)
    service.ensure_builtin_entries(engine=engine, data_dir=settings.data_dir)
    return engine, settings.data_dir


@app.command("list")
def list_entries(
    data: Path = DATA,
    q: str | None = typer.Option(None, "--q", "--text", help="words to look for"),
    owner: str | None = typer.Option(None, help="owner department"),
    theme: str | None = typer.Option(None, help="theme, e.g. population"),
    level: str | None = typer.Option(None, help="data level, e.g. important"),
    sharing_type: str | None = typer.Option(None, help="unconditional, conditional, not_shared"),
    open_data: bool | None = typer.Option(None, "--open-data/--not-open-data"),
    limit: int = typer.Option(100, min=1, max=500),
    fmt: str = typer.Option("table", "--format", help="table or json"),
) -> None:
    """List or search the catalog entries."""
    engine, _ = _open(data)
    page = service.search(
        engine=engine,
        text=q,
        owner=owner,
        theme=theme,
        level=level,
        sharing_type=sharing_type,
        open_data=open_data,
        limit=limit,
    )
    if fmt == "json":
        typer.echo(
            json.dumps([e.model_dump(mode="json") for e in page.entries], ensure_ascii=False)
        )
        return
    out = Table("dataset", "title", "owner", "level", "sharing", "open")
    for e in page.entries:
        out.add_row(
            e.id,
            e.title_zh or e.title_en or "",
            e.owner_department,
            e.data_level.value,
            e.sharing_type.value,
            "yes" if e.open_data else "",
        )
    Console().print(out)
    typer.echo(f"{page.total} entries")


@app.command("search")
def search_entries(
    text: str = typer.Argument(..., help="words to look for"),
    data: Path = DATA,
) -> None:
    """Search entries by words in id, titles, description and keywords."""
    list_entries(
        data=data,
        q=text,
        owner=None,
        theme=None,
        level=None,
        sharing_type=None,
        open_data=None,
        limit=100,
        fmt="table",
    )


@app.command("show")
def show(
    dataset_id: str = typer.Argument(..., help="DEPT/NAME or ngsi-ld:TYPE"), data: Path = DATA
) -> None:
    """Print one entry as JSON."""
    engine, _ = _open(data)
    entry = service.get_entry(engine=engine, dataset_id=dataset_id)
    typer.echo(json.dumps(entry.model_dump(mode="json"), ensure_ascii=False, indent=2))


@app.command("register")
def register_file(
    file: Path = typer.Argument(..., help="YAML or JSON entry"), data: Path = DATA
) -> None:
    """Register an entry from a YAML file, or replace the entry of the same id."""
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BadInput(f"cannot read {file}: {exc}") from None
    try:
        entry = CatalogEntryCreate.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "entry"
        raise BadInput(f"{file} is not a valid catalog entry: {where}: {first['msg']}") from None
    engine, data_dir = _open(data)
    if service.find_entry(engine=engine, dataset_id=entry.id) is None:
        saved = service.register_entry(engine=engine, entry=entry, principal=SYSTEM)
        action, verb = "catalog.register", "registered"
    else:
        saved = service.update_entry(
            engine=engine, dataset_id=entry.id, entry=entry, principal=SYSTEM
        )
        action, verb = "catalog.update", "updated"
    audit.append(data_dir=data_dir, principal=SYSTEM, action=action, resource=saved.id, result="ok")
    typer.echo(f"{verb} {saved.id} ({saved.data_level.value}, {saved.sharing_type.value})")


@app.command("export-dcat")
def export_dcat(
    data: Path = DATA,
    out: Path = typer.Option(..., "--out", help="file to write"),
    fmt: dcat.DcatFormat = typer.Option(dcat.DcatFormat.jsonld, "--format"),
) -> None:
    """Write the catalog as DCAT-AP 3 (JSON-LD or Turtle)."""
    engine, _ = _open(data)
    settings = load_settings(data_dir=data)
    graph = dcat.catalog_graph(
        entries=service.list_entries(engine=engine),
        node_code=settings.code,
        node_name=node_name(settings),
        base_url=settings.effective_public_url,
    )
    try:
        out.write_text(dcat.serialise(graph, fmt), encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot write {out}: {exc.strerror}") from None
    typer.echo(f"wrote {len(graph)} triples to {out}")


def register(root: typer.Typer) -> None:
    """Attach this part's command groups to the root command."""
    root.add_typer(app, name="catalog", help="The data catalog: entries, search, DCAT-AP.")
