"""`citybrain enrollment season|stats|appeals`: running a node's season from its data folder.

Thin callers of season.py, run.py, appeals.py and stats.py. Whoever can read a node's data
folder administers the node; the commands act as the Education Bureau's staff (`--user`
names who, for the audit log).
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from citybrain.core.config import Settings, load_settings
from citybrain.core.db import check_connection, create_engine_for, upgrade
from citybrain.core.errors import BadInput
from citybrain.geo import service as geo
from citybrain.governance.principal import Principal, Role
from citybrain.node import service as node_service
from citybrain.scenes.enrollment import appeals, grants, run, stats
from citybrain.scenes.enrollment import season as seasons

season_app = typer.Typer(no_args_is_help=True, help="Open, close, draw and publish a season.")
appeals_app = typer.Typer(no_args_is_help=True, help="Appeals of parents and their decisions.")
DATA = typer.Option(..., "--data", help="the node's data folder")
DATABASE_URL = typer.Option(None, "--database-url", help="operational store URL")
NODE = typer.Option(None, "--node", help="the node's code when its folder was never started")
USER = typer.Option("cli", "--user", help="who acts, for the audit log")
SEASON = typer.Option(None, "--season", help="season id (default: the node's newest)")


class Format(StrEnum):
    """Output formats."""

    table = "table"
    json = "json"


FORMAT = typer.Option(Format.table, "--format", help="table or json")


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the scene's command group."""
    app.add_typer(season_app, name="season")
    app.add_typer(appeals_app, name="appeals")
    app.command("stats")(stats_command)


class Node:
    """An opened, prepared data folder: settings, engine, code, the acting staff member."""

    def __init__(self, data: Path, database_url: str | None, node: str | None, user: str) -> None:
        from citybrain.app import prepare_node

        if not data.is_dir():
            raise BadInput(f"{data} is not a node's data folder (it does not exist)")
        probe = load_settings(data_dir=data, database_url=database_url)
        engine = create_engine_for(probe.effective_database_url)
        check_connection(engine)
        upgrade(engine)
        try:
            recorded: str | None = node_service.node_code(engine=engine)
        except BadInput:
            recorded = None
        engine.dispose()
        code = recorded or node
        if code is None:
            raise BadInput(
                f"the data folder {data} holds no node yet; start it once or pass --node CODE"
            )
        if recorded is not None and node is not None and node != recorded:
            raise BadInput(f"the data folder {data} belongs to node {recorded}, not {node}")
        level = geo.get_unit(code).level.value
        self.settings: Settings = load_settings(
            data_dir=data, database_url=database_url, code=code, level=level
        )
        self.engine: Engine = prepare_node(self.settings)
        self.code = code
        self.data_dir = self.settings.data_dir
        self.principal = Principal(
            subject=f"cli:{user}", org="education", role=Role.steward, issuer=code
        )

    def season_id(self, given: str | None) -> str:
        """The season named, or the node's newest."""
        return given or seasons.current_season(engine=self.engine, code=self.code).id


