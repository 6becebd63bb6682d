"""Group commit: the single-entity writes of concurrent requests share one transaction.

Each write request hands its store work (a function of a connection) to the committer of
its event loop and waits. While one round runs in a worker thread, the next requests queue;
the next round takes them all and commits once: one fsync acknowledges every write of the
round. A unit that fails (404, 409, 400) leaves no trace and the others are kept: the round
first runs its units one after the other as they are, and if one fails, it rolls back and
runs them again each in a savepoint of its own (a savepoint costs more than a partial
update, and most rounds fail nothing). No unit is answered before that commit, so an
acknowledged write survives kill -9 exactly as with a transaction per request.

Units run one after the other on one connection, so each sees the writes of the units before
it, as if the requests had come one by one.

On SQLite a round runs on the event loop's own thread: its statements take microseconds,
and handing each round to a worker thread cost more than the round (the two threads contend
for the interpreter lock). It never waits there: the writer lock below is tried without
blocking, SQLite's write lock with a busy timeout of 0, and a round that would wait for
either, or whose unit fails, runs in a worker thread as on PostgreSQL, whose network round
trips stay off the loop. A batch write of many entities runs on the loop too: in a thread,
it would give up the interpreter lock at each row SQLite writes and wait for it again while
the loop parses the next batch, so the round, and the writer lock with it, took several
times longer (30,000 against 40,000 entities a second with two workers).

The workers of one node (`serve --workers N`) share a SQLite file, and SQLite makes a writer
that finds the file locked sleep and retry (1, 2, 5 ... 100 ms): two workers' rounds then
wait on each other's sleeps, and two workers served fewer updates than one. A round on a
SQLite file first takes an exclusive `flock` on a lock file beside it, which wakes the next
worker the moment the last one commits.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from citybrain.core.db import BUSY_TIMEOUT_MS
from citybrain.core.writer_lock import (
    release_writer_lock,
    try_writer_lock,
    wait_writer_lock,
    writer_lock_path,
)
from citybrain.hub.ngsild import subscriptions

T = TypeVar("T")
MAX_ROUND = 256  # units per transaction: bounds how long one round holds the write lock
# entities per transaction: a batch of 1,000 is one unit of weight 1,000, and a round takes
# units up to this weight (at least one)
MAX_ROUND_WEIGHT = 4096


@dataclass
class _Unit:
    work: Callable[[Connection], Any]
    context: contextvars.Context
    future: asyncio.Future[Any]
    weight: int = 1


@dataclass
class _Outcome:
    unit: _Unit
    value: Any = None
    error: BaseException | None = None


class GroupCommitter:
    """Runs the write units of one event loop in shared transactions, one commit a round."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lock_path = writer_lock_path(engine)
        # SQLite rounds run on the loop's thread: statements of microseconds, and handing
        # each round to a thread cost more (the two threads contend for the interpreter)
        # than the round itself; PostgreSQL's network round trips stay off the loop
        self.inline = engine.dialect.name == "sqlite"
        self.pending: list[_Unit] = []
        self.draining = False
        self.rounds = 0  # how many commits served the units so far (tests look at it)
        self._commit_pool: ThreadPoolExecutor | None = None  # commits of inline rounds

    async def run(self, work: Callable[[Connection], T], weight: int = 1) -> T:
        """Run work(conn) in the next round; return its result once the round is committed.

        weight: how many entities the work writes (a batch's size), which bounds the round.
        """
        loop = asyncio.get_running_loop()
        # the copied context carries the request's writer (gated.writer) into the round
        unit = _Unit(work, contextvars.copy_context(), loop.create_future(), max(1, weight))
        self.pending.append(unit)
        if not self.draining:
            self.draining = True
            loop.create_task(self._drain())
        result: T = await unit.future
        return result

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                lock = try_writer_lock(self.lock_path)
                if lock is False:  # another worker's round: wait for it off the loop
                    lock = await loop.run_in_executor(None, wait_writer_lock, self.lock_path)
                try:
                    units = self._take()
                    outcomes = None
                    if self.inline:
                        written = self._inline_round(units)
                        if written is not None:
                            outcomes = await self._commit_off_loop(*written)
                    if outcomes is None:
                        outcomes = await loop.run_in_executor(None, self._locked_round, units)
                finally:
                    release_writer_lock(lock)
                assert outcomes is not None
                for outcome in outcomes:
                    if outcome.unit.future.done():
                        continue  # the request went away (client disconnected)
                    if outcome.error is not None:
                        outcome.unit.future.set_exception(outcome.error)
                    else:
                        outcome.unit.future.set_result(outcome.value)
        finally:
            self.draining = False
            for unit in self.pending:  # only if the loop is closing: nothing may hang
                if not unit.future.done():
                    unit.future.cancel()
            self.pending = []

    def _take(self) -> list[_Unit]:
        """The next round's units: at most MAX_ROUND, and MAX_ROUND_WEIGHT unless just one."""
        count, weight = 0, 0
        for unit in self.pending[:MAX_ROUND]:
            if count and weight + unit.weight > MAX_ROUND_WEIGHT:
                break
            count += 1
            weight += unit.weight
        units, self.pending = self.pending[:count], self.pending[count:]
        return units

    def _locked_round(self, units: list[_Unit]) -> list[_Outcome]:
        """One transaction for the units, one commit (in a worker thread: it may wait)."""
        try:
            conn = self.engine.connect()
        except Exception as exc:
            return [_Outcome(unit, error=exc) for unit in units]
        try:
            self._begin(conn)
            # most rounds fail no unit: run them without a savepoint each (a savepoint and its
            # release cost more than a partial update); on the first failure roll the round
            # back and run it again with each unit in its own savepoint
            outcomes, failure = self._run(conn, units, isolated=False)
            if failure is not None:
                conn.rollback()
                if len(units) == 1:
                    return [_Outcome(units[0], error=failure)]
                self._begin(conn)
                outcomes, _ = self._run(conn, units, isolated=True)
        except Exception as exc:
            _close(conn)
            return [_Outcome(unit, error=exc) for unit in units]
        return self._commit_round(conn, outcomes)

    def _inline_round(self, units: list[_Unit]) -> tuple[Connection, list[_Outcome]] | None:
        """Run a round's statements on the loop's thread, uncommitted; None if it cannot be.

        The round never waits here: None if SQLite's write lock is held elsewhere or a unit
        fails (the round then runs again in a thread, with a savepoint per unit).
        """
        try:
            conn = self.engine.connect()
        except Exception:  # noqa: BLE001 - the thread's round meets it again and answers it
            return None
        try:
            if self._begin(conn, wait=False):
                outcomes, failure = self._run(conn, units, isolated=False)
                if failure is None:
                    return conn, outcomes
                conn.rollback()
        except Exception:  # noqa: BLE001 - as above
            pass
        _close(conn)
        return None

    def _commit_round(self, conn: Connection, outcomes: list[_Outcome]) -> list[_Outcome]:
        """Commit a round and close its connection; a failed commit fails every unit."""
        try:
            try:
                conn.commit()
            except Exception:
                # a refused COMMIT can leave the driver's transaction open: never pool that
                conn.invalidate()
                raise
            self.rounds += 1
            return outcomes
        except Exception as exc:
            # the transaction did not commit: no unit of this round is acknowledged
            return [_Outcome(outcome.unit, error=exc) for outcome in outcomes]
        finally:
            _close(conn)

    async def _commit_off_loop(self, conn: Connection, outcomes: list[_Outcome]) -> list[_Outcome]:
        """Commit an inline round on the committer thread while the loop serves on.

        The statements took the loop a fraction of a millisecond; the commit is SQLite's
        fsync, which holds no interpreter lock, and the writes that arrive meanwhile make the
        next round.
        """
        if self._commit_pool is None:
            self._commit_pool = ThreadPoolExecutor(1, thread_name_prefix="ngsild-commit")
        done = self._commit_pool.submit(self._commit_round, conn, outcomes)
        try:
            return await asyncio.shield(asyncio.wrap_future(done))
        except asyncio.CancelledError:
            done.result()  # the loop is stopping: the file is left consistent, the lock free
            raise

    @staticmethod
    def _begin(conn: Connection, wait: bool = True) -> bool:
        """Begin the round's transaction; False if it would have to wait and may not."""
        conn.info[subscriptions.ROUND_ROWS] = {}
        if conn.dialect.name != "sqlite":
            return True
        # the driver starts no transaction before a SAVEPOINT, and the release of an
        # outermost savepoint would commit: begin explicitly, as a writer
        if wait:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return True
        conn.exec_driver_sql("PRAGMA busy_timeout=0")
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except OperationalError:
            conn.rollback()
            return False
        finally:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return True

    @staticmethod
    def _run(
        conn: Connection, units: list[_Unit], *, isolated: bool
    ) -> tuple[list[_Outcome], Exception | None]:
        """Run the units; a failure outside savepoints stops the run and is returned."""
        outcomes: list[_Outcome] = []
        for unit in units:
            if not isolated:
                try:
                    outcomes.append(_Outcome(unit, value=unit.context.run(unit.work, conn)))
                except Exception as exc:
                    return outcomes, exc
                continue
            savepoint = conn.begin_nested()
            try:
                value = unit.context.run(unit.work, conn)
            except Exception as exc:
                savepoint.rollback()
                # what the unit read of the subscriptions may have gone with it
                conn.info[subscriptions.ROUND_ROWS] = {}
                outcomes.append(_Outcome(unit, error=exc))
            else:
                savepoint.commit()
                outcomes.append(_Outcome(unit, value=value))
        return outcomes, None


def _close(conn: Connection) -> None:
    """Close a round's connection, dropping what the round kept on it."""
    if not conn.invalidated:  # an invalidated connection's info is gone with it
        conn.info.pop(subscriptions.ROUND_ROWS, None)
    conn.close()


def committer(state: Any, engine: Engine) -> GroupCommitter:
    """Return the committer of an app's engine for the running event loop (kept on its state)."""
    loop = asyncio.get_running_loop()
    per_loop: weakref.WeakKeyDictionary[Any, GroupCommitter] | None = getattr(
        state, "ngsild_committers", None
    )
    if per_loop is None:
        per_loop = weakref.WeakKeyDictionary()
        state.ngsild_committers = per_loop
    found = per_loop.get(loop)
    if found is None or found.engine is not engine:
        found = per_loop[loop] = GroupCommitter(engine)
    return found
