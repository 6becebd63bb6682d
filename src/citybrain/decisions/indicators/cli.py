"""Commands of the indicators; thin callers of its service."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from citybrain.core.config import Settings, load_settings
from citybrain.core.db import check_connection, create_engine_for, upgrade
from citybrain.decisions.indicators import service
from citybrain.hub.tables.importer import import_synth_tables
from citybrain.node import service as node_service

app = typer.Typer(no_args_is_help=True)
DATA = typer.Option(..., "--data", help="the node's data folder")
CODE = typer.Option(None, "--code", help="the node's code (default: CITYBRAIN_CODE or 370000)")
LEVEL = typer.Option(None, "--level", help="province, city or county (default: CITYBRAIN_LEVEL)")
JSON_OUT = typer.Option(False, "--json", help="print JSON")


def _open(data: Path, code: str | None, level: str | None) -> tuple[Engine, Settings]:
    settings = load_settings(data_dir=data, code=code, level=level)
    data.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(settings.effective_database_url)
    check_connection(engine)
    upgrade(engine)
    node_service.init_node(engine=engine, settings=settings)
    # a synthetic node's Parquet files become tables, as when it is served
    import_synth_tables(engine=engine, data_dir=settings.data_dir)
    return engine, settings


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


@app.command("trees")
def trees(as_json: bool = JSON_OUT) -> None:
    """List the indicator trees."""
    found = service.list_trees()
    if as_json:
        typer.echo(json.dumps([t.model_dump() for t in found], ensure_ascii=False, indent=2))
        return
    out = Table("tree", "name", "groups", "items", "with formula")
    for t in found:
        out.add_row(t.id, t.name_en, str(t.groups), str(t.items), str(t.items_with_formula))
    Console().print(out)


@app.command("compute")
def compute(
    tree: str = typer.Argument(..., help="tree id (citybrain indicators trees)"),
    data: Path = DATA,
    code: str | None = CODE,
    level: str | None = LEVEL,
    period: str | None = typer.Option(None, "--period", help="YYYY, YYYY-MM, YYYY-MM-DD, YYYY-Qn"),
    as_json: bool = JSON_OUT,
) -> None:
    """Compute a tree for the node's unit and its child units."""
    engine, settings = _open(data, code, level)
    result = service.compute(
        engine=engine,
        data_dir=settings.data_dir,
        code=settings.code,
        level=settings.level.value,
        tree=tree,
        period=period,
        trigger="cli",
    )
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    typer.echo(
        f"{result.tree} {result.period}: {len(result.units)} units, {result.items_ok} items "
        f"computed, {result.items_no_data} without data, {result.items_failed} failed "
        f"({result.seconds:.2f} s)"
    )
    for failure in result.failures:
        typer.echo(f"  {failure.item}: {failure.reason}")


@app.command("rollup")
def rollup(
    tree: str = typer.Argument(..., help="tree id (citybrain indicators trees)"),
    data: Path = DATA,
    code: str | None = CODE,
    level: str | None = LEVEL,
    deadline: float = typer.Option(5.0, "--deadline", help="seconds to wait for the children"),
    as_json: bool = JSON_OUT,
) -> None:
    """Pull the children's values of a tree and roll them up into this node's unit."""
    from citybrain.federation import rollup as federation_rollup

    engine, settings = _open(data, code, level)
    result = federation_rollup.rollup(
        engine=engine, settings=settings, tree=tree, deadline=deadline
    )
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    typer.echo(
        f"{result.tree}: {len(result.answered)} of {len(result.children)} children answered, "
        f"{result.stored} values stored, {result.rolled_up} rolled up ({result.seconds:.2f} s)"
    )
    for child, why in result.missing.items():
        typer.echo(f"  missing {child}: {why}")


@app.command("values")
def values(
    tree: str = typer.Argument(...),
    data: Path = DATA,
    code: str | None = CODE,
    level: str | None = LEVEL,
    item: str | None = typer.Option(None, "--item"),
    unit: str | None = typer.Option(None, "--unit"),
    period: str | None = typer.Option(None, "--period"),
    history: bool = typer.Option(False, "--history", help="every computation"),
    as_json: bool = JSON_OUT,
) -> None:
    """Print stored values, the latest per item, unit and period."""
    engine, _ = _open(data, code, level)
    found = service.values(
        engine=engine, tree=tree, item=item, unit=unit, period=period, history=history
    )
    if as_json:
        typer.echo(json.dumps([v.model_dump(mode="json") for v in found], ensure_ascii=False))
        return
    out = Table("unit", "item", "period", "value", "score", "stars", "status")
    for v in sorted(found, key=lambda v: (v.unit, v.item, v.period)):
        stars = "-" if v.stars is None else "★" * v.stars
        out.add_row(v.unit, v.item, v.period, _fmt(v.value), _fmt(v.score), stars, v.status)
    Console().print(out)


@app.command("explain")
def explain(
    tree: str = typer.Argument(...),
    unit: str = typer.Option(..., "--unit"),
    data: Path = DATA,
    code: str | None = CODE,
    level: str | None = LEVEL,
    item: str = typer.Option("*", "--item", help="an item, a group, or * for the tree"),
    period: str | None = typer.Option(None, "--period"),
) -> None:
    """Explain a score down to its inputs (JSON)."""
    engine, _ = _open(data, code, level)
    found = service.explain(engine=engine, tree=tree, item=item, unit=unit, period=period)
    typer.echo(found.model_dump_json(indent=2))


@app.command("compare")
def compare(
    tree: str = typer.Argument(...),
    units: str = typer.Option(..., "--units", help="CODE,CODE,..."),
    data: Path = DATA,
    code: str | None = CODE,
    level: str | None = LEVEL,
    item: str | None = typer.Option(None, "--item"),
    period: str | None = typer.Option(None, "--period"),
    as_json: bool = JSON_OUT,
) -> None:
    """Put units side by side on a tree's level-1 groups (or one group's children)."""
    engine, _ = _open(data, code, level)
    codes = [u.strip() for u in units.split(",") if u.strip()]
    found = service.compare(engine=engine, tree=tree, units=codes, period=period, item=item)
    if as_json:
        typer.echo(found.model_dump_json(indent=2))
        return
    out = Table("code", "name", *found.units)
    for row in found.rows:
        cells = [_fmt(row["values"][u]["score"]) for u in found.units]
        out.add_row(row["code"], row["name_en"], *cells)
    Console().print(out)


def register(root: typer.Typer) -> None:
    """Attach this part's command groups to the root command."""
    root.add_typer(
        app, name="indicators", help="Indicator trees per administrative unit: compute, explain."
    )
