"""Identity commands: orgs, users (password from stdin), service accounts, API keys, tokens."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from citybrain.app import create_app
from citybrain.cli import app as cli_app
from citybrain.core.config import load_settings
from citybrain.core.db import create_engine_for
from citybrain.core.errors import BadInput, Conflict, Unauthorized, Unprocessable
from citybrain.governance.identity import service
from citybrain.governance.identity.tokens import verify_token

ISSUER = "370000"
runner = CliRunner()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A node's data folder, started once so it has an identity."""
    with TestClient(create_app(load_settings(data_dir=tmp_path))):
        pass
    return tmp_path


def _engine(data: Path) -> Engine:
    return create_engine_for(load_settings(data_dir=data).effective_database_url)


def test_orgs_list_and_add(data: Path) -> None:
    listed = runner.invoke(cli_app, ["orgs", "list", "--data", str(data), "--format", "json"])
    assert listed.exit_code == 0, listed.output
    ids = [o["id"] for o in json.loads(listed.output)]
    assert "bureau" in ids and "education" in ids and len(ids) == 15
    added = runner.invoke(
        cli_app,
        ["orgs", "add", "tourism", "--name-zh", "文化和旅游局", "--name-en", "Tourism Bureau"]
        + ["--data", str(data)],
    )
    assert added.exit_code == 0 and "added organisation tourism" in added.output
    again = runner.invoke(
        cli_app,
        ["orgs", "add", "tourism", "--name-zh", "x", "--name-en", "x", "--data", str(data)],
    )
    assert isinstance(again.exception, Conflict)
    bad = runner.invoke(
        cli_app,
        ["orgs", "add", "Bad Id", "--name-zh", "x", "--name-en", "x", "--data", str(data)],
    )
    assert isinstance(bad.exception, BadInput)
    table = runner.invoke(cli_app, ["orgs", "list", "--data", str(data)])
    assert table.exit_code == 0 and "tourism" in table.output


def test_users_add_reads_the_password_from_stdin(data: Path) -> None:
    secret = "cli-password-123"
    args = ["users", "add", "--username", "grace", "--org", "health", "--role", "steward"]
    added = runner.invoke(cli_app, [*args, "--data", str(data)], input=secret + "\n")
    assert added.exit_code == 0, added.output
    assert secret not in added.output
    engine = _engine(data)
    answer = service.password_grant(
        engine=engine, data_dir=data, issuer=ISSUER, username="grace", password=secret
    )
    assert verify_token(data_dir=data, issuer=ISSUER, token=answer.access_token).org == "health"
    listed = runner.invoke(cli_app, ["users", "list", "--data", str(data), "--format", "json"])
    assert [u["username"] for u in json.loads(listed.output)] == ["grace"]
    assert secret not in listed.output
    # never an argument
    argument = runner.invoke(cli_app, [*args, "--password", secret, "--data", str(data)])
    assert argument.exit_code == 2
    empty = runner.invoke(cli_app, [*args, "--data", str(data)], input="")
    assert isinstance(empty.exception, BadInput)
    short = runner.invoke(
        cli_app, [*args[:2], "--username", "heidi", *args[4:], "--data", str(data)], input="x\n"
    )
    assert isinstance(short.exception, BadInput)
    role = runner.invoke(
        cli_app,
        ["users", "add", "--username", "ivan", "--org", "health", "--role", "citizen"]
        + ["--data", str(data)],
        input=secret + "\n",
    )
    assert isinstance(role.exception, Unprocessable)
    engine.dispose()


def test_service_accounts_and_api_keys(data: Path) -> None:
    added = runner.invoke(
        cli_app,
        ["service-accounts", "add", "--org", "transport", "--label", "gps", "--data", str(data)],
    )
    assert added.exit_code == 0, added.output
    lines = dict(line.split(": ", 1) for line in added.stdout.splitlines() if ": " in line)
    engine = _engine(data)
    token = service.client_credentials_grant(
        engine=engine,
        data_dir=data,
        issuer=ISSUER,
        client_id=lines["client_id"],
        client_secret=lines["client_secret"],
    )
    assert verify_token(data_dir=data, issuer=ISSUER, token=token.access_token).role == "service"
    revoked = runner.invoke(
        cli_app, ["service-accounts", "revoke", lines["client_id"], "--data", str(data)]
    )
    assert revoked.exit_code == 0
    with pytest.raises(Unauthorized):
        service.client_credentials_grant(
            engine=engine,
            data_dir=data,
            issuer=ISSUER,
            client_id=lines["client_id"],
            client_secret=lines["client_secret"],
        )

    issued = runner.invoke(
        cli_app,
        ["api-keys", "issue", "--org", "health", "--role", "operator", "--data", str(data)],
    )
    assert issued.exit_code == 0, issued.output
    key_lines = dict(line.split(": ", 1) for line in issued.stdout.splitlines() if ": " in line)
    principal = service.resolve_api_key(engine=engine, issuer=ISSUER, key=key_lines["key"])
    assert principal.org == "health" and principal.role == "operator"
    listed = runner.invoke(cli_app, ["api-keys", "list", "--data", str(data), "--format", "json"])
    assert key_lines["key"] not in listed.output
    assert json.loads(listed.output)[0]["id"] == key_lines["id"]
    gone = runner.invoke(cli_app, ["api-keys", "revoke", key_lines["id"], "--data", str(data)])
    assert gone.exit_code == 0
    with pytest.raises(Unauthorized, match="revoked"):
        service.resolve_api_key(engine=engine, issuer=ISSUER, key=key_lines["key"])
    unknown_role = runner.invoke(
        cli_app, ["api-keys", "issue", "--org", "health", "--role", "king", "--data", str(data)]
    )
    assert isinstance(unknown_role.exception, BadInput)
    engine.dispose()


def test_token_issue_still_works(data: Path) -> None:
    issued = runner.invoke(
        cli_app, ["token", "issue", "--data", str(data), "--org", "education", "--role", "steward"]
    )
    assert issued.exit_code == 0, issued.output
    principal = verify_token(data_dir=data, issuer=ISSUER, token=issued.stdout.strip())
    assert principal.org == "education"


def test_missing_data_folder_is_one_sentence(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "citybrain.cli", "orgs", "list", "--data", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr
