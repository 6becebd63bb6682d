"""A province and two cities as real `citybrain serve` processes: a city killed and restarted.

Nothing is slept for a fixed time: every wait polls with a short interval and a deadline.
"""

from __future__ import annotations

import json
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
from citybrain.federation import trust
from citybrain.federation.models import Relation
from conftest import bearer, free_port

PROVINCE, JINAN, QINGDAO = "370000", "370100", "370200"


def _poll(probe: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
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


def _trust(data: Path, own: str, peer_dir: Path, peer: str, relation: Relation, url: str) -> None:
    data.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(load_settings(data_dir=data).effective_database_url)
    upgrade(engine)
    trust.add_peer(
        engine=engine,
        own_code=own,
        code=peer,
        relation=relation,
        url=url,
        public_key=trust.own_public_key(peer_dir),
    )
    engine.dispose()


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = {PROVINCE: free_port(), JINAN: free_port(), QINGDAO: free_port()}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, code: str) -> str:
        return f"http://127.0.0.1:{self.ports[code]}"

    def data(self, code: str) -> Path:
        return self.root / code

    def start(self, code: str) -> None:
        level = "province" if code == PROVINCE else "city"
        cmd = [sys.executable, "-m", "citybrain", "serve", "--level", level, "--code", code]
        cmd += ["--data", str(self.data(code)), "--port", str(self.ports[code])]
        if code != PROVINCE:
            cmd += ["--parent", self.url(PROVINCE)]
        log = (self.root / f"{code}.log").open("ab")
        self.procs[code] = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CITYBRAIN_LOG_FORMAT": "json"},
        )
        log.close()

    def healthy(self, code: str) -> None:
        _poll(
            lambda: httpx.get(self.url(code) + "/health", timeout=1).status_code == 200,
            f"{code} healthy",
        )

    def h(self, code: str) -> dict[str, str]:
        return bearer(self.data(code), issuer=code)

    def get(self, code: str, path: str, **params: str) -> Any:
        response = httpx.get(self.url(code) + path, params=params, headers=self.h(code), timeout=5)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, code: str, path: str, body: dict[str, Any]) -> Any:
        response = httpx.post(self.url(code) + path, json=body, headers=self.h(code), timeout=5)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path)
    for city in (JINAN, QINGDAO):
        _trust(
            nodes.data(PROVINCE), PROVINCE, nodes.data(city), city, Relation.child, nodes.url(city)
        )
        _trust(
            nodes.data(city),
            city,
            nodes.data(PROVINCE),
            PROVINCE,
            Relation.parent,
            nodes.url(PROVINCE),
        )
    for code in (PROVINCE, JINAN, QINGDAO):
        nodes.start(code)
    try:
        for code in (PROVINCE, JINAN, QINGDAO):
            nodes.healthy(code)
        yield nodes
    finally:
        nodes.stop()


def _nodes_status(cluster: Cluster) -> dict[str, dict[str, Any]]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "citybrain",
            "nodes",
            "status",
            "--data",
            str(cluster.data(PROVINCE)),
        ]
        + ["--format", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return {p["code"]: p for p in json.loads(out)["peers"]}


def _received(cluster: Cluster, code: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get(code, "/api/federation/tasks", direction="received")
    return items


@pytest.mark.xdist_group("many_nodes")  # not beside the demo: see tests/demo
def test_a_killed_city_catches_up_exactly_once(cluster: Cluster) -> None:
    _poll(
        lambda: len(httpx.get(cluster.url(PROVINCE) + "/api/nodes", timeout=1).json()) == 2,
        "both cities registered",
    )
    task = {"to": JINAN, "kind": "supervision_case", "title": "first", "body": {"n": 1}}
    first = cluster.post(PROVINCE, "/api/federation/tasks", task)["id"]
    _poll(lambda: [t["id"] for t in _received(cluster, JINAN)] == [first], "first task at Jinan")

    cluster.procs[JINAN].send_signal(signal.SIGKILL)
    cluster.procs[JINAN].wait(timeout=10)
    second = cluster.post(PROVINCE, "/api/federation/tasks", {**task, "title": "second"})["id"]
    pending = _poll(
        lambda: (
            t
            if (t := cluster.get(PROVINCE, f"/api/federation/tasks/{second}"))["delivery"][
                "attempts"
            ]
            >= 1
            else None
        ),
        "a failed attempt",
    )
    assert pending["status"] == "pending" and pending["delivery"]["state"] == "pending"
    status = _nodes_status(cluster)
    assert status[JINAN]["state"] == "stale" and status[JINAN]["pending"] == 1
    assert status[QINGDAO]["state"] == "ok" and status[QINGDAO]["pending"] == 0
    assert status[JINAN]["version"] and status[JINAN]["last_error"]

    cluster.start(JINAN)
    cluster.healthy(JINAN)
    _poll(lambda: len(_received(cluster, JINAN)) == 2, "second task at Jinan after restart")
    assert sorted(t["title"] for t in _received(cluster, JINAN)) == ["first", "second"]
    assert cluster.get(PROVINCE, f"/api/federation/tasks/{second}")["status"] == "received"

    cluster.post(
        JINAN, f"/api/federation/tasks/{second}/status", {"status": "accepted", "note": "ok"}
    )
    _poll(
        lambda: cluster.get(PROVINCE, f"/api/federation/tasks/{second}")["status"] == "accepted",
        "status back at the province",
    )
    # an escalation goes up the same way, and nothing was doubled on the way
    cluster.post(QINGDAO, "/api/federation/escalations", {"event_id": "e-9", "reason": "overdue"})
    _poll(
        lambda: len(cluster.get(PROVINCE, "/api/federation/escalations")) == 1,
        "escalation at the province",
    )
    assert len(_received(cluster, JINAN)) == 2
    assert _nodes_status(cluster)[JINAN]["state"] == "ok"
