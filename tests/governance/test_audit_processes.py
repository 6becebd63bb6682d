"""Audit log across processes: two writers keep one chain; kill -9 loses no acknowledged record."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

from citybrain.governance.audit import service

WRITER = """
import sys
from pathlib import Path
from citybrain.governance.audit import service
data, n, tag = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
i = 0
while n < 0 or i < n:
    r = service.append(data_dir=data, principal=None, action="proc." + tag, resource="r",
                       result="ok", detail={"i": i})
    # acknowledged: the record is on disk when append returns
    print(r["seq"], r["hash"], flush=True)
    i += 1
"""


def _writer(data_dir: Path, n: int, tag: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(data_dir), str(n), tag],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_two_processes_and_threads_keep_one_chain(tmp_path: Path) -> None:
    procs = [_writer(tmp_path, 150, tag) for tag in ("a", "b")]
    local: list[int] = []

    def work() -> None:
        for _ in range(50):
            r = service.append(
                data_dir=tmp_path, principal=None, action="t", resource="r", result="ok"
            )
            local.append(int(r["seq"]))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    for t in threads:
        t.join()
    assert all(p.returncode == 0 for p in procs)
    acknowledged = [int(line.split()[0]) for out in outputs for line in out.splitlines()] + local
    assert sorted(acknowledged) == list(range(1, 401))
    report = service.verify(data_dir=tmp_path)
    assert report.ok and report.records == 400, report


def test_kill_9_while_appending_keeps_every_acknowledged_record(tmp_path: Path) -> None:
    proc = _writer(tmp_path, -1, "k")
    assert proc.stdout is not None
    acknowledged: dict[int, str] = {}
    deadline = time.monotonic() + 30
    while len(acknowledged) < 60 and time.monotonic() < deadline:
        seq, digest = proc.stdout.readline().split()
        acknowledged[int(seq)] = digest
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    # what the pipe still held was acknowledged too
    for line in proc.stdout.read().splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[1]) == 64:
            acknowledged[int(parts[0])] = parts[1]
    report = service.verify(data_dir=tmp_path)
    assert report.ok, report
    on_disk = {
        r["seq"]: r["hash"]
        for r in map(orjson.loads, service.log_path(tmp_path).read_bytes().splitlines())
    }
    assert all(on_disk.get(seq) == digest for seq, digest in acknowledged.items())
    # the chain continues after the crash
    record = service.append(
        data_dir=tmp_path, principal=None, action="after", resource="r", result="ok"
    )
    assert record["seq"] == report.last_seq + 1
    assert service.verify(data_dir=tmp_path).ok


def test_kill_9_mid_line_leaves_a_torn_tail_the_next_append_repairs(tmp_path: Path) -> None:
    """A write cut short (a process writes half a line and dies) is reported, then repaired."""
    service.append(data_dir=tmp_path, principal=None, action="before", resource="r", result="ok")
    line = service.log_path(tmp_path)
    script = (
        "import os, signal, sys\n"
        "f = open(sys.argv[1], 'ab')\n"
        'f.write(b\'{"action":"half","actor":"sys\'); f.flush()\n'
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(line)], check=False)
    assert proc.returncode == -signal.SIGKILL
    report = service.verify(data_dir=tmp_path)
    assert report.ok and report.last_seq == 1 and report.torn_tail
    record = service.append(
        data_dir=tmp_path, principal=None, action="next", resource="r", result="ok"
    )
    assert record["seq"] == 2
    report = service.verify(data_dir=tmp_path)
    assert report.ok and report.last_seq == 2 and report.torn_tail is None


def _append(data_dir: Path, tag: str) -> dict[str, object]:
    return service.append(data_dir=data_dir, principal=None, action=tag, resource="r", result="ok")


def test_a_removed_log_is_opened_again_not_written_into_the_void(tmp_path: Path) -> None:
    # the log stays open between appends; a file removed meanwhile must not take records
    _append(tmp_path, "before")
    log = tmp_path / "audit" / "log.jsonl"
    log.rename(tmp_path / "old.jsonl")
    record = _append(tmp_path, "after")
    lines = log.read_bytes().splitlines()
    assert [orjson.loads(x)["action"] for x in lines] == ["after"]
    assert record["seq"] == 1  # a new file starts a new chain
    assert service.verify(data_dir=tmp_path).ok


def test_a_forked_worker_appends_through_its_own_file(tmp_path: Path) -> None:
    # a worker forked after the parent opened the log must not share the parent's file (and its
    # flock): both keep one chain
    _append(tmp_path, "parent")
    pid = os.fork()
    if pid == 0:  # the child: append, then leave without running the parent's cleanup
        code = 0
        try:
            for _ in range(200):
                _append(tmp_path, "child")
        except BaseException:  # noqa: BLE001 - reported by the exit code
            code = 1
        os._exit(code)
    for _ in range(200):
        _append(tmp_path, "parent")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    report = service.verify(data_dir=tmp_path)
    assert report.ok and report.records == 401
