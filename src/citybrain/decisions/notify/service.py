"""Notifications' storage: subscriptions, the durable outbox, delivery with retries.

`notify_transition` runs right after the event centre commits a transition: it writes one
outbox row per matching subscription, keyed by case id + transition seq + subscription, so a
transition is notified once however often the hook runs. `deliver_once` sends what is due and
backs failures off exponentially; `run` is the node's background loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, desc, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from citybrain.core.config import Settings
from citybrain.core.errors import BadInput, Forbidden, NotFound
from citybrain.decisions.notify import channels
from citybrain.decisions.notify.models import (
    TRANSITION_HAPPENINGS,
    Channel,
    DeliveryRead,
    DeliveryReport,
    Happening,
    SubscriberKind,
    SubscriptionCreate,
    SubscriptionRead,
    SubscriptionUpdate,
    notify_outbox,
    notify_subscriptions,
)
from citybrain.events.models import CaseRead, event_transitions
from citybrain.governance.audit import service as audit
from citybrain.governance.identity.models import identity_orgs
from citybrain.governance.masking import MaskKind, mask_text
from citybrain.governance.principal import BUREAU_ORG, SYSTEM, Principal, Role

log = logging.getLogger("citybrain.notify")

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 900.0
MAX_ATTEMPTS = 8
BATCH = 200
INTERVAL_SECONDS = 1.0
# mobile numbers (optionally +86) and landlines with an area code, inside free text
_PHONES = re.compile(r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d{9}(?!\d)|(?<!\d)0\d{2,3}-?\d{7,8}(?!\d)")


def _now(now: datetime | None) -> datetime:
    return _utc(now or datetime.now(UTC))


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored here is UTC
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def backoff(attempts: int) -> timedelta:
    """Return the wait after the n-th failed attempt: 2 s, 4 s, 8 s ... at most 15 min."""
    seconds = BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1)
    return timedelta(seconds=min(seconds, BACKOFF_MAX_SECONDS))


def mask_phones(text: str, phone: str | None = None) -> str:
    """Mask the caller's phone and any phone-like number inside a free text."""
    if phone:
        text = text.replace(phone, mask_text(MaskKind.phone, phone))
    return _PHONES.sub(lambda m: mask_text(MaskKind.phone, m.group(0)), text)


# ---------------------------------------------------------------------------------------------
# subscriptions


def _is_admin(principal: Principal) -> bool:
    return principal.role is Role.bureau_admin


def _check_manage(principal: Principal, kind: SubscriberKind, subscriber: str) -> None:
    """Admit the bureau_admin, a department's steward/operator, or a person for themself."""
    if _is_admin(principal):
        return
    if kind is SubscriberKind.department:
        if principal.role in {Role.steward, Role.operator} and principal.org == subscriber:
            return
        raise Forbidden(
            f"subscriptions of {subscriber} are managed by the bureau_admin or that "
            "department's steward or operator"
        )
    if principal.subject == subscriber and not principal.anonymous:
        return
    raise Forbidden("a person's subscriptions are managed by that person or the bureau_admin")


def _read_subscription(row: Any) -> SubscriptionRead:
    m = row._mapping
    return SubscriptionRead(
        id=m["id"],
        subscriber_kind=m["subscriber_kind"],
        subscriber=m["subscriber"],
        happenings=m["happenings"],
        channel=m["channel"],
        target=m["target"],
        signed=bool(m["secret"]),
        active=m["active"],
        created_by=m["created_by"],
        created_at=_utc(m["created_at"]),
    )


def _audit(
    data_dir: Path, principal: Principal, action: str, resource: str, detail: dict[str, Any]
) -> None:
    audit.append(
        data_dir=data_dir,
        principal=principal,
        action=f"notify.{action}",
        resource=resource,
        result="ok",
        rows=1,
        detail=detail,
    )


