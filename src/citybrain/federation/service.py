"""Tasks and escalations between nodes: send, receive, update, list; the storage door.

Every change that another node must learn about is written together with its outbox
message (`outbox.enqueue`, same transaction). Receipt inserts (sender, message id) into the
inbox in the transaction that applies the message, so a message delivered twice is applied
once. Every send and receipt appends an audit record.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from citybrain.core.errors import Conflict, NotFound, TooLarge, Unprocessable
from citybrain.federation import outbox, trust
from citybrain.federation.models import (
    MAX_BODY_BYTES,
    TRANSITIONS,
    Delivery,
    Direction,
    EscalationCreate,
    EscalationRead,
    InboxEscalation,
    InboxTask,
    InboxTaskStatus,
    MessageKind,
    PeerRead,
    Receipt,
    Relation,
    TaskCreate,
    TaskRead,
    TaskStatus,
    TaskStatusUpdate,
    escalations,
    inbox,
    tasks,
)
from citybrain.federation.models import outbox as outbox_table
from citybrain.geo import service as geo
from citybrain.governance.audit import service as audit
from citybrain.governance.principal import Principal

# three missed heartbeats (30 s each) make a peer stale
STALE_SECONDS = 90.0
MAX_LIST = 1000


def _check_size(value: dict[str, Any], what: str) -> None:
    if len(orjson.dumps(value)) > MAX_BODY_BYTES:
        raise TooLarge(f"the {what} is larger than {MAX_BODY_BYTES // 1024} KiB")


def _name(code: str) -> str:
    try:
        return geo.get_unit(code).name_zh
    except NotFound:
        return code


def _delivery(conn: Connection, resource_id: str) -> Delivery | None:
    row = conn.execute(
        select(outbox_table)
        .where(outbox_table.c.resource_id == resource_id)
        .order_by(outbox_table.c.seq.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return Delivery(
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=trust.utc(row.next_attempt_at) if row.state == "pending" else None,
        last_error=row.last_error,
        sent_at=trust.utc(row.sent_at) if row.sent_at else None,
    )


def _task_read(conn: Connection, row: Any) -> TaskRead:
    return TaskRead(
        id=row.id,
        direction=row.direction,
        peer=row.peer_code,
        peer_name=_name(row.peer_code),
        kind=row.kind,
        title=row.title,
        body=row.body,
        due=row.due,
        status=row.status,
        history=row.history,
        created_by=row.created_by,
        created_at=trust.utc(row.created_at),
        updated_at=trust.utc(row.updated_at),
        delivery=_delivery(conn, row.id),
    )


def _entry(stamp: datetime, status: TaskStatus, note: str, by: str, node: str) -> dict[str, str]:
    return {"at": stamp.isoformat(), "status": status.value, "note": note, "by": by, "node": node}


def send_task(
    *,
    engine: Engine,
    data_dir: Path,
    own_code: str,
    principal: Principal,
    task: TaskCreate,
    now: datetime | None = None,
) -> TaskRead:
    """Send a task down to a registered child: the task and its outbox message, one transaction."""
    try:
        peer = trust.get_peer(engine=engine, code=task.to)
    except NotFound:
        raise Unprocessable(
            f"node {task.to} is not a registered child of this node; "
            "register it first (citybrain nodes add-child)"
        ) from None
    if peer["relation"] != Relation.child.value:
        raise Unprocessable(f"node {task.to} is this node's parent; tasks go down to children")
    _check_size(task.body, "task body")
    stamp = trust.utc(now)
    task_id, message_id = outbox.new_id(), outbox.new_id()
    by = principal.label()
    message = InboxTask(
        message_id=message_id,
        id=task_id,
        kind=task.kind,
        title=task.title,
        body=task.body,
        due=task.due,
        created_by=by,
        created_at=stamp,
    )
    with engine.begin() as conn:
        conn.execute(
            insert(tasks).values(
                id=task_id,
                direction=Direction.sent.value,
                peer_code=task.to,
                kind=task.kind,
                title=task.title,
                body=task.body,
                due=task.due,
                status=TaskStatus.pending.value,
                status_seq=0,
                history=[_entry(stamp, TaskStatus.pending, "sent", by, own_code)],
                created_by=by,
                created_at=stamp,
                updated_at=stamp,
            )
        )
        outbox.enqueue(
            conn,
            peer_code=task.to,
            kind=MessageKind.task,
            resource_id=task_id,
            payload=message.model_dump(mode="json"),
            message_id=message_id,
            now=stamp,
        )
    audit.append(
        data_dir=data_dir,
        principal=principal,
        action="federation.task.send",
        resource=f"task:{task_id}",
        result="ok",
        detail={"to": task.to, "kind": task.kind, "message_id": message_id},
    )
    return get_task(engine=engine, task_id=task_id)


def get_task(*, engine: Engine, task_id: str) -> TaskRead:
    """Return one task with its history and delivery state, or raise NotFound."""
    with engine.connect() as conn:
        row = conn.execute(select(tasks).where(tasks.c.id == task_id)).first()
        if row is None:
            raise NotFound(f"no task {task_id} on this node")
        return _task_read(conn, row)


def list_tasks(
    *,
    engine: Engine,
    direction: Direction | None = None,
    status: TaskStatus | None = None,
    limit: int = 100,
) -> list[TaskRead]:
    """Return tasks sent and received, newest first."""
    query = (
        select(tasks)
        .order_by(tasks.c.created_at.desc(), tasks.c.id)
        .limit(max(1, min(limit, MAX_LIST)))
    )
    if direction is not None:
        query = query.where(tasks.c.direction == direction.value)
    if status is not None:
        query = query.where(tasks.c.status == status.value)
    with engine.connect() as conn:
        return [_task_read(conn, r) for r in conn.execute(query)]


def update_task_status(
    *,
    engine: Engine,
    data_dir: Path,
    own_code: str,
    principal: Principal,
    task_id: str,
    change: TaskStatusUpdate,
    now: datetime | None = None,
) -> TaskRead:
    """Move a received task to a new status and send the change back to its sender."""
    stamp = trust.utc(now)
    by = principal.label()
    with engine.begin() as conn:
        row = conn.execute(select(tasks).where(tasks.c.id == task_id).with_for_update()).first()
        if row is None:
            raise NotFound(f"no task {task_id} on this node")
        if row.direction != Direction.received.value:
            raise Conflict(
                f"this node sent task {task_id}; only its receiver {row.peer_code} "
                "updates the status"
            )
        current = TaskStatus(row.status)
        allowed = TRANSITIONS.get(current, frozenset())
        if change.status not in allowed:
            names = ", ".join(sorted(s.value for s in allowed)) or "nothing (it is final)"
            raise Conflict(
                f"task {task_id} is {current.value}; it can move to {names}, "
                f"not {change.status.value}"
            )
        seq = row.status_seq + 1
        conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id)
            .values(
                status=change.status.value,
                status_seq=seq,
                history=[*row.history, _entry(stamp, change.status, change.note, by, own_code)],
                updated_at=stamp,
            )
        )
        message_id = outbox.new_id()
        message = InboxTaskStatus(
            message_id=message_id,
            task_id=task_id,
            seq=seq,
            status=change.status,
            note=change.note,
            by=by,
            at=stamp,
        )
        outbox.enqueue(
            conn,
            peer_code=row.peer_code,
            kind=MessageKind.task_status,
            resource_id=task_id,
            payload=message.model_dump(mode="json"),
            message_id=message_id,
            now=stamp,
        )
    audit.append(
        data_dir=data_dir,
        principal=principal,
        action="federation.task.status",
        resource=f"task:{task_id}",
        result="ok",
        detail={"status": change.status.value, "from": current.value, "to": row.peer_code},
    )
    return get_task(engine=engine, task_id=task_id)


def _record_receipt(
    conn: Connection, sender: str, message_id: str, kind: MessageKind, resource: str, at: datetime
) -> None:
    conn.execute(
        insert(inbox).values(
            sender_code=sender,
            message_id=message_id,
            kind=kind.value,
            resource_id=resource,
            received_at=at,
        )
    )


def _already(engine: Engine, sender: str, message_id: str) -> bool:
    with engine.connect() as conn:
        return (
            conn.execute(
                select(inbox.c.message_id).where(
                    inbox.c.sender_code == sender, inbox.c.message_id == message_id
                )
            ).first()
            is not None
        )


def _receipt_audit(
    data_dir: Path,
    principal: Principal | None,
    action: str,
    resource: str,
    sender: str,
    message_id: str,
    duplicate: bool,
) -> None:
    audit.append(
        data_dir=data_dir,
        principal=principal,
        action=action,
        resource=resource,
        result="duplicate" if duplicate else "ok",
        detail={"from": sender, "message_id": message_id},
    )


def _receive_once(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal | None,
    sender: str,
    message_id: str,
    kind: MessageKind,
    resource_id: str,
    action: str,
    resource: str,
    apply: Callable[[Connection, datetime], None],
    now: datetime | None,
) -> Receipt:
    """Apply an inbound message once per (sender, message id); a repeat is acknowledged only.

    `apply` writes the message's effect in the same transaction as the receipt, so a crash
    leaves neither, and the sender's retry applies it then.
    """
    stamp = trust.utc(now)
    duplicate = _already(engine, sender, message_id)
    if not duplicate:
        try:
            with engine.begin() as conn:
                apply(conn, stamp)
                _record_receipt(conn, sender, message_id, kind, resource_id, stamp)
        except IntegrityError:
            # a concurrent delivery of the same message won the race: that one applied it
            duplicate = True
    _receipt_audit(data_dir, principal, action, resource, sender, message_id, duplicate)
    return Receipt(message_id=message_id, resource_id=resource_id, duplicate=duplicate)


def receive_task(
    *,
    engine: Engine,
    data_dir: Path,
    sender: str,
    message: InboxTask,
    principal: Principal | None = None,
    now: datetime | None = None,
) -> Receipt:
    """Store a task the parent sent, once per message id (a repeat is acknowledged, not applied)."""
    _check_size(message.body, "task body")

    def apply(conn: Connection, stamp: datetime) -> None:
        conn.execute(
            insert(tasks).values(
                id=message.id,
                direction=Direction.received.value,
                peer_code=sender,
                kind=message.kind,
                title=message.title,
                body=message.body,
                due=message.due,
                status=TaskStatus.received.value,
                status_seq=0,
                history=[_entry(stamp, TaskStatus.received, "", message.created_by, sender)],
                created_by=message.created_by,
                created_at=trust.utc(message.created_at),
                updated_at=stamp,
            )
        )

    return _receive_once(
        engine=engine,
        data_dir=data_dir,
        principal=principal,
        sender=sender,
        message_id=message.message_id,
        kind=MessageKind.task,
        resource_id=message.id,
        action="federation.task.receive",
        resource=f"task:{message.id}",
        apply=apply,
        now=now,
    )


def receive_task_status(
    *,
    engine: Engine,
    data_dir: Path,
    sender: str,
    message: InboxTaskStatus,
    principal: Principal | None = None,
    now: datetime | None = None,
) -> Receipt:
    """Apply a status change the receiver of one of our tasks sent back (newer seq wins)."""

    def apply(conn: Connection, stamp: datetime) -> None:
        row = conn.execute(
            select(tasks).where(
                tasks.c.id == message.task_id,
                tasks.c.direction == Direction.sent.value,
                tasks.c.peer_code == sender,
            )
        ).first()
        if row is None:
            raise NotFound(f"this node sent no task {message.task_id} to {sender}")
        # an update older than what we hold (delivered late) is recorded, not applied
        if message.seq > row.status_seq:
            entry = _entry(trust.utc(message.at), message.status, message.note, message.by, sender)
            conn.execute(
                update(tasks)
                .where(tasks.c.id == message.task_id)
                .values(
                    status=message.status.value,
                    status_seq=message.seq,
                    history=[*row.history, entry],
                    updated_at=stamp,
                )
            )

    return _receive_once(
        engine=engine,
        data_dir=data_dir,
        principal=principal,
        sender=sender,
        message_id=message.message_id,
        kind=MessageKind.task_status,
        resource_id=message.task_id,
        action="federation.task.status.receive",
        resource=f"task:{message.task_id}",
        apply=apply,
        now=now,
    )


def _escalation_read(conn: Connection, row: Any) -> EscalationRead:
    return EscalationRead(
        id=row.id,
        direction=row.direction,
        peer=row.peer_code,
        peer_name=_name(row.peer_code),
        event_id=row.event_id,
        reason=row.reason,
        payload=row.payload,
        status=row.status,
        created_by=row.created_by,
        created_at=trust.utc(row.created_at),
        delivery=_delivery(conn, row.id),
    )


def escalate(
    *,
    engine: Engine,
    data_dir: Path,
    own_code: str,
    principal: Principal,
    escalation: EscalationCreate,
    now: datetime | None = None,
) -> EscalationRead:
    """Escalate an event to this node's registered parent through the outbox."""
    parent = trust.parent_peer(engine=engine)
    if parent is None:
        raise Conflict(
            f"node {own_code} has no registered parent to escalate to (citybrain nodes set-parent)"
        )
    _check_size(escalation.payload, "escalation payload")
    stamp = trust.utc(now)
    escalation_id, message_id = outbox.new_id(), outbox.new_id()
    by = principal.label()
    message = InboxEscalation(
        message_id=message_id,
        id=escalation_id,
        event_id=escalation.event_id,
        reason=escalation.reason,
        payload=escalation.payload,
        created_by=by,
        created_at=stamp,
    )
    with engine.begin() as conn:
        conn.execute(
            insert(escalations).values(
                id=escalation_id,
                direction=Direction.sent.value,
                peer_code=parent["code"],
                event_id=escalation.event_id,
                reason=escalation.reason,
                payload=escalation.payload,
                status="pending",
                created_by=by,
                created_at=stamp,
            )
        )
        outbox.enqueue(
            conn,
            peer_code=parent["code"],
            kind=MessageKind.escalation,
            resource_id=escalation_id,
            payload=message.model_dump(mode="json"),
            message_id=message_id,
            now=stamp,
        )
    audit.append(
        data_dir=data_dir,
        principal=principal,
        action="federation.escalation.send",
        resource=f"escalation:{escalation_id}",
        result="ok",
        detail={"to": parent["code"], "event_id": escalation.event_id, "message_id": message_id},
    )
    return get_escalation(engine=engine, escalation_id=escalation_id)


