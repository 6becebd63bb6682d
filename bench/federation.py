"""Federation: province roll-up of all indicators from 16 live city nodes, and the outbox rate.

Starts the synthetic Shandong the demo starts (province + 16 cities as processes, keys
exchanged), computes every tree at each city, then
- times the province's roll-up of all three trees over HTTP (p50, p95 of repeated runs);
  reference: one city's export of the same trees, the network and serialisation floor;
- sends N tasks to one city through the province's outbox and times until the city holds
  them all; reference: the same N messages posted straight to the city's inbox, one by one.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report  # noqa: E402
from citybrain.core.config import load_settings  # noqa: E402
from citybrain.core.db import create_engine_for  # noqa: E402
from citybrain.demo import service as demo  # noqa: E402
from citybrain.federation import outbox, trust  # noqa: E402
from citybrain.federation import service as federation  # noqa: E402
from citybrain.federation.models import InboxTask, TaskCreate  # noqa: E402
from citybrain.governance.identity.tokens import issue_token  # noqa: E402
from citybrain.governance.principal import Principal, Role  # noqa: E402

SCALE = float(os.environ.get("CITYBRAIN_BENCH_FED_SCALE", "0.001"))
ROLLUPS = int(os.environ.get("CITYBRAIN_BENCH_FED_ROLLUPS", "20"))
TASKS = int(os.environ.get("CITYBRAIN_BENCH_FED_TASKS", "500"))
PORT = int(os.environ.get("CITYBRAIN_BENCH_FED_PORT", "18600"))
TREES = ("gbt33356", "operational", "u4ssc")


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) >= 20 else max(samples)


def _headers(spec: demo.NodeSpec) -> dict[str, str]:
    token = issue_token(
        data_dir=spec.data_dir,
        issuer=spec.code,
        subject="bench",
        org="bureau",
        role="bureau_admin",
        ttl=3600,
    )
    return {"Authorization": f"Bearer {token}"}


def bench_rollup(province: demo.NodeSpec, city: demo.NodeSpec) -> tuple[list[float], list[float]]:
    """Time the roll-up of every tree, and one city's export of the same trees."""
    rollup_s, export_s = [], []
    with httpx.Client(timeout=60) as client:
        for _ in range(ROLLUPS):
            start = time.perf_counter()
            for tree in TREES:
                response = client.post(
                    f"{province.url}/api/indicators/rollup",
                    json={"tree": tree},
                    headers=_headers(province),
                )
                body = response.json()
                assert response.status_code == 200 and not body["missing"], body
            rollup_s.append(time.perf_counter() - start)
            token = trust.peer_token(
                data_dir=province.data_dir, caller=province.code, audience=city.code
            )
            start = time.perf_counter()
            for tree in TREES:
                got = client.get(
                    f"{city.url}/api/indicators/export",
                    params={"tree": tree},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert got.status_code == 200
            export_s.append(time.perf_counter() - start)
    return rollup_s, export_s


def _received(city: demo.NodeSpec, client: httpx.Client) -> int:
    response = client.get(
        f"{city.url}/api/federation/tasks",
        params={"direction": "received", "limit": 1000},
        headers=_headers(city),
    )
    return len(response.json())


def bench_outbox(province: demo.NodeSpec, city: demo.NodeSpec) -> tuple[float, float]:
    """Return tasks/s through the province's outbox and through direct inbox posts."""
    settings = load_settings(data_dir=province.data_dir, code=province.code, level="province")
    engine = create_engine_for(settings.effective_database_url)
    admin = Principal(subject="bench", org="bureau", role=Role.bureau_admin, issuer=province.code)
    with httpx.Client(timeout=30) as client:
        before = _received(city, client)
        start = time.perf_counter()
        for i in range(TASKS):
            federation.send_task(
                engine=engine,
                data_dir=province.data_dir,
                own_code=province.code,
                principal=admin,
                task=TaskCreate(to=city.code, kind="inspection", title=f"bench task {i}"),
            )
        # the province's own background loop delivers; the bench only watches the city
        deadline = time.monotonic() + 600
        while _received(city, client) < before + TASKS:
            if time.monotonic() > deadline:
                raise SystemExit("the outbox did not deliver every task in 600 s")
            time.sleep(0.2)
        through_outbox = TASKS / (time.perf_counter() - start)
        token = trust.peer_token(
            data_dir=province.data_dir, caller=province.code, audience=city.code
        )
        start = time.perf_counter()
        for i in range(TASKS):
            message = InboxTask(
                message_id=outbox.new_id(),
                id=outbox.new_id(),
                kind="inspection",
                title=f"direct task {i}",
                body={},
                due=None,
                created_by="bench",
                created_at=trust.utc(),
            )
            response = client.post(
                f"{city.url}/api/federation/inbox/tasks",
                content=message.model_dump_json(),
                headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
            )
            assert response.status_code < 300, response.text
        direct = TASKS / (time.perf_counter() - start)
    engine.dispose()
    return through_outbox, direct


def main() -> None:
    """Start the nodes, run both measurements, stop the nodes."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("CITYBRAIN_BENCH_DIR")) as tmp:
        root = Path(tmp)
        synth_dir = demo.ensure_synthetic(root=root, scale=SCALE, seed=1)
        specs = demo.plan_nodes(root=root, synth_dir=synth_dir, port=PORT, counties_of=None)
        demo.check_ports_free(specs)
        demo.exchange_keys(specs)
        procs = demo.start_nodes(specs=specs, log_dir=root / "logs")
        try:
            demo.wait_healthy(specs=specs, procs=procs, timeout=300)
            demo.wait_registered(province=specs[0], expected=16, timeout=120)
            summary = demo.compute_and_rollup(specs, trees=TREES)
            assert not summary["missing"], summary
            rollup_s, export_s = bench_rollup(specs[0], specs[1])
            through_outbox, direct = bench_outbox(specs[0], specs[1])
        finally:
            demo.stop_nodes(procs)
    report(
        "federation",
        {
            "cities": 16,
            "trees": len(TREES),
            "values_rolled_up_per_run": summary["stored"] // len(TREES) * len(TREES),
            "rollup_all_trees_p50_s": round(statistics.median(rollup_s), 3),
            "rollup_all_trees_p95_s": round(_p95(rollup_s), 3),
            "tasks": TASKS,
            "outbox_tasks_per_s": round(through_outbox, 1),
            "target": "roll-up of all indicators from 16 cities p95 < 1 s",
        },
        {
            "one_city_export_all_trees_p50_s": round(statistics.median(export_s), 3),
            "direct_inbox_posts_per_s": round(direct, 1),
        },
        round(statistics.median(rollup_s) / statistics.median(export_s), 2),
    )


if __name__ == "__main__":
    main()
