"""The fast lane of PATCH /entities/{id}/attrs/{attr}: the route's answers, past FastAPI."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.core.errors import BadInput, Forbidden
from citybrain.governance.identity.tokens import issue_token
from citybrain.governance.principal import Principal, Role
from citybrain.hub.ngsild import lane

BASE = "/ngsi-ld/v1"
EID = "urn:ngsi-ld:AirQualityObserved:001"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
ADMIN = Principal(subject="t", org="bureau", role=Role.bureau_admin, issuer="370000")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings(data_dir=tmp_path, anonymous_role="bureau_admin")
    with TestClient(create_app(settings)) as c:
        created = c.post(
            f"{BASE}/entities",
            json={
                "id": EID,
                "type": "AirQualityObserved",
                "pm25": {"type": "Property", "value": 35, "unitCode": "GQ"},
            },
        )
        assert created.status_code == 201, created.text
        yield c


def _scope(path: str, headers: dict[str, str], query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "method": "PATCH",
        "path": path,
        "query_string": query,
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }


def _lane(client: TestClient, scope: dict[str, Any], body: bytes) -> Any:
    return asyncio.run(lane.partial_update(client.app, scope, body, ADMIN))


JSON = {"content-type": "application/json"}


def test_the_lane_updates_the_common_case(client: TestClient) -> None:
    path = f"{BASE}/entities/{EID}/attrs/pm25"
    assert _lane(client, _scope(path, JSON), b'{"value": 40}') == (204, [], b"")
    pm25 = client.get(f"{BASE}/entities/{EID}").json()["pm25"]
    assert pm25["value"] == 40 and pm25["unitCode"] == "GQ"  # a fragment over the instance


@pytest.mark.parametrize(
    ("path", "headers", "query", "body"),
    [
        ("/attrs/pm25", {"content-type": "application/ld+json"}, b"", b'{"value": 1}'),
        ("/attrs/pm25", {**JSON, "link": "<http://x/c.jsonld>"}, b"", b'{"value": 1}'),
        ("/attrs/pm25", {**JSON, "ngsild-tenant": "t1"}, b"", b'{"value": 1}'),
        ("/attrs/pm25", JSON, b"type=AirQualityObserved", b'{"value": 1}'),
        ("/attrs/pm25", JSON, b"", b'{"value": 1, "datasetId": "urn:d:1"}'),
        ("/attrs/pm25", JSON, b"", b'{"value": 1, "@context": "http://x/c.jsonld"}'),
        ("/attrs/pm25", JSON, b"", b"[1]"),
        ("/attrs/pm25", JSON, b"", b"{not json"),
        ("/attrs/pm25/", JSON, b"", b'{"value": 1}'),
        ("/attrs", JSON, b"", b'{"value": 1}'),
    ],
)
def test_the_lane_declines_what_is_not_the_common_case(
    client: TestClient, path: str, headers: dict[str, str], query: bytes, body: bytes
) -> None:
    scope = _scope(f"{BASE}/entities/{EID}{path}", headers, query)
    assert _lane(client, scope, body) is None
    assert client.get(f"{BASE}/entities/{EID}").json()["pm25"]["value"] == 35


def test_the_lane_refuses_as_the_route_does(client: TestClient) -> None:
    with pytest.raises(BadInput, match="is not a URI"):
        _lane(client, _scope(f"{BASE}/entities/notauri/attrs/pm25", JSON), b'{"value": 1}')
    auditor = Principal(subject="a", org="audit", role=Role.auditor, issuer="370000")
    path = f"{BASE}/entities/{EID}/attrs/pm25"
    with pytest.raises(Forbidden, match="may not change context data"):
        asyncio.run(lane.partial_update(client.app, _scope(path, JSON), b'{"value": 1}', auditor))
    assert client.get(f"{BASE}/entities/{EID}").json()["pm25"]["value"] == 35


@pytest.mark.parametrize(
    ("path", "body", "status", "kind"),
    [
        (f"{EID}/attrs/pm25", b'{"value": 41}', 204, None),
        ("urn:ngsi-ld:AirQualityObserved:404/attrs/pm25", b'{"value": 1}', 404, "ResourceNotFound"),
        (f"{EID}/attrs/no2", b'{"value": 1}', 404, "ResourceNotFound"),
        ("notauri/attrs/pm25", b'{"value": 1}', 400, "BadRequestData"),
        (f"{EID}/attrs/pm25", b"{not json", 400, "InvalidRequest"),
        (f"{EID}/attrs/pm25", b"", 400, "InvalidRequest"),
    ],
)
def test_over_http_the_lane_and_the_route_answer_alike(
    client: TestClient, path: str, body: bytes, status: int, kind: str | None
) -> None:
    url = f"{BASE}/entities/{path}"
    # the lane takes exactly application/json; with a charset parameter the route answers
    through_lane = client.patch(url, content=body, headers=JSON)
    through_route = client.patch(
        url, content=body, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert through_lane.status_code == through_route.status_code == status, through_lane.text
    if kind is not None:
        assert through_lane.json()["type"] == through_route.json()["type"] == ERR + kind
        assert through_lane.json()["title"] == through_route.json()["title"]


def test_over_http_an_auditor_is_refused_and_nothing_changes(
    client: TestClient, tmp_path: Path
) -> None:
    token = issue_token(
        data_dir=tmp_path, issuer="370000", subject="a", org="audit", role="auditor"
    )
    refused = client.patch(
        f"{BASE}/entities/{EID}/attrs/pm25",
        json={"value": 99},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert refused.status_code == 403 and refused.json()["type"] == ERR + "Forbidden"
    assert client.get(f"{BASE}/entities/{EID}").json()["pm25"]["value"] == 35
