"""Province, three cities and one county as processes acting as one system.

Distributed query, indicator roll-up, a task round trip and an escalation; then one city is
killed with SIGKILL: the province reports it stale and its answers partial, nothing is lost,
and after a restart the city catches up (the task delivered once, the roll-up current).
Nothing sleeps for a fixed time: every wait polls with a short interval and a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from citybrain.core.config import load_settings
from citybrain.core.db import create_engine_for, upgrade
from citybrain.decisions.indicators import service as indicators
from citybrain.federation import trust
from citybrain.federation.models import Relation
from citybrain.hub.tables.importer import import_synth_tables
from citybrain.node import service as node_service
from conftest import bearer, free_port

PROVINCE, JINAN, QINGDAO, ZIBO, LIXIA = "370000", "370100", "370200", "370300", "370102"
LEVELS = {PROVINCE: "province", JINAN: "city", QINGDAO: "city", ZIBO: "city", LIXIA: "county"}
PARENT = {JINAN: PROVINCE, QINGDAO: PROVINCE, ZIBO: PROVINCE, LIXIA: JINAN}
TREE = "u4ssc"
NGSI = "/ngsi-ld/v1"


def _poll(probe: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class System:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = {code: free_port() for code in LEVELS}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, code: str) -> str:
        return f"http://127.0.0.1:{self.ports[code]}"

    def data(self, code: str) -> Path:
        return self.root / "s" / code

    def h(self, code: str, org: str = "bureau", role: str = "bureau_admin") -> dict[str, str]:
        return bearer(self.data(code), issuer=code, org=org, role=role)

    def start(self, code: str) -> None:
        cmd = [sys.executable, "-m", "citybrain", "serve", "--level", LEVELS[code]]
        cmd += ["--code", code, "--data", str(self.data(code)), "--port", str(self.ports[code])]
        if code in PARENT:
            cmd += ["--parent", self.url(PARENT[code])]
        log = (self.root / f"{code}.log").open("ab")
        env = {**os.environ, "CITYBRAIN_FEDERATION_DEADLINE_SECONDS": "2"}
        self.procs[code] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def healthy(self, code: str) -> None:
        _poll(
            lambda: httpx.get(self.url(code) + "/health", timeout=1).status_code == 200,
            f"{code} healthy",
            timeout=90,
        )

    def call(self, method: str, code: str, path: str, **kw: Any) -> httpx.Response:
        kw.setdefault("headers", self.h(code))
        return httpx.request(method, self.url(code) + path, timeout=20, **kw)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _prepare(system: System) -> None:
    """Synthesise three cities, trust every pair, compute the cities' indicators."""
    cities = ",".join((JINAN, QINGDAO, ZIBO))
    subprocess.run(
        [sys.executable, "-m", "citybrain", "synth", "--scale", "0.0002", "--seed", "4"]
        + ["--out", str(system.root / "s"), "--cities", cities, "--workers", "2"],
        check=True,
        capture_output=True,
    )
    engines = {}
    for code, level in LEVELS.items():
        system.data(code).mkdir(parents=True, exist_ok=True)
        settings = load_settings(data_dir=system.data(code), code=code, level=level)
        engine = create_engine_for(settings.effective_database_url)
        upgrade(engine)
        node_service.init_node(engine=engine, settings=settings)
        import_synth_tables(engine=engine, data_dir=system.data(code))
        engines[code] = engine
    for child, parent in PARENT.items():
        for own, peer, relation in (
            (parent, child, Relation.child),
            (child, parent, Relation.parent),
        ):
            trust.add_peer(
                engine=engines[own],
                own_code=own,
                code=peer,
                relation=relation,
                url=system.url(peer),
                public_key=trust.own_public_key(system.data(peer)),
            )
    for city in (JINAN, QINGDAO, ZIBO):
        indicators.compute(
            engine=engines[city], data_dir=system.data(city), code=city, level="city", tree=TREE
        )
    for engine in engines.values():
        engine.dispose()


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    nodes = System(tmp_path)
    _prepare(nodes)
    for code in LEVELS:
        nodes.start(code)
    try:
        for code in LEVELS:
            nodes.healthy(code)
        yield nodes
    finally:
        nodes.stop()


def _sensor(code: str) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:AirQualityObserved:{code}",
        "type": "AirQualityObserved",
        "pm25": {"type": "Property", "value": int(code[-3:]) % 97},
    }


def _query(system: System) -> httpx.Response:
    return system.call(
        "GET", PROVINCE, f"{NGSI}/entities", params={"type": "AirQualityObserved", "limit": 50}
    )


