"""Device alarms reach the event centre through hub subscriptions; receiverInfo headers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.events import alarms
from conftest import bearer, free_port

CITY = "370100"
LIXIA = [117.05, 36.67]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[str]:
    """A city node served on a free port, subscribed to its own device alarms."""
    port = free_port()
    settings = load_settings(
        data_dir=tmp_path,
        code=CITY,
        level="city",
        port=port,
        alarm_subscriptions=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _bin(level: float) -> dict[str, Any]:
    return {
        "id": "urn:ngsi-ld:WasteContainer:test-1",
        "type": "WasteContainer",
        "fillingLevel": {"type": "Property", "value": level},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": LIXIA}},
    }


def test_a_full_bin_becomes_a_case_through_the_subscription(node: str, tmp_path: Path) -> None:
    sensors = bearer(tmp_path, org="city_management", role="service", issuer=CITY)
    ops = bearer(tmp_path, org="bureau", role="operator", issuer=CITY)
    listed = httpx.get(f"{node}/ngsi-ld/v1/subscriptions", headers=ops).json()
    assert {s["id"] for s in listed} >= {alarms.PREFIX + n for n in alarms.ALARMS}
    created = httpx.post(f"{node}/ngsi-ld/v1/entities", json=_bin(0.4), headers=sensors)
    assert created.status_code == 201, created.text
    patch = {"fillingLevel": {"type": "Property", "value": 0.95}}
    url = f"{node}/ngsi-ld/v1/entities/{_bin(0)['id']}/attrs"
    assert httpx.patch(url, json=patch, headers=sensors).status_code == 204
    deadline = time.monotonic() + 15
    cases: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        cases = httpx.get(f"{node}/api/events/cases", headers=ops).json()
        if cases:
            break
        time.sleep(0.3)
    assert len(cases) == 1, cases
    case = cases[0]
    assert case["source"] == "iot" and case["event_type"] == "overflowing_bin"
    assert case["reporter"] == f"device:{_bin(0)['id']}"
    # a level below the alarm sends nothing; a second alarm while the case is open is a duplicate
    httpx.patch(url, json={"fillingLevel": {"type": "Property", "value": 0.5}}, headers=sensors)
    httpx.patch(url, json={"fillingLevel": {"type": "Property", "value": 0.97}}, headers=sensors)
    time.sleep(2)
    assert len(httpx.get(f"{node}/api/events/cases", headers=ops).json()) == 1


class _Receiver(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        _Receiver.seen.append({"headers": dict(self.headers), "body": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_receiver_info_headers_go_with_each_notification(node: str, tmp_path: Path) -> None:
    receiver = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    admin = bearer(tmp_path, org="bureau", role="bureau_admin", issuer=CITY)
    endpoint = {
        "uri": f"http://127.0.0.1:{receiver.server_port}/notify",
        "accept": "application/json",
        "receiverInfo": [{"key": "X-Auth-Token", "value": "s3cret"}],
    }
    sub = {
        "type": "Subscription",
        "entities": [{"type": "WasteContainer"}],
        "notification": {"endpoint": endpoint},
    }
    made = httpx.post(f"{node}/ngsi-ld/v1/subscriptions", json=sub, headers=admin)
    assert made.status_code == 201, made.text
    read = httpx.get(f"{node}{made.headers['location']}", headers=admin).json()
    assert read["notification"]["endpoint"]["receiverInfo"] == endpoint["receiverInfo"]
    httpx.post(f"{node}/ngsi-ld/v1/entities", json=_bin(0.2), headers=admin)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not _Receiver.seen:
        time.sleep(0.2)
    receiver.shutdown()
    assert _Receiver.seen and _Receiver.seen[0]["headers"].get("X-Auth-Token") == "s3cret"
    # no token of this node goes to a receiver elsewhere
    assert "Authorization" not in _Receiver.seen[0]["headers"]
    bad = {**sub, "notification": {"endpoint": {**endpoint, "receiverInfo": [{"key": "a b"}]}}}
    refused = httpx.post(f"{node}/ngsi-ld/v1/subscriptions", json=bad, headers=admin)
    assert refused.status_code == 400 and "receiverInfo" in refused.text
