"""Distributed NGSI-LD queries: a province and two cities as in-process apps in one process.

The province reaches each city through an httpx transport over the city's ASGI app; the
transport can take a city down or make it slow, and the deadline is injected (0.5 s).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import Settings, load_settings
from citybrain.federation import distributed, outbox, trust
from citybrain.federation.models import Relation
from citybrain.hub.ngsild import csource
from conftest import bearer

B = "/ngsi-ld/v1"
VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
PROVINCE, JINAN, QINGDAO = "370000", "370100", "370200"
HOSTS = {JINAN: "jinan.test", QINGDAO: "qingdao.test"}
CARE = {
    "id": "ngsi-ld:CareVisit",
    "title_en": "Home care visits to elderly residents",
    "owner_department": "civil_affairs",
    "theme": "population",
    "data_level": "important",
    "sharing_type": "conditional",
    "fields": [
        {"name": "county"},
        {"name": "phone", "personal": "personal", "mask": "phone"},
        {"name": "minutes"},
    ],
}


class Net(httpx.AsyncBaseTransport):
    """Route requests to the cities' ASGI apps by host; `down` refuse, `slow` sleep first."""

    def __init__(self) -> None:
        self.apps: dict[str, httpx.ASGITransport] = {}
        self.down: set[str] = set()
        self.slow: dict[str, float] = {}
        self.calls: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.calls.append(f"{host}{request.url.path}")
        if host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if host in self.slow:
            await asyncio.sleep(self.slow[host])
        return await self.apps[host].handle_async_request(request)


@dataclass
class Node:
    settings: Settings
    client: TestClient

    @property
    def engine(self) -> Any:
        return self.client.app.state.engine  # type: ignore[attr-defined]

    def h(self, org: str = "health", role: str = "steward") -> dict[str, str]:
        return bearer(self.settings.data_dir, org=org, role=role, issuer=self.settings.code)

    def put(self, *entities: dict[str, Any]) -> None:
        response = self.client.post(
            f"{B}/entityOperations/upsert",
            json=list(entities),
            headers=self.h("city_management", "service"),
        )
        assert response.status_code in (200, 201, 204), response.text


@dataclass
class World:
    province: Node
    cities: dict[str, Node]
    net: Net

    def audit(self, action: str) -> list[dict[str, Any]]:
        path = self.province.settings.data_dir / "audit" / "log.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
        return [r for r in records if r["action"] == action]


def _air(key: str, pm25: float) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:AirQualityObserved:{key}",
        "type": "AirQualityObserved",
        "pm25": {"type": "Property", "value": pm25},
    }


async def _idle(**_kw: object) -> None:
    return None


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setattr(outbox, "run", _idle)
    distributed.forget_cache()
    net = Net()
    p_set = load_settings(
        data_dir=tmp_path / "p", code=PROVINCE, level="province", federation_deadline_seconds=0.5
    )
    c_sets = {
        code: load_settings(data_dir=tmp_path / code, code=code, level="city")
        for code in (JINAN, QINGDAO)
    }
    with (
        TestClient(create_app(p_set)) as p_client,
        TestClient(create_app(c_sets[JINAN])) as j_client,
        TestClient(create_app(c_sets[QINGDAO])) as q_client,
    ):
        province = Node(p_set, p_client)
        cities = {JINAN: Node(c_sets[JINAN], j_client), QINGDAO: Node(c_sets[QINGDAO], q_client)}
        for code, city in cities.items():
            net.apps[HOSTS[code]] = httpx.ASGITransport(app=city.client.app)
            trust.add_peer(
                engine=province.engine,
                own_code=PROVINCE,
                code=code,
                relation=Relation.child,
                url=f"http://{HOSTS[code]}",
                public_key=trust.own_public_key(city.settings.data_dir),
            )
            trust.add_peer(
                engine=city.engine,
                own_code=code,
                code=PROVINCE,
                relation=Relation.parent,
                url="http://province.test",
                public_key=trust.own_public_key(p_set.data_dir),
            )
        p_client.app.state.federation_client = httpx.AsyncClient(transport=net)  # type: ignore[attr-defined]
        province.put(_air("p-01", 10), _air("shared", 1))
        cities[JINAN].put(*(_air(f"jn-{i:02d}", 20 + i) for i in range(5)), _air("shared", 2))
        cities[QINGDAO].put(*(_air(f"qd-{i:02d}", 60 + i) for i in range(4)))
        for code in cities:
            distributed.store_peer_types(
                engine=province.engine,
                settings=p_set,
                peer=trust.get_peer(engine=province.engine, code=code),
                types=[VOCAB + "AirQualityObserved", VOCAB + "CareVisit"],
            )
        distributed.forget_cache()
        net.calls.clear()
        yield World(province, cities, net)
    distributed.forget_cache()


