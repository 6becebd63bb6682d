"""Audit log: append/verify round trip, every kind of tampering, checkpoints, torn tails, query."""

from __future__ import annotations

import base64
import hashlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from citybrain.core.errors import BadInput
from citybrain.governance.audit import service
from citybrain.governance.keys import node_key
from citybrain.governance.principal import Principal, Role

STEWARD = Principal(subject="u1", org="education", role=Role.steward, issuer="370000")


@pytest.fixture(autouse=True)
def _small_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "CHECKPOINT_EVERY", 10)


def _fill(data_dir: Path, n: int = 25) -> list[dict[str, object]]:
    return [
        service.append(
            data_dir=data_dir,
            principal=STEWARD if i % 2 else None,
            action="tables.read" if i % 3 else "grants.approve",
            resource=f"public_security/t{i % 4}",
            result="ok" if i % 5 else "denied",
            grant_id=f"g{i % 3}",
            purpose="enrollment",
            rows=i,
            detail={"i": i, "hash": "not-the-record-hash"},
        )
        for i in range(n)
    ]


def _lines(data_dir: Path) -> list[bytes]:
    return service.log_path(data_dir).read_bytes().splitlines(keepends=True)


def _write(data_dir: Path, lines: list[bytes]) -> None:
    service.log_path(data_dir).write_bytes(b"".join(lines))
    service._heads.clear()


def test_round_trip_and_signed_checkpoints(tmp_path: Path) -> None:
    records = _fill(tmp_path)
    assert [r["seq"] for r in records] == list(range(1, 26))
    assert records[0]["prev"] == service.GENESIS
    assert all(b["prev"] == a["hash"] for a, b in zip(records, records[1:], strict=False))
    report = service.verify(data_dir=tmp_path)
    assert report.ok, report
    assert (report.records, report.checkpoints, report.last_seq) == (25, 2, 25)
    assert report.last_hash == records[-1]["hash"]
    assert report.first_broken_seq is None and report.line is None and report.torn_tail is None
    # each line is the canonical JSON of its record
    lines = _lines(tmp_path)
    assert lines[3] == service.canonical(records[3]) + b"\n"
    cps = [orjson.loads(x) for x in service.checkpoints_path(tmp_path).read_bytes().splitlines()]
    assert [c["seq"] for c in cps] == [10, 20]
    public = node_key(tmp_path).public_key()
    for cp in cps:
        assert cp["hash"] == records[cp["seq"] - 1]["hash"]
        assert cp["key"] == service.key_fingerprint(public)
        public.verify(base64.b64decode(cp["signature"]), f"{cp['seq']}:{cp['hash']}".encode())
        # the offset points just after the record
        assert cp["offset"] == sum(len(x) for x in lines[: cp["seq"]])


def test_checkpoint_on_demand(tmp_path: Path) -> None:
    assert service.checkpoint(data_dir=tmp_path) is None  # empty log
    _fill(tmp_path, 13)
    cp = service.checkpoint(data_dir=tmp_path)
    assert cp is not None and cp.seq == 13
    again = service.checkpoint(data_dir=tmp_path)
    assert again is not None and again.seq == 13
    assert len(service.checkpoints_path(tmp_path).read_bytes().splitlines()) == 2  # 10, 13
    assert service.verify(data_dir=tmp_path).checkpoints == 2


def test_edited_byte_is_found(tmp_path: Path) -> None:
    _fill(tmp_path)
    lines = _lines(tmp_path)
    lines[6] = lines[6].replace(b'"rows":6', b'"rows":7')
    _write(tmp_path, lines)
    report = service.verify(data_dir=tmp_path)
    assert not report.ok
    assert (report.first_broken_seq, report.line) == (7, 7)
    assert "edited" in (report.reason or "")
    assert report.records == 6


