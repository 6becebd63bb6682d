"""`citybrain events`: intake a hotline text, follow cases, statistics, corpus and training."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from citybrain.core.config import load_settings
from citybrain.core.db import check_connection, create_engine_for, upgrade
from citybrain.core.errors import BadInput
from citybrain.events import classifier, corpus, service
from citybrain.events.models import HotlineCreate, TransitionRequest
from citybrain.governance.principal import BUREAU_ORG, Principal, Role

app = typer.Typer(no_args_is_help=True, help="The event centre: cases, deadlines, statistics.")
DATA = typer.Option(..., "--data", help="the node's data folder")
CODE = typer.Option(None, "--code", help="the node's code (default: its settings)")


def _open(data: Path, code: str | None = None) -> tuple[Engine, Path, str]:
    settings = load_settings(data_dir=data, code=code)
    data.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(settings.effective_database_url)
    check_connection(engine)
    upgrade(engine)
    return engine, settings.data_dir, settings.code


def _principal(org: str, role: str, subject: str = "cli") -> Principal:
    try:
        return Principal(subject=subject, org=org, role=Role(role), issuer="local")
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise BadInput(f"unknown role {role!r}; roles are {roles}") from None


def _when(value: str | None, what: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadInput(f"{what} must be an ISO date or time, not {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command("intake")
def intake(
    text: str = typer.Argument(..., help="what the caller said"),
    phone: str | None = typer.Option(None, "--phone", help="the caller's phone"),
    address: str | None = typer.Option(None, "--address"),
    lon: float | None = typer.Option(None, "--lon"),
    lat: float | None = typer.Option(None, "--lat"),
    data: Path = DATA,
    code: str | None = CODE,
) -> None:
    """Record a 12345 hotline work order; print the case as JSON."""
    engine, data_dir, node = _open(data, code)
    case = service.intake_hotline(
        engine=engine,
        data_dir=data_dir,
        node_code=node,
        principal=_principal(BUREAU_ORG, "operator", "cli:hotline"),
        body=HotlineCreate(text=text, phone=phone, address=address, lon=lon, lat=lat),
    )
    typer.echo(case.model_dump_json(indent=2))


@app.command("list")
def list_cases(
    data: Path = DATA,
    state: str | None = typer.Option(None, "--state"),
    department: str | None = typer.Option(None, "--department"),
    limit: int = typer.Option(50, "--limit", min=1, max=1000),
    fmt: str = typer.Option("table", "--format", help="table or json"),
) -> None:
    """List cases, newest first."""
    engine, _, _ = _open(data)
    cases = service.list_cases(engine=engine, state=state, department=department, limit=limit)
    if fmt == "json":
        typer.echo(json.dumps([c.model_dump(mode="json") for c in cases], ensure_ascii=False))
        return
    table = Table("id", "type", "state", "department", "deadline", "overdue")
    for c in cases:
        deadline = c.deadline.isoformat(timespec="minutes") if c.deadline else ""
        table.add_row(c.id, c.event_type_zh, c.state, c.department, deadline, str(c.overdue))
    Console().print(table)


@app.command("show")
def show(case_id: str = typer.Argument(...), data: Path = DATA) -> None:
    """Print one case and its timeline as JSON."""
    engine, _, _ = _open(data)
    case = service.get_case(engine=engine, case_id=case_id)
    steps = service.timeline(engine=engine, case_id=case_id)
    typer.echo(
        json.dumps(
            {
                "case": case.model_dump(mode="json"),
                "timeline": [s.model_dump(mode="json") for s in steps],
            },
            ensure_ascii=False,
            indent=2,
        )
    )


@app.command("transition")
def transition(
    case_id: str = typer.Argument(...),
    name: str = typer.Argument(..., help="verify, create_case, dispatch, handle, feedback, ..."),
    data: Path = DATA,
    org: str = typer.Option(BUREAU_ORG, "--org"),
    role: str = typer.Option("operator", "--role"),
    subject: str = typer.Option("cli", "--subject"),
    note: str = typer.Option("", "--note"),
    department: str | None = typer.Option(None, "--department"),
    days: int | None = typer.Option(None, "--days"),
    rating: int | None = typer.Option(None, "--rating"),
) -> None:
    """Fire a named transition as ORG/ROLE; print the case's new state."""
    engine, data_dir, _ = _open(data)
    case = service.transition(
        engine=engine,
        data_dir=data_dir,
        case_id=case_id,
        name=name,
        principal=_principal(org, role, subject),
        body=TransitionRequest(note=note, department=department, days=days, rating=rating),
    )
    typer.echo(
        f"{case.id} {case.state} {case.department} allowed: " + ", ".join(case.allowed_transitions)
    )


@app.command("stats")
def stats(
    data: Path = DATA,
    start: str | None = typer.Option(None, "--start", help="ISO date (default 30 days ago)"),
    end: str | None = typer.Option(None, "--end", help="ISO date, exclusive (default now)"),
) -> None:
    """Print department performance over a period as JSON."""
    engine, _, _ = _open(data)
    until = _when(end, "--end") or datetime.now(UTC)
    since = _when(start, "--start") or until - timedelta(days=30)
    result = service.department_stats(engine=engine, start=since, end=until)
    typer.echo(result.model_dump_json(indent=2))


@app.command("corpus")
def make_corpus(
    seed: int = typer.Option(1, "--seed"),
    per_type: int = typer.Option(80, "--per-type", min=1, max=100_000),
    out: Path = typer.Option(..., "--out", help="the JSON Lines file to write"),
) -> None:
    """Write the synthetic labelled hotline corpus as JSON Lines."""
    count = corpus.write_jsonl(corpus.generate(seed=seed, per_type=per_type), out)
    typer.echo(f"{count} texts written to {out}")


@app.command("train")
def train(
    data: Path = DATA,
    seed: int = typer.Option(classifier.DEFAULT_SEED, "--seed"),
    per_type: int = typer.Option(classifier.DEFAULT_PER_TYPE, "--per-type", min=5),
    corpus_file: Path | None = typer.Option(None, "--corpus", help="a corpus JSON Lines file"),
) -> None:
    """Train the classifier, report held-out accuracy, save it under DATA/models/."""
    rows = None
    if corpus_file is not None:
        try:
            rows = corpus.read_jsonl(corpus_file)
        except (OSError, ValueError, KeyError) as exc:
            raise BadInput(f"cannot read the corpus {corpus_file}: {exc}") from None
    data.mkdir(parents=True, exist_ok=True)
    model = classifier.train_and_save(data_dir=data, seed=seed, per_type=per_type, rows=rows)
    typer.echo(
        json.dumps(
            {
                "model": str(classifier.model_path(data)),
                "seed": model.seed,
                "train_rows": model.train_rows,
                "test_rows": model.test_rows,
                "accuracy": model.accuracy,
                "unseen_phrasing_accuracy": model.unseen_phrasing_accuracy,
                "seconds": model.seconds,
            }
        )
    )


def register(root: typer.Typer) -> None:
    """Attach `citybrain events` to the root command."""
    root.add_typer(app, name="events", help="The event centre (一网统管): cases and deadlines.")
