"""NGSI-LD reads pass the gate: entity types as datasets, grants, masks, scopes, audit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings
from conftest import bearer

B = "/ngsi-ld/v1"
ENTRY = {
    "id": "ngsi-ld:CareVisit",
    "title_en": "Home care visits to elderly residents",
    "owner_department": "civil_affairs",
    "theme": "population",
    "data_level": "important",
    "sharing_type": "conditional",
    "scope_fields": ["county"],
    "fields": [
        {"name": "county"},
        {"name": "visitor", "personal": "personal", "mask": "name"},
        {"name": "phone", "personal": "personal", "mask": "phone"},
        {"name": "minutes"},
    ],
}


def _visit(n: int, county: str) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:CareVisit:{n}",
        "type": "CareVisit",
        "county": {"type": "Property", "value": county},
        "visitor": {"type": "Property", "value": "张小明"},
        "phone": {"type": "Property", "value": f"1381234{n:04d}"},
        "minutes": {"type": "Property", "value": 30 + n, "observedAt": "2026-11-01T08:00:00Z"},
    }


class Node:
    def __init__(self, client: TestClient, data: Path) -> None:
        self.client = client
        self.data = data

    def h(self, org: str, role: str = "steward", **kw: Any) -> dict[str, str]:
        return bearer(self.data, org=org, role=role, **kw)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with TestClient(create_app(load_settings(data_dir=tmp_path))) as client:
        n = Node(client, tmp_path)
        owner = n.h("civil_affairs")
        assert client.post("/api/catalog", json=ENTRY, headers=owner).status_code == 201
        batch = [_visit(i, "370102" if i % 2 else "370103") for i in range(6)]
        response = client.post(f"{B}/entityOperations/upsert", json=batch, headers=owner)
        assert response.status_code in (200, 201, 204), response.text
        air = {
            "id": "urn:ngsi-ld:AirQualityObserved:1",
            "type": "AirQualityObserved",
            "pm25": {"type": "Property", "value": 12},
        }
        # the sensors' types are catalogued as city management's open data
        sensors = n.h("city_management", "service")
        assert client.post(f"{B}/entities", json=air, headers=sensors).status_code == 201
        yield n


def _grant(node: Node, org: str = "health") -> str:
    body = {
        "dataset_id": "ngsi-ld:CareVisit",
        "fields": ["county", "phone", "minutes"],
        "row_scope": {"county": ["370102"]},
        "purpose": "chronic-disease follow-up",
        "legal_basis": "Basic Healthcare Law, art. 36",
        "duration_days": 30,
    }
    request = node.client.post("/api/sharing/requests", json=body, headers=node.h(org)).json()
    node.client.post(
        f"/api/sharing/requests/{request['id']}/approve",
        json={"reason": "ok"},
        headers=node.h("civil_affairs"),
    )
    final = node.client.post(
        f"/api/sharing/requests/{request['id']}/approve",
        json={"reason": "ok"},
        headers=node.h("bureau", "bureau_admin"),
    )
    assert final.json()["status"] == "approved", final.text
    return str(final.json()["grant_id"])


def test_without_a_grant_governed_types_are_invisible(node: Node) -> None:
    other = node.h("health")
    listed = node.client.get(f"{B}/entities", params={"type": "CareVisit"}, headers=other)
    assert listed.status_code == 200 and listed.json() == []
    one = node.client.get(f"{B}/entities/urn:ngsi-ld:CareVisit:1", headers=other)
    assert one.status_code == 403
    temporal = node.client.get(f"{B}/temporal/entities/urn:ngsi-ld:CareVisit:1", headers=other)
    assert temporal.status_code == 403
    query = node.client.post(
        f"{B}/entityOperations/query",
        json={"type": "Query", "entities": [{"type": "CareVisit"}]},
        headers=other,
    )
    assert query.status_code == 200 and query.json() == []
    # open context data (no catalog entry) stays readable to every department
    air = node.client.get(f"{B}/entities", params={"type": "AirQualityObserved"}, headers=other)
    assert [e["id"] for e in air.json()] == ["urn:ngsi-ld:AirQualityObserved:1"]


def test_the_owner_sees_everything(node: Node) -> None:
    listed = node.client.get(
        f"{B}/entities",
        params={"type": "CareVisit", "count": "true"},
        headers=node.h("civil_affairs"),
    )
    assert len(listed.json()) == 6 and listed.headers["NGSILD-Results-Count"] == "6"
    assert listed.json()[0]["visitor"]["value"] == "张小明"


def test_a_grant_projects_masks_and_scopes(node: Node) -> None:
    grant = _grant(node)
    health = node.h("health")
    listed = node.client.get(f"{B}/entities", params={"type": "CareVisit"}, headers=health).json()
    assert sorted(e["id"] for e in listed) == [f"urn:ngsi-ld:CareVisit:{i}" for i in (1, 3, 5)]
    for entity in listed:
        assert "visitor" not in entity  # not granted
        assert entity["phone"]["value"][3:7] == "****"
        assert entity["county"]["value"] == "370102"
    outside = node.client.get(f"{B}/entities/urn:ngsi-ld:CareVisit:2", headers=health)
    assert outside.status_code == 403
    # history: unmasked granted attributes only
    history = node.client.get(f"{B}/temporal/entities/urn:ngsi-ld:CareVisit:1", headers=health)
    assert history.status_code == 200, history.text
    assert "minutes" in history.json() and "phone" not in history.json()
    records = [json.loads(x) for x in (node.data / "audit" / "log.jsonl").read_text().splitlines()]
    reads = [r for r in records if r["action"] == "ngsild.read" and r["grant"] == grant]
    assert reads and reads[0]["rows"] == 3 and reads[0]["resource"] == "ngsi-ld:CareVisit"


def test_citizens_and_auditors(node: Node) -> None:
    citizen = node.h("citizens", "citizen", phone="13812340001")
    assert (
        node.client.get(f"{B}/entities/urn:ngsi-ld:CareVisit:1", headers=citizen).status_code == 403
    )
    assert (
        node.client.get(f"{B}/entities", params={"type": "CareVisit"}, headers=citizen).json() == []
    )
    auditor = node.h("bureau", "auditor")
    air = node.client.get(f"{B}/entities", params={"type": "AirQualityObserved"}, headers=auditor)
    assert air.json() == []


def test_only_the_owner_changes_governed_entity_types(node: Node) -> None:
    health = node.h("health")
    visit = _visit(9, "370102")
    assert node.client.post(f"{B}/entities", json=visit, headers=health).status_code == 403
    patch = {"minutes": {"type": "Property", "value": 1}}
    url = f"{B}/entities/urn:ngsi-ld:CareVisit:1/attrs"
    assert node.client.patch(url, json=patch, headers=health).status_code == 403
    gone = node.client.delete(f"{B}/entities/urn:ngsi-ld:CareVisit:1", headers=health)
    assert gone.status_code == 403
    batch = node.client.post(f"{B}/entityOperations/upsert", json=[visit], headers=health)
    assert batch.status_code == 207 and "belong to civil_affairs" in batch.text
    # the owner may; a type the catalog does not describe is open to every department
    assert node.client.patch(url, json=patch, headers=node.h("civil_affairs")).status_code == 204
    air = {"id": "urn:ngsi-ld:AirQualityObserved:2", "type": "AirQualityObserved"}
    assert node.client.post(f"{B}/entities", json=air, headers=health).status_code == 403
    bench = {"id": "urn:ngsi-ld:Bench:1", "type": "Bench"}
    assert node.client.post(f"{B}/entities", json=bench, headers=health).status_code == 201
    citizen = node.h("citizens", "citizen", phone="13812340001")
    bench2 = {**bench, "id": "urn:ngsi-ld:Bench:2"}
    assert node.client.post(f"{B}/entities", json=bench2, headers=citizen).status_code == 403
    owner_view = node.client.get(
        f"{B}/entities/urn:ngsi-ld:CareVisit:1", headers=node.h("civil_affairs")
    )
    assert owner_view.json()["minutes"]["value"] == 1


def test_every_write_request_leaves_evidence(node: Node) -> None:
    before = len((node.data / "audit" / "log.jsonl").read_text().splitlines())
    owner = node.h("civil_affairs")
    url = f"{B}/entities/urn:ngsi-ld:CareVisit:1/attrs"
    patch = {"minutes": {"type": "Property", "value": 2}}
    assert node.client.patch(url, json=patch, headers=owner).status_code == 204
    assert node.client.patch(url, json=patch, headers=node.h("health")).status_code == 403
    lines = (node.data / "audit" / "log.jsonl").read_text().splitlines()[before:]
    writes = [json.loads(x) for x in lines if '"ngsild.write"' in x]
    assert [(w["org"], w["result"], w["detail"]["status"]) for w in writes] == [
        ("civil_affairs", "ok", 204),
        ("health", "refused", 403),
    ]
    assert writes[0]["resource"] == f"PATCH {url}"


def test_notifications_carry_only_what_the_subscriber_may_read(node: Node) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from citybrain.hub.ngsild import notifier

    received: list[dict[str, Any]] = []

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/notify"
    try:
        for org in ("health", "civil_affairs"):
            sub = {
                "id": f"urn:ngsi-ld:Subscription:{org}",
                "type": "Subscription",
                "entities": [{"type": "CareVisit"}],
                "notification": {"endpoint": {"uri": endpoint}},
            }
            made = node.client.post(f"{B}/subscriptions", json=sub, headers=node.h(org))
            assert made.status_code == 201, made.text
        patch = {"minutes": {"type": "Property", "value": 5}}
        url = f"{B}/entities/urn:ngsi-ld:CareVisit:1/attrs"
        assert (
            node.client.patch(url, json=patch, headers=node.h("civil_affairs")).status_code == 204
        )
        engine = node.client.app.state.engine
        store = node.client.app.state.ngsild_contexts
        for _ in range(3):
            notifier.dispatch_once(engine=engine, store=store, data_dir=node.data)
    finally:
        server.shutdown()
    ids = sorted(n["subscriptionId"] for n in received)
    assert ids == ["urn:ngsi-ld:Subscription:civil_affairs"], ids
    assert received[0]["data"][0]["visitor"]["value"] == "张小明"
