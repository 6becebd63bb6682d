"""The parent's side of the season: household, submission with eligibility at once, status.

Only this module and its siblings (season, appeals, run, stats) touch the scene's tables.
A submission is checked completely before anything is written, then the application, its
notice and its audit record go in one transaction: a refused submission leaves nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from citybrain.core.errors import Conflict, Forbidden, NotFound, Unprocessable
from citybrain.governance.audit import service as audit
from citybrain.governance.keys import node_key
from citybrain.governance.masking import MaskKind, mask_text
from citybrain.governance.principal import Principal, Role
from citybrain.scenes.enrollment import eligibility, household
from citybrain.scenes.enrollment import season as seasons
from citybrain.scenes.enrollment.models import Level
from citybrain.scenes.enrollment.plan import CountyPlan, Zone
from citybrain.scenes.enrollment.store import (
    enrollment_appeals,
    enrollment_applications,
    enrollment_notices,
)

Basis = Literal["hukou", "property", "residence"]
MAX_CHOICES = 8


class ApplicationIn(BaseModel):
    """What a parent submits."""

    model_config = ConfigDict(extra="forbid")

    child_id_number: str = Field(min_length=1, max_length=32)
    basis: Basis = "hukou"
    zone_id: str | None = Field(None, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")
    choices: list[str] = Field(default_factory=list, max_length=MAX_CHOICES)
    level: Level | None = None


class ApplicationRead(BaseModel):
    """An application as its parent (or the Education Bureau) sees it."""

    id: str
    season_id: str
    county_code: str
    level: str
    child_id_number: str  # masked 6+4
    child_name: str
    basis: str
    zone_id: str
    choices: list[str]
    checks: dict[str, bool]
    priority_class: int | None
    class_name: str | None
    reason: str
    status: str
    school_id: str | None
    stage: str | None
    appeal: str | None  # how to appeal, when something failed
    created_at: datetime
    updated_at: datetime


class Notice(BaseModel):
    """A message to the parent about an application."""

    id: int
    application_id: str
    kind: str
    message: str
    created_at: datetime


class HouseholdRead(BaseModel):
    """What the parent's first page shows: their household's children and the zones."""

    season: seasons.SeasonRead
    county: str
    community_code: str | None
    children: list[dict[str, Any]]
    zones: list[dict[str, Any]]
    private_schools: list[dict[str, Any]]  # 公民同招: rankable beside the zone's schools


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def pseudonym(data_dir: Path, season_id: str, id_number: str) -> str:
    """Return the child's pseudonym in a season's draw (keyed, so it cannot be reversed)."""
    raw = node_key(data_dir).private_bytes_raw()
    key = hmac.new(raw, f"enrollment:{season_id}".encode(), hashlib.sha256).digest()
    return "C" + hmac.new(key, id_number.encode(), hashlib.sha256).hexdigest()[:20]


def appeal_hint(checks: dict[str, bool], failed: list[str]) -> str | None:
    """Tell the parent how to appeal a criterion answered no."""
    if not failed:
        return None
    what = "、".join(eligibility.CRITERIA[c].appeal_zh for c in failed)
    return (
        f"如认为核验结果有误，可在截止日期前对该项提出申诉并提交{what}，"
        "由教育局审核人员复核（POST /api/enrollment/applications/{id}/appeals）"
    )


def _view(row: Any) -> ApplicationRead:
    checks = dict(row.checks)
    failed = [c for c, ok in checks.items() if not ok and c in eligibility.CRITERIA]
    return ApplicationRead(
        id=row.id,
        season_id=row.season_id,
        county_code=row.county_code,
        level=row.level,
        child_id_number=mask_text(MaskKind.id_number, row.child_id_number),
        child_name=row.child_name,
        basis=row.basis,
        zone_id=row.zone_id,
        choices=list(row.choices),
        checks=checks,
        priority_class=row.priority_class,
        class_name=row.class_name,
        reason=row.reason,
        status=row.status,
        school_id=row.school_id,
        stage=row.stage,
        appeal=appeal_hint(checks, failed) if row.status == "not_eligible" or failed else None,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )


def _zone_json(plan: CountyPlan, zone: Zone) -> dict[str, Any]:
    return {
        "zone_id": zone.zone_id,
        "level": zone.level.value,
        "kind": zone.kind,
        "schools": [
            {
                "school_id": s,
                "name": plan.schools[s].name,
                "ownership": plan.schools[s].ownership,
                "capacity": plan.schools[s].capacity,
            }
            for s in zone.school_ids
        ],
    }


def household_view(
    *, engine: Engine, data_dir: Path, code: str, principal: Principal
) -> HouseholdRead:
    """Return the parent's children (masked) and the zones of their county, through the gate."""
    season = seasons.current_season(engine=engine, code=code)
    parent = household.parent_of(engine=engine, data_dir=data_dir, principal=principal)
    children = household.children_of(engine=engine, data_dir=data_dir, code=code, parent=parent)
    county = parent.residence_county
    zones: list[dict[str, Any]] = []
    private: list[dict[str, Any]] = []
    if county in season.counties:
        plan = seasons.plan_of(engine=engine, data_dir=data_dir, code=code, county=county)
        home = {level: plan.zone_of_community(parent.community_code, level) for level in Level}
        for zone in plan.zones.values():
            item = _zone_json(plan, zone)
            item["home"] = home.get(zone.level) is zone
            zones.append(item)
        zones.sort(key=lambda z: (not z["home"], z["level"], z["zone_id"]))
        private = [
            {"school_id": p.school_id, "name": p.name, "level": p.level, "capacity": p.capacity}
            for level in Level
            for p in plan.private_schools(level)
        ]
    return HouseholdRead(
        season=season,
        county=county,
        community_code=parent.community_code,
        children=[household.as_json(c) for c in children],
        zones=zones,
        private_schools=private,
    )


