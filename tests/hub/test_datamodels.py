"""Smart Data Models: synthetic entities follow their models, validated offline; bad input."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from citybrain.core.errors import BadInput, NotFound
from citybrain.hub.ngsild import datamodels
from citybrain.synth import service as synth
from citybrain.synth.devices import load_devices, messages
from citybrain.synth.entities import node_entities

KINDS = {
    "AirQualityObserved",
    "NoiseLevelObserved",
    "TrafficFlowObserved",
    "WeatherObserved",
    "ParkingSpot",
    "Streetlight",
    "WasteContainer",
    "Device",
    "Building",
}


@pytest.fixture(scope="module")
def node_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "out"
    synth.generate(scale=0.0005, seed=3, out=out, cities=["370500"], workers=1)
    return out / "370500"


def test_synthetic_entities_follow_their_models(node_data: Path) -> None:
    entities = list(node_entities(node_data))
    assert {e["type"] for e in entities} == KINDS
    problems = Counter(
        (e["type"], i.severity, i.message) for e in entities for i in datamodels.validate(e)
    )
    assert not problems, problems.most_common(5)
    # deterministic: the same data give the same entities
    assert list(node_entities(node_data)) == entities


def test_simulator_readings_are_model_attributes(node_data: Path) -> None:
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 11, 1, tzinfo=UTC)
    for topic, payload in messages(
        load_devices(node_data), start=start, step=timedelta(minutes=5), ticks=2, seed=1
    ):
        kind = topic.split("/")[3]
        model = datamodels.get_model(kind)
        unknown = [
            k for k in json.loads(payload) if k != "observedAt" and k not in model.attributes
        ]
        assert not unknown, (kind, unknown)


def test_validation_finds_what_is_wrong() -> None:
    good = {
        "id": "urn:ngsi-ld:ParkingSpot:1",
        "type": "ParkingSpot",
        "location": {"type": "Point", "coordinates": [117.0, 36.6]},
        "status": "free",
        "category": ["onStreet"],
        "refParkingSite": "urn:ngsi-ld:ParkingSite:1",
    }
    assert datamodels.validate(good) == []  # keyValues form
    normalized = {
        "id": "urn:ngsi-ld:ParkingSpot:1",
        "type": "ParkingSpot",
        "location": {"type": "GeoProperty", "value": good["location"]},
        "status": {"type": "Property", "value": "free"},
        "category": {"type": "Property", "value": ["onStreet"]},
        "refParkingSite": {"type": "Relationship", "object": "urn:ngsi-ld:ParkingSite:1"},
    }
    assert datamodels.validate(normalized) == []
    bad = {**good, "status": "parked", "category": "onStreet", "colour": "red"}
    del bad["refParkingSite"]
    found = {(i.attribute, i.severity) for i in datamodels.validate(bad)}
    assert found == {
        ("status", "error"),
        ("category", "error"),
        ("colour", "warning"),
        ("refParkingSite", "error"),
    }
    air = {"id": "urn:x", "type": "AirQualityObserved", "pm25": "high", "location": [1, 2]}
    messages_ = {i.message for i in datamodels.validate(air)}
    assert "pm25 must be of type number" in messages_
    assert "location must be a GeoJSON geometry" in messages_
    assert "AirQualityObserved requires dateObserved" in messages_
    with pytest.raises(NotFound, match="no Smart Data Model named 'AirQualitee'"):
        datamodels.validate({"id": "urn:x", "type": "AirQualitee"})
    with pytest.raises(BadInput, match="JSON object"):
        datamodels.validate(["not", "an", "entity"])
    with pytest.raises(BadInput, match="no type"):
        datamodels.validate({"id": "urn:x"})


def test_offline_and_cli(node_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the metadata must load with no network at all
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    datamodels._models.cache_clear()
    assert "WasteContainer" in datamodels.model_names()
    monkeypatch.undo()
    entity = tmp_path / "e.json"
    entity.write_text(json.dumps([{"id": "urn:x", "type": "Streetlight", "powerState": "dim"}]))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "citybrain", "datamodels", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    checked = run("validate", str(entity))
    assert checked.returncode == 1 and "powerState must be one of" in checked.stdout
    garbage = tmp_path / "g.json"
    garbage.write_text("{nope")
    assert run("validate", str(garbage)).returncode == 2
    seeded = run("seed", "--data", str(tmp_path / "node"), "--synth", str(node_data))
    assert seeded.returncode == 0, seeded.stderr
    assert "entities upserted" in seeded.stdout
    described = run("list", "--model", "WasteContainer")
    assert described.returncode == 0 and "fillingLevel" in described.stdout
