"""`citybrain nodes` and `citybrain federation` commands, and one node on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from citybrain.app import prepare_node
from citybrain.cli import app
from citybrain.core.config import load_settings
from citybrain.core.errors import BadInput, Conflict, Unprocessable
from citybrain.federation import outbox, service, trust
from citybrain.federation.models import Relation, TaskCreate
from citybrain.governance.principal import SYSTEM

runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_nodes_and_federation_commands(tmp_path: Path) -> None:
    p, c = tmp_path / "p", tmp_path / "c"
    p_key, c_key = tmp_path / "p.pem", tmp_path / "c.pem"
    p_key.write_text(_run("nodes", "key", "--data", str(p)))
    c_key.write_text(_run("nodes", "key", "--data", str(c)))
    assert p_key.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert _run("nodes", "key", "--data", str(p)) == p_key.read_text()  # the same key again

    # a folder never started needs --node; a city cannot be the parent of another's county
    with pytest.raises(BadInput, match="--node"):
        runner.invoke(
            app,
            ["nodes", "add-child", "--data", str(p), "--code", "370100", "--url", "http://c:1"]
            + ["--key-file", str(c_key)],
            catch_exceptions=False,
        )
    out = _run(
        "nodes", "add-child", "--data", str(p), "--node", "370000", "--code", "370100",
        "--url", "http://127.0.0.1:9", "--key-file", str(c_key),
    )  # fmt: skip
    assert "trusts 370100 as its child" in out
    with pytest.raises(Unprocessable, match="not the parent"):
        runner.invoke(
            app,
            ["nodes", "set-parent", "--data", str(c), "--node", "370102", "--code", "370200"]
            + ["--url", "http://q:1", "--key-file", str(p_key)],
            catch_exceptions=False,
        )
    with pytest.raises(BadInput, match="cannot read the key file"):
        runner.invoke(
            app,
            ["nodes", "set-parent", "--data", str(c), "--node", "370100", "--code", "370000"]
            + ["--url", "http://q:1", "--key-file", str(tmp_path / "missing.pem")],
            catch_exceptions=False,
        )
    _run(
        "nodes", "set-parent", "--data", str(c), "--node", "370100", "--code", "370000",
        "--url", "http://127.0.0.1:9", "--key-file", str(p_key),
    )  # fmt: skip

    # the task commands act on a node that has started once
    prepare_node(load_settings(data_dir=p, code="370000", level="province")).dispose()
    prepare_node(load_settings(data_dir=c, code="370100", level="city")).dispose()
    task_id = _run(
        "federation", "tasks", "send", "--data", str(p), "--to", "370100", "--kind",
        "inspection", "--title", "Inspect the market", "--body", '{"market": "M1"}',
        "--due", "2026-12-31",
    ).strip()  # fmt: skip
    assert len(task_id) == 32
    with pytest.raises(BadInput, match="JSON"):
        runner.invoke(
            app,
            ["federation", "tasks", "send", "--data", str(p), "--to", "370100", "--kind", "x"]
            + ["--title", "t", "--body", "[1"],
            catch_exceptions=False,
        )
    with pytest.raises(BadInput, match="--due"):
        runner.invoke(
            app,
            ["federation", "tasks", "send", "--data", str(p), "--to", "370100", "--kind", "x"]
            + ["--title", "t", "--due", "soon"],
            catch_exceptions=False,
        )
    listed = json.loads(_run("federation", "tasks", "list", "--data", str(p), "--format", "json"))
    assert [(t["id"], t["status"]) for t in listed] == [(task_id, "pending")]
    assert "Inspect the market" in _run("federation", "tasks", "list", "--data", str(p))
    shown = json.loads(_run("federation", "tasks", "status", task_id, "--data", str(p)))
    assert shown["delivery"]["state"] == "pending"
    with pytest.raises(Conflict):
        runner.invoke(
            app,
            ["federation", "tasks", "status", task_id, "--data", str(p), "--set", "done"],
            catch_exceptions=False,
        )

    # nothing listens on the child's URL: the drain fails and the child turns stale
    assert "failed 1" in _run("federation", "drain", "--data", str(p))
    status = json.loads(_run("nodes", "status", "--data", str(p), "--format", "json"))
    assert status["code"] == "370000"
    (peer,) = status["peers"]
    assert (peer["code"], peer["relation"], peer["pending"], peer["state"]) == (
        "370100",
        "child",
        1,
        "stale",
    )
    table = _run("nodes", "status", "--data", str(p))
    assert "370100" in table and "济南市" in table and "stale" in table and "child" in table
    child_view = _run("nodes", "status", "--data", str(c))
    assert "370000" in child_view and "parent" in child_view and "never" in child_view

    escalation_id = _run(
        "federation", "escalate", "--data", str(c), "--event", "evt-1", "--reason", "overdue",
        "--payload", '{"days": 3}',
    ).strip()  # fmt: skip
    escalations = json.loads(
        _run("federation", "escalations", "--data", str(c), "--format", "json")
    )
    assert [e["id"] for e in escalations] == [escalation_id]
    assert "evt-1" in _run("federation", "escalations", "--data", str(c))
    with pytest.raises(Conflict, match="no registered parent"):
        runner.invoke(
            app,
            ["federation", "escalate", "--data", str(p), "--event", "e", "--reason", "r"],
            catch_exceptions=False,
        )


def test_federation_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """A city node on PostgreSQL receives a task and sends its status back."""
    from fastapi.testclient import TestClient

    from citybrain.app import create_app
    from conftest import bearer

    p_set = load_settings(data_dir=tmp_path / "p", code="370000", level="province")
    c_set = load_settings(
        data_dir=tmp_path / "c", code="370100", level="city", database_url=postgres_url
    )
    p_engine, c_engine = prepare_node(p_set), prepare_node(c_set)
    try:
        trust.add_peer(
            engine=p_engine,
            own_code="370000",
            code="370100",
            relation=Relation.child,
            url="http://city.test",
            public_key=trust.own_public_key(c_set.data_dir),
        )
        trust.add_peer(
            engine=c_engine,
            own_code="370100",
            code="370000",
            relation=Relation.parent,
            url="http://province.test",
            public_key=trust.own_public_key(p_set.data_dir),
        )
        task = service.send_task(
            engine=p_engine,
            data_dir=p_set.data_dir,
            own_code="370000",
            principal=SYSTEM,
            task=TaskCreate(to="370100", kind="inspection", title="pg"),
        )
        with TestClient(create_app(c_set, engine=c_engine)) as city:
            transport = city._transport
            with httpx.Client(transport=transport) as http:
                assert outbox.drain_once(engine=p_engine, settings=p_set, client=http).sent == 1
                # delivered again after a crash: still one task on PostgreSQL
                from sqlalchemy import update

                from citybrain.federation.models import outbox as table

                with p_engine.begin() as conn:
                    conn.execute(update(table).values(state="pending"))
                assert outbox.drain_once(engine=p_engine, settings=p_set, client=http).sent == 1
            received = [
                t
                for t in service.list_tasks(engine=c_engine)
                if t.id == task.id and t.direction.value == "received"
            ]
            assert len(received) == 1
            headers = bearer(c_set.data_dir, issuer="370100")
            response = city.post(
                f"/api/federation/tasks/{task.id}/status",
                json={"status": "accepted"},
                headers=headers,
            )
            assert response.status_code == 200, response.text
        assert service.peer_status(engine=c_engine)[0].pending >= 1
    finally:
        p_engine.dispose()
        c_engine.dispose()
