"""The demo's city life against a province and one city running as processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from citybrain.demo import service
from citybrain.demo.life import LifeStats, run_life
from citybrain.demo.service import NodeSpec
from citybrain.governance.identity.tokens import issue_token

CITY = "370100"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeSpec]]:
    root = tmp_path_factory.mktemp("life")
    synth = root / "synth"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "citybrain",
            "synth",
            "--scale",
            "0.0002",
            "--seed",
            "2",
            "--cities",
            CITY,
            "--out",
            str(synth),
        ],
        check=True,
        capture_output=True,
    )
    province = NodeSpec("370000", "province", _free_port(), synth / "370000", None)
    city = NodeSpec(CITY, "city", _free_port(), synth / CITY, province.url)
    specs = [province, city]
    service.exchange_keys(specs)
    procs = service.start_nodes(specs=specs, log_dir=root / "logs")
    try:
        service.wait_healthy(specs=specs, procs=procs, timeout=60)
        yield specs
    finally:
        service.stop_nodes(procs)


def _cases(city: NodeSpec) -> list[dict[str, object]]:
    token = issue_token(
        data_dir=city.data_dir, issuer=city.code, subject="t", org="bureau", role="operator"
    )
    response = httpx.get(
        f"{city.url}/api/events/cases?limit=1000",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    cases: list[dict[str, object]] = response.json()
    return cases


def test_life_makes_hotline_and_alarm_cases_and_moves_them(nodes: list[NodeSpec]) -> None:
    stop = threading.Event()
    stats = LifeStats()
    thread = threading.Thread(
        target=run_life, args=(nodes, stop, 4.0), kwargs={"seed": 3, "stats": stats}
    )
    thread.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not (stats.alarms and stats.by_transition.get("handle")):
        time.sleep(0.3)
    stop.set()
    thread.join(timeout=15)
    assert not thread.is_alive()
    # alarms arrive through the hub subscription's notification, a moment after the update
    deadline = time.monotonic() + 15
    cases = _cases(nodes[1])
    while time.monotonic() < deadline and not any(c["source"] == "iot" for c in cases):
        time.sleep(0.5)
        cases = _cases(nodes[1])
    sources = {str(c["source"]) for c in cases}
    assert "hotline" in sources and stats.hotline > 0
    alarms = [c for c in cases if c["source"] == "iot"]
    assert alarms and all(c["event_type"] == "overflowing_bin" for c in alarms)
    past_dispatch = {"handling", "handled", "resolved", "closed", "rated", "evaluated"}
    assert any(c["state"] in past_dispatch for c in cases), stats
    assert stats.device_updates > 0


def test_life_stops_at_once_and_rejects_a_bad_rate(nodes: list[NodeSpec]) -> None:
    stop = threading.Event()
    stop.set()
    assert run_life(nodes, stop, 1.0).hotline == 0
    with pytest.raises(ValueError):
        run_life(nodes, stop, 0)


def test_life_survives_a_node_that_is_down(tmp_path: Path) -> None:
    dead = NodeSpec(CITY, "city", _free_port(), tmp_path, None)
    stop = threading.Event()
    timer = threading.Timer(1.0, stop.set)
    timer.start()
    stats = run_life([dead], stop, 5.0, seed=1)
    assert stats.errors > 0 and stats.hotline == 0
