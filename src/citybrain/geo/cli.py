"""`citybrain geo`: list and show the administrative units of Shandong."""

from __future__ import annotations

import json
from enum import StrEnum

import typer
from rich.console import Console
from rich.table import Table

from citybrain.geo import service
from citybrain.geo.models import Level

app = typer.Typer(no_args_is_help=True)


class OutputFormat(StrEnum):
    """Output formats of listing commands."""

    table = "table"
    json = "json"


@app.command("list")
def list_units(
    level: Level = typer.Option(..., help="province, city, county, street, community or grid"),
    parent: str | None = typer.Option(None, help="only units under this code"),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table or json"),
) -> None:
    """List administrative units of one level."""
    units = service.list_units(level, parent)
    if fmt is OutputFormat.json:
        typer.echo(
            json.dumps([u.model_dump(mode="json") for u in units], ensure_ascii=False, indent=1)
        )
        return
    table = Table("code", "name_zh", "name_en", "level", "parent", "area km²")
    for u in units:
        table.add_row(
            u.code, u.name_zh, u.name_en, u.level.value, u.parent or "", f"{u.area_km2:,.1f}"
        )
    Console().print(table)


@app.command("show")
def show(code: str = typer.Argument(..., help="administrative code")) -> None:
    """Print one unit as JSON."""
    typer.echo(json.dumps(service.get_unit(code).model_dump(mode="json"), ensure_ascii=False))
