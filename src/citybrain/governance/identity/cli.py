"""Commands of governance/identity: tokens, organisations, users, service accounts, API keys."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from citybrain.core.config import load_settings
from citybrain.core.db import check_connection, create_engine_for, upgrade
from citybrain.core.errors import BadInput
from citybrain.governance.identity import service
from citybrain.governance.identity.models import (
    ApiKeyCreate,
    OrgCreate,
    ServiceAccountCreate,
    UserCreate,
)
from citybrain.governance.identity.tokens import DEFAULT_TTL, issue_token
from citybrain.governance.principal import BUREAU_ORG, Principal, Role
from citybrain.node import service as node_service

token_app = typer.Typer(no_args_is_help=True)
orgs_app = typer.Typer(no_args_is_help=True)
users_app = typer.Typer(no_args_is_help=True)
accounts_app = typer.Typer(no_args_is_help=True)
keys_app = typer.Typer(no_args_is_help=True)

DATA = typer.Option(..., "--data", help="the node's data folder")
DATABASE_URL = typer.Option(None, "--database-url", help="operational store URL")
FORMAT = typer.Option("table", "--format", help="table or json")
# whoever runs these commands on the node's machine can read its data folder: the bureau
CLI_ACTOR = Principal(subject="cli", org=BUREAU_ORG, role=Role.bureau_admin, issuer="local")
M = TypeVar("M", bound=BaseModel)


def _open(data: Path, database_url: str | None) -> Engine:
    """Open and migrate the store of a data folder, with the standard organisations."""
    if not data.is_dir():
        raise BadInput(f"{data} is not a node's data folder (it does not exist)")
    settings = load_settings(data_dir=data, database_url=database_url)
    engine = create_engine_for(settings.effective_database_url)
    check_connection(engine)
    upgrade(engine)
    service.seed_default_orgs(engine=engine)
    return engine


def _valid(model: type[M], **values: object) -> M:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise BadInput(f"{where}: {first.get('msg', 'invalid value')}") from None


def _print(rows: list[dict[str, object]], fmt: str, columns: list[str]) -> None:
    if fmt == "json":
        typer.echo(json.dumps(rows, ensure_ascii=False, default=str, indent=2))
        return
    if fmt != "table":
        raise BadInput(f"unknown format {fmt!r}; use table or json")
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    Console(soft_wrap=True).print(table)


def _read_password() -> str:
    """Read the password from stdin when piped, else from a hidden prompt typed twice."""
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            raise BadInput("no password on stdin; pipe it in or run in a terminal")
        return password
    password = getpass.getpass("password: ")
    if getpass.getpass("again: ") != password:
        raise BadInput("the two passwords differ")
    return password


@token_app.command("issue")
def token_issue(
    data: Path = typer.Option(..., "--data", help="the node's data folder"),
    org: str = typer.Option(..., help="organisation the token acts for, e.g. education"),
    role: str = typer.Option(..., help="bureau_admin, steward, operator, auditor, service, ..."),
    ttl: int = typer.Option(DEFAULT_TTL, help="seconds the token stays valid"),
    subject: str = typer.Option("script", help="who the token names"),
    database_url: str | None = typer.Option(None, help="operational store URL"),
) -> None:
    """Print a bearer token signed with the node's key (reading the data folder is admin)."""
    settings = load_settings(data_dir=data, database_url=database_url)
    if not data.is_dir():
        raise BadInput(f"{data} is not a node's data folder (it does not exist)")
    engine = create_engine_for(settings.effective_database_url)
    check_connection(engine)
    code = node_service.node_code(engine=engine)
    typer.echo(
        issue_token(data_dir=data, issuer=code, subject=subject, org=org, role=role, ttl=ttl)
    )


@orgs_app.command("list")
def orgs_list(
    data: Path = DATA, database_url: str | None = DATABASE_URL, fmt: str = FORMAT
) -> None:
    """List the organisations of the node."""
    engine = _open(data, database_url)
    rows = [o.model_dump(mode="json") for o in service.list_orgs(engine=engine)]
    _print(rows, fmt, ["id", "kind", "name_zh", "name_en"])


