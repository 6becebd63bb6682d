"""The demo waits for its nodes while they keep coming up, and names those that stall."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from citybrain.core.errors import ServiceUnavailable
from citybrain.demo import service
from citybrain.demo.service import NodeSpec
from conftest import free_port, stop_process

# a process that answers /health with 200 after a delay, like a node that starts slowly
_LATE_SERVER = """
import http.server, sys, time
time.sleep(float(sys.argv[2]))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _node(
    tmp_path: Path, code: str, delay: float | None
) -> tuple[NodeSpec, subprocess.Popen[bytes]]:
    spec = NodeSpec(code, "city", free_port(), tmp_path / code, None)
    if delay is None:  # alive, never answers
        cmd = [sys.executable, "-c", "import time; time.sleep(120)"]
    else:
        cmd = [sys.executable, "-c", _LATE_SERVER, str(spec.port), str(delay)]
    return spec, subprocess.Popen(cmd)


def test_the_wait_goes_on_while_nodes_keep_coming_up(tmp_path: Path) -> None:
    # the second node is up after the timeout, but within the timeout of the first
    nodes = [_node(tmp_path, "370100", 1.5), _node(tmp_path, "370200", 3.0)]
    ready: list[str] = []
    try:
        service.wait_healthy(
            specs=[s for s, _ in nodes],
            procs=[p for _, p in nodes],
            timeout=2.0,
            on_ready=lambda s: ready.append(s.code),
        )
    finally:
        for _, proc in nodes:
            stop_process(proc)
    assert ready == ["370100", "370200"]


def test_a_node_that_stalls_is_named(tmp_path: Path) -> None:
    nodes = [_node(tmp_path, "370100", 0.0), _node(tmp_path, "370200", None)]
    try:
        with pytest.raises(ServiceUnavailable, match=r"nodes 370200 did not become healthy"):
            service.wait_healthy(
                specs=[s for s, _ in nodes], procs=[p for _, p in nodes], timeout=1.5
            )
    finally:
        for _, proc in nodes:
            stop_process(proc)


def test_a_node_that_exits_is_named(tmp_path: Path) -> None:
    spec = NodeSpec("370100", "city", free_port(), tmp_path / "370100", None)
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(ServiceUnavailable, match="node 370100 exited with code 3"):
        service.wait_healthy(specs=[spec], procs=[proc], timeout=5)