def test_edited_record_with_recomputed_hash_breaks_the_link(tmp_path: Path) -> None:
    _fill(tmp_path)
    lines = _lines(tmp_path)
    record = orjson.loads(lines[6])
    record["rows"] = 999
    record["hash"] = service.record_hash(record)
    lines[6] = service.canonical(record) + b"\n"
    _write(tmp_path, lines)
    report = service.verify(data_dir=tmp_path)
    assert (report.ok, report.first_broken_seq, report.line) == (False, 8, 8)
    assert "does not link" in (report.reason or "")


def test_deleted_line_is_found(tmp_path: Path) -> None:
    _fill(tmp_path)
    lines = _lines(tmp_path)
    del lines[6]
    _write(tmp_path, lines)
    report = service.verify(data_dir=tmp_path)
    assert (report.ok, report.first_broken_seq, report.line) == (False, 7, 7)
    assert "missing" in (report.reason or "")


def test_inserted_forged_line_is_found(tmp_path: Path) -> None:
    records = _fill(tmp_path)
    lines = _lines(tmp_path)
    forged = dict(records[6])
    forged.update(actor="bureau/bureau_admin/mallory", rows=0)
    forged["hash"] = service.record_hash(forged)  # a valid-looking hash, linked to record 6
    lines.insert(6, service.canonical(forged) + b"\n")
    _write(tmp_path, lines)
    report = service.verify(data_dir=tmp_path)
    assert (report.ok, report.first_broken_seq, report.line) == (False, 7, 8)
    assert "appears twice" in (report.reason or "")


def test_duplicated_line_is_found(tmp_path: Path) -> None:
    _fill(tmp_path)
    lines = _lines(tmp_path)
    lines.insert(7, lines[6])
    _write(tmp_path, lines)
    report = service.verify(data_dir=tmp_path)
    assert (report.ok, report.first_broken_seq, report.line) == (False, 7, 8)


def test_swapped_lines_are_found(tmp_path: Path) -> None:
    _fill(tmp_path)
    lines = _lines(tmp_path)
    lines[6], lines[7] = lines[7], lines[6]
    _write(tmp_path, lines)
    report = service.verify(data_dir=tmp_path)
    assert (report.ok, report.first_broken_seq, report.line) == (False, 7, 7)
    assert "out of order" in (report.reason or "")


def test_unparsable_line_is_found(tmp_path: Path) -> None:
    _fill(tmp_path)
    lines = _lines(tmp_path)
    lines[4] = b'{"action": oops\n'
    _write(tmp_path, lines)
    report = service.verify(data_dir=tmp_path)
    assert (report.ok, report.first_broken_seq, report.line) == (False, 5, 5)
    assert "not valid JSON" in (report.reason or "")
    lines[4] = b'{"action":"x"}\n'
    _write(tmp_path, lines)
    report = service.verify(data_dir=tmp_path)
    assert (report.first_broken_seq, report.line) == (5, 5)
    assert "not an audit record" in (report.reason or "")


def test_truncated_tail_after_checkpoint_is_found(tmp_path: Path) -> None:
    _fill(tmp_path)
    _write(tmp_path, _lines(tmp_path)[:15])
    report = service.verify(data_dir=tmp_path)
    assert (report.ok, report.first_broken_seq, report.line) == (False, 16, 16)
    assert "ends at seq 15" in (report.reason or "") and "seq 20" in (report.reason or "")
    # the whole log removed, its checkpoints kept
    service.log_path(tmp_path).unlink()
    report = service.verify(data_dir=tmp_path)
    assert (report.ok, report.first_broken_seq, report.line) == (False, 1, 1)


def _rewrite_checkpoint(data_dir: Path, index: int, **changes: object) -> None:
    path = service.checkpoints_path(data_dir)
    cps = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    cps[index].update(changes)
    path.write_bytes(b"".join(orjson.dumps(c) + b"\n" for c in cps))


