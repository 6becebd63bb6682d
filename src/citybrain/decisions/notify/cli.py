"""`citybrain notify`: list subscriptions and deliveries, drain the outbox once."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from citybrain.core.config import Settings, load_settings
from citybrain.core.db import check_connection, create_engine_for, upgrade
from citybrain.decisions.notify import service
from citybrain.governance.principal import SYSTEM

app = typer.Typer(no_args_is_help=True, help="Notifications: webhook, e-mail and MQTT.")
DATA = typer.Option(..., "--data", help="the node's data folder")


def _open(data: Path) -> tuple[Settings, Engine]:
    settings = load_settings(data_dir=data)
    data.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(settings.effective_database_url)
    check_connection(engine)
    upgrade(engine)
    return settings, engine


@app.command("subscriptions")
def subscriptions(data: Path = DATA) -> None:
    """List the notification subscriptions of the node."""
    _, engine = _open(data)
    table = Table("id", "subscriber", "happenings", "channel", "target", "active")
    for s in service.list_subscriptions(engine=engine, principal=SYSTEM):
        table.add_row(
            s.id,
            f"{s.subscriber_kind.value}:{s.subscriber}",
            ",".join(h.value for h in s.happenings),
            s.channel.value,
            s.target,
            str(s.active),
        )
    Console().print(table)


@app.command("deliveries")
def deliveries(
    data: Path = DATA,
    state: str | None = typer.Option(None, "--state", help="pending, sent or failed"),
    limit: int = typer.Option(50, "--limit", min=1, max=1000),
) -> None:
    """List the notifications of the outbox and how their delivery went."""
    _, engine = _open(data)
    table = Table("id", "case", "happening", "channel", "state", "attempts", "last error")
    for d in service.list_deliveries(engine=engine, principal=SYSTEM, state=state, limit=limit):
        table.add_row(
            d.id, d.case_id, d.happening, d.channel, d.state, str(d.attempts), d.last_error or ""
        )
    Console().print(table)


@app.command("drain")
def drain(data: Path = DATA) -> None:
    """Deliver every due notification once (retries follow their backoff)."""
    settings, engine = _open(data)
    report = service.deliver_once(engine=engine, settings=settings)
    typer.echo(f"sent {report.sent}, retrying {report.retried}, failed {report.failed}")


def register(root: typer.Typer) -> None:
    """Attach `citybrain notify` to the root command."""
    root.add_typer(app, name="notify", help="Notifications: subscriptions, deliveries, drain.")
