"""MQTT telemetry: simulated devices publish, the connector ingests once, bad payloads logged."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.core.db import create_engine_for, upgrade
from citybrain.hub.connectors.mqtt_telemetry import Counters, Mapping, TelemetryConnector, ingest
from citybrain.hub.ngsild.jsonld import ContextStore
from citybrain.synth import service as synth
from citybrain.synth.devices import load_devices, messages

B = "/ngsi-ld/v1"


@pytest.fixture(scope="module")
def node_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "out"
    synth.generate(scale=0.0005, seed=3, out=out, cities=["370500"], workers=1)
    return out / "370500"


def test_simulator_is_deterministic_and_plausible(node_data: Path) -> None:
    devices = load_devices(node_data)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    first = list(messages(devices, start=start, step=timedelta(minutes=10), ticks=3, seed=4))
    again = list(messages(devices, start=start, step=timedelta(minutes=10), ticks=3, seed=4))
    assert first == again and len(first) == 3 * len(devices)
    kinds = {topic.split("/")[3] for topic, _ in first}
    assert {"AirQualityObserved", "NoiseLevelObserved", "WasteContainer"} <= kinds
    for topic, payload in first:
        body = json.loads(payload)
        if topic.split("/")[3] == "AirQualityObserved":
            assert 0 < body["pm25"]["value"] < 1000


def test_ingest_is_idempotent_and_rejects_with_reasons(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade(engine)
    terms = ContextStore().term_map(None)
    mapping = Mapping()
    counters = Counters()
    topic = "citybrain/370100/devices/NoiseLevelObserved/370102-00001"
    payload = json.dumps({"observedAt": "2026-11-01T10:00:00Z", "LAeq": 55.5}).encode()
    args = {"engine": engine, "terms": terms, "mapping": mapping, "counters": counters}
    assert ingest(topic=topic, payload=payload, **args) == "applied"  # type: ignore[arg-type]
    assert ingest(topic=topic, payload=payload, **args) == "duplicate"  # type: ignore[arg-type]
    for bad_topic, bad in [
        (topic, b"not json"),
        (topic, b"[1, 2]"),
        (topic, json.dumps({"LAeq": 1}).encode()),
        (topic, json.dumps({"observedAt": "soon", "LAeq": 1}).encode()),
        (topic, json.dumps({"observedAt": "2026-11-01T11:00:00Z"}).encode()),
        (topic, json.dumps({"observedAt": "2026-11-01T11:00:00Z", "LAeq": [1, 2]}).encode()),
        ("other/topic", payload),
    ]:
        assert ingest(topic=bad_topic, payload=bad, **args) == "rejected"  # type: ignore[arg-type]
    assert counters.applied == 1 and counters.duplicates == 1 and counters.rejected == 7
    assert len(counters.reasons) == 7 and all(counters.reasons)


def test_simulator_to_connector_through_mosquitto(
    tmp_path: Path, node_data: Path, mqtt_broker: tuple[str, int]
) -> None:
    host, port = mqtt_broker
    prefix = f"cbtest{uuid.uuid4().hex[:8]}"
    settings = load_settings(data_dir=tmp_path, anonymous_role="bureau_admin")
    engine = create_engine_for(settings.effective_database_url)
    upgrade(engine)
    mapping = Mapping(f"{prefix}/{{city}}/devices/{{type}}/{{device}}")
    connector = TelemetryConnector(
        engine=engine, broker=f"mqtt://{host}:{port}", mapping=mapping, client_id=f"{prefix}-ingest"
    )
    connector.start()
    assert connector.connected.wait(10)
    devices = load_devices(node_data)
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    publisher = mqtt.Client(CallbackAPIVersion.VERSION2)
    publisher.connect(host, port)
    publisher.loop_start()
    sent = 0
    for topic, payload in messages(
        devices, start=datetime(2026, 11, 1, tzinfo=UTC), step=timedelta(minutes=5), ticks=3, seed=1
    ):
        publisher.publish(
            topic.replace("citybrain/", f"{prefix}/", 1), payload, qos=1
        ).wait_for_publish(5)
        sent += 1
    publisher.publish(
        f"{prefix}/370500/devices/AirQualityObserved/x", b"garbage", qos=1
    ).wait_for_publish(5)
    publisher.loop_stop()
    publisher.disconnect()
    deadline = time.monotonic() + 30
    while (
        time.monotonic() < deadline
        and connector.counters.applied + connector.counters.rejected < sent + 1
    ):
        time.sleep(0.1)
    connector.stop()
    assert connector.counters.applied == sent and connector.counters.rejected == 1
    with TestClient(create_app(settings)) as client:
        noise = client.get(
            f"{B}/entities", params={"type": "NoiseLevelObserved", "limit": 1000}
        ).json()
        assert len(noise) == sum(1 for d in devices if d["type"] == "NoiseLevelObserved")
        history = client.get(
            f"{B}/temporal/entities/{noise[0]['id']}", params={"options": "temporalValues"}
        ).json()
        assert len(history["LAeq"]["values"]) == 3


def test_cli_bad_broker(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "citybrain",
            "connectors",
            "mqtt",
            "--data",
            str(tmp_path),
            "--broker",
            "http://nowhere",
            "--seconds",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        proc.returncode == 2
        and "mqtt://host:port" in proc.stderr
        and "Traceback" not in proc.stderr
    )
    proc = subprocess.run(
        [sys.executable, "-m", "citybrain", "synth-devices", "--data", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "no synthetic devices" in proc.stderr
