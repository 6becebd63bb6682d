"""Audit log: append rate (alone and beside readers) and `verify` over 10 million records.

Sizes come from CITYBRAIN_BENCH_AUDIT_RECORDS (default 10,000,000, the size the target is
stated at: verify in under 60 s on a 2-core machine) and CITYBRAIN_BENCH_AUDIT_APPENDS
(default 2,000 appends per measurement). Each figure has its reference measured in the same
run: raw appends of the same lines to a file with an fsync per line, and reading plus
orjson-parsing the same 10M-line log without hashing.

The big log is generated directly (canonical record bytes from templates, the same chained
SHA-256, a signed checkpoint every 1,000 records), not through append, which would need an
fsync per record.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report  # noqa: E402
from citybrain.governance.audit import service  # noqa: E402
from citybrain.governance.keys import node_key  # noqa: E402
from citybrain.governance.principal import Principal, Role  # noqa: E402

RECORDS = int(os.environ.get("CITYBRAIN_BENCH_AUDIT_RECORDS", "10000000"))
APPENDS = int(os.environ.get("CITYBRAIN_BENCH_AUDIT_APPENDS", "2000"))
STEWARD = Principal(subject="u-1024", org="education", role=Role.steward, issuer="370000")


def _append_some(data: Path, n: int) -> None:
    for i in range(n):
        service.append(
            data_dir=data,
            principal=STEWARD,
            action="tables.read",
            resource="public_security/residents",
            result="ok",
            grant_id="g-0001",
            purpose="school enrollment check",
            rows=i % 100,
            detail={"fields": ["person_id", "name"]},
        )


def bench_append(root: Path) -> dict[str, float]:
    """Appends per second from one thread, from 4 threads beside 2 readers, and the raw file."""
    alone = root / "alone"
    alone.mkdir()
    _append_some(alone, 20)  # the node key and the file exist before timing
    start = time.perf_counter()
    _append_some(alone, APPENDS)
    one = APPENDS / (time.perf_counter() - start)

    threaded = root / "threaded"
    threaded.mkdir()
    _append_some(threaded, 20)
    per_thread = APPENDS // 4
    writers = [threading.Thread(target=_append_some, args=(threaded, per_thread)) for _ in range(4)]
    start = time.perf_counter()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    four_alone = per_thread * 4 / (time.perf_counter() - start)

    busy = root / "busy"
    busy.mkdir()
    _append_some(busy, 1000)
    stop = threading.Event()
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            service.query(data_dir=busy, action="tables.*", org="education", limit=100)
            reads[0] += 1

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=_append_some, args=(busy, per_thread)) for _ in range(4)]
    for t in readers:
        t.start()
    start = time.perf_counter()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    four = per_thread * 4 / (time.perf_counter() - start)
    stop.set()
    for t in readers:
        t.join()
    assert service.verify(data_dir=busy).ok

    # reference: the same lines, written and fsync'd one by one, no lock, no chain
    lines = service.log_path(alone).read_bytes().splitlines(keepends=True)[:APPENDS]
    with open(root / "raw.jsonl", "ab") as raw:
        start = time.perf_counter()
        for line in lines:
            raw.write(line)
            raw.flush()
            os.fsync(raw.fileno())
        reference = len(lines) / (time.perf_counter() - start)
    return {"one": one, "four_alone": four_alone, "four": four, "reads": reads[0], "raw": reference}


def generate(data: Path, n: int) -> float:
    """Write an n-record chained log and its signed checkpoints directly; return the seconds."""
    start = time.perf_counter()
    key = node_key(data)
    fingerprint = service.key_fingerprint(key.public_key())
    path = service.log_path(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    resources = [f"public_security/residents_{c}".encode() for c in range(16)]
    actors = [f"education/steward/u-{u:04d}".encode() for u in range(64)]
    prev = service.GENESIS.encode()
    offset = 0
    checkpoints: list[bytes] = []
    checked = False
    with open(path, "wb", buffering=16 * 1024 * 1024) as out:
        for seq in range(1, n + 1):
            at = b"2026-12-01T%02d:%02d:%02d.%06dZ" % (
                seq // 3_600_000_000 % 24,
                seq // 60_000_000 % 60,
                seq // 1_000_000 % 60,
                seq % 1_000_000,
            )
            head = (
                b'{"action":"tables.read","actor":"'
                + actors[seq % 64]
                + b'","at":"'
                + at
                + b'","detail":{"fields":["person_id","name"]},"grant":"g-0001"'
            )
            tail = (
                b',"org":"education","prev":"'
                + prev
                + b'","purpose":"school enrollment check","resource":"'
                + resources[seq % 16]
                + b'","result":"ok","role":"steward","rows":%d,"seq":%d}' % (seq % 100, seq)
            )
            digest = hashlib.sha256(head + tail).hexdigest().encode()
            line = head + b',"hash":"' + digest + b'"' + tail + b"\n"
            if not checked:
                # the template is the canonical form append writes
                assert service.canonical(orjson.loads(line)) + b"\n" == line
                assert service.record_hash(orjson.loads(line)) == digest.decode()
                checked = True
            out.write(line)
            offset += len(line)
            prev = digest
            if seq % 1000 == 0 or seq == n:
                text = digest.decode()
                signature = base64.b64encode(key.sign(f"{seq}:{text}".encode())).decode()
                checkpoints.append(
                    orjson.dumps(
                        {
                            "seq": seq,
                            "hash": text,
                            "at": "2026-12-01T00:00:00.000000Z",
                            "offset": offset,
                            "key": fingerprint,
                            "signature": signature,
                        }
                    )
                )
    service.checkpoints_path(data).write_bytes(b"\n".join(checkpoints) + b"\n")
    return time.perf_counter() - start


def read_and_parse(path: Path) -> float:
    """Reference: read the log in big chunks and orjson-parse every line, no hashing."""
    start = time.perf_counter()
    loads = orjson.loads
    count = 0
    with open(path, "rb") as handle:
        rest = b""
        while block := handle.read(32 * 1024 * 1024):
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            for line in lines:
                loads(line)
            count += len(lines)
    assert count == RECORDS
    return time.perf_counter() - start


def main() -> None:
    """Run the append and verify measurements and report them."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("CITYBRAIN_BENCH_TMP")) as tmp:
        root = Path(tmp)
        appends = bench_append(root)
        big = root / "big"
        big.mkdir()
        generated = generate(big, RECORDS)
        size = service.log_path(big).stat().st_size
        reference = read_and_parse(service.log_path(big))
        verified = service.verify(data_dir=big)
        assert verified.ok and verified.records == RECORDS, verified
    report(
        "audit",
        {
            "appends_per_measurement": APPENDS,
            "append_per_s_1_thread": round(appends["one"]),
            "append_per_s_4_threads": round(appends["four_alone"]),
            "append_per_s_4_threads_beside_2_readers": round(appends["four"]),
            "reader_queries_during_appends": appends["reads"],
            "append_1_thread_vs_raw_fsync": round(appends["one"] / appends["raw"], 3),
            "records": RECORDS,
            "log_bytes": size,
            "checkpoints": verified.checkpoints,
            "verify_s": round(verified.seconds, 2),
            "verify_records_per_s": round(RECORDS / verified.seconds),
            "generate_s": round(generated, 2),
            "cpus": os.cpu_count(),
            "target": "verify 10M records in < 60 s on 2 cores",
        },
        {
            "raw_append_fsync_per_line_per_s": round(appends["raw"]),
            "read_and_orjson_parse_s": round(reference, 2),
        },
        round(verified.seconds / reference, 3),
    )


if __name__ == "__main__":
    main()
