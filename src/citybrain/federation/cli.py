"""`citybrain nodes` and `citybrain federation`: trust peers, see them, send tasks, escalate.

Whoever can read a node's data folder administers the node, so the commands act as the
node's bureau (`--user` names who acts, for the audit log).
"""

from __future__ import annotations

import json
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from citybrain.core.config import Settings, load_settings
from citybrain.core.db import check_connection, create_engine_for, upgrade
from citybrain.core.errors import BadInput
from citybrain.federation import outbox, service, trust
from citybrain.federation.models import (
    Direction,
    EscalationCreate,
    Relation,
    TaskCreate,
    TaskRead,
    TaskStatus,
    TaskStatusUpdate,
)
from citybrain.governance.principal import BUREAU_ORG, Principal, Role
from citybrain.node import service as node_service

nodes_app = typer.Typer(no_args_is_help=True)
federation_app = typer.Typer(no_args_is_help=True)
tasks_app = typer.Typer(no_args_is_help=True)
federation_app.add_typer(tasks_app, name="tasks", help="Tasks sent down and received.")

DATA = typer.Option(..., "--data", help="the node's data folder")
DATABASE_URL = typer.Option(None, "--database-url", help="operational store URL")
NODE = typer.Option(None, "--node", help="this node's code, when its data folder was never started")
USER = typer.Option("cli", "--user", help="who acts, for the audit log")


class Format(StrEnum):
    """Output formats of the commands."""

    table = "table"
    json = "json"


FORMAT = typer.Option(Format.table, "--format", help="table or json")
M = TypeVar("M", bound=BaseModel)


class Node:
    """An opened data folder: settings, migrated engine and the node's code."""

    def __init__(self, data: Path, database_url: str | None, node: str | None) -> None:
        self.settings: Settings = load_settings(data_dir=data, database_url=database_url)
        data.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine_for(self.settings.effective_database_url)
        check_connection(self.engine)
        upgrade(self.engine)
        try:
            recorded: str | None = node_service.node_code(engine=self.engine)
        except BadInput:
            recorded = None
        if recorded is None and node is None:
            raise BadInput(
                f"the data folder {data} holds no node yet; start it once or pass --node CODE"
            )
        if recorded is not None and node is not None and node != recorded:
            raise BadInput(f"the data folder {data} belongs to node {recorded}, not {node}")
        self.code: str = recorded or str(node)
        self.data_dir = self.settings.data_dir


def _principal(user: str) -> Principal:
    return Principal(subject=f"cli:{user}", org=BUREAU_ORG, role=Role.bureau_admin, issuer="local")


def _json_object(raw: str | None, what: str) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{what} is not JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise BadInput(f"{what} must be a JSON object")
    return value


def _model(cls: type[M], values: dict[str, Any]) -> M:
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadInput(f"{where}: {first['msg']}") from None