def get_escalation(*, engine: Engine, escalation_id: str) -> EscalationRead:
    """Return one escalation, or raise NotFound."""
    with engine.connect() as conn:
        row = conn.execute(select(escalations).where(escalations.c.id == escalation_id)).first()
        if row is None:
            raise NotFound(f"no escalation {escalation_id} on this node")
        return _escalation_read(conn, row)


def list_escalations(
    *, engine: Engine, direction: Direction | None = None, limit: int = 100
) -> list[EscalationRead]:
    """Return escalations sent and received, newest first."""
    query = (
        select(escalations)
        .order_by(escalations.c.created_at.desc(), escalations.c.id)
        .limit(max(1, min(limit, MAX_LIST)))
    )
    if direction is not None:
        query = query.where(escalations.c.direction == direction.value)
    with engine.connect() as conn:
        return [_escalation_read(conn, r) for r in conn.execute(query)]


def receive_escalation(
    *,
    engine: Engine,
    data_dir: Path,
    sender: str,
    message: InboxEscalation,
    principal: Principal | None = None,
    now: datetime | None = None,
) -> Receipt:
    """Store an escalation a child sent, once per message id."""
    _check_size(message.payload, "escalation payload")

    def apply(conn: Connection, stamp: datetime) -> None:
        conn.execute(
            insert(escalations).values(
                id=message.id,
                direction=Direction.received.value,
                peer_code=sender,
                event_id=message.event_id,
                reason=message.reason,
                payload=message.payload,
                status="received",
                created_by=message.created_by,
                created_at=trust.utc(message.created_at),
            )
        )

    return _receive_once(
        engine=engine,
        data_dir=data_dir,
        principal=principal,
        sender=sender,
        message_id=message.message_id,
        kind=MessageKind.escalation,
        resource_id=message.id,
        action="federation.escalation.receive",
        resource=f"escalation:{message.id}",
        apply=apply,
        now=now,
    )


