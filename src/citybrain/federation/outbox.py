"""The durable outbox: messages to peers written with the change they carry, delivered later.

`enqueue` runs inside the caller's transaction, so a task and the message that carries it
exist together or not at all. `drain_once` delivers what is due, in `seq` order per peer,
with a peer token; a failure backs the head message off exponentially and stops that peer
for the round, so later messages never overtake it. `run` is the node's background loop.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Connection, Engine, func, insert, select, update

from citybrain.core.config import Settings
from citybrain.federation import trust
from citybrain.federation.models import (
    DrainReport,
    MessageKind,
    OutboxState,
    TaskStatus,
    escalations,
    outbox,
    tasks,
)
from citybrain.governance.audit import service as audit

log = logging.getLogger("citybrain.federation")

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
DRAIN_INTERVAL_SECONDS = 0.5
REQUEST_TIMEOUT_SECONDS = 3.0
BATCH = 500
ROUTES = {
    MessageKind.task: "/api/federation/inbox/tasks",
    MessageKind.task_status: "/api/federation/inbox/task-status",
    MessageKind.escalation: "/api/federation/inbox/escalations",
}
# answers that say the message itself is wrong: sending it again cannot help
REFUSED_STATUSES = frozenset({400, 404, 413, 422})


def new_id() -> str:
    """Return a fresh 32-hex-digit id for a message, task or escalation."""
    return uuid.uuid4().hex


def backoff(attempts: int) -> timedelta:
    """Return how long to wait after the n-th failed attempt: 1 s, 2 s, 4 s ... at most 60 s."""
    seconds = BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1)
    return timedelta(seconds=min(seconds, BACKOFF_MAX_SECONDS))


def enqueue(
    conn: Connection,
    *,
    peer_code: str,
    kind: MessageKind,
    resource_id: str,
    payload: dict[str, Any],
    message_id: str,
    now: datetime | None = None,
) -> None:
    """Add a message to the outbox inside the caller's transaction."""
    stamp = trust.utc(now)
    conn.execute(
        insert(outbox).values(
            message_id=message_id,
            peer_code=peer_code,
            kind=kind.value,
            resource_id=resource_id,
            payload=payload,
            state=OutboxState.pending.value,
            attempts=0,
            next_attempt_at=stamp,
            created_at=stamp,
        )
    )


def nudge(*, engine: Engine, peer_code: str, now: datetime | None = None) -> int:
    """Make every pending message to a peer due now (it has just been in touch); return how many."""
    with engine.begin() as conn:
        result = conn.execute(
            update(outbox)
            .where(outbox.c.peer_code == peer_code, outbox.c.state == OutboxState.pending.value)
            .values(next_attempt_at=trust.utc(now))
        )
    return int(result.rowcount or 0)


def pending_counts(*, engine: Engine) -> dict[str, int]:
    """Return the number of pending messages per peer."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(outbox.c.peer_code, func.count())
            .where(outbox.c.state == OutboxState.pending.value)
            .group_by(outbox.c.peer_code)
        )
        return {str(code): int(n) for code, n in rows}


def _delivered(conn: Connection, kind: str, resource_id: str, stamp: datetime) -> None:
    """Reflect on the sender's copy that the receiver now holds the item."""
    if kind == MessageKind.task.value:
        row = conn.execute(
            select(tasks.c.history).where(
                tasks.c.id == resource_id, tasks.c.status == TaskStatus.pending.value
            )
        ).first()
        if row is not None:
            history = [
                *row.history,
                {
                    "at": stamp.isoformat(),
                    "status": TaskStatus.received.value,
                    "note": "delivered",
                    "by": "outbox",
                    "node": "",
                },
            ]
            conn.execute(
                update(tasks)
                .where(tasks.c.id == resource_id)
                .values(status=TaskStatus.received.value, history=history, updated_at=stamp)
            )
    elif kind == MessageKind.escalation.value:
        conn.execute(
            update(escalations)
            .where(escalations.c.id == resource_id, escalations.c.status == "pending")
            .values(status="delivered")
        )


def _deliver(
    client: httpx.Client, settings: Settings, peer: dict[str, Any], message: Any
) -> httpx.Response:
    token = trust.peer_token(
        data_dir=settings.data_dir, caller=settings.code, audience=peer["code"]
    )
    return client.post(
        peer["url"] + ROUTES[MessageKind(message.kind)],
        json=message.payload,
        headers={"Authorization": f"Bearer {token}"},
    )


