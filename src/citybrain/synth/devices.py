"""A device simulator: realistic readings for the synthetic sensors, published over MQTT."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from citybrain.core.errors import BadInput

TOPIC = "citybrain/{city}/devices/{type}/{device}"


def load_devices(data_dir: Path) -> list[dict[str, Any]]:
    """Read a node's synthetic IoT devices (city_management/iot_devices.parquet)."""
    path = data_dir / "city_management" / "iot_devices.parquet"
    if not path.is_file():
        raise BadInput(f"no synthetic devices at {path}; run citybrain synth first")
    rows: list[dict[str, Any]] = pq.read_table(
        path, columns=["device_id", "type", "community_code"]
    ).to_pylist()
    return rows


def reading(
    kind: str, at: datetime, rng: np.random.Generator, state: dict[str, float]
) -> dict[str, Any]:
    """One plausible reading of a device type at a time of day (diurnal shapes, noise)."""
    hour = at.hour + at.minute / 60
    day = 0.5 + 0.5 * math.sin((hour - 8) / 24 * 2 * math.pi)  # low at night, high mid-day
    rush = math.exp(-((hour - 8) ** 2) / 2) + math.exp(-((hour - 18) ** 2) / 2)
    if kind == "AirQualityObserved":
        pm25 = float(rng.lognormal(math.log(35 + 20 * rush), 0.35))
        return {
            "pm25": {"value": round(pm25, 1), "unitCode": "GQ"},
            "pm10": {"value": round(pm25 * rng.uniform(1.4, 1.9), 1), "unitCode": "GQ"},
            "no2": {"value": round(float(rng.normal(30 + 25 * rush, 6)), 1), "unitCode": "GQ"},
        }
    if kind == "NoiseLevelObserved":
        return {
            "LAeq": {
                "value": round(float(rng.normal(45 + 20 * day + 5 * rush, 3)), 1),
                "unitCode": "2N",
            }
        }
    if kind == "TrafficFlowObserved":
        return {"intensity": int(max(0, rng.normal(200 + 900 * rush + 300 * day, 60)))}
    if kind == "WeatherObserved":
        return {
            "temperature": {
                "value": round(float(rng.normal(8 + 8 * day, 1)), 1),
                "unitCode": "CEL",
            },
            "relativeHumidity": round(float(np.clip(rng.normal(0.7 - 0.25 * day, 0.05), 0, 1)), 2),
        }
    if kind == "ParkingSpot":
        busy = 0.3 + 0.6 * day
        return {"status": "occupied" if rng.random() < busy else "free"}
    if kind == "Streetlight":
        return {"powerState": "on" if hour < 6.5 or hour > 17.5 else "off"}
    if kind == "WasteContainer":
        level = state.get("fill", float(rng.uniform(0, 0.5))) + float(rng.uniform(0.0, 0.03))
        if level > 0.95:
            level = 0.05  # emptied by the collection round
        state["fill"] = level
        return {"fillingLevel": round(level, 2)}
    return {"value": round(float(rng.normal(0, 1)), 3)}


def messages(
    devices: list[dict[str, Any]], *, start: datetime, step: timedelta, ticks: int, seed: int
) -> Iterator[tuple[str, bytes]]:
    """Yield (topic, payload) for every device at every tick, deterministically."""
    rng = np.random.default_rng(seed)
    states: dict[str, dict[str, float]] = {}
    for tick in range(ticks):
        at = start + step * tick
        stamp = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        for device in devices:
            key = str(device["device_id"]).rsplit(":", 1)[-1]
            topic = TOPIC.format(
                city=str(device["community_code"])[:4] + "00", type=device["type"], device=key
            )
            body = {
                "observedAt": stamp,
                **reading(str(device["type"]), at, rng, states.setdefault(key, {})),
            }
            yield topic, json.dumps(body).encode()


def publish(
    *,
    data_dir: Path,
    host: str,
    port: int,
    ticks: int,
    step_seconds: float,
    seed: int,
    start: datetime | None = None,
    realtime: bool = False,
) -> int:
    """Publish the readings of a node's devices to a broker; return how many were sent."""
    import time

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    if ticks < 1 or step_seconds <= 0:
        raise BadInput("--ticks must be at least 1 and --step positive")
    devices = load_devices(data_dir)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise BadInput(f"cannot reach the MQTT broker at {host}:{port}: {exc}") from None
    client.loop_start()
    sent = 0
    begin = start or datetime(2026, 11, 1, tzinfo=UTC)
    try:
        for topic, payload in messages(
            devices, start=begin, step=timedelta(seconds=step_seconds), ticks=ticks, seed=seed
        ):
            client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
            sent += 1
            if realtime and sent % max(1, len(devices)) == 0:
                time.sleep(step_seconds)
    finally:
        client.loop_stop()
        client.disconnect()
    return sent