def peer_status(*, engine: Engine, now: datetime | None = None) -> list[PeerRead]:
    """Return the parent and children with last contact, lag, version and pending messages."""
    stamp = trust.utc(now)
    pending = outbox.pending_counts(engine=engine)
    result = []
    for peer in trust.list_peers(engine=engine):
        contact = trust.utc(peer["last_contact_at"]) if peer["last_contact_at"] else None
        lag = round((stamp - contact).total_seconds(), 3) if contact else None
        if peer["status"] == "unreachable" or (lag is not None and lag > STALE_SECONDS):
            state = "stale"
        elif contact is None:
            state = "never"
        else:
            state = "ok"
        try:
            unit = geo.get_unit(peer["code"])
            names = (unit.name_zh, unit.name_en)
        except NotFound:
            names = (peer["code"], peer["code"])
        result.append(
            PeerRead(
                code=peer["code"],
                name_zh=names[0],
                name_en=names[1],
                level=peer["level"],
                relation=peer["relation"],
                url=peer["url"],
                registered_at=trust.utc(peer["registered_at"]),
                last_contact_at=contact,
                lag_seconds=lag,
                version=peer["version"],
                status=peer["status"],
                state=state,
                pending=pending.get(peer["code"], 0),
                last_error=peer["last_error"],
            )
        )
    return result
