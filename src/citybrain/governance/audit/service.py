"""The audit log: an append-only JSON Lines file in the data folder, each record hash-chained.

Each line is the canonical JSON (sorted keys) of one record; `hash` is the SHA-256 of the
canonical JSON of the record without `hash` (it includes `prev`, the previous record's hash,
and `seq`). Appends take an exclusive file lock, so several processes of one node can share
the log, and are fsync'd before the call returns: an acknowledged action has its evidence.
Threads of one process that append at the same time share one write and one fsync (group
commit); each call still returns only after its own line is on disk. `append_many` writes a
batch of records (millions, from a generator) chained the same way, with one fsync.

Every CHECKPOINT_EVERY records (and on demand, and when the node stops) a checkpoint line
`{seq, hash, at, offset, key, signature}` goes to audit/checkpoints.jsonl: an Ed25519
signature of the node key over the bytes "seq:hash". A rewritten chain cannot carry the
node's signature, and a log shorter than its last checkpoint has lost its tail.

A last line without its newline is a write cut short (power loss, full disk): append returns
only after the whole line and its newline are fsync'd, so such a fragment was never
acknowledged. `verify` reports it as `torn_tail`; the next append moves it to
audit/torn.jsonl (offset and bytes) and truncates it, so the chain continues from the last
complete record.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import hashlib
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from citybrain.core.errors import BadInput, ServiceUnavailable
from citybrain.governance.keys import key_path, node_key
from citybrain.governance.principal import Principal

from .models import AuditPage, AuditRecord, Checkpoint, VerifyReport

LOG_FILE = "audit/log.jsonl"
CHECKPOINT_FILE = "audit/checkpoints.jsonl"
TORN_FILE = "audit/torn.jsonl"
GENESIS = "0" * 64
CHECKPOINT_EVERY = int(os.environ.get("CITYBRAIN_AUDIT_CHECKPOINT_EVERY", "1000"))
MAX_LIMIT = 10_000
# verify splits big logs into ranges of about this size, checked by worker processes
RANGE_BYTES = 32 * 1024 * 1024
_HASH_KEY = b',"hash":"'
_log = logging.getLogger("citybrain.audit")

# one writer at a time per process; the file lock orders the processes
_write_lock = threading.Lock()
FSYNC_INTERVAL = 0.2
# when each log was last fsync'd (monotonic seconds)
_synced: dict[Path, float] = {}
# last (size, seq, hash) seen per log file, so an append need not re-read the tail
_heads: dict[Path, tuple[int, int, str]] = {}


@dataclass
class _Pending:
    """One record waiting for the group commit, and what became of it."""

    record: dict[str, Any]
    durable: bool = True
    done: bool = False
    error: BaseException | None = None


@dataclass
class _Queue:
    """Records of one log waiting to be written, and whether a thread is writing them."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    pending: list[_Pending] = field(default_factory=list)
    writing: bool = False


_queues_lock = threading.Lock()


def log_path(data_dir: Path) -> Path:
    """Return the path of the node's audit log."""
    return data_dir / LOG_FILE


def checkpoints_path(data_dir: Path) -> Path:
    """Return the path of the node's signed checkpoints."""
    return data_dir / CHECKPOINT_FILE