def _choose_zone(
    body: ApplicationIn, plan: CountyPlan, parent: household.Parent, level: Level
) -> Zone:
    if body.basis == "property":
        if not body.zone_id:
            raise Unprocessable("an application on the basis of property names the zone_id")
        zone = plan.zones.get(body.zone_id)
        if zone is None or zone.level is not level:
            raise Unprocessable(
                f"zone {body.zone_id} is not a {level.value} zone of county {plan.county}"
            )
        return zone
    zone = plan.zone_of_community(parent.community_code, level)
    if zone is None:
        raise Unprocessable(
            f"the household's community {parent.community_code} lies in no {level.value} "
            f"catchment zone of county {plan.county}"
        )
    if body.zone_id and body.zone_id != zone.zone_id:
        raise Unprocessable(
            f"on the basis of {body.basis} the zone is the household's ({zone.zone_id}); "
            "to apply in another zone choose the basis property"
        )
    return zone


def _choices(body: ApplicationIn, plan: CountyPlan, zone: Zone, level: Level) -> list[str]:
    """Validate the ranking: the zone's schools (any order) and private schools of the level."""
    if len(set(body.choices)) != len(body.choices):
        raise Unprocessable("a school appears twice in the ranking")
    private = {s.school_id for s in plan.private_schools(level)}
    allowed = set(zone.school_ids) | private
    outside = [s for s in body.choices if s not in allowed]
    if outside:
        raise Unprocessable(
            f"school(s) {', '.join(outside)} are neither in zone {zone.zone_id} nor private "
            f"{level.value} schools of county {plan.county}"
        )
    for school_id in body.choices:
        if plan.schools[school_id].capacity <= 0:
            raise Unprocessable(f"school {school_id} has no seats in the entry grade this year")
    ranked = list(body.choices)
    if not any(s in zone.school_ids for s in ranked):
        # the zone's schools are always the child's right: unranked ones follow in zone order
        ranked += list(zone.school_ids)
    elif zone.kind == "multi":
        ranked += [s for s in zone.school_ids if s not in ranked]
    return ranked


def _county_of_zone(
    engine: Engine,
    data_dir: Path,
    code: str,
    season: seasons.SeasonRead,
    zone_id: str,
    home: str,
) -> str:
    """Return the county of the season whose plan has this zone (the home county first)."""
    for county in [home] + [c for c in season.counties if c != home]:
        if county not in season.counties:
            continue
        plan = seasons.plan_of(engine=engine, data_dir=data_dir, code=code, county=county)
        if zone_id in plan.zones:
            return county
    raise Unprocessable(f"zone {zone_id} is not a catchment zone of season {season.id}")