def _read_key(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot read the key file {path}: {exc.strerror}") from None


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


@nodes_app.command("key")
def key(data: Path = DATA) -> None:
    """Print this node's public key (PEM), to register with its parent or children."""
    data.mkdir(parents=True, exist_ok=True)
    typer.echo(trust.own_public_key(data), nl=False)


def _add(
    data: Path,
    database_url: str | None,
    node: str | None,
    code: str,
    url: str,
    key_file: Path,
    relation: Relation,
) -> None:
    opened = Node(data, database_url, node)
    peer = trust.add_peer(
        engine=opened.engine,
        own_code=opened.code,
        code=code,
        relation=relation,
        url=url,
        public_key=_read_key(key_file),
    )
    typer.echo(f"node {opened.code} trusts {peer['code']} as its {relation.value} at {peer['url']}")


@nodes_app.command("add-child")
def add_child(
    data: Path = DATA,
    code: str = typer.Option(..., "--code", help="the child's GB/T 2260 code"),
    url: str = typer.Option(..., "--url", help="the child's base URL"),
    key_file: Path = typer.Option(..., "--key-file", help="the child's public key (PEM)"),
    node: str | None = NODE,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Trust a child node: its code must be an administrative child of this node."""
    _add(data, database_url, node, code, url, key_file, Relation.child)


@nodes_app.command("set-parent")
def set_parent(
    data: Path = DATA,
    code: str = typer.Option(..., "--code", help="the parent's GB/T 2260 code"),
    url: str = typer.Option(..., "--url", help="the parent's base URL"),
    key_file: Path = typer.Option(..., "--key-file", help="the parent's public key (PEM)"),
    node: str | None = NODE,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Trust the parent node: its code must be this node's administrative parent."""
    _add(data, database_url, node, code, url, key_file, Relation.parent)


def _ago(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


@nodes_app.command("status")
def status(
    data: Path = DATA,
    fmt: Format = FORMAT,
    node: str | None = NODE,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Show the parent and children: contact, lag, version and pending outbox messages."""
    opened = Node(data, database_url, node)
    peers = service.peer_status(engine=opened.engine)
    if fmt is Format.json:
        _print_json({"code": opened.code, "peers": [p.model_dump(mode="json") for p in peers]})
        return
    table = Table(
        "code", "name", "relation", "url", "last contact", "lag s", "version", "pending", "state"
    )
    for p in peers:
        table.add_row(
            p.code,
            p.name_zh,
            p.relation.value,
            p.url,
            p.last_contact_at.isoformat(timespec="seconds") if p.last_contact_at else "never",
            _ago(p.lag_seconds),
            p.version or "-",
            str(p.pending),
            p.state,
        )
    console = Console(width=200)
    console.print(f"node {opened.code}: {len(peers)} peer(s)")
    console.print(table)


def _print_tasks(items: list[TaskRead], fmt: Format) -> None:
    if fmt is Format.json:
        _print_json([t.model_dump(mode="json") for t in items])
        return
    table = Table("id", "direction", "peer", "kind", "title", "status", "due", "delivery")
    for t in items:
        delivery = f"{t.delivery.state.value}/{t.delivery.attempts}" if t.delivery else "-"
        table.add_row(
            t.id,
            t.direction.value,
            t.peer,
            t.kind,
            t.title,
            t.status.value,
            t.due.isoformat() if t.due else "-",
            delivery,
        )
    Console(width=200).print(table)


@tasks_app.command("send")
def tasks_send(
    data: Path = DATA,
    to: str = typer.Option(..., "--to", help="code of the child node"),
    kind: str = typer.Option(..., "--kind", help="e.g. supervision_case, inspection"),
    title: str = typer.Option(..., "--title"),
    body: str | None = typer.Option(None, "--body", help="a JSON object"),
    due: str | None = typer.Option(None, "--due", help="YYYY-MM-DD"),
    user: str = USER,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Send a task down to a child node (delivered by the running node's outbox)."""
    opened = Node(data, database_url, None)
    values: dict[str, Any] = {
        "to": to,
        "kind": kind,
        "title": title,
        "body": _json_object(body, "--body"),
    }
    if due is not None:
        try:
            values["due"] = date.fromisoformat(due)
        except ValueError:
            raise BadInput(f"--due must be a date YYYY-MM-DD, not {due!r}") from None
    task = service.send_task(
        engine=opened.engine,
        data_dir=opened.data_dir,
        own_code=opened.code,
        principal=_principal(user),
        task=_model(TaskCreate, values),
    )
    typer.echo(task.id)


@tasks_app.command("list")
def tasks_list(
    data: Path = DATA,
    direction: Direction | None = typer.Option(None, "--direction", help="sent or received"),
    fmt: Format = FORMAT,
    database_url: str | None = DATABASE_URL,
) -> None:
    """List the tasks this node sent and received."""
    opened = Node(data, database_url, None)
    _print_tasks(service.list_tasks(engine=opened.engine, direction=direction), fmt)


@tasks_app.command("status")
def tasks_status(
    task_id: str = typer.Argument(..., help="the task id"),
    data: Path = DATA,
    set_status: TaskStatus | None = typer.Option(
        None, "--set", help="new status of a received task"
    ),
    note: str = typer.Option("", "--note"),
    user: str = USER,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Show a task as JSON, or (with --set) move a received task to a new status."""
    opened = Node(data, database_url, None)
    if set_status is None:
        task = service.get_task(engine=opened.engine, task_id=task_id)
    else:
        task = service.update_task_status(
            engine=opened.engine,
            data_dir=opened.data_dir,
            own_code=opened.code,
            principal=_principal(user),
            task_id=task_id,
            change=_model(TaskStatusUpdate, {"status": set_status, "note": note}),
        )
    _print_json(task.model_dump(mode="json"))


@federation_app.command("escalate")
def escalate(
    data: Path = DATA,
    event: str = typer.Option(..., "--event", help="id of the event escalated"),
    reason: str = typer.Option(..., "--reason", help="why it goes to the parent"),
    payload: str | None = typer.Option(None, "--payload", help="a JSON object"),
    user: str = USER,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Escalate an event to this node's parent."""
    opened = Node(data, database_url, None)
    escalation = service.escalate(
        engine=opened.engine,
        data_dir=opened.data_dir,
        own_code=opened.code,
        principal=_principal(user),
        escalation=_model(
            EscalationCreate,
            {"event_id": event, "reason": reason, "payload": _json_object(payload, "--payload")},
        ),
    )
    typer.echo(escalation.id)


@federation_app.command("escalations")
def escalations(
    data: Path = DATA,
    direction: Direction | None = typer.Option(None, "--direction", help="sent or received"),
    fmt: Format = FORMAT,
    database_url: str | None = DATABASE_URL,
) -> None:
    """List the escalations this node sent and received."""
    opened = Node(data, database_url, None)
    items = service.list_escalations(engine=opened.engine, direction=direction)
    if fmt is Format.json:
        _print_json([e.model_dump(mode="json") for e in items])
        return
    table = Table("id", "direction", "peer", "event", "reason", "status")
    for e in items:
        table.add_row(e.id, e.direction.value, e.peer, e.event_id, e.reason[:60], e.status)
    Console(width=200).print(table)


@federation_app.command("drain")
def drain(data: Path = DATA, database_url: str | None = DATABASE_URL) -> None:
    """Deliver the outbox messages that are due now, once."""
    opened = Node(data, database_url, None)
    settings = opened.settings.model_copy(update={"code": opened.code})
    report = outbox.drain_once(engine=opened.engine, settings=settings)
    typer.echo(f"sent {report.sent}, failed {report.failed}, refused {report.refused}")


def register(root: typer.Typer) -> None:
    """Attach `nodes` and `federation` to the root command."""
    root.add_typer(nodes_app, name="nodes", help="This node's parent and children: trust, status.")
    root.add_typer(federation_app, name="federation", help="Tasks down, escalations up.")