def test_forged_checkpoint_signature_is_found(tmp_path: Path) -> None:
    _fill(tmp_path)
    other = Ed25519PrivateKey.generate()
    cps = service.checkpoints_path(tmp_path).read_bytes().splitlines()
    seq, digest = orjson.loads(cps[1])["seq"], orjson.loads(cps[1])["hash"]
    forged = base64.b64encode(other.sign(f"{seq}:{digest}".encode())).decode()
    _rewrite_checkpoint(tmp_path, 1, signature=forged)
    report = service.verify(data_dir=tmp_path)
    assert (report.ok, report.first_broken_seq, report.line) == (False, 20, 20)
    assert "invalid signature" in (report.reason or "")
    # a checkpoint claiming another key is refused by fingerprint
    _rewrite_checkpoint(tmp_path, 1, key=service.key_fingerprint(other.public_key()))
    report = service.verify(data_dir=tmp_path)
    assert report.first_broken_seq == 20 and "signed by key" in (report.reason or "")


def test_checkpoint_hash_not_matching_its_record_is_found(tmp_path: Path) -> None:
    _fill(tmp_path)
    wrong = hashlib.sha256(b"other").hexdigest()
    signature = node_key(tmp_path).sign(f"10:{wrong}".encode())
    _rewrite_checkpoint(tmp_path, 0, hash=wrong, signature=base64.b64encode(signature).decode())
    report = service.verify(data_dir=tmp_path)
    assert (report.ok, report.first_broken_seq, report.line) == (False, 10, 10)
    assert "checkpoint says" in (report.reason or "")


def test_damaged_checkpoint_line_is_reported(tmp_path: Path) -> None:
    _fill(tmp_path)
    path = service.checkpoints_path(tmp_path)
    path.write_bytes(b"not json\n" + path.read_bytes())
    report = service.verify(data_dir=tmp_path)
    assert not report.ok and "checkpoints.jsonl line 1" in (report.reason or "")


def test_torn_last_line_is_reported_and_repaired_by_the_next_append(tmp_path: Path) -> None:
    _fill(tmp_path)
    path = service.log_path(tmp_path)
    whole = path.read_bytes()
    fragment = b'{"action":"tables.read","actor":"educ'
    path.write_bytes(whole + fragment)
    report = service.verify(data_dir=tmp_path)
    assert report.ok and report.last_seq == 25
    assert report.torn_tail is not None and "line 26" in report.torn_tail
    record = service.append(
        data_dir=tmp_path, principal=None, action="a", resource="r", result="ok"
    )
    assert record["seq"] == 26
    report = service.verify(data_dir=tmp_path)
    assert report.ok and report.last_seq == 26 and report.torn_tail is None
    torn = [orjson.loads(x) for x in (tmp_path / service.TORN_FILE).read_bytes().splitlines()]
    assert torn[0]["offset"] == len(whole)
    assert base64.b64decode(torn[0]["bytes"]) == fragment


def test_damaged_last_record_refuses_appends(tmp_path: Path) -> None:
    _fill(tmp_path, 3)
    lines = _lines(tmp_path)
    _write(tmp_path, [*lines[:-1], b"garbage\n"])
    from citybrain.core.errors import ServiceUnavailable

    with pytest.raises(ServiceUnavailable, match="damaged"):
        service.append(data_dir=tmp_path, principal=None, action="a", resource="r", result="ok")


def test_missing_folder_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput):
        service.verify(data_dir=tmp_path / "absent")
    with pytest.raises(BadInput):
        service.query(data_dir=tmp_path / "absent")
    empty = service.verify(data_dir=tmp_path)
    assert empty.ok and empty.records == 0


def test_concurrent_threads_keep_one_chain(tmp_path: Path) -> None:
    returned: list[int] = []

    def work() -> None:
        for _ in range(40):
            r = service.append(
                data_dir=tmp_path, principal=None, action="t", resource="r", result="ok"
            )
            returned.append(int(r["seq"]))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(returned) == list(range(1, 321))
    report = service.verify(data_dir=tmp_path)
    assert report.ok and report.records == 320 and report.checkpoints == 32


@pytest.mark.parametrize("where", [0, 1, 37, 60, 99])
def test_breaks_at_range_boundaries_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: int
) -> None:
    """Big logs are checked in byte ranges; a break on either side of a boundary is exact."""
    _fill(tmp_path, 100)
    monkeypatch.setattr(service, "RANGE_BYTES", 1500)  # about 3 records per range
    assert service.verify(data_dir=tmp_path, workers=1).ok
    lines = _lines(tmp_path)
    del lines[where]
    _write(tmp_path, lines)
    report = service.verify(data_dir=tmp_path, workers=1)
    assert (report.first_broken_seq, report.line) == (where + 1, where + 1), report


