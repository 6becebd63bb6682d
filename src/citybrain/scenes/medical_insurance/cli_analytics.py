"""Medical-insurance commands (filled in by their module's owner)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the scene's command group."""
