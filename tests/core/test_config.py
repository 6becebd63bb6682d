"""Settings come from arguments, then CITYBRAIN_* variables, then the TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from citybrain.core.config import NodeLevel, load_settings


def test_toml_then_environment_then_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "node.toml"
    config.write_text('level = "city"\ncode = "370200"\nport = 8100\nlog_level = "DEBUG"\n')
    monkeypatch.setenv("CITYBRAIN_CONFIG", str(config))
    settings = load_settings()
    assert (settings.level, settings.code, settings.port) == (NodeLevel.city, "370200", 8100)
    monkeypatch.setenv("CITYBRAIN_PORT", "8200")
    assert load_settings().port == 8200
    assert load_settings(port=8300).port == 8300
    assert load_settings().log_level == "DEBUG"


def test_defaults_and_derived_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CITYBRAIN_CONFIG", raising=False)
    settings = load_settings(data_dir=tmp_path)
    assert settings.effective_database_url == f"sqlite:///{(tmp_path / 'citybrain.db').resolve()}"
    assert settings.effective_public_url == "http://127.0.0.1:8000"


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYBRAIN_PORT", "99999")
    with pytest.raises(ValidationError):
        load_settings()
