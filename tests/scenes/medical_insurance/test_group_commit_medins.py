"""The group commit's executemany stores what SQLAlchemy's own would, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import JSON, Boolean, Column, DateTime, Float, MetaData, String, Table, insert
from sqlalchemy.exc import IntegrityError, StatementError

from citybrain.core.db import create_engine_for
from citybrain.scenes.medical_insurance.group_commit import executemany


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
