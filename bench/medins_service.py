"""Medical-insurance service: voucher issue and verification, HTTP scans, settlements at 1,000/s.

On a synthetic Jinan (CITYBRAIN_BENCH_MEDINS_SCALE, default 0.0003, seed 7) with the
province's catalogues beside it:

- service level, in this process: tokens signed per second; verifications per second
  (signature, window, voucher and device binding) and verifications with the single-use
  claim, against the reference of bare Ed25519 verifications of the same tokens with the same
  library (libsodium; OpenSSL's, through `cryptography`, reported beside); durable scans
  (check, claim, committed use row) from 8 threads sharing the group commit;
- over HTTP, the node served by `citybrain serve` and a separate load process (this file with
  --load) sending prepared requests on keep-alive connections at a fixed rate (open loop: a
  request's latency counts from when it was due, so queueing shows): scans at the highest
  rate the node sustains, and settlements at CITYBRAIN_BENCH_MEDINS_RATE (default 1,000/s)
  for CITYBRAIN_BENCH_MEDINS_SECONDS (default 10 s), each with its own voucher token, with
  p50/p99 against GET /health at the same rate through the same stack: first on the fresh
  node (each person's voucher and paid history read from the store at their first
  settlement), then again with new tokens and transaction ids (read from memory). The node
  runs without its hourly indicator schedule, whose first run would fall into these runs.
  With one worker the CPU of the node's main thread (its event loop, where requests queue) is
  reported per request beside the whole node's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import read_status  # noqa: E402

SCALE = os.environ.get("CITYBRAIN_BENCH_MEDINS_SCALE", "0.0003")
RATE = float(os.environ.get("CITYBRAIN_BENCH_MEDINS_RATE", "1000"))
SECONDS = float(os.environ.get("CITYBRAIN_BENCH_MEDINS_SECONDS", "10"))
TOKENS = int(os.environ.get("CITYBRAIN_BENCH_MEDINS_TOKENS", "5000"))
PEOPLE = int(os.environ.get("CITYBRAIN_BENCH_MEDINS_PEOPLE", "1000"))
PG_ADMIN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
# worker processes of the node under load (citybrain serve --workers)
WORKERS = int(os.environ.get("CITYBRAIN_BENCH_MEDINS_WORKERS", "1"))
# the HTTP phases to run (all by default): health, scan, settle
PHASES = set(os.environ.get("CITYBRAIN_BENCH_MEDINS_PHASES", "health,scan,settle").split(","))
# the node's store: sqlite (in the data folder) or postgresql (a fresh database on 127.0.0.1)
STORE = os.environ.get("CITYBRAIN_BENCH_MEDINS_STORE", "sqlite")
CONNECTIONS = 32
CITY, PROVINCE = "370100", "370000"
CST = timezone(timedelta(hours=8))


# --- the load process ------------------------------------------------------------------------


async def _worker(
    host: str, port: int, requests: list[bytes], due: list[float], state: dict[str, Any]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            i = state["next"]
            if i >= len(requests):
                return
            state["next"] = i + 1
            wait = due[i] - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(requests[i])
            status = await read_status(reader)
            state["latency"].append((time.perf_counter() - due[i]) * 1000)
            code = status.decode()
            state["status"][code] = state["status"].get(code, 0) + 1
    finally:
        writer.close()


async def _load(host: str, port: int, requests: list[bytes], rate: float) -> dict[str, Any]:
    start = time.perf_counter() + 0.2
    due = [start + i / rate for i in range(len(requests))]
    state: dict[str, Any] = {"next": 0, "latency": [], "status": {}}
    await asyncio.gather(*(_worker(host, port, requests, due, state) for _ in range(CONNECTIONS)))
    elapsed = time.perf_counter() - start
    lat = sorted(state["latency"])
    return {
        "sent": len(lat),
        "per_s": round(len(lat) / elapsed, 1),
        "p50_ms": round(lat[len(lat) // 2], 2),
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2),
        "status": state["status"],
    }


def load_main(argv: list[str]) -> None:
    """Entry of the load process: HOST PORT RATE FILE (one JSON request per line)."""
    host, port, rate, file = argv[0], int(argv[1]), float(argv[2]), argv[3]
    requests: list[bytes] = []
    for line in Path(file).read_text().splitlines():
        item = json.loads(line)
        body = item["body"].encode()
        head = (
            f"{item['method']} {item['path']} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {item['token']}\r\n"
            + (f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" if body else "")
            + "\r\n"
        )
        requests.append(head.encode() + body)
    print(json.dumps(asyncio.run(_load(host, port, requests, rate))))


# --- set-up ----------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """CPU seconds of the node: its process and its worker processes."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _loop_cpu_seconds(pid: int) -> float:
    """CPU seconds of the node's main thread: its event loop, where requests queue."""
    import psutil

    for thread in psutil.Process(pid).threads():
        if thread.id == pid:
            return float(thread.user_time + thread.system_time)
    return 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prepare(root: Path) -> Path:
    out = root / "synth"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "citybrain",
            "synth",
            "--scale",
            SCALE,
            "--seed",
            "7",
            "--out",
            str(out),
            "--cities",
            CITY,
        ],
        check=True,
        capture_output=True,
    )
    folder = out / PROVINCE / "medical_security"
    if not (folder / "consumable_catalogue.parquet").exists():
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(
            pa.table(
                {
                    "code": pa.array([], pa.string()),
                    "standard_price": pa.array([], pa.float64()),
                    "category": pa.array([], pa.string()),
                }
            ),
            folder / "consumable_catalogue.parquet",
        )
    return out / CITY