def submit(
    *,
    engine: Engine,
    data_dir: Path,
    code: str,
    principal: Principal,
    body: ApplicationIn,
    now: datetime | None = None,
) -> ApplicationRead:
    """Check and store a parent's application, with its priority class decided at once."""
    moment = now or datetime.now(UTC)
    season = seasons.current_season(engine=engine, code=code)
    seasons.check_open(season, moment)
    child_id = household.check_id_number(body.child_id_number)
    parent = household.parent_of(engine=engine, data_dir=data_dir, principal=principal)
    children = household.children_of(engine=engine, data_dir=data_dir, code=code, parent=parent)
    child = household.match_child(children, child_id)
    home_plan = seasons.plan_of(
        engine=engine, data_dir=data_dir, code=code, county=season.counties[0]
    )
    if parent.residence_county in season.counties:
        home_plan = seasons.plan_of(
            engine=engine, data_dir=data_dir, code=code, county=parent.residence_county
        )
    level = home_plan.entry_level(household.birth_date(child_id), season.year)
    if level is None:
        raise Unprocessable(
            f"a child born on {household.birth_date(child_id).isoformat()} does not enter "
            f"primary 1 or junior 1 in {season.year}"
        )
    if body.level is not None and body.level is not level:
        raise Unprocessable(
            f"this child enters {level.value} 1 in {season.year}, not {body.level.value} 1"
        )
    zone_county = parent.residence_county
    if body.basis == "property" and body.zone_id:
        zone_county = _county_of_zone(engine, data_dir, code, season, body.zone_id, zone_county)
    if zone_county not in season.counties:
        raise Unprocessable(f"county {zone_county} is not part of season {season.id}")
    plan = seasons.plan_of(engine=engine, data_dir=data_dir, code=code, county=zone_county)
    zone = _choose_zone(body, plan, parent, level)
    ranked = _choices(body, plan, zone, level)
    with engine.connect() as conn:
        taken = conn.execute(
            select(enrollment_applications.c.id).where(
                enrollment_applications.c.season_id == season.id,
                enrollment_applications.c.child_id_number == child_id,
            )
        ).first()
    if taken is not None:
        raise Conflict(f"this child has an application in season {season.id} already ({taken.id})")
    application_id = uuid.uuid4().hex
    address = parent.address_id if parent.community_code in zone.community_codes else None
    facts = eligibility.Facts(
        application=application_id,
        child_id=child_id,
        parent_id=parent.id_number,
        county=zone_county,
        address_id=address,
        zone_id=zone.zone_id,
        lives_in_zone=parent.community_code in zone.community_codes,
    )
    criteria = sorted(set(plan.criteria) | {"hukou_in_county"})
    # the second row checks that the typed number is a person registered where the household
    # register shows this child (the masked row matched; this proves the hidden digits)
    member = eligibility.Facts(
        application=application_id,
        child_id=child_id,
        parent_id=parent.id_number,
        county=child.hukou_county,
        address_id=None,
        zone_id=zone.zone_id,
    )
    terms = eligibility.Terms(
        on_date=date(season.year, 8, 31), insurance_months=plan.insurance_months
    )
    answers = eligibility.verify(
        engine=engine,
        data_dir=data_dir,
        principal=household.education(code),
        facts=[facts, member],
        zones={zone.zone_id: zone.community_codes},
        criteria=criteria,
        terms=terms,
        season=season.id,
        durable=False,
    )
    if not answers["hukou_in_county"][1]:
        raise Forbidden(
            "this ID number is not a child of your household in the household register; "
            "check the number on the household booklet (户口簿)"
        )
    checks = {c: bool(answers[c][0]) for c in criteria}
    outcome = eligibility.classify(checks, plan.classes)
    anchor = plan.schools[zone.school_ids[0]]
    status = "eligible" if outcome.priority_class is not None else "not_eligible"
    values = {
        "id": application_id,
        "season_id": season.id,
        "county_code": zone_county,
        "level": level.value,
        "child_id_number": child_id,
        "child_name": child.masked_name,
        "child": pseudonym(data_dir, season.id, child_id),
        "parent_phone": parent.phone,
        "parent_id_number": parent.id_number,
        "household_id": parent.household_id,
        "basis": body.basis,
        "address_id": address,
        "zone_id": zone.zone_id,
        "choices": ranked,
        "lon": anchor.lon,
        "lat": anchor.lat,
        "sibling": False,
        "checks": checks,
        "priority_class": outcome.priority_class,
        "class_name": outcome.class_name,
        "reason": outcome.reason,
        "status": status,
        "created_at": moment,
        "updated_at": moment,
    }
    message = (
        f"报名已提交：{outcome.reason}"
        if status == "eligible"
        else f"报名已提交，但{outcome.reason}"
    )
    try:
        with engine.begin() as conn:
            conn.execute(insert(enrollment_applications).values(**values))
            conn.execute(
                insert(enrollment_notices).values(
                    application_id=application_id,
                    parent_phone=parent.phone,
                    kind="submitted",
                    message=message,
                    created_at=moment,
                )
            )
            # the evidence goes first: if it cannot be written, nothing is stored; the line is
            # written before the answer (it survives a killed process) and reaches the disk
            # with the next durable record or within 0.2 s, like other high-rate writes
            audit.append(
                data_dir=data_dir,
                principal=principal,
                action="enrollment.apply",
                resource=f"enrollment/{season.id}",
                result="ok",
                detail={
                    "application": application_id,
                    "county": zone_county,
                    "level": level.value,
                    "class": outcome.priority_class,
                },
                durable=False,
            )
    except IntegrityError:
        raise Conflict(f"this child has an application in season {season.id} already") from None
    # the answer is the row just committed (not read back: no placement exists before a draw)
    return _view(SimpleNamespace(**values, school_id=None, stage=None))


