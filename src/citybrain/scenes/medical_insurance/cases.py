"""Cases of fund supervision: a finding becomes a case that goes through five stages.

Stages, each with a deadline in working days (the event centre's calendar):
first review -> second review -> appeal -> investigation -> sanction -> closed. `advance`
moves a case on (from sanction it closes as sanctioned); `dismiss` closes it at any open
stage as unfounded. Each case opens a linked case in the event centre (registered, for the
operations centre to follow), and the province can assign a case to a city: it goes down as
a federation task (`medins_case`) through the outbox, the city takes it in (`take_assigned`)
and its stage changes go back as the task's status.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Connection, func, insert, select, update

from citybrain.core.errors import BadInput, Conflict, Forbidden, NotFound, Unprocessable
from citybrain.events import calendar, catalogue
from citybrain.events import service as events
from citybrain.federation import service as federation
from citybrain.federation.models import Direction, TaskCreate, TaskStatus, TaskStatusUpdate
from citybrain.governance.audit import service as audit
from citybrain.governance.principal import BUREAU_ORG, Principal, Role
from citybrain.scenes.medical_insurance.models import Finding
from citybrain.scenes.medical_insurance.service import DEPARTMENT, Scene, now_utc
from citybrain.scenes.medical_insurance.tables import cases, findings

TASK_KIND = "medins_case"
# the event-centre type of a supervision case; the monitoring-alarm type until the catalogue
# has one of its own
EVENT_TYPES = ("medical_insurance_fund", "indicator_alarm")
MAX_OPEN = 5000


class Stage(StrEnum):
    """Where a case stands."""

    first_review = "first_review"
    second_review = "second_review"
    appeal = "appeal"
    investigation = "investigation"
    sanction = "sanction"
    closed = "closed"


ORDER = (
    Stage.first_review,
    Stage.second_review,
    Stage.appeal,
    Stage.investigation,
    Stage.sanction,
    Stage.closed,
)
DEADLINE_DAYS = {
    Stage.first_review: 5,
    Stage.second_review: 5,
    Stage.appeal: 10,
    Stage.investigation: 20,
    Stage.sanction: 10,
    Stage.closed: 0,
}


class Action(StrEnum):
    """What a handler does to a case."""

    advance = "advance"
    dismiss = "dismiss"


class CaseAction(BaseModel):
    """A stage change with its note."""

    action: Action
    note: str = Field(min_length=1, max_length=2000)


class CaseRead(BaseModel):
    """A supervision case as the API shows it."""

    id: str
    finding_id: str | None
    rule_id: str
    institution_id: str
    person_id: str | None
    amount: float
    summary: str
    stage: Stage
    status: str
    deadline: datetime
    overdue: bool
    history: list[dict[str, Any]]
    event_case_id: str | None
    event_state: str | None = None
    origin: str
    task_id: str | None
    assigned_to: str | None
    assigned_task_id: str | None
    created_at: datetime
    updated_at: datetime


def may_handle(principal: Principal) -> bool:
    """Return True for the medical security bureau's staff, the bureau and nodes."""
    if principal.role is Role.node:
        return True
    if principal.org == DEPARTMENT and principal.role in (
        Role.operator,
        Role.steward,
        Role.service,
    ):
        return True
    return principal.org == BUREAU_ORG and principal.role in (Role.operator, Role.bureau_admin)


def _handler(principal: Principal) -> Principal:
    if not may_handle(principal):
        raise Forbidden("cases are handled by the medical security bureau or the bureau")
    return principal


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=now_utc().tzinfo)


def _read(row: Any, now: datetime) -> CaseRead:
    deadline = _aware(row.deadline)
    return CaseRead(
        id=row.id,
        finding_id=row.finding_id,
        rule_id=row.rule_id,
        institution_id=row.institution_id,
        person_id=row.person_id,
        amount=row.amount,
        summary=row.summary,
        stage=Stage(row.stage),
        status=row.status,
        deadline=deadline,
        overdue=row.status == "open" and now > deadline,
        history=list(row.history),
        event_case_id=row.event_case_id,
        origin=row.origin,
        task_id=row.task_id,
        assigned_to=row.assigned_to,
        assigned_task_id=row.assigned_task_id,
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
    )


