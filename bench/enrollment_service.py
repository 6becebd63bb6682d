"""Enrollment service: 2.6 million eligibility checks through the gate, and the parent's submit.

Part 1, eligibility. A node holds the departmental tables a province-wide season asks about:
residents (a child and a parent for each of N = 2.6 million applications, 8% with their
household registration elsewhere), standard addresses, the property register (72% of local
and 25% of migrant parents own a home, four in five of them in their own zone), social
insurance (two parents in three, 0-120 months) and residence permits (the migrant parents).
The tables are generated here with numpy and written straight as Delta tables (the hub's
loader is measured elsewhere); the applications are generated in memory as submissions
would make them (child, parent, county, address basis, zone: 136 real counties, 15 zones of 4
communities each). Timed: `eligibility.verify_table` over all N in chunks of CHUNK, under
the Education Bureau's verification grants (checked per chunk), five questions per
application, then the classes; the audit records are written in the timed loop: one per
question per chunk (the grant's use) and one per application (its questions, answers and
grants), by the audit log's batch append (one fsync per chunk). The audit chain is
verified afterwards (its time reported apart). Reference, same run: the same five joins in
plain DuckDB over the same tables, no grant, no audit, one pass.

Part 2, submit. Jinan at SCALE is served by `citybrain serve`; its season is opened with the
demo's hook (grants approved as owners and bureau). A separate load process keeps 200
parents connected; each parent, after a think time drawn from THINK seconds, submits its
child's application once (POST /api/enrollment/applications with the parent's citizen
token, issued with the node key). p50/p95 of the submit call are measured in the load
process. Reference: the same 200 parents calling GET /api/enrollment/season (the scene's
smallest authenticated read) with the same pattern, in the same run.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import read_status, report  # noqa: E402

N = int(os.environ.get("CITYBRAIN_BENCH_ENROLLMENT_APPS", "2600000"))
CHUNK = int(os.environ.get("CITYBRAIN_BENCH_ENROLLMENT_CHUNK", "650000"))
SCALE = os.environ.get("CITYBRAIN_BENCH_ENROLLMENT_SCALE", "0.01")
PARENTS = int(os.environ.get("CITYBRAIN_BENCH_ENROLLMENT_PARENTS", "200"))
THINK = (20.0, 40.0)
LOAD_SECONDS = float(os.environ.get("CITYBRAIN_BENCH_ENROLLMENT_SECONDS", "60"))
CITY = "370100"
CRITERIA = ["hukou_in_zone", "hukou_in_county", "property_in_zone", "lives_in_zone"]
CRITERIA += ["residence_permit", "social_insurance"]


# --------------------------------------------------------------------------------------------
# part 1: eligibility


def _strings(
    prefix: str, counties: np.ndarray[Any, Any], numbers: np.ndarray[Any, Any]
) -> pa.Array:
    """county + prefix + zero-padded number, as an Arrow string array (vectorised)."""
    import pyarrow.compute as pc

    num = pc.utf8_lpad(pa.array(numbers.astype(str)), 8, "0")
    joined = pc.binary_join_element_wise(pa.array(counties), pa.scalar(prefix), num, "")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def _generate(counties_all: list[str]) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    i = np.arange(N, dtype=np.int64)
    county = np.asarray(counties_all)[rng.integers(0, len(counties_all), N)]
    zone_no = rng.integers(0, 15, N)
    community_no = zone_no * 4 + rng.integers(0, 4, N)
    community = np.char.add(np.char.add(county, "C"), np.char.zfill(community_no.astype(str), 3))
    zone = np.char.add(np.char.add(county, "Z"), np.char.zfill(zone_no.astype(str), 2))
    migrant = rng.random(N) < 0.08
    child = _strings("2020", county, i)
    parent = _strings("1988", county, i)
    address = _strings("A", county, i)
    hukou = np.where(migrant, "370000", county)
    residents = pa.table(
        {
            "id_number": pa.concat_arrays([child, parent]),
            "household_id": pa.concat_arrays([address, address]),
            "relation_to_head": np.repeat(["子女", "户主"], N),
            "hukou_county": np.concatenate([hukou, hukou]),
            "residence_county": np.concatenate([county, county]),
            "community_code": np.concatenate([community, community]),
            "address_id": pa.concat_arrays([address, address]),
        }
    )
    owns = rng.random(N) < np.where(migrant, 0.25, 0.72)
    in_zone = rng.random(N) < 0.8
    # a home elsewhere: another community of the same county, outside the zone
    elsewhere = np.char.add(
        np.char.add(county, "C"), np.char.zfill(((community_no + 7) % 60).astype(str), 3)
    )
    owner_idx = np.flatnonzero(owns)
    home = np.where(in_zone, community, elsewhere)[owner_idx]
    property_address = _strings("B", county[owner_idx], owner_idx)
    addresses = pa.table(
        {
            "address_id": pa.concat_arrays([address, property_address]),
            "community_code": np.concatenate([community, home]),
        }
    )
    properties = pa.table(
        {
            "owner_id_number": parent.take(pa.array(owner_idx)),
            "address_id": property_address,
            "usage": np.where(rng.random(len(owner_idx)) < 0.95, "住宅", "商业"),
        }
    )
    insured = np.flatnonzero(rng.random(N) < 0.66)
    insurance = pa.table(
        {
            "id_number": parent.take(pa.array(insured)),
            "county_code": county[insured],
            "months_contributed": rng.integers(0, 121, len(insured)).astype(np.int64),
        }
    )
    permit_idx = np.flatnonzero(migrant)
    valid = np.datetime64("2026-01-01") + rng.integers(0, 1000, len(permit_idx)).astype(
        "timedelta64[D]"
    )
    permits = pa.table(
        {
            "id_number": parent.take(pa.array(permit_idx)),
            "residence_county": county[permit_idx],
            "valid_until": pa.array(valid.astype("datetime64[D]"), pa.date32()),
        }
    )
    basis_hukou = ~migrant & (rng.random(N) < 0.9)
    facts = pa.table(
        {
            "application": _strings("APP", county, i),
            "child_id": child,
            "parent_id": parent,
            "county": county,
            "address_id": pa.array(np.where(basis_hukou, np.asarray(address), None), pa.string()),
            "zone_id": zone,
            "lives_in_zone": np.ones(N, dtype=bool),
        }
    )
    zones = sorted({(z, c) for z, c in zip(zone[:200_000], community[:200_000], strict=True)})
    all_zones = [
        (f"{c}Z{z:02d}", f"{c}C{z * 4 + k:03d}")
        for c in counties_all
        for z in range(15)
        for k in range(4)
    ]
    assert set(zones) <= set(all_zones)
    zone_table = pa.table(
        {"zone_id": [z for z, _ in all_zones], "community_code": [c for _, c in all_zones]}
    )
    return {
        "public_security/residents": residents,
        "public_security/addresses": addresses,
        "natural_resources/property_registry": properties,
        "human_resources/social_insurance": insurance,
        "public_security/residence_permits": permits,
        "facts": facts,
        "zones": zone_table,
    }


def _write_tables(engine: Any, data: Path, generated: dict[str, Any]) -> None:
    from deltalake import write_deltalake

    from citybrain.hub.tables import service as tables
    from citybrain.hub.tables.models import TableSpec

    types = {pa.string(): "string", pa.int64(): "int64", pa.date32(): "date"}
    for dataset, table in generated.items():
        if "/" not in dataset:
            continue
        department, name = dataset.split("/")
        table = table.cast(
            pa.schema(
                [
                    pa.field(f.name, pa.string() if pa.types.is_string(f.type) else f.type)
                    for f in table.schema
                ]
            )
        )
        spec = TableSpec.model_validate(
            {
                "department": department,
                "name": name,
                "primary_key": [table.column_names[0]],
                "columns": [
                    {"name": f.name, "type": types.get(f.type, "string")} for f in table.schema
                ],
            }
        )
        tables.register_table(engine=engine, data_dir=data, spec=spec)
        write_deltalake(str(tables.table_path(data, department, name)), table, mode="append")


def _raw_reference(generated: dict[str, Any], terms: Any) -> float:
    """The same five questions as plain DuckDB joins over the same tables: no gate, no audit."""
    import duckdb

    con = duckdb.connect()
    for dataset, table in generated.items():
        con.register(dataset.replace("/", "__"), table)
    f = generated["facts"]
    con.register("f", f.append_column("i", pa.array(np.arange(f.num_rows, dtype=np.int64))))
    queries = [
        "select distinct f.i from f join public_security__residents r on r.id_number = f.child_id"
        " and r.address_id = f.address_id where r.hukou_county = r.residence_county",
        "select distinct f.i from f join public_security__residents r"
        " on r.id_number = f.child_id and r.hukou_county = f.county",
        "select distinct f.i from f join natural_resources__property_registry p"
        " on p.owner_id_number = f.parent_id join public_security__addresses a"
        " on a.address_id = p.address_id join zones zc on zc.zone_id = f.zone_id"
        " and zc.community_code = a.community_code where p.usage in ('住宅', '商住')",
        "select distinct f.i from f join human_resources__social_insurance s"
        f" on s.id_number = f.parent_id where s.months_contributed >= {terms.insurance_months}",
        "select distinct f.i from f join public_security__residence_permits p"
        f" on p.id_number = f.parent_id where p.valid_until >= DATE '{terms.on_date}'",
    ]
    start = time.perf_counter()
    for q in queries:
        con.execute(q).fetchnumpy()
    seconds = time.perf_counter() - start
    con.close()
    return seconds


def part_eligibility() -> dict[str, Any]:
    """Time 2.6 million eligibility checks through the gate with their audit records."""
    from citybrain.core.db import create_engine_for, upgrade
    from citybrain.geo import service as geo
    from citybrain.governance.audit import service as audit
    from citybrain.governance.identity import service as identity
    from citybrain.scenes.enrollment import eligibility, grants, sources
    from citybrain.scenes.enrollment.household import education

    counties = [u.code for u in geo.list_units("county")]
    terms = eligibility.Terms(on_date=date(2027, 8, 31), insurance_months=12)
    with tempfile.TemporaryDirectory(dir=os.environ.get("CITYBRAIN_BENCH_DIR")) as tmp:
        data = Path(tmp)
        engine = create_engine_for(f"sqlite:///{data / 'citybrain.db'}")
        upgrade(engine)
        identity.seed_default_orgs(engine=engine)
        t0 = time.perf_counter()
        generated = _generate(counties)
        _write_tables(engine, data, generated)
        setup_s = time.perf_counter() - t0
        # the verification requests (the prefill grant is for submissions, not measured here)
        requests = grants.request_grants(
            engine=engine, data_dir=data, code="370000", counties=counties, prefill=False
        )
        grants.approve_for_demo(engine=engine, data_dir=data, code="370000", requests=requests)
        principal = education("370000")
        facts, zones = generated["facts"], generated["zones"]
        audit_before = _audit_lines(data)
        start = time.perf_counter()
        classes = np.full(N, -1, dtype=np.int8)
        order = [
            ["hukou_in_zone", "property_in_zone"],
            ["hukou_in_zone", "lives_in_zone"],
            ["property_in_zone"],
            ["lives_in_zone", "residence_permit", "social_insurance"],
        ]
        passed = dict.fromkeys(CRITERIA, 0)
        for lo in range(0, N, CHUNK):
            chunk = facts.slice(lo, CHUNK)
            answers = eligibility.verify_table(
                engine=engine,
                data_dir=data,
                principal=principal,
                facts=chunk,
                zones=zones,
                criteria=CRITERIA,
                terms=terms,
                season="bench",
            )
            got = classes[lo : lo + chunk.num_rows]
            for index, needed in reversed(list(enumerate(order))):
                ok = np.logical_and.reduce([answers[c] for c in needed])
                got[ok] = index
            for c in CRITERIA:
                passed[c] += int(answers[c].sum())
        seconds = time.perf_counter() - start
        written = _audit_lines(data) - audit_before
        log_bytes = (data / "audit" / "log.jsonl").stat().st_size
        verified = audit.verify(data_dir=data)
        reference = _raw_reference(generated, terms)
        sources.forget(data)
        engine.dispose()
    return {
        "applications": N,
        "chunk": CHUNK,
        "seconds": round(seconds, 2),
        "applications_per_s": round(N / seconds),
        "audit_records_written": written,
        "audit_records_per_application": round((written - 5 * -(-N // CHUNK)) / N, 3),
        "audit_log_bytes": log_bytes,
        "audit_chain_ok": bool(verified.ok),
        "audit_verify_s": verified.seconds,
        "class_counts": {
            str(k): int(v) for k, v in zip(*np.unique(classes, return_counts=True), strict=True)
        },
        "pass_rates": {c: round(v / N, 3) for c, v in passed.items()},
        "tables_generated_and_written_s": round(setup_s, 1),
        "raw_duckdb_same_joins_s": round(reference, 2),
        "target_s": 300,
    }


def _audit_lines(data: Path) -> int:
    path = data / "audit" / "log.jsonl"
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


# --------------------------------------------------------------------------------------------
# part 2: the submit call under 200 parents


async def _parent(
    host: str,
    port: int,
    queue: asyncio.Queue[tuple[str, bytes]],
    out: list[tuple[int, float]],
    think: tuple[float, float],
    stop: float,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    while time.monotonic() < stop:
        await asyncio.sleep(float(rng.uniform(*think)))
        try:
            _name, request = queue.get_nowait()
        except asyncio.QueueEmpty:
            return
        # a phone opens its own connection after the parent's pause (idle ones are closed)
        reader, writer = await asyncio.open_connection(host, port)
        try:
            start = time.perf_counter()
            writer.write(request)
            code = await read_status(reader)
            out.append((int(code) if code.isdigit() else 0, time.perf_counter() - start))
        finally:
            writer.close()


def load_main(argv: list[str]) -> None:
    """The load process: `load HOST PORT SECONDS PARENTS FILE`; prints latencies as JSON."""
    host, port, seconds, parents, path = (
        argv[0],
        int(argv[1]),
        float(argv[2]),
        int(argv[3]),
        argv[4],
    )
    work = json.loads(Path(path).read_text())

    def request(item: dict[str, str]) -> bytes:
        if item["method"] == "GET":
            return (
                f"GET {item['path']} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: Bearer {item['token']}\r\n\r\n"
            ).encode()
        body = item["body"].encode()
        return (
            f"POST {item['path']} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {item['token']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def run() -> list[tuple[int, float]]:
        queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        for item in work:
            queue.put_nowait((item["path"], request(item)))
        out: list[tuple[int, float]] = []
        stop = time.monotonic() + seconds
        await asyncio.gather(
            *(_parent(host, port, queue, out, THINK, stop, k) for k in range(parents))
        )
        return out

    results = asyncio.run(run())
    print(json.dumps({"status": [s for s, _ in results], "seconds": [t for _, t in results]}))


def _load(url_port: int, work: list[dict[str, str]], tmp: Path, name: str) -> dict[str, Any]:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(work))
    done = subprocess.run(
        [sys.executable, __file__, "load", "127.0.0.1", str(url_port), str(LOAD_SECONDS)]
        + [str(PARENTS), str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the load process failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def part_submit() -> dict[str, Any]:
    """Serve Jinan, open its season, and time the submit call under 200 parents."""
    import duckdb
    import httpx

    from citybrain.governance.identity.tokens import issue_token
    from citybrain.scenes.enrollment import demo

    with tempfile.TemporaryDirectory(dir=os.environ.get("CITYBRAIN_BENCH_DIR")) as tmp_name:
        tmp = Path(tmp_name)
        subprocess.run(
            [sys.executable, "-m", "citybrain", "synth", "--scale", SCALE, "--seed", "3"]
            + ["--out", str(tmp / "s"), "--cities", CITY],
            check=True,
            capture_output=True,
        )
        data = tmp / "s" / CITY
        demo.prepare_demo_season(data_dir=data, code=CITY)
        residents = data / "public_security" / "residents.parquet"
        families = duckdb.sql(
            f"""
            select distinct on (c.id_number) p.phone, c.id_number
            from '{residents}' c join '{residents}' p using (household_id)
            where c.relation_to_head = '子女' and p.relation_to_head in ('户主', '配偶')
              and p.phone is not null
              and (c.birth_date between DATE '2020-09-01' and DATE '2021-08-31'
                   or c.birth_date between DATE '2014-09-01' and DATE '2015-08-31')
            """
        ).fetchall()
        port = _free_port()
        log = (tmp / "serve.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "citybrain", "serve", "--data", str(data), "--port", str(port)]
            + ["--level", "city", "--code", CITY],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)

            def token(phone: str) -> str:
                return issue_token(
                    data_dir=data,
                    issuer=CITY,
                    subject=f"citizen:{phone}",
                    org="citizens",
                    role="citizen",
                    ttl=3600,
                    phone=phone,
                )

            tokens = {phone: token(phone) for phone, _ in families}
            # one warm-up submission outside the measurement (first snapshots, first plans)
            warm_phone, warm_child = families[0]
            httpx.post(
                f"http://127.0.0.1:{port}/api/enrollment/applications",
                json={"child_id_number": warm_child},
                headers={"Authorization": f"Bearer {tokens[warm_phone]}"},
                timeout=60,
            )
            submits = [
                {
                    "method": "POST",
                    "path": "/api/enrollment/applications",
                    "token": tokens[phone],
                    "body": json.dumps({"child_id_number": child}),
                }
                for phone, child in families[1:]
            ]
            reads = [
                {"method": "GET", "path": "/api/enrollment/season", "token": tokens[phone]}
                for phone, _ in families[1:]
            ]
            reference = _load(port, reads, tmp, "reads")
            measured = _load(port, submits, tmp, "submits")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    ok = [t for s, t in zip(measured["status"], measured["seconds"], strict=True) if s == 201]
    statuses: dict[str, int] = {}
    for s in measured["status"]:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    ref_ok = [t for s, t in zip(reference["status"], reference["seconds"], strict=True) if s == 200]
    return {
        "scale": SCALE,
        "families_with_an_entry_age_child": len(families),
        "parents_connected": PARENTS,
        "think_time_s": list(THINK),
        "submits": len(measured["status"]),
        "statuses": statuses,
        "submit_p50_ms": round(1000 * statistics.median(ok), 1) if ok else None,
        "submit_p95_ms": round(1000 * _pct(ok, 0.95), 1) if ok else None,
        "submits_per_s_offered": round(PARENTS / statistics.mean(THINK), 1),
        "reference_season_read_p50_ms": round(1000 * statistics.median(ref_ok), 1)
        if ref_ok
        else None,
        "reference_season_read_p95_ms": round(1000 * _pct(ref_ok, 0.95), 1) if ref_ok else None,
        "target_p95_ms": 100,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    """Run both parts and report them."""
    parts = os.environ.get("CITYBRAIN_BENCH_ENROLLMENT_PARTS", "eligibility,submit").split(",")
    figures: dict[str, Any] = {}
    reference: dict[str, Any] = {}
    ratio = None
    if "eligibility" in parts:
        eligible = part_eligibility()
        figures["eligibility"] = eligible
        reference["eligibility_raw_duckdb_s"] = eligible["raw_duckdb_same_joins_s"]
        ratio = round(eligible["seconds"] / eligible["raw_duckdb_same_joins_s"], 2)
    if "submit" in parts:
        submit = part_submit()
        figures["submit"] = submit
        reference["submit_reference_read_p95_ms"] = submit["reference_season_read_p95_ms"]
        if ratio is None and submit["submit_p95_ms"] and submit["reference_season_read_p95_ms"]:
            ratio = round(submit["submit_p95_ms"] / submit["reference_season_read_p95_ms"], 2)
    report("enrollment_service", figures, reference, ratio)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        load_main(sys.argv[2:])
    else:
        main()