ALL = sorted(
    ["urn:ngsi-ld:AirQualityObserved:p-01", "urn:ngsi-ld:AirQualityObserved:shared"]
    + [f"urn:ngsi-ld:AirQualityObserved:jn-{i:02d}" for i in range(5)]
    + [f"urn:ngsi-ld:AirQualityObserved:qd-{i:02d}" for i in range(4)]
)


def _get(world: World, **params: Any) -> httpx.Response:
    response = world.province.client.get(f"{B}/entities", params=params, headers=world.province.h())
    assert response.status_code == 200, response.text
    return response


def test_merge_deduplicate_sort_and_count(world: World) -> None:
    response = _get(world, type="AirQualityObserved", count="true", limit=100)
    assert [e["id"] for e in response.json()] == ALL
    assert response.headers["NGSILD-Results-Count"] == str(len(ALL))
    assert "NGSILD-Partial" not in response.headers
    assert "X-CityBrain-Missing" not in response.headers
    # both cities were asked, each once, in parallel
    assert sorted(world.net.calls) == [f"{h}{B}/entities" for h in sorted(HOSTS.values())]
    # the same id at the province and in Jinan: without system attributes the local copy stays
    shared = next(e for e in response.json() if e["id"].endswith("shared"))
    assert shared["pm25"]["value"] == 1
    # with them, the newest copy wins (Jinan's, written after the province's)
    newest = _get(world, type="AirQualityObserved", options="sysAttrs", limit=100)
    shared = next(e for e in newest.json() if e["id"].endswith("shared"))
    assert shared["pm25"]["value"] == 2
    (record, *_) = world.audit("federation.query")
    assert record["rows"] == len(ALL) and record["result"] == "ok"
    assert sorted(record["detail"]["sources"]) == [JINAN, QINGDAO]


def test_pagination_across_sources(world: World) -> None:
    pages: list[str] = []
    for offset in range(0, len(ALL) + 3, 3):
        page = _get(world, type="AirQualityObserved", limit=3, offset=offset).json()
        assert len(page) <= 3
        pages.extend(e["id"] for e in page)
    assert pages == ALL
    counted = _get(world, type="AirQualityObserved", limit=0, count="true")
    # nothing fetched, no duplicate seen: the count is the sum of the sources' counts
    assert counted.json() == [] and counted.headers["NGSILD-Results-Count"] == str(len(ALL) + 1)
    exact = _get(world, type="AirQualityObserved", limit=5, offset=8, count="true")
    assert exact.headers["NGSILD-Results-Count"] == str(len(ALL))
    assert [e["id"] for e in exact.json()] == ALL[8:]


def test_q_attrs_and_formats_pass_through(world: World) -> None:
    high = _get(world, type="AirQualityObserved", q="pm25>=22", options="keyValues", limit=50)
    assert [e["id"].rsplit(":", 1)[1] for e in high.json()] == [
        "jn-02", "jn-03", "jn-04", "qd-00", "qd-01", "qd-02", "qd-03",
    ]  # fmt: skip
    assert all(isinstance(e["pm25"], int | float) for e in high.json())
    geo = world.province.client.get(
        f"{B}/entities",
        params={"type": "AirQualityObserved", "limit": 50},
        headers={**world.province.h(), "Accept": "application/geo+json"},
    )
    assert geo.json()["type"] == "FeatureCollection" and len(geo.json()["features"]) == len(ALL)
    body = {"type": "Query", "entities": [{"type": "AirQualityObserved"}], "q": "pm25<21"}
    batch = world.province.client.post(
        f"{B}/entityOperations/query",
        json=body,
        params={"count": "true"},
        headers=world.province.h(),
    )
    assert batch.status_code == 200, batch.text
    assert [e["id"].rsplit(":", 1)[1] for e in batch.json()] == ["jn-00", "p-01", "shared"]
    assert batch.headers["NGSILD-Results-Count"] == "3"


