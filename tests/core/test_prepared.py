"""Prepared statements on SQLite's own cursor: the same rows, errors and transactions as
SQLAlchemy's execute, and SQLAlchemy's execute itself on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from citybrain.core.db import create_engine_for
from citybrain.core.prepared import Prepared
from conftest import fresh_schema

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("doc", JSON, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("score", Float),
)
INSERT = Prepared(insert(things), keys=("id", "doc", "at", "score"))
READ = Prepared(
    select(things.c.doc, things.c.at, things.c.score).where(things.c.id == bindparam("b_id"))
)
RESCORE = Prepared(
    update(things).where(things.c.id == bindparam("b_id")).values(score=bindparam("s"))
)
AT = datetime(2026, 12, 8, 3, 4, 5, 678901, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A fresh table on each backend."""
    if request.param == "sqlite":
        engine = create_engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        engine = create_engine_for(fresh_schema(request.getfixturevalue("postgres_url"), "p"))
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def _row(i: int, n: int | None = None) -> dict[str, object]:
    doc = {"n": i if n is None else n, "name": "水质", "tags": [1, None]}
    return {"id": f"t{i}", "doc": doc, "at": AT, "score": i}


def test_rows_are_stored_as_sqlalchemy_stores_them(store: Engine) -> None:
    with store.begin() as conn:
        INSERT.executemany(conn, [_row(1, n=7), _row(2)])
        conn.execute(insert(things), [_row(3, n=7)])
    with store.connect() as conn:
        # the stored values themselves (JSON text, time stamp form), not only what reads return
        stored = dict(
            (r[0], tuple(r[1:]))
            for r in conn.execute(
                text("SELECT id, CAST(doc AS TEXT), CAST(at AS TEXT) FROM things")
            )
        )
        assert stored["t1"] == stored["t3"]
        by_sqlalchemy = conn.execute(
            select(things.c.doc, things.c.at, things.c.score).where(things.c.id == "t2")
        ).one()
        assert READ.first(conn, {"b_id": "t2"}) == tuple(by_sqlalchemy)
        assert READ.first(conn, {"b_id": "nothing"}) is None


def test_a_write_outside_a_transaction_is_committed_by_the_callers_commit(store: Engine) -> None:
    with store.connect() as conn:
        INSERT.executemany(conn, [_row(1)])
        assert RESCORE.execute(conn, {"b_id": "t1", "s": 9.5}) == 1
        assert RESCORE.execute(conn, {"b_id": "t9", "s": 1.0}) == 0
        conn.commit()
    with store.connect() as conn:
        assert READ.first(conn, {"b_id": "t1"})[2] == 9.5  # type: ignore[index]


def test_driver_errors_are_sqlalchemys_and_roll_back_with_the_transaction(store: Engine) -> None:
    with store.begin() as conn:
        INSERT.executemany(conn, [_row(1)])
    with pytest.raises(IntegrityError), store.begin() as conn:
        INSERT.executemany(conn, [_row(2)])
        INSERT.executemany(conn, [_row(1)])  # the key is taken
    with store.connect() as conn:
        assert READ.first(conn, {"b_id": "t2"}) is None  # the first insert went with it
