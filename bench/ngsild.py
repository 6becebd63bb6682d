"""NGSI-LD hub: batch upsert rate, HTTP partial updates, query p95, temporal aggregation.

Sizes come from CITYBRAIN_BENCH_ENTITIES (default 1,000,000) and CITYBRAIN_BENCH_OBSERVATIONS
(default 10,000,000), the sizes the targets are stated at. The observations belong to 1,000
sensors with a month of readings each; the aggregation asks for one sensor's hourly average
over the month. Each figure has its reference measured in the same run: raw executemany of the
same entity rows, and a hand-written GROUP BY over the same sensor's rows.

The batch upsert runs CITYBRAIN_BENCH_REPEAT times (default 3, each into a fresh database in
the same folder) and reports the median, beside two references: the entity JSON as one row
each (one table, one key), and the rows the store itself writes for an entity (its row with
geo columns, its type row, one history row per attribute, with the same indexes), prepared
by hand and inserted with raw executemany. The second is what SQLite alone costs for what the
store keeps. The same upsert is then sent as clients send it, bodies of 1,000 entities to
POST /entityOperations/upsert from a separate load process, to a fresh node served by two
workers, also that many times. The HTTP partial updates also run that many times; beside
the rate, the node's CPU time per request (user + system, all its threads and workers) is
read from /proc, which holds still when other work on the machine takes the cores.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report, wait_healthy  # noqa: E402
from citybrain.core.config import load_settings  # noqa: E402
from citybrain.core.db import create_engine_for, upgrade  # noqa: E402
from citybrain.core.runtime import tune_gc  # noqa: E402
from citybrain.governance.identity.tokens import issue_token  # noqa: E402
from citybrain.hub.ngsild import service  # noqa: E402
from citybrain.hub.ngsild.entities import expand_entity  # noqa: E402
from citybrain.hub.ngsild.jsonld import ContextStore  # noqa: E402
from citybrain.hub.ngsild.models import (  # noqa: E402
    ngsild_entities,
    ngsild_entity_types,
    ngsild_history,
)

ENTITIES = int(os.environ.get("CITYBRAIN_BENCH_ENTITIES", "1000000"))
OBSERVATIONS = int(os.environ.get("CITYBRAIN_BENCH_OBSERVATIONS", "10000000"))
SENSORS = 1000
CONNECTIONS = int(os.environ.get("CITYBRAIN_BENCH_CONNECTIONS", "32"))
HTTP_SECONDS = float(os.environ.get("CITYBRAIN_BENCH_HTTP_SECONDS", "10"))
REPEAT = int(os.environ.get("CITYBRAIN_BENCH_REPEAT", "3"))
BATCH = 1000


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


def _fresh(path: Path) -> Engine:
    for old in path.parent.glob(path.name + "*"):
        old.unlink()
    engine = create_engine_for(f"sqlite:///{path}")
    upgrade(engine)
    return engine


def _upsert_rate(engine: Engine, count: int) -> float:
    """Entities per second of our batch upsert of entity(0..count) into the engine's store."""
    terms = ContextStore().term_map(None)
    start = time.perf_counter()
    for lo in range(0, count, BATCH):
        batch = [expand_entity(entity(i), terms) for i in range(lo, min(lo + BATCH, count))]
        service.upsert_many(engine=engine, tenant="", entities=batch, mode="upsert")
    rate = count / (time.perf_counter() - start)
    engine.dispose()
    return rate


def _ours(path: Path) -> float:
    return _upsert_rate(_fresh(path), ENTITIES)


