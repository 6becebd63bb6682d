"""Ordering of query results (clause 4.23): orderBy, distance, mixed kinds, collation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings

BASE = "/ngsi-ld/v1"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
P = "urn:ngsi-ld:Building:"


def _building(suffix: str, name: str, rank: Any, lon: float, lat: float) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "id": P + suffix,
        "type": "Building",
        "name": {"type": "Property", "value": name, "floors": {"type": "Property", "value": 3}},
        "address": {"type": "Property", "value": {"city": name.upper()}},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}},
    }
    if rank is not None:
        entity["rank"] = {"type": "Property", "value": rank}
    return entity


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings(data_dir=tmp_path, anonymous_role="bureau_admin")
    with TestClient(create_app(settings)) as c:
        # created in the order c, a, b; ids in the order a, b, c
        for entity in (
            _building("c", "b", None, 10.0, 45.0),
            _building("a", "á", 5, 8.01, 40.01),
            _building("b", "A", "abc", 9.0, 41.0),
        ):
            assert c.post(f"{BASE}/entities", json=entity).status_code == 201
        yield c


def _ids(client: TestClient, **params: str) -> list[str]:
    r = client.get(f"{BASE}/entities", params={"type": "Building", **params})
    assert r.status_code == 200, r.text
    return [e["id"].removeprefix(P) for e in r.json()]


def test_order_by_members_attributes_and_directions(client: TestClient) -> None:
    assert _ids(client) == ["a", "b", "c"]  # without orderBy: id order
    assert _ids(client, orderBy="id;desc") == ["c", "b", "a"]
    assert _ids(client, orderBy="createdAt") == ["c", "a", "b"]
    assert _ids(client, orderBy="name.createdAt;desc") == ["b", "a", "c"]
    # code points: "A" < "b" < "á"
    assert _ids(client, orderBy="name") == ["b", "c", "a"]
    assert _ids(client, orderBy="name;desc") == ["a", "c", "b"]
    assert _ids(client, orderBy="address[city];desc") == ["a", "c", "b"]
    # ties on the first key fall to the next
    assert _ids(client, orderBy="name.floors,id;desc") == ["c", "b", "a"]
    # numbers, then strings; an entity without the value comes last either way
    assert _ids(client, orderBy="rank") == ["a", "b", "c"]
    assert _ids(client, orderBy="rank;desc") == ["b", "a", "c"]
    # pages are cut after ordering
    assert _ids(client, orderBy="id;desc", limit="1", offset="1") == ["b"]


def test_order_by_distance_and_collation(client: TestClient) -> None:
    assert _ids(client, orderBy="location;dist-asc", orderFrom="[8,40]") == ["a", "b", "c"]
    assert _ids(client, orderBy="location;dist-desc", orderFrom="[8,40]") == ["c", "b", "a"]
    # the root collation ranks "á" with "a", before "b"
    assert _ids(client, orderBy="name", collation="und") == ["b", "a", "c"]
    body = {
        "type": "Query",
        "entities": [{"type": "Building"}],
        "ordering": {"orderBy": ["location;dist-asc"], "coordinates": [10, 45]},
    }
    r = client.post(f"{BASE}/entityOperations/query", json=body)
    assert [e["id"].removeprefix(P) for e in r.json()] == ["c", "b", "a"]


@pytest.mark.parametrize(
    "params",
    [
        {"orderBy": "name;sideways"},
        {"orderBy": "location;dist-asc"},  # no reference to measure from
        {"orderBy": "location;dist-asc", "orderFrom": "8,40"},
        {"orderBy": "location;dist-asc", "orderFrom": "[800,40]"},
        {"orderBy": "id;dist-asc", "orderFrom": "[8,40]"},
        {"orderBy": "name", "collation": "!!nope"},
        {"orderBy": "na me"},
        {"orderFrom": "[8,40]"},
    ],
)
def test_bad_ordering_is_bad_request_data(client: TestClient, params: dict[str, str]) -> None:
    r = client.get(f"{BASE}/entities", params={"type": "Building", **params})
    assert r.status_code == 400, (params, r.text)
    assert r.json()["type"] == ERR + "BadRequestData"


@pytest.mark.parametrize(
    "ordering",
    [
        "name",
        {"orderBy": "name"},
        {"orderBy": ["location;dist-asc"], "coordinates": "8,40"},
        {"orderBy": ["id"], "geometry": 5},
        {"orderBy": ["id"], "collation": "not a tag!!"},
    ],
)
def test_bad_ordering_of_a_query_by_post(client: TestClient, ordering: Any) -> None:
    body = {"type": "Query", "entities": [{"type": "Building"}], "ordering": ordering}
    r = client.post(f"{BASE}/entityOperations/query", json=body)
    assert r.status_code == 400, (ordering, r.text)


def test_ordering_more_matches_than_it_sorts_is_too_many_results(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from citybrain.hub.ngsild import api

    monkeypatch.setattr(api, "MAX_ORDERED", 2)
    r = client.get(f"{BASE}/entities", params={"type": "Building", "orderBy": "name"})
    assert r.status_code == 403 and r.json()["type"] == ERR + "TooManyResults"
    assert _ids(client, orderBy="name", idPattern=".*[ab]$") == ["b", "a"]


def test_temporal_queries_order_by_id_only(client: TestClient) -> None:
    r = client.get(f"{BASE}/temporal/entities", params={"type": "Building", "orderBy": "id;desc"})
    assert r.status_code == 200, r.text
    assert [e["id"].removeprefix(P) for e in r.json()] == ["c", "b", "a"]
    r = client.get(f"{BASE}/temporal/entities", params={"type": "Building", "orderBy": "name"})
    assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData"
