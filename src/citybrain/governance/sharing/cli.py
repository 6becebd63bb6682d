"""`citybrain sharing`: access requests, decisions and grants; thin callers of the service.

Whoever can read a node's data folder administers the node, so the commands take the
principal they act as from the command line (--org, --role, --user), like a signed token.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from citybrain.core.config import load_settings
from citybrain.core.db import check_connection, create_engine_for, upgrade
from citybrain.core.errors import BadInput
from citybrain.governance.principal import Principal, Role
from citybrain.governance.sharing import service
from citybrain.governance.sharing.models import (
    AccessRequestCreate,
    AccessRequestRead,
    GrantRead,
    RequestKind,
    RequestStatus,
)

app = typer.Typer(no_args_is_help=True)
DATA = typer.Option(..., "--data", help="the node's data folder")
DATABASE_URL = typer.Option(None, "--database-url", help="operational store URL")
ORG = typer.Option(..., "--org", help="organisation acting, e.g. education or bureau")
ROLE = typer.Option(..., "--role", help="role acting: steward, service, bureau_admin, ...")
USER = typer.Option("cli", "--user", help="who acts, for the audit log")


class Format(StrEnum):
    """Output formats of the commands."""

    table = "table"
    json = "json"


FORMAT = typer.Option(Format.table, "--format", help="table or json")


class View(StrEnum):
    """Which requests `list` shows."""

    all = "all"
    requested = "requested"
    to_decide = "to_decide"


class Context:
    """What every command needs: the store, the data folder and the acting principal."""

    def __init__(
        self, data: Path, database_url: str | None, org: str, role: str, user: str
    ) -> None:
        if not data.is_dir():
            raise BadInput(f"{data} is not a node's data folder (it does not exist)")
        settings = load_settings(data_dir=data, database_url=database_url)
        try:
            acting = Role(role)
        except ValueError:
            roles = ", ".join(r.value for r in Role)
            raise BadInput(f"unknown role {role!r}; roles are {roles}") from None
        if not org.strip() or not user.strip():
            raise BadInput("name the organisation (--org) and the user (--user) acting")
        self.engine: Engine = create_engine_for(settings.effective_database_url)
        check_connection(self.engine)
        upgrade(self.engine)
        self.data_dir = settings.data_dir
        self.principal = Principal(
            subject=f"cli:{user.strip()}", org=org.strip(), role=acting, issuer=settings.code
        )


def _scope(items: list[str]) -> dict[str, list[str | int]]:
    scope: dict[str, list[str | int]] = {}
    for item in items:
        column, sep, values = item.partition("=")
        if not sep or not column.strip() or not values.strip():
            raise BadInput(f"write a row scope as column=value1,value2, not {item!r}")
        scope.setdefault(column.strip(), []).extend(
            v.strip() for v in values.split(",") if v.strip()
        )
    return scope


def _print_json(value: BaseModel | list[Any]) -> None:
    if isinstance(value, BaseModel):
        payload: Any = value.model_dump(mode="json")
    else:
        payload = [v.model_dump(mode="json") for v in value]
    typer.echo(json.dumps(payload, ensure_ascii=False, indent=2))


def _table(*headers: str) -> Table:
    out = Table()
    for header in headers:
        # ids are copied into the next command: wrap them, never cut them
        out.add_column(header, overflow="fold")
    return out


def _print_requests(items: list[AccessRequestRead], fmt: Format, *, one: bool = False) -> None:
    if fmt is Format.json:
        # one request made or decided prints as an object, a listing as an array
        _print_json(items[0] if one else items)
        return
    out = _table("id", "kind", "dataset", "requester", "owner", "status", "grant", "created")
    for r in items:
        out.add_row(
            r.id,
            r.kind.value,
            r.dataset_id,
            r.requester_org,
            r.owner_org,
            r.status.value,
            r.grant_id or "",
            r.created_at.isoformat(timespec="seconds"),
        )
    Console().print(out)


def _print_grants(items: list[GrantRead], fmt: Format, *, one: bool = False) -> None:
    if fmt is Format.json:
        _print_json(items[0] if one else items)
        return
    out = _table("id", "kind", "dataset", "grantee", "status", "fields", "expires")
    for g in items:
        out.add_row(
            g.id,
            g.kind.value,
            g.dataset_id,
            g.grantee_org,
            g.status.value,
            ",".join(g.fields),
            g.expires_at.isoformat(timespec="seconds"),
        )
    Console().print(out)


@app.command("request")
def request(
    dataset: str = typer.Option(..., "--dataset", help="DEPT/NAME or ngsi-ld:TYPE"),
    field: list[str] = typer.Option(..., "--field", help="a field wanted (repeatable)"),
    purpose: str = typer.Option(..., "--purpose", help="what the data is for"),
    legal_basis: str = typer.Option(..., "--legal-basis", help="the law or duty that allows it"),
    days: int = typer.Option(..., "--days", help="how long the grant lasts (1 to 1095)"),
    scope: list[str] = typer.Option([], "--scope", help="column=v1,v2 (repeatable)"),
    kind: RequestKind = typer.Option(RequestKind.records, "--kind", help="records or verification"),
    question: list[str] = typer.Option([], "--question", help="verification question (repeat)"),
    pseudonymise: bool = typer.Option(False, "--pseudonymise", help="keyed pseudonyms"),
    data: Path = DATA,
    database_url: str | None = DATABASE_URL,
    org: str = ORG,
    role: str = ROLE,
    user: str = USER,
    fmt: Format = FORMAT,
) -> None:
    """Ask for another department's dataset on behalf of --org."""
    try:
        body = AccessRequestCreate(
            kind=kind,
            dataset_id=dataset,
            fields=field,
            row_scope=_scope(scope),
            purpose=purpose,
            legal_basis=legal_basis,
            duration_days=days,
            pseudonymise=pseudonymise,
            questions=question,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise BadInput(f"not a valid request: {where}: {first.get('msg', '')}") from None
    ctx = Context(data, database_url, org, role, user)
    made = service.create_request(
        engine=ctx.engine, data_dir=ctx.data_dir, principal=ctx.principal, body=body
    )
    _print_requests([made], fmt, one=True)


REQUEST_ID = typer.Argument(..., help="id of the access request")


def _decision_command(
    name: str, decide: Callable[..., AccessRequestRead], summary: str, reason_help: str
) -> None:
    """Register one decision command (approve, reject, withdraw): the same options each."""

    def command(
        request_id: str = REQUEST_ID,
        reason: str | None = typer.Option(None, "--reason", help=reason_help),
        data: Path = DATA,
        database_url: str | None = DATABASE_URL,
        org: str = ORG,
        role: str = ROLE,
        user: str = USER,
        fmt: Format = FORMAT,
    ) -> None:
        ctx = Context(data, database_url, org, role, user)
        done = decide(
            engine=ctx.engine,
            data_dir=ctx.data_dir,
            principal=ctx.principal,
            request_id=request_id,
            reason=reason,
        )
        _print_requests([done], fmt, one=True)

    command.__doc__ = summary
    app.command(name)(command)


_decision_command(
    "approve",
    service.approve,
    "Approve the step of a request that waits for --org/--role.",
    "why (optional)",
)
_decision_command("reject", service.reject, "Reject a request with a reason.", "why (required)")
_decision_command(
    "withdraw", service.withdraw, "Withdraw a pending request of --org.", "why (optional)"
)


@app.command("list")
def list_requests(
    status: RequestStatus | None = typer.Option(None, "--status", help="only this state"),
    view: View = typer.Option(View.all, "--view", help="all, requested or to_decide"),
    data: Path = DATA,
    database_url: str | None = DATABASE_URL,
    org: str = ORG,
    role: str = ROLE,
    user: str = USER,
    fmt: Format = FORMAT,
) -> None:
    """List the requests that concern --org (the bureau: all)."""
    ctx = Context(data, database_url, org, role, user)
    items = service.list_requests(
        engine=ctx.engine,
        principal=ctx.principal,
        status=status,
        role_view=view.value,
    )
    _print_requests(items, fmt)


@app.command("grants")
def list_grants(
    dataset: str | None = typer.Option(None, "--dataset", help="only grants on this dataset"),
    active: bool = typer.Option(False, "--active", help="only grants active now"),
    data: Path = DATA,
    database_url: str | None = DATABASE_URL,
    org: str = ORG,
    role: str = ROLE,
    user: str = USER,
    fmt: Format = FORMAT,
) -> None:
    """List the grants --org holds or has given (the bureau: all)."""
    ctx = Context(data, database_url, org, role, user)
    items = service.list_grants(
        engine=ctx.engine, principal=ctx.principal, dataset_id=dataset, active_only=active
    )
    _print_grants(items, fmt)


@app.command("revoke")
def revoke(
    grant_id: str = typer.Argument(..., help="id of the grant"),
    reason: str = typer.Option(..., "--reason", help="why (required)"),
    data: Path = DATA,
    database_url: str | None = DATABASE_URL,
    org: str = ORG,
    role: str = ROLE,
    user: str = USER,
    fmt: Format = FORMAT,
) -> None:
    """Revoke a grant at once (a steward of the owner department or the bureau)."""
    ctx = Context(data, database_url, org, role, user)
    done = service.revoke_grant(
        engine=ctx.engine,
        data_dir=ctx.data_dir,
        principal=ctx.principal,
        grant_id=grant_id,
        reason=reason,
    )
    _print_grants([done], fmt, one=True)


def register(root: typer.Typer) -> None:
    """Attach this part's command groups to the root command."""
    root.add_typer(app, name="sharing", help="Access requests, approvals and grants.")
