"""The group commit's executemany stores what SQLAlchemy's own would, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError, StatementError

from citybrain.core.db import create_engine_for
from citybrain.scenes.medical_insurance.group_commit import GroupWriter, Inserts, executemany


def _table(name: str) -> tuple[MetaData, Table]:
    meta = MetaData()
    return meta, Table(
        name,
        meta,
        Column("id", String(32), primary_key=True),
        Column("paid", Boolean, nullable=False),
        Column("amount", Float, nullable=False),
        Column("record", JSON, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("note", String(32)),
    )


def _rows(tag: str) -> list[dict[str, object]]:
    moment = datetime(2026, 12, 1, 8, 30, 15, 123456, tzinfo=UTC)
    return [
        {
            "id": f"{tag}{i}",
            "paid": i % 2 == 0,
            "amount": 12.04 * i,
            "record": {"items": [{"code": "XD00001", "n": i}], "名": "张"},
            "created_at": moment,
            "note": None if i % 3 else "x",
        }
        for i in range(5)
    ]


def _same_as_sqlalchemy(url: str) -> None:
    engine = create_engine_for(url)
    meta, table = _table("t_group_commit")
    meta.drop_all(engine)
    meta.create_all(engine)
    try:
        with engine.begin() as conn:
            conn.execute(insert(table), _rows("a"))  # SQLAlchemy's own
            executemany(conn, insert(table), _rows("b"))  # ours
        with engine.connect() as conn:
            got = {r.id: r._asdict() for r in conn.execute(table.select())}
        for i in range(5):
            theirs, ours = dict(got[f"a{i}"]), dict(got[f"b{i}"])
            theirs.pop("id"), ours.pop("id")
            assert ours == theirs
    finally:
        meta.drop_all(engine)
        engine.dispose()


def test_sqlite(tmp_path: Path) -> None:
    _same_as_sqlalchemy(f"sqlite:///{tmp_path / 'db.sqlite'}")


def test_postgresql(postgres_url: str) -> None:
    _same_as_sqlalchemy(postgres_url)


def test_other_keys_go_the_usual_way_and_a_taken_key_is_an_integrity_error(
    tmp_path: Path,
) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'db.sqlite'}")
    meta, table = _table("t_mixed")
    meta.create_all(engine)
    rows = _rows("c")
    rows[1] = {k: v for k, v in rows[1].items() if k != "note"}
    # SQLAlchemy's own executemany, with its own refusal of a row without a value
    with pytest.raises(StatementError, match="note"), engine.begin() as conn:
        executemany(conn, insert(table), rows)
    with engine.begin() as conn:
        executemany(conn, insert(table), _rows("c"))
    # what the group commit's retry and the settlement's answer rely on
    with pytest.raises(IntegrityError), engine.begin() as conn:
        executemany(conn, insert(table), _rows("c")[:1])


def _writer_table(tmp_path: Path) -> tuple[Engine, Table]:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'w.db'}")
    meta = MetaData()
    table = Table("w", meta, Column("k", String(16), primary_key=True))
    meta.create_all(engine)
    return engine, table


def _keys(engine: Engine, table: Table) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(table.c.k)).scalars())


def test_awaited_writes_commit_as_one_batch_on_the_loop(tmp_path: Path) -> None:
    engine, table = _writer_table(tmp_path)
    committed: list[list[object]] = []
    writer = GroupWriter(engine, on_commit=committed.append)

    async def scenario() -> list[object]:
        writes = [Inserts([(insert(table), [{"k": f"k{i}"}])], result=i) for i in range(6)]
        return list(await asyncio.gather(*(writer.run_async(w) for w in writes)))

    assert asyncio.run(scenario()) == list(range(6))
    assert writer.inline_batches == 1 and committed == [list(range(6))]
    assert writer._thread is None  # the writer thread was never needed
    assert _keys(engine, table) == [f"k{i}" for i in range(6)]


def test_a_failing_write_stays_its_own_and_a_locked_file_waits_off_the_loop(
    tmp_path: Path,
) -> None:
    engine, table = _writer_table(tmp_path)
    writer = GroupWriter(engine)
    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None, check_same_thread=False)
    other.execute("INSERT INTO w VALUES ('taken')")

    async def scenario() -> tuple[list[object], int]:
        other.execute("BEGIN IMMEDIATE")  # another process is writing
        writes = [Inserts([(insert(table), [{"k": k}])], result=k) for k in ("a", "taken", "b")]
        jobs = asyncio.gather(*(writer.run_async(w) for w in writes), return_exceptions=True)
        ticks = 0
        deadline = time.monotonic() + 1.0
        for _ in range(10):  # the loop goes on meanwhile
            await asyncio.sleep(0.03)
            ticks += time.monotonic() < deadline
        other.execute("COMMIT")
        return list(await jobs), ticks

    results, ticks = asyncio.run(scenario())
    other.close()
    writer.close()
    assert ticks == 10 and writer.inline_batches == 0
    assert results[0] == "a" and results[2] == "b" and isinstance(results[1], IntegrityError)
    assert _keys(engine, table) == ["a", "b", "taken"]


def test_another_workers_commit_is_waited_for_off_the_loop(tmp_path: Path) -> None:
    import fcntl
    import os

    engine, table = _writer_table(tmp_path)
    writer = GroupWriter(engine)
    fd = os.open(f"{tmp_path / 'w.db'}.writer-lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another worker of the node is committing
    seen: list[list[str]] = []

    async def scenario() -> tuple[list[object], int]:
        writes = [Inserts([(insert(table), [{"k": k}])], result=k) for k in ("a", "b")]
        jobs = asyncio.gather(*(writer.run_async(w) for w in writes))
        ticks = 0
        deadline = time.monotonic() + 1.0
        for _ in range(10):
            await asyncio.sleep(0.03)
            ticks += time.monotonic() < deadline
        seen.append(_keys(engine, table))
        os.close(fd)
        return list(await jobs), ticks

    results, ticks = asyncio.run(scenario())
    writer.close()
    # the batch waited for the lock on the committer thread, then was written as usual
    assert results == ["a", "b"] and ticks == 10 and writer.inline_batches == 1
    assert writer._thread is None
    assert seen == [[]] and _keys(engine, table) == ["a", "b"]


def test_the_commit_waits_off_the_loop_and_what_arrives_meanwhile_is_the_next_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from citybrain.scenes.medical_insurance import group_commit

    engine, table = _writer_table(tmp_path)
    committed: list[list[object]] = []
    writer = GroupWriter(engine, on_commit=committed.append)
    real = group_commit._commit_and_close
    threads: list[str] = []

    def slow_fsync(conn: object) -> bool:
        threads.append(threading.current_thread().name)
        time.sleep(0.3)  # a slow disk
        return real(conn)  # type: ignore[arg-type]

    monkeypatch.setattr(group_commit, "_commit_and_close", slow_fsync)

    async def scenario() -> tuple[list[object], int]:
        first = [
            writer.run_async(Inserts([(insert(table), [{"k": f"a{i}"}])], result=i))
            for i in range(3)
        ]
        jobs = [asyncio.ensure_future(w) for w in first]
        ticks = 0
        for _ in range(5):  # the loop serves on while the first batch's commit waits
            await asyncio.sleep(0.02)
            ticks += 1
        later = [
            writer.run_async(Inserts([(insert(table), [{"k": f"b{i}"}])], result=10 + i))
            for i in range(3)
        ]
        return list(await asyncio.gather(*jobs, *later)), ticks

    started = time.monotonic()
    results, ticks = asyncio.run(scenario())
    writer.close()
    assert results == [0, 1, 2, 10, 11, 12] and ticks == 5
    assert time.monotonic() - started < 1.5
    # two commits, each on the committer thread: the second took all that came meanwhile
    assert committed == [[0, 1, 2], [10, 11, 12]] and writer.inline_batches == 2
    assert all(name.startswith("medins-commit") for name in threads) and len(threads) == 2
    assert writer._thread is None
    assert len(_keys(engine, table)) == 6