def test_types_are_the_union(world: World) -> None:
    world.cities[QINGDAO].put(
        {
            "id": "urn:ngsi-ld:ParkingSpot:qd-1",
            "type": "ParkingSpot",
            "status": {"type": "Property", "value": "free"},
        }
    )
    listed = world.province.client.get(f"{B}/types", headers=world.province.h())
    assert listed.status_code == 200
    assert listed.json()["typeList"] == ["AirQualityObserved", "ParkingSpot"]


def test_a_city_that_is_down_is_named(world: World) -> None:
    world.net.down.add(HOSTS[QINGDAO])
    response = _get(world, type="AirQualityObserved", limit=100, count="true")
    ids = [e["id"] for e in response.json()]
    assert ids == [i for i in ALL if ":qd-" not in i]
    assert response.headers["NGSILD-Partial"] == "true"
    assert response.headers["X-CityBrain-Missing"] == QINGDAO
    assert response.headers["NGSILD-Warning"].startswith(f"111 {QINGDAO} ")
    assert response.headers["NGSILD-Results-Count"] == str(len(ids))
    record = world.audit("federation.query")[-1]
    assert record["result"] == "partial" and record["detail"]["missing"] == [QINGDAO]


def test_a_slow_city_is_not_waited_for(world: World) -> None:
    world.net.slow[HOSTS[JINAN]] = 5.0
    start = time.perf_counter()
    response = _get(world, type="AirQualityObserved", limit=100)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, elapsed  # the deadline is 0.5 s
    assert response.headers["X-CityBrain-Missing"] == JINAN
    assert {e["id"] for e in response.json()} >= {i for i in ALL if ":qd-" in i}
    assert not any(":jn-" in e["id"] for e in response.json())


def test_an_error_answer_is_reported(world: World) -> None:
    # a city that no longer trusts the province answers 401: a 199 warning, not a failure
    with world.cities[JINAN].engine.begin() as conn:
        from sqlalchemy import delete

        from citybrain.federation.models import peers

        conn.execute(delete(peers).where(peers.c.code == PROVINCE))
    response = _get(world, type="AirQualityObserved", limit=100)
    assert response.headers["X-CityBrain-Missing"] == JINAN
    assert response.headers["NGSILD-Warning"] == f'199 {JINAN} "answered 401"'


def _grant_to_province(city: Node) -> None:
    org = f"node-{PROVINCE}"
    body = {
        "dataset_id": "ngsi-ld:CareVisit",
        "fields": ["county", "phone", "minutes"],
        "purpose": "provincial elderly-care supervision",
        "legal_basis": "Elderly Rights Law, art. 5",
        "duration_days": 30,
    }
    requester = bearer(city.settings.data_dir, org=org, role="steward", issuer=city.settings.code)
    request = city.client.post("/api/sharing/requests", json=body, headers=requester)
    assert request.status_code == 201, request.text
    rid = request.json()["id"]
    for approver in (city.h("civil_affairs"), city.h("bureau", "bureau_admin")):
        done = city.client.post(
            f"/api/sharing/requests/{rid}/approve", json={"reason": "ok"}, headers=approver
        )
        assert done.status_code == 200, done.text
    assert done.json()["status"] == "approved"


def test_the_city_gate_decides_what_the_province_sees(world: World) -> None:
    jinan = world.cities[JINAN]
    owner = jinan.h("civil_affairs")
    assert jinan.client.post("/api/catalog", json=CARE, headers=owner).status_code == 201
    visit = {
        "id": "urn:ngsi-ld:CareVisit:jn-1",
        "type": "CareVisit",
        "county": {"type": "Property", "value": "370102"},
        "phone": {"type": "Property", "value": "13812345678"},
        "minutes": {"type": "Property", "value": 35},
    }
    created = jinan.client.post(f"{B}/entities", json=visit, headers=owner)
    assert created.status_code == 201, created.text
    # without a grant to node-370000 the province sees nothing of it
    assert _get(world, type="CareVisit").json() == []
    _grant_to_province(jinan)
    (seen,) = _get(world, type="CareVisit").json()
    assert seen["id"] == visit["id"] and seen["minutes"]["value"] == 35
    assert seen["phone"]["value"] != "13812345678"  # masked at the city, before it left