@orgs_app.command("add")
def orgs_add(
    org_id: str = typer.Argument(..., metavar="ID", help="slug, e.g. tourism or node-370100"),
    name_zh: str = typer.Option(..., "--name-zh", help="Chinese name"),
    name_en: str = typer.Option(..., "--name-en", help="English name"),
    kind: str = typer.Option("department", help="bureau, department or node"),
    data: Path = DATA,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Add an organisation."""
    spec = _valid(OrgCreate, id=org_id, name_zh=name_zh, name_en=name_en, kind=kind)
    engine = _open(data, database_url)
    org = service.create_org(engine=engine, data_dir=data, actor=CLI_ACTOR, org=spec)
    typer.echo(f"added organisation {org.id} ({org.name_zh}, {org.name_en})")


@users_app.command("add")
def users_add(
    username: str = typer.Option(..., "--username", help="sign-in name"),
    org: str = typer.Option(..., "--org", help="organisation, e.g. education"),
    role: str = typer.Option(..., "--role", help="bureau_admin, steward, operator or auditor"),
    phone: str | None = typer.Option(None, "--phone", help="mobile number (optional)"),
    data: Path = DATA,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Add a user; the password is read from stdin or a hidden prompt, never an argument."""
    engine = _open(data, database_url)
    password = _read_password()
    spec = _valid(UserCreate, username=username, org=org, role=role, password=password, phone=phone)
    user = service.create_user(engine=engine, data_dir=data, actor=CLI_ACTOR, user=spec)
    typer.echo(f"added user {user.username} ({user.org}/{user.role.value})")


@users_app.command("list")
def users_list(
    org: str | None = typer.Option(None, "--org", help="only this organisation"),
    data: Path = DATA,
    database_url: str | None = DATABASE_URL,
    fmt: str = FORMAT,
) -> None:
    """List the users of the node."""
    engine = _open(data, database_url)
    rows = [u.model_dump(mode="json") for u in service.list_users(engine=engine, org=org)]
    _print(rows, fmt, ["username", "org", "role", "active", "created_at"])


@accounts_app.command("add")
def service_accounts_add(
    org: str = typer.Option(..., "--org", help="organisation the system belongs to"),
    role: str = typer.Option("service", "--role", help="service or node"),
    label: str = typer.Option("", "--label", help="what the system is"),
    client_id: str | None = typer.Option(None, "--client-id", help="default: generated"),
    data: Path = DATA,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Add a service account and print its client id and secret (shown this once)."""
    spec = _valid(ServiceAccountCreate, org=org, role=role, label=label, client_id=client_id)
    engine = _open(data, database_url)
    account = service.create_service_account(
        engine=engine, data_dir=data, actor=CLI_ACTOR, account=spec
    )
    typer.echo(f"client_id: {account.client_id}")
    typer.echo(f"client_secret: {account.client_secret}")
    typer.echo("the secret is shown this once; store it now", err=True)


@accounts_app.command("revoke")
def service_accounts_revoke(
    client_id: str = typer.Argument(..., help="client id"),
    data: Path = DATA,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Revoke a service account."""
    engine = _open(data, database_url)
    service.revoke_service_account(
        engine=engine, data_dir=data, actor=CLI_ACTOR, client_id=client_id
    )
    typer.echo(f"revoked service account {client_id}")


@keys_app.command("issue")
def api_keys_issue(
    org: str = typer.Option(..., "--org", help="organisation the key acts for"),
    role: str = typer.Option("service", "--role", help="role the key carries"),
    label: str = typer.Option("", "--label", help="what the key is for"),
    data: Path = DATA,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Issue an API key and print it (shown this once) with its id."""
    spec = _valid(ApiKeyCreate, org=org, role=role, label=label)
    engine = _open(data, database_url)
    key = service.issue_api_key(engine=engine, data_dir=data, actor=CLI_ACTOR, spec=spec)
    typer.echo(f"id: {key.id}")
    typer.echo(f"key: {key.key}")
    typer.echo("the key is shown this once; store it now", err=True)


@keys_app.command("revoke")
def api_keys_revoke(
    key_id: str = typer.Argument(..., metavar="ID", help="id of the key"),
    data: Path = DATA,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Revoke an API key."""
    engine = _open(data, database_url)
    service.revoke_api_key(engine=engine, data_dir=data, actor=CLI_ACTOR, key_id=key_id)
    typer.echo(f"revoked API key {key_id}")


@keys_app.command("list")
def api_keys_list(
    data: Path = DATA, database_url: str | None = DATABASE_URL, fmt: str = FORMAT
) -> None:
    """List the API keys (never the keys themselves)."""
    engine = _open(data, database_url)
    rows = [k.model_dump(mode="json") for k in service.list_api_keys(engine=engine)]
    _print(rows, fmt, ["id", "prefix", "org", "role", "label", "revoked_at", "last_used_at"])


def register(root: typer.Typer) -> None:
    """Attach this part's command groups to the root command."""
    root.add_typer(token_app, name="token", help="Bearer tokens for scripts.")
    root.add_typer(orgs_app, name="orgs", help="Organisations of the node.")
    root.add_typer(users_app, name="users", help="Users who sign in with a password.")
    root.add_typer(
        accounts_app, name="service-accounts", help="Systems that sign in with client credentials."
    )
    root.add_typer(keys_app, name="api-keys", help="API keys for scripts and systems.")
