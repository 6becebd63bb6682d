"""Composition root of the command line: one sub-command group per domain."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from citybrain import __version__
from citybrain.core.errors import CityBrainError

app = typer.Typer(
    name="citybrain",
    help="CityBrain: a provincial city brain (hub, governance, federation, decisions, scenes).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    """Attach every domain's commands; imported here so each domain owns its CLI module."""
    from citybrain.demo.cli import app as demo_app
    from citybrain.geo.cli import app as geo_app
    from citybrain.hub.connectors.cli import app as connectors_app
    from citybrain.hub.ngsild.datamodels_cli import app as datamodels_app
    from citybrain.hub.tables.cli import app as tables_app
    from citybrain.node.cli import register as register_node
    from citybrain.plugins.cli import app as plugins_app
    from citybrain.synth.cli import register as register_synth

    app.add_typer(geo_app, name="geo", help="Administrative units of Shandong.")
    app.add_typer(plugins_app, name="plugins", help="Scene and connector plugins.")
    app.add_typer(demo_app, name="demo", help="Run a synthetic Shandong on localhost.")
    app.add_typer(tables_app, name="tables", help="Departmental tables (Delta Lake).")
    app.add_typer(connectors_app, name="connectors", help="Bring data in from devices and systems.")
    app.add_typer(datamodels_app, name="datamodels", help="Smart Data Models, offline.")
    register_synth(app)
    register_node(app)
    from citybrain.decisions.indicators import cli as indicators_cli
    from citybrain.decisions.notify import cli as notify_cli
    from citybrain.events import cli as events_cli
    from citybrain.federation import cli as federation_cli
    from citybrain.governance.audit import cli as audit_cli
    from citybrain.governance.catalog import cli as catalog_cli
    from citybrain.governance.identity import cli as identity_cli
    from citybrain.governance.quality import cli as quality_cli
    from citybrain.governance.sharing import cli as sharing_cli
    from citybrain.scenes.enrollment import cli as enrollment_cli
    from citybrain.scenes.medical_insurance import cli as medical_insurance_cli

    for part in (
        identity_cli,
        catalog_cli,
        sharing_cli,
        audit_cli,
        quality_cli,
        federation_cli,
        events_cli,
        indicators_cli,
        notify_cli,
        enrollment_cli,
        medical_insurance_cli,
    ):
        part.register(app)


@app.command()
def version() -> None:
    """Print the CityBrain version."""
    typer.echo(__version__)


_register()


def main() -> None:
    """Run the CLI, turning CityBrain errors into one clear sentence and a non-zero exit."""
    try:
        app()
    except CityBrainError as exc:
        # soft wrap: the sentence stays on one line, whatever the terminal width
        Console(stderr=True, soft_wrap=True).print(
            f"[red]error:[/red] {escape(exc.message)}", highlight=False
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