def create_subscription(
    *, engine: Engine, data_dir: Path, principal: Principal, body: SubscriptionCreate
) -> SubscriptionRead:
    """Store a subscription after checking who may make it and that its target suits it."""
    _check_manage(principal, body.subscriber_kind, body.subscriber)
    target = channels.check_target(body.channel.value, body.target)
    if body.secret and body.channel is not Channel.webhook:
        raise BadInput("only a webhook subscription takes a secret (for its HMAC signature)")
    sub_id = "NS" + uuid.uuid4().hex[:20].upper()
    with engine.begin() as conn:
        if body.subscriber_kind is SubscriberKind.department:
            known = conn.execute(
                select(identity_orgs.c.id).where(identity_orgs.c.id == body.subscriber)
            ).first()
            if known is None:
                raise BadInput(f"there is no department {body.subscriber!r} on this node")
        conn.execute(
            insert(notify_subscriptions).values(
                id=sub_id,
                subscriber_kind=body.subscriber_kind.value,
                subscriber=body.subscriber,
                happenings=sorted({h.value for h in body.happenings}),
                channel=body.channel.value,
                target=target,
                secret=body.secret,
                active=body.active,
                created_by=principal.label(),
                created_at=_now(None),
            )
        )
    _audit(
        data_dir,
        principal,
        "subscribe",
        f"notify_subscription/{sub_id}",
        {"subscriber": body.subscriber, "channel": body.channel.value},
    )
    return get_subscription(engine=engine, principal=principal, subscription_id=sub_id)


