"""Commands of governance/identity: tokens for scripts; thin callers of the service."""

from __future__ import annotations

from pathlib import Path

import typer

from citybrain.core.config import load_settings
from citybrain.core.db import check_connection, create_engine_for
from citybrain.core.errors import BadInput
from citybrain.governance.identity.tokens import DEFAULT_TTL, issue_token
from citybrain.node import service as node_service

token_app = typer.Typer(no_args_is_help=True)


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
    typer.echo(issue_token(data_dir=data, issuer=code, subject=subject, org=org, role=role, ttl=ttl))


def register(root: typer.Typer) -> None:
    """Attach this part's command groups to the root command."""
    root.add_typer(token_app, name="token", help="Bearer tokens for scripts.")