def test_verify_in_worker_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(tmp_path, 120)
    monkeypatch.setattr(service, "RANGE_BYTES", 4000)
    seen: list[tuple[int, int]] = []
    report = service.verify(data_dir=tmp_path, workers=2, progress=lambda d, t: seen.append((d, t)))
    assert report.ok and report.records == 120 and report.checkpoints == 12
    assert len(seen) > 5 and seen[-1][0] == seen[-1][1]
    lines = _lines(tmp_path)
    lines[90] = lines[90].replace(b'"rows":90', b'"rows":91')
    _write(tmp_path, lines)
    report = service.verify(data_dir=tmp_path, workers=2)
    assert (report.first_broken_seq, report.line) == (91, 91)


def test_query_filters_and_pages(tmp_path: Path) -> None:
    _fill(tmp_path, 40)
    everything = service.query(data_dir=tmp_path, limit=1000).records
    assert [r.seq for r in everything] == list(range(1, 41))
    page = service.query(data_dir=tmp_path, limit=15)
    assert len(page.records) == 15 and page.next_after_seq == 15
    page2 = service.query(data_dir=tmp_path, limit=15, after_seq=page.next_after_seq)
    assert page2.records[0].seq == 16
    last = service.query(data_dir=tmp_path, limit=15, after_seq=30)
    assert [r.seq for r in last.records] == list(range(31, 41)) and last.next_after_seq is None

    def seqs(**kw: object) -> list[int]:
        return [r.seq for r in service.query(data_dir=tmp_path, limit=1000, **kw).records]  # type: ignore[arg-type]

    assert seqs(actor="education/steward/u1") == list(range(2, 41, 2))
    assert seqs(actor="system") == list(range(1, 41, 2))
    assert seqs(org="education") == list(range(2, 41, 2))
    assert seqs(action="grants.approve") == [i + 1 for i in range(40) if i % 3 == 0]
    assert seqs(action="grants.*") == seqs(action="grants.approve")
    assert seqs(resource="public_security/t1") == [i + 1 for i in range(40) if i % 4 == 1]
    assert len(seqs(resource="public_security/*")) == 40
    assert seqs(grant_id="g2") == [i + 1 for i in range(40) if i % 3 == 2]
    assert seqs(result="denied") == [i + 1 for i in range(40) if i % 5 == 0]
    assert seqs(result="denied", org="education") == [i + 1 for i in range(40) if i % 10 == 5]
    assert seqs(actor="nobody") == []
    # the `hash` key inside detail is not the record's hash: the byte test is only a filter
    assert seqs(after_seq=35) == [36, 37, 38, 39, 40]
    middle = everything[20].at
    moment = datetime.fromisoformat(middle)
    assert seqs(since=moment)[0] == 21
    assert seqs(until=moment)[-1] == 20
    assert seqs(since=datetime.now(UTC) + timedelta(hours=1)) == []
    naive = moment.replace(tzinfo=None)
    assert seqs(since=naive)[0] == 21


def test_query_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput):
        service.query(data_dir=tmp_path, limit=0)
    with pytest.raises(BadInput):
        service.query(data_dir=tmp_path, limit=service.MAX_LIMIT + 1)
    with pytest.raises(BadInput):
        service.query(data_dir=tmp_path, after_seq=-1)
    assert service.query(data_dir=tmp_path).records == []  # no log yet


# ---------------------------------------------------------------------------------------------
# batch append


def _entries(n: int, start: int = 0) -> list[dict[str, object]]:
    return [
        service.entry(
            principal=STEWARD,
            action="verify",
            resource="enrollment/test",
            result="allowed",
            grant_id="g1",
            purpose="enrollment",
            rows=0,
            detail={"application": f"a{i}", "answers": {"q": i % 2 == 0}},
        )
        for i in range(start, start + n)
    ]


