"""The temporal evolution of deletions and of the scope (clauses 4.5.6, 4.18, 5.7.4.4, C.5.16).

A deleted attribute leaves an instance of the NGSI-LD Null with deletedAt, seen on the
deletedAt time axis only; the scope is a temporal Property whose instances say when each
scope was valid, and a temporal scopeQ selects entities, and their instances, by it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings

B = "/ngsi-ld/v1"
CAR = "urn:ngsi-ld:Vehicle:car"
WINDOW = {
    "timerel": "between",
    "timeAt": "2026-03-01T12:00:00Z",
    "endTimeAt": "2026-03-01T13:00:00Z",
}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(
        create_app(load_settings(data_dir=tmp_path, anonymous_role="bureau_admin"))
    ) as c:
        yield c


def _speeds(*points: tuple[str, str]) -> list[dict[str, Any]]:
    return [
        {"type": "Property", "value": v, "observedAt": f"2026-03-01T{t}:00Z"} for v, t in points
    ]


def _scope(*points: tuple[Any, str]) -> list[dict[str, Any]]:
    return [
        {"type": "Property", "value": v, "observedAt": f"2026-03-01T{t}:00Z"} for v, t in points
    ]


def test_a_deleted_attribute_shows_on_the_deleted_at_axis_only(client: TestClient) -> None:
    car = {
        "id": CAR,
        "type": "Vehicle",
        "speed": _speeds(("1", "10:00")),
        "name": {"type": "LanguageProperty", "languageMap": {"en": "car"}},
    }
    assert client.post(f"{B}/entities", json=car).status_code == 201
    assert client.delete(f"{B}/entities/{CAR}/attrs/name").status_code == 204
    deleted = client.get(f"{B}/temporal/entities/{CAR}", params={"timeproperty": "deletedAt"})
    assert deleted.status_code == 200
    body = deleted.json()
    assert "speed" not in body  # nothing of it was deleted
    [mark] = body["name"]
    assert mark["type"] == "LanguageProperty"
    assert mark["languageMap"] == {"@none": "urn:ngsi-ld:null"}
    assert mark["deletedAt"].startswith("20")
    values = client.get(
        f"{B}/temporal/entities/{CAR}",
        params={"timeproperty": "deletedAt", "options": "temporalValues"},
    ).json()
    [(value, at)] = values["name"]["languageMaps"]
    assert value == {"languageMap": {"@none": "urn:ngsi-ld:null"}}
    assert at[:19] == mark["deletedAt"][:19]
    # on the default axis the deletion is not an observation
    default = client.get(f"{B}/temporal/entities/{CAR}").json()
    assert all("deletedAt" not in i for i in default.get("name", []))
    assert [i["value"] for i in default["speed"]] == ["1"]


def test_a_null_in_an_update_is_a_deletion_too(client: TestClient) -> None:
    car = {"id": CAR, "type": "Vehicle", "speed": {"type": "Property", "value": 3}}
    assert client.post(f"{B}/entities", json=car).status_code == 201
    gone = {"speed": {"type": "Property", "value": "urn:ngsi-ld:null"}}
    assert client.patch(f"{B}/entities/{CAR}/attrs", json=gone).status_code == 204
    body = client.get(f"{B}/temporal/entities/{CAR}", params={"timeproperty": "deletedAt"}).json()
    assert [(i["value"], "deletedAt" in i) for i in body["speed"]] == [("urn:ngsi-ld:null", True)]


def test_scope_changes_through_the_entity_api_are_its_temporal_evolution(
    client: TestClient,
) -> None:
    car = {"id": CAR, "type": "Vehicle", "scope": "/Old", "speed": {"type": "Property", "value": 1}}
    assert client.post(f"{B}/entities", json=car).status_code == 201
    assert client.patch(f"{B}/entities/{CAR}", json={"scope": "/New"}).status_code == 204
    answer = client.get(f"{B}/temporal/entities/{CAR}", params={"options": "sysAttrs"}).json()
    assert [i["value"] for i in answer["scope"]] == ["/Old", "/New"]
    for instance in answer["scope"]:
        assert instance["type"] == "Property"
        assert instance["observedAt"] == instance["modifiedAt"]
    assert client.get(f"{B}/entities/{CAR}").json()["scope"] == "/New"  # merge sets it
    assert client.delete(f"{B}/entities/{CAR}/attrs/scope").status_code == 204
    deleted = client.get(
        f"{B}/temporal/entities/{CAR}", params={"timeproperty": "deletedAt"}
    ).json()
    assert [(i["value"], "deletedAt" in i) for i in deleted["scope"]] == [([], True)]


@pytest.fixture
def fleet(client: TestClient) -> TestClient:
    # scope set mid-window (/M at 12:10), replaced mid-window (/R until 12:30, then /S),
    # set only after the window (/Z at 14:00), and never (bare)
    fleet = {
        "mid": (_scope(("/M", "12:10")), _speeds(("midpre", "12:05"), ("midpost", "12:15"))),
        "rep": (
            _scope(("/R", "10:00"), ("/S", "12:30")),
            _speeds(("repold", "12:15"), ("repnew", "12:45")),
        ),
        "late": (_scope(("/Z", "14:00")), _speeds(("lateval", "12:05"))),
        "ab": (_scope((["/A/B", "/C"], "10:00")), _speeds(("abval", "12:05"))),
        "bare": (None, _speeds(("bareval", "12:05"))),
    }
    for name, (scope, speed) in fleet.items():
        body: dict[str, Any] = {"id": f"urn:ngsi-ld:Vehicle:{name}", "type": "Vehicle"}
        body["speed"] = speed
        if scope is not None:
            body["scope"] = scope
        assert client.post(f"{B}/temporal/entities", json=body).status_code == 201
    return client


def _query(client: TestClient, scope_q: str) -> str:
    answer = client.get(
        f"{B}/temporal/entities", params={"type": "Vehicle", "scopeQ": scope_q, **WINDOW}
    )
    assert answer.status_code == 200
    return answer.text


def test_a_temporal_scope_query_takes_the_scope_valid_in_the_window(fleet: TestClient) -> None:
    found = _query(fleet, "/M")
    assert "midpost" in found and "midpre" not in found  # only once /M was valid
    old, new = _query(fleet, "/R"), _query(fleet, "/S")
    assert "repold" in old and "repnew" not in old
    assert "repnew" in new and "repold" not in new
    assert "Vehicle:late" not in _query(fleet, "/Z")  # valid only after the window
    anything = _query(fleet, "/#")
    assert "Vehicle:bare" not in anything and "Vehicle:late" not in anything
    assert "Vehicle:ab" in anything
    both = _query(fleet, "(/A/B;/C)")
    assert "Vehicle:ab" in both and "/A/B" in both  # the scope set before the window shows


def test_the_current_scope_follows_the_latest_instance(fleet: TestClient) -> None:
    assert fleet.get(f"{B}/entities/urn:ngsi-ld:Vehicle:rep").json()["scope"] == "/S"


@pytest.mark.parametrize(
    "scope",
    [
        [{"type": "Property"}],
        [{"type": "Relationship", "object": "urn:x:1"}],
        [{"type": "Property", "value": "no-slash"}],
        [{"type": "Property", "value": "/A"}, 7],
    ],
)
def test_a_malformed_temporal_scope_is_bad_request_data(client: TestClient, scope: Any) -> None:
    body = {"id": CAR, "type": "Vehicle", "scope": scope, "speed": _speeds(("1", "10:00"))}
    answer = client.post(f"{B}/temporal/entities", json=body)
    assert answer.status_code == 400
    assert answer.json()["type"].endswith("BadRequestData")
    assert client.get(f"{B}/temporal/entities/{CAR}").status_code == 404  # nothing written


def test_batch_creates_and_upserts_record_the_scope_too(client: TestClient) -> None:
    ops = f"{B}/entityOperations/upsert"
    first = [
        {"id": CAR, "type": "Vehicle", "scope": "/A", "speed": {"type": "Property", "value": 1}}
    ]
    assert client.post(ops, json=first).status_code == 201
    again = [{"id": CAR, "type": "Vehicle", "scope": ["/B", "/C"]}]
    assert client.post(ops, json=again).status_code == 204
    answer = client.get(f"{B}/temporal/entities/{CAR}").json()
    assert [i["value"] for i in answer["scope"]] == ["/A", ["/B", "/C"]]
