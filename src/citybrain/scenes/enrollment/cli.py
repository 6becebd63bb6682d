"""`citybrain enrollment ...`: the enrollment scene's commands (rules and draws, the season)."""

from __future__ import annotations

import typer

from citybrain.scenes.enrollment import cli_draw, cli_season

app = typer.Typer(no_args_is_help=True, help="Compulsory-education enrollment scene.")
cli_draw.register(app)
cli_season.register(app)


def register(root: typer.Typer) -> None:
    """Attach the scene's commands to the root CLI."""
    root.add_typer(app, name="enrollment", help="Compulsory-education enrollment scene.")