def drain_once(
    *,
    engine: Engine,
    settings: Settings,
    client: httpx.Client | None = None,
    now: datetime | None = None,
) -> DrainReport:
    """Deliver every due message once, in order per peer; return what was sent and what failed."""
    stamp = trust.utc(now)
    report = DrainReport()
    with engine.connect() as conn:
        rows = list(
            conn.execute(
                select(outbox)
                .where(outbox.c.state == OutboxState.pending.value)
                .order_by(outbox.c.seq)
                .limit(BATCH)
            )
        )
    if not rows:
        return report
    by_peer: dict[str, list[Any]] = {}
    for row in rows:
        by_peer.setdefault(row.peer_code, []).append(row)
    own_client = client is None
    http = client or httpx.Client(timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        for peer_code, messages in by_peer.items():
            try:
                peer = trust.get_peer(engine=engine, code=peer_code)
            except Exception:  # noqa: BLE001 - a removed peer must not stop the others
                report.skipped_peers.append(peer_code)
                continue
            for message in messages:
                if trust.utc(message.next_attempt_at) > stamp:
                    # the head is backing off; later messages wait behind it
                    report.skipped_peers.append(peer_code)
                    break
                if not _attempt(engine, settings, http, peer, message, stamp, report):
                    break
    finally:
        if own_client:
            http.close()
    return report


def _attempt(
    engine: Engine,
    settings: Settings,
    http: httpx.Client,
    peer: dict[str, Any],
    message: Any,
    stamp: datetime,
    report: DrainReport,
) -> bool:
    """Try one message; return False when the peer should not be tried again this round."""
    attempts = message.attempts + 1
    error: str | None = None
    status: int | None = None
    try:
        response = _deliver(http, settings, peer, message)
        status = response.status_code
        if status >= 300:
            error = f"HTTP {status}: {response.text[:300]}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    where = outbox.c.seq == message.seq
    if error is None:
        with engine.begin() as conn:
            conn.execute(
                update(outbox)
                .where(where)
                .values(
                    state=OutboxState.sent.value,
                    attempts=attempts,
                    sent_at=stamp,
                    last_error=None,
                )
            )
            _delivered(conn, message.kind, message.resource_id, stamp)
            trust.touch_peer(engine=conn, code=peer["code"], now=stamp)
        report.sent += 1
        audit.append(
            data_dir=settings.data_dir,
            principal=None,
            action="federation.deliver",
            resource=f"{message.kind}:{message.resource_id}",
            result="ok",
            detail={"peer": peer["code"], "message_id": message.message_id, "attempts": attempts},
        )
        return True
    if status in REFUSED_STATUSES:
        with engine.begin() as conn:
            conn.execute(
                update(outbox)
                .where(where)
                .values(state=OutboxState.refused.value, attempts=attempts, last_error=error)
            )
            # the peer answered, so it is reachable; the message was wrong
            trust.touch_peer(engine=conn, code=peer["code"], now=stamp)
        report.refused += 1
        log.error(
            "peer refused a message",
            extra={"peer": peer["code"], "message_id": message.message_id, "error": error},
        )
        audit.append(
            data_dir=settings.data_dir,
            principal=None,
            action="federation.deliver",
            resource=f"{message.kind}:{message.resource_id}",
            result="refused",
            detail={"peer": peer["code"], "message_id": message.message_id, "error": error},
        )
        return True
    with engine.begin() as conn:
        conn.execute(
            update(outbox)
            .where(where)
            .values(
                attempts=attempts,
                next_attempt_at=stamp + backoff(attempts),
                last_error=error,
            )
        )
        trust.touch_peer(engine=conn, code=peer["code"], ok=False, error=error, now=stamp)
    report.failed += 1
    log.warning(
        "delivery failed", extra={"peer": peer["code"], "attempts": attempts, "error": error}
    )
    return False


async def run(
    *,
    engine: Engine,
    settings: Settings,
    interval: float = DRAIN_INTERVAL_SECONDS,
    client_factory: Callable[[], httpx.Client] | None = None,
) -> None:
    """Drain the outbox every `interval` seconds until cancelled (the node's background loop)."""
    factory = client_factory or (lambda: httpx.Client(timeout=REQUEST_TIMEOUT_SECONDS))
    with factory() as client:
        while True:
            try:
                await asyncio.to_thread(drain_once, engine=engine, settings=settings, client=client)
            except Exception:  # noqa: BLE001 - one bad round must not stop delivery for good
                log.exception("outbox round failed")
            await asyncio.sleep(interval)
