"""Transient entities and attribute instances (clause 4.22): expiresAt and the reaper."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.hub.ngsild import transient
from citybrain.hub.ngsild.models import ngsild_expiries, ngsild_history

BASE = "/ngsi-ld/v1"
PAST = "2020-01-01T00:00:00Z"
FUTURE = "2100-01-01T00:00:00Z"
V = "urn:ngsi-ld:Vehicle:"


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    # the test reaps when it wants to: the node's own reaper stays idle

    async def idle(engine: object) -> None:
        return None

    monkeypatch.setattr(transient, "run", idle)
    settings = load_settings(data_dir=tmp_path, anonymous_role="bureau_admin")
    with TestClient(create_app(settings)) as c:
        yield c


def _vehicle(n: int, **members: Any) -> dict[str, Any]:
    return {
        "id": f"{V}{n}",
        "type": "Vehicle",
        "speed": {"type": "Property", "value": 10, "observedAt": "2026-01-01T00:00:00Z"},
        **members,
    }


def _history(client: TestClient, entity_id: str, attribute_end: str) -> int:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    h = ngsild_history.c
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(ngsild_history)
                .where(h.entity_id == entity_id, h.attribute.endswith(attribute_end))
            ).scalar_one()
        )


def _reap(client: TestClient) -> int:
    return transient.reap(engine=client.app.state.engine)  # type: ignore[attr-defined]


def test_an_expired_entity_is_not_served_and_its_id_is_freed_history_kept(
    client: TestClient,
) -> None:
    assert client.post(f"{BASE}/entities", json=_vehicle(1, expiresAt=PAST)).status_code == 201
    assert client.post(f"{BASE}/entities", json=_vehicle(2, expiresAt=FUTURE)).status_code == 201
    assert client.get(f"{BASE}/entities/{V}1").status_code == 404
    assert [e["id"] for e in client.get(f"{BASE}/entities", params={"type": "Vehicle"}).json()] == [
        f"{V}2"
    ]
    assert _reap(client) == 1  # only vehicle 1 is due
    assert _history(client, f"{V}1", "speed") == 1  # the current state goes, the history stays
    # the id is free again
    assert client.post(f"{BASE}/entities", json=_vehicle(1)).status_code == 201
    assert client.get(f"{BASE}/entities/{V}1").status_code == 200


def test_an_expired_entity_not_yet_reaped_does_not_hold_its_id(client: TestClient) -> None:
    assert client.post(f"{BASE}/entities", json=_vehicle(3, expiresAt=PAST)).status_code == 201
    assert client.post(f"{BASE}/entities", json=_vehicle(3)).status_code == 201
    assert client.get(f"{BASE}/entities/{V}3").status_code == 200


def test_an_expired_attribute_instance_goes_with_its_history(client: TestClient) -> None:
    flash = {"type": "Property", "value": 1, "expiresAt": PAST}
    steady = {"type": "Property", "value": 2}
    body = _vehicle(4, flash=flash, steady=steady)
    assert client.post(f"{BASE}/entities", json=body).status_code == 201
    shown = client.get(f"{BASE}/entities/{V}4").json()
    assert "flash" not in shown and shown["steady"]["value"] == 2
    assert _history(client, f"{V}4", "flash") == 1
    _reap(client)
    assert _history(client, f"{V}4", "flash") == 0 and _history(client, f"{V}4", "steady") == 1
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:  # nothing else is due for that entity
        assert conn.execute(select(func.count()).select_from(ngsild_expiries)).scalar_one() == 0


def test_expires_at_is_a_system_member_shown_with_sys_attrs(client: TestClient) -> None:
    later = {"type": "Property", "value": 1, "expiresAt": FUTURE}
    created = client.post(f"{BASE}/entities", json=_vehicle(5, expiresAt=FUTURE, later=later))
    assert created.status_code == 201
    plain = client.get(f"{BASE}/entities/{V}5").json()
    assert "expiresAt" not in plain and "expiresAt" not in plain["later"]
    sys = client.get(f"{BASE}/entities/{V}5", params={"options": "sysAttrs"}).json()
    assert sys["expiresAt"] == FUTURE and sys["later"]["expiresAt"] == FUTURE


def test_merge_and_batch_upsert_make_entities_transient(client: TestClient) -> None:
    assert client.post(f"{BASE}/entities", json=_vehicle(6)).status_code == 201
    merged = client.patch(f"{BASE}/entities/{V}6", json={"id": f"{V}6", "expiresAt": PAST})
    assert merged.status_code == 204, merged.text
    assert client.get(f"{BASE}/entities/{V}6").status_code == 404
    soon = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    batch = [_vehicle(7, expiresAt=soon), _vehicle(8)]
    assert client.post(f"{BASE}/entityOperations/upsert", json=batch).status_code == 201
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        due = {r.entity_id for r in conn.execute(select(ngsild_expiries.c.entity_id))}
    assert due == {f"{V}6", f"{V}7"}
    assert transient.reap(engine=engine, now=datetime.now(UTC) + timedelta(hours=2)) == 2
    assert client.get(f"{BASE}/entities/{V}7").status_code == 404
    assert client.get(f"{BASE}/entities/{V}8").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        _vehicle(9, expiresAt="not-a-date"),
        _vehicle(9, expiresAt="2030-01-01T00:00:00"),  # not UTC
        _vehicle(9, flash={"type": "Property", "value": 1, "expiresAt": 5}),
    ],
)
def test_a_malformed_expires_at_is_bad_request_data(client: TestClient, body: Any) -> None:
    r = client.post(f"{BASE}/entities", json=body)
    assert r.status_code == 400 and r.json()["type"].endswith("BadRequestData"), r.text
    assert client.get(f"{BASE}/entities/{V}9").status_code == 404


def test_the_node_reaps_on_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reaper started with the node removes an expired entity within a pass or two."""
    monkeypatch.setattr(transient, "REAP_SECONDS", 0.05)
    settings = load_settings(data_dir=tmp_path, anonymous_role="bureau_admin")
    with TestClient(create_app(settings)) as client:
        soon = (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert client.post(f"{BASE}/entities", json=_vehicle(10, expiresAt=soon)).status_code == 201
        engine = client.app.state.engine  # type: ignore[attr-defined]

        def due() -> int:
            with engine.connect() as conn:
                return int(
                    conn.execute(select(func.count()).select_from(ngsild_expiries)).scalar_one()
                )

        deadline = time.monotonic() + 10
        while due() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert due() == 0  # reaped by the node, not by a read
        assert client.post(f"{BASE}/entities", json=_vehicle(10)).status_code == 201


def test_the_null_makes_a_transient_entity_durable(client: TestClient) -> None:
    assert client.post(f"{BASE}/entities", json=_vehicle(11, expiresAt=FUTURE)).status_code == 201
    r = client.patch(f"{BASE}/entities/{V}11", json={"expiresAt": "urn:ngsi-ld:null"})
    assert r.status_code == 204, r.text
    shown = client.get(f"{BASE}/entities/{V}11", params={"options": "sysAttrs"}).json()
    assert "expiresAt" not in shown
