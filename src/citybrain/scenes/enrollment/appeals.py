"""Appeals: a parent disputes a criterion answered no; a reviewer upholds or dismisses it.

The reviewer sees the parent's documents outside the system (the departments' data said
no); an upheld appeal sets the criterion to yes, the child is classified again under the
county's rules and the parent is told. Appeals are decided before the draw.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, insert, select, update

from citybrain.core.errors import Conflict, Forbidden, NotFound, Unprocessable
from citybrain.governance.audit import service as audit
from citybrain.governance.principal import Principal, Role
from citybrain.scenes.enrollment import eligibility
from citybrain.scenes.enrollment import season as seasons
from citybrain.scenes.enrollment.store import (
    enrollment_appeals,
    enrollment_applications,
    enrollment_notices,
)


class AppealIn(BaseModel):
    """A parent's appeal against one criterion."""

    model_config = ConfigDict(extra="forbid")

    criterion: str = Field(min_length=1, max_length=64, pattern=r"^[a-z_]+$")
    statement: str = Field(min_length=1, max_length=2000)


class DecisionIn(BaseModel):
    """A reviewer's decision."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["upheld", "dismissed"]
    reason: str = Field(min_length=1, max_length=2000)


class AppealRead(BaseModel):
    """An appeal and, once decided, its decision."""

    id: str
    application_id: str
    season_id: str
    county_code: str
    criterion: str
    statement: str
    status: str
    decision_reason: str | None
    decided_by: str | None
    decided_at: datetime | None
    created_at: datetime


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _read(row: Any) -> AppealRead:
    return AppealRead(
        id=row.id,
        application_id=row.application_id,
        season_id=row.season_id,
        county_code=row.county_code,
        criterion=row.criterion,
        statement=row.statement,
        status=row.status,
        decision_reason=row.decision_reason,
        decided_by=row.decided_by,
        decided_at=_utc(row.decided_at),
        created_at=_utc(row.created_at) or row.created_at,
    )


def _before_draw(engine: Engine, season_id: str) -> None:
    current = seasons.get_season(engine=engine, season_id=season_id)
    if current.status not in ("open", "closed"):
        raise Conflict(f"the season {season_id} is {current.status}: appeals are closed")


def file_appeal(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal,
    application_id: str,
    body: AppealIn,
    now: datetime | None = None,
) -> AppealRead:
    """File a parent's appeal against a criterion of their own application answered no."""
    moment = now or datetime.now(UTC)
    if principal.role is not Role.citizen or not principal.phone:
        raise Forbidden("appeals are filed by the parent signed in with their phone")
    with engine.connect() as conn:
        app = conn.execute(
            select(enrollment_applications).where(enrollment_applications.c.id == application_id)
        ).first()
    if app is None or app.parent_phone != principal.phone:
        raise NotFound(f"no application {application_id}")
    _before_draw(engine, app.season_id)
    checks = dict(app.checks)
    if body.criterion not in checks:
        raise Unprocessable(
            f"{body.criterion} was not checked for this application; checked: "
            + ", ".join(sorted(checks))
        )
    if checks[body.criterion]:
        raise Unprocessable(
            f"{body.criterion} was answered yes already; there is nothing to appeal"
        )
    appeal_id = uuid.uuid4().hex
    with engine.begin() as conn:
        pending = conn.execute(
            select(enrollment_appeals.c.id).where(
                enrollment_appeals.c.application_id == application_id,
                enrollment_appeals.c.status == "pending",
            )
        ).first()
        if pending is not None:
            raise Conflict(f"the appeal {pending.id} of this application is still pending")
        conn.execute(
            insert(enrollment_appeals).values(
                id=appeal_id,
                application_id=application_id,
                season_id=app.season_id,
                county_code=app.county_code,
                criterion=body.criterion,
                statement=body.statement,
                status="pending",
                created_at=moment,
            )
        )
        conn.execute(
            insert(enrollment_notices).values(
                application_id=application_id,
                parent_phone=app.parent_phone,
                kind="appeal_filed",
                message=f"申诉已受理（{eligibility.CRITERIA[body.criterion].failed_zh}），"
                "审核结果将通知您",
                created_at=moment,
            )
        )
        audit.append(
            data_dir=data_dir,
            principal=principal,
            action="enrollment.appeal",
            resource=f"enrollment/{app.season_id}",
            result="ok",
            detail={
                "application": application_id,
                "appeal": appeal_id,
                "criterion": body.criterion,
            },
        )
    return get_appeal(engine=engine, principal=principal, appeal_id=appeal_id)


