"""Linked Entity retrieval (clause 4.5.23): join=inline|flat, joinLevel, nested pick/omit."""

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
BUILDING = "urn:ngsi-ld:Building:b1"
PARIS = "urn:ngsi-ld:City:Paris"
FRANCE = "urn:ngsi-ld:Country:France"


def _rel(target: str) -> dict[str, str]:
    return {"type": "Relationship", "object": target}


def _prop(value: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings(data_dir=tmp_path, anonymous_role="bureau_admin")
    with TestClient(create_app(settings)) as c:
        for entity in (
            {"id": BUILDING, "type": "Building", "name": _prop("B1"), "locatedAt": _rel(PARIS)},
            {
                "id": PARIS,
                "type": "City",
                "name": _prop("Paris"),
                "description": _prop("capital"),
                "isInCountry": _rel(FRANCE),
            },
            {"id": FRANCE, "type": "Country", "name": _prop("France"), "description": _prop("EU")},
        ):
            assert c.post(f"{BASE}/entities", json=entity).status_code == 201
        yield c


def _get(client: TestClient, path: str, **params: str) -> Any:
    r = client.get(f"{BASE}{path}", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_inline_puts_the_linked_entity_into_the_relationship(client: TestClient) -> None:
    got = _get(client, f"/entities/{BUILDING}", join="inline", joinLevel="1")
    assert got["locatedAt"]["object"] == PARIS
    city = got["locatedAt"]["entity"]
    assert city["id"] == PARIS and city["name"] == _prop("Paris")
    # one hop: the city's own relationship is not followed
    assert "entity" not in city["isInCountry"]
    two = _get(client, f"/entities/{BUILDING}", join="inline", joinLevel="2")
    assert two["locatedAt"]["entity"]["isInCountry"]["entity"]["id"] == FRANCE
    # keyValues: the linked entity stands in place of the object
    kv = _get(client, f"/entities/{BUILDING}", join="inline", options="keyValues")
    assert kv["locatedAt"]["id"] == PARIS and kv["locatedAt"]["name"] == "Paris"
    # sysAttrs reach the linked entity too
    sys = _get(client, f"/entities/{BUILDING}", join="inline", options="sysAttrs")
    assert "createdAt" in sys["locatedAt"]["entity"]


def test_flat_lists_each_linked_entity_once_after_the_others(client: TestClient) -> None:
    got = _get(client, f"/entities/{BUILDING}", join="flat", joinLevel="2")
    assert [e["id"] for e in got] == [BUILDING, PARIS, FRANCE]
    assert "entity" not in got[0]["locatedAt"]
    queried = _get(client, "/entities", type="Building,City", join="flat", joinLevel="2")
    assert sorted(e["id"] for e in queried) == sorted([BUILDING, PARIS, FRANCE])
    assert len(queried) == 3  # Paris is matched and linked: returned once
    # without join the read is as before
    assert _get(client, f"/entities/{BUILDING}")["locatedAt"] == _rel(PARIS)


def test_nested_pick_and_omit_select_members_of_linked_entities(client: TestClient) -> None:
    picked = _get(
        client,
        f"/entities/{BUILDING}",
        join="inline",
        joinLevel="2",
        pick="id,locatedAt{id,name,isInCountry{id,description}}",
    )
    assert picked == {
        "id": BUILDING,
        "locatedAt": {
            **_rel(PARIS),
            "entity": {
                "id": PARIS,
                "name": _prop("Paris"),
                "isInCountry": {
                    **_rel(FRANCE),
                    "entity": {"id": FRANCE, "description": _prop("EU")},
                },
            },
        },
    }
    omitted = _get(
        client, f"/entities/{BUILDING}", join="flat", joinLevel="2", omit="type,locatedAt{name}"
    )
    assert set(omitted[0]) == {"id", "name", "locatedAt"}
    assert set(omitted[1]) == {"id", "type", "description", "isInCountry"}
    assert set(omitted[2]) == {"id", "type", "name", "description"}
    # a relationship the projection leaves out is not followed
    assert _get(client, f"/entities/{BUILDING}", join="flat", pick="id,name") == {
        "id": BUILDING,
        "name": _prop("B1"),
    }


def test_a_missing_linked_entity_leaves_the_relationship_as_it_is(client: TestClient) -> None:
    assert client.delete(f"{BASE}/entities/{PARIS}").status_code == 204
    for join in ("inline", "flat"):
        got = _get(client, f"/entities/{BUILDING}", join=join)
        assert got["locatedAt"] == _rel(PARIS)


@pytest.mark.parametrize(
    "params",
    [
        {"join": "sideways"},
        {"join": "inline", "joinLevel": "0"},
        {"join": "inline", "joinLevel": "x"},
        {"join": "inline", "joinLevel": "11"},
        {"pick": "locatedAt{name}"},  # a linked selection needs join
        {"join": "inline", "joinLevel": "1", "pick": "locatedAt{isInCountry{name}}"},
        {"join": "inline", "joinLevel": "1", "omit": "locatedAt{isInCountry{name}}"},
        {"join": "inline", "joinLevel": "10", "pick": "a{" * 11 + "name" + "}" * 11},
        {"join": "inline", "pick": "name", "omit": "name"},
    ],
)
def test_bad_join_requests_are_bad_request_data(client: TestClient, params: dict[str, str]) -> None:
    for path in (f"/entities/{BUILDING}", "/entities?type=Building"):
        r = client.get(f"{BASE}{path}", params=params)
        assert r.status_code == 400, (path, params, r.text)
        assert r.json()["type"] == ERR + "BadRequestData"


def test_a_query_by_post_joins_as_the_query_parameters_do(client: TestClient) -> None:
    body = {"type": "Query", "entities": [{"type": "Building"}], "join": "flat", "joinLevel": 2}
    r = client.post(f"{BASE}/entityOperations/query", json=body)
    assert r.status_code == 200, r.text
    assert [e["id"] for e in r.json()] == [BUILDING, PARIS, FRANCE]
    r = client.post(f"{BASE}/entityOperations/query", json={**body, "join": "sideways"})
    assert r.status_code == 400