def test_local_true_and_no_registrations_skip_the_fan_out(world: World) -> None:
    local = _get(world, type="AirQualityObserved", local="true", limit=100)
    assert [e["id"] for e in local.json()] == [
        "urn:ngsi-ld:AirQualityObserved:p-01",
        "urn:ngsi-ld:AirQualityObserved:shared",
    ]
    assert world.net.calls == []
    # a type no registration names stays local too
    assert _get(world, type="ParkingSpot").json() == []
    assert world.net.calls == []
    for code in (JINAN, QINGDAO):
        csource.remove(
            engine=world.province.engine, tenant="", reg_id=distributed.peer_registration_id(code)
        )
    assert len(_get(world, type="AirQualityObserved", limit=100).json()) == 2
    assert world.net.calls == []


def test_a_manual_registration_is_asked_too(world: World) -> None:
    for code in (JINAN, QINGDAO):
        csource.remove(
            engine=world.province.engine, tenant="", reg_id=distributed.peer_registration_id(code)
        )
    reg = {
        "id": "urn:ngsi-ld:ContextSourceRegistration:qingdao-air",
        "type": "ContextSourceRegistration",
        "registrationName": "qingdao-air",
        "information": [{"entities": [{"type": "AirQualityObserved"}]}],
        "endpoint": f"http://{HOSTS[QINGDAO]}",
    }
    admin = world.province.h("bureau", "bureau_admin")
    created = world.province.client.post(f"{B}/csourceRegistrations", json=reg, headers=admin)
    assert created.status_code == 201
    ids = [e["id"] for e in _get(world, type="AirQualityObserved", limit=100).json()]
    # the endpoint is a trusted child's, so the call carries the province's peer token
    assert sum(":qd-" in i for i in ids) == 4 and not any(":jn-" in i for i in ids)


def test_refresh_discovers_the_children_types(world: World) -> None:
    world.cities[JINAN].put(
        {
            "id": "urn:ngsi-ld:ParkingSpot:jn-1",
            "type": "ParkingSpot",
            "status": {"type": "Property", "value": "free"},
        }
    )
    world.net.down.add(HOSTS[QINGDAO])

    async def refresh() -> dict[str, str]:
        async with httpx.AsyncClient(transport=world.net) as client:
            return await distributed.refresh_peer_sources(
                engine=world.province.engine, settings=world.province.settings, client=client
            )

    assert asyncio.run(refresh()) == {JINAN: "updated", QINGDAO: "unreachable"}
    row = csource.get(
        engine=world.province.engine, tenant="", reg_id=distributed.peer_registration_id(JINAN)
    )
    types = [e["type"][0] for e in row["registration"]["information"][0]["entities"]]
    assert types == [VOCAB + "AirQualityObserved", VOCAB + "ParkingSpot"]
    assert row["origin"] == f"node:{JINAN}"
    # the unreachable city keeps its registration, so a query names it as missing
    assert _get(world, type="AirQualityObserved").headers["X-CityBrain-Missing"] == QINGDAO
    parking = _get(world, type="ParkingSpot").json()
    assert [e["id"] for e in parking] == ["urn:ngsi-ld:ParkingSpot:jn-1"]


def test_a_looping_request_stays_local_and_a_caller_can_shorten_the_deadline(
    world: World,
) -> None:
    looped = world.province.client.get(
        f"{B}/entities",
        params={"type": "AirQualityObserved", "limit": 100},
        headers={**world.province.h(), "Via": "1.1 citybrain-370100, 1.1 citybrain-370000"},
    )
    assert len(looped.json()) == 2 and world.net.calls == []
    world.net.slow[HOSTS[JINAN]] = 0.3  # within the 0.5 s setting, beyond the caller's 0.1 s
    start = time.perf_counter()
    short = world.province.client.get(
        f"{B}/entities",
        params={"type": "AirQualityObserved", "limit": 100},
        headers={**world.province.h(), "X-CityBrain-Deadline": "0.1"},
    )
    assert time.perf_counter() - start < 0.3
    assert short.headers["X-CityBrain-Missing"] == JINAN
    # what each city was told: the province's Via and 80% of the time it had
    world.net.slow.clear()
    seen: list[httpx.Request] = []
    original = world.net.handle_async_request

    async def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return await original(request)

    world.net.handle_async_request = spy  # type: ignore[method-assign]
    _get(world, type="AirQualityObserved", limit=5, offset=2)
    assert {r.headers["Via"] for r in seen} == {"1.1 citybrain-370000"}
    assert {r.headers["X-CityBrain-Deadline"] for r in seen} == {"0.400"}
    assert {r.url.params["limit"] for r in seen} == {"7"}
    assert {r.url.params["offset"] for r in seen} == {"0"}
    assert all(r.headers["Authorization"].startswith("Bearer ") for r in seen)