def test_append_many_chains_checkpoints_and_fsyncs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "BATCH_WRITE", 7)  # several pieces in one batch
    _fill(tmp_path, 12)  # the node key exists (the first checkpoint made it)
    synced: list[int] = []
    real_fsync = service.os.fsync
    monkeypatch.setattr(service.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    batch = _entries(45)
    assert service.append_many(data_dir=tmp_path, records=batch) == 45
    # one fsync of the log and one of the checkpoints file, for 45 records in 7 writes
    assert len(synced) == 2
    assert [r["seq"] for r in batch] == list(range(13, 58))
    service.append(data_dir=tmp_path, principal=None, action="a", resource="r", result="ok")
    report = service.verify(data_dir=tmp_path)
    assert report.ok, report
    assert (report.records, report.checkpoints, report.last_seq) == (58, 5, 58)
    lines = _lines(tmp_path)
    # the same bytes append would have written: canonical JSON, linked, hashed
    assert lines[20] == service.canonical(batch[8]) + b"\n"
    assert batch[0]["prev"] == orjson.loads(lines[11])["hash"]
    assert batch[10]["hash"] == service.record_hash(batch[10])
    cps = [orjson.loads(x) for x in service.checkpoints_path(tmp_path).read_bytes().splitlines()]
    assert [c["seq"] for c in cps] == [10, 20, 30, 40, 50]
    for cp in cps:
        assert cp["hash"] == orjson.loads(lines[cp["seq"] - 1])["hash"]
        assert cp["offset"] == sum(len(x) for x in lines[: cp["seq"]])
    assert service.append_many(data_dir=tmp_path, records=[]) == 0


def test_append_many_cut_short_leaves_a_verifiable_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "BATCH_WRITE", 5)
    _fill(tmp_path, 2)

    def failing() -> Iterator[dict[str, object]]:
        yield from _entries(13)
        raise RuntimeError("the process dies here")

    with pytest.raises(RuntimeError):
        service.append_many(data_dir=tmp_path, records=failing())
    report = service.verify(data_dir=tmp_path)
    # the two pieces of five written before the failure are a chained prefix, no checkpoint
    # was signed for records that never reached the disk
    assert report.ok, report
    assert (report.records, report.checkpoints) == (12, 0)
    # a line cut half-way (power lost during the write) is a torn tail, never acknowledged
    lines = _lines(tmp_path)
    _write(tmp_path, [*lines, lines[-1][:40]])
    torn = service.verify(data_dir=tmp_path)
    assert torn.ok and torn.records == 12 and torn.torn_tail
    # the next batch repairs the tail and continues the chain
    assert service.append_many(data_dir=tmp_path, records=_entries(10)) == 10
    again = service.verify(data_dir=tmp_path)
    assert again.ok and again.records == 22 and again.torn_tail is None
    # seq 10 came in the batch cut short (unsigned); seq 20 is signed by the batch after
    assert again.checkpoints == 1


def test_append_many_killed_mid_batch_leaves_a_verifiable_prefix(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from citybrain.governance.audit import service\n"
        "service.BATCH_WRITE = 50\n"
        "records = (service.entry(principal=None, action='verify', resource='r', result='ok',\n"
        "           detail={'application': f'a{i}'}) for i in range(10_000_000))\n"
        "service.append_many(data_dir=Path(sys.argv[1]), records=records)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)])
    log = service.log_path(tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log.exists() or log.stat().st_size < 300_000):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert log.stat().st_size >= 300_000
    report = service.verify(data_dir=tmp_path)
    assert report.ok, report
    # every whole line written before the kill verifies (300 KB hold some 950 records)
    whole_lines = log.read_bytes().count(b"\n")
    assert report.records == whole_lines and report.records > 900
    # the node goes on from the last whole record
    service.append(data_dir=tmp_path, principal=None, action="a", resource="r", result="ok")
    after = service.verify(data_dir=tmp_path)
    assert after.ok and after.records == report.records + 1
