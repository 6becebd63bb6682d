"""Alerts: thresholds, rate of change, MAD and seasonal anomalies, no storms, bad rules, API."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert

from citybrain.app import create_app, prepare_node
from citybrain.core.config import Settings, load_settings
from citybrain.core.errors import Unprocessable
from citybrain.decisions.alerts import rules as rulebook
from citybrain.decisions.alerts import service
from citybrain.decisions.indicators.models import indicator_values
from citybrain.events import service as events
from citybrain.events.models import TransitionRequest
from citybrain.governance.principal import Principal, Role
from citybrain.hub.ngsild.models import ngsild_entities, ngsild_entity_types, ngsild_history
from conftest import bearer

NOW = datetime(2025, 3, 3, 4, 0, tzinfo=UTC)
CENTRE = Principal(subject="op1", org="bureau", role=Role.operator, issuer="370000")
JINAN = (117.02, 36.67)


@pytest.fixture
def node(tmp_path: Path) -> tuple[Settings, Engine]:
    settings = load_settings(data_dir=tmp_path)
    return settings, prepare_node(settings)


def _rule(**fields: Any) -> rulebook.AnyRule:
    (rule,) = rulebook.parse_rules({"rules": [{"id": "r1", **fields}]})
    return rule


def _entity(engine: Engine, entity_id: str, entity_type: str, point: tuple[float, float]) -> None:
    entity = {
        "id": entity_id,
        "type": [f"https://smartdatamodels.org/{entity_type}"],
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": point}},
    }
    with engine.begin() as conn:
        conn.execute(
            insert(ngsild_entities).values(
                tenant="", id=entity_id, entity=entity, created_at=NOW, modified_at=NOW
            )
        )
        conn.execute(
            insert(ngsild_entity_types).values(tenant="", id=entity_id, type=entity["type"][0])
        )


def _readings(
    engine: Engine, entity_id: str, attribute: str, points: list[tuple[datetime, float]]
) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(ngsild_history),
            [
                {
                    "tenant": "",
                    "entity_id": entity_id,
                    "attribute": f"https://smartdatamodels.org/{attribute}",
                    "dataset_id": None,
                    "at": at,
                    "number": value,
                    "instance": {"type": "Property", "value": value},
                }
                for at, value in points
            ],
        )


def _noise(n: int) -> list[float]:
    # a deterministic wobble around 55 dB
    return [55 + 2 * math.sin(i * 1.7) + (i % 3) * 0.5 for i in range(n)]


def _evaluate(settings: Settings, engine: Engine, rule: Any, now: datetime = NOW) -> Any:
    return service.evaluate_once(
        engine=engine, data_dir=settings.data_dir, settings=settings, now=now, rules=[rule]
    )


# ---------------------------------------------------------------------------------------------
# sensor rules


def test_sensor_threshold_opens_an_alarm_case_at_the_entity(node: tuple[Settings, Engine]) -> None:
    settings, engine = node
    _entity(engine, "urn:bin:1", "WasteContainer", JINAN)
    _entity(engine, "urn:bin:2", "WasteContainer", JINAN)
    _readings(engine, "urn:bin:1", "fillingLevel", [(NOW - timedelta(minutes=5), 0.97)])
    _readings(engine, "urn:bin:2", "fillingLevel", [(NOW - timedelta(minutes=5), 0.40)])
    # an old reading (outside the window) is no evidence
    _entity(engine, "urn:bin:3", "WasteContainer", JINAN)
    _readings(engine, "urn:bin:3", "fillingLevel", [(NOW - timedelta(hours=3), 0.99)])
    rule = _rule(
        kind="sensor_threshold",
        entity_type="WasteContainer",
        attribute="fillingLevel",
        op=">=",
        threshold=0.95,
        event_type="overflowing_bin",
        description="bin full",
    )
    report = _evaluate(settings, engine, rule)
    assert report.hits == 1 and len(report.fired) == 1 and not report.errors
    alert = report.fired[0]
    assert alert.subject == "urn:bin:1" and alert.value == 0.97
    case = events.get_case(engine=engine, case_id=alert.case_id)
    assert case.source == "alarm" and case.event_type == "overflowing_bin"
    assert (case.lon, case.lat) == JINAN and case.area_code.startswith("3701")
    assert "bin full" in case.description and case.state == "captured"


def test_rate_of_change(node: tuple[Settings, Engine]) -> None:
    settings, engine = node
    for gauge in ("urn:gauge:fast", "urn:gauge:slow"):
        _entity(engine, gauge, "WaterObserved", JINAN)
    start = NOW - timedelta(minutes=50)
    _readings(engine, "urn:gauge:fast", "height", [(start, 1.0), (NOW, 1.5)])  # 0.6 m/h
    _readings(engine, "urn:gauge:slow", "height", [(start, 1.0), (NOW, 1.1)])  # 0.12 m/h
    rule = _rule(
        kind="sensor_rate",
        entity_type="WaterObserved",
        attribute="height",
        op=">",
        threshold=0.3,
        window_minutes=60,
        event_type="waterlogging",
        urgency="urgent",
    )
    report = _evaluate(settings, engine, rule)
    assert [a.subject for a in report.fired] == ["urn:gauge:fast"]
    assert report.fired[0].value == pytest.approx(0.6)
    case = events.get_case(engine=engine, case_id=report.fired[0].case_id)
    assert case.urgency == "urgent"


def test_mad_anomaly_finds_the_one_spike(node: tuple[Settings, Engine]) -> None:
    settings, engine = node
    _entity(engine, "urn:noise:spiky", "NoiseLevelObserved", JINAN)
    _entity(engine, "urn:noise:calm", "NoiseLevelObserved", JINAN)
    times = [NOW - timedelta(minutes=10 * i) for i in range(60, -1, -1)]
    calm = _noise(len(times))
    _readings(engine, "urn:noise:calm", "LAeq", list(zip(times, calm, strict=True)))
    spiky = [*calm[:-1], 95.0]
    _readings(engine, "urn:noise:spiky", "LAeq", list(zip(times, spiky, strict=True)))
    rule = _rule(
        kind="sensor_anomaly",
        entity_type="NoiseLevelObserved",
        attribute="LAeq",
        window_minutes=1440,
        z=5,
        event_type="construction_noise",
    )
    report = _evaluate(settings, engine, rule)
    assert [a.subject for a in report.fired] == ["urn:noise:spiky"]
    assert report.fired[0].detail["z"] > 5 and report.fired[0].detail["latest"] == 95.0
    # the detector itself: robust to the spike in the reference, flat references
    assert abs(rulebook.robust_z(56.0, calm)) < 3
    assert rulebook.robust_z(60.0, [*calm, 500.0, 600.0]) < rulebook.robust_z(95.0, calm)
    assert rulebook.robust_z(1.0, [1.0, 1.0, 1.0]) == 0.0
    assert rulebook.robust_z(2.0, [1.0, 1.0, 1.0]) == rulebook.Z_CAP


def test_too_few_points_are_no_anomaly(node: tuple[Settings, Engine]) -> None:
    settings, engine = node
    _entity(engine, "urn:noise:new", "NoiseLevelObserved", JINAN)
    _readings(engine, "urn:noise:new", "LAeq", [(NOW - timedelta(minutes=1), 55.0), (NOW, 99.0)])
    rule = _rule(
        kind="sensor_anomaly",
        entity_type="NoiseLevelObserved",
        attribute="LAeq",
        event_type="construction_noise",
    )
    assert _evaluate(settings, engine, rule).hits == 0


def _daily(hour: float) -> float:
    # water flow with a daily shape: low at night, high by day
    return 50 + 40 * math.sin((hour - 9) / 24 * 2 * math.pi)


def test_seasonal_variant_compares_with_the_same_hour(node: tuple[Settings, Engine]) -> None:
    settings, engine = node
    for meter in ("urn:meter:normal", "urn:meter:burst"):
        _entity(engine, meter, "WaterConsumptionObserved", JINAN)
    history = []
    for step in range(7 * 24 * 4, 0, -1):  # a week of quarter-hours
        at = NOW - timedelta(minutes=15 * step)
        history.append((at, _daily(at.hour + at.minute / 60) + (step % 5) * 0.3))
    usual = _daily(NOW.hour)  # the night low: far from the week's median, yet usual
    _readings(engine, "urn:meter:normal", "flow", [*history, (NOW, usual)])
    _readings(engine, "urn:meter:burst", "flow", [*history, (NOW, usual + 60)])
    seasonal = _rule(
        kind="sensor_seasonal",
        entity_type="WaterConsumptionObserved",
        attribute="flow",
        days=7,
        z=5,
        event_type="water_outage",
    )
    report = _evaluate(settings, engine, seasonal)
    assert [a.subject for a in report.fired] == ["urn:meter:burst"]
    assert report.fired[0].detail["reference_days"] == 7
    # a plain window z-score would not tell the burst from the night low
    window = [v for _, v in history]
    assert (
        abs(rulebook.robust_z(usual, window)) < 5 and abs(rulebook.robust_z(usual + 60, window)) < 5
    )


# ---------------------------------------------------------------------------------------------
# indicator rules


def _value(engine: Engine, unit: str, period: str, value: float, score: float = 80.0) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(indicator_values).values(
                id=uuid.uuid4().hex,
                run_id="run",
                tree="operational",
                item="OPS-EV-ONTIME",
                kind="item",
                unit=unit,
                period=period,
                value=value,
                score=score,
                stars=4,
                status="ok",
                reason=None,
                source="local",
                computed_at=NOW,
                inputs=[],
                detail={},
            )
        )


def test_indicator_threshold_and_change(node: tuple[Settings, Engine]) -> None:
    settings, engine = node
    _value(engine, "370100", "2025-01", 0.95)
    _value(engine, "370100", "2025-02", 0.70)  # fell below 0.8 and by 26 %
    _value(engine, "370200", "2025-01", 0.90)
    _value(engine, "370200", "2025-02", 0.88)
    low = _rule(
        kind="indicator_threshold",
        tree="operational",
        item="OPS-EV-ONTIME",
        op="<",
        threshold=0.8,
        event_type="food_safety",
    )
    report = _evaluate(settings, engine, low)
    assert [a.subject for a in report.fired] == ["370100"]
    case = events.get_case(engine=engine, case_id=report.fired[0].case_id)
    assert case.area_code.startswith("3701")  # placed inside the unit
    drop = _rule(
        kind="indicator_change",
        tree="operational",
        item="OPS-EV-ONTIME",
        relative=True,
        op="<",
        threshold=-0.1,
        event_type="food_safety",
    )
    (hit,) = service.hits_of(engine=engine, rule=drop)
    assert hit.subject == "370100" and hit.value == pytest.approx(-0.2632, abs=1e-3)
    on_score = _rule(
        kind="indicator_threshold",
        tree="operational",
        item="OPS-EV-ONTIME",
        field="score",
        op=">=",
        threshold=80,
        event_type="food_safety",
    )
    assert {h.subject for h in service.hits_of(engine=engine, rule=on_score)} == {
        "370100",
        "370200",
    }


# ---------------------------------------------------------------------------------------------
# no storms


def test_hundred_spikes_make_one_case_then_the_window_reopens(
    node: tuple[Settings, Engine],
) -> None:
    settings, engine = node
    _entity(engine, "urn:bin:storm", "WasteContainer", JINAN)
    rule = _rule(
        kind="sensor_threshold",
        entity_type="WasteContainer",
        attribute="fillingLevel",
        op=">=",
        threshold=0.95,
        event_type="overflowing_bin",
        suppress_minutes=120,
    )
    fired = suppressed = 0
    for i in range(100):
        at = NOW + timedelta(seconds=30 * i)
        _readings(engine, "urn:bin:storm", "fillingLevel", [(at, 0.99)])
        report = _evaluate(settings, engine, rule, now=at)
        fired += len(report.fired)
        suppressed += report.suppressed
    assert fired == 1 and suppressed == 99
    assert service.suppressed_counts(engine=engine) == {"r1:urn:bin:storm": 99}
    (alert,) = service.list_alerts(engine=engine)
    # the case closes (discarded here); still within the window: suppressed
    events.transition(
        engine=engine,
        data_dir=settings.data_dir,
        case_id=alert.case_id,
        name="discard",
        principal=CENTRE,
        body=TransitionRequest(note="emptied"),
        now=NOW + timedelta(hours=1),
    )
    at = NOW + timedelta(minutes=90)
    _readings(engine, "urn:bin:storm", "fillingLevel", [(at, 0.99)])
    assert _evaluate(settings, engine, rule, now=at).fired == []
    # past the window with no open case: a new case
    at = NOW + timedelta(minutes=130)
    _readings(engine, "urn:bin:storm", "fillingLevel", [(at, 0.99)])
    assert len(_evaluate(settings, engine, rule, now=at).fired) == 1
    assert len(service.list_alerts(engine=engine)) == 2


def test_an_open_case_suppresses_beyond_the_window(node: tuple[Settings, Engine]) -> None:
    settings, engine = node
    _entity(engine, "urn:bin:open", "WasteContainer", JINAN)
    rule = _rule(
        kind="sensor_threshold",
        entity_type="WasteContainer",
        attribute="fillingLevel",
        op=">=",
        threshold=0.95,
        event_type="overflowing_bin",
        suppress_minutes=0,
    )
    for days in (0, 1, 2):
        at = NOW + timedelta(days=days)
        _readings(engine, "urn:bin:open", "fillingLevel", [(at, 0.99)])
        _evaluate(settings, engine, rule, now=at)
    assert len(service.list_alerts(engine=engine)) == 1


# ---------------------------------------------------------------------------------------------
# bad rules


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"id": "x1", "kind": "sensor_magic"}, "kind 'sensor_magic' is not one of"),
        (
            {
                "id": "x1",
                "kind": "sensor_threshold",
                "entity_type": "T",
                "attribute": "a",
                "op": ">",
                "event_type": "street_lamp",
            },
            "threshold: Field required",
        ),
        (
            {
                "id": "x1",
                "kind": "sensor_threshold",
                "entity_type": "T",
                "attribute": "a",
                "op": "=>",
                "threshold": 1,
                "event_type": "street_lamp",
            },
            "op:",
        ),
        (
            {
                "id": "x1",
                "kind": "sensor_threshold",
                "entity_type": "T",
                "attribute": "a",
                "op": ">",
                "threshold": 1,
                "event_type": "ufo",
            },
            "unknown event type 'ufo'",
        ),
        (
            {
                "id": "x1",
                "kind": "indicator_threshold",
                "tree": "nope",
                "item": "A",
                "op": ">",
                "threshold": 1,
                "event_type": "street_lamp",
            },
            "no indicator tree 'nope'",
        ),
        (
            {
                "id": "x1",
                "kind": "indicator_threshold",
                "tree": "operational",
                "item": "NOPE",
                "op": ">",
                "threshold": 1,
                "event_type": "street_lamp",
            },
            "has no item 'NOPE'",
        ),
        (
            {
                "id": "Bad Id",
                "kind": "sensor_anomaly",
                "entity_type": "T",
                "attribute": "a",
                "event_type": "street_lamp",
            },
            "id:",
        ),
        (
            {
                "id": "x1",
                "kind": "sensor_anomaly",
                "entity_type": "T",
                "attribute": "a",
                "event_type": "street_lamp",
                "z": -1,
            },
            "z: Input should be greater than 0",
        ),
        (
            {
                "id": "x1",
                "kind": "sensor_anomaly",
                "entity_type": "T",
                "attribute": "a",
                "event_type": "street_lamp",
                "colour": "red",
            },
            "colour: Extra inputs",
        ),
        ("just text", "a rule is a mapping"),
    ],
)
def test_bad_rules_are_refused_with_the_rule_and_field(rule: Any, message: str) -> None:
    with pytest.raises(Unprocessable) as caught:
        rulebook.parse_rules({"rules": [rule]}, source="rules.yaml")
    assert message in caught.value.message and "rules.yaml rule 1" in caught.value.message


def test_bad_rule_files(tmp_path: Path) -> None:
    twice = {
        "id": "same",
        "kind": "sensor_anomaly",
        "entity_type": "T",
        "attribute": "a",
        "event_type": "street_lamp",
    }
    with pytest.raises(Unprocessable, match="the id same appears twice"):
        rulebook.parse_rules({"rules": [twice, twice]})
    with pytest.raises(Unprocessable, match="a list under 'rules'"):
        rulebook.parse_rules({"rule": []})
    broken = tmp_path / "rules.yaml"
    broken.write_text("rules: [ {id: x", encoding="utf-8")
    with pytest.raises(Unprocessable, match="not valid YAML"):
        rulebook.load_rules(broken)
    with pytest.raises(Unprocessable, match="cannot read the alert rules"):
        rulebook.load_rules(tmp_path / "missing.yaml")
    assert len(rulebook.load_rules()) == len(rulebook.shipped_rules()) >= 6


# ---------------------------------------------------------------------------------------------
# API


def test_alert_api(tmp_path: Path) -> None:
    (tmp_path / "alerts").mkdir()
    (tmp_path / "alerts" / "rules.yaml").write_text(
        "rules:\n"
        "  - {id: full, kind: sensor_threshold, entity_type: WasteContainer,\n"
        "     attribute: fillingLevel, op: '>=', threshold: 0.95, event_type: overflowing_bin}\n",
        encoding="utf-8",
    )
    settings = load_settings(data_dir=tmp_path)
    with TestClient(create_app(settings), headers=bearer(tmp_path)) as client:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        _entity(engine, "urn:bin:api", "WasteContainer", JINAN)
        recent = datetime.now(UTC) - timedelta(minutes=1)
        _readings(engine, "urn:bin:api", "fillingLevel", [(recent, 0.99)])
        rules = client.get("/api/alerts/rules").json()
        assert [r["id"] for r in rules] == ["full"] and rules[0]["kind"] == "sensor_threshold"
        steward = bearer(tmp_path, org="housing", role="steward")
        assert client.post("/api/alerts/evaluate", headers=steward).status_code == 403
        operator = bearer(tmp_path, org="bureau", role="operator")
        first = client.post("/api/alerts/evaluate", headers=operator)
        assert first.status_code == 200 and len(first.json()["fired"]) == 1
        again = client.post("/api/alerts/evaluate").json()
        assert again["fired"] == [] and again["suppressed"] == 1
        fired = client.get("/api/alerts").json()
        assert len(fired) == 1 and fired[0]["rule_id"] == "full"
        assert client.get("/api/alerts?rule=other").json() == []
        assert client.get("/api/alerts?limit=0").status_code == 400
        case = client.get(f"/api/events/cases/{fired[0]['case_id']}").json()
        assert case["source"] == "alarm"
        (tmp_path / "alerts" / "rules.yaml").write_text("rules: [{id: x, kind: nope}]")
        bad = client.get("/api/alerts/rules")
        assert bad.status_code == 422 and "kind 'nope'" in bad.text


def test_postgres_suppression(tmp_path: Path, postgres_url: str) -> None:
    # the session database belongs to node 370100 (see the other PostgreSQL tests)
    settings = load_settings(
        data_dir=tmp_path, database_url=postgres_url, code="370100", level="city"
    )
    engine = prepare_node(settings)
    try:
        entity = f"urn:bin:pg:{uuid.uuid4().hex[:8]}"
        _entity(engine, entity, "WasteContainerPg", JINAN)
        rule = _rule(
            kind="sensor_threshold",
            entity_type="WasteContainerPg",
            attribute="fillingLevel",
            op=">=",
            threshold=0.95,
            event_type="overflowing_bin",
        )
        for i in range(5):
            at = NOW + timedelta(minutes=i)
            _readings(engine, entity, "fillingLevel", [(at, 0.99)])
            _evaluate(settings, engine, rule, now=at)
        assert [
            a.subject
            for a in service.list_alerts(engine=engine, rule_id="r1")
            if a.subject == entity
        ] == [entity]
    finally:
        engine.dispose()
