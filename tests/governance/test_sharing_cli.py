"""`citybrain sharing`: request, decide, list, grants and revoke from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from citybrain.cli import app
from citybrain.core.config import load_settings
from citybrain.core.db import create_engine_for, upgrade
from citybrain.core.errors import BadInput, Conflict, Forbidden
from citybrain.governance.catalog import service as catalog
from citybrain.governance.catalog.models import CatalogEntryCreate
from citybrain.governance.principal import Principal, Role

RESIDENTS = "public_security/residents"
runner = CliRunner()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data folder whose catalog describes the residents register."""
    engine = create_engine_for(load_settings(data_dir=tmp_path).effective_database_url)
    upgrade(engine)
    entry = CatalogEntryCreate.model_validate(
        {
            "id": RESIDENTS,
            "title_en": "Residents",
            "owner_department": "public_security",
            "data_level": "important",
            "sharing_type": "conditional",
            "fields": [
                {"name": "name", "personal": "personal", "mask": "name"},
                {"name": "hukou_county"},
            ],
            "scope_fields": ["hukou_county"],
        }
    )
    bureau = Principal(subject="admin", org="bureau", role=Role.bureau_admin, issuer="370000")
    catalog.register_entry(engine=engine, entry=entry, principal=bureau)
    engine.dispose()
    return tmp_path


def run(data: Path, *args: str, org: str, role: str = "steward", user: str = "alice") -> Any:
    """Run a sharing command as org/role and return the parsed JSON it printed."""
    argv = ["sharing", *args, "--data", str(data), "--org", org, "--role", role]
    result = runner.invoke(app, [*argv, "--user", user, "--format", "json"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


REQUEST = (
    "request",
    "--dataset",
    RESIDENTS,
    "--field",
    "name",
    "--field",
    "hukou_county",
    "--scope",
    "hukou_county=370102,370103",
    "--purpose",
    "school enrolment",
    "--legal-basis",
    "Compulsory Education Law art. 12",
    "--days",
    "90",
)


def test_cli_flow(data: Path) -> None:
    made = run(data, *REQUEST, org="education")
    assert made["status"] == "pending_owner"
    assert made["row_scope"] == {"hukou_county": ["370102", "370103"]}
    assert made["requested_by"] == "education/steward/cli:alice"
    rid = made["id"]
    with pytest.raises(Forbidden):
        run(data, "approve", rid, org="education")
    owner = run(data, "approve", rid, "--reason", "lawful", org="public_security", user="bob")
    assert owner["status"] == "pending_bureau"
    todo = run(data, "list", "--view", "to_decide", org="bureau", role="bureau_admin")
    assert [r["id"] for r in todo] == [rid]
    done = run(data, "approve", rid, org="bureau", role="bureau_admin")
    assert done["status"] == "approved"
    with pytest.raises(Conflict):
        run(data, "approve", rid, org="bureau", role="bureau_admin")
    grants = run(data, "grants", "--active", org="education")
    assert [g["id"] for g in grants] == [done["grant_id"]]
    assert run(data, "grants", org="health") == []
    assert run(data, "list", "--status", "approved", org="education")[0]["id"] == rid
    with pytest.raises(BadInput):
        run(data, "revoke", done["grant_id"], "--reason", " ", org="public_security")
    revoked = run(data, "revoke", done["grant_id"], "--reason", "over", org="public_security")
    assert revoked["status"] == "revoked"
    assert run(data, "grants", "--active", org="education") == []

    second = run(data, *REQUEST, org="education")["id"]
    with pytest.raises(BadInput):
        run(data, "reject", second, org="public_security")
    rejected = run(data, "reject", second, "--reason", "too wide", org="public_security")
    assert rejected["status"] == "rejected"
    third = run(data, *REQUEST, org="education")["id"]
    assert run(data, "withdraw", third, org="education")["status"] == "withdrawn"

    log = (data / "audit" / "log.jsonl").read_bytes().splitlines()
    records = [orjson.loads(line) for line in log]
    assert [r["action"] for r in records] == [
        "sharing.request",
        "sharing.approve",
        "sharing.approve",
        "grant.create",
        "grant.revoke",
        "sharing.request",
        "sharing.reject",
        "sharing.request",
        "sharing.withdraw",
    ]
    assert records[1]["actor"] == "public_security/steward/cli:bob"


def test_cli_table_output(data: Path) -> None:
    args = ["sharing", *REQUEST, "--data", str(data), "--org", "education", "--role", "steward"]
    made = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert made.exit_code == 0, made.output
    assert "pending_owner" in made.output
    listed = runner.invoke(
        app,
        ["sharing", "list", "--data", str(data), "--org", "education", "--role", "steward"],
        env={"COLUMNS": "200"},
    )
    assert listed.exit_code == 0 and RESIDENTS in listed.output
    request_id = json.loads(
        runner.invoke(app, [*args[:1], "list", *args[-6:], "--format", "json"]).output
    )[0]["id"]
    assert request_id in listed.output


def test_cli_bad_input(data: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="unknown role"):
        run(data, "list", org="education", role="king")
    with pytest.raises(BadInput, match="column=value"):
        run(data, *REQUEST, "--scope", "hukou_county", org="education")
    with pytest.raises(BadInput, match="duration_days"):
        run(data, *REQUEST[:-1], "0", org="education")
    with pytest.raises(BadInput, match="does not exist"):
        run(tmp_path / "missing", "list", org="education")
    with pytest.raises(Forbidden):
        run(data, *REQUEST, org="education", role="operator")


def test_cli_errors_are_one_sentence_and_exit_2(data: Path) -> None:
    made = run(data, *REQUEST, org="education")
    result = subprocess.run(
        [sys.executable, "-m", "citybrain.cli", "sharing", "reject", made["id"]]
        + ["--data", str(data), "--org", "public_security", "--role", "steward"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "a rejection needs a reason" in result.stderr
