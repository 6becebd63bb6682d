"""No read path around the gate: every route in /openapi.json, walked with canary data.

A table and an entity type hold canary personal data. Every route is called without a token
(it must be 401 unless it is public) and with the token of a department that holds no grant;
no response may contain a canary value, whatever its status.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.governance.identity.middleware import is_public
from conftest import bearer

ID_NUMBER = "370102199001011234"
PHONE = "13900001111"
NAME = "欧阳测试"
CANARIES = (ID_NUMBER, PHONE, NAME, "1990-01-01")
TABLE = {
    "department": "public_security",
    "name": "residents",
    "primary_key": ["person_id"],
    "columns": [
        {"name": "person_id", "type": "string"},
        {"name": "id_number", "type": "string"},
        {"name": "name", "type": "string"},
        {"name": "phone", "type": "string"},
        {"name": "birth_date", "type": "date"},
        {"name": "residence_county", "type": "string"},
    ],
}
ENTITY = {
    "id": "urn:ngsi-ld:Patient:1",
    "type": "Patient",
    "idNumber": {"type": "Property", "value": ID_NUMBER},
    "phone": {"type": "Property", "value": PHONE, "observedAt": "2026-11-01T08:00:00Z"},
}
SAMPLES = {
    "department": "public_security",
    "name": "residents",
    "dataset_id": "public_security/residents",
    "entity_id": "urn:ngsi-ld:Patient:1",
    "attr": "phone",
    "attr_id": "phone",
    "type_name": "Patient",
    "code": "370102",
}
BODIES: dict[str, Any] = {
    "/api/sql": {"sql": "select * from public_security.residents"},
    "/ngsi-ld/v1/entityOperations/{operation}": {
        "type": "Query",
        "entities": [{"type": "Patient"}],
    },
    "/api/verification/{question}": {"params": {"id_number": ID_NUMBER, "county_code": "370102"}},
    "/api/sharing/requests": {
        "dataset_id": "public_security/residents",
        "fields": ["id_number"],
        "purpose": "x",
        "legal_basis": "x",
        "duration_days": 1,
    },
}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    data = tmp_path_factory.mktemp("walk")
    with TestClient(create_app(load_settings(data_dir=data))) as client:
        owner = bearer(data, org="public_security", role="steward")
        assert client.post("/api/tables", json=TABLE, headers=owner).status_code == 201
        csv = (
            "person_id,id_number,name,phone,birth_date,residence_county\n"
            f"p1,{ID_NUMBER},{NAME},{PHONE},1990-01-01,370102\n"
        )
        loaded = client.post(
            "/api/tables/public_security/residents/loads",
            content=csv,
            headers={**owner, "content-type": "text/csv"},
        )
        assert loaded.json()["accepted"] == 1
        entry = {
            "id": "ngsi-ld:Patient",
            "title_en": "Patients",
            "owner_department": "health",
            "data_level": "important",
            "sharing_type": "conditional",
            "fields": [
                {"name": "idNumber", "personal": "sensitive", "mask": "id_number"},
                {"name": "phone", "personal": "personal", "mask": "phone"},
            ],
        }
        health = bearer(data, org="health", role="steward")
        assert client.post("/api/catalog", json=entry, headers=health).status_code == 201
        assert client.post("/ngsi-ld/v1/entities", json=ENTITY, headers=health).status_code == 201
        yield client, data


def _routes(client: TestClient) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    return [
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]


def _fill(path: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1).split(":")[0]
        return SAMPLES.get(name, "x")

    return re.sub(r"\{([^}]+)\}", value, path)


def _call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> Any:
    url = _fill(path)
    if method in ("POST", "PUT", "PATCH"):
        return client.request(method, url, json=BODIES.get(path, {}), headers=headers)
    return client.request(method, url, headers=headers)


def test_the_walk_covers_the_api(node: tuple[TestClient, Path]) -> None:
    paths = {p for _, p in _routes(node[0])}
    for expected in (
        "/api/tables/{department}/{name}/records",
        "/api/sql",
        "/ngsi-ld/v1/entities",
        "/ngsi-ld/v1/temporal/entities/{entity_id}",
        "/api/verification/{question}",
        "/api/audit",
    ):
        assert expected in paths


def test_without_a_token_every_private_route_is_401(node: tuple[TestClient, Path]) -> None:
    client, _ = node
    wrong = []
    for method, path in _routes(client):
        if is_public(_fill(path)):
            continue
        response = _call(client, method, path, {})
        if response.status_code != 401:
            wrong.append(f"{method} {path}: {response.status_code}")
    assert not wrong, wrong


@pytest.mark.parametrize(
    "org, role",
    [
        ("tourism", "steward"),
        ("education", "operator"),
        ("citizens", "citizen"),
        ("bureau", "auditor"),
    ],
)
def test_no_route_leaks_canaries_without_a_grant(
    node: tuple[TestClient, Path], org: str, role: str
) -> None:
    client, data = node
    headers = bearer(data, org=org, role=role, phone="13800000000")
    leaks = []
    for method, path in _routes(client):
        if method == "DELETE" or path.endswith(("/revoke", "/approve", "/reject", "/withdraw")):
            continue  # writes that would change the fixture; the read paths are what matter
        response = _call(client, method, path, headers)
        assert response.status_code < 500, f"{method} {path}: {response.status_code}"
        body = response.text
        found = [c for c in CANARIES if c in body]
        if found:
            leaks.append(f"{method} {path}: {found}")
    assert not leaks, leaks
