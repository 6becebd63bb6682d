"""Keep the README and docs in step with the code: commands, settings, hooks."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from citybrain.cli import app
from citybrain.core.config import Settings
from citybrain.plugins.hookspecs import CityBrainSpec

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _top_level_commands() -> set[str]:
    group = typer.main.get_group(app)
    return set(group.commands)


def test_every_top_level_command_is_in_the_readme() -> None:
    missing = sorted(c for c in _top_level_commands() if f"citybrain {c}" not in README)
    assert not missing, f"commands missing from README: {missing}"


def test_every_setting_is_in_the_readme() -> None:
    missing = sorted(
        f"CITYBRAIN_{name.upper()}"
        for name in Settings.model_fields
        if f"CITYBRAIN_{name.upper()}" not in README
    )
    assert not missing, f"settings missing from README: {missing}"


def test_every_hook_is_documented() -> None:
    doc = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    hooks = [n for n in vars(CityBrainSpec) if n.startswith("citybrain_")]
    assert hooks
    missing = [h for h in hooks if h not in doc]
    assert not missing, f"hooks missing from docs/plugins.md: {missing}"


def test_quick_start_is_two_commands() -> None:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:sh|bash)?\n(.*?)```", section, re.S)
    assert block is not None
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
