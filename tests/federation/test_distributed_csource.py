"""NGSI-LD context source registrations: create, list, retrieve, update, delete, validation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.core.db import create_engine_for, upgrade
from citybrain.hub.ngsild import csource
from citybrain.hub.ngsild.jsonld import ContextStore
from conftest import bearer

B = "/ngsi-ld/v1/csourceRegistrations"
VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
REG = {
    "id": "urn:ngsi-ld:ContextSourceRegistration:air-jinan",
    "type": "ContextSourceRegistration",
    "registrationName": "air-jinan",
    "information": [
        {"entities": [{"type": "AirQualityObserved"}], "propertyNames": ["pm25", "no2"]}
    ],
    "endpoint": "http://jinan.example:8000",
    "expiresAt": "2099-01-01T00:00:00Z",
    "management": {"timeout": 1500},
}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    with TestClient(create_app(load_settings(data_dir=tmp_path))) as client:
        yield client, tmp_path


def _admin(data: Path) -> dict[str, str]:
    return bearer(data, org="bureau", role="bureau_admin")


def test_create_retrieve_list_update_delete(node: tuple[TestClient, Path]) -> None:
    client, data = node
    created = client.post(B, json=REG, headers=_admin(data))
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == f"{B}/{REG['id']}"
    got = client.get(f"{B}/{REG['id']}", headers=_admin(data))
    assert got.status_code == 200
    body = got.json()
    assert body["information"] == REG["information"]  # compacted back with the core context
    assert body["endpoint"] == REG["endpoint"] and body["mode"] == "inclusive"
    assert body["expiresAt"] == "2099-01-01T00:00:00.000Z"
    assert "createdAt" in body and "modifiedAt" in body
    # a reader (any government role) lists; the type filter and count work
    reader = bearer(data, org="health", role="steward")
    other = {
        **REG,
        "id": "urn:ngsi-ld:ContextSourceRegistration:parking",
        "information": [{"entities": [{"type": "ParkingSpot"}]}],
    }
    assert client.post(B, json=other, headers=_admin(data)).status_code == 201
    listed = client.get(B, params={"type": "AirQualityObserved", "count": "true"}, headers=reader)
    assert [r["id"] for r in listed.json()] == [REG["id"]]
    assert listed.headers["NGSILD-Results-Count"] == "1"
    everything = client.get(B, params={"limit": 1}, headers=reader)
    assert len(everything.json()) == 1
    by_attr = client.get(B, params={"attrs": "no2"}, headers=reader)
    # the parking registration names no attributes, so it may hold no2 too
    assert {r["id"] for r in by_attr.json()} == {REG["id"], other["id"]}
    patched = client.patch(
        f"{B}/{REG['id']}",
        json={"endpoint": "http://jinan.example:9000", "description": "moved"},
        headers=_admin(data),
    )
    assert patched.status_code == 204, patched.text
    after = client.get(f"{B}/{REG['id']}", headers=reader).json()
    assert after["endpoint"] == "http://jinan.example:9000" and after["description"] == "moved"
    assert after["information"] == REG["information"]
    assert client.delete(f"{B}/{REG['id']}", headers=_admin(data)).status_code == 204
    assert client.get(f"{B}/{REG['id']}", headers=reader).status_code == 404


def test_a_generated_id_and_stored_iris(node: tuple[TestClient, Path]) -> None:
    client, data = node
    body = {k: v for k, v in REG.items() if k != "id"}
    created = client.post(B, json=body, headers=_admin(data))
    assert created.status_code == 201
    assert created.headers["Location"].startswith(f"{B}/{csource.ID_PREFIX}")
    engine = client.app.state.engine  # type: ignore[attr-defined]
    (row,) = csource.list_rows(engine=engine, tenant="")
    info = row["registration"]["information"][0]
    assert info["entities"][0]["type"] == [VOCAB + "AirQualityObserved"]
    assert info["propertyNames"] == [VOCAB + "pm25", VOCAB + "no2"]
    assert row["origin"] == "manual"


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"type": "Registration"}, 400),
        ({"type": None}, 400),
        ({"endpoint": None}, 400),
        ({"endpoint": "ftp://x"}, 400),
        ({"endpoint": "http://a b"}, 400),
        ({"information": []}, 400),
        ({"information": [{}]}, 400),
        ({"information": [{"entities": []}]}, 400),
        ({"information": [{"entities": [{"id": "urn:x:1"}]}]}, 400),
        ({"information": [{"entities": [{"type": "T", "idPattern": "("}]}]}, 400),
        ({"information": [{"entities": [{"type": "T", "id": "not a uri"}]}]}, 400),
        ({"information": [{"propertyNames": []}]}, 400),
        ({"information": [{"propertyNames": [1]}]}, 400),
        ({"information": [{"colour": ["red"]}]}, 400),
        ({"expiresAt": "2001-01-01T00:00:00Z"}, 400),
        ({"expiresAt": "tomorrow"}, 400),
        ({"management": {"timeout": -1}}, 400),
        ({"management": {"timeout": True}}, 400),
        ({"management": {"localOnly": "yes"}}, 400),
        ({"management": {"speed": 1}}, 400),
        ({"mode": "sideways"}, 400),
        ({"mode": "exclusive"}, 422),
        ({"status": "ok"}, 400),
        ({"colour": "red"}, 400),
        ({"registrationName": 5}, 400),
        ({"id": "no-uri"}, 400),
    ],
)
def test_bad_registrations_are_refused(
    node: tuple[TestClient, Path], change: dict[str, Any], status: int
) -> None:
    client, data = node
    body = {k: v for k, v in {**REG, **change}.items() if v is not None}
    response = client.post(B, json=body, headers=_admin(data))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/")


def test_conflict_unknown_and_roles(node: tuple[TestClient, Path]) -> None:
    client, data = node
    assert client.post(B, json=REG, headers=_admin(data)).status_code == 201
    again = client.post(B, json=REG, headers=_admin(data))
    assert again.status_code == 409 and again.json()["type"].endswith("AlreadyExists")
    missing = "urn:ngsi-ld:ContextSourceRegistration:none"
    assert client.get(f"{B}/{missing}", headers=_admin(data)).status_code == 404
    assert (
        client.patch(f"{B}/{missing}", json={"description": "x"}, headers=_admin(data)).status_code
        == 404
    )
    assert client.delete(f"{B}/{missing}", headers=_admin(data)).status_code == 404
    assert client.get(f"{B}/not-a-uri", headers=_admin(data)).status_code == 400
    # a patch that would break the registration, or rename it, is refused
    bad = client.patch(f"{B}/{REG['id']}", json={"endpoint": "nowhere"}, headers=_admin(data))
    assert bad.status_code == 400
    renamed = client.patch(f"{B}/{REG['id']}", json={"id": missing}, headers=_admin(data))
    assert renamed.status_code == 400
    empty = client.patch(f"{B}/{REG['id']}", json={}, headers=_admin(data))
    assert empty.status_code == 400
    # only the bureau manages where queries go; a steward reads
    steward = bearer(data, org="health", role="steward")
    other = {**REG, "id": "urn:ngsi-ld:ContextSourceRegistration:x"}
    assert client.post(B, json=other, headers=steward).status_code == 403
    assert client.delete(f"{B}/{REG['id']}", headers=steward).status_code == 403
    assert client.get(f"{B}/{REG['id']}", headers=steward).status_code == 200
    assert client.get(B).status_code == 401


def test_expired_registrations_are_not_active(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    engine = create_engine_for(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    terms = ContextStore().term_map(None)
    soon = datetime.now(UTC) + timedelta(seconds=60)
    reg = csource.validate({**REG, "expiresAt": soon.strftime("%Y-%m-%dT%H:%M:%SZ")}, terms)
    csource.create(engine=engine, tenant="", registration=reg)
    assert [r["id"] for r in csource.active(engine=engine, tenant="")] == [REG["id"]]
    later = soon + timedelta(seconds=1)
    assert csource.active(engine=engine, tenant="", now=later) == []
    engine.dispose()


def test_matching() -> None:
    terms = ContextStore().term_map(None)
    reg = csource.validate(
        {
            **REG,
            "information": [
                {
                    "entities": [
                        {"type": "AirQualityObserved", "idPattern": "urn:ngsi-ld:Air.*:jn-.*"}
                    ],
                    "propertyNames": ["pm25"],
                }
            ],
        },
        terms,
    )
    aq, park = VOCAB + "AirQualityObserved", VOCAB + "ParkingSpot"
    assert csource.matches(reg, types=[aq])
    assert csource.matches(reg, types=None)
    assert not csource.matches(reg, types=[park])
    assert csource.matches(reg, types=[aq], ids=["urn:ngsi-ld:AirQualityObserved:jn-1"])
    assert not csource.matches(reg, types=[aq], ids=["urn:ngsi-ld:AirQualityObserved:qd-1"])
    assert csource.matches(reg, types=[aq], attrs=[VOCAB + "pm25"])
    assert not csource.matches(reg, types=[aq], attrs=[VOCAB + "no2"])


def test_registrations_on_postgresql(postgres_url: str) -> None:
    engine = create_engine_for(postgres_url)
    upgrade(engine)
    terms = ContextStore().term_map(None)
    tenant = "csource_pg_test"
    reg = csource.validate({**REG, "id": "urn:ngsi-ld:ContextSourceRegistration:pg-1"}, terms)
    try:
        csource.create(engine=engine, tenant=tenant, registration=reg)
        with pytest.raises(Exception, match="already exists"):
            csource.create(engine=engine, tenant=tenant, registration=reg)
        row = csource.get(engine=engine, tenant=tenant, reg_id=reg["id"])
        assert csource.render(row, terms)["information"] == REG["information"]
        csource.patch(
            engine=engine,
            tenant=tenant,
            reg_id=reg["id"],
            fragment={"endpoint": "http://qingdao.example"},
            terms=terms,
        )
        assert [
            r["registration"]["endpoint"] for r in csource.active(engine=engine, tenant=tenant)
        ] == ["http://qingdao.example"]
    finally:
        csource.remove(engine=engine, tenant=tenant, reg_id=reg["id"])
        engine.dispose()
