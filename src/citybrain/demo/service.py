"""Run a synthetic Shandong on localhost: one province node and 16 city node processes."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from citybrain.core.errors import BadInput, CityBrainError, ServiceUnavailable
from citybrain.geo import service as geo

log = logging.getLogger(__name__)

PROVINCE = "370000"


@dataclass(frozen=True)
class NodeSpec:
    """How one demo node is started."""

    code: str
    level: str
    port: int
    data_dir: Path
    parent_url: str | None

    @property
    def url(self) -> str:
        """Return the node's base URL on localhost."""
        return f"http://127.0.0.1:{self.port}"


def ensure_synthetic(
    *,
    root: Path,
    scale: float,
    seed: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Generate the synthetic province under root/synth unless the same seed and scale exist."""
    from citybrain.synth import service as synth

    out = root / "synth"
    manifest = out / "synth.json"
    if manifest.is_file():
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        if meta.get("seed") == seed and float(meta.get("scale", -1)) == scale:
            return out
    synth.generate(scale=scale, seed=seed, out=out, force=True, progress=progress)
    return out


def plan_nodes(
    *, root: Path, synth_dir: Path, port: int, counties_of: str | None
) -> list[NodeSpec]:
    """Lay out the province, its 16 cities and optionally one city's counties on ports."""
    province = NodeSpec(PROVINCE, "province", port, synth_dir / PROVINCE, None)
    specs = [province]
    for offset, city in enumerate(geo.list_units("city", PROVINCE), start=1):
        specs.append(
            NodeSpec(city.code, "city", port + offset, synth_dir / city.code, province.url)
        )
    if counties_of is not None:
        city_unit = geo.get_unit(counties_of)
        if city_unit.level != "city":
            raise BadInput(f"--counties-of needs a city code; {counties_of} is a {city_unit.level}")
        parent = next(s for s in specs if s.code == counties_of)
        next_port = port + len(specs)
        for i, county in enumerate(geo.list_units("county", counties_of)):
            specs.append(
                NodeSpec(
                    county.code,
                    "county",
                    next_port + i,
                    root / "counties" / county.code,
                    parent.url,
                )
            )
    return specs


def exchange_keys(specs: list[NodeSpec]) -> None:
    """Trust every child with its parent and the parent with the child, before any node starts.

    The demo holds every data folder, so it plays each administrator: it reads each node's
    public key and records it in the peer table of the node on the other end.
    """
    from citybrain.core.config import load_settings
    from citybrain.core.db import create_engine_for, upgrade
    from citybrain.federation import trust
    from citybrain.federation.models import Relation

    by_url = {s.url: s for s in specs}
    engines = {}
    try:
        for spec in specs:
            spec.data_dir.mkdir(parents=True, exist_ok=True)
            settings = load_settings(data_dir=spec.data_dir, code=spec.code, level=spec.level)
            engine = create_engine_for(settings.effective_database_url)
            upgrade(engine)
            engines[spec.code] = engine
        for spec in specs:
            if spec.parent_url is None:
                continue
            parent = by_url[spec.parent_url]
            trust.add_peer(
                engine=engines[parent.code],
                own_code=parent.code,
                code=spec.code,
                relation=Relation.child,
                url=spec.url,
                public_key=trust.own_public_key(spec.data_dir),
            )
            trust.add_peer(
                engine=engines[spec.code],
                own_code=spec.code,
                code=parent.code,
                relation=Relation.parent,
                url=parent.url,
                public_key=trust.own_public_key(parent.data_dir),
            )
    finally:
        for engine in engines.values():
            engine.dispose()


def check_ports_free(specs: list[NodeSpec]) -> None:
    """Refuse to start when any planned port is already taken."""
    for spec in specs:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", spec.port))
            except OSError:
                raise BadInput(
                    f"port {spec.port} (node {spec.code}) is taken; choose another base port "
                    "with --port or DEMO_PORT"
                ) from None


def start_nodes(*, specs: list[NodeSpec], log_dir: Path) -> list[subprocess.Popen[bytes]]:
    """Start every node as its own `citybrain serve` process, logging to log_dir/CODE.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    # the event centre hears of device alarms through its own hub subscriptions
    env = {**os.environ, "CITYBRAIN_LOG_FORMAT": "json", "CITYBRAIN_ALARM_SUBSCRIPTIONS": "true"}
    for spec in specs:
        spec.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "citybrain",
            "serve",
            "--level",
            spec.level,
            "--code",
            spec.code,
            "--data",
            str(spec.data_dir),
            "--port",
            str(spec.port),
        ]
        if spec.parent_url:
            cmd += ["--parent", spec.parent_url]
        log = (log_dir / f"{spec.code}.log").open("ab")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
        log.close()
    return procs


def wait_healthy(
    *,
    specs: list[NodeSpec],
    procs: list[subprocess.Popen[bytes]],
    timeout: float = 120.0,
    on_ready: Callable[[NodeSpec], None] | None = None,
) -> None:
    """Wait until every node answers /health, or report the first that died or stalled.

    timeout is how long the wait may go without a node coming up: on a busy machine the
    seventeen nodes start slowly but steadily, and only a start that stops moving is a fault.
    """
    pending = dict(zip(specs, procs, strict=True))
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while pending:
            for spec, proc in list(pending.items()):
                if proc.poll() is not None:
                    raise ServiceUnavailable(
                        f"node {spec.code} exited with code {proc.returncode}; see its log"
                    )
                try:
                    if client.get(f"{spec.url}/health").status_code == 200:
                        del pending[spec]
                        deadline = time.monotonic() + timeout
                        if on_ready:
                            on_ready(spec)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                missing = ", ".join(s.code for s in pending)
                raise ServiceUnavailable(
                    f"nodes {missing} did not become healthy: none came up in the last "
                    f"{timeout:.0f} s; see their logs"
                )
            if pending:
                time.sleep(0.3)


def wait_registered(*, province: NodeSpec, expected: int, timeout: float = 60.0) -> int:
    """Wait until the province lists the expected number of registered children."""
    deadline = time.monotonic() + timeout
    count = 0
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            try:
                count = len(client.get(f"{province.url}/api/nodes").json())
            except (httpx.HTTPError, ValueError):
                count = 0
            if count >= expected:
                return count
            time.sleep(0.3)
    return count


def stop_nodes(procs: list[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    """Ask every node to shut down gracefully, then kill those that do not."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_tables_ready(spec: NodeSpec, timeout: float = 600.0) -> str:
    """Wait until the node has imported its large tables after start; return the state."""
    deadline = time.monotonic() + timeout
    state = "importing"
    while time.monotonic() < deadline:
        try:
            state = httpx.get(f"{spec.url}/health", timeout=10).json().get("tables", "ready")
        except (httpx.HTTPError, ValueError):
            state = "unreachable"
        if state in ("ready", "failed"):
            return state
        time.sleep(1.0)
    return state


def compute_and_rollup(
    specs: list[NodeSpec], *, trees: tuple[str, ...] = ("gbt33356", "operational", "u4ssc")
) -> dict[str, Any]:
    """Compute every tree at each city now, then have the province roll them up.

    The nodes would do it on their hourly schedule; the demo does it once at start so the
    province shows its cities' indicators at once. The demo holds every data folder, so it
    signs each call with the node's own key as its bureau.
    """
    from concurrent.futures import ThreadPoolExecutor

    from citybrain.governance.identity.tokens import issue_token

    def headers(spec: NodeSpec) -> dict[str, str]:
        token = issue_token(
            data_dir=spec.data_dir,
            issuer=spec.code,
            subject="demo",
            org="bureau",
            role="bureau_admin",
            ttl=600,
        )
        return {"Authorization": f"Bearer {token}"}

    def compute(spec: NodeSpec) -> int:
        # the first run must see every table: wait for the node's import after start
        wait_tables_ready(spec)
        failed = 0
        for tree in trees:
            for _attempt in range(2):  # once more if the node was busy
                response = httpx.post(
                    f"{spec.url}/api/indicators/compute",
                    json={"tree": tree},
                    headers=headers(spec),
                    timeout=300,
                )
                if response.status_code == 200:
                    break
            failed += response.status_code != 200
        return failed

    cities = [s for s in specs if s.level == "city"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = sum(pool.map(compute, cities))
    province = specs[0]
    stored = 0
    missing: set[str] = set()
    for tree in trees:
        response = httpx.post(
            f"{province.url}/api/indicators/rollup",
            json={"tree": tree, "deadline": 30},
            headers=headers(province),
            timeout=120,
        )
        if response.status_code == 200:
            body = response.json()
            stored += int(body["stored"])
            missing |= set(body["missing"])
    return {"cities": len(cities), "failed": failures, "stored": stored, "missing": sorted(missing)}


def open_enrollment_seasons(specs: list[NodeSpec]) -> int:
    """File and approve the Education Bureau's grants and open the season at every city node."""
    from citybrain.scenes.enrollment.demo import prepare_demo_season

    cities = [s for s in specs if s.level == "city"]

    def one(spec: NodeSpec) -> bool:
        try:
            prepare_demo_season(data_dir=spec.data_dir, code=spec.code)
        except CityBrainError as exc:
            # one city's refusal (a missing table) must not stop the demo; its log says why
            log.warning(
                "enrollment season not opened", extra={"city": spec.code, "why": exc.message}
            )
            return False
        return True

    # one at a time: opening a store runs its migrations, and Alembic is not thread-safe
    return sum(one(spec) for spec in cities)
