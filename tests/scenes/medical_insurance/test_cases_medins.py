"""Supervision cases: findings become cases with staged deadlines, linked to the event centre;
the province assigns a case to a city through federation; the panel rolls up."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from test_settlement_medins import CONSULTATION, _now, body
from test_voucher_node import (  # noqa: F401 - fixtures
    CITY,
    City,
    city_fixture,
    fresh_nodes,
    prepared_root_fixture,
    synth_root_fixture,
)

from citybrain.app import create_app
from citybrain.core.config import Settings, load_settings
from citybrain.events import calendar
from citybrain.federation import outbox, trust
from citybrain.federation.models import Relation
from citybrain.scenes.medical_insurance import panel
from citybrain.scenes.medical_insurance import service as scene_service
from conftest import bearer

PROVINCE = "370000"


def sweep_findings(institution: str, n: int = 3) -> list[dict[str, Any]]:
    """Findings as the batch sweep gives them."""
    return [
        {
            "rule_id": "MI08_bed_hanging",
            "rule_version": 1,
            "grade": "warn",
            "settlement_id": f"SW{i:06d}",
            "person_id": f"P{i:06d}",
            "institution_id": institution,
            "item_code": "",
            "reason": "MI08_bed_hanging v1: bed and nursing days with no care",
        }
        for i in range(n)
    ]


def test_sweep_findings_become_cases_that_move_through_the_stages(city: City) -> None:
    institution = city.hospital()
    stored = city.client.post(
        "/api/medins/findings", json=sweep_findings(institution), headers=city.h()
    )
    assert stored.json() == {"stored": 3, "skipped": 0}
    again = city.client.post(
        "/api/medins/findings", json=sweep_findings(institution), headers=city.h()
    )
    assert again.json() == {"stored": 0, "skipped": 3}
    supervisor = city.h("medical_security", "operator")
    opened = city.client.post("/api/medins/cases", json={"source": "sweep"}, headers=supervisor)
    assert opened.status_code == 201, opened.text
    cases = opened.json()
    assert len(cases) == 3
    case = cases[0]
    assert case["stage"] == "first_review" and case["status"] == "open"
    assert case["event_case_id"] and case["event_state"] == "registered"
    created = case["created_at"]
    from datetime import datetime

    expected = calendar.add_working_days(datetime.fromisoformat(created), 5)
    assert abs((datetime.fromisoformat(case["deadline"]) - expected).total_seconds()) < 1
    event = city.client.get(f"/api/events/cases/{case['event_case_id']}", headers=city.h())
    assert event.status_code == 200 and case["id"] in event.json()["description"]
    nothing_left = city.client.post(
        "/api/medins/cases", json={"source": "sweep"}, headers=supervisor
    )
    assert nothing_left.json() == []

    stages = []
    for _ in range(5):
        moved = city.client.post(
            f"/api/medins/cases/{case['id']}/actions",
            json={"action": "advance", "note": "reviewed"},
            headers=supervisor,
        )
        assert moved.status_code == 200, moved.text
        stages.append(moved.json()["stage"])
    assert stages == ["second_review", "appeal", "investigation", "sanction", "closed"]
    assert moved.json()["status"] == "sanctioned"
    closed = city.client.post(
        f"/api/medins/cases/{case['id']}/actions",
        json={"action": "advance", "note": "again"},
        headers=supervisor,
    )
    assert closed.status_code == 409
    dismissed = city.client.post(
        f"/api/medins/cases/{cases[1]['id']}/actions",
        json={"action": "dismiss", "note": "the care was recorded on paper"},
        headers=supervisor,
    )
    assert dismissed.json()["status"] == "dismissed"
    empty_note = city.client.post(
        f"/api/medins/cases/{cases[2]['id']}/actions",
        json={"action": "advance", "note": ""},
        headers=supervisor,
    )
    assert empty_note.status_code == 400
    other_department = city.client.post(
        f"/api/medins/cases/{cases[2]['id']}/actions",
        json={"action": "advance", "note": "x"},
        headers=city.h("education", "operator"),
    )
    assert other_department.status_code == 403
    listed = city.client.get(
        "/api/medins/cases", params={"status": "open"}, headers=supervisor
    ).json()
    assert [c["id"] for c in listed] == [cases[2]["id"]]
    figures = city.client.get("/api/medins/panel", headers=city.h()).json()
    assert figures["cases"]["by_status"] == {"open": 1, "sanctioned": 1, "dismissed": 1}
    assert figures["findings"]["by_rule"]["MI08_bed_hanging"]["findings"] == 3
    unknown = city.client.get("/api/medins/cases/MCnope", headers=supervisor)
    assert unknown.status_code == 404


def test_a_blocked_settlement_becomes_a_case(city: City) -> None:
    person = city.people[0]
    city.activate(person)
    terminal = city.terminal(city.hospital())
    day = (_now() - timedelta(minutes=40)).date().isoformat()
    items = [
        {
            "code": CONSULTATION,
            "kind": "service",
            "quantity": 1,
            "unit_price": 30.0,
            "amount": 30.0,
            "service_date": day,
        },
    ]
    answer = city.client.post(
        "/api/medins/settlements",
        json=body(city.qr(person), "C-1", items=items),
        headers=terminal,
    ).json()
    assert answer["outcome"] == "block"
    opened = city.client.post(
        "/api/medins/cases", json={"source": "before_payment"}, headers=city.h()
    ).json()
    assert len(opened) == 1
    assert opened[0]["rule_id"] == "MI02_over_price"
    assert opened[0]["amount"] == 30.0 and opened[0]["origin"] == "before_payment"


class Net(httpx.BaseTransport):
    """Route requests to in-process apps by host."""

    def __init__(self) -> None:
        self.apps: dict[str, httpx.BaseTransport] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.apps[request.url.host].handle_request(request)


@dataclass
class Pair:
    province: TestClient
    city: TestClient
    p_settings: Settings
    c_settings: Settings
    net: Net

    def drain(self, settings: Settings, client: TestClient) -> None:
        with httpx.Client(transport=self.net) as http:
            outbox.drain_once(
                engine=client.app.state.engine,  # type: ignore[attr-defined]
                settings=settings,
                client=http,
            )


async def _idle(**_kw: object) -> None:
    return None


@pytest.fixture
def pair(prepared_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pair]:
    monkeypatch.setattr(outbox, "run", _idle)
    data = fresh_nodes(prepared_root, tmp_path)
    scene_service.forget_scenes()
    p_set = load_settings(
        data_dir=data.parent / "p",
        code=PROVINCE,
        level="province",
        public_url="http://province.test",
    )
    c_set = load_settings(
        data_dir=data,
        code=CITY,
        level="city",
        public_url="http://city.test",
        parent_url="http://province.test",
    )
    net = Net()
    with TestClient(create_app(p_set)) as p, TestClient(create_app(c_set)) as c:
        net.apps = {"province.test": p._transport, "city.test": c._transport}
        trust.add_peer(
            engine=p.app.state.engine,  # type: ignore[attr-defined]
            own_code=PROVINCE,
            code=CITY,
            relation=Relation.child,
            url="http://city.test",
            public_key=trust.own_public_key(c_set.data_dir),
        )
        trust.add_peer(
            engine=c.app.state.engine,  # type: ignore[attr-defined]
            own_code=CITY,
            code=PROVINCE,
            relation=Relation.parent,
            url="http://province.test",
            public_key=trust.own_public_key(p_set.data_dir),
        )
        yield Pair(p, c, p_set, c_set, net)
    scene_service.forget_scenes()


def test_the_province_assigns_a_case_to_a_city(pair: Pair) -> None:
    p_admin = bearer(pair.p_settings.data_dir, issuer=PROVINCE)
    c_admin = bearer(pair.c_settings.data_dir, issuer=CITY)
    pair.province.post(
        "/api/medins/findings", json=sweep_findings("M370102H20000", 1), headers=p_admin
    )
    case = pair.province.post("/api/medins/cases", json={}, headers=p_admin).json()[0]
    not_admin = pair.province.post(
        f"/api/medins/cases/{case['id']}/assign",
        json={"to": CITY},
        headers=bearer(
            pair.p_settings.data_dir, issuer=PROVINCE, org="medical_security", role="operator"
        ),
    )
    assert not_admin.status_code == 403
    unknown_city = pair.province.post(
        f"/api/medins/cases/{case['id']}/assign", json={"to": "370200"}, headers=p_admin
    )
    assert unknown_city.status_code == 422
    assigned = pair.province.post(
        f"/api/medins/cases/{case['id']}/assign", json={"to": CITY}, headers=p_admin
    )
    assert assigned.status_code == 200, assigned.text
    task_id = assigned.json()["assigned_task_id"]
    assert assigned.json()["assigned_to"] == CITY
    twice = pair.province.post(
        f"/api/medins/cases/{case['id']}/assign", json={"to": CITY}, headers=p_admin
    )
    assert twice.status_code == 409
    pair.drain(pair.p_settings, pair.province)

    taken = pair.city.post("/api/medins/cases/take", headers=c_admin).json()
    assert len(taken) == 1
    local = taken[0]
    assert local["origin"] == "province" and local["task_id"] == task_id
    assert local["rule_id"] == "MI08_bed_hanging" and local["event_case_id"]
    assert pair.city.post("/api/medins/cases/take", headers=c_admin).json() == []

    moved = pair.city.post(
        f"/api/medins/cases/{local['id']}/actions",
        json={"action": "advance", "note": "first review done"},
        headers=c_admin,
    )
    assert moved.json()["stage"] == "second_review"
    pair.drain(pair.c_settings, pair.city)
    task = pair.province.get(f"/api/federation/tasks/{task_id}", headers=p_admin).json()
    assert task["status"] == "in_progress"
    pair.city.post(
        f"/api/medins/cases/{local['id']}/actions",
        json={"action": "dismiss", "note": "no violation"},
        headers=c_admin,
    )
    pair.drain(pair.c_settings, pair.city)
    task = pair.province.get(f"/api/federation/tasks/{task_id}", headers=p_admin).json()
    assert task["status"] == "done"
    assert "dismissed" in task["history"][-1]["note"]


def test_the_panel_rolls_up_to_the_province(pair: Pair) -> None:
    c_admin = bearer(pair.c_settings.data_dir, issuer=CITY)
    p_admin = bearer(pair.p_settings.data_dir, issuer=PROVINCE)
    pair.city.post("/api/medins/findings", json=sweep_findings("M370102H20000", 2), headers=c_admin)
    pair.province.post(
        "/api/medins/findings", json=sweep_findings("M370000H20000", 1), headers=p_admin
    )
    province_scene = scene_service.scene_for(
        engine=pair.province.app.state.engine,  # type: ignore[attr-defined]
        data_dir=pair.p_settings.data_dir,
        code=PROVINCE,
    )
    transport = httpx.ASGITransport(app=pair.city.app)
    tree = panel.rolled_up(province_scene, pair.p_settings, transport=transport)
    assert tree["answered"] == [CITY] and tree["missing"] == {}
    assert tree["findings"]["total"] == 3
    assert tree["findings"]["by_rule"]["MI08_bed_hanging"]["findings"] == 3

    class Down(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

    later = panel.rolled_up(province_scene, pair.p_settings, transport=Down())
    assert CITY in later["missing"] and CITY in later["stale"]
    # what the city sent last time is still counted, and named as stale
    assert later["findings"]["total"] == 3
    export = pair.city.get("/api/medins/panel/export", headers=city_citizen(pair))
    assert export.status_code == 403


def city_citizen(pair: Pair) -> dict[str, str]:
    return bearer(
        pair.c_settings.data_dir, issuer=CITY, org="citizens", role="citizen", phone="13800000000"
    )