def _rollup(system: System) -> dict[str, Any]:
    response = system.call(
        "POST", PROVINCE, "/api/indicators/rollup", json={"tree": TREE, "deadline": 3}
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.xdist_group("many_nodes")  # not beside the demo: see tests/demo
def test_one_system_survives_a_killed_city(system: System) -> None:
    _poll(
        lambda: len(httpx.get(system.url(PROVINCE) + "/api/nodes", timeout=2).json()) == 3,
        "three cities registered",
    )
    for code in (JINAN, QINGDAO, ZIBO, LIXIA):
        sensors = system.h(code, org="city_management", role="service")
        made = system.call("POST", code, f"{NGSI}/entities", json=_sensor(code), headers=sensors)
        assert made.status_code == 201, made.text
    # distributed query: every city's sensor, and the county's through its city
    want = {f"urn:ngsi-ld:AirQualityObserved:{c}" for c in (JINAN, QINGDAO, ZIBO, LIXIA)}
    found = _poll(
        lambda: {e["id"] for e in _query(system).json()} >= want and _query(system), "fan-out"
    )
    assert "NGSILD-Partial" not in found.headers
    # roll-up: aggregates of the three cities
    first = _rollup(system)
    assert first["answered"] == [JINAN, QINGDAO, ZIBO] and first["stored"] > 0
    # a task round trip down to Qingdao, and an escalation from Lixia up to Jinan
    task = {"to": QINGDAO, "kind": "inspection", "title": "check the reservoir", "body": {}}
    sent = system.call("POST", PROVINCE, "/api/federation/tasks", json=task).json()["id"]
    _poll(
        lambda: system.call("GET", QINGDAO, f"/api/federation/tasks/{sent}").status_code == 200,
        "task at Qingdao",
    )
    update = {"status": "accepted", "note": "on it"}
    assert (
        system.call(
            "POST", QINGDAO, f"/api/federation/tasks/{sent}/status", json=update
        ).status_code
        == 200
    )
    _poll(
        lambda: (
            system.call("GET", PROVINCE, f"/api/federation/tasks/{sent}").json()["status"]
            == "accepted"
        ),
        "status back at the province",
    )
    escalation = {"event_id": "case:lixia-1", "reason": "beyond the district's authority"}
    assert system.call(
        "POST", LIXIA, "/api/federation/escalations", json=escalation
    ).status_code in (200, 201)
    _poll(
        lambda: any(
            e["event_id"] == "case:lixia-1"
            for e in system.call(
                "GET", JINAN, "/api/federation/escalations", params={"direction": "received"}
            ).json()
        ),
        "escalation at Jinan",
    )

    # Zibo dies: stale, partial, nothing lost
    system.procs[ZIBO].send_signal(signal.SIGKILL)
    system.procs[ZIBO].wait(timeout=10)
    partial = _query(system)
    assert partial.status_code == 200 and partial.headers.get("NGSILD-Partial") == "true"
    assert ZIBO in partial.headers.get("X-CityBrain-Missing", "")
    assert {e["id"] for e in partial.json()} == want - {f"urn:ngsi-ld:AirQualityObserved:{ZIBO}"}
    assert list(_rollup(system)["missing"]) == [ZIBO]
    down = {**task, "to": ZIBO, "title": "inspect the chemical park"}
    late = system.call("POST", PROVINCE, "/api/federation/tasks", json=down).json()["id"]
    _poll(
        lambda: (
            system.call("GET", PROVINCE, f"/api/federation/tasks/{late}").json()["delivery"][
                "attempts"
            ]
            >= 1
        ),
        "a failed delivery to Zibo",
    )
    peers = {p["code"]: p for p in system.call("GET", PROVINCE, "/api/federation/peers").json()}
    assert peers[ZIBO]["state"] == "stale" and peers[ZIBO]["pending"] >= 1

    # Zibo returns and catches up: the task once, the roll-up and the query complete again
    system.start(ZIBO)
    system.healthy(ZIBO)
    _poll(
        lambda: system.call("GET", ZIBO, f"/api/federation/tasks/{late}").status_code == 200,
        "the task at Zibo after the restart",
    )
    received = system.call(
        "GET", ZIBO, "/api/federation/tasks", params={"direction": "received"}
    ).json()
    assert [t["id"] for t in received].count(late) == 1
    assert _poll(lambda: _rollup(system)["answered"] == [JINAN, QINGDAO, ZIBO], "roll-up")
    whole = _poll(lambda: "NGSILD-Partial" not in (r := _query(system)).headers and r, "query")
    assert {e["id"] for e in whole.json()} >= want