def get_appeal(*, engine: Engine, principal: Principal, appeal_id: str) -> AppealRead:
    """Return one appeal to its parent or to the staff; 404 to anyone else."""
    with engine.connect() as conn:
        row = conn.execute(
            select(enrollment_appeals, enrollment_applications.c.parent_phone)
            .join(
                enrollment_applications,
                enrollment_applications.c.id == enrollment_appeals.c.application_id,
            )
            .where(enrollment_appeals.c.id == appeal_id)
        ).first()
    if row is None:
        raise NotFound(f"no appeal {appeal_id}")
    own = principal.role is Role.citizen and principal.phone == row.parent_phone
    if not own:
        try:
            seasons.require_staff(principal)
        except Forbidden:
            raise NotFound(f"no appeal {appeal_id}") from None
    return _read(row)


def list_appeals(
    *,
    engine: Engine,
    principal: Principal,
    status: str | None = None,
    application_id: str | None = None,
) -> list[AppealRead]:
    """List appeals: the parent's own, or (staff) every appeal, filtered."""
    query = select(enrollment_appeals).join(
        enrollment_applications,
        enrollment_applications.c.id == enrollment_appeals.c.application_id,
    )
    if principal.role is Role.citizen and principal.phone:
        query = query.where(enrollment_applications.c.parent_phone == principal.phone)
    else:
        seasons.require_staff(principal)
    if status:
        query = query.where(enrollment_appeals.c.status == status)
    if application_id:
        query = query.where(enrollment_appeals.c.application_id == application_id)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(enrollment_appeals.c.created_at).limit(1000)).all()
    return [_read(r) for r in rows]


def decide(
    *,
    engine: Engine,
    data_dir: Path,
    code: str,
    principal: Principal,
    appeal_id: str,
    body: DecisionIn,
    now: datetime | None = None,
) -> AppealRead:
    """Record a reviewer's decision; an upheld appeal re-classifies the child at once."""
    seasons.require_staff(principal)
    moment = now or datetime.now(UTC)
    appeal = get_appeal(engine=engine, principal=principal, appeal_id=appeal_id)
    if appeal.status != "pending":
        raise Conflict(f"the appeal {appeal_id} was {appeal.status} already")
    _before_draw(engine, appeal.season_id)
    with engine.connect() as conn:
        app = conn.execute(
            select(enrollment_applications).where(
                enrollment_applications.c.id == appeal.application_id
            )
        ).one()
    changes: dict[str, Any] = {}
    message = f"申诉未获支持：{body.reason}"
    if body.decision == "upheld":
        plan = seasons.plan_of(engine=engine, data_dir=data_dir, code=code, county=app.county_code)
        checks = {**dict(app.checks), appeal.criterion: True}
        outcome = eligibility.classify(checks, plan.classes)
        changes = {
            "checks": checks,
            "priority_class": outcome.priority_class,
            "class_name": outcome.class_name,
            "reason": outcome.reason + "（经申诉复核）",
            "status": "eligible" if outcome.priority_class is not None else "not_eligible",
            "updated_at": moment,
        }
        message = f"申诉已支持：{outcome.reason}"
    with engine.begin() as conn:
        done = conn.execute(
            update(enrollment_appeals)
            .where(enrollment_appeals.c.id == appeal_id, enrollment_appeals.c.status == "pending")
            .values(
                status=body.decision,
                decision_reason=body.reason,
                decided_by=principal.label(),
                decided_at=moment,
            )
        ).rowcount
        if not done:
            raise Conflict(f"the appeal {appeal_id} was decided meanwhile")
        if changes:
            conn.execute(
                update(enrollment_applications)
                .where(enrollment_applications.c.id == app.id)
                .values(**changes)
            )
        conn.execute(
            insert(enrollment_notices).values(
                application_id=app.id,
                parent_phone=app.parent_phone,
                kind=f"appeal_{body.decision}",
                message=message,
                created_at=moment,
            )
        )
        audit.append(
            data_dir=data_dir,
            principal=principal,
            action="enrollment.appeal.decide",
            resource=f"enrollment/{appeal.season_id}",
            result=body.decision,
            detail={"appeal": appeal_id, "application": app.id, "criterion": appeal.criterion},
        )
    return get_appeal(engine=engine, principal=principal, appeal_id=appeal_id)
