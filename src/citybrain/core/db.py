"""The operational store: SQLAlchemy 2 Core engines (SQLite in WAL mode, or PostgreSQL)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from citybrain.core.errors import BadInput, ServiceUnavailable

# A naming convention makes constraint names identical on SQLite and PostgreSQL, so
# migrations can refer to them.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


# how long a SQLite writer waits for another's lock before it fails
BUSY_TIMEOUT_MS = 10_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL for concurrent readers; synchronous=FULL so an acknowledged commit survives a crash."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def json_dumps(value: object) -> str:
    """Serialise a JSON column value (orjson, with the standard library as fallback)."""
    # orjson: JSON columns (entities, history) are most of a write's cost with the stdlib
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        # integers beyond 64 bits and other rarities: the standard library takes them
        return json.dumps(value)


def create_engine_for(url: str) -> Engine:
    """Create an engine for a SQLite or PostgreSQL URL with CityBrain's connection settings."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                url,
                connect_args={"timeout": 10},
                json_serializer=json_dumps,
                json_deserializer=orjson.loads,
            )
            event.listen(engine, "connect", _sqlite_pragmas)
        elif url.startswith("postgresql+psycopg"):
            engine = create_engine(
                url,
                pool_pre_ping=True,
                pool_size=5,
                connect_args={"connect_timeout": 5},
                json_serializer=json_dumps,
                json_deserializer=orjson.loads,
            )
        else:
            raise BadInput(
                f"unsupported database URL {_redact(url)}; use sqlite:/// or postgresql+psycopg://"
            )
    except (ArgumentError, NoSuchModuleError) as exc:
        raise BadInput(f"invalid database URL {_redact(url)}: {exc}") from None
    except OSError as exc:
        raise ServiceUnavailable(f"cannot create the database folder: {exc.strerror}") from None
    return engine


def check_connection(engine: Engine) -> None:
    """Open one connection, or raise ServiceUnavailable with one clear sentence."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ServiceUnavailable(
            f"cannot reach the database at {_redact(str(engine.url))}: {reason}"
        ) from None


def _redact(url: str) -> str:
    """Hide a password in a URL before it reaches a message or a log."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in creds else ''}@{host}"


def migrations_dir() -> Path:
    """Return the folder of the packaged Alembic migrations."""
    return Path(str(resources.files("citybrain").joinpath("migrations")))


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the Alembic migrations up to a revision (head by default)."""
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """Return the revision the store is at, or None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
