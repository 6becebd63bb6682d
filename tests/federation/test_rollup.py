"""Indicator roll-up across processes: two cities compute, the province pulls and rolls up.

Only aggregates move up: after the roll-up the province's store and audit log hold none of
the cities' residents' ID numbers or names. A city that is down is named as missing, and the
values it sent before stay.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine

from citybrain.core.config import load_settings
from citybrain.core.db import create_engine_for, upgrade
from citybrain.decisions.indicators import service as indicators
from citybrain.federation import trust
from citybrain.federation.models import Relation
from citybrain.hub.tables.importer import import_synth_tables
from citybrain.node import service as node_service
from conftest import free_port

PROVINCE, JINAN, QINGDAO = "370000", "370100", "370200"
TREE = "u4ssc"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "citybrain", *args], capture_output=True, text=True, check=False
    )


def _ok(*args: str) -> str:
    done = _cli(*args)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def _serve(
    code: str, level: str, data: Path, port: int, parent: str | None
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "citybrain", "serve", "--level", level, "--code", code]
    cmd += ["--data", str(data), "--port", str(port)]
    if parent:
        cmd += ["--parent", parent]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"node {code} did not start")


def _prepare(code: str, level: str, data: Path) -> Engine:
    """Migrate a node's store and import its synthetic tables, as `serve` does."""
    settings = load_settings(data_dir=data, code=code, level=level)
    engine = create_engine_for(settings.effective_database_url)
    upgrade(engine)
    node_service.init_node(engine=engine, settings=settings)
    import_synth_tables(engine=engine, data_dir=data)
    return engine


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[str, object]]:
    cities = f"{JINAN},{QINGDAO}"
    out = str(tmp_path / "s")
    _ok("synth", "--scale", "0.0003", "--seed", "3", "--out", out, "--cities", cities)
    dirs = {c: tmp_path / "s" / c for c in (PROVINCE, JINAN, QINGDAO)}
    ports = {c: free_port() for c in dirs}
    urls = {c: f"http://127.0.0.1:{p}" for c, p in ports.items()}
    levels = {PROVINCE: "province", JINAN: "city", QINGDAO: "city"}
    engines = {c: _prepare(c, levels[c], d) for c, d in dirs.items()}
    for city in (JINAN, QINGDAO):
        trust.add_peer(
            engine=engines[PROVINCE],
            own_code=PROVINCE,
            code=city,
            relation=Relation.child,
            url=urls[city],
            public_key=trust.own_public_key(dirs[city]),
        )
        trust.add_peer(
            engine=engines[city],
            own_code=city,
            code=PROVINCE,
            relation=Relation.parent,
            url=urls[PROVINCE],
            public_key=trust.own_public_key(dirs[PROVINCE]),
        )
        indicators.compute(
            engine=engines[city], data_dir=dirs[city], code=city, level="city", tree=TREE
        )
    for engine in engines.values():
        engine.dispose()
    procs = {PROVINCE: _serve(PROVINCE, "province", dirs[PROVINCE], ports[PROVINCE], None)}
    for city in (JINAN, QINGDAO):
        procs[city] = _serve(city, "city", dirs[city], ports[city], urls[PROVINCE])
    try:
        yield {"dirs": dirs, "procs": procs}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)


def _rollup(province: Path) -> dict[str, object]:
    out = _ok(
        "indicators",
        "rollup",
        TREE,
        "--data",
        str(province),
        "--code",
        PROVINCE,
        "--level",
        "province",
        "--deadline",
        "3",
        "--json",
    )
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.mark.xdist_group("many_nodes")  # not beside the demo: see tests/demo
def test_rollup_moves_aggregates_only_and_names_missing_children(
    nodes: dict[str, object],
) -> None:
    dirs: dict[str, Path] = nodes["dirs"]  # type: ignore[assignment]
    procs: dict[str, subprocess.Popen[bytes]] = nodes["procs"]  # type: ignore[assignment]
    first = _rollup(dirs[PROVINCE])
    assert first["answered"] == [JINAN, QINGDAO] and first["missing"] == {}
    assert first["stored"] > 0
    values = json.loads(
        _ok(
            "indicators",
            "values",
            TREE,
            "--data",
            str(dirs[PROVINCE]),
            "--code",
            PROVINCE,
            "--level",
            "province",
            "--json",
        )
    )
    units = {v["unit"] for v in values}
    assert {JINAN, QINGDAO, PROVINCE} <= units
    # raw personal data never moved up: none of the cities' residents' IDs or names
    residents = []
    for city in (JINAN, QINGDAO):
        table = pq.read_table(dirs[city] / "public_security" / "residents.parquet")
        residents += table.column("id_number").to_pylist()[:50]
        residents += [n for n in table.column("name").to_pylist()[:50] if len(n) >= 3]
    province_bytes = b"".join(
        p.read_bytes()
        for p in [dirs[PROVINCE] / "citybrain.db", dirs[PROVINCE] / "audit" / "log.jsonl"]
        + list(dirs[PROVINCE].glob("citybrain.db-wal"))
    )
    assert not [r for r in residents if r.encode() in province_bytes]
    # a city that is down is named; what it sent before stays
    procs[QINGDAO].send_signal(signal.SIGKILL)
    procs[QINGDAO].wait(timeout=10)
    second = _rollup(dirs[PROVINCE])
    assert second["answered"] == [JINAN] and list(second["missing"]) == [QINGDAO]
    after = json.loads(
        _ok(
            "indicators",
            "values",
            TREE,
            "--data",
            str(dirs[PROVINCE]),
            "--code",
            PROVINCE,
            "--level",
            "province",
            "--json",
        )
    )
    assert QINGDAO in {v["unit"] for v in after}


def test_rollup_refuses_bad_input(tmp_path: Path) -> None:
    data = tmp_path / "p"
    _ok("db", "upgrade", "--data", str(data))
    unknown = _cli(
        "indicators",
        "rollup",
        "nosuchtree",
        "--data",
        str(data),
        "--code",
        PROVINCE,
        "--level",
        "province",
    )
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr


def test_rollup_route_roles_and_no_children(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from citybrain.app import create_app
    from conftest import bearer

    with TestClient(create_app(load_settings(data_dir=tmp_path))) as client:
        body = {"tree": TREE}
        steward = bearer(tmp_path, org="education", role="steward")
        assert client.post("/api/indicators/rollup", json=body, headers=steward).status_code == 403
        admin = bearer(tmp_path)
        unknown = client.post("/api/indicators/rollup", json={"tree": "x"}, headers=admin)
        assert unknown.status_code in (400, 404)
        bad = client.post("/api/indicators/rollup", json={**body, "deadline": 0}, headers=admin)
        assert bad.status_code == 400
        empty = client.post("/api/indicators/rollup", json=body, headers=admin).json()
        assert empty["children"] == [] and empty["missing"] == {} and empty["stored"] == 0
        node = bearer(tmp_path, org="node-370000", role="node")
        exported = client.get("/api/indicators/export", params={"tree": TREE}, headers=node)
        assert exported.status_code == 200 and exported.json() == []
