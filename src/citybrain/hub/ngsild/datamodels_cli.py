"""`citybrain datamodels`: list Smart Data Models, validate entities, seed a node's hub."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from citybrain.core.config import load_settings
from citybrain.core.db import check_connection, create_engine_for, upgrade
from citybrain.core.errors import BadInput
from citybrain.hub.ngsild import datamodels, service
from citybrain.hub.ngsild.entities import expand_entity
from citybrain.hub.ngsild.jsonld import ContextStore
from citybrain.synth.entities import node_entities

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_models(
    model: str | None = typer.Option(None, help="describe one model's attributes"),
) -> None:
    """List the models the bundled metadata knows, or describe one."""
    if model is None:
        names = datamodels.model_names()
        typer.echo("\n".join(names))
        typer.echo(f"{len(names)} models")
        return
    spec = datamodels.get_model(model)
    table = Table(title=f"{spec.name} ({spec.subject} {spec.version})")
    for column in ("attribute", "type", "NGSI-LD", "format/enum", "required"):
        table.add_column(column)
    for name, a in sorted(spec.attributes.items()):
        detail = a.format or (", ".join(map(str, a.enum[:6])) if a.enum else "")
        required = "yes" if name in spec.required else ""
        table.add_row(name, a.json_type or "", a.ngsi_type or "", detail, required)
    Console().print(table)


@app.command("validate")
def validate(
    file: Path = typer.Argument(..., help="JSON file: one entity or a list"),
    model: str | None = typer.Option(None, help="model to check against (default: the type)"),
) -> None:
    """Validate entities against their Smart Data Model; exit 1 if any has an error."""
    try:
        body = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"cannot read {file} as JSON: {exc}") from None
    entities = body if isinstance(body, list) else [body]
    errors = 0
    for position, entity in enumerate(entities, start=1):
        label = entity.get("id", f"#{position}") if isinstance(entity, dict) else f"#{position}"
        for issue in datamodels.validate(entity, model):
            errors += issue.severity == "error"
            typer.echo(f"{label}: {issue.severity}: {issue.message}")
    typer.echo(f"{len(entities)} entities, {errors} errors")
    if errors:
        raise typer.Exit(1)


@app.command("seed")
def seed(
    data: Path = typer.Option(..., "--data", help="the node's data folder"),
    synth: Path = typer.Option(..., help="the node's synthetic folder (OUT/<code>)"),
) -> None:
    """Load Smart-Data-Model entities for the synthetic devices and buildings into the hub."""
    settings = load_settings(data_dir=data)
    data.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(settings.effective_database_url)
    check_connection(engine)
    upgrade(engine)
    terms = ContextStore().term_map(None)
    batch: list[dict[str, object]] = []
    total = 0
    for entity in node_entities(synth):
        batch.append(expand_entity(entity, terms))
        if len(batch) == 1000:
            service.upsert_many(engine=engine, tenant="", entities=batch, mode="upsert")
            total += len(batch)
            batch = []
    service.upsert_many(engine=engine, tenant="", entities=batch, mode="upsert")
    typer.echo(f"{total + len(batch)} entities upserted")
