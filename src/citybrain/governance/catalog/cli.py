"""Commands of governance/catalog; thin callers of its service."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Attach this part's command groups to the root command."""
    _ = root
