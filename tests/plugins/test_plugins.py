"""Plugin discovery through entry points and manifest validation."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from citybrain.cli import app
from citybrain.plugins.manager import load_plugins

GOOD = {
    "domain": "air_demo",
    "name": "Air quality demo",
    "version": "1.2.3",
    "kind": "scene",
    "owner_department": "ecology_environment",
    "datasets": ["city_management/iot_devices"],
    "max_data_level": "general-2",
    "description": "Shows air quality.",
}


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Iterator[Path]:
    """Put a folder on sys.path for throw-away plugin packages."""
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in list(sys.modules):
        if name.startswith("cbplug_"):
            del sys.modules[name]


def _make_plugin(root: Path, package: str, manifest: object | None) -> str:
    pkg = root / package
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "plugin.py").write_text(
        textwrap.dedent(
            """
            from citybrain.plugins.hookspecs import hookimpl

            @hookimpl
            def citybrain_dashboard_panels():
                return [{"id": "air", "title_zh": "空气", "title_en": "Air", "data_url": "/x"}]
            """
        )
    )
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        (pkg / "manifest.json").write_text(text)
    return f"{package}.plugin"


def test_builtin_overview_loads_through_its_entry_point() -> None:
    plugins = load_plugins()
    overview = next(r for r in plugins.records if r.domain == "overview")
    assert overview.loaded, overview.error
    assert overview.manifest is not None and overview.manifest.kind == "scene"


def test_valid_plugin_registers_its_hooks(plugin_dir: Path) -> None:
    module = _make_plugin(plugin_dir, "cbplug_good", GOOD)
    plugins = load_plugins([("air_demo", module)])
    assert plugins.records[0].loaded
    panels = plugins.pm.hook.citybrain_dashboard_panels()
    assert [p["id"] for group in panels for p in group] == ["air"]


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        (None, "has no manifest.json"),
        ("{not json", "is not JSON"),
        ({**GOOD, "domain": "other"}, "differs from the entry-point name"),
        ({**GOOD, "version": "one"}, "MAJOR.MINOR.PATCH"),
        ({**GOOD, "max_data_level": "secret"}, "max_data_level"),
        ({**GOOD, "datasets": ["residents"]}, "department/table"),
        ({**GOOD, "unexpected": 1}, "unexpected"),
    ],
)
def test_bad_manifest_is_refused_with_reason(
    plugin_dir: Path, manifest: object, reason: str
) -> None:
    module = _make_plugin(plugin_dir, f"cbplug_bad{abs(hash(reason))}", manifest)
    plugins = load_plugins([("air_demo", module)])
    record = plugins.records[0]
    assert not record.loaded
    assert record.error is not None and reason in record.error
    assert plugins.pm.hook.citybrain_dashboard_panels() == []


def test_missing_module_is_refused(plugin_dir: Path) -> None:
    plugins = load_plugins([("ghost", "cbplug_does_not_exist.plugin")])
    assert not plugins.records[0].loaded
    assert "failed to load" in (plugins.records[0].error or "")


def test_third_party_entry_point_is_discovered(plugin_dir: Path) -> None:
    module = _make_plugin(plugin_dir, "cbplug_thirdparty", GOOD)
    dist = plugin_dir / "cbplug_thirdparty-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: cbplug-thirdparty\nVersion: 1.2.3\n"
    )
    (dist / "entry_points.txt").write_text(f"[citybrain.plugins]\nair_demo = {module}\n")
    plugins = load_plugins()
    domains = {r.domain: r for r in plugins.records}
    assert domains["air_demo"].loaded
    assert "overview" in domains


def test_cli_lists_plugins_as_json() -> None:
    result = CliRunner().invoke(app, ["plugins", "list", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert any(r["domain"] == "overview" and r["loaded"] for r in rows)
