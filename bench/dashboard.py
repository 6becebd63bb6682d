"""Dashboard data endpoints: p50 and p95 over repeated requests against a served province node.

`citybrain synth --scale 0.001` (CITYBRAIN_BENCH_DASH_SCALE) makes the province's folder; it is
served as a process (`citybrain serve`), every tree is computed, and events are reported
through the API (CITYBRAIN_BENCH_DASH_EVENTS). Then each endpoint the one screen polls is
requested N times (CITYBRAIN_BENCH_DASH_REQUESTS, default 200) one after another over a
keep-alive connection, as the page does:
/api/dashboard/summary, /api/indicators/compare (the 16 cities and the province),
/api/events/cases?limit=20, /api/nodes. Reference in the same run: /health on the same node,
the floor of the HTTP stack and the client. Target: every endpoint's p95 under 100 ms.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report  # noqa: E402
from citybrain.geo import service as geo  # noqa: E402
from citybrain.governance.identity.tokens import issue_token  # noqa: E402

SCALE = os.environ.get("CITYBRAIN_BENCH_DASH_SCALE", "0.001")
REQUESTS = int(os.environ.get("CITYBRAIN_BENCH_DASH_REQUESTS", "200"))
EVENTS = int(os.environ.get("CITYBRAIN_BENCH_DASH_EVENTS", "300"))
PORT = int(os.environ.get("CITYBRAIN_BENCH_DASH_PORT", "18650"))
TREES = ("gbt33356", "operational", "u4ssc")
# points inside a few cities, so the cases spread over counties and departments
POINTS = [(117.05, 36.67), (120.38, 36.07), (118.05, 36.81), (116.99, 36.65), (121.39, 37.52)]
TYPES = ["manhole_cover", "street_lamp", "overflowing_bin", "illegal_parking"]


def _p(samples: list[float], q: int) -> float:
    """Return the q-th percentile in milliseconds."""
    return round(statistics.quantiles(samples, n=100)[q - 1] * 1000, 2)


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("the node did not start")


def _time(client: httpx.Client, path: str) -> list[float]:
    client.get(path).raise_for_status()  # warm: first-use caches, the classifier, geometry
    samples = []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        client.get(path).raise_for_status()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    """Serve a province, compute, ingest, and time the dashboard's endpoints."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "citybrain", "synth", "--scale", SCALE, "--seed", "7"]
            + ["--out", str(root / "synth")],
            check=True,
            capture_output=True,
        )
        data = root / "synth" / "370000"
        proc = subprocess.Popen(
            [sys.executable, "-m", "citybrain", "serve", "--data", str(data), "--port", str(PORT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{PORT}"
        try:
            _wait(url, proc)
            token = issue_token(
                data_dir=data, issuer="370000", subject="bench", org="bureau", role="operator"
            )
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                for tree in TREES:
                    client.post("/api/indicators/compute", json={"tree": tree}).raise_for_status()
                for i in range(EVENTS):
                    lon, lat = POINTS[i % len(POINTS)]
                    client.post(
                        "/api/events/cases",
                        json={
                            "event_type": TYPES[i % len(TYPES)],
                            "description": f"巡查发现问题 {i}",
                            "lon": lon,
                            "lat": lat,
                        },
                    ).raise_for_status()
                units = ",".join(["370000", *(u.code for u in geo.children("370000"))])
                paths = {
                    "summary": "/api/dashboard/summary",
                    "indicators_compare": f"/api/indicators/compare?tree=u4ssc&units={units}",
                    "events_cases_20": "/api/events/cases?limit=20",
                    "nodes": "/api/nodes",
                }
                timings = {name: _time(client, path) for name, path in paths.items()}
                health = _time(client, "/health")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    figures: dict[str, object] = {"scale": float(SCALE), "events": EVENTS, "requests": REQUESTS}
    for name, samples in timings.items():
        figures[f"{name}_p50_ms"] = _p(samples, 50)
        figures[f"{name}_p95_ms"] = _p(samples, 95)
    worst = max(_p(s, 95) for s in timings.values())
    figures["worst_p95_ms"] = worst
    figures["target"] = "every dashboard data endpoint p95 < 100 ms"
    figures["met"] = worst < 100
    reference = {"health_p50_ms": _p(health, 50), "health_p95_ms": _p(health, 95)}
    report("dashboard", figures, reference, round(worst / max(_p(health, 95), 1e-3), 2))


if __name__ == "__main__":
    main()
