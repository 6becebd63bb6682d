"""Between the event centre and federation: overdue cases go up, tasks from above become cases.

Every minute a node escalates its overdue cases (events.escalate_overdue), hands the pending
escalations to the outbox towards its parent, and opens a case for each task its parent sent
that names an event type. Each step is idempotent: an escalation already in the outbox is
only marked sent, a task already opened as a case is not opened again.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from sqlalchemy import Engine

from citybrain.core.config import Settings
from citybrain.core.errors import CityBrainError
from citybrain.events import service as events
from citybrain.federation import service as federation
from citybrain.federation import trust
from citybrain.federation.models import Direction, EscalationCreate
from citybrain.governance.principal import Principal, Role

log = logging.getLogger(__name__)
INTERVAL_SECONDS = 60.0


def _node_principal(settings: Settings) -> Principal:
    return Principal(
        subject=f"node:{settings.code}", org="bureau", role=Role.operator, issuer=settings.code
    )


def forward_escalations(*, engine: Engine, settings: Settings, now: datetime | None = None) -> int:
    """Escalate overdue cases and send the pending escalations up; return how many went."""
    if trust.parent_peer(engine=engine) is None:
        return 0
    events.escalate_overdue(engine=engine, data_dir=settings.data_dir, now=now)
    sent = {
        e.event_id
        for e in federation.list_escalations(engine=engine, direction=Direction.sent, limit=1000)
    }
    forwarded = 0
    for pending in events.pending_escalations(engine=engine):
        event_id = f"case:{pending.case_id}"
        if event_id not in sent:
            federation.escalate(
                engine=engine,
                data_dir=settings.data_dir,
                own_code=settings.code,
                principal=_node_principal(settings),
                escalation=EscalationCreate(
                    event_id=event_id, reason=pending.reason, payload=pending.case
                ),
                now=now,
            )
            forwarded += 1
        events.mark_escalation_sent(engine=engine, escalation_id=pending.id, now=now)
    return forwarded


def open_cases_for_tasks(*, engine: Engine, settings: Settings, now: datetime | None = None) -> int:
    """Open a case for every received task whose body names an event type; return how many."""
    opened = 0
    for task in federation.list_tasks(engine=engine, direction=Direction.received, limit=1000):
        event_type = task.body.get("event_type") if isinstance(task.body, dict) else None
        if not isinstance(event_type, str):
            continue  # a task without an event type is handled through its own status
        try:
            events.create_case_from_task(
                engine=engine,
                data_dir=settings.data_dir,
                node_code=settings.code,
                task_id=task.id,
                event_type=event_type,
                description=str(task.body.get("description") or task.title),
                urgency=str(task.body.get("urgency") or "normal"),
                principal=_node_principal(settings),
                now=now,
            )
            opened += 1
        except CityBrainError as exc:
            log.warning("task not opened as a case", extra={"task": task.id, "why": exc.message})
    return opened


async def run(*, engine: Engine, settings: Settings, interval: float = INTERVAL_SECONDS) -> None:
    """Forward escalations and open cases for tasks until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(forward_escalations, engine=engine, settings=settings)
            await asyncio.to_thread(open_cases_for_tasks, engine=engine, settings=settings)
        except asyncio.CancelledError:
            raise
        except Exception:  # the loop outlives one bad round; the rows stay for the next
            log.exception("events bridge error")
