"""Indicator engine: trees, scoring, formulas on a synthetic city, time series, roll-up, roles."""

from __future__ import annotations

import asyncio
import copy
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from citybrain.app import create_app, prepare_node
from citybrain.cli import app as cli_app
from citybrain.core.config import load_settings
from citybrain.core.errors import BadInput, NotFound
from citybrain.decisions.indicators import formulas, scoring, service
from citybrain.decisions.indicators.models import Bands, ChildResult, Item, Tree, UnitValue
from conftest import bearer

CITY = "370100"
LIXIA = "370102"
SHIZHONG = "370103"
TREES = Path(scoring.__file__).parent / "trees"


@pytest.fixture(scope="session")
def synth_city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generate Jinan once at a tiny scale (deterministic, seed 7)."""
    out = tmp_path_factory.mktemp("synth")
    subprocess.run(
        [sys.executable, "-m", "citybrain", "synth", "--scale", "0.0003", "--seed", "7"]
        + ["--out", str(out / "s"), "--cities", CITY, "--workers", "1"],
        check=True,
        capture_output=True,
    )
    return out / "s" / CITY


@pytest.fixture
def node_dir(synth_city: Path, tmp_path: Path) -> Path:
    data = tmp_path / "node"
    shutil.copytree(synth_city, data)
    return data


def _raw_tree(name: str = "operational") -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((TREES / f"{name}.yaml").read_text(encoding="utf-8"))
    return data


@pytest.fixture
def client(node_dir: Path) -> Iterator[TestClient]:
    settings = load_settings(data_dir=node_dir, code=CITY, level="city")
    with TestClient(create_app(settings)) as c:
        yield c


def h(data: Path, role: str = "operator", org: str = "bureau") -> dict[str, str]:
    return bearer(data, org=org, role=role, issuer=CITY)


def _raw(data: Path, sql: str) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = duckdb.sql(sql.replace("DATA", str(data))).fetchall()
    return rows


# ------------------------------------------------------------------ trees


def test_shipped_trees_load_with_their_confirmed_flags() -> None:
    trees = scoring.shipped_trees()
    assert set(trees) == {"gbt33356", "u4ssc", "operational"}
    gbt = scoring.validate_tree(trees["gbt33356"])
    level1 = [n for n in gbt.values() if n.level == 1]
    assert [n.code for n in level1] == [f"L{i}" for i in range(1, 9)]
    assert round(sum(n.share for n in level1), 6) == 1.0
    assert gbt["L1"].share == pytest.approx(0.37)
    # unconfirmed in the source stays unconfirmed
    assert gbt["L1P9"].group is not None and gbt["L1P9"].group.confirmed is False
    assert gbt["L1P1-A2"].share == pytest.approx(0.35)  # (100 - 30) / 2
    kpi = scoring.validate_tree(trees["u4ssc"])["SC:EH:H:5A"].item
    assert kpi is not None and kpi.formula is not None and kpi.confirmed is False


def test_weights_that_do_not_add_up_are_refused() -> None:
    raw = _raw_tree()
    raw["groups"][0]["weight"] = 50  # 50 + 20 + 15 + 30 + 0 = 115
    with pytest.raises(BadInput, match="sum to 115, not 100"):
        scoring.parse_tree(raw)
    raw = _raw_tree()
    raw["groups"][0]["items"][0]["weight"] = 90  # 90 + 30 + 30
    with pytest.raises(BadInput, match="OPS-EVENTS sum to 150"):
        scoring.parse_tree(raw)
    raw = _raw_tree()
    raw["groups"][0]["items"][0]["weight"] = 100
    raw["groups"][0]["items"][1]["weight"] = None
    with pytest.raises(BadInput, match="leave nothing"):
        scoring.parse_tree(raw)


def test_unknown_direction_and_bad_bands_are_refused() -> None:
    raw = _raw_tree()
    raw["groups"][0]["items"][0]["direction"] = "sideways"
    with pytest.raises(BadInput, match="direction"):
        scoring.parse_tree(raw)
    raw = _raw_tree()
    raw["groups"][0]["items"][0]["bands"]["points"] = [[80, 60], [50, 0]]
    with pytest.raises(BadInput, match="strictly ascending"):
        scoring.parse_tree(raw)
    raw = _raw_tree()
    raw["groups"][0]["items"][1]["bands"]["points"] = [[4, 0], [24, 80]]  # lower_better rising
    with pytest.raises(BadInput, match="lower_better but its band scores rise"):
        scoring.parse_tree(raw)
    raw = _raw_tree()
    raw["groups"][0]["items"][0]["bands"]["points"] = [[0, 0], [1, 120]]
    with pytest.raises(BadInput, match="0-100"):
        scoring.parse_tree(raw)
    raw = _raw_tree()
    raw["stars"] = [[50, 3], [90, 5], [0, 1]]
    with pytest.raises(BadInput, match="highest minimum first"):
        scoring.parse_tree(raw)
    raw = _raw_tree()
    raw["groups"][1]["items"][1]["rollup"] = "weighted_mean(NOPE)"
    with pytest.raises(BadInput, match="rollup weight NOPE"):
        scoring.parse_tree(raw)
    with pytest.raises(BadInput, match="mapping"):
        scoring.parse_tree(["not", "a", "tree"])


def test_scoring_and_stars_on_known_numbers() -> None:
    linear = Bands(kind="linear", points=[(50, 0), (80, 60), (100, 100)])
    assert scoring.band_score(linear, 65)[0] == pytest.approx(30)
    assert scoring.band_score(linear, 90)[0] == pytest.approx(80)
    assert scoring.band_score(linear, 10)[0] == 0  # clamped
    assert scoring.band_score(linear, 120)[0] == 100
    steps = Bands(kind="thresholds", points=[(0, 20), (10, 60), (20, 100)])
    assert scoring.band_score(steps, 15)[0] == 60
    assert scoring.band_score(steps, -1)[0] == 20
    item = Item(code="X", name_zh="x", name_en="x", direction="lower_better", target=4)
    assert scoring.score_value(item, 8)[0] == pytest.approx(50)
    assert scoring.score_value(item, 2)[0] == 100
    tree = scoring.get_tree("operational")
    assert [scoring.stars_of(tree, s) for s in (95, 90, 80, 61, 45, 3)] == [5, 5, 4, 3, 2, 1]
    assert scoring.stars_of(tree, None) is None
    score, coverage = scoring.weighted_score([(0.5, 80), (0.3, 40), (0.2, None)])
    assert score == pytest.approx((0.5 * 80 + 0.3 * 40) / 0.8)
    assert coverage == pytest.approx(0.8)


def test_periods_and_unit_scopes() -> None:
    assert formulas.period_bounds("2026-02") == (
        datetime(2026, 2, 1).date(),
        datetime(2026, 2, 28).date(),
    )
    assert formulas.period_bounds("2026-Q4")[1].isoformat() == "2026-12-31"
    assert formulas.period_bounds("2026")[0].isoformat() == "2026-01-01"
    for bad in ("2026-13", "26-01", "2026-02-30", "x"):
        with pytest.raises(BadInput):
            formulas.period_bounds(bad)
    units, pairs = formulas.unit_scope(CITY, "city")
    assert units[0] == CITY and LIXIA in units and len(units) == 13
    assert (LIXIA, LIXIA) in pairs and (LIXIA, CITY) in pairs
    units, pairs = formulas.unit_scope("370000", "province")
    assert len(units) == 17 and len(pairs) == 2 * 136
    assert formulas.unit_scope(LIXIA, "county") == ([LIXIA], [(LIXIA, LIXIA)])


# ------------------------------------------------------------------ formulas on a city


def test_compute_on_a_synthetic_city_matches_raw_duckdb(client: TestClient, node_dir: Path) -> None:
    r = client.post("/api/indicators/compute", json={"tree": "operational"}, headers=h(node_dir))
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["units"][0] == CITY and len(result["units"]) == 13
    assert result["items_failed"] == 0 and result["items_ok"] >= 7
    got = {
        v["unit"]: v
        for v in client.get(
            "/api/indicators/values",
            params={"tree": "operational", "item": "OPS-SC-INSURED"},
            headers=h(node_dir),
        ).json()
    }
    ((insured, residents),) = _raw(
        node_dir,
        "select (select count(*) from 'DATA/medical_security/insured_persons.parquet' "
        f"where status = '参保缴费' and insured_county = '{LIXIA}'), "
        "(select count(*) from 'DATA/public_security/residents.parquet' "
        f"where residence_county = '{LIXIA}')",
    )
    assert got[LIXIA]["value"] == pytest.approx(100 * insured / residents)
    ((city_insured, city_residents),) = _raw(
        node_dir,
        "select (select count(*) from 'DATA/medical_security/insured_persons.parquet' "
        "where status = '参保缴费'), "
        "(select count(*) from 'DATA/public_security/residents.parquet')",
    )
    assert got[CITY]["value"] == pytest.approx(100 * city_insured / city_residents)
    assert got[CITY]["stars"] in range(1, 6) and got[CITY]["inputs"]
    # the event centre's items are "no data", never an error
    events = client.get(
        "/api/indicators/values",
        params={"tree": "operational", "item": "OPS-EV-ONTIME", "unit": CITY},
        headers=h(node_dir),
    ).json()
    assert events[0]["status"] == "no_data" and events[0]["value"] is None
    # GB/T items without data say so
    client.post("/api/indicators/compute", json={"tree": "gbt33356"}, headers=h(node_dir))
    gbt = client.get(
        "/api/indicators/values",
        params={"tree": "gbt33356", "item": "L1P1-A1", "unit": CITY},
        headers=h(node_dir),
    ).json()
    assert gbt[0]["status"] == "no_data" and "no formula" in gbt[0]["reason"]


def test_lineage_and_audit_are_recorded(client: TestClient, node_dir: Path) -> None:
    client.post("/api/indicators/compute", json={"tree": "u4ssc"}, headers=h(node_dir))
    graph = client.get(
        "/api/lineage/medical_security/insured_persons", headers=h(node_dir, "bureau_admin")
    )
    assert graph.status_code == 200, graph.text
    assert "indicator:u4ssc/SC:EH:H:5A" in graph.text
    log = (node_dir / "audit").rglob("*")
    assert any("indicator.compute" in p.read_text(errors="ignore") for p in log if p.is_file())


def test_explain_item_and_group(client: TestClient, node_dir: Path) -> None:
    client.post("/api/indicators/compute", json={"tree": "operational"}, headers=h(node_dir))
    item = client.get(
        "/api/indicators/explain",
        params={"tree": "operational", "item": "OPS-SC-INSURED", "unit": LIXIA},
        headers=h(node_dir),
    ).json()
    assert "insured_persons" in item["formula"] and item["bands"]["kind"] == "linear"
    assert item["band"]["rule"] == "linear" and item["value"] is not None
    expected = scoring.band_score(Bands(**item["bands"]), item["value"])[0]
    assert item["score"] == pytest.approx(expected, abs=1e-3)
    group = client.get(
        "/api/indicators/explain",
        params={"tree": "operational", "item": "OPS-SCENES", "unit": LIXIA},
        headers=h(node_dir),
    ).json()
    assert {c["code"] for c in group["children"]} == {
        "OPS-SC-SCHOOL-SEATS",
        "OPS-SC-INSURED",
        "OPS-SC-GRID-WORKERS",
    }
    measured = sum(c["contribution"] for c in group["children"] if c["contribution"] is not None)
    assert group["score"] == pytest.approx(measured / group["coverage"], abs=1e-2)
    root = client.get(
        "/api/indicators/explain",
        params={"tree": "operational", "unit": CITY},
        headers=h(node_dir),
    ).json()
    assert root["kind"] == "tree" and len(root["children"]) == 5
    missing = client.get(
        "/api/indicators/explain",
        params={"tree": "operational", "item": "NOPE", "unit": CITY},
        headers=h(node_dir),
    )
    assert missing.status_code == 404


def test_compare_units(client: TestClient, node_dir: Path) -> None:
    client.post("/api/indicators/compute", json={"tree": "operational"}, headers=h(node_dir))
    r = client.get(
        "/api/indicators/compare",
        params={"tree": "operational", "units": f"{LIXIA},{SHIZHONG},{CITY}"},
        headers=h(node_dir),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [row["code"] for row in body["rows"]][0] == "*" and len(body["rows"]) == 6
    assert set(body["rows"][0]["values"]) == {LIXIA, SHIZHONG, CITY}
    scenes = client.get(
        "/api/indicators/compare",
        params={"tree": "operational", "units": f"{LIXIA},{SHIZHONG}", "item": "OPS-SCENES"},
        headers=h(node_dir),
    ).json()
    assert [row["code"] for row in scenes["rows"]][1:] == [
        "OPS-SC-SCHOOL-SEATS",
        "OPS-SC-INSURED",
        "OPS-SC-GRID-WORKERS",
    ]
    bad = client.get(
        "/api/indicators/compare",
        params={"tree": "operational", "units": "12"},
        headers=h(node_dir),
    )
    assert bad.status_code == 400


def test_time_series_over_two_computations(node_dir: Path) -> None:
    settings = load_settings(data_dir=node_dir, code=CITY, level="city")
    engine = prepare_node(settings)
    stamps = iter([datetime(2026, 11, 3, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)])
    for _ in range(2):
        service.compute(
            engine=engine,
            data_dir=node_dir,
            code=CITY,
            level="city",
            tree="u4ssc",
            clock=lambda: next(stamps),
        )
    history = service.values(
        engine=engine, tree="u4ssc", item="SC:EH:H:5A", unit=LIXIA, history=True
    )
    assert [v.period for v in history] == ["2026-11", "2026-11"]
    assert history[0].computed_at > history[1].computed_at
    latest = service.values(engine=engine, tree="u4ssc", item="SC:EH:H:5A", unit=LIXIA)
    assert len(latest) == 1 and latest[0].computed_at == history[0].computed_at


def test_a_failing_formula_leaves_the_others_computed(node_dir: Path) -> None:
    settings = load_settings(data_dir=node_dir, code=CITY, level="city")
    engine = prepare_node(settings)
    raw = copy.deepcopy(_raw_tree())
    scenes = raw["groups"][3]["items"]
    scenes[0]["formula"]["sql"] = "select unit_code, from nowhere"  # bad SQL
    scenes[2]["formula"]["inputs"] = ["education/no_such_table"]  # missing table
    tree = Tree.model_validate(raw)
    result = service.compute(
        engine=engine,
        data_dir=node_dir,
        code=CITY,
        level="city",
        tree="operational",
        definition=tree,
    )
    failed = {f.item: f.reason for f in result.failures}
    assert set(failed) == {"OPS-SC-SCHOOL-SEATS", "OPS-SC-GRID-WORKERS"}
    assert "no_such_table is not on this node" in failed["OPS-SC-GRID-WORKERS"]
    assert result.items_failed == 2 and result.items_ok >= 5
    insured = service.values(engine=engine, tree="operational", item="OPS-SC-INSURED", unit=CITY)
    assert insured[0].status == "ok"
    seats = service.values(engine=engine, tree="operational", item="OPS-SC-SCHOOL-SEATS", unit=CITY)
    assert seats[0].status == "error" and seats[0].reason
    # a formula answering other than (unit_code, value) is an error of that item too
    scenes[1]["formula"]["sql"] = "select unit_code, 1, 2 from node"
    result = service.compute(
        engine=engine,
        data_dir=node_dir,
        code=CITY,
        level="city",
        tree="operational",
        definition=Tree.model_validate(raw),
    )
    assert "3 columns" in {f.item: f.reason for f in result.failures}["OPS-SC-INSURED"]


# ------------------------------------------------------------------ roll-up


def test_combine_child_values_by_rule() -> None:
    vals = [
        UnitValue(unit="370102", value=90, weight=100),
        UnitValue(unit="370103", value=60, weight=300),
        UnitValue(unit="370104", value=None, weight=50),
    ]
    assert service.combine_child_values("operational", "OPS-CTX-RESIDENTS", vals) == 150
    assert service.combine_child_values("operational", "OPS-EV-ONTIME", vals) == 75
    weighted = service.combine_child_values("operational", "OPS-SC-INSURED", vals)
    assert weighted == pytest.approx((90 * 100 + 60 * 300) / 400)
    assert service.combine_child_values("operational", "OPS-SC-INSURED", []) is None
    with pytest.raises(NotFound):
        service.combine_child_values("operational", "OPS-EVENTS", vals)


def test_ingest_child_results_rolls_up_into_the_parent(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "prov")
    engine = prepare_node(settings)
    at = datetime(2026, 11, 30, tzinfo=UTC)

    def res(unit: str, item: str, value: float | None) -> ChildResult:
        return ChildResult(
            tree="operational",
            item=item,
            unit=unit,
            period="2026-11",
            value=value,
            computed_at=at,
        )

    results = [
        res("370100", "OPS-CTX-RESIDENTS", 1000),
        res("370100", "OPS-SC-INSURED", 90),
        res("370200", "OPS-CTX-RESIDENTS", 3000),
        res("370200", "OPS-SC-INSURED", 98),
    ]
    counts = service.ingest_child_results(engine=engine, results=results, clock=lambda: at)
    assert counts["stored"] == 4 and counts["rolled_up"] == 2
    province = {v.item: v for v in service.values(engine=engine, tree="operational", unit="370000")}
    assert province["OPS-CTX-RESIDENTS"].value == 4000
    assert province["OPS-SC-INSURED"].value == pytest.approx((90 * 1000 + 98 * 3000) / 4000)
    assert province["OPS-SC-INSURED"].source == "rollup" and province["*"].score is not None
    city = service.values(engine=engine, tree="operational", item="OPS-SC-INSURED", unit="370100")
    assert city[0].source == "child:370100" and city[0].score is not None
    with pytest.raises(BadInput, match="not a child unit"):
        service.ingest_child_results(engine=engine, results=[res("370102", "OPS-SC-INSURED", 1)])
    with pytest.raises(BadInput, match="no item"):
        service.ingest_child_results(engine=engine, results=[res("370100", "OPS-SCENES", 1)])
    exported = service.export_results(engine=engine, tree="operational", unit="370000")
    assert {e.item for e in exported} >= {"OPS-CTX-RESIDENTS", "OPS-SC-INSURED"}


# ------------------------------------------------------------------ API, roles, schedule, CLI


def test_roles_and_bad_input(client: TestClient, node_dir: Path) -> None:
    assert client.get("/api/indicators/trees").status_code == 401
    citizen = bearer(node_dir, org="citizen", role="citizen", issuer=CITY, phone="13800000000")
    assert client.get("/api/indicators/trees", headers=citizen).status_code == 403
    steward = h(node_dir, "steward", "education")
    trees = client.get("/api/indicators/trees", headers=steward)
    assert trees.status_code == 200 and {t["id"] for t in trees.json()} == {
        "gbt33356",
        "u4ssc",
        "operational",
    }
    one = client.get("/api/indicators/trees/gbt33356", headers=steward).json()
    assert len(one["children"]) == 8 and one["weight_basis"] == "total"
    assert client.get("/api/indicators/trees/nope", headers=steward).status_code == 404
    body = {"tree": "u4ssc"}
    assert client.post("/api/indicators/compute", json=body, headers=steward).status_code == 403
    admin = h(node_dir, "bureau_admin")
    assert client.post("/api/indicators/compute", json=body, headers=admin).status_code == 200
    bad_period = {"tree": "u4ssc", "period": "2026-13"}
    assert client.post("/api/indicators/compute", json=bad_period, headers=admin).status_code == 400
    extra = {"tree": "u4ssc", "x": 1}
    assert client.post("/api/indicators/compute", json=extra, headers=admin).status_code == 400
    nope = {"tree": "nope"}
    assert client.post("/api/indicators/compute", json=nope, headers=admin).status_code == 404
    values = client.get("/api/indicators/values", params={"tree": "u4ssc"}, headers=steward)
    assert values.status_code == 200 and values.json()
    assert (
        client.get("/api/indicators/values", params={"tree": "nope"}, headers=steward).status_code
        == 404
    )


def _scheduled(node_dir: Path, **options: Any) -> Any:
    """Run the node's schedule at once, with no wait between runs; return the node's store."""
    settings = load_settings(data_dir=node_dir, code=CITY, level="city")
    engine = prepare_node(settings)
    asyncio.run(
        service.run_schedule(engine=engine, settings=settings, every=0, first_after=0, **options)
    )
    return engine


def test_schedule_computes_with_an_injected_clock(node_dir: Path) -> None:
    clock = lambda: datetime(2026, 10, 15, tzinfo=UTC)  # noqa: E731
    engine = _scheduled(node_dir, clock=clock, trees=["u4ssc"], iterations=2)
    history = service.values(
        engine=engine, tree="u4ssc", item="SC:EH:H:5A", unit=CITY, history=True
    )
    assert [v.period for v in history] == ["2026-10", "2026-10"]


def test_cli_trees_compute_values_explain_compare(node_dir: Path) -> None:
    runner = CliRunner()
    node = ["--data", str(node_dir), "--code", CITY, "--level", "city"]
    listed = runner.invoke(cli_app, ["indicators", "trees", "--json"])
    assert listed.exit_code == 0 and "operational" in listed.output
    done = runner.invoke(cli_app, ["indicators", "compute", "u4ssc", *node])
    assert done.exit_code == 0, done.output
    assert "13 units" in done.output
    shown = runner.invoke(cli_app, ["indicators", "values", "u4ssc", *node, "--unit", CITY])
    assert shown.exit_code == 0 and "SC:EH:H:5A" in shown.output
    why = runner.invoke(
        cli_app, ["indicators", "explain", "u4ssc", *node, "--unit", CITY, "--item", "SC:EH:H:5A"]
    )
    assert why.exit_code == 0 and '"formula"' in why.output
    side = runner.invoke(
        cli_app, ["indicators", "compare", "u4ssc", *node, "--units", f"{LIXIA},{SHIZHONG}"]
    )
    assert side.exit_code == 0 and LIXIA in side.output


def test_postgresql_store(postgres_url: str, node_dir: Path) -> None:
    settings = load_settings(data_dir=node_dir, code=CITY, level="city", database_url=postgres_url)
    engine = prepare_node(settings)
    period = "2031-07"  # unique in the shared session database
    result = service.compute(
        engine=engine,
        data_dir=node_dir,
        code=CITY,
        level="city",
        tree="operational",
        period=period,
    )
    assert result.items_failed == 0
    got = service.values(engine=engine, tree="operational", unit=LIXIA, period=period)
    assert {v.item for v in got} >= {"OPS-SC-INSURED", "OPS-SCENES", "*"}
    why = service.explain(engine=engine, tree="operational", item="*", unit=CITY, period=period)
    assert why.children and why.period == period
    engine.dispose()


def test_the_schedule_computes_in_a_child_process(
    node_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def here(**_: object) -> None:
        raise AssertionError("computed in the serving process")

    # the serving process's compute is out of reach: only a child can have done the work
    monkeypatch.setattr(service, "compute", here)
    engine = _scheduled(node_dir, trees=["u4ssc"], iterations=1)
    runs = service.values(engine=engine, tree="u4ssc", item="SC:EH:H:5A", unit=CITY, history=True)
    assert len(runs) == 1


def test_a_failing_scheduled_computation_is_logged_and_the_other_trees_are_computed(
    node_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("ERROR"):
        engine = _scheduled(node_dir, trees=["nope", "u4ssc"], iterations=1)
    failed = [r for r in caplog.records if "scheduled indicator computation failed" in r.message]
    reason = str(failed[0].exc_info[1]) if failed and failed[0].exc_info else ""
    assert "exited with 1" in reason and "nope" in reason
    runs = service.values(engine=engine, tree="u4ssc", item="SC:EH:H:5A", unit=CITY, history=True)
    assert len(runs) == 1


@pytest.mark.parametrize(
    ("seconds", "expected"), [(0, []), (900, [(900.0, 60.0)]), (30, [(30.0, 30.0)])]
)
def test_the_schedule_follows_its_setting(
    node_dir: Path, monkeypatch: pytest.MonkeyPatch, seconds: float, expected: list[object]
) -> None:
    started: list[tuple[float, float]] = []

    async def schedule(*, every: float, first_after: float, **_: object) -> None:
        started.append((every, first_after))

    monkeypatch.setattr(service, "run_schedule", schedule)
    settings = load_settings(
        data_dir=node_dir, code=CITY, level="city", indicator_schedule_seconds=seconds
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
    assert started == expected


def test_a_negative_schedule_is_refused(node_dir: Path) -> None:
    with pytest.raises(Exception, match="indicator_schedule_seconds"):
        load_settings(data_dir=node_dir, code=CITY, level="city", indicator_schedule_seconds=-1)
