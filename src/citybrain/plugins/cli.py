"""`citybrain plugins`: what plugins are installed and whether they loaded."""

from __future__ import annotations

import json
from enum import StrEnum

import typer
from rich.console import Console
from rich.table import Table

from citybrain.plugins.manager import get_plugins

app = typer.Typer(no_args_is_help=True)


class OutputFormat(StrEnum):
    """Output formats of listing commands."""

    table = "table"
    json = "json"


@app.command("list")
def list_plugins(
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table or json"),
) -> None:
    """List installed plugins with their manifests, or why they were refused."""
    records = get_plugins().records
    if fmt is OutputFormat.json:
        rows = [
            {
                "domain": r.domain,
                "module": r.module,
                "loaded": r.loaded,
                "error": r.error,
                "manifest": r.manifest.model_dump(mode="json") if r.manifest else None,
            }
            for r in records
        ]
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table("domain", "name", "version", "kind", "owner", "max level", "datasets", "status")
    for r in records:
        m = r.manifest
        table.add_row(
            r.domain,
            m.name if m else "",
            m.version if m else "",
            m.kind if m else "",
            m.owner_department if m else "",
            m.max_data_level if m else "",
            ", ".join(m.datasets) if m else "",
            "loaded" if r.loaded else f"refused: {r.error}",
        )
    Console().print(table)
