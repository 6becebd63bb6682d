"""NGSI-LD hub: batch upsert rate, HTTP partial updates, query p95, temporal aggregation.

Sizes come from CITYBRAIN_BENCH_ENTITIES (default 1,000,000) and CITYBRAIN_BENCH_OBSERVATIONS
(default 10,000,000), the sizes the targets are stated at. The observations belong to 1,000
sensors with a month of readings each; the aggregation asks for one sensor's hourly average
over the month. Each figure has its reference measured in the same run: raw executemany of the
same entity rows, and a hand-written GROUP BY over the same sensor's rows.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report  # noqa: E402
from citybrain.core.config import load_settings  # noqa: E402
from citybrain.core.db import create_engine_for, upgrade  # noqa: E402
from citybrain.governance.identity.tokens import issue_token  # noqa: E402
from citybrain.hub.ngsild import service  # noqa: E402
from citybrain.hub.ngsild.entities import expand_entity  # noqa: E402
from citybrain.hub.ngsild.jsonld import ContextStore  # noqa: E402
from citybrain.hub.ngsild.models import ngsild_history  # noqa: E402

ENTITIES = int(os.environ.get("CITYBRAIN_BENCH_ENTITIES", "1000000"))
OBSERVATIONS = int(os.environ.get("CITYBRAIN_BENCH_OBSERVATIONS", "10000000"))
SENSORS = 1000
CONNECTIONS = int(os.environ.get("CITYBRAIN_BENCH_CONNECTIONS", "32"))
HTTP_SECONDS = float(os.environ.get("CITYBRAIN_BENCH_HTTP_SECONDS", "10"))


def entity(i: int) -> dict[str, object]:
    return {
        "id": f"urn:ngsi-ld:AirQualityObserved:{i:08d}",
        "type": "AirQualityObserved",
        "pm25": {"type": "Property", "value": i % 300, "unitCode": "GQ"},
        "location": {
            "type": "GeoProperty",
            "value": {
                "type": "Point",
                "coordinates": [116 + (i % 1000) / 300, 35 + (i // 1000 % 1000) / 400],
            },
        },
    }


def bench_batch(data: Path) -> tuple[float, float]:
    engine = create_engine_for(f"sqlite:///{data / 'citybrain.db'}")
    upgrade(engine)
    terms = ContextStore().term_map(None)
    start = time.perf_counter()
    for lo in range(0, ENTITIES, 1000):
        batch = [expand_entity(entity(i), terms) for i in range(lo, min(lo + 1000, ENTITIES))]
        service.upsert_many(engine=engine, tenant="", entities=batch, mode="upsert")
    ours = ENTITIES / (time.perf_counter() - start)
    # reference: the same JSON rows into a plain table with executemany, same database file
    conn = sqlite3.connect(data / "citybrain.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("create table raw (id text primary key, entity text)")
    start = time.perf_counter()
    for lo in range(0, ENTITIES, 1000):
        rows = [(f"r{i}", json.dumps(entity(i))) for i in range(lo, min(lo + 1000, ENTITIES))]
        conn.executemany("insert into raw values (?, ?)", rows)
        conn.commit()
    raw = ENTITIES / (time.perf_counter() - start)
    conn.close()
    return ours, raw


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) >= 20 else max(samples)


def bench_http(data: Path) -> dict[str, float]:
    port = 18777
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "citybrain",
            "serve",
            "--level",
            "province",
            "--code",
            "370000",
            "--data",
            str(data),
            "--port",
            str(port),
        ],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "CITYBRAIN_LOG_LEVEL": "WARNING"},
    )
    base = f"http://127.0.0.1:{port}/ngsi-ld/v1"
    # a client of the node sends a token; the sensors' entity type belongs to city management
    token = issue_token(
        data_dir=data, issuer="370000", subject="bench", org="city_management", role="service"
    )
    auth = {"Authorization": f"Bearer {token}"}
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        # the load runs in a separate process, as a client of the node would
        out = subprocess.check_output(
            [
                sys.executable,
                str(Path(__file__).resolve().parent / "_load.py"),
                "127.0.0.1",
                str(port),
                str(HTTP_SECONDS),
                str(CONNECTIONS),
                str(ENTITIES),
                token,
            ],
            text=True,
        )
        load = json.loads(out)
        if load["failed"]:
            raise SystemExit(f"{load['failed']} partial updates failed")
        rate = float(load["per_s"])
        query_ms: list[float] = []
        geo_ms: list[float] = []
        with httpx.Client(timeout=60, headers=auth) as c:
            for i in range(60):
                start = time.perf_counter()
                r = c.get(
                    f"{base}/entities",
                    params={"type": "AirQualityObserved", "q": f"pm25=={i}", "limit": 20},
                )
                query_ms.append((time.perf_counter() - start) * 1000)
                assert r.status_code == 200
                start = time.perf_counter()
                r = c.get(
                    f"{base}/entities",
                    params={
                        "type": "AirQualityObserved",
                        "georel": "near;maxDistance==500",
                        "geometry": "Point",
                        "coordinates": f"[{116 + i / 10},{35.5}]",
                        "limit": 20,
                    },
                )
                geo_ms.append((time.perf_counter() - start) * 1000)
        return {
            "patch_per_s": rate,
            "query_p95_ms": p95(query_ms),
            "geo_p95_ms": p95(geo_ms),
            "empty_patch_per_s": bench_empty_patch(port + 1),
        }
    finally:
        node.terminate()
        node.wait(timeout=30)


EMPTY_APP = """
import sys, uvicorn
from fastapi import FastAPI, Request, Response
app = FastAPI()
@app.patch("/ngsi-ld/v1/entities/{entity_id}/attrs/{attr}", status_code=204)
async def patch(request: Request, entity_id: str, attr: str) -> Response:
    await request.body()
    return Response(status_code=204)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def bench_empty_patch(port: int) -> float:
    """Reference: the same load against a FastAPI PATCH route that does nothing."""
    server = subprocess.Popen([sys.executable, "-c", EMPTY_APP, str(port)])
    try:
        for _ in range(100):
            try:
                httpx.patch(f"http://127.0.0.1:{port}/ngsi-ld/v1/entities/x/attrs/y", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        out = subprocess.check_output(
            [
                sys.executable,
                str(Path(__file__).resolve().parent / "_load.py"),
                "127.0.0.1",
                str(port),
                str(HTTP_SECONDS),
                str(CONNECTIONS),
                str(ENTITIES),
                # the same request bytes as against the node; this route checks nothing
                "x" * 200,
            ],
            text=True,
        )
        return float(json.loads(out)["per_s"])
    finally:
        server.terminate()
        server.wait(timeout=30)


def bench_temporal(data: Path) -> tuple[float, float]:
    engine = create_engine_for(f"sqlite:///{data / 'temporal.db'}")
    upgrade(engine)
    start_at = datetime(2026, 10, 1, tzinfo=UTC)
    per_sensor = OBSERVATIONS // SENSORS
    step = timedelta(days=30) / per_sensor
    kind = "https://uri.etsi.org/ngsi-ld/default-context/NoiseLevelObserved"
    attribute = "https://uri.etsi.org/ngsi-ld/default-context/LAeq"
    ids = [f"urn:ngsi-ld:NoiseLevelObserved:{k:04d}" for k in range(SENSORS)]
    with engine.begin() as conn:
        service.bulk_insert(
            conn,
            service.ngsild_entities,
            [
                {
                    "tenant": "",
                    "id": eid,
                    "entity": {"id": eid, "type": [kind]},
                    "created_at": start_at,
                    "modified_at": start_at,
                }
                for eid in ids
            ],
        )
        service.bulk_insert(
            conn,
            service.ngsild_entity_types,
            [{"tenant": "", "id": eid, "type": kind} for eid in ids],
        )
    # time-ordered, as readings arrive: every sensor's reading of one moment, then the next
    stamps = [start_at + step * j for j in range(per_sensor)]
    chunk = 200
    for lo in range(0, per_sensor, chunk):
        rows = [
            {
                "tenant": "",
                "entity_id": eid,
                "attribute": attribute,
                "dataset_id": None,
                "at": stamps[j],
                "number": float((j + k) % 90),
                "instance": {"type": "Property", "value": (j + k) % 90},
            }
            for j in range(lo, min(lo + chunk, per_sensor))
            for k, eid in enumerate(ids)
        ]
        with engine.begin() as conn:
            service.bulk_insert(conn, ngsild_history, rows)
    from fastapi.testclient import TestClient

    from citybrain.app import create_app

    target = ids[SENSORS // 2]
    settings = load_settings(data_dir=data, database_url=f"sqlite:///{data / 'temporal.db'}")
    samples: list[float] = []
    token = issue_token(
        data_dir=data, issuer="370000", subject="bench", org="bureau", role="service"
    )
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {token}"}) as c:
        for _ in range(5):
            start = time.perf_counter()
            r = c.get(
                f"/ngsi-ld/v1/temporal/entities/{target}",
                params={
                    "options": "aggregatedValues",
                    "aggrMethods": "avg",
                    "aggrPeriodDuration": "PT1H",
                    "timerel": "between",
                    "timeAt": "2026-10-01T00:00:00Z",
                    "endTimeAt": "2026-10-31T00:00:00Z",
                },
            )
            samples.append(time.perf_counter() - start)
            assert r.status_code == 200 and 0 < len(r.json()["LAeq"]["avg"]) <= 720
    conn = sqlite3.connect(data / "temporal.db")
    raw_samples: list[float] = []
    for _ in range(5):
        start = time.perf_counter()
        conn.execute(
            "select strftime('%Y-%m-%d %H', at), avg(number) from ngsild_history "
            "where tenant = '' and entity_id = ? and attribute = ? group by 1",
            (target, attribute),
        ).fetchall()
        raw_samples.append(time.perf_counter() - start)
    conn.close()
    return statistics.median(samples), statistics.median(raw_samples)


def main() -> None:
    """Run the four measurements and report them."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        ours, raw = bench_batch(data)
        http = bench_http(data)
        t_ours, t_raw = bench_temporal(data)
    report(
        "ngsild",
        {
            "entities": ENTITIES,
            "batch_upsert_entities_per_s": round(ours),
            "http_partial_updates_per_s": round(http["patch_per_s"]),
            "query_type_q_p95_ms": round(http["query_p95_ms"], 1),
            "geo_near_p95_ms": round(http["geo_p95_ms"], 1),
            "observations": OBSERVATIONS,
            "temporal_hourly_avg_month_median_s": round(t_ours, 3),
            "targets": (
                "upsert >= 50000/s at 1M; patch >= 3500/s; query/geo p95 < 50 ms at 1M; "
                "temporal < 1 s at 10M"
            ),
        },
        {
            "raw_executemany_rows_per_s": round(raw),
            "raw_sqlite_group_by_one_sensor_median_s": round(t_raw, 3),
            "empty_fastapi_patch_per_s": round(http["empty_patch_per_s"]),
            "load_connections": CONNECTIONS,
        },
        round(ours / raw, 3),
    )


if __name__ == "__main__":
    main()
