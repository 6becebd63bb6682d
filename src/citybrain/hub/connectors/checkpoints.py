"""Checkpoints let a connector resume where it stopped and skip what it already applied."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select, update

from citybrain.hub.connectors.models import connector_checkpoints as cp


def read(conn: Connection, connector: str, key: str) -> str | None:
    """Return the checkpoint of a connector for one key."""
    row = conn.execute(
        select(cp.c.value).where(cp.c.connector == connector, cp.c.key == key)
    ).first()
    return None if row is None else str(row.value)


def write(conn: Connection, connector: str, key: str, value: str) -> None:
    """Move a checkpoint forward (in the caller's transaction, with the data it covers)."""
    now = datetime.now(UTC)
    done = conn.execute(
        update(cp)
        .where(cp.c.connector == connector, cp.c.key == key)
        .values(value=value, updated_at=now)
    ).rowcount
    if not done:
        conn.execute(insert(cp).values(connector=connector, key=key, value=value, updated_at=now))