def _deadline(stage: Stage, start: datetime) -> datetime:
    moment = calendar.add_working_days(start, DEADLINE_DAYS[stage])
    assert isinstance(moment, datetime)
    return moment


def _entry(at: datetime, stage: Stage, action: str, note: str, by: str) -> dict[str, str]:
    return {"at": at.isoformat(), "stage": stage.value, "action": action, "note": note, "by": by}


# ---------------------------------------------------------------------------------------------
# findings


def import_findings(
    scene: Scene, *, principal: Principal, items: list[Finding], source: str = "sweep"
) -> dict[str, int]:
    """Store findings of a batch sweep (once each: the same finding again is skipped)."""
    _handler(principal)
    if source not in ("sweep", "before_payment"):
        raise BadInput("source must be sweep or before_payment")
    moment = now_utc()
    rows = [
        {
            "id": "F" + uuid.uuid4().hex[:20],
            "finding_key": f"{source}:{f.rule_id}:{f.settlement_id}:{f.item_code}"[:200],
            "source": source,
            "rule_id": f.rule_id,
            "rule_version": str(f.rule_version),
            "grade": f.grade.value,
            "outcome": f.grade.value,
            "settlement_id": f.settlement_id,
            "institution_id": f.institution_id,
            "person_id": f.person_id,
            "amount": 0.0,
            "reason": f.reason,
            "detail": {"item_code": f.item_code},
            "found_at": moment,
            "case_id": None,
        }
        for f in items
    ]
    with scene.engine.begin() as conn:
        known = set()
        keys = [r["finding_key"] for r in rows]
        for start in range(0, len(keys), 500):
            known |= set(
                conn.execute(
                    select(findings.c.finding_key).where(
                        findings.c.finding_key.in_(keys[start : start + 500])
                    )
                ).scalars()
            )
        fresh = {r["finding_key"]: r for r in rows if r["finding_key"] not in known}
        if fresh:
            conn.execute(insert(findings), list(fresh.values()))
    audit.append(
        data_dir=scene.data_dir,
        principal=principal,
        action="medins.findings.import",
        resource="medins:findings",
        result="ok",
        rows=len(fresh),
        detail={"source": source, "skipped": len(rows) - len(fresh)},
    )
    return {"stored": len(fresh), "skipped": len(rows) - len(fresh)}