def get_subscription(
    *, engine: Engine, principal: Principal, subscription_id: str
) -> SubscriptionRead:
    """Return one subscription the principal may manage (404 otherwise)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(notify_subscriptions).where(notify_subscriptions.c.id == subscription_id)
        ).first()
    if row is None:
        raise NotFound(f"no notification subscription {subscription_id}")
    sub = _read_subscription(row)
    try:
        _check_manage(principal, sub.subscriber_kind, sub.subscriber)
    except Forbidden:
        raise NotFound(f"no notification subscription {subscription_id}") from None
    return sub


def list_subscriptions(*, engine: Engine, principal: Principal) -> list[SubscriptionRead]:
    """List the subscriptions the principal may manage, newest first."""
    query = select(notify_subscriptions).order_by(desc(notify_subscriptions.c.created_at))
    if not _is_admin(principal):
        if principal.role not in {Role.steward, Role.operator, Role.citizen}:
            raise Forbidden("subscriptions are for the bureau_admin, stewards and operators")
        query = query.where(
            (
                (notify_subscriptions.c.subscriber_kind == SubscriberKind.department.value)
                & (notify_subscriptions.c.subscriber == principal.org)
            )
            | (
                (notify_subscriptions.c.subscriber_kind == SubscriberKind.person.value)
                & (notify_subscriptions.c.subscriber == principal.subject)
            )
        )
    with engine.connect() as conn:
        rows = conn.execute(query).fetchall()
    return [_read_subscription(r) for r in rows]


def update_subscription(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal,
    subscription_id: str,
    body: SubscriptionUpdate,
) -> SubscriptionRead:
    """Change the happenings, target, secret or active flag of a subscription."""
    sub = get_subscription(engine=engine, principal=principal, subscription_id=subscription_id)
    changes: dict[str, Any] = {}
    if body.happenings is not None:
        changes["happenings"] = sorted({h.value for h in body.happenings})
    if body.target is not None:
        changes["target"] = channels.check_target(sub.channel.value, body.target)
    if body.secret is not None:
        if sub.channel is not Channel.webhook:
            raise BadInput("only a webhook subscription takes a secret")
        changes["secret"] = body.secret
    if body.active is not None:
        changes["active"] = body.active
    if not changes:
        raise BadInput("give at least one of happenings, target, secret, active")
    with engine.begin() as conn:
        conn.execute(
            update(notify_subscriptions)
            .where(notify_subscriptions.c.id == subscription_id)
            .values(**changes)
        )
    _audit(
        data_dir,
        principal,
        "update",
        f"notify_subscription/{subscription_id}",
        {"fields": sorted(changes)},
    )
    return get_subscription(engine=engine, principal=principal, subscription_id=subscription_id)


def delete_subscription(
    *, engine: Engine, data_dir: Path, principal: Principal, subscription_id: str
) -> None:
    """Remove a subscription; its pending notifications are dropped at delivery."""
    get_subscription(engine=engine, principal=principal, subscription_id=subscription_id)
    with engine.begin() as conn:
        conn.execute(
            delete(notify_subscriptions).where(notify_subscriptions.c.id == subscription_id)
        )
    _audit(data_dir, principal, "unsubscribe", f"notify_subscription/{subscription_id}", {})


# ---------------------------------------------------------------------------------------------
# the hook and the outbox


def payload_of(
    case: CaseRead, *, happening: Happening, transition_name: str, seq: int | None, at: datetime
) -> dict[str, Any]:
    """Build the notification body of a case; phones masked, nothing else personal."""
    phone = case.contact_phone
    return {
        "happening": happening.value,
        "transition": transition_name,
        "seq": seq,
        "at": at.isoformat(),
        "case_id": case.id,
        "event_type": case.event_type,
        "event_type_zh": case.event_type_zh,
        "urgency": case.urgency,
        "state": case.state,
        "department": case.department,
        "area_code": case.area_code,
        "deadline": case.deadline.isoformat() if case.deadline else None,
        "overdue": case.overdue,
        "description": mask_phones(case.description, phone),
        "address": mask_phones(case.address, phone) if case.address else None,
        "contact_phone": mask_text(MaskKind.phone, phone) if phone else None,
    }


def _matching(conn: Any, case: CaseRead, happening: Happening) -> list[Any]:
    rows = conn.execute(
        select(notify_subscriptions).where(notify_subscriptions.c.active.is_(True))
    ).fetchall()
    found = []
    for r in rows:
        m = r._mapping
        if happening.value not in m["happenings"]:
            continue
        if m["subscriber_kind"] == SubscriberKind.department.value:
            # the bureau (the operations centre) hears about every case
            if m["subscriber"] not in {case.department, BUREAU_ORG}:
                continue
        elif m["subscriber"] != case.reporter:
            continue
        found.append(m)
    return found


def _last_seq(conn: Any, case_id: str, transition_name: str) -> int | None:
    seq: int | None = conn.execute(
        select(event_transitions.c.seq)
        .where(
            event_transitions.c.case_id == case_id,
            event_transitions.c.transition == transition_name,
        )
        .order_by(desc(event_transitions.c.seq))
        .limit(1)
    ).scalar()
    return seq


def notify_transition(
    *,
    engine: Engine,
    case: CaseRead,
    transition_name: str,
    seq: int | None = None,
    now: datetime | None = None,
) -> int:
    """Queue the notifications of a committed transition (or "overdue"); return how many.

    Never raises into the event centre: the transition is committed already, and a failure
    here is logged (the case and its log stay correct).
    """
    happening = TRANSITION_HAPPENINGS.get(transition_name)
    if happening is None:
        return 0
    moment = _now(now)
    try:
        with engine.begin() as conn:
            subs = _matching(conn, case, happening)
            if not subs:
                return 0
            if happening is Happening.overdue:
                # overdue is no transition: once per deadline (an extension makes a new one)
                mark = f"overdue@{case.deadline.isoformat() if case.deadline else '-'}"
            else:
                seq = seq if seq is not None else _last_seq(conn, case.id, transition_name)
                mark = str(seq)
            payload = payload_of(
                case, happening=happening, transition_name=transition_name, seq=seq, at=moment
            )
            keys = {f"{case.id}:{mark}:{s['id']}": s for s in subs}
            known = set(
                conn.execute(
                    select(notify_outbox.c.idempotency_key).where(
                        notify_outbox.c.idempotency_key.in_(list(keys))
                    )
                ).scalars()
            )
            rows = [
                {
                    "id": "ND" + uuid.uuid4().hex[:20].upper(),
                    "idempotency_key": key,
                    "subscription_id": s["id"],
                    "case_id": case.id,
                    "happening": happening.value,
                    "channel": s["channel"],
                    "department": case.department,
                    "payload": payload,
                    "state": "pending",
                    "attempts": 0,
                    "next_at": moment,
                    "last_error": None,
                    "created_at": moment,
                    "sent_at": None,
                }
                for key, s in keys.items()
                if key not in known
            ]
            if rows:
                conn.execute(insert(notify_outbox), rows)
            return len(rows)
    except IntegrityError:
        return 0  # a concurrent call queued the same notifications: they exist once
    except SQLAlchemyError:
        log.exception("notifications of %s %s not queued", case.id, transition_name)
        return 0


def _send(row: Any, sub: Any, settings: Settings) -> None:
    payload = dict(row["payload"])
    channel = sub["channel"]
    if channel == Channel.webhook.value:
        channels.send_webhook(sub["target"], payload, secret=sub["secret"])
    elif channel == Channel.email.value:
        channels.send_email(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            to=sub["target"],
            payload=payload,
        )
    else:
        host, port, topic = channels.broker_host(sub["target"])
        topic = topic or f"citybrain/{settings.code}/notify/{row['department']}"
        channels.send_mqtt(host=host, port=port, topic=topic, payload=payload)


def deliver_once(
    *, engine: Engine, settings: Settings, now: datetime | None = None
) -> DeliveryReport:
    """Send every due notification once; back failures off, give up after MAX_ATTEMPTS."""
    moment = _now(now)
    report = DeliveryReport()
    with engine.connect() as conn:
        due = conn.execute(
            select(notify_outbox)
            .where(notify_outbox.c.state == "pending", notify_outbox.c.next_at <= moment)
            .order_by(notify_outbox.c.created_at, notify_outbox.c.id)
            .limit(BATCH)
        ).fetchall()
        subs = {
            r._mapping["id"]: r._mapping
            for r in conn.execute(
                select(notify_subscriptions).where(
                    notify_subscriptions.c.id.in_({d._mapping["subscription_id"] for d in due})
                )
            )
        }
    for d in due:
        row = d._mapping
        sub = subs.get(row["subscription_id"])
        attempts = row["attempts"] + 1
        error: str | None = None
        if sub is None or not sub["active"]:
            error = "the subscription was removed or paused"
        else:
            try:
                _send(row, sub, settings)
            except channels.DeliveryError as exc:
                error = str(exc)[:1000]
        if error is None:
            changes: dict[str, Any] = {"state": "sent", "sent_at": moment, "last_error": None}
            report.sent += 1
        elif sub is None or not sub["active"] or attempts >= MAX_ATTEMPTS:
            changes = {"state": "failed", "last_error": error}
            report.failed += 1
        else:
            changes = {"next_at": moment + backoff(attempts), "last_error": error}
            report.retried += 1
        changes["attempts"] = attempts
        with engine.begin() as conn:
            conn.execute(
                update(notify_outbox).where(notify_outbox.c.id == row["id"]).values(**changes)
            )
        audit.append(
            data_dir=settings.data_dir,
            principal=SYSTEM,
            action="notify.deliver",
            resource=f"notify_delivery/{row['id']}",
            result="ok" if error is None else "error",
            rows=1,
            detail={
                "case": row["case_id"],
                "happening": row["happening"],
                "channel": row["channel"],
                "subscription": row["subscription_id"],
                "attempt": attempts,
                "state": changes.get("state", "pending"),
                **({"error": error} if error else {}),
            },
        )
    return report


def list_deliveries(
    *,
    engine: Engine,
    principal: Principal,
    case_id: str | None = None,
    state: str | None = None,
    limit: int = 100,
) -> list[DeliveryRead]:
    """List notifications newest first: all for the bureau_admin, its own for a department."""
    query = select(notify_outbox).order_by(desc(notify_outbox.c.created_at)).limit(limit)
    if not _is_admin(principal):
        if principal.role not in {Role.steward, Role.operator}:
            raise Forbidden("deliveries are shown to the bureau_admin and departments' staff")
        query = query.where(notify_outbox.c.department == principal.org)
    if case_id:
        query = query.where(notify_outbox.c.case_id == case_id)
    if state:
        if state not in {"pending", "sent", "failed"}:
            raise BadInput("state is one of pending, sent, failed")
        query = query.where(notify_outbox.c.state == state)
    with engine.connect() as conn:
        rows = conn.execute(query).fetchall()
    out = []
    for r in rows:
        m = dict(r._mapping)
        for key in ("next_at", "created_at", "sent_at"):
            if m[key] is not None:
                m[key] = _utc(m[key])
        out.append(DeliveryRead(**{k: v for k, v in m.items() if k in DeliveryRead.model_fields}))
    return out


async def run(*, engine: Engine, settings: Settings, interval: float = INTERVAL_SECONDS) -> None:
    """Deliver due notifications every interval seconds until cancelled."""
    while True:
        try:
            await asyncio.to_thread(deliver_once, engine=engine, settings=settings)
        except asyncio.CancelledError:
            raise
        except Exception:  # the loop must outlive one bad round; the next one retries
            log.exception("notification delivery round failed")
        await asyncio.sleep(interval)
