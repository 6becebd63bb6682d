"""The operational store on SQLite and on a real PostgreSQL: migrations, writes, durability."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from citybrain.core.db import check_connection, create_engine_for, current_revision, upgrade
from citybrain.core.errors import BadInput, ServiceUnavailable
from citybrain.node.models import datasets
from conftest import fresh_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Yield a fresh store URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    yield fresh_schema(request.getfixturevalue("postgres_url"))


def _row(name: str) -> dict[str, object]:
    stamp = datetime.now(UTC)
    return {
        "department": "public_security",
        "name": name,
        "path": f"public_security/{name}.parquet",
        "rows": 1,
        "bytes": 1,
        "columns": [],
        "registered_at": stamp,
        "updated_at": stamp,
    }


def test_migrations_reads_writes_and_conflicts(db_url: str) -> None:
    engine = create_engine_for(db_url)
    check_connection(engine)
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == _head_revision()
    upgrade(engine)  # idempotent
    with engine.begin() as conn:
        conn.execute(insert(datasets).values(**_row("residents")))
    with engine.connect() as conn:
        assert conn.execute(select(datasets.c.name)).scalars().all() == ["residents"]
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(datasets).values(**_row("residents")))
    engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'wal.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL


WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from sqlalchemy import insert
    from citybrain.core.db import create_engine_for
    from citybrain.node.models import datasets

    engine = create_engine_for(sys.argv[1])
    i = 0
    while True:
        stamp = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(insert(datasets).values(
                department="d", name=f"t{i}", path="p", rows=i, bytes=0, columns=[],
                registered_at=stamp, updated_at=stamp))
        print(f"ack {i}", flush=True)
        i += 1
    """
)


def test_acknowledged_writes_survive_kill_9(db_url: str) -> None:
    engine = create_engine_for(db_url)
    upgrade(engine)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, db_url], stdout=subprocess.PIPE, text=True
    )
    acked: list[int] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        acked.append(int(line.split()[1]))
        if len(acked) >= 40:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    engine.dispose()
    engine = create_engine_for(db_url)
    with engine.connect() as conn:
        names = set(conn.execute(select(datasets.c.name)).scalars())
        count = conn.execute(select(func.count()).select_from(datasets)).scalar_one()
    assert {f"t{i}" for i in acked} <= names
    assert count >= len(acked)
    engine.dispose()


def test_unreachable_database_is_one_sentence() -> None:
    engine = create_engine_for("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(ServiceUnavailable) as info:
        check_connection(engine)
    assert "cannot reach the database" in info.value.message
    assert "\n" not in info.value.message


def test_unsupported_url() -> None:
    with pytest.raises(BadInput):
        create_engine_for("mysql://x@y/z")


def test_password_never_in_messages() -> None:
    engine = create_engine_for("postgresql+psycopg://user:secret@127.0.0.1:1/none")
    with pytest.raises(ServiceUnavailable) as info:
        check_connection(engine)
    assert "secret" not in info.value.message


def test_engine_type(tmp_path: Path) -> None:
    assert isinstance(create_engine_for(f"sqlite:///{tmp_path / 'x.db'}"), Engine)


def _head_revision() -> str:
    """Return the newest revision among the packaged migrations (one linear chain)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from citybrain.core.db import migrations_dir

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1, f"the migrations must form one chain, not {heads}"
    return str(heads[0])