def _people(data: Path, limit: int) -> list[tuple[str, str]]:
    import pyarrow.parquet as pq

    insured = {
        r["id_number"]
        for r in pq.read_table(data / "medical_security" / "insured_persons.parquet").to_pylist()
        if r["status"] == "参保缴费"
    }
    found = []
    for r in pq.read_table(data / "public_security" / "residents.parquet").to_pylist():
        if r.get("phone") and r["id_number"] in insured:
            found.append((r["phone"], r["id_number"]))
    return found[:limit]


def _database() -> str | None:
    """With CITYBRAIN_BENCH_MEDINS_STORE=postgresql, a fresh PostgreSQL database for the node.

    Several workers writing one SQLite file wait on its lock; PostgreSQL takes concurrent
    commits. Set CITYBRAIN_DATABASE_URL to choose the store yourself.
    """
    if os.environ.get("CITYBRAIN_DATABASE_URL") or STORE != "postgresql":
        return None
    try:
        import psycopg

        name = f"citybrain_bench_medins_{os.getpid()}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception:  # no PostgreSQL here: SQLite in the data folder
        return None
    os.environ["CITYBRAIN_DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    return name


def _drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    """Run the service-level and HTTP measurements and report them."""
    from _harness import report
    from citybrain.app import prepare_node
    from citybrain.core.config import load_settings
    from citybrain.governance.identity.tokens import issue_token
    from citybrain.governance.principal import Principal, Role
    from citybrain.scenes.medical_insurance import terminals, voucher, voucher_token
    from citybrain.scenes.medical_insurance.service import scene_for

    root = Path(tempfile.mkdtemp(prefix="bench-medins-"))
    database = _database()
    try:
        data = _prepare(root)
        settings = load_settings(data_dir=data, code=CITY, level="city")
        engine = prepare_node(settings)
        scene = scene_for(engine=engine, data_dir=data, code=CITY)
        admin = Principal(subject="bench", org="bureau", role=Role.bureau_admin, issuer=CITY)
        institutions = sorted(
            (
                i
                for i in __import__("pyarrow.parquet")
                .parquet.read_table(data / "medical_security" / "designated_institutions.parquet")
                .to_pylist()
            ),
            key=lambda i: i["institution_id"],
        )
        hospital = next(i["institution_id"] for i in institutions if i["kind"] == "hospital")
        terminals.add_terminal(scene, actor=admin, institution_id=hospital)
        citizens = []
        start = time.perf_counter()
        for phone, id_number in _people(data, PEOPLE):
            who = Principal(
                subject=f"citizen:{phone}",
                org="citizens",
                role=Role.citizen,
                issuer=CITY,
                phone=phone,
            )
            voucher.activate(scene, principal=who, id_number=id_number, device_id=f"dev-{phone}")
            citizens.append(who)
        activation_s = time.perf_counter() - start

        # --- issue and verify, in this process
        def issue(n: int, ttl: int = 300) -> list[str]:
            return [
                voucher.issue_token(
                    scene,
                    principal=citizens[i % len(citizens)],
                    device_id=f"dev-{citizens[i % len(citizens)].phone}",
                    ttl=ttl,
                ).token
                for i in range(n)
            ]

        t = time.perf_counter()
        tokens = issue(TOKENS)
        issue_rate = TOKENS / (time.perf_counter() - t)
        raw_sign_key = scene.key
        t = time.perf_counter()
        for i in range(TOKENS):
            raw_sign_key.sign(tokens[i].encode())
        raw_sign_rate = TOKENS / (time.perf_counter() - t)

        cpu_rates: list[float] = []

        def rate_of(fn: Any, items: list[str]) -> float:
            t0, c0 = time.perf_counter(), time.process_time()
            for item in items:
                fn(item)
            cpu_rates.append(len(items) / max(1e-9, time.process_time() - c0))
            return len(items) / (time.perf_counter() - t0)

        verify_rates, claim_rates, raw_rates, openssl_rates = [], [], [], []
        public = scene.public
        # the bare verification of the library the check uses (libsodium), and OpenSSL's
        verifier = voucher_token._verifier(public)
        raw_cpu: list[float] = []
        verify_cpu: list[float] = []
        for _ in range(3):
            verify_rates.append(rate_of(lambda tok: voucher.check(scene, tok), tokens))
            verify_cpu.append(cpu_rates[-1])
            pieces = [tok.rpartition(".") for tok in tokens]
            sigs = [(voucher_token._unb64(p[2]), p[0].encode()) for p in pieces]
            t0, c0 = time.perf_counter(), time.process_time()
            for sig, msg in sigs:
                verifier.verify(msg, sig)
            raw_rates.append(len(sigs) / (time.perf_counter() - t0))
            raw_cpu.append(len(sigs) / max(1e-9, time.process_time() - c0))
            t0 = time.perf_counter()
            for sig, msg in sigs:
                public.verify(sig, msg)
            openssl_rates.append(len(sigs) / (time.perf_counter() - t0))
        fresh = issue(TOKENS)
        claim_rates.append(
            rate_of(lambda tok: voucher.claim(scene, voucher.check(scene, tok)), fresh)
        )

        # durable scans from 8 threads: check, claim, use row committed (group commit)
        durable = issue(4000)
        chunks = [durable[k::8] for k in range(8)]
        terminal = Principal(
            subject="bench", org=terminals.org_of(hospital), role=Role.service, issuer=CITY
        )

        def scans(part: list[str]) -> None:
            for tok in part:
                voucher.scan(
                    scene,
                    principal=terminal,
                    institution_id=hospital,
                    token=tok,
                    transaction=voucher.Transaction.outpatient,
                )

        t = time.perf_counter()
        threads = [threading.Thread(target=scans, args=(c,)) for c in chunks]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        durable_rate = len(durable) / (time.perf_counter() - t)
        engine.dispose()

        # --- over HTTP
        port = _free_port()
        node = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "citybrain",
                "serve",
                "--level",
                "city",
                "--code",
                CITY,
                "--data",
                str(data),
                "--port",
                str(port),
                "--workers",
                str(WORKERS),
            ],
            stdout=subprocess.DEVNULL,
            stderr=None if os.environ.get("CITYBRAIN_BENCH_NODE_LOG") else subprocess.DEVNULL,
            # the hourly indicator schedule (a child process computing every tree, which also
            # writes to the store) would start a minute in, in the middle of the runs
            env={
                **os.environ,
                "CITYBRAIN_LOG_LEVEL": "WARNING",
                "CITYBRAIN_INDICATOR_SCHEDULE_SECONDS": "0",
            },
        )
        try:
            import httpx

            for _ in range(300):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            bearer = issue_token(
                data_dir=data,
                issuer=CITY,
                subject="service:bench",
                org=terminals.org_of(hospital),
                role="service",
                ttl=3600,
            )
            count = int(RATE * SECONDS)
            reqs_health = [
                {"method": "GET", "path": "/health", "token": bearer, "body": ""}
            ] * count
            http_scan_tokens = issue(count)
            reqs_scan = [
                {
                    "method": "POST",
                    "path": "/api/medins/vouchers/scan",
                    "token": bearer,
                    "body": json.dumps({"token": tok, "transaction": "outpatient"}),
                }
                for tok in http_scan_tokens
            ]
            now = datetime.now(CST).replace(tzinfo=None, microsecond=0) - timedelta(minutes=40)
            day = now.date().isoformat()

            def settle_requests(prefix: str) -> list[dict[str, Any]]:
                # each with a fresh token (issued now: valid for the run) and its own txn id
                return [
                    {
                        "method": "POST",
                        "path": "/api/medins/settlements",
                        "token": bearer,
                        "body": json.dumps(
                            {
                                "txn_id": f"{prefix}-{i:07d}",
                                "voucher": tok,
                                "kind": "outpatient",
                                "diagnosis": "J06.9",
                                "start": now.isoformat(),
                                "end": (now + timedelta(minutes=30)).isoformat(),
                                "items": [
                                    {
                                        "code": "FW00000",
                                        "kind": "service",
                                        "quantity": 1,
                                        "unit_price": 10.0,
                                        "amount": 10.0,
                                        "service_date": day,
                                    },
                                    {
                                        "code": "XD00001",
                                        "kind": "drug",
                                        "quantity": 14,
                                        "unit_price": 0.86,
                                        "amount": 12.04,
                                        "service_date": day,
                                    },
                                ],
                            }
                        ),
                    }
                    for i, tok in enumerate(issue(count))
                ]

            def run_load(reqs: list[dict[str, Any]], rate: float) -> dict[str, Any]:
                file = root / "requests.jsonl"
                file.write_text("\n".join(json.dumps(r) for r in reqs))
                before = _cpu_seconds(node.pid)
                loop_before = _loop_cpu_seconds(node.pid)
                out = subprocess.check_output(
                    [
                        sys.executable,
                        __file__,
                        "--load",
                        "127.0.0.1",
                        str(port),
                        str(rate),
                        str(file),
                    ]
                )
                result = dict(json.loads(out))
                # CPU of the node per request holds still when other work takes the cores
                used = _cpu_seconds(node.pid) - before
                result["cpu_ms"] = round(used * 1000 / len(reqs), 3)
                loop_used = _loop_cpu_seconds(node.pid) - loop_before
                result["loop_cpu_ms"] = round(loop_used * 1000 / len(reqs), 3)
                return result

            warm = [{"method": "GET", "path": "/health", "token": bearer, "body": ""}] * 500
            run_load(warm, 500)
            skip = {
                "per_s": 0,
                "p50_ms": 0,
                "p99_ms": 0,
                "status": {},
                "cpu_ms": 0,
                "loop_cpu_ms": 0,
            }
            health = run_load(reqs_health, RATE) if "health" in PHASES else skip
            # as fast as the node answers
            scan_http = run_load(reqs_scan, 100_000) if "scan" in PHASES else skip
            # the first settlements of the node read each person's voucher and history from
            # the store; the second run finds them in memory, as a busy node does
            settle = run_load(settle_requests("B"), RATE) if "settle" in PHASES else skip
            again = run_load(settle_requests("W"), RATE) if "settle" in PHASES else skip
        finally:
            node.terminate()
            node.wait(timeout=30)
        figures = {
            "node_workers": WORKERS,
            "store": "postgresql" if database is not None else "sqlite or as configured",
            "vouchers_activated": len(citizens),
            "activation_ms_each": round(activation_s / max(1, len(citizens)) * 1000, 1),
            "tokens_issued_per_s": round(issue_rate),
            "verifications_per_s": round(statistics.median(verify_rates)),
            "verifications_per_cpu_s": round(statistics.median(verify_cpu)),
            "verifications_with_single_use_per_s": round(statistics.median(claim_rates)),
            "durable_scans_per_s_8_threads": round(durable_rate),
            "http_scans_per_s": scan_http["per_s"],
            "http_scan_p50_ms": scan_http["p50_ms"],
            "http_scan_status": scan_http["status"],
            "http_scan_node_cpu_ms": scan_http["cpu_ms"],
            "settlements_rate_asked": RATE,
            "settlements_per_s": settle["per_s"],
            "settlement_p50_ms": settle["p50_ms"],
            "settlement_p99_ms": settle["p99_ms"],
            "settlement_status": settle["status"],
            "settlement_node_cpu_ms": settle["cpu_ms"],
            "settlement_loop_cpu_ms": settle["loop_cpu_ms"],
            "settlements_per_node_cpu_s": round(1000 / max(settle["cpu_ms"], 0.001)),
            "settlements_warm_per_s": again["per_s"],
            "settlement_warm_p50_ms": again["p50_ms"],
            "settlement_warm_p99_ms": again["p99_ms"],
            "settlement_warm_status": again["status"],
            "settlement_warm_node_cpu_ms": again["cpu_ms"],
            "settlement_warm_loop_cpu_ms": again["loop_cpu_ms"],
        }
        reference = {
            "raw_ed25519_verifications_per_s": round(statistics.median(raw_rates)),
            "raw_ed25519_verifications_per_cpu_s": round(statistics.median(raw_cpu)),
            "raw_ed25519_openssl_verifications_per_s": round(statistics.median(openssl_rates)),
            "raw_ed25519_signatures_per_s": round(raw_sign_rate),
            "health_per_s": health["per_s"],
            "health_p50_ms": health["p50_ms"],
            "health_p99_ms": health["p99_ms"],
            "health_node_cpu_ms": health["cpu_ms"],
            "health_loop_cpu_ms": health["loop_cpu_ms"],
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
        ratio = round(statistics.median(verify_rates) / statistics.median(raw_rates), 3)
        report("medins_service", figures, reference, ratio)
        print(
            f"  settlement p99 / health p99 at {RATE:g}/s: "
            f"{settle['p99_ms'] / max(health['p99_ms'], 0.01):.2f}"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if database is not None:
            _drop_database(database)
    _ = UTC


if __name__ == "__main__":
    if sys.argv[1:2] == ["--load"]:
        load_main(sys.argv[2:])
    else:
        main()