def _raw(path: Path) -> float:
    """The same JSON rows into a plain table with executemany, same database file."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("drop table if exists raw")
    conn.execute("create table raw (id text primary key, entity text)")
    start = time.perf_counter()
    for lo in range(0, ENTITIES, BATCH):
        rows = [(f"r{i}", json.dumps(entity(i))) for i in range(lo, min(lo + BATCH, ENTITIES))]
        conn.executemany("insert into raw values (?, ?)", rows)
        conn.commit()
    rate = ENTITIES / (time.perf_counter() - start)
    conn.close()
    return rate


VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
LOCATION = "https://uri.etsi.org/ngsi-ld/location"


def _store_rows(i: int, iso: str, db_time: str) -> tuple[tuple[object, ...], ...]:
    """The rows the store keeps for entity(i), prepared by hand: entity, type, two history."""
    eid = f"urn:ngsi-ld:AirQualityObserved:{i:08d}"
    x, y = 116 + (i % 1000) / 300, 35 + (i // 1000 % 1000) / 400
    stamps = {"createdAt": iso, "modifiedAt": iso}
    pm25 = {"type": "Property", "value": i % 300, "unitCode": "GQ", **stamps}
    location = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [x, y]}, **stamps}
    kind = VOCAB + "AirQualityObserved"
    body = {"id": eid, "type": [kind], VOCAB + "pm25": pm25, LOCATION: location, **stamps}
    cell = (math.floor(y / 0.01) + 9_000) * 40_000 + (math.floor(x / 0.01) + 18_000)
    return (
        ("", eid, orjson.dumps(body).decode(), db_time, db_time, x, y, x, y, cell),
        ("", eid, kind),
        ("", eid, VOCAB + "pm25", None, db_time, float(i % 300), orjson.dumps(pm25).decode()),
        ("", eid, LOCATION, None, db_time, None, orjson.dumps(location).decode()),
    )


STORE_TABLES = (
    (
        "ngsild_entities",
        "tenant, id, entity, created_at, modified_at, loc_minx, loc_miny, loc_maxx, loc_maxy, "
        "loc_cell",
    ),
    ("ngsild_entity_types", "tenant, id, type"),
    ("ngsild_history", "tenant, entity_id, attribute, dataset_id, at, number, instance"),
)


def _insert_store_rows(cursor: Any, rows: list[tuple[tuple[object, ...], ...]], mark: str) -> None:
    """Raw executemany of _store_rows into the three tables (mark: the driver's placeholder)."""
    parts = ([r[0] for r in rows], [r[1] for r in rows], [h for r in rows for h in r[2:]])
    for (table, columns), values in zip(STORE_TABLES, parts, strict=True):
        marks = ",".join(mark for _ in columns.split(","))
        cursor.executemany(f"insert into {table} ({columns}) values ({marks})", values)


def _floor(path: Path) -> float:
    """The store's own rows for each entity, by hand, with raw executemany: SQLite's part."""
    _fresh(path).dispose()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    moment = datetime.now(UTC)
    iso = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    db_time = moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    start = time.perf_counter()
    for lo in range(0, ENTITIES, BATCH):
        rows = [_store_rows(i, iso, db_time) for i in range(lo, min(lo + BATCH, ENTITIES))]
        _insert_store_rows(conn, rows, "?")
        conn.commit()
    rate = ENTITIES / (time.perf_counter() - start)
    conn.close()
    return rate


def bench_batch(data: Path) -> tuple[list[float], float, float]:
    """Median rates of our batch upsert and of both references, runs interleaved."""
    ours: list[float] = []
    raw: list[float] = []
    floor: list[float] = []
    scratch = data / "scratch.db"
    for k in range(REPEAT):
        # the last run of ours stays in citybrain.db: the HTTP node serves it
        last = k == REPEAT - 1
        ours.append(_ours(data / "citybrain.db" if last else scratch))
        floor.append(_floor(scratch))
        raw.append(_raw(data / "citybrain.db"))
    for old in data.glob("scratch.db*"):
        old.unlink()
    return ours, statistics.median(raw), statistics.median(floor)


PG_ADMIN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
# entities of the PostgreSQL batch run: row-by-row references there are slow at 1 M
PG_ENTITIES = int(os.environ.get("CITYBRAIN_BENCH_PG_ENTITIES", "100000"))


def _pg_fresh(name: str) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"host=127.0.0.1 port=5432 dbname={name} user=postgres"


def _pg_ours(name: str) -> float:
    _pg_fresh(name)
    engine = create_engine_for(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    upgrade(engine)
    return _upsert_rate(engine, PG_ENTITIES)


def _pg_raw(name: str) -> float:
    """The store's own rows per entity, by hand, with psycopg's executemany (pipelined)."""
    import psycopg

    dsn = _pg_fresh(name)
    engine = create_engine_for(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    upgrade(engine)
    engine.dispose()
    moment = datetime.now(UTC)
    iso = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        start = time.perf_counter()
        for lo in range(0, PG_ENTITIES, BATCH):
            rows = [_store_rows(i, iso, moment) for i in range(lo, min(lo + BATCH, PG_ENTITIES))]
            _insert_store_rows(cur, rows, "%s")
            conn.commit()
        return PG_ENTITIES / (time.perf_counter() - start)


def bench_batch_pg() -> tuple[float, float] | None:
    """Median rates of our batch upsert on PostgreSQL (COPY) and of raw executemany there."""
    import psycopg

    name = f"citybrain_bench_ngsild_{os.getpid()}"
    try:
        _pg_fresh(name)
    except psycopg.Error:
        return None  # no PostgreSQL on this machine
    try:
        ours = [_pg_ours(name) for _ in range(REPEAT)]
        raw = [_pg_raw(name) for _ in range(REPEAT)]
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return statistics.median(ours), statistics.median(raw)


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, its threads and its worker processes."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return own + sum(_cpu_seconds(int(child)) for child in children)


def _load(port: int, header: str, pid: int) -> tuple[float, float]:
    """Run the load process once; return requests per second and server CPU ms per request."""
    before = _cpu_seconds(pid)
    out = subprocess.check_output(
        [
            sys.executable,
            str(Path(__file__).resolve().parent / "_load.py"),
            "127.0.0.1",
            str(port),
            str(HTTP_SECONDS),
            str(CONNECTIONS),
            str(ENTITIES),
            header,
        ],
        text=True,
    )
    used = _cpu_seconds(pid) - before
    load = json.loads(out)
    if load["failed"] and header != "x" * 200:
        raise SystemExit(f"{load['failed']} partial updates failed")
    return float(load["per_s"]), used * 1000 / max(1, load["ok"] + load["failed"])


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) >= 20 else max(samples)


def _serve(data: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    node = subprocess.Popen(
        [sys.executable, "-m", "citybrain", "serve", "--level", "province", "--code", "370000"]
        + ["--data", str(data), "--port", str(port), "--workers", str(workers)],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "CITYBRAIN_LOG_LEVEL": "WARNING"},
    )
    wait_healthy(port)
    return node


def _stop(node: subprocess.Popen[bytes]) -> None:
    node.terminate()
    node.wait(timeout=30)


BATCH_CONNECTIONS = int(os.environ.get("CITYBRAIN_BENCH_BATCH_CONNECTIONS", "24"))


def _batch_http_once(folder: Path) -> tuple[float, float]:
    """One batch load of ENTITIES over HTTP into a fresh node of two workers: rate, node µs."""
    folder.mkdir()
    port = 18781
    node = _serve(folder, port, 2)
    token = issue_token(
        data_dir=folder, issuer="370000", subject="bench", org="city_management", role="service"
    )
    try:
        time.sleep(1)  # both workers listening
        before = _cpu_seconds(node.pid)
        out = subprocess.check_output(
            [sys.executable, str(Path(__file__).resolve().parent / "_batch_load.py")]
            + ["127.0.0.1", str(port), str(BATCH_CONNECTIONS), str(ENTITIES), token],
            text=True,
        )
        used = _cpu_seconds(node.pid) - before
    finally:
        _stop(node)
    load = json.loads(out)
    if load["failed"]:
        raise SystemExit(f"{load['failed']} batch upserts over HTTP failed")
    return float(load["per_s"]), used * 1e6 / ENTITIES


def bench_batch_http(data: Path) -> tuple[list[float], float]:
    """The batch upsert as clients send it: POST /entityOperations/upsert, 1,000 a body, from
    a separate load process, served by two workers (`serve --workers 2`) each into a fresh
    node; rates of each run and the median node CPU µs per entity."""
    runs = []
    for k in range(REPEAT):
        runs.append(_batch_http_once(data / f"batch-http-{k}"))
        shutil.rmtree(data / f"batch-http-{k}")
    return [r[0] for r in runs], statistics.median(r[1] for r in runs)


def bench_patch_workers(data: Path, token: str) -> tuple[float, float]:
    """The partial updates again, served by two worker processes (serve --workers 2)."""
    port = 18779
    node = _serve(data, port, 2)
    try:
        time.sleep(1)  # both workers listening
        runs = [_load(port, token, node.pid) for _ in range(REPEAT)]
        return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
    finally:
        _stop(node)


def bench_http(data: Path) -> dict[str, float]:
    port = 18777
    node = _serve(data, port, 1)
    base = f"http://127.0.0.1:{port}/ngsi-ld/v1"
    # a client of the node sends a token; the sensors' entity type belongs to city management
    token = issue_token(
        data_dir=data, issuer="370000", subject="bench", org="city_management", role="service"
    )
    auth = {"Authorization": f"Bearer {token}"}
    try:
        # the load runs in a separate process, as a client of the node would
        runs = [_load(port, token, node.pid) for _ in range(REPEAT)]
        rate = statistics.median(r[0] for r in runs)
        cpu_ms = statistics.median(r[1] for r in runs)
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
        empty_rate, empty_cpu_ms = bench_empty_patch(port + 1)
    finally:
        _stop(node)
    two_rate, two_cpu_ms = bench_patch_workers(data, token)
    return {
        "patch_per_s": rate,
        "patch_cpu_ms": cpu_ms,
        "patch_two_workers_per_s": two_rate,
        "patch_two_workers_cpu_ms": two_cpu_ms,
        "query_p95_ms": p95(query_ms),
        "geo_p95_ms": p95(geo_ms),
        "empty_patch_per_s": empty_rate,
        "empty_patch_cpu_ms": empty_cpu_ms,
    }


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


def bench_empty_patch(port: int) -> tuple[float, float]:
    """Reference: the same load against a FastAPI PATCH route that does nothing."""
    server = subprocess.Popen([sys.executable, "-c", EMPTY_APP, str(port)])
    try:
        for _ in range(100):
            try:
                httpx.patch(f"http://127.0.0.1:{port}/ngsi-ld/v1/entities/x/attrs/y", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        # the same request bytes as against the node; this route checks nothing
        runs = [_load(port, "x" * 200, server.pid) for _ in range(REPEAT)]
        return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
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
            ngsild_entities,
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
            ngsild_entity_types,
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
    db = sqlite3.connect(data / "temporal.db")
    raw_samples: list[float] = []
    for _ in range(5):
        start = time.perf_counter()
        db.execute(
            "select strftime('%Y-%m-%d %H', at), avg(number) from ngsild_history "
            "where tenant = '' and entity_id = ? and attribute = ? group by 1",
            (target, attribute),
        ).fetchall()
        raw_samples.append(time.perf_counter() - start)
    db.close()
    return statistics.median(samples), statistics.median(raw_samples)


def main() -> None:
    """Run the four measurements and report them."""
    tune_gc()  # the garbage collector's schedule of a serving node, as `citybrain serve` sets
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        runs, raw, floor = bench_batch(data)
        ours = statistics.median(runs)
        http_runs, http_cpu_us = bench_batch_http(data)
        over_http = statistics.median(http_runs)
        http = bench_http(data)
        t_ours, t_raw = bench_temporal(data)
    pg = bench_batch_pg()
    report(
        "ngsild",
        {
            "entities": ENTITIES,
            "batch_upsert_entities_per_s": round(ours),
            "batch_upsert_runs_per_s": [round(r) for r in runs],
            "batch_upsert_ratio_to_store_rows": round(ours / floor, 3),
            "http_batch_upsert_two_workers_entities_per_s": round(over_http),
            "http_batch_upsert_runs_per_s": [round(r) for r in http_runs],
            "http_batch_upsert_node_cpu_us_per_entity": round(http_cpu_us, 1),
            "http_batch_upsert_ratio_to_store_rows": round(over_http / floor, 3),
            "http_partial_updates_per_s": round(http["patch_per_s"]),
            "http_partial_update_node_cpu_ms": round(http["patch_cpu_ms"], 3),
            "http_partial_updates_two_workers_per_s": round(http["patch_two_workers_per_s"]),
            "http_partial_update_two_workers_cpu_ms": round(http["patch_two_workers_cpu_ms"], 3),
            "query_type_q_p95_ms": round(http["query_p95_ms"], 1),
            "geo_near_p95_ms": round(http["geo_p95_ms"], 1),
            "observations": OBSERVATIONS,
            "temporal_hourly_avg_month_median_s": round(t_ours, 3),
            "postgresql_batch_upsert_entities_per_s": round(pg[0]) if pg else "no PostgreSQL",
            "postgresql_entities": PG_ENTITIES,
            "targets": (
                "upsert >= 50000/s at 1M; patch >= 3500/s; query/geo p95 < 50 ms at 1M; "
                "temporal < 1 s at 10M"
            ),
        },
        {
            "raw_executemany_rows_per_s": round(raw),
            "raw_executemany_store_rows_entities_per_s": round(floor),
            "raw_sqlite_group_by_one_sensor_median_s": round(t_raw, 3),
            "postgresql_raw_executemany_store_rows_entities_per_s": round(pg[1]) if pg else 0,
            "postgresql_ratio_to_raw_executemany": round(pg[0] / pg[1], 3) if pg else 0,
            "empty_fastapi_patch_per_s": round(http["empty_patch_per_s"]),
            "empty_fastapi_patch_cpu_ms": round(http["empty_patch_cpu_ms"], 3),
            "repeats": REPEAT,
            "load_connections": CONNECTIONS,
            "batch_load_connections": BATCH_CONNECTIONS,
        },
        round(ours / raw, 3),
    )


if __name__ == "__main__":
    main()
