"""Group commit: many small writes share one transaction and one fsync, each still acknowledged
only after its own commit.

A write is a function of a connection. Callers `submit` it and wait on the future (threads)
or await it (`asyncio.wrap_future`). One writer thread takes everything queued, runs it in one
transaction and resolves the futures after the commit. When the batch fails (a unique key
taken by another process, a bad row), each write of the batch runs again in a transaction of
its own, so one write's failure is its own and never another's.

On SQLite an awaiting caller (`run_async`) has its write batched with the others of its
event loop and its statements run on the loop's own thread: they take a fraction of a
millisecond, and handing each batch to the writer thread and its answer back cost more (the
two threads contend for the interpreter lock at every row). The commit itself, the fsync,
waits on the committer thread, which holds no interpreter lock meanwhile: the loop serves
on, and the writes that arrive during the commit make the next batch. The loop never waits
for SQLite: when another worker of the node is committing (core/writer_lock.py), the batch
waits for the writer lock on the committer thread too. A batch that finds the file taken by
another writer (busy timeout 0), or that fails, goes to the writer thread, as every write
does on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql.dml import Insert

from citybrain.core.db import BUSY_TIMEOUT_MS
from citybrain.core.writer_lock import (
    release_writer_lock,
    try_writer_lock,
    wait_writer_lock,
    writer_lock,
    writer_lock_path,
)


@dataclass(frozen=True)
class Inserts:
    """A write that is only inserts: those of one batch go as one executemany per statement."""

    rows: list[tuple[Any, list[dict[str, Any]]]]
    result: Any = None

    def __call__(self, conn: Connection) -> Any:
        for statement, rows in self.rows:
            if rows:
                executemany(conn, statement, rows)
        return self.result


_Plan = tuple[str, tuple[str, ...], tuple[Callable[[Any], Any] | None, ...], bool]
_plans: dict[tuple[int, str, tuple[str, ...]], _Plan] = {}


def executemany(conn: Connection, statement: Any, rows: list[dict[str, Any]]) -> None:
    """Run an insert for many rows as one driver executemany.

    The values go through the same bind processing SQLAlchemy applies (JSON, dates,
    booleans), with the statement compiled once: SQLAlchemy's own executemany rebuilds the
    parameters of every row, a tenth of a settlement's time. Anything but a plain insert of
    rows with the same keys goes the usual way.
    """
    keys = tuple(rows[0])
    if not isinstance(statement, Insert) or any(tuple(r) != keys for r in rows):
        conn.execute(statement, rows)
        return
    dialect = conn.dialect
    plan_key = (id(statement), dialect.name, keys)
    plan = _plans.get(plan_key)
    if plan is None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        names = tuple(compiled.positiontup or ()) if compiled.positional else keys
        columns = statement.table.c
        processors: tuple[Callable[[Any], Any] | None, ...] = tuple(
            columns[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names
        )
        plan = _plans[plan_key] = (str(compiled), names, processors, bool(compiled.positional))
    sql, names, processors, positional = plan
    if positional:
        params: list[Any] = [
            tuple(p(r[n]) if p else r[n] for n, p in zip(names, processors, strict=True))
            for r in rows
        ]
    else:
        params = [
            {n: (p(r[n]) if p else r[n]) for n, p in zip(names, processors, strict=True)}
            for r in rows
        ]
    conn.exec_driver_sql(sql, params)


Write = Callable[[Connection], Any]
# called with the results of the writes of each commit, after the commit, before the callers
# are answered (the scene audits a batch of settlements with one record)
OnCommit = Callable[[list[Any]], None]
MAX_BATCH = 256
_log = logging.getLogger("citybrain.medins")


@dataclass
class _LoopQueue:
    """The writes an event loop has queued for its next batch on SQLite."""

    pending: list[tuple[Write, asyncio.Future[Any]]]
    draining: bool = False


class GroupWriter:
    """One writer thread per engine, committing queued writes in batches."""

    def __init__(self, engine: Engine, on_commit: OnCommit | None = None) -> None:
        self.engine = engine
        self.on_commit = on_commit
        self._cond = threading.Condition()
        self._queue: list[tuple[Write, Future[Any]]] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._loops: weakref.WeakKeyDictionary[Any, _LoopQueue] = weakref.WeakKeyDictionary()
        self.inline_batches = 0  # batches written on a loop's thread (tests look at it)
        self._commit_pool: ThreadPoolExecutor | None = None
        self.lock_path = writer_lock_path(engine)

    async def run_async(self, write: Write) -> Any:
        """Await a write's commit: on SQLite batched on this loop's thread, else as submit."""
        if self.engine.dialect.name != "sqlite":
            return await asyncio.wrap_future(self.submit(write))
        loop = asyncio.get_running_loop()
        queue = self._loops.get(loop)
        if queue is None:
            queue = self._loops[loop] = _LoopQueue([])
        if self._closed:
            raise RuntimeError("the writer is closed")
        future: asyncio.Future[Any] = loop.create_future()
        queue.pending.append((write, future))
        if not queue.draining:
            queue.draining = True
            loop.create_task(self._drain(queue))
        return await future

    async def _drain(self, queue: _LoopQueue) -> None:
        try:
            while queue.pending:
                batch, queue.pending = queue.pending[:MAX_BATCH], queue.pending[MAX_BATCH:]
                lock = try_writer_lock(self.lock_path)
                if lock is False:  # another worker is committing: wait off the loop
                    lock = await self._off_loop(
                        wait_writer_lock, self.lock_path, undo=release_writer_lock
                    )
                try:
                    written = self._write_inline([w for w, _ in batch])
                    results = None if written is None else await self._commit_off_loop(*written)
                finally:
                    release_writer_lock(lock)
                if results is None:
                    for write, future in batch:  # to the writer thread, one by one if need be
                        _forward(asyncio.wrap_future(self.submit(write)), future)
                    continue
                self.inline_batches += 1
                self._committed(results)
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            queue.draining = False

    def _write_inline(self, writes: list[Write]) -> tuple[Connection, list[Any]] | None:
        """Run a batch's statements without waiting for the file's lock; None if it would."""
        try:
            conn = self.engine.connect()
        except Exception:  # noqa: BLE001 - the writer thread meets it again and reports it
            return None
        try:
            conn.exec_driver_sql("PRAGMA busy_timeout=0")
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            finally:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            return conn, self._write_batch(conn, writes)
        except Exception as exc:  # noqa: BLE001 - the writer thread runs the batch again
            _abandon(conn)
            if not isinstance(exc, OperationalError):
                _log.debug("an inline batch failed; the writer thread retries it", exc_info=True)
            return None

    async def _commit_off_loop(self, conn: Connection, results: list[Any]) -> list[Any] | None:
        """Commit on the committer thread while the loop serves on; None if the commit failed.

        The statements took the loop a fraction of a millisecond; the commit is the fsync,
        which holds no interpreter lock, and the writes that arrive meanwhile make the next
        batch larger.
        """
        committed = await self._off_loop(_commit_and_close, conn)
        return results if committed else None

    async def _off_loop(
        self, call: Callable[[Any], Any], arg: Any, undo: Callable[[Any], None] | None = None
    ) -> Any:
        """Run a call on the committer thread; a cancelled wait still lets it finish (and undo)."""
        done = self._committer().submit(call, arg)
        try:
            return await asyncio.shield(asyncio.wrap_future(done))
        except asyncio.CancelledError:
            # the file must be consistent and the writer lock free when the loop stops
            outcome = done.result()
            if undo is not None:
                undo(outcome)
            raise

    def _committer(self) -> ThreadPoolExecutor:
        if self._commit_pool is None:
            self._commit_pool = ThreadPoolExecutor(1, thread_name_prefix="medins-commit")
        return self._commit_pool

    @staticmethod
    def _write_batch(conn: Connection, writes: list[Write]) -> list[Any]:
        """Run a batch's writes on one connection; the inserts of all go as one executemany."""
        results: list[Any] = []
        merged: dict[Any, list[dict[str, Any]]] = {}
        for write in writes:
            if isinstance(write, Inserts):
                for statement, rows in write.rows:
                    merged.setdefault(statement, []).extend(rows)
                results.append(write.result)
            else:
                results.append(write(conn))
        for statement, rows in merged.items():
            if rows:
                executemany(conn, statement, rows)
        return results

    def submit(self, write: Write) -> Future[Any]:
        """Queue a write; the future gets its result once it is committed, or its error."""
        future: Future[Any] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the writer is closed")
            self._queue.append((write, future))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="medins-group-commit", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return future

    def run(self, write: Write) -> Any:
        """Submit a write and wait for its commit (for callers that are threads)."""
        return self.submit(write).result()

    def close(self) -> None:
        """Stop taking writes; those queued are still committed."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._commit_pool is not None:
            self._commit_pool.shutdown(wait=True)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait(timeout=1.0)
                if not self._queue and self._closed:
                    return
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            self._commit(batch)

    def _commit(self, batch: list[tuple[Write, Future[Any]]]) -> None:
        try:
            with writer_lock(self.engine), self.engine.begin() as conn:
                results = self._write_batch(conn, [write for write, _ in batch])
        except Exception:  # noqa: BLE001 - retried one by one below, each error to its caller
            if len(batch) == 1:
                self._one(batch[0])
                return
            for item in batch:
                self._one(item)
            return
        self._committed(results)
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)

    def _committed(self, results: list[Any]) -> None:
        if self.on_commit is None:
            return
        try:
            self.on_commit(results)
        except Exception:  # noqa: BLE001 - the writes are committed; say so and go on
            _log.exception("after-commit step failed")

    def _one(self, item: tuple[Write, Future[Any]]) -> None:
        write, future = item
        try:
            with writer_lock(self.engine), self.engine.begin() as conn:
                result = write(conn)
        except Exception as exc:  # noqa: BLE001 - handed to the caller waiting on it
            future.set_exception(exc)
            return
        self._committed([result])
        future.set_result(result)


def _abandon(conn: Connection) -> None:
    """Roll back and return a connection whose batch failed (never pool one in doubt)."""
    try:
        conn.rollback()
    except Exception:  # noqa: BLE001
        conn.invalidate()
    finally:
        conn.close()


def _commit_and_close(conn: Connection) -> bool:
    """Commit a batch written on the loop (the committer thread's part); False if it failed."""
    try:
        conn.commit()
    except Exception:  # noqa: BLE001 - rolled back; the writer thread runs the batch again
        _log.debug("an inline batch's commit failed; the writer thread retries it", exc_info=True)
        _abandon(conn)
        return False
    conn.close()
    return True


def _forward(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    """Settle target as source settles (a write handed on to the writer thread)."""

    def done(finished: asyncio.Future[Any]) -> None:
        if target.done():
            return
        if finished.cancelled():
            target.cancel()
        elif finished.exception() is not None:
            target.set_exception(finished.exception())  # type: ignore[arg-type]
        else:
            target.set_result(finished.result())

    source.add_done_callback(done)