def canonical(record: dict[str, Any]) -> bytes:
    """Return the canonical JSON bytes of a record (sorted keys, no spaces)."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def record_hash(record: dict[str, Any]) -> str:
    """Return the chain hash of a record: SHA-256 of its canonical JSON without `hash`."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def key_fingerprint(public: Ed25519PublicKey) -> str:
    """Return the SHA-256 hex fingerprint of a raw Ed25519 public key."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def timestamp() -> str:
    """Return the current time as the log writes it (for records made with `entry`)."""
    return _now()


# ---------------------------------------------------------------------------------------------
# append


def _last_complete(handle: IO[bytes], size: int) -> tuple[bytes | None, int]:
    """Return the last complete line of the open log and the offset just after it."""
    chunk = 4096
    while True:
        start = max(0, size - chunk)
        handle.seek(start)
        tail = handle.read(size - start)
        end = tail.rfind(b"\n")
        if end == -1:
            if start == 0:
                return None, 0
            chunk *= 4
            continue
        begin = tail.rfind(b"\n", 0, end)
        if begin == -1 and start > 0:
            chunk *= 4
            continue
        return tail[begin + 1 : end], start + end + 1


def _repair_torn(data_dir: Path, handle: IO[bytes], complete: int, size: int) -> None:
    """Move a torn last line (never acknowledged) aside to audit/torn.jsonl and cut it off."""
    handle.seek(complete)
    fragment = handle.read(size - complete)
    entry = {
        "at": _now(),
        "offset": complete,
        "bytes": base64.b64encode(fragment).decode(),
    }
    with open(data_dir / TORN_FILE, "ab") as torn:
        torn.write(orjson.dumps(entry) + b"\n")
        torn.flush()
        os.fsync(torn.fileno())
    os.ftruncate(handle.fileno(), complete)
    os.fsync(handle.fileno())
    _log.warning(
        "moved a torn last line of the audit log aside",
        extra={"offset": complete, "bytes": len(fragment)},
    )


def _head(data_dir: Path, path: Path, handle: IO[bytes]) -> tuple[int, int, str]:
    """Return (size, seq, hash) of the log's end, repairing a torn last line first."""
    size = os.fstat(handle.fileno()).st_size
    cached = _heads.get(path)
    if cached is not None and cached[0] == size:
        return cached
    if size == 0:
        return 0, 0, GENESIS
    last, complete = _last_complete(handle, size)
    if complete < size:
        _repair_torn(data_dir, handle, complete, size)
        size = complete
    if last is None:
        return 0, 0, GENESIS
    try:
        record = orjson.loads(last)
        return size, int(record["seq"]), str(record["hash"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ServiceUnavailable(
            f"the last record of the audit log {path} is damaged; run citybrain audit verify"
        ) from None


def _sign(data_dir: Path, seq: int, digest: str, offset: int) -> dict[str, Any]:
    key = node_key(data_dir)
    return {
        "seq": seq,
        "hash": digest,
        "at": _now(),
        "offset": offset,
        "key": key_fingerprint(key.public_key()),
        "signature": base64.b64encode(key.sign(f"{seq}:{digest}".encode())).decode(),
    }


def _write_checkpoints(data_dir: Path, checkpoints: list[dict[str, Any]]) -> None:
    """Append checkpoint lines (cutting a torn last checkpoint line first) and fsync them."""
    with open(checkpoints_path(data_dir), "a+b") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                _, complete = _last_complete(handle, size)
                os.ftruncate(handle.fileno(), complete)
        handle.write(b"".join(orjson.dumps(c) + b"\n" for c in checkpoints))
        handle.flush()
        os.fsync(handle.fileno())


def _write_all(handle: IO[bytes], data: bytes) -> None:
    """Write all of data to an unbuffered file (which may take less than all in one call)."""
    view = memoryview(data)
    while view:
        written = handle.write(view)
        view = view[written or 0 :]


@dataclass
class _Log:
    """One log as this process appends to it: its queue and its open file."""

    data_dir: Path  # resolved
    path: Path
    queue: _Queue = field(default_factory=_Queue)
    handle: IO[bytes] | None = None
    pid: int = 0  # the process that opened the handle

    def opened(self) -> IO[bytes]:
        """The log's file, open for appending; opened again when it is gone or inherited.

        Kept open, because opening the file (and making its folder) cost more than the write of
        a record at sensor rates. It is opened again in a forked worker, whose inherited file
        would share the parent's flock, and when the path no longer names it (removed, renamed
        or replaced), so records always go to the file the path names.
        """
        handle = self.handle
        if handle is not None:
            if self.pid == os.getpid() and self._still_the_log(handle):
                return handle
            handle.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # unbuffered: a read buffer kept between appends could hold what another process has
        # since appended after
        self.handle = handle = open(self.path, "a+b", buffering=0)  # noqa: SIM115 - kept open
        self.pid = os.getpid()
        return handle

    def _still_the_log(self, handle: IO[bytes]) -> bool:
        """True while the open file is the one the log's path names (not removed or renamed)."""
        try:
            named = os.stat(self.name)
        except FileNotFoundError:
            return False
        opened = os.fstat(handle.fileno())
        return (named.st_ino, named.st_dev) == (opened.st_ino, opened.st_dev)

    @functools.cached_property
    def name(self) -> str:
        """The path as a string (what the system calls take)."""
        return str(self.path)


_logs: dict[str, _Log] = {}


@functools.lru_cache(maxsize=256)
def _log_of(data_dir: Path) -> _Log:
    # resolving walks every component with a system call: once per folder, not per record;
    # two spellings of one folder share one log (one queue, one chain head)
    resolved = data_dir.resolve()
    path = log_path(resolved)
    with _queues_lock:
        log = _logs.get(str(path))
        if log is None:
            log = _logs[str(path)] = _Log(resolved, path)
        return log


def _commit(log: _Log, batch: list[_Pending]) -> None:
    """Chain, write and fsync a batch of records under the file lock; checkpoint when due."""
    data_dir, path = log.data_dir, log.path
    with _write_lock:
        handle = log.opened()
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            size, seq, prev = _head(data_dir, path, handle)
            lines: list[bytes] = []
            due: list[tuple[int, str, int]] = []
            offset = size
            every = CHECKPOINT_EVERY
            for item in batch:
                record = item.record
                seq += 1
                record["seq"] = seq
                record["prev"] = prev
                prev = record["hash"] = record_hash(record)
                line = canonical(record) + b"\n"
                lines.append(line)
                offset += len(line)
                if every > 0 and seq % every == 0:
                    due.append((seq, prev, offset))
            _write_all(handle, b"".join(lines))
            # written lines outlive a killed process (the kernel holds them); fsync makes them
            # outlive a power cut too: always for durable records, at least every
            # FSYNC_INTERVAL for the high-rate ones
            moment = time.monotonic()
            if any(item.durable for item in batch) or moment - _synced.get(path, 0.0) > (
                FSYNC_INTERVAL
            ):
                os.fsync(handle.fileno())
                _synced[path] = moment
            _heads[path] = (offset, seq, prev)
            if due:
                try:
                    _write_checkpoints(data_dir, [_sign(data_dir, *d) for d in due])
                except Exception:  # the records are safe; a later checkpoint covers them
                    _log.exception("cannot write an audit checkpoint")
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# records a batch append chains and writes at a time (bounded memory for millions of records)
BATCH_WRITE = 20_000


def entry(
    *,
    principal: Principal | None,
    action: str,
    resource: str,
    result: str,
    grant_id: str | None = None,
    purpose: str | None = None,
    rows: int | None = None,
    detail: dict[str, Any] | None = None,
    at: str | None = None,
) -> dict[str, Any]:
    """Return one unchained record as `append` makes it (who, what, grant, purpose, rows)."""
    return {
        "at": at or _now(),
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


def _write_many(
    data_dir: Path, path: Path, records: Iterable[dict[str, Any]], durable: bool
) -> int:
    """Chain and write records in pieces under the locks, fsync once, then the checkpoints."""
    with _write_lock, open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            size, seq, prev = _head(data_dir, path, handle)
            first = seq
            offset = size
            every = CHECKPOINT_EVERY
            due: list[tuple[int, str, int]] = []
            lines: list[bytes] = []
            handle.seek(0, os.SEEK_END)
            try:
                for record in records:
                    seq += 1
                    record["seq"] = seq
                    record["prev"] = prev
                    prev = record["hash"] = record_hash(record)
                    line = canonical(record) + b"\n"
                    lines.append(line)
                    offset += len(line)
                    if every > 0 and seq % every == 0:
                        due.append((seq, prev, offset))
                    if len(lines) >= BATCH_WRITE:
                        handle.write(b"".join(lines))
                        lines.clear()
                handle.write(b"".join(lines))
                handle.flush()
            except BaseException:
                # what reached the file is a chained prefix; the next append reads the real end
                _heads.pop(path, None)
                raise
            # one fsync for the whole batch; the checkpoints only after it, so no signed
            # checkpoint ever covers a record that could still be lost
            moment = time.monotonic()
            if durable or moment - _synced.get(path, 0.0) > FSYNC_INTERVAL:
                os.fsync(handle.fileno())
                _synced[path] = moment
            _heads[path] = (offset, seq, prev)
            if due:
                try:
                    _write_checkpoints(data_dir, [_sign(data_dir, *d) for d in due])
                except Exception:  # the records are safe; a later checkpoint covers them
                    _log.exception("cannot write an audit checkpoint")
            return seq - first
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def append_many(*, data_dir: Path, records: Iterable[dict[str, Any]], durable: bool = True) -> int:
    """Append records made by `entry`, chained and checkpointed as `append` does; count them.

    The records are chained in order, written in pieces of BATCH_WRITE lines and fsync'd once
    at the end (durable=False: fsync'd with the next durable record or within FSYNC_INTERVAL).
    Each record dict gets its `seq`, `prev` and `hash`. A batch cut short (a killed process, a
    full disk) leaves a chain that verifies up to the last whole line.
    """
    data_dir = _resolved(data_dir)
    path = log_path(data_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _write_many(data_dir, path, records, durable)
    except OSError as exc:
        # no evidence, no action: the caller's operation fails with this error
        raise ServiceUnavailable(f"cannot write the audit log {path}: {exc.strerror}") from None


@functools.lru_cache(maxsize=256)
def _resolved(data_dir: Path) -> Path:
    # resolving walks every component with a system call: once per folder, not per record
    return data_dir.resolve()


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
    durable: bool = True,
) -> dict[str, Any]:
    """Append one record (who, what, which grant, purpose, rows, result) and return it.

    durable=False (for records at sensor rates) returns once the line is written, fsync'd
    with the next durable record or within FSYNC_INTERVAL seconds.
    """
    log = _log_of(data_dir)
    path = log.path
    record = entry(
        principal=principal,
        action=action,
        resource=resource,
        result=result,
        grant_id=grant_id,
        purpose=purpose,
        rows=rows,
        detail=detail,
    )
    mine = _Pending(record, durable=durable)
    queue = log.queue
    with queue.cond:
        queue.pending.append(mine)
        # group commit: one thread writes everything queued so far, the others wait for it
        while not mine.done:
            if queue.writing:
                queue.cond.wait()
                continue
            batch, queue.pending = queue.pending, []
            queue.writing = True
            queue.cond.release()
            error: BaseException | None = None
            try:
                _commit(log, batch)
            except OSError as exc:
                # no evidence, no action: the caller's operation fails with this error
                error = ServiceUnavailable(f"cannot write the audit log {path}: {exc.strerror}")
            except BaseException as exc:  # noqa: BLE001 - handed to every waiter of the batch
                error = exc
            finally:
                queue.cond.acquire()
                for item in batch:
                    item.done = True
                    item.error = error
                queue.writing = False
                queue.cond.notify_all()
    if mine.error is not None:
        _heads.pop(path, None)
        raise mine.error
    return record


# ---------------------------------------------------------------------------------------------
# checkpoints


def _read_checkpoint_lines(data_dir: Path) -> list[bytes]:
    try:
        return checkpoints_path(data_dir).read_bytes().split(b"\n")
    except FileNotFoundError:
        return []


def checkpoint(*, data_dir: Path) -> Checkpoint | None:
    """Sign a checkpoint of the log's last record now; None when the log is empty."""
    data_dir = data_dir.resolve()
    path = log_path(data_dir)
    if not path.exists():
        return None
    with _write_lock, open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            size, seq, digest = _head(data_dir, path, handle)
            if seq == 0:
                return None
            lines = [line for line in _read_checkpoint_lines(data_dir) if line.strip()]
            if lines:
                try:
                    last = orjson.loads(lines[-1])
                    if last.get("seq") == seq and last.get("hash") == digest:
                        return Checkpoint.model_validate(last)
                except orjson.JSONDecodeError:
                    pass  # a torn last checkpoint: _write_checkpoints cuts it
            signed = _sign(data_dir, seq, digest, size)
            _write_checkpoints(data_dir, [signed])
            return Checkpoint.model_validate(signed)
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# verify


@dataclass
class _Break:
    seq: int
    line: int
    reason: str


# checkpoint hashes by seq, set in each verifying worker by its initializer
_cp_hashes: dict[int, bytes] = {}


def _init_worker(hashes: dict[int, str]) -> None:
    global _cp_hashes
    _cp_hashes = {seq: digest.encode() for seq, digest in hashes.items()}


class _RangeResult(NamedTuple):
    """What one worker found in its byte range of the log."""

    lines: int
    first_seq: int
    first_prev: str
    last_seq: int
    last_hash: str
    broken: tuple[int, int, str] | None  # (seq, line within the range, reason)
    torn: str | None
    size: int


def _scan_range(args: tuple[str, int, int, bool]) -> _RangeResult:
    """Check the hashes and links of the records in one byte range of the log.

    The first record's seq and prev are linked by the caller to the range before. The fast
    path reads `hash`, `prev` and `seq` at their places in the canonical line and hashes the
    line without its `hash` member: when that digest matches, the bytes are exactly the bytes
    that were hashed and chained. Anything else goes the slow way (parse, canonicalise, hash).
    """
    name, start, end, at_eof = args
    with open(name, "rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
    lines = data.split(b"\n")
    torn: str | None = None
    last = lines.pop()  # b"" when the range ends with a newline
    if last:
        if at_eof:
            torn = f"{len(last)} bytes without a newline"
        else:  # cannot happen: ranges end at newlines
            lines.append(last)
    loads = orjson.loads
    sha = hashlib.sha256
    hash_key, prev_key, seq_key = _HASH_KEY, b',"prev":"', b',"seq":'
    cps = _cp_hashes
    first_seq = last_seq = 0
    first_prev = last_hash = b""

    def stop(index: int, seq: int, reason: str) -> _RangeResult:
        return _RangeResult(
            index,
            first_seq,
            first_prev.decode(),
            last_seq,
            last_hash.decode(),
            (seq, index, reason),
            torn,
            len(data),
        )

    for index, line in enumerate(lines, 1):
        expected = last_seq + 1 if index > 1 else 0
        cut = line.rfind(hash_key)
        at_prev = line.rfind(prev_key)
        at_seq = line.rfind(seq_key)
        digest = line[cut + 9 : cut + 73]
        seq_text = line[at_seq + 7 : -1]
        if (
            0 < cut < at_prev < at_seq
            and line[cut + 73 : cut + 74] == b'"'
            and line[at_prev + 73 : at_prev + 74] == b'"'
            and line[-1:] == b"}"
            and seq_text.isdigit()
            and sha(line[:cut] + line[cut + 74 :]).hexdigest().encode() == digest
        ):
            seq = int(seq_text)
            prev = line[at_prev + 9 : at_prev + 73]
        else:
            try:
                record = loads(line)
                seq = record["seq"]
                prev_text = record["prev"]
                digest_text = record["hash"]
                if type(seq) is not int or type(prev_text) is not str:
                    raise TypeError
                if type(digest_text) is not str:
                    raise TypeError
            except orjson.JSONDecodeError:
                return stop(index, expected, "the line is not valid JSON (cut or damaged)")
            except (KeyError, TypeError):
                return stop(index, expected, "the line is not an audit record (seq, prev, hash)")
            if record_hash(record) != digest_text:
                return stop(index, seq, f"record {seq} does not match its hash: it was edited")
            prev, digest = prev_text.encode(), digest_text.encode()
        if index == 1:
            first_seq, first_prev = seq, prev
        else:
            if seq != expected:
                if seq > expected:
                    missing = (
                        f"record {expected} is missing or out of order"
                        if seq == expected + 1
                        else f"records {expected}..{seq - 1} are missing"
                    )
                    return stop(index, expected, f"{missing}: seq {seq} follows seq {last_seq}")
                return stop(
                    index,
                    seq,
                    f"seq {seq} follows seq {last_seq}: record {seq} appears twice or out of "
                    "order (duplicated, inserted or reordered)",
                )
            if prev != last_hash:
                return stop(
                    index,
                    seq,
                    f"record {seq} does not link to record {last_seq} (prev differs): a record "
                    "was inserted, replaced or reordered",
                )
        signed = cps.get(seq)
        if signed is not None and signed != digest:
            return stop(
                index,
                seq,
                f"record {seq} has hash {digest[:12].decode()}... but its signed checkpoint "
                f"says {signed[:12].decode()}...: the record was rewritten",
            )
        last_seq, last_hash = seq, digest
    return _RangeResult(
        len(lines),
        first_seq,
        first_prev.decode(),
        last_seq,
        last_hash.decode(),
        None,
        torn,
        len(data),
    )


def _ranges(handle: IO[bytes], size: int, step: int) -> list[tuple[int, int]]:
    """Split [0, size) into ranges of about `step` bytes, each ending just after a newline."""
    bounds = [0]
    position = step
    while position < size:
        handle.seek(position)
        probe = handle.read(65536)
        while probe and b"\n" not in probe:
            more = handle.read(65536)
            if not more:
                break
            probe += more
        newline = probe.find(b"\n")
        if newline < 0:
            break
        cut = position + newline + 1
        if cut >= size:
            break
        bounds.append(cut)
        position = cut + step
    bounds.append(size)
    return list(zip(bounds, bounds[1:], strict=False))


def _scan_all(
    args: list[tuple[str, int, int, bool]], hashes: dict[int, str], processes: int
) -> Generator[_RangeResult, None, None]:
    """Yield the ranges' results in log order, from worker processes when there are several."""
    if len(args) < 2 or processes < 2:
        _init_worker(hashes)
        yield from map(_scan_range, args)
        return
    # spawn, not fork: the caller may be a threaded server
    executor = ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(hashes,),
    )
    done = 0
    try:
        for result in executor.map(_scan_range, args):
            done += 1
            yield result
    except BrokenProcessPool:
        # workers could not start (say, a caller script without a __main__ guard): go serial
        _log.warning("audit verify workers failed; checking the rest in this process")
        _init_worker(hashes)
        yield from map(_scan_range, args[done:])
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _node_public_key(data_dir: Path) -> Ed25519PublicKey | None:
    """Return the node's public key if its key file exists (verify never creates a key)."""
    if not key_path(data_dir).exists():
        return None
    return node_key(data_dir).public_key()


def _check_checkpoints(
    data_dir: Path, lines: list[bytes]
) -> tuple[dict[int, tuple[str, int]], list[_Break], str | None, int]:
    """Parse and verify the signed checkpoints; return them by seq, their faults, a torn tail."""
    public = _node_public_key(data_dir)
    fingerprint = key_fingerprint(public) if public else None
    found: dict[int, tuple[str, int]] = {}
    faults: list[_Break] = []
    torn = None
    if lines and lines[-1] == b"":
        lines = lines[:-1]
    elif lines:
        torn = f"checkpoints.jsonl ends with {len(lines[-1])} bytes without a newline"
        lines = lines[:-1]
    count = 0
    for number, raw in enumerate(lines, 1):
        where = f"checkpoints.jsonl line {number}"
        try:
            cp = orjson.loads(raw)
            seq, digest = int(cp["seq"]), str(cp["hash"])
            signature = base64.b64decode(cp["signature"], validate=True)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            faults.append(_Break(0, 0, f"{where} is not a checkpoint"))
            continue
        count += 1
        if public is None:
            faults.append(_Break(seq, 0, f"{where}: no node key to check its signature"))
            continue
        if cp.get("key") not in (None, fingerprint):
            faults.append(
                _Break(
                    seq,
                    0,
                    f"checkpoint of seq {seq} ({where}) is signed by key "
                    f"{str(cp.get('key'))[:12]}…, not this node's {str(fingerprint)[:12]}…",
                )
            )
            continue
        try:
            public.verify(signature, f"{seq}:{digest}".encode())
        except InvalidSignature:
            faults.append(
                _Break(seq, 0, f"checkpoint of seq {seq} ({where}) has an invalid signature")
            )
            continue
        found[seq] = (digest, number)
    return found, faults, torn, count


def verify(
    *,
    data_dir: Path,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> VerifyReport:
    """Re-compute the chain and check the signed checkpoints; report the first break exactly."""
    started = time.perf_counter()
    if not data_dir.is_dir():
        raise BadInput(f"there is no data folder {data_dir}")
    data_dir = data_dir.resolve()
    path = log_path(data_dir)
    size = 0
    checkpoint_lines: list[bytes] = []
    if path.exists():
        with open(path, "rb") as handle:
            # a shared lock for a consistent snapshot: no append is half-way through
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            try:
                size = os.fstat(handle.fileno()).st_size
                checkpoint_lines = _read_checkpoint_lines(data_dir)
                ranges = _ranges(handle, size, RANGE_BYTES) if size else []
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    else:
        checkpoint_lines = _read_checkpoint_lines(data_dir)
        ranges = []
    signed, faults, cp_torn, cp_count = _check_checkpoints(data_dir, checkpoint_lines)
    hashes = {seq: digest for seq, (digest, _) in signed.items()}

    args = [(str(path), lo, hi, hi == size) for lo, hi in ranges]
    processes = workers if workers is not None else min(os.cpu_count() or 1, 8)
    results = _scan_all(args, hashes, processes)

    lines_before = 0
    last_seq, last_hash = 0, GENESIS
    chain_break: _Break | None = None
    torn: str | None = None
    done = 0
    try:
        for part in results:
            done += part.size
            if progress is not None:
                progress(done, size)
            broken = part.broken
            if part.first_seq and not (broken and broken[1] == 1):
                # link this range's first record to the last record of the range before
                if part.first_seq != last_seq + 1:
                    relation = "is missing" if part.first_seq > last_seq + 1 else "is out of order"
                    chain_break = _Break(
                        last_seq + 1,
                        lines_before + 1,
                        f"record {last_seq + 1} {relation}: seq {part.first_seq} follows "
                        f"seq {last_seq}",
                    )
                elif part.first_prev != last_hash:
                    chain_break = _Break(
                        part.first_seq,
                        lines_before + 1,
                        f"record {part.first_seq} does not link to record {last_seq} (prev "
                        "differs): a record was inserted, replaced or reordered",
                    )
            if chain_break is None and broken is not None:
                chain_break = _Break(broken[0] or last_seq + 1, lines_before + broken[1], broken[2])
            if chain_break is not None:
                if broken is not None and broken[1] > 1:
                    last_seq, last_hash = part.last_seq, part.last_hash
                break
            lines_before += part.lines
            if part.lines:
                last_seq, last_hash = part.last_seq, part.last_hash
            torn = part.torn
    finally:
        results.close()

    if chain_break is None and signed:
        top = max(signed)
        if top > last_seq:
            chain_break = _Break(
                last_seq + 1,
                lines_before + 1,
                f"the log ends at seq {last_seq} but a signed checkpoint covers seq {top}: "
                f"records {last_seq + 1}..{top} were removed",
            )
    candidates = ([chain_break] if chain_break else []) + faults
    first = min(candidates, key=lambda b: (b.seq == 0, b.seq)) if candidates else None
    if first is not None and first.line == 0 and first.seq:
        # a checkpoint fault: point at the record line it speaks about when the chain reached it
        first.line = first.seq if first.seq <= last_seq else lines_before + 1
    records = (first.seq - 1 if first and first.seq else last_seq) if first else last_seq
    tails = [t for t in (torn and f"log.jsonl line {lines_before + 1}: {torn}", cp_torn) if t]
    return VerifyReport(
        ok=first is None,
        records=max(0, min(records, last_seq)),
        checkpoints=cp_count,
        first_broken_seq=first.seq if first and first.seq else None,
        line=first.line if first and first.line else None,
        reason=first.reason if first else None,
        last_seq=last_seq,
        last_hash=last_hash if last_seq else None,
        torn_tail="; ".join(tails) if tails else None,
        seconds=round(time.perf_counter() - started, 3),
    )


# ---------------------------------------------------------------------------------------------
# query


def _utc_text(moment: datetime) -> str:
    """Return a moment in the log's own format, so that text order is time order."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _needle(key: str, value: str) -> tuple[bytes, bool]:
    """Return the bytes a matching line must contain, and whether the value is a prefix."""
    prefix = value.endswith("*")
    text = value[:-1] if prefix else value
    encoded = orjson.dumps(text)
    return b'"' + key.encode() + b'":' + (encoded[:-1] if prefix else encoded), prefix


def _start_offset(data_dir: Path, after_seq: int) -> int:
    """Return a byte offset at or before the record after `after_seq`, from the checkpoints."""
    best = 0
    for raw in _read_checkpoint_lines(data_dir):
        try:
            cp = orjson.loads(raw)
            seq, offset = int(cp["seq"]), int(cp["offset"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        if seq <= after_seq and offset > best:
            best = offset
    return best


def _lines_from(path: Path, offset: int, chunk: int = 4 * 1024 * 1024) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        handle.seek(offset)
        rest = b""
        while block := handle.read(chunk):
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            yield from lines


def query(
    *,
    data_dir: Path,
    actor: str | None = None,
    org: str | None = None,
    action: str | None = None,
    resource: str | None = None,
    grant_id: str | None = None,
    result: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_seq: int | None = None,
    limit: int = 100,
) -> AuditPage:
    """Return a page of records in log order matching every filter given (`x*` = prefix)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadInput(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    if after_seq is not None and after_seq < 0:
        raise BadInput(f"after_seq must be 0 or more, not {after_seq}")
    if not data_dir.is_dir():
        raise BadInput(f"there is no data folder {data_dir}")
    path = log_path(data_dir)
    if not path.exists():
        return AuditPage(records=[], next_after_seq=None)
    filters = {
        "actor": actor,
        "org": org,
        "action": action,
        "resource": resource,
        "grant": grant_id,
        "result": result,
    }
    wanted = [(k, v, *_needle(k, v)) for k, v in filters.items() if v is not None]
    low = _utc_text(since) if since else None
    high = _utc_text(until) if until else None
    after = after_seq or 0
    offset = _start_offset(data_dir, after) if after else 0
    found: list[AuditRecord] = []
    more = False
    for line in _lines_from(path, offset):
        # cheap byte test first; the parsed record decides
        if any(needle not in line for _, _, needle, _ in wanted):
            continue
        try:
            record = orjson.loads(line)
            seq = record["seq"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # verify reports damaged lines; a query shows what it can read
        if seq <= after:
            continue
        matches = True
        for key, value, _, prefix in wanted:
            field_value = record.get(key)
            if prefix:
                matches = isinstance(field_value, str) and field_value.startswith(value[:-1])
            else:
                matches = field_value == value
            if not matches:
                break
        if not matches:
            continue
        at = record.get("at", "")
        if (low and at < low) or (high and at >= high):
            continue
        if len(found) == limit:
            more = True
            break
        try:
            found.append(AuditRecord.model_validate(record))
        except ValueError:
            continue
    return AuditPage(records=found, next_after_seq=found[-1].seq if more and found else None)
