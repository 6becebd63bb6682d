"""`citybrain medins ...`: the medical-insurance scene (rules, sweep, vouchers, cases)."""

from __future__ import annotations

import typer

from citybrain.scenes.medical_insurance import cli_analytics, cli_service

app = typer.Typer(no_args_is_help=True, help="Medical-insurance supervision scene.")
cli_analytics.register(app)
cli_service.register(app)


def register(root: typer.Typer) -> None:
    """Attach the scene's commands to the root CLI."""
    root.add_typer(app, name="medins", help="Medical-insurance supervision scene.")
