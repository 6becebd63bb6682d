"""Audit routes and commands: role checks, audited reads, shutdown checkpoint, CLI exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from citybrain.app import create_app
from citybrain.cli import app as cli_app
from citybrain.core.config import load_settings
from citybrain.core.errors import BadInput
from citybrain.governance.audit import service
from conftest import bearer

CITYBRAIN = Path(sys.executable).parent / "citybrain"


def _seed(data_dir: Path, n: int = 12) -> None:
    for i in range(n):
        service.append(
            data_dir=data_dir,
            principal=None,
            action="tables.read",
            resource=f"public_security/t{i % 2}",
            result="ok",
            grant_id="g1" if i % 2 else None,
            rows=i,
        )


def test_routes_admit_auditors_and_the_bureau_only(tmp_path: Path) -> None:
    _seed(tmp_path)
    app = create_app(load_settings(data_dir=tmp_path))
    with TestClient(app) as client:
        auditor = bearer(tmp_path, org="bureau", role="auditor", subject="a1")
        response = client.get("/api/audit", params={"limit": 5}, headers=auditor)
        assert response.status_code == 200, response.text
        page = response.json()
        assert [r["seq"] for r in page["records"]] == [1, 2, 3, 4, 5]
        assert page["next_after_seq"] == 5
        response = client.get(
            "/api/audit",
            params={"after_seq": 5, "resource": "public_security/t1", "grant": "g1"},
            headers=auditor,
        )
        assert [r["seq"] for r in response.json()["records"]] == [6, 8, 10, 12]
        admin = bearer(tmp_path, role="bureau_admin")
        assert client.get("/api/audit", headers=admin).status_code == 200
        report = client.get("/api/audit/verify", headers=auditor)
        assert report.status_code == 200 and report.json()["ok"] is True
        # the reads themselves are on the record, with who asked and what
        reads = client.get("/api/audit", params={"action": "audit.read"}, headers=auditor).json()
        assert [r["actor"] for r in reads["records"]][:2] == ["bureau/auditor/a1"] * 2
        assert reads["records"][1]["detail"]["filters"]["grant_id"] == "g1"
        assert reads["records"][1]["rows"] == 4
        assert reads["records"][3]["resource"] == "audit/verify"

        steward = bearer(tmp_path, org="education", role="steward")
        for path in ("/api/audit", "/api/audit/verify"):
            assert client.get(path, headers=steward).status_code == 403
            assert client.get(path).status_code == 401
        assert client.get("/api/audit", params={"limit": 0}, headers=auditor).status_code == 400
        assert (
            client.get("/api/audit", params={"since": "soon"}, headers=auditor).status_code == 400
        )
        last = service.verify(data_dir=tmp_path).last_seq
    # the node signs a checkpoint of its last record when it stops
    cps = service.checkpoints_path(tmp_path).read_bytes().splitlines()
    assert orjson.loads(cps[-1])["seq"] == last
    assert service.verify(data_dir=tmp_path).ok


def test_verify_route_reports_a_break(tmp_path: Path) -> None:
    _seed(tmp_path)
    path = service.log_path(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    del lines[3]
    path.write_bytes(b"".join(lines))
    service._heads.clear()
    with TestClient(create_app(load_settings(data_dir=tmp_path))) as client:
        body = client.get("/api/audit/verify", headers=bearer(tmp_path, role="auditor")).json()
    assert body["ok"] is False and body["first_broken_seq"] == 4 and body["line"] == 4


def test_routes_on_a_postgresql_node(tmp_path: Path, postgres_url: str) -> None:
    """The log stays in the data folder whatever the operational store is."""
    # the session database belongs to node 370100 (see the other PostgreSQL tests)
    settings = load_settings(
        data_dir=tmp_path, database_url=postgres_url, code="370100", level="city"
    )
    with TestClient(create_app(settings)) as client:
        auditor = bearer(tmp_path, role="auditor", subject="pg-auditor", issuer="370100")
        assert client.get("/api/audit", headers=auditor).status_code == 200
        body = client.get("/api/audit/verify", headers=auditor).json()
    # the node's own background work may add records; the auditor's read is among them
    assert body["ok"] is True and body["records"] >= 1
    assert service.query(data_dir=tmp_path, actor="bureau/auditor/pg-auditor").records


def test_cli_verify_list_checkpoint(tmp_path: Path) -> None:
    runner = CliRunner()
    _seed(tmp_path, 12)
    result = runner.invoke(cli_app, ["audit", "verify", "--data", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: 12 records")
    result = runner.invoke(cli_app, ["audit", "checkpoint", "--data", str(tmp_path)])
    assert result.exit_code == 0 and "checkpoint at seq 13" in result.output  # + the verify read
    result = runner.invoke(
        cli_app,
        [
            "audit",
            "list",
            "--data",
            str(tmp_path),
            "--resource",
            "public_security/t0",
            "--limit",
            "3",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    page = json.loads(result.output)
    assert [r["seq"] for r in page["records"]] == [1, 3, 5] and page["next_after_seq"] == 5
    result = runner.invoke(cli_app, ["audit", "list", "--data", str(tmp_path), "--after", "10"])
    assert (
        result.exit_code == 0 and "tables.read" in result.output and "audit.read" in result.output
    )
    assert "# next" not in result.output
    # the command-line reads are audited too
    reads = service.query(data_dir=tmp_path, action="audit.read").records
    assert [r.detail.get("via") for r in reads] == ["cli", "cli", "cli"]

    path = service.log_path(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[4] = lines[4].replace(b'"rows":4', b'"rows":40')
    path.write_bytes(b"".join(lines))
    service._heads.clear()
    result = runner.invoke(cli_app, ["audit", "verify", "--data", str(tmp_path)])
    assert result.exit_code == 1
    assert "broken at seq 5, line 5" in result.output and "edited" in result.output


def test_cli_missing_folder_exits_2(tmp_path: Path) -> None:
    args = ["audit", "verify", "--data", str(tmp_path / "absent")]
    done = subprocess.run([str(CITYBRAIN), *args], capture_output=True, text=True, check=False)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("error:") and "no data folder" in done.stderr


@pytest.mark.parametrize(
    "extra",
    [
        ["verify", "--data", "absent"],
        ["list", "--data", "absent"],
        ["list", "--format", "xml"],
        ["list", "--since", "yesterday"],
        ["list", "--limit", "0"],
    ],
)
def test_cli_bad_input_is_a_bad_input_error(tmp_path: Path, extra: list[str]) -> None:
    """citybrain.cli.main turns BadInput into one sentence and exit code 2."""
    args = ["audit", *extra]
    if "--data" in args:
        args[args.index("--data") + 1] = str(tmp_path / "absent")
    else:
        args += ["--data", str(tmp_path)]
    result = CliRunner().invoke(cli_app, args)
    assert isinstance(result.exception, BadInput), result.output


def test_cli_checkpoint_of_an_empty_log(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["audit", "checkpoint", "--data", str(tmp_path)])
    assert result.exit_code == 0 and "empty" in result.output


@pytest.mark.parametrize("args", [["audit", "verify", "--data"], ["audit"]])
def test_cli_usage_errors(args: list[str]) -> None:
    assert CliRunner().invoke(cli_app, args).exit_code == 2
