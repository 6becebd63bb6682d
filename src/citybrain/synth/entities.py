"""NGSI-LD entities for a node's synthetic data, shaped by the Smart Data Models.

Each IoT device becomes a `Device` and one observed entity of its type (AirQualityObserved,
NoiseLevelObserved, TrafficFlowObserved, WeatherObserved, ParkingSpot, Streetlight,
WasteContainer) with the attributes its model requires and a first reading from the device
simulator; the observed entity's id is the one the MQTT telemetry connector writes to, so
later readings land on it. Registered properties become `Building` entities.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from citybrain.core.errors import BadInput
from citybrain.synth.devices import reading

# what each kind of device measures, in the Device model's controlledProperty vocabulary
CONTROLLED = {
    "AirQualityObserved": ["airPollution"],
    "NoiseLevelObserved": ["noiseLevel"],
    "TrafficFlowObserved": ["trafficFlow"],
    "WeatherObserved": ["temperature", "humidity"],
    "ParkingSpot": ["occupancy"],
    "Streetlight": ["light"],
    "WasteContainer": ["fillingLevel"],
}
USAGE = {"住宅": ["residential"], "商住": ["residential", "commercial"]}


def _point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}


def _prop(value: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, **extra}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def observed_id(device_id: str, kind: str) -> str:
    """Return the id of a device's observed entity (the MQTT connector's default template)."""
    return f"urn:ngsi-ld:{kind}:{device_id.rsplit(':', 1)[-1]}"


def device_entities(device: dict[str, Any], at: datetime, seed: int) -> list[dict[str, Any]]:
    """Return the Device and its observed entity, in normalized form with short names."""
    kind = str(device["type"])
    if kind not in CONTROLLED:
        raise BadInput(f"no Smart Data Model mapping for device type {kind!r}")
    device_id = str(device["device_id"])
    where = _point(float(device["lon"]), float(device["lat"]))
    stamp = _iso(at)
    dev = {
        "id": device_id,
        "type": "Device",
        "controlledProperty": _prop(CONTROLLED[kind]),
        "category": _prop(["sensor"]),
        "deviceState": _prop("ok"),
        "location": where,
        "dateInstalled": _prop(str(device["commissioned_on"]) + "T00:00:00Z"),
    }
    # a stable generator per device: the same data give the same entities
    rng = np.random.default_rng([seed, zlib.crc32(device_id.encode())])
    values = reading(kind, at, rng, {})
    obs: dict[str, Any] = {
        "id": observed_id(device_id, kind),
        "type": kind,
        "location": where,
    }
    if kind != "TrafficFlowObserved":  # the only one of these models without refDevice
        obs["refDevice"] = {"type": "Relationship", "object": device_id}
    for name, value in values.items():
        if isinstance(value, dict):
            obs[name] = _prop(value["value"], unitCode=value["unitCode"], observedAt=stamp)
        else:
            obs[name] = _prop(value, observedAt=stamp)
    if kind == "NoiseLevelObserved":
        obs["dateObservedFrom"] = _prop(_iso(at - timedelta(minutes=10)))
        obs["dateObservedTo"] = _prop(stamp)
    elif kind in ("AirQualityObserved", "TrafficFlowObserved", "WeatherObserved"):
        obs["dateObserved"] = _prop(stamp)
    elif kind == "ParkingSpot":
        obs["category"] = _prop(["onStreet"])
        obs["refParkingSite"] = {
            "type": "Relationship",
            "object": f"urn:ngsi-ld:ParkingSite:{device['community_code']}",
        }
    elif kind == "Streetlight":
        obs["status"] = _prop("ok")
    return [dev, obs]


def node_entities(
    data_dir: Path, *, at: datetime | None = None, seed: int = 1
) -> Iterator[dict[str, Any]]:
    """Yield the Smart-Data-Model entities of a node's synthetic devices and properties."""
    devices_file = data_dir / "city_management" / "iot_devices.parquet"
    if not devices_file.is_file():
        raise BadInput(f"no synthetic devices at {devices_file}; run citybrain synth first")
    moment = at or datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    for device in pq.read_table(devices_file).to_pylist():
        yield from device_entities(device, moment, seed)
    yield from _buildings(data_dir)


def _buildings(data_dir: Path) -> Iterator[dict[str, Any]]:
    registry = data_dir / "natural_resources" / "property_registry.parquet"
    addresses = data_dir / "public_security" / "addresses.parquet"
    if not registry.is_file() or not addresses.is_file():
        return
    where = {
        a["address_id"]: a
        for a in pq.read_table(
            addresses, columns=["address_id", "county_code", "address", "lon", "lat"]
        ).to_pylist()
    }
    for p in pq.read_table(
        registry, columns=["property_id", "address_id", "area_m2", "usage"]
    ).to_pylist():
        place = where.get(p["address_id"])
        if place is None:
            continue
        yield {
            "id": f"urn:ngsi-ld:Building:{p['property_id']}",
            "type": "Building",
            "category": _prop(USAGE.get(str(p["usage"]), ["residential"])),
            "address": _prop(
                {
                    "addressCountry": "CN",
                    "addressRegion": "山东省",
                    "streetAddress": place["address"],
                    "postalCode": "",
                }
            ),
            "location": _point(float(place["lon"]), float(place["lat"])),
            "description": _prop(f"{p['usage']} {float(p['area_m2']):.1f} m2"),
        }