def _moment(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(
            f"{name} {text!r} is not an ISO date-time, e.g. 2027-06-20T23:59+08:00"
        ) from None
    if value.tzinfo is None:
        raise BadInput(f"{name} {text!r} needs a time zone, e.g. +08:00")
    return value


def _show(season: seasons.SeasonRead, fmt: Format) -> None:
    if fmt is Format.json:
        typer.echo(season.model_dump_json(indent=1))
        return
    table = Table(title=f"season {season.id}")
    table.add_column("field")
    table.add_column("value")
    table.add_row("status", season.status)
    table.add_row("counties", str(len(season.counties)))
    table.add_row("opens at", season.opens_at.isoformat())
    table.add_row("deadline", season.deadline.isoformat())
    for county, draw in sorted(season.draws.items()):
        table.add_row(
            f"draw {county}",
            f"commitment {str(draw.get('seed_sha256', ''))[:16]}... children "
            f"{draw.get('children', 0)} placed {draw.get('placed', '-')}",
        )
    Console().print(table)


@season_app.command("open")
def open_season(
    data: Path = DATA,
    year: int | None = typer.Option(None, "--year", help="school year (default: the rules')"),
    deadline: str | None = typer.Option(None, "--deadline", help="ISO date-time with zone"),
    opens_at: str | None = typer.Option(None, "--opens-at", help="ISO date-time (default now)"),
    database_url: str | None = DATABASE_URL,
    node: str | None = NODE,
    user: str = USER,
    fmt: Format = FORMAT,
) -> None:
    """Open the node's season (refused, naming them, without the Education Bureau's grants)."""
    n = Node(data, database_url, node, user)
    _show(
        seasons.open_season(
            engine=n.engine,
            data_dir=n.data_dir,
            code=n.code,
            principal=n.principal,
            year=year,
            deadline=_moment("--deadline", deadline),
            opens_at=_moment("--opens-at", opens_at),
        ),
        fmt,
    )


@season_app.command("grants")
def request_season_grants(
    data: Path = DATA,
    approve_demo: bool = typer.Option(
        False, "--approve-demo", help="demo only: approve as the owners and the bureau too"
    ),
    database_url: str | None = DATABASE_URL,
    node: str | None = NODE,
    user: str = USER,
) -> None:
    """File the Education Bureau's access requests a season needs (records and verification)."""
    n = Node(data, database_url, node, user)
    made = grants.request_grants(
        engine=n.engine,
        data_dir=n.data_dir,
        code=n.code,
        counties=seasons.counties_of(n.code),
        user=user,
    )
    if approve_demo:
        grants.approve_for_demo(engine=n.engine, data_dir=n.data_dir, code=n.code, requests=made)
    for request in made:
        typer.echo(f"{request.id} {request.kind.value} {request.dataset_id} {request.status.value}")


@season_app.command("status")
def status(
    data: Path = DATA,
    season: str | None = SEASON,
    database_url: str | None = DATABASE_URL,
    node: str | None = NODE,
    fmt: Format = FORMAT,
) -> None:
    """Show the season: state, window, the draws' commitments and counts."""
    n = Node(data, database_url, node, "cli")
    _show(seasons.get_season(engine=n.engine, season_id=n.season_id(season)), fmt)


def _step(step: str) -> Any:
    def command(
        data: Path = DATA,
        season: str | None = SEASON,
        database_url: str | None = DATABASE_URL,
        node: str | None = NODE,
        user: str = USER,
        fmt: Format = FORMAT,
    ) -> None:
        n = Node(data, database_url, node, user)
        sid = n.season_id(season)
        common: dict[str, Any] = {
            "engine": n.engine,
            "data_dir": n.data_dir,
            "principal": n.principal,
            "season_id": sid,
        }
        if step == "close":
            out = run.close(**common)
        elif step == "commit":
            out = run.commit(code=n.code, **common)
        elif step == "draw":
            out = run.run_draw(**common)
        else:
            out = run.publish(**common)
        _show(out, fmt)

    command.__doc__ = {
        "close": "Close the season to applications.",
        "commit": "Write each county's draw inputs and commit its secret seed (hash published).",
        "draw": "Reveal the seeds, run the draws, write the placements (not yet shown to parents).",
        "publish": "Show the results to the parents and notify them.",
    }[step]
    return command


for _name in ("close", "commit", "draw", "publish"):
    season_app.command(_name)(_step(_name))


def stats_command(
    data: Path = DATA,
    rollup: bool = typer.Option(False, "--rollup", help="at the province: ask the cities first"),
    database_url: str | None = DATABASE_URL,
    node: str | None = NODE,
    fmt: Format = FORMAT,
) -> None:
    """Print the season's statistics per county (at the province: per city, rolled up)."""
    n = Node(data, database_url, node, "cli")
    if rollup:
        outcome = stats.rollup(engine=n.engine, settings=n.settings)
        if outcome["missing"]:
            Console(stderr=True).print(f"missing: {outcome['missing']}")
    figures = stats.node_stats(engine=n.engine, data_dir=n.data_dir, code=n.code)
    if fmt is Format.json:
        typer.echo(json.dumps(figures, ensure_ascii=False, indent=1, default=str))
        return
    table = Table(title=f"enrollment statistics of {n.code}")
    for column in ("unit", "applications", "eligible", "not eligible", "placed", "unplaced"):
        table.add_column(column)
    table.add_column("seats / first choices")
    table.add_column("appeals pending")
    for unit in [*figures["units"], figures["total"]]:
        table.add_row(
            f"{unit['code']} {unit['name']}",
            str(unit["applications"]),
            str(unit["eligible"]),
            str(unit["not_eligible"]),
            str(unit["placed"]),
            str(unit["unplaced"]),
            f"{unit['seats']} / {unit['demand']}",
            str(unit["appeals"].get("pending", 0)),
        )
    Console().print(table)


@appeals_app.command("list")
def list_appeals(
    data: Path = DATA,
    status_: str | None = typer.Option(None, "--status", help="pending, upheld or dismissed"),
    database_url: str | None = DATABASE_URL,
    node: str | None = NODE,
    fmt: Format = FORMAT,
) -> None:
    """List the appeals (default: all)."""
    n = Node(data, database_url, node, "cli")
    found = appeals.list_appeals(engine=n.engine, principal=n.principal, status=status_)
    if fmt is Format.json:
        typer.echo(json.dumps([a.model_dump(mode="json") for a in found], ensure_ascii=False))
        return
    table = Table(title="appeals")
    for column in ("id", "application", "criterion", "status", "statement"):
        table.add_column(column)
    for a in found:
        table.add_row(a.id, a.application_id, a.criterion, a.status, a.statement[:60])
    Console().print(table)


@appeals_app.command("decide")
def decide(
    appeal_id: str = typer.Argument(..., help="the appeal's id"),
    decision: str = typer.Option(..., "--decision", help="upheld or dismissed"),
    reason: str = typer.Option(..., "--reason", help="why, as the parent will read it"),
    data: Path = DATA,
    database_url: str | None = DATABASE_URL,
    node: str | None = NODE,
    user: str = USER,
) -> None:
    """Uphold (re-classifying the child) or dismiss an appeal."""
    n = Node(data, database_url, node, user)
    try:
        body = appeals.DecisionIn.model_validate({"decision": decision, "reason": reason})
    except ValueError:
        raise BadInput("--decision is upheld or dismissed, and --reason is required") from None
    out = appeals.decide(
        engine=n.engine,
        data_dir=n.data_dir,
        code=n.code,
        principal=n.principal,
        appeal_id=appeal_id,
        body=body,
    )
    typer.echo(f"appeal {out.id}: {out.status}")