def list_findings(
    scene: Scene,
    *,
    rule_id: str | None = None,
    institution_id: str | None = None,
    source: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Return findings, newest first, with the case each became (if any)."""
    if not 1 <= limit <= 10_000:
        raise BadInput("limit must be between 1 and 10000")
    query = select(findings).order_by(findings.c.found_at.desc(), findings.c.id).limit(limit)
    if rule_id:
        query = query.where(findings.c.rule_id == rule_id)
    if institution_id:
        query = query.where(findings.c.institution_id == institution_id)
    if source:
        query = query.where(findings.c.source == source)
    with scene.engine.connect() as conn:
        return [
            {
                k: (v.isoformat() if isinstance(v, datetime) else v)
                for k, v in r._mapping.items()
                if k != "finding_key"
            }
            for r in conn.execute(query)
        ]


# ---------------------------------------------------------------------------------------------
# opening cases


def event_type() -> str:
    """Return the event-centre type supervision cases are filed under."""
    known = catalogue.load().types
    return next(t for t in EVENT_TYPES if t in known)


def _link_event(scene: Scene, principal: Principal, case_id: str, summary: str) -> str | None:
    """Open the linked event-centre case (registered), idempotently by the case id."""
    linked = events.create_case_from_task(
        engine=scene.engine,
        data_dir=scene.data_dir,
        node_code=scene.code,
        task_id=f"medins-{case_id}",
        event_type=event_type(),
        description=f"医保基金监管案件 {case_id}: {summary}"[:4000],
        principal=principal,
    )
    return linked.id


def _summary(rule_id: str, institution_id: str, reason: str) -> str:
    return f"{rule_id} at {institution_id}: {reason}"[:1000]


def _insert_case(
    conn: Connection,
    *,
    case_id: str,
    finding_id: str | None,
    rule_id: str,
    institution_id: str,
    person_id: str | None,
    amount: float,
    summary: str,
    origin: str,
    task_id: str | None,
    by: str,
    at: datetime,
) -> None:
    conn.execute(
        insert(cases).values(
            id=case_id,
            finding_id=finding_id,
            rule_id=rule_id,
            institution_id=institution_id,
            person_id=person_id,
            amount=amount,
            summary=summary,
            stage=Stage.first_review.value,
            status="open",
            deadline=_deadline(Stage.first_review, at),
            history=[_entry(at, Stage.first_review, "open", summary, by)],
            event_case_id=None,
            origin=origin,
            task_id=task_id,
            assigned_to=None,
            assigned_task_id=None,
            created_at=at,
            updated_at=at,
            version=1,
        )
    )


def open_cases(
    scene: Scene,
    *,
    principal: Principal,
    finding_ids: list[str] | None = None,
    source: str | None = None,
    limit: int = 1000,
    now: datetime | None = None,
) -> list[CaseRead]:
    """Turn findings without a case (those named, or all of a source) into cases."""
    _handler(principal)
    if not 1 <= limit <= MAX_OPEN:
        raise BadInput(f"limit must be between 1 and {MAX_OPEN}")
    moment = now_utc(now)
    query = select(findings).where(findings.c.case_id.is_(None)).order_by(findings.c.found_at)
    if finding_ids:
        query = query.where(findings.c.id.in_(finding_ids))
    if source:
        query = query.where(findings.c.source == source)
    opened: list[str] = []
    with scene.engine.begin() as conn:
        rows = conn.execute(query.limit(limit)).all()
        if finding_ids:
            missing = set(finding_ids) - {r.id for r in rows}
            if missing:
                raise Unprocessable(
                    f"finding(s) {', '.join(sorted(missing)[:5])} do not exist or have a case"
                )
        for r in rows:
            case_id = "MC" + uuid.uuid4().hex[:20]
            _insert_case(
                conn,
                case_id=case_id,
                finding_id=r.id,
                rule_id=r.rule_id,
                institution_id=r.institution_id,
                person_id=r.person_id,
                amount=r.amount,
                summary=_summary(r.rule_id, r.institution_id, r.reason),
                origin=r.source,
                task_id=None,
                by=principal.label(),
                at=moment,
            )
            conn.execute(update(findings).where(findings.c.id == r.id).values(case_id=case_id))
            opened.append(case_id)
    for case_id in opened:
        _after_open(scene, principal, case_id)
    audit.append(
        data_dir=scene.data_dir,
        principal=principal,
        action="medins.case.open",
        resource="medins:cases",
        result="ok",
        rows=len(opened),
    )
    return [get_case(scene, case_id=c, now=moment) for c in opened]


def _after_open(scene: Scene, principal: Principal, case_id: str) -> None:
    """Link a committed case to the event centre (a retry after a crash links it then)."""
    case = get_case(scene, case_id=case_id)
    linked = _link_event(scene, principal, case_id, case.summary)
    with scene.engine.begin() as conn:
        conn.execute(update(cases).where(cases.c.id == case_id).values(event_case_id=linked))


# ---------------------------------------------------------------------------------------------
# reading and moving


def get_case(scene: Scene, *, case_id: str, now: datetime | None = None) -> CaseRead:
    """Return one case with the state of its event-centre case, or 404."""
    with scene.engine.connect() as conn:
        row = conn.execute(select(cases).where(cases.c.id == case_id)).first()
    if row is None:
        raise NotFound(f"no supervision case {case_id}")
    read = _read(row, now_utc(now))
    if read.event_case_id:
        try:
            state = events.get_case(engine=scene.engine, case_id=read.event_case_id).state
            read.event_state = str(getattr(state, "value", state))
        except NotFound:
            read.event_state = None
    return read


def list_cases(
    scene: Scene,
    *,
    stage: Stage | None = None,
    status: str | None = None,
    overdue: bool = False,
    limit: int = 100,
    now: datetime | None = None,
) -> list[CaseRead]:
    """Return cases, newest first, filtered by stage, status and being overdue."""
    if not 1 <= limit <= 10_000:
        raise BadInput("limit must be between 1 and 10000")
    moment = now_utc(now)
    query = select(cases).order_by(cases.c.created_at.desc(), cases.c.id)
    if stage is not None:
        query = query.where(cases.c.stage == stage.value)
    if status:
        query = query.where(cases.c.status == status)
    if overdue:
        query = query.where(cases.c.status == "open", cases.c.deadline < moment)
    with scene.engine.connect() as conn:
        return [_read(r, moment) for r in conn.execute(query.limit(limit))]


def act(
    scene: Scene,
    *,
    principal: Principal,
    case_id: str,
    change: CaseAction,
    now: datetime | None = None,
) -> CaseRead:
    """Advance a case to its next stage or dismiss it, with a note; 409 on a closed case."""
    _handler(principal)
    moment = now_utc(now)
    with scene.engine.begin() as conn:
        row = conn.execute(select(cases).where(cases.c.id == case_id)).first()
        if row is None:
            raise NotFound(f"no supervision case {case_id}")
        if row.status != "open":
            raise Conflict(f"case {case_id} is closed ({row.status}); nothing more to do")
        current = Stage(row.stage)
        if change.action is Action.dismiss:
            stage, status = Stage.closed, "dismissed"
        else:
            stage = ORDER[ORDER.index(current) + 1]
            status = "sanctioned" if stage is Stage.closed else "open"
        entry = _entry(moment, stage, change.action.value, change.note, principal.label())
        done = conn.execute(
            update(cases)
            .where(cases.c.id == case_id, cases.c.version == row.version)
            .values(
                stage=stage.value,
                status=status,
                deadline=_deadline(stage, moment) if status == "open" else row.deadline,
                history=[*row.history, entry],
                updated_at=moment,
                version=row.version + 1,
            )
        ).rowcount
        if done != 1:
            raise Conflict(f"case {case_id} changed meanwhile; read it again")
    audit.append(
        data_dir=scene.data_dir,
        principal=principal,
        action=f"medins.case.{change.action.value}",
        resource=f"medins_case:{case_id}",
        result="ok",
        detail={"from": current.value, "to": stage.value, "status": status},
    )
    if row.task_id:
        _report_to_province(scene, principal, row.task_id, status, stage, change.note)
    return get_case(scene, case_id=case_id, now=moment)


# ---------------------------------------------------------------------------------------------
# the province assigns, the city takes in


def assign(
    scene: Scene, *, principal: Principal, case_id: str, to: str, now: datetime | None = None
) -> CaseRead:
    """Send an open case down to a city as a federation task (the province's bureau)."""
    if principal.role is not Role.bureau_admin:
        raise Forbidden("a case is assigned to a city by the bureau (bureau_admin)")
    case = get_case(scene, case_id=case_id, now=now)
    if case.status != "open":
        raise Conflict(f"case {case_id} is closed ({case.status})")
    if case.assigned_to:
        raise Conflict(f"case {case_id} was assigned to {case.assigned_to} already")
    task = federation.send_task(
        engine=scene.engine,
        data_dir=scene.data_dir,
        own_code=scene.code,
        principal=principal,
        task=TaskCreate(
            to=to,
            kind=TASK_KIND,
            title=f"医保基金监管案件 {case_id}"[:200],
            body={
                "case_id": case_id,
                "rule_id": case.rule_id,
                "institution_id": case.institution_id,
                "person_id": case.person_id,
                "amount": case.amount,
                "summary": case.summary,
            },
            due=case.deadline.date(),
        ),
        now=now,
    )
    moment = now_utc(now)
    with scene.engine.begin() as conn:
        row = conn.execute(select(cases.c.history).where(cases.c.id == case_id)).one()
        conn.execute(
            update(cases)
            .where(cases.c.id == case_id)
            .values(
                assigned_to=to,
                assigned_task_id=task.id,
                history=[
                    *row.history,
                    _entry(moment, case.stage, "assign", f"to {to}", principal.label()),
                ],
                updated_at=moment,
                version=cases.c.version + 1,
            )
        )
    return get_case(scene, case_id=case_id, now=now)


def take_assigned(
    scene: Scene, *, principal: Principal, now: datetime | None = None
) -> list[CaseRead]:
    """Open a case for every supervision task the province sent and this node has not taken."""
    _handler(principal)
    moment = now_utc(now)
    received = [
        t
        for t in federation.list_tasks(
            engine=scene.engine, direction=Direction.received, status=TaskStatus.received, limit=500
        )
        if t.kind == TASK_KIND
    ]
    taken: list[str] = []
    for task in received:
        body = task.body
        with scene.engine.begin() as conn:
            exists = conn.execute(select(cases.c.id).where(cases.c.task_id == task.id)).first()
            if exists is not None:
                continue
            case_id = "MC" + uuid.uuid4().hex[:20]
            _insert_case(
                conn,
                case_id=case_id,
                finding_id=None,
                rule_id=str(body.get("rule_id") or "unknown")[:64],
                institution_id=str(body.get("institution_id") or "unknown")[:32],
                person_id=str(body["person_id"])[:64] if body.get("person_id") else None,
                amount=float(body.get("amount") or 0.0),
                summary=str(body.get("summary") or task.title)[:1000],
                origin="province",
                task_id=task.id,
                by=principal.label(),
                at=moment,
            )
        taken.append(case_id)
        federation.update_task_status(
            engine=scene.engine,
            data_dir=scene.data_dir,
            own_code=scene.code,
            principal=principal,
            task_id=task.id,
            change=TaskStatusUpdate(status=TaskStatus.accepted, note=f"case {case_id}"),
        )
        _after_open(scene, principal, case_id)
    return [get_case(scene, case_id=c, now=moment) for c in taken]


def _report_to_province(
    scene: Scene, principal: Principal, task_id: str, status: str, stage: Stage, note: str
) -> None:
    """Send a stage change of an assigned case back to the province as the task's status."""
    task = federation.get_task(engine=scene.engine, task_id=task_id)
    if task.status in (TaskStatus.done, TaskStatus.rejected):
        return
    steps = [TaskStatus.in_progress] if task.status is not TaskStatus.in_progress else []
    if status != "open":
        steps.append(TaskStatus.done)
    for step in steps:
        federation.update_task_status(
            engine=scene.engine,
            data_dir=scene.data_dir,
            own_code=scene.code,
            principal=principal,
            task_id=task_id,
            change=TaskStatusUpdate(status=step, note=f"{stage.value} ({status}): {note}"[:2000]),
        )


def stage_counts(scene: Scene, *, now: datetime | None = None) -> dict[str, Any]:
    """Return how many cases stand in each stage, how many closed each way, how many overdue."""
    moment = now_utc(now)
    with scene.engine.connect() as conn:
        by_stage = {
            stage: int(n)
            for stage, n in conn.execute(
                select(cases.c.stage, func.count())
                .where(cases.c.status == "open")
                .group_by(cases.c.stage)
            )
        }
        by_status = {
            status: int(n)
            for status, n in conn.execute(
                select(cases.c.status, func.count()).group_by(cases.c.status)
            )
        }
        overdue = conn.execute(
            select(func.count()).where(cases.c.status == "open", cases.c.deadline < moment)
        ).scalar_one()
    return {
        "open_by_stage": {s.value: by_stage.get(s.value, 0) for s in ORDER[:-1]},
        "by_status": by_status,
        "overdue": int(overdue),
    }
