"""The audit log: an append-only JSON Lines file in the data folder, each record hash-chained.

Each line is the canonical JSON (sorted keys) of one record; `hash` is the SHA-256 of the
canonical JSON of the record without `hash` (it includes `prev`, the previous record's hash,
and `seq`). Appends take an exclusive file lock, so several processes of one node can share
the log, and are fsync'd before the call returns: an acknowledged action has its evidence.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from citybrain.core.errors import ServiceUnavailable
from citybrain.governance.principal import Principal

LOG_FILE = "audit/log.jsonl"
GENESIS = "0" * 64
_lock = threading.Lock()
# last (size, seq, hash) seen per log file, so an append need not re-read the tail
_heads: dict[Path, tuple[int, int, str]] = {}


def log_path(data_dir: Path) -> Path:
    """Return the path of the node's audit log."""
    return data_dir / LOG_FILE


def canonical(record: dict[str, Any]) -> bytes:
    """Return the canonical JSON bytes of a record (sorted keys, no spaces)."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def record_hash(record: dict[str, Any]) -> str:
    """Return the chain hash of a record: SHA-256 of its canonical JSON without `hash`."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def _read_head(handle: Any, size: int) -> tuple[int, str]:
    """Return (seq, hash) of the last complete record of the open log, or (0, GENESIS)."""
    if size == 0:
        return 0, GENESIS
    chunk = 4096
    while True:
        start = max(0, size - chunk)
        handle.seek(start)
        tail = handle.read(size - start)
        lines = tail.rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or start == 0:
            last = orjson.loads(lines[-1])
            return int(last["seq"]), str(last["hash"])
        chunk *= 4


def append(
    *,
    data_dir: Path,
    principal: Principal | None,
    action: str,
    resource: str,
    result: str,
    grant_id: str | None = None,
    purpose: str | None = None,
    rows: int | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Append one record (who, what, which grant, purpose, rows, result) and return it."""
    path = log_path(data_dir).resolve()
    record: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "actor": principal.label() if principal else "system",
        "org": principal.org if principal else None,
        "role": principal.role.value if principal else None,
        "action": action,
        "resource": resource,
        "grant": grant_id,
        "purpose": purpose,
        "rows": rows,
        "result": result,
        "detail": detail or {},
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _lock, open(path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                size = os.fstat(handle.fileno()).st_size
                cached = _heads.get(path)
                if cached is not None and cached[0] == size:
                    seq, prev = cached[1], cached[2]
                else:
                    seq, prev = _read_head(handle, size)
                record["seq"] = seq + 1
                record["prev"] = prev
                record["hash"] = record_hash(record)
                line = canonical(record) + b"\n"
                handle.seek(0, os.SEEK_END)
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
                _heads[path] = (size + len(line), record["seq"], record["hash"])
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    except OSError as exc:
        # no evidence, no action: the caller's operation fails with this error
        raise ServiceUnavailable(f"cannot write the audit log {path}: {exc.strerror}") from None
    return record
