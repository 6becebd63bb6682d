"""Transient entities and attribute instances (clause 4.22): expiresAt, and the reaper.

An entity or an attribute instance may carry `expiresAt`. Reads leave out what has expired
at once (`entities.live`); the node's reaper then removes it from the store, about once a
second: an expired entity's current state goes (its id is free again) while its history
stays; an expired attribute instance goes with its history. What is due is found through
`ngsild_expiries`, one row per transient entity at its earliest expiry, written with the
entity. A row may be stale (the entity changed since): the reaper reads the entity, does
what is due, and sets the row to the next expiry or drops it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from citybrain.hub.ngsild.entities import ENTITY_MEMBERS, earliest_expiry, instances, live
from citybrain.hub.ngsild.models import (
    ngsild_entities,
    ngsild_entity_types,
    ngsild_expiries,
    ngsild_history,
)

log = logging.getLogger(__name__)
# how often a node looks for what has expired
REAP_SECONDS = 1.0


def note_expiry(conn: Connection, tenant: str, entity: dict[str, Any]) -> None:
    """Record when a transient entity is next due (nothing for a durable one)."""
    at = earliest_expiry(entity)
    if at is not None:
        _set_due(conn, tenant, entity["id"], at)


def _set_due(conn: Connection, tenant: str, entity_id: str, at: datetime) -> None:
    values = {"tenant": tenant, "entity_id": entity_id, "at": at}
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(ngsild_expiries).values(**values)
    conn.execute(
        stmt.on_conflict_do_update(index_elements=["tenant", "entity_id"], set_={"at": at})
    )


def _drop_due(conn: Connection, tenant: str, entity_id: str) -> None:
    e = ngsild_expiries.c
    conn.execute(delete(ngsild_expiries).where(e.tenant == tenant, e.entity_id == entity_id))


def _remove_current_state(conn: Connection, tenant: str, entity_id: str) -> None:
    """Delete an entity's row and type rows; its history stays (clause 4.22)."""
    t = ngsild_entities.c
    conn.execute(delete(ngsild_entities).where(t.tenant == tenant, t.id == entity_id))
    y = ngsild_entity_types.c
    conn.execute(delete(ngsild_entity_types).where(y.tenant == tenant, y.id == entity_id))
    _drop_due(conn, tenant, entity_id)


def clear_if_expired(conn: Connection, tenant: str, entity: dict[str, Any], now: datetime) -> bool:
    """Remove an expired entity the reaper has not reached yet; True if it was removed."""
    if live(entity, now) is not None:
        return False
    _remove_current_state(conn, tenant, entity["id"])
    return True


def _expired_instances(
    entity: dict[str, Any], kept: dict[str, Any]
) -> list[tuple[str, str | None]]:
    """The (attribute, datasetId) pairs whose instances expired."""
    gone: list[tuple[str, str | None]] = []
    for name, attr in entity.items():
        if name in ENTITY_MEMBERS:
            continue
        still = {i.get("datasetId") for i in instances(kept.get(name))}
        gone += [
            (name, i.get("datasetId")) for i in instances(attr) if i.get("datasetId") not in still
        ]
    return gone


def _reap_one(conn: Connection, tenant: str, entity_id: str, now: datetime) -> None:
    t = ngsild_entities.c
    row = conn.execute(
        select(t.entity).where(t.tenant == tenant, t.id == entity_id).with_for_update()
    ).first()
    if row is None:
        _drop_due(conn, tenant, entity_id)
        return
    entity = dict(row.entity)
    kept = live(entity, now)
    if kept is None:
        _remove_current_state(conn, tenant, entity_id)
        return
    gone = _expired_instances(entity, kept)
    if gone:
        conn.execute(
            update(ngsild_entities)
            .where(t.tenant == tenant, t.id == entity_id)
            .values(entity=kept, modified_at=now)
        )
        h = ngsild_history.c
        for name, dataset_id in gone:
            # a transient attribute instance takes its history with it
            same_dataset = (
                h.dataset_id.is_(None) if dataset_id is None else h.dataset_id == dataset_id
            )
            conn.execute(
                delete(ngsild_history).where(
                    h.tenant == tenant, h.entity_id == entity_id, h.attribute == name, same_dataset
                )
            )
    following = earliest_expiry(kept)
    if following is None:
        _drop_due(conn, tenant, entity_id)
    else:
        _set_due(conn, tenant, entity_id, following)


def reap(*, engine: Engine, now: datetime | None = None, batch: int = 500) -> int:
    """Remove what has expired by `now`; return how many entities were looked at."""
    now = now or datetime.now(UTC)
    e = ngsild_expiries.c
    with engine.connect() as conn:
        due = list(
            conn.execute(
                select(e.tenant, e.entity_id).where(e.at <= now).order_by(e.at).limit(batch)
            )
        )
    for tenant, entity_id in due:
        with engine.begin() as conn:
            _reap_one(conn, tenant, entity_id, now)
    return len(due)


async def run(engine: Engine) -> None:
    """Reap expired entities and attribute instances until cancelled."""
    while True:
        try:
            await asyncio.to_thread(reap, engine=engine)
        except Exception:  # a failed pass is retried at the next one
            log.exception("reaping expired entities failed")
        await asyncio.sleep(REAP_SECONDS)