def _is_staff(principal: Principal) -> bool:
    try:
        seasons.require_staff(principal)
    except Forbidden:
        return False
    return True


def get_application(
    *, engine: Engine, principal: Principal, application_id: str
) -> ApplicationRead:
    """Return one application to its parent or to the staff; 404 to anyone else."""
    with engine.connect() as conn:
        row = conn.execute(
            select(enrollment_applications).where(enrollment_applications.c.id == application_id)
        ).first()
    if row is None or not (
        _is_staff(principal)
        or (principal.role is Role.citizen and principal.phone == row.parent_phone)
    ):
        raise NotFound(f"no application {application_id}")
    return _hide_unpublished(engine, _view(row))


def _hide_unpublished(engine: Engine, view: ApplicationRead) -> ApplicationRead:
    """Results stay out of sight until the season is published."""
    if view.school_id is None and view.status not in ("placed", "unplaced"):
        return view
    current = seasons.get_season(engine=engine, season_id=view.season_id)
    if current.status == "published":
        return view
    before = "eligible" if view.priority_class is not None else "not_eligible"
    return view.model_copy(update={"school_id": None, "stage": None, "status": before})


def list_applications(
    *,
    engine: Engine,
    principal: Principal,
    season_id: str | None = None,
    county: str | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[ApplicationRead]:
    """List the parent's own applications, or (staff) the season's, filtered and paged."""
    query = select(enrollment_applications)
    if principal.role is Role.citizen and principal.phone:
        query = query.where(enrollment_applications.c.parent_phone == principal.phone)
    elif not _is_staff(principal):
        raise Forbidden("applications are seen by their parents and the Education Bureau")
    if season_id:
        query = query.where(enrollment_applications.c.season_id == season_id)
    if county:
        query = query.where(enrollment_applications.c.county_code == county)
    if status:
        query = query.where(enrollment_applications.c.status == status)
    query = query.order_by(enrollment_applications.c.created_at, enrollment_applications.c.id)
    with engine.connect() as conn:
        rows = conn.execute(query.limit(limit).offset(offset)).all()
    return [_hide_unpublished(engine, _view(r)) for r in rows]


def list_notices(*, engine: Engine, principal: Principal) -> list[Notice]:
    """Return the signed-in parent's notices, newest first."""
    if principal.role is not Role.citizen or not principal.phone:
        raise Forbidden("notices are for the parent signed in with their phone")
    with engine.connect() as conn:
        rows = conn.execute(
            select(enrollment_notices)
            .where(enrollment_notices.c.parent_phone == principal.phone)
            .order_by(enrollment_notices.c.id.desc())
            .limit(200)
        ).all()
    return [
        Notice(
            id=r.id,
            application_id=r.application_id,
            kind=r.kind,
            message=r.message,
            created_at=_utc(r.created_at),
        )
        for r in rows
    ]


def pending_appeal(engine: Engine, application_id: str) -> str | None:
    """Return the id of an application's pending appeal, if any."""
    with engine.connect() as conn:
        row = conn.execute(
            select(enrollment_appeals.c.id).where(
                enrollment_appeals.c.application_id == application_id,
                enrollment_appeals.c.status == "pending",
            )
        ).first()
    return None if row is None else str(row.id)
