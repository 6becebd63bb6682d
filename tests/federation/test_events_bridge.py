"""Tasks from the parent become cases; overdue cases escalate to the parent through the outbox."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, select

from citybrain.core.config import Settings, load_settings
from citybrain.core.db import create_engine_for, upgrade
from citybrain.events import service as events
from citybrain.events.models import TransitionRequest
from citybrain.federation import events_bridge, trust
from citybrain.federation import service as federation
from citybrain.federation.models import Direction, InboxTask, Relation
from citybrain.federation.models import outbox as outbox_table
from citybrain.governance.principal import Principal, Role
from citybrain.node import service as node_service

CITY, PROVINCE = "370100", "370000"


def _city(tmp_path: Path, with_parent: bool = True) -> tuple[Engine, Settings]:
    settings = load_settings(data_dir=tmp_path / "city", code=CITY, level="city")
    engine = create_engine_for(settings.effective_database_url)
    upgrade(engine)
    node_service.init_node(engine=engine, settings=settings)
    if with_parent:
        trust.add_peer(
            engine=engine,
            own_code=CITY,
            code=PROVINCE,
            relation=Relation.parent,
            url="http://province.test",
            public_key=trust.own_public_key(tmp_path / "province"),
        )
    return engine, settings


def _task(title: str, body: dict[str, object]) -> InboxTask:
    return InboxTask(
        message_id=uuid.uuid4().hex,
        id=uuid.uuid4().hex,
        kind="supervision_case",
        title=title,
        body=body,
        created_by="370000/bureau",
        created_at=datetime.now(UTC),
    )


def test_tasks_with_an_event_type_become_cases_once(tmp_path: Path) -> None:
    engine, settings = _city(tmp_path)
    for message in (
        _task("muck on the ring road", {"event_type": "muck_spill", "description": "渣土撒漏"}),
        _task("audit the grid", {"note": "no event type"}),
        _task("bad type", {"event_type": "no_such_type"}),
    ):
        federation.receive_task(
            engine=engine, data_dir=settings.data_dir, sender=PROVINCE, message=message
        )
    assert events_bridge.open_cases_for_tasks(engine=engine, settings=settings) == 1
    assert events_bridge.open_cases_for_tasks(engine=engine, settings=settings) == 1
    cases = [c for c in events.list_cases(engine=engine) if c.source == "task"]
    assert len(cases) == 1 and cases[0].event_type == "muck_spill"


def test_overdue_cases_escalate_once_through_the_outbox(tmp_path: Path) -> None:
    engine, settings = _city(tmp_path)
    federation.receive_task(
        engine=engine,
        data_dir=settings.data_dir,
        sender=PROVINCE,
        message=_task("gas smell", {"event_type": "gas_leak", "urgency": "urgent"}),
    )
    events_bridge.open_cases_for_tasks(engine=engine, settings=settings)
    case = next(c for c in events.list_cases(engine=engine) if c.source == "task")
    operator = Principal(subject="op", org="bureau", role=Role.operator, issuer=CITY)
    events.transition(
        engine=engine,
        data_dir=settings.data_dir,
        case_id=case.id,
        name="dispatch",
        principal=operator,
        body=TransitionRequest(department="emergency_management"),
    )
    later = datetime.now(UTC) + timedelta(days=60)
    assert events_bridge.forward_escalations(engine=engine, settings=settings, now=later) == 1
    assert events_bridge.forward_escalations(engine=engine, settings=settings, now=later) == 0
    sent = federation.list_escalations(engine=engine, direction=Direction.sent)
    assert len(sent) == 1 and sent[0].event_id.startswith("case:")
    with engine.connect() as conn:
        queued = conn.execute(select(outbox_table.c.peer_code)).scalars().all()
    assert PROVINCE in queued


def test_no_parent_no_escalation(tmp_path: Path) -> None:
    engine, settings = _city(tmp_path, with_parent=False)
    assert events_bridge.forward_escalations(engine=engine, settings=settings) == 0
