"""The dashboard's summary: one call with the node, its children, indicator totals, events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings
from conftest import bearer

LIXIA = (117.05, 36.67)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[TestClient]:
    """A province node; the default headers are an operator of the operations centre."""
    app = create_app(load_settings(data_dir=tmp_path))
    with TestClient(app, headers=bearer(tmp_path, org="bureau", role="operator")) as client:
        yield client


def _report(client: TestClient, description: str) -> str:
    response = client.post(
        "/api/events/cases",
        json={
            "event_type": "manhole_cover",
            "description": description,
            "lon": LIXIA[0],
            "lat": LIXIA[1],
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_summary_lists_children_totals_counts_and_newest_cases(node: TestClient) -> None:
    first = _report(node, "井盖丢了")
    second = _report(node, "又一个井盖丢了")
    answer = node.get("/api/dashboard/summary")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["node"]["code"] == "370000"
    assert body["tree"] == "u4ssc"
    assert len(body["children"]) == 16
    jinan = next(c for c in body["children"] if c["code"] == "370100")
    assert jinan["name_zh"] == "济南市"
    # no city node registered, nothing computed: named as such, not an error
    assert jinan["state"] == "absent"
    assert jinan["total"]["status"] == "no_data"
    assert body["events_by_state"] == {"captured": 2}
    assert body["events_open"] == 2
    assert body["events_overdue"] == 0
    assert [c["id"] for c in body["cases"]] == [second, first]


def test_summary_limits_cases_and_takes_a_tree(node: TestClient) -> None:
    for i in range(3):
        _report(node, f"井盖 {i}")
    body = node.get("/api/dashboard/summary", params={"cases": 2, "tree": "operational"}).json()
    assert len(body["cases"]) == 2
    assert body["tree"] == "operational"
    assert node.get("/api/dashboard/summary", params={"cases": 0}).json()["cases"] == []


def test_summary_shows_computed_totals(node: TestClient) -> None:
    computed = node.post("/api/indicators/compute", json={"tree": "operational"})
    assert computed.status_code == 200, computed.text
    body = node.get("/api/dashboard/summary", params={"tree": "operational"}).json()
    assert body["period"] is not None
    assert body["own_total"]["status"] in {"ok", "no_data", "failed", "partial"}


def test_summary_bad_input(node: TestClient) -> None:
    assert node.get("/api/dashboard/summary", params={"cases": 101}).status_code == 400
    assert node.get("/api/dashboard/summary", params={"cases": -1}).status_code == 400
    assert node.get("/api/dashboard/summary", params={"tree": "x" * 40}).status_code == 400
    unknown = node.get("/api/dashboard/summary", params={"tree": "nosuchtree"})
    assert unknown.status_code == 404, unknown.text


def test_summary_needs_a_government_token(node: TestClient, tmp_path: Path) -> None:
    assert node.get("/api/dashboard/summary", headers={"Authorization": ""}).status_code == 401
    bad = node.get("/api/dashboard/summary", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    citizen = bearer(tmp_path, org="public", role="citizen", subject="c1")
    assert node.get("/api/dashboard/summary", headers=citizen).status_code == 403
    steward = bearer(tmp_path, org="education", role="steward")
    assert node.get("/api/dashboard/summary", headers=steward).status_code == 200


def test_dashboard_url_carries_an_operator_token_in_the_fragment(tmp_path: Path) -> None:
    from citybrain.web.pages import dashboard_url

    url = dashboard_url(base_url="http://127.0.0.1:8000/", data_dir=tmp_path, code="370000")
    assert url.startswith("http://127.0.0.1:8000/#token=")
    token = url.split("#token=", 1)[1]
    app = create_app(load_settings(data_dir=tmp_path))
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        who = client.get("/auth/whoami").json()
        assert (who["org"], who["role"]) == ("bureau", "operator")
        assert client.get("/api/dashboard/summary").status_code == 200


def test_panels_list_the_scene_plugins_panels(node: TestClient, tmp_path: Path) -> None:
    answer = node.get("/api/dashboard/panels", headers=bearer(tmp_path, role="operator"))
    assert answer.status_code == 200
    overview = next(p for p in answer.json() if p["id"] == "overview")
    assert overview["plugin"] == "overview" and overview["data_url"] == "/scenes/overview"
    forged = {"Authorization": "Bearer x"}
    assert node.get("/api/dashboard/panels", headers=forged).status_code == 401
    citizen = bearer(tmp_path, org="citizens", role="citizen", phone="13800000000")
    assert node.get("/api/dashboard/panels", headers=citizen).status_code == 403
