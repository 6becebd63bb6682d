"""The season from the command line: grants, open, status, close, commit, draw, publish, stats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import test_service_setup as setup
from fastapi.testclient import TestClient
from test_service_setup import CITY, Scene
from typer.testing import CliRunner

from citybrain.app import create_app
from citybrain.cli import app
from citybrain.core.config import load_settings
from citybrain.core.errors import Unprocessable
from citybrain.scenes.enrollment import demo, sources
from citybrain.scenes.enrollment import season as seasons

synth_jinan = setup.synth_jinan
runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def test_a_season_run_from_the_command_line(synth_jinan: Path, tmp_path: Path) -> None:
    data = tmp_path / CITY
    shutil.copytree(synth_jinan, data)
    d = str(data)
    refused = runner.invoke(app, ["enrollment", "season", "open", "--data", d])
    assert isinstance(refused.exception, Unprocessable)
    assert "records grant" in refused.exception.message
    filed = _run("enrollment", "season", "grants", "--data", d, "--approve-demo")
    assert len(filed.strip().splitlines()) == 5
    opened = json.loads(_run("enrollment", "season", "open", "--data", d, "--format", "json"))
    assert opened["status"] == "open" and opened["year"] == 2027
    # parents apply through the API of the node
    with TestClient(create_app(load_settings(data_dir=data, code=CITY, level="city"))) as c:
        scene = Scene(c, data)
        families = scene.families()[:4]
        for f in families:
            out = scene.post(
                "/api/enrollment/applications",
                {"child_id_number": f.child_id},
                scene.parent(f.phone),
            )
            assert out.status_code == 201, out.text
    for step in ("close", "commit", "draw", "publish"):
        shown = json.loads(_run("enrollment", "season", step, "--data", d, "--format", "json"))
    assert shown["status"] == "published"
    figures = json.loads(_run("enrollment", "stats", "--data", d, "--format", "json"))
    assert figures["total"]["applications"] == 4
    assert figures["total"]["placed"] + figures["total"]["unplaced"] == 4
    table = _run("enrollment", "stats", "--data", d)
    assert "济南市" in table or CITY in table
    # the published draw of a county verifies with the draw command
    county, info = next(iter(shown["draws"].items()))
    verified = runner.invoke(app, ["enrollment", "verify", str(data / info["folder"])])
    assert verified.exit_code == 0, verified.output
    again = runner.invoke(app, ["enrollment", "season", "publish", "--data", d])
    assert again.exception is not None and "published" in str(again.exception)
    sources.forget(data)
    seasons.forget_plans(data)


def test_the_demo_opens_a_season_once(synth_jinan: Path, tmp_path: Path) -> None:
    data = tmp_path / CITY
    shutil.copytree(synth_jinan, data)
    first = demo.prepare_demo_season(data_dir=data, code=CITY)
    assert first.status == "open" and set(first.grants) >= {"prefill", "hukou_at_address"}
    again = demo.prepare_demo_season(data_dir=data, code=CITY)
    assert again.id == first.id and again.opened_at == first.opened_at
    sources.forget(data)
    seasons.forget_plans(data)
