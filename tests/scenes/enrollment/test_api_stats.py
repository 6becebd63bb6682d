"""Statistics through the API, the dashboard panel, and the roll-up to the province."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import test_service_setup as setup
from fastapi.testclient import TestClient
from test_service_setup import CITY, Scene

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.federation import trust
from citybrain.federation.models import Relation
from citybrain.scenes.enrollment import stats
from conftest import bearer

synth_jinan, scene, opened = setup.synth_jinan, setup.scene, setup.opened
CITY_URL = "http://city.test"


@pytest.fixture
def province(tmp_path: Path) -> Iterator[TestClient]:
    """An empty province node."""
    data = tmp_path / "370000"
    app = create_app(load_settings(data_dir=data, code="370000", level="province"))
    with TestClient(app) as client:
        yield client


def test_stats_per_county_in_the_panel_form(opened: Scene) -> None:
    families = opened.families()[:5]
    for f in families:
        out = opened.post(
            "/api/enrollment/applications",
            {"child_id_number": f.child_id},
            opened.parent(f.phone),
        )
        assert out.status_code == 201
    body = opened.get("/api/enrollment/stats", opened.h("education", "operator")).json()
    assert body["total"]["applications"] == 5
    assert sum(u["applications"] for u in body["units"]) == 5
    assert {c["label_en"] for c in body["cards"]} >= {"Applications", "Seats", "Unplaced"}
    assert len(body["table"]["rows"]) == len(body["units"])
    assert all(0 <= b["value"] <= 100 for b in body["bars"]["items"])
    by_school = [s for u in body["units"] for s in u["schools"]]
    assert sum(s["first_choice"] for s in by_school) == 5
    assert all(s["capacity"] > 0 for s in by_school if s["ownership"] == "public")
    panels = opened.get("/api/dashboard/panels", opened.h("bureau", "operator"))
    assert panels.status_code == 200
    assert any(p["id"] == "enrollment" for p in panels.json())


def test_province_rolls_up_the_cities_over_node_tokens(opened: Scene, province: TestClient) -> None:
    f = opened.families()[0]
    made = opened.post(
        "/api/enrollment/applications", {"child_id_number": f.child_id}, opened.parent(f.phone)
    )
    assert made.status_code == 201
    p_settings = province.app.state.settings  # type: ignore[attr-defined]
    p_engine = province.app.state.engine  # type: ignore[attr-defined]
    c_engine = opened.client.app.state.engine  # type: ignore[attr-defined]
    trust.add_peer(
        engine=p_engine,
        own_code="370000",
        code=CITY,
        relation=Relation.child,
        url=CITY_URL,
        public_key=trust.own_public_key(opened.data),
    )
    # before the city trusts the province, its node token is refused
    transport = httpx.ASGITransport(app=opened.client.app)
    refused = stats.rollup(engine=p_engine, settings=p_settings, transport=transport)
    assert refused["answered"] == [] and CITY in refused["missing"]
    trust.add_peer(
        engine=c_engine,
        own_code=CITY,
        code="370000",
        relation=Relation.parent,
        url="http://province.test",
        public_key=trust.own_public_key(p_settings.data_dir),
    )
    done = stats.rollup(engine=p_engine, settings=p_settings, transport=transport)
    assert done["answered"] == [CITY], done
    admin = bearer(p_settings.data_dir, org="bureau", role="operator", issuer="370000")
    rolled = province.get("/api/enrollment/stats", headers=admin).json()
    assert rolled["total"]["applications"] == 1
    assert [u["code"] for u in rolled["units"]] == [CITY]
    # a city that is down keeps its last figures at the province
    down = httpx.MockTransport(lambda request: httpx.Response(503, text="down"))
    missing = stats.rollup(engine=p_engine, settings=p_settings, transport=down)
    assert CITY in missing["missing"]
    again = province.get("/api/enrollment/stats", headers=admin).json()
    assert again["total"]["applications"] == 1 and again["units"][0]["fetched_at"]
    # the route is for the bureau; citizens see no statistics
    assert province.post("/api/enrollment/stats/rollup", headers=admin).status_code == 403
    citizen = opened.parent(f.phone)
    assert opened.get("/api/enrollment/stats/export", citizen).status_code == 403
