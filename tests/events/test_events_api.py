"""Event centre over HTTP: intake from every source, validation, roles, lifecycle, restart."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.core.db import create_engine_for
from citybrain.events import service
from citybrain.governance.audit import service as audit
from conftest import bearer

JINAN = "370100"
LIXIA = (117.05, 36.67)
QINGDAO = (120.38, 36.07)


def _settings(data: Path) -> object:
    return load_settings(data_dir=data, code=JINAN, level="city")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[TestClient]:
    """A Jinan city node; the default headers are a grid worker of civil affairs."""
    app = create_app(_settings(tmp_path))  # type: ignore[arg-type]
    headers = bearer(
        tmp_path, org="civil_affairs", role="operator", issuer=JINAN, subject="grid-worker-1"
    )
    with TestClient(app, headers=headers) as client:
        yield client


def _as(
    data: Path, org: str, role: str, subject: str = "u", phone: str | None = None
) -> dict[str, str]:
    return bearer(data, org=org, role=role, issuer=JINAN, subject=subject, phone=phone)


def _data(client: TestClient) -> Path:
    return client.app.state.settings.data_dir  # type: ignore[attr-defined,no-any-return]


def _report(client: TestClient, **over: object) -> dict[str, object]:
    body = {
        "event_type": "manhole_cover",
        "description": "井盖丢了，很危险",
        "lon": LIXIA[0],
        "lat": LIXIA[1],
        "address": "历下区泉城路",
    } | over
    response = client.post("/api/events/cases", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_grid_report_routes_by_type_and_area(node: TestClient) -> None:
    case = _report(node)
    # the matrix: manhole covers in 历下区 (370102) go to city management, else housing
    assert (case["state"], case["area_code"], case["department"]) == (
        "captured",
        "370102",
        "city_management",
    )
    assert case["allowed_transitions"] == ["discard", "escalate", "verify"]
    other = _report(node, lon=117.0, lat=36.65)
    assert (other["area_code"], other["department"]) == ("370103", "housing")
    assert node.get("/api/events/catalogue").json()["categories"][0]["name_zh"] == "部件"


@pytest.mark.parametrize(
    ("over", "status", "words"),
    [
        ({"event_type": "ufo_sighting"}, 422, "unknown event type"),
        ({"description": "   \n\t "}, 400, "empty"),
        ({"description": ""}, 400, "empty"),
        ({"lon": QINGDAO[0], "lat": QINGDAO[1]}, 422, "outside 370100 济南市"),
        ({"lon": 116.4, "lat": 39.9}, 422, "outside"),
        ({"lon": 500}, 400, "lon"),
        ({"urgency": "yesterday"}, 400, "urgency"),
    ],
)
def test_intake_validation(
    node: TestClient, over: dict[str, object], status: int, words: str
) -> None:
    body = {
        "event_type": "street_lamp",
        "description": "路灯不亮",
        "lon": LIXIA[0],
        "lat": LIXIA[1],
    } | over
    response = node.post("/api/events/cases", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["title"]
    assert node.get("/api/events/cases").json() == []  # nothing half-written


@pytest.mark.parametrize(
    "text", ["يولدا چىراغ يورۇمايدۇ", "Street lamp broken 🚨", "ถนนมืดมาก", "路燈壞了"]
)
def test_text_in_any_script_is_accepted(node: TestClient, text: str) -> None:
    case = _report(node, event_type="street_lamp", description=text)
    assert case["description"] == text


def test_hotline_is_classified_and_the_phone_never_logged(node: TestClient) -> None:
    data = _data(node)
    centre = _as(data, "bureau", "operator", "hotline-op")
    response = node.post(
        "/api/events/hotline",
        json={"text": "你好，历下区泉城路3号楼井盖丢了，麻烦尽快处理。", "phone": "13812345678"},
        headers=centre,
    )
    assert response.status_code == 201, response.text
    case = response.json()
    assert case["event_type"] == "manhole_cover" and case["classified_type"] == "manhole_cover"
    assert case["area_code"] == "370102" and case["department"] == "city_management"
    assert case["contact_phone"] == "138****5678"
    assert "13812345678" not in audit.log_path(data).read_text(encoding="utf-8")
    # the hotline is the centre's; a department cannot file work orders
    refused = node.post("/api/events/hotline", json={"text": "路灯不亮"})
    assert refused.status_code == 403
    blank = node.post("/api/events/hotline", json={"text": "  "}, headers=centre)
    assert blank.status_code == 400
    guess = node.post("/api/events/classify", json={"text": "楼下饭店油烟太大了"}).json()
    assert guess["event_type"] == "cooking_fumes"
    assert guess["department"] == "ecology_environment"


def test_ngsi_ld_alarms_become_cases_once(node: TestClient) -> None:
    service_headers = _as(_data(node), "city_management", "service", "hub")
    notification = {
        "id": "urn:ngsi-ld:Notification:1",
        "type": "Notification",
        "subscriptionId": "urn:ngsi-ld:Subscription:bins",
        "notifiedAt": "2025-03-03T08:00:00Z",
        "data": [
            {
                "id": "urn:ngsi-ld:WasteContainer:jn-1",
                "type": "WasteContainer",
                "fillingLevel": {"type": "Property", "value": 0.96},
                "location": {
                    "type": "GeoProperty",
                    "value": {"type": "Point", "coordinates": list(LIXIA)},
                },
            },
            {
                "id": "urn:ngsi-ld:WasteContainer:jn-2",
                "type": "WasteContainer",
                "fillingLevel": {"type": "Property", "value": 0.3},
            },
            {
                "id": "urn:ngsi-ld:CameraAlarm:cam-9",
                "type": "CameraAlarm",
                "alarmType": {"type": "Property", "value": "illegalParking"},
                "location": {
                    "type": "GeoProperty",
                    "value": {"type": "Point", "coordinates": [117.0, 36.65]},
                },
            },
            {
                "id": "urn:ngsi-ld:CameraAlarm:qd-1",
                "type": "CameraAlarm",
                "alarmType": {"type": "Property", "value": "illegal_parking"},
                "location": {
                    "type": "GeoProperty",
                    "value": {"type": "Point", "coordinates": list(QINGDAO)},
                },
            },
        ],
    }
    first = node.post("/api/events/intake/ngsi-ld", json=notification, headers=service_headers)
    assert first.status_code == 200, first.text
    assert (len(first.json()["created"]), first.json()["ignored"]) == (2, 2)
    again = node.post("/api/events/intake/ngsi-ld", json=notification, headers=service_headers)
    assert again.json()["created"] == [] and len(again.json()["duplicates"]) == 2
    cases = node.get("/api/events/cases", headers=_as(_data(node), "bureau", "operator")).json()
    assert sorted(c["event_type"] for c in cases) == ["illegal_parking", "overflowing_bin"]
    assert {c["source"] for c in cases} == {"iot"}
    bad = node.post("/api/events/intake/ngsi-ld", json={"data": "x"}, headers=service_headers)
    assert bad.status_code == 400
    citizen = _as(_data(node), "citizens", "citizen", "citizen:1")
    assert (
        node.post("/api/events/intake/ngsi-ld", json=notification, headers=citizen).status_code
        == 403
    )


def test_task_of_the_parent_node_is_idempotent(node: TestClient) -> None:
    engine = node.app.state.engine  # type: ignore[attr-defined]
    kwargs = {
        "engine": engine,
        "data_dir": _data(node),
        "node_code": JINAN,
        "task_id": "T-42",
        "event_type": "fallen_tree",
        "description": "省里转办：经十路大树倒伏",
        "lon": LIXIA[0],
        "lat": LIXIA[1],
    }
    case = service.create_case_from_task(**kwargs)  # type: ignore[arg-type]
    assert case.state == "registered" and case.source == "task"
    assert service.create_case_from_task(**kwargs).id == case.id  # type: ignore[arg-type]
    steps = [s.transition for s in service.timeline(engine=engine, case_id=case.id)]
    assert steps == ["capture", "verify", "create_case"]


def _lifecycle(node: TestClient) -> tuple[str, dict[str, dict[str, str]]]:
    data = _data(node)
    who = {
        "centre": _as(data, "bureau", "operator", "op"),
        "dept": _as(data, "city_management", "operator", "handler"),
        "other": _as(data, "transport", "operator", "t"),
        "reporter": _as(data, "civil_affairs", "operator", "grid-worker-1"),
    }
    case_id = str(_report(node)["id"])
    return case_id, who


def _fire(
    node: TestClient, case_id: str, name: str, headers: dict[str, str], **body: object
) -> tuple[int, dict[str, object]]:
    response = node.post(
        f"/api/events/cases/{case_id}/transitions/{name}", json=body or None, headers=headers
    )
    return response.status_code, response.json()


def test_full_lifecycle_with_roles(node: TestClient) -> None:
    case_id, who = _lifecycle(node)
    status, body = _fire(node, case_id, "close", who["centre"])
    assert status == 409 and "allowed: discard, escalate, verify" in str(body["title"])
    assert body["detail"]["allowed"] == ["discard", "escalate", "verify"]  # type: ignore[index]
    assert _fire(node, case_id, "verify", who["dept"])[0] == 403
    for name in ("verify", "create_case"):
        assert _fire(node, case_id, name, who["centre"])[0] == 200
    status, case = _fire(node, case_id, "dispatch", who["centre"])
    assert status == 200 and case["deadline"] is not None and case["state"] == "dispatched"
    assert _fire(node, case_id, "handle", who["centre"])[0] == 403
    assert _fire(node, case_id, "handle", who["other"])[0] == 404
    assert _fire(node, case_id, "handle", who["dept"])[0] == 200
    assert _fire(node, case_id, "urge", who["centre"])[1]["urges"] == 1
    assert _fire(node, case_id, "extend", who["dept"], days=2)[0] == 400  # no reason
    assert _fire(node, case_id, "extend", who["dept"], days=2, note="材料未到")[0] == 200
    assert _fire(node, case_id, "feedback", who["dept"])[0] == 400
    assert _fire(node, case_id, "feedback", who["dept"], note="已更换井盖")[0] == 200
    assert _fire(node, case_id, "reject_result", who["centre"], note="现场未修好")[0] == 200
    assert _fire(node, case_id, "feedback", who["dept"], note="已修好")[0] == 200
    assert _fire(node, case_id, "accept_result", who["centre"])[0] == 200
    assert _fire(node, case_id, "close", who["centre"])[0] == 200
    assert _fire(node, case_id, "rate", who["centre"], rating=5)[0] == 403
    assert _fire(node, case_id, "rate", who["reporter"])[0] == 400  # no rating
    assert _fire(node, case_id, "rate", who["reporter"], rating=9)[0] == 400
    status, case = _fire(node, case_id, "rate", who["reporter"], rating=4)
    assert status == 200 and case["satisfaction"] == 4 and case["open"] is False
    assert _fire(node, case_id, "evaluate", who["centre"])[1]["state"] == "evaluated"
    assert _fire(node, case_id, "urge", who["centre"])[0] == 409
    timeline = node.get(f"/api/events/cases/{case_id}/transitions", headers=who["centre"]).json()
    assert [t["transition"] for t in timeline][:5] == [
        "capture",
        "verify",
        "create_case",
        "dispatch",
        "handle",
    ]
    assert timeline[-1]["to_state"] == "evaluated"
    page = audit.query(
        data_dir=_data(node), action="events.close", resource=f"event_case/{case_id}"
    )
    assert len(page.records) == 1


def test_return_reassign_and_visibility(node: TestClient) -> None:
    case_id, who = _lifecycle(node)
    for name in ("verify", "create_case", "dispatch"):
        _fire(node, case_id, name, who["centre"])
    status, case = _fire(node, case_id, "return", who["dept"], note="不归我们管")
    assert status == 200 and case["state"] == "registered" and case["returns"] == 1
    assert _fire(node, case_id, "handle", who["dept"])[0] == 409
    _fire(node, case_id, "dispatch", who["centre"], department="transport")
    assert node.get(f"/api/events/cases/{case_id}", headers=who["dept"]).status_code == 404
    assert node.get(f"/api/events/cases/{case_id}", headers=who["other"]).status_code == 200
    status, case = _fire(node, case_id, "reassign", who["centre"], department="housing")
    assert status == 200 and case["department"] == "housing"
    assert _fire(node, case_id, "reassign", who["centre"], department="nobody")[0] == 422
    listed = node.get("/api/events/cases", headers=who["other"]).json()
    assert listed == []
    assert node.get("/api/events/cases?state=bogus", headers=who["centre"]).status_code == 400


def test_case_survives_a_restart_in_any_state(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    centre = _as(tmp_path, "bureau", "operator", "op")
    with TestClient(create_app(settings), headers=centre) as client:  # type: ignore[arg-type]
        case_id = _report(client)["id"]
        for name in ("verify", "create_case", "dispatch"):
            client.post(f"/api/events/cases/{case_id}/transitions/{name}")
    # a fresh engine on the same store, as after a crash
    engine = create_engine_for(settings.effective_database_url)  # type: ignore[attr-defined]
    case = service.get_case(engine=engine, case_id=str(case_id))
    assert case.state == "dispatched" and case.deadline is not None
    engine.dispose()
    with TestClient(create_app(settings), headers=centre) as client:  # type: ignore[arg-type]
        again = client.get(f"/api/events/cases/{case_id}").json()
        assert again["state"] == "dispatched" and again["version"] == case.version
        dept = _as(tmp_path, "city_management", "operator", "h")
        moved = client.post(f"/api/events/cases/{case_id}/transitions/handle", headers=dept)
        assert moved.json()["state"] == "handling"


def test_overdue_escalation_and_pending(node: TestClient) -> None:
    engine = node.app.state.engine  # type: ignore[attr-defined]
    data = _data(node)
    case_id, who = _lifecycle(node)
    for name in ("verify", "create_case", "dispatch"):
        _fire(node, case_id, name, who["centre"])
    case = service.get_case(engine=engine, case_id=case_id)
    assert case.deadline is not None
    assert service.overdue_cases(engine=engine, now=case.deadline - timedelta(minutes=1)) == []
    later = case.deadline + timedelta(hours=1)
    assert [c.id for c in service.overdue_cases(engine=engine, now=later)] == [case_id]
    assert service.escalate_overdue(engine=engine, data_dir=data, now=later) == [case_id]
    assert service.escalate_overdue(engine=engine, data_dir=data, now=later) == []
    pending = service.pending_escalations(engine=engine)
    assert [p.case_id for p in pending] == [case_id] and "contact_phone" not in pending[0].case
    over_http = node.get("/api/events/escalations", headers=who["centre"]).json()
    assert over_http[0]["id"] == pending[0].id
    assert node.get("/api/events/escalations", headers=who["dept"]).status_code == 403
    service.mark_escalation_sent(engine=engine, escalation_id=pending[0].id)
    assert service.pending_escalations(engine=engine) == []
    assert node.get("/api/events/stats", headers=who["centre"]).status_code == 200
    citizen = _as(data, "citizens", "citizen", "citizen:1")
    assert node.get("/api/events/stats", headers=citizen).status_code == 403
    assert node.get("/api/events/stats?start=nope", headers=who["centre"]).status_code == 400


def test_citizen_reporter_sees_and_rates_own_case(node: TestClient) -> None:
    data = _data(node)
    citizen = _as(data, "citizens", "citizen", "citizen:13900001111", phone="13900001111")
    response = node.post(
        "/api/events/cases",
        json={
            "event_type": "street_lamp",
            "description": "路灯不亮",
            "lon": LIXIA[0],
            "lat": LIXIA[1],
        },
        headers=citizen,
    )
    case_id = response.json()["id"]
    assert node.get(f"/api/events/cases/{case_id}", headers=citizen).status_code == 200
    assert [c["id"] for c in node.get("/api/events/cases", headers=citizen).json()] == [case_id]
    now = datetime.now(UTC)
    assert now  # time flows; the rating itself is checked in the lifecycle test
