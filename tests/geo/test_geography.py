"""Real Shandong units, synthetic units below counties, and the geo CLI and API."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from citybrain.cli import app
from citybrain.core.errors import BadInput, NotFound
from citybrain.core.problems import install_problem_handlers
from citybrain.geo import service as geo
from citybrain.geo.api import router
from citybrain.geo.models import Level


def test_counts_of_real_units() -> None:
    assert [u.code for u in geo.list_units("province")] == ["370000"]
    assert len(geo.list_units("city")) == 16
    assert len(geo.list_units("county")) == 136
    assert sum(len(geo.list_units("county", c.code)) for c in geo.list_units("city")) == 136


def test_names_and_codes() -> None:
    jinan = geo.get_unit("370100")
    assert (jinan.name_zh, jinan.name_en, jinan.level) == ("济南市", "Jinan", Level.city)
    assert geo.get_unit("370102").name_en == "Lixia District"
    for unit in geo.list_units("county"):
        assert unit.name_zh and unit.name_en.isascii()
        assert unit.parent == unit.code[:4] + "00"
        assert len(unit.code) == 6


def test_every_county_lies_inside_its_city() -> None:
    for county in geo.list_units("county"):
        shape = geo.geometry(county.code)
        city = geo.geometry(county.parent or "")
        assert shape.difference(city).area / shape.area < 1e-6, county.code


def test_areas_add_up() -> None:
    province = geo.get_unit("370000").area_km2
    cities = sum(u.area_km2 for u in geo.list_units("city"))
    assert abs(cities - province) / province < 0.001
    # the published land area of Shandong is about 155,800 km²
    assert 150_000 < province < 162_000


def test_locate_finds_each_county() -> None:
    for county in geo.list_units("county"):
        point = geo.geometry(county.code).point_on_surface()
        found = geo.locate(point.x, point.y)
        assert found is not None and found.code == county.code
    assert geo.locate(0.0, 0.0) is None


def test_synthetic_units_are_deterministic_and_inside() -> None:
    streets = geo.list_units("street", "370102")
    assert 5 <= len(streets) <= 30
    assert all(len(s.code) == 9 and s.code.startswith("370102") for s in streets)
    county = geo.geometry("370102")
    covered = 0.0
    for street in streets:
        shape = geo.geometry(street.code)
        assert shape.difference(county).area < 1e-9
        covered += shape.area
    assert abs(covered - county.area) / county.area < 1e-6
    communities = geo.list_units("community", streets[0].code)
    grids = geo.list_units("grid", communities[0].code)
    assert communities and grids
    assert all(len(c.code) == 12 for c in communities) and all(len(g.code) == 15 for g in grids)
    assert len({c.name_zh for c in communities}) == len(communities)
    assert geo.get_unit(grids[0].code) == grids[0]
    assert geo.list_units("street", "370102") == streets


def test_sample_points_inside() -> None:
    rng = np.random.default_rng(7)
    points = geo.sample_points("370102", 2000, rng)
    assert points.shape == (2000, 2)
    shape = geo.geometry("370102")
    import shapely

    assert shapely.contains_xy(shape, points[:, 0], points[:, 1]).all()


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: geo.get_unit("999999"), NotFound),
        (lambda: geo.get_unit("12ab"), BadInput),
        (lambda: geo.list_units("planet"), BadInput),
        (lambda: geo.list_units("street"), BadInput),
        (lambda: geo.list_units("city", "370102"), BadInput),
        (lambda: geo.get_unit("370102999"), NotFound),
    ],
)
def test_bad_input(call: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        call()  # type: ignore[operator]


def test_cli_lists_cities_as_json() -> None:
    result = CliRunner().invoke(app, ["geo", "list", "--level", "city", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 16
    assert {"code", "name_zh", "name_en", "level", "parent"} <= set(rows[0])
    counties = CliRunner().invoke(
        app, ["geo", "list", "--level", "county", "--parent", "370100", "--format", "json"]
    )
    assert {r["parent"] for r in json.loads(counties.output)} == {"370100"}


def test_cli_bad_input_is_one_sentence() -> None:
    import subprocess
    import sys

    for args in (["--level", "planet"], ["--level", "county", "--parent", "999999"]):
        proc = subprocess.run(
            [sys.executable, "-m", "citybrain", "geo", "list", *args],
            capture_output=True,
            text=True,
        )
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip()


def test_api_routes() -> None:
    api = FastAPI()
    install_problem_handlers(api)
    api.include_router(router)
    client = TestClient(api)
    assert len(client.get("/geo/units", params={"level": "city"}).json()) == 16
    assert client.get("/geo/units/370100").json()["name_en"] == "Jinan"
    feature = client.get("/geo/units/370100/geometry").json()
    assert feature["type"] == "Feature" and feature["geometry"]["type"] in (
        "Polygon",
        "MultiPolygon",
    )
    fc = client.get("/geo/features", params={"level": "county", "parent": "370100"}).json()
    assert len(fc["features"]) == len(geo.list_units("county", "370100"))
    assert client.get("/geo/units/999999").status_code == 404
    assert client.get("/geo/units/abc").status_code == 400
    assert client.get("/geo/units", params={"level": "planet"}).status_code == 400
    assert client.get("/geo/features", params={"level": "street"}).status_code == 400
