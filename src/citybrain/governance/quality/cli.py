"""Commands of governance/quality; thin callers of its service."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from citybrain.core.config import load_settings
from citybrain.core.db import check_connection, create_engine_for, upgrade
from citybrain.governance.principal import SYSTEM
from citybrain.governance.quality import service

app = typer.Typer(no_args_is_help=True)
DATA = typer.Option(..., "--data", help="the node's data folder")


def _open(data: Path) -> tuple[Engine, Path]:
    settings = load_settings(data_dir=data)
    data.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(settings.effective_database_url)
    check_connection(engine)
    upgrade(engine)
    return engine, settings.data_dir


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


@app.command("run")
def run(
    data: Path = DATA,
    dataset: str | None = typer.Option(None, "--dataset", help="DEPARTMENT/NAME"),
    all_tables: bool = typer.Option(False, "--all", help="every table of the node"),
) -> None:
    """Score one table or all of them and keep the scorecards."""
    engine, data_dir = _open(data)
    cards = service.run_quality(
        engine=engine,
        data_dir=data_dir,
        principal=SYSTEM,
        dataset_id=dataset,
        all_tables=all_tables,
    )
    out = Table("dataset", "rows", "complete", "valid", "unique", "timely", "consistent", "overall")
    for c in cards:
        out.add_row(
            c.dataset_id,
            f"{c.rows:,}",
            _fmt(c.completeness),
            _fmt(c.validity),
            _fmt(c.uniqueness),
            _fmt(c.timeliness),
            _fmt(c.consistency),
            _fmt(c.overall),
        )
    Console().print(out)


@app.command("show")
def show(dataset: str = typer.Argument(..., help="DEPARTMENT/NAME"), data: Path = DATA) -> None:
    """Print the latest scorecard of a dataset (JSON) and its history."""
    engine, _ = _open(data)
    latest = service.latest(engine=engine, dataset_id=dataset)
    typer.echo(json.dumps(latest.model_dump(mode="json"), ensure_ascii=False, indent=2))
    for card in service.history(engine=engine, dataset_id=dataset, limit=20):
        typer.echo(f"{card.at.isoformat()}\t{card.overall:.2f}\tversion {card.version}")


@app.command("departments")
def departments(data: Path = DATA) -> None:
    """Print each department's mean scores."""
    engine, _ = _open(data)
    out = Table(
        "department", "datasets", "complete", "valid", "unique", "timely", "consistent", "overall"
    )
    for d in service.department_scorecard(engine=engine):
        out.add_row(
            d.department,
            str(d.datasets),
            _fmt(d.completeness),
            _fmt(d.validity),
            _fmt(d.uniqueness),
            _fmt(d.timeliness),
            _fmt(d.consistency),
            _fmt(d.overall),
        )
    Console().print(out)


def register(root: typer.Typer) -> None:
    """Attach this part's command groups to the root command."""
    root.add_typer(app, name="quality", help="Data quality scorecards per dataset and department.")
