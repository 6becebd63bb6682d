"""Tasks down, status and escalations up, through the outbox: two nodes in one process.

The province and a city run as two apps; the outbox of each reaches the other through an
httpx transport the test can switch off, and time is passed to drain_once, never slept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from citybrain.app import create_app
from citybrain.core.config import Settings, load_settings
from citybrain.federation import outbox, trust
from citybrain.federation.models import Relation
from citybrain.federation.models import outbox as outbox_table
from conftest import bearer

PROVINCE, CITY = "370000", "370100"
P_URL, C_URL = "http://province.test", "http://city.test"


class Net(httpx.BaseTransport):
    """Route requests to in-process apps by host; hosts in `down` refuse connections."""

    def __init__(self) -> None:
        self.apps: dict[str, httpx.BaseTransport] = {}
        self.down: set[str] = set()
        self.calls: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.calls.append(f"{host}{request.url.path}")
        if host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        return self.apps[host].handle_request(request)


@dataclass
class Node:
    settings: Settings
    client: TestClient
    net: Net
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def engine(self) -> Any:
        return self.client.app.state.engine  # type: ignore[attr-defined]

    def drain(self, now: datetime | None = None) -> outbox.DrainReport:
        with httpx.Client(transport=self.net) as http:
            return outbox.drain_once(
                engine=self.engine, settings=self.settings, client=http, now=now
            )


async def _idle(**_kw: object) -> None:
    return None


@pytest.fixture
def pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Node, Node]]:
    # the background loop would race the test's own drain_once calls
    monkeypatch.setattr(outbox, "run", _idle)
    net = Net()
    p_set = load_settings(data_dir=tmp_path / "p", code=PROVINCE, level="province")
    c_set = load_settings(data_dir=tmp_path / "c", code=CITY, level="city")
    with (
        TestClient(create_app(p_set)) as p_client,
        TestClient(create_app(c_set)) as c_client,
    ):
        net.apps = {"province.test": p_client._transport, "city.test": c_client._transport}
        p = Node(p_set, p_client, net, bearer(p_set.data_dir, issuer=PROVINCE))
        c = Node(c_set, c_client, net, bearer(c_set.data_dir, issuer=CITY))
        trust.add_peer(
            engine=p.engine,
            own_code=PROVINCE,
            code=CITY,
            relation=Relation.child,
            url=C_URL,
            public_key=trust.own_public_key(c_set.data_dir),
        )
        trust.add_peer(
            engine=c.engine,
            own_code=CITY,
            code=PROVINCE,
            relation=Relation.parent,
            url=P_URL,
            public_key=trust.own_public_key(p_set.data_dir),
        )
        yield p, c


TASK = {
    "to": CITY,
    "kind": "supervision_case",
    "title": "Check the flood gates on the Xiaoqing river",
    "body": {"case": "SC-1", "gates": [3, 4]},
    "due": "2026-12-31",
}


def _send(p: Node, **over: Any) -> dict[str, Any]:
    response = p.client.post("/api/federation/tasks", json={**TASK, **over}, headers=p.headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _tasks(node: Node, direction: str) -> list[dict[str, Any]]:
    response = node.client.get(
        "/api/federation/tasks", params={"direction": direction}, headers=node.headers
    )
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()
    return items


def _audit_actions(node: Node) -> list[str]:
    lines = (node.settings.data_dir / "audit" / "log.jsonl").read_text().splitlines()
    return [json.loads(line)["action"] for line in lines]


def test_task_is_delivered_and_status_comes_back(pair: tuple[Node, Node]) -> None:
    p, c = pair
    sent = _send(p)
    assert sent["status"] == "pending" and sent["direction"] == "sent"
    assert sent["delivery"]["state"] == "pending" and sent["delivery"]["attempts"] == 0
    assert p.drain().sent == 1
    received = _tasks(c, "received")
    assert [t["id"] for t in received] == [sent["id"]]
    assert received[0]["status"] == "received" and received[0]["body"] == TASK["body"]
    assert received[0]["due"] == "2026-12-31" and received[0]["peer"] == PROVINCE
    mine = p.client.get(f"/api/federation/tasks/{sent['id']}", headers=p.headers).json()
    assert mine["status"] == "received" and mine["delivery"]["state"] == "sent"

    for status, note in [("accepted", "on it"), ("in_progress", "team sent"), ("done", "fixed")]:
        response = c.client.post(
            f"/api/federation/tasks/{sent['id']}/status",
            json={"status": status, "note": note},
            headers=c.headers,
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == status
    assert c.drain().sent == 3
    mine = p.client.get(f"/api/federation/tasks/{sent['id']}", headers=p.headers).json()
    assert mine["status"] == "done"
    assert [h["status"] for h in mine["history"]] == [
        "pending",
        "received",
        "accepted",
        "in_progress",
        "done",
    ]
    assert mine["history"][-1]["note"] == "fixed" and mine["history"][-1]["node"] == CITY
    assert {"federation.task.send", "federation.deliver", "federation.task.status.receive"} <= set(
        _audit_actions(p)
    )
    assert {"federation.task.receive", "federation.task.status"} <= set(_audit_actions(c))


def test_status_changes_are_checked(pair: tuple[Node, Node]) -> None:
    p, c = pair
    task_id = _send(p)["id"]
    p.drain()
    url = f"/api/federation/tasks/{task_id}/status"
    # the sender does not move its own task; the receiver moves only along the allowed path
    assert p.client.post(url, json={"status": "done"}, headers=p.headers).status_code == 409
    assert c.client.post(url, json={"status": "pending"}, headers=c.headers).status_code == 409
    assert c.client.post(url, json={"status": "nonsense"}, headers=c.headers).status_code == 400
    rejected = c.client.post(url, json={"status": "rejected", "note": "no"}, headers=c.headers)
    assert rejected.status_code == 200
    assert c.client.post(url, json={"status": "accepted"}, headers=c.headers).status_code == 409
    steward = bearer(c.settings.data_dir, issuer=CITY, org="education", role="steward")
    assert c.client.post(url, json={"status": "done"}, headers=steward).status_code == 403
    missing = "/api/federation/tasks/" + "0" * 32
    assert c.client.get(missing, headers=c.headers).status_code == 404
    assert c.client.get("/api/federation/tasks/nope", headers=c.headers).status_code == 400
    c.drain()
    assert (
        p.client.get(f"/api/federation/tasks/{task_id}", headers=p.headers).json()["status"]
        == "rejected"
    )


def test_retry_with_backoff_while_the_receiver_is_down(pair: tuple[Node, Node]) -> None:
    p, c = pair
    first = _send(p, title="first")["id"]
    second = _send(p, title="second")["id"]
    p.net.down.add("city.test")
    t0 = datetime.now(UTC) + timedelta(seconds=1)
    report = p.drain(now=t0)
    assert report.failed == 1 and report.sent == 0
    task = p.client.get(f"/api/federation/tasks/{first}", headers=p.headers).json()
    assert task["status"] == "pending" and task["delivery"]["attempts"] == 1
    assert "ConnectError" in task["delivery"]["last_error"]
    # the second message waits behind the first: no attempt at all yet
    later = p.client.get(f"/api/federation/tasks/{second}", headers=p.headers).json()
    assert later["delivery"]["attempts"] == 0
    peers = p.client.get("/api/federation/peers", headers=p.headers).json()
    assert peers[0]["state"] == "stale" and peers[0]["pending"] == 2

    calls = len(p.net.calls)
    assert p.drain(now=t0 + timedelta(seconds=0.5)).failed == 0  # backing off: not tried
    assert len(p.net.calls) == calls
    assert p.drain(now=t0 + timedelta(seconds=1.1)).failed == 1  # 1 s after the first failure
    task = p.client.get(f"/api/federation/tasks/{first}", headers=p.headers).json()
    assert task["delivery"]["attempts"] == 2
    assert datetime.fromisoformat(task["delivery"]["next_attempt_at"]) == t0 + timedelta(
        seconds=3.1
    )
    assert outbox.backoff(1) == timedelta(seconds=1) and outbox.backoff(10) == timedelta(seconds=60)

    p.net.down.clear()
    assert p.drain(now=t0 + timedelta(seconds=2)).sent == 0  # still inside the 2 s backoff
    assert p.drain(now=t0 + timedelta(seconds=3.2)).sent == 2
    assert [t["title"] for t in _tasks(c, "received")] == ["second", "first"]
    peers = p.client.get("/api/federation/peers", headers=p.headers).json()
    assert peers[0]["state"] == "ok" and peers[0]["pending"] == 0


def test_a_message_delivered_twice_is_applied_once(pair: tuple[Node, Node]) -> None:
    p, c = pair
    task_id = _send(p)["id"]
    assert p.drain().sent == 1
    # the sender crashed before it marked the message sent: it goes out again
    with p.engine.begin() as conn:
        conn.execute(update(outbox_table).values(state="pending"))
    assert p.drain().sent == 1
    assert [t["id"] for t in _tasks(c, "received")] == [task_id]
    # the same payload posted directly twice: the second answer says duplicate
    with p.engine.connect() as conn:
        payload = conn.execute(select(outbox_table.c.payload)).scalar_one()
    token = trust.peer_token(data_dir=p.settings.data_dir, caller=PROVINCE, audience=CITY)
    headers = {"Authorization": f"Bearer {token}"}
    again = c.client.post("/api/federation/inbox/tasks", json=payload, headers=headers)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert len(_tasks(c, "received")) == 1


def test_escalation_goes_to_the_parent(pair: tuple[Node, Node]) -> None:
    p, c = pair
    body = {"event_id": "evt-42", "reason": "overdue 3 days", "payload": {"grid": "G-7"}}
    response = c.client.post("/api/federation/escalations", json=body, headers=c.headers)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "pending" and response.json()["peer"] == PROVINCE
    assert c.drain().sent == 1
    got = p.client.get("/api/federation/escalations", headers=p.headers).json()
    assert [(e["event_id"], e["direction"], e["peer"]) for e in got] == [
        ("evt-42", "received", CITY)
    ]
    assert got[0]["payload"] == {"grid": "G-7"}
    mine = c.client.get("/api/federation/escalations", headers=c.headers).json()
    assert mine[0]["status"] == "delivered"
    # the province has no parent to escalate to
    assert (
        p.client.post("/api/federation/escalations", json=body, headers=p.headers).status_code
        == 409
    )
    assert (
        c.client.post(
            "/api/federation/escalations", json={"event_id": "", "reason": "x"}, headers=c.headers
        ).status_code
        == 400
    )
    assert "federation.escalation.receive" in _audit_actions(p)


def test_send_task_bad_input(pair: tuple[Node, Node]) -> None:
    p, c = pair
    url = "/api/federation/tasks"
    cases = [
        ({**TASK, "to": "370200"}, 422),  # a city of the province, but not registered
        ({**TASK, "to": "999999"}, 422),
        ({**TASK, "to": "37"}, 400),
        ({**TASK, "kind": "Drop Table"}, 400),
        ({**TASK, "title": ""}, 400),
        ({**TASK, "due": "tomorrow"}, 400),
        ({**TASK, "body": {"blob": "x" * 70_000}}, 413),
    ]
    for body, status in cases:
        assert p.client.post(url, json=body, headers=p.headers).status_code == status, body
    # tasks go down only: the city cannot send one to its parent
    assert c.client.post(url, json={**TASK, "to": PROVINCE}, headers=c.headers).status_code == 422
    steward = bearer(p.settings.data_dir, org="education", role="steward")
    assert p.client.post(url, json=TASK, headers=steward).status_code == 403
    assert p.client.post(url, json=TASK, headers={"Authorization": ""}).status_code == 401
    citizen = bearer(p.settings.data_dir, org="citizen", role="citizen")
    assert p.client.get(url, headers=citizen).status_code == 403
    assert p.client.get("/api/federation/peers", headers=citizen).status_code == 403
    assert _tasks(p, "sent") == []


def test_a_refused_message_is_kept_and_does_not_block(pair: tuple[Node, Node]) -> None:
    p, c = pair
    # a status update about a task the province never sent: the province answers 404
    with c.engine.begin() as conn:
        outbox.enqueue(
            conn,
            peer_code=PROVINCE,
            kind=outbox.MessageKind.task_status,
            resource_id="f" * 32,
            payload={
                "message_id": "e" * 32,
                "task_id": "f" * 32,
                "seq": 1,
                "status": "done",
                "by": "x",
                "at": datetime.now(UTC).isoformat(),
            },
            message_id="e" * 32,
        )
    c.client.post(
        "/api/federation/escalations",
        json={"event_id": "e1", "reason": "r"},
        headers=c.headers,
    )
    report = c.drain()
    assert report.refused == 1 and report.sent == 1
    with c.engine.connect() as conn:
        states = dict(conn.execute(select(outbox_table.c.kind, outbox_table.c.state)).all())
    assert states == {"task_status": "refused", "escalation": "sent"}


def test_peers_route_and_registration_refresh(pair: tuple[Node, Node]) -> None:
    p, c = pair
    peers = p.client.get("/api/federation/peers", headers=p.headers).json()
    assert [(x["code"], x["relation"], x["state"]) for x in peers] == [(CITY, "child", "never")]
    token = trust.peer_token(data_dir=c.settings.data_dir, caller=CITY, audience=PROVINCE)
    registration = {"code": CITY, "level": "city", "url": C_URL, "version": "9.9.9"}
    response = p.client.post(
        "/api/nodes/register", json=registration, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    peer = p.client.get("/api/federation/peers", headers=p.headers).json()[0]
    assert peer["state"] == "ok" and peer["version"] == "9.9.9" and peer["lag_seconds"] < 5
    assert peer["name_zh"] == "济南市"
