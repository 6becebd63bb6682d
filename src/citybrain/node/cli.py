"""`citybrain serve` and `citybrain db`: run a node and manage its operational store."""

from __future__ import annotations

import socket
from pathlib import Path

import typer

from citybrain.core.config import NodeLevel, Settings, load_settings
from citybrain.core.db import check_connection as check_db
from citybrain.core.db import create_engine_for, current_revision, upgrade
from citybrain.core.errors import BadInput
from citybrain.core.logging import configure_logging
from citybrain.core.runtime import tune_gc

db_app = typer.Typer(no_args_is_help=True)


def _check_port(host: str, port: int) -> None:
    """Refuse a port another program holds, before the node starts work."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise BadInput(f"port {port} on {host} is taken ({exc.strerror})") from None


def serve(
    level: NodeLevel | None = typer.Option(None, help="province, city or county"),
    code: str | None = typer.Option(None, help="GB/T 2260 code of the unit served"),
    data: Path | None = typer.Option(None, "--data", help="the node's data folder"),
    port: int | None = typer.Option(None, help="listen port"),
    host: str | None = typer.Option(None, help="listen address"),
    parent: str | None = typer.Option(None, help="parent node's base URL"),
    database_url: str | None = typer.Option(None, help="operational store URL"),
    workers: int | None = typer.Option(
        None, min=1, max=32, help="worker processes serving requests (background work runs in one)"
    ),
) -> None:
    """Run a node: its API, pages and background work, until stopped."""
    import uvicorn

    from citybrain.app import create_app, prepare_node

    overrides = {
        "level": level,
        "code": code,
        "data_dir": data,
        "port": port,
        "host": host,
        "parent_url": parent,
        "database_url": database_url,
        "workers": workers,
    }
    settings = load_settings(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    _check_port(settings.host, settings.port)
    try:
        engine = prepare_node(settings)
    except PermissionError as exc:
        raise BadInput(f"cannot use the data folder {settings.data_dir}: {exc.strerror}") from None
    if settings.workers > 1:
        from citybrain.node.workers import serve_workers

        engine.dispose()  # each worker opens its own connections
        serve_workers(settings, overrides, settings.workers)
        return
    app = create_app(settings, engine=engine, warm=True)
    tune_gc()
    # uvicorn finishes in-flight requests on SIGTERM/SIGINT before the lifespan closes
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)


def _settings_for(data: Path | None, database_url: str | None) -> Settings:
    return load_settings(data_dir=data, database_url=database_url)


@db_app.command("upgrade")
def db_upgrade(
    data: Path | None = typer.Option(None, "--data", help="the node's data folder"),
    database_url: str | None = typer.Option(None, help="operational store URL"),
) -> None:
    """Migrate the operational store to the newest revision."""
    settings = _settings_for(data, database_url)
    engine = create_engine_for(settings.effective_database_url)
    check_db(engine)
    upgrade(engine)
    typer.echo(f"at revision {current_revision(engine)}")


@db_app.command("current")
def db_current(
    data: Path | None = typer.Option(None, "--data", help="the node's data folder"),
    database_url: str | None = typer.Option(None, help="operational store URL"),
) -> None:
    """Print the revision of the operational store."""
    settings = _settings_for(data, database_url)
    engine = create_engine_for(settings.effective_database_url)
    check_db(engine)
    typer.echo(current_revision(engine) or "empty (run citybrain db upgrade)")


def register(app: typer.Typer) -> None:
    """Attach `serve` and `db` to the root command."""
    app.command("serve")(serve)
    app.add_typer(db_app, name="db", help="The node's operational store.")
