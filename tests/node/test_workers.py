"""`citybrain serve --workers N`: one port, several processes, one chain, one background."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from citybrain.governance.audit import service as audit
from citybrain.node.workers import claim_primary, release_primary
from conftest import (
    bearer,
    free_port,
    listening_workers,
    serve_node,
    stop_process,
    wait_healthy,
    wait_workers,
)

CODE = "370100"


def test_primary_lock_is_held_by_one_claimant_at_a_time(tmp_path: Path) -> None:
    assert claim_primary(tmp_path) is True
    assert claim_primary(tmp_path) is False  # another worker of the same node
    release_primary(tmp_path)
    assert claim_primary(tmp_path) is True
    release_primary(tmp_path)


def _serve(data: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    return serve_node(data, port, "--workers", str(workers), code=CODE, stderr=subprocess.PIPE)


def test_workers_share_the_port_the_chain_and_the_contexts(tmp_path: Path) -> None:
    data = tmp_path / "node"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _serve(data, port, workers=2)
    try:
        wait_workers(base, proc, workers=2)
        workers = listening_workers(proc)
        assert len(workers) == 2
        # keep-alive connections spread over both workers' sockets
        clients = [httpx.Client(base_url=base, timeout=10) for _ in range(16)]
        for client in clients:
            assert client.get("/health").json()["tables"] in ("importing", "ready")
        serving = [
            sum(1 for s in w.net_connections() if s.status == psutil.CONN_ESTABLISHED)
            for w in workers
        ]
        assert all(n > 0 for n in serving), serving

        # writes from both workers land in one audit chain that verifies
        headers = {**bearer(data, issuer=CODE), "Content-Type": "application/json"}

        def create(i: int) -> int:
            entity = {"id": f"urn:ngsi-ld:Thing:w{i}", "type": "Thing", "n": {"value": i}}
            client = clients[i % len(clients)]
            return client.post("/ngsi-ld/v1/entities", json=entity, headers=headers).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(create, range(120)))
        assert codes == [201] * 120
        report = audit.verify(data_dir=data)
        assert report.ok, report.reason
        writes = [
            line
            for line in audit.log_path(data).read_text().splitlines()
            if '"resource":"POST /ngsi-ld/v1/entities"' in line
        ]
        assert len(writes) == 120 and report.records >= 120

        # a context hosted through one worker is served by all, and its removal too
        location = (
            clients[0]
            .post(
                "/ngsi-ld/v1/jsonldContexts",
                json={"@context": {"n": "https://example.org/n"}},
                headers=headers,
            )
            .headers["location"]
        )
        path = httpx.URL(location).path
        assert {c.get(path, headers=headers).status_code for c in clients} == {200}
        assert clients[1].delete(path, headers=headers).status_code == 204
        assert {c.get(path, headers=headers).status_code for c in clients} == {404}
        for client in clients:
            client.close()

        # background work runs in one worker: it alone holds the primary lock
        assert (data / ".tables-state").read_text() == "ready"
        assert claim_primary(data) is False
    finally:
        stop_process(proc)
    assert proc.returncode == 0
    assert claim_primary(data) is True  # the workers are gone and released it
    release_primary(data)


def test_workers_refuse_a_bad_count(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "citybrain", "serve", "--data", str(tmp_path), "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "--workers" in out.stderr


@pytest.mark.parametrize("workers", [1])
def test_one_worker_is_the_plain_server(tmp_path: Path, workers: int) -> None:
    data = tmp_path / "node"
    port = free_port()
    proc = _serve(data, port, workers=workers)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout=120)
        assert psutil.Process(proc.pid).children() == []
    finally:
        stop_process(proc)
