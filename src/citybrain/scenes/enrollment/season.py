"""The enrollment season of a node: open (only under the grants), close, draw, publish."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from citybrain.core.errors import Conflict, Forbidden, NotFound, Unprocessable
from citybrain.geo import service as geo
from citybrain.governance.audit import service as audit
from citybrain.governance.principal import Principal, Role
from citybrain.governance.sharing import service as sharing
from citybrain.governance.verification.questions import QUESTIONS
from citybrain.scenes.enrollment import eligibility
from citybrain.scenes.enrollment.household import PREFILL_FIELDS, RESIDENTS
from citybrain.scenes.enrollment.plan import CountyPlan, county_plan
from citybrain.scenes.enrollment.store import enrollment_seasons

PLAN_SECONDS = 30.0
CST = timezone(timedelta(hours=8))
DEFAULT_DAYS = 14


class SeasonRead(BaseModel):
    """A season as the API shows it."""

    id: str
    node_code: str
    year: int
    status: str
    counties: list[str]
    opens_at: datetime
    deadline: datetime
    grants: dict[str, str]
    draws: dict[str, Any]
    opened_by: str
    opened_at: datetime
    closed_at: datetime | None
    drawn_at: datetime | None
    published_at: datetime | None


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _read(row: Any) -> SeasonRead:
    return SeasonRead(
        id=row.id,
        node_code=row.node_code,
        year=row.year,
        status=row.status,
        counties=list(row.counties),
        opens_at=_utc(row.opens_at) or row.opens_at,
        deadline=_utc(row.deadline) or row.deadline,
        grants=dict(row.grants),
        draws=dict(row.draws or {}),
        opened_by=row.opened_by,
        opened_at=_utc(row.opened_at) or row.opened_at,
        closed_at=_utc(row.closed_at),
        drawn_at=_utc(row.drawn_at),
        published_at=_utc(row.published_at),
    )


def require_staff(principal: Principal) -> None:
    """Admit the bureau and the Education Bureau's staff; refuse everyone else (403)."""
    if principal.role is Role.bureau_admin:
        return
    if principal.org == "education" and principal.role in (
        Role.steward,
        Role.operator,
        Role.service,
    ):
        return
    raise Forbidden("running the enrollment season is for the Education Bureau or the bureau")


def counties_of(code: str) -> list[str]:
    """Return the counties a node's season covers: its own county, or its city's counties."""
    unit = geo.get_unit(code)
    if unit.level.value == "county":
        return [code]
    if unit.level.value == "city":
        return [u.code for u in geo.children(code)]
    raise Unprocessable("an enrollment season runs at a city or county node, not the province")


_plans: dict[tuple[str, str], tuple[float, CountyPlan]] = {}
_plans_lock = threading.Lock()


def plan_of(*, engine: Engine, data_dir: Path, code: str, county: str) -> CountyPlan:
    """Return a county's plan, built at most every PLAN_SECONDS per process."""
    key = (str(data_dir.resolve()), county)
    moment = time.monotonic()
    cached = _plans.get(key)
    if cached is not None and moment - cached[0] < PLAN_SECONDS:
        return cached[1]
    plan = county_plan(engine=engine, data_dir=data_dir, code=code, county=county)
    with _plans_lock:
        _plans[key] = (moment, plan)
    return plan


def forget_plans(data_dir: Path) -> None:
    """Drop cached plans of a node (after its tables changed in a test)."""
    root = str(data_dir.resolve())
    with _plans_lock:
        for key in [k for k in _plans if k[0] == root]:
            del _plans[key]


def needed_grants(
    *, engine: Engine, data_dir: Path, code: str, counties: list[str]
) -> dict[str, str]:
    """Return the grants a season works under; refuse (422) naming every one missing."""
    criteria = sorted(
        {
            c
            for county in counties
            for c in plan_of(engine=engine, data_dir=data_dir, code=code, county=county).criteria
        }
        | {"hukou_in_county"}  # a typed child ID number must be a registered person
    )
    questions = eligibility.questions_for(criteria)
    missing = eligibility.missing_grants(engine=engine, questions=questions)
    records = sharing.active_grant(
        engine=engine, dataset_id=RESIDENTS, org="education", kind="records"
    )
    if records is None or set(PREFILL_FIELDS) - set(records.fields):
        missing.append(
            f"records grant on {RESIDENTS} with the fields {', '.join(PREFILL_FIELDS)} "
            "(prefilling the children of a household)"
        )
    if missing:
        raise Unprocessable(
            "the season cannot open: the Education Bureau lacks "
            + "; ".join(missing)
            + ". Request them with `citybrain sharing request --org education --role steward "
            "--kind verification --question Q ...` (see docs/enrollment.md) and have the "
            "owners and the bureau approve"
        )
    grants: dict[str, str] = {}
    for q in questions:
        dataset = QUESTIONS[q].dataset
        grant = sharing.active_grant(
            engine=engine, dataset_id=dataset, org="education", kind="verification"
        )
        if grant is not None:
            grants[q] = str(grant.id)
    if records is not None:
        grants["prefill"] = str(records.id)
    return grants


def open_season(
    *,
    engine: Engine,
    data_dir: Path,
    code: str,
    principal: Principal,
    year: int | None = None,
    deadline: datetime | None = None,
    opens_at: datetime | None = None,
    now: datetime | None = None,
) -> SeasonRead:
    """Open a node's season for a year, after checking the grants it needs (422 without)."""
    require_staff(principal)
    moment = now or datetime.now(UTC)
    counties = counties_of(code)
    first = plan_of(engine=engine, data_dir=data_dir, code=code, county=counties[0]).rules
    if year is None:
        year = first.year
    if not 2000 <= year <= 2100:
        raise Unprocessable(f"the year {year} is out of range (2000-2100)")
    for name, value in (("opens_at", opens_at), ("deadline", deadline)):
        if value is not None and not 2000 <= value.year <= 2100:
            raise Unprocessable(f"{name} {value.isoformat()} is out of range (years 2000-2100)")
    start = _utc(opens_at) or moment
    # the rules' deadline day, to its end in China Standard Time
    ruled = datetime.combine(first.calendar.deadline, datetime.max.time(), tzinfo=CST)
    end = _utc(deadline) or (
        ruled if first.year == year and ruled > start else start + timedelta(days=DEFAULT_DAYS)
    )
    if end <= start:
        raise Unprocessable(
            f"the deadline {end.isoformat()} is not after the opening {start.isoformat()}"
        )
    if end.date() > date(year, 8, 31):
        raise Unprocessable(f"the deadline must fall before the school year ({year}-09-01)")
    grants = needed_grants(engine=engine, data_dir=data_dir, code=code, counties=counties)
    season_id = f"{code}-{year}"
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(enrollment_seasons).values(
                    id=season_id,
                    node_code=code,
                    year=year,
                    status="open",
                    counties=counties,
                    opens_at=start,
                    deadline=end,
                    grants=grants,
                    draws={},
                    opened_by=principal.label(),
                    opened_at=moment,
                )
            )
            audit.append(
                data_dir=data_dir,
                principal=principal,
                action="enrollment.season.open",
                resource=f"enrollment/{season_id}",
                result="ok",
                detail={"counties": len(counties), "deadline": end.isoformat(), "grants": grants},
            )
    except IntegrityError:
        raise Conflict(f"the season {season_id} exists already") from None
    return get_season(engine=engine, season_id=season_id)


def get_season(*, engine: Engine, season_id: str) -> SeasonRead:
    """Return one season, or 404."""
    with engine.connect() as conn:
        row = conn.execute(
            select(enrollment_seasons).where(enrollment_seasons.c.id == season_id)
        ).first()
    if row is None:
        raise NotFound(f"no enrollment season {season_id}")
    return _read(row)


def current_season(*, engine: Engine, code: str) -> SeasonRead:
    """Return the node's newest season, or 404 when none was ever opened."""
    with engine.connect() as conn:
        row = conn.execute(
            select(enrollment_seasons)
            .where(enrollment_seasons.c.node_code == code)
            .order_by(enrollment_seasons.c.year.desc())
            .limit(1)
        ).first()
    if row is None:
        raise NotFound("no enrollment season has been opened on this node")
    return _read(row)


def check_open(season: SeasonRead, now: datetime) -> None:
    """Refuse a submission outside the season's window (409) with the dates."""
    if season.status != "open":
        raise Conflict(f"the season {season.id} is {season.status}: applications are closed")
    if now < season.opens_at:
        raise Conflict(f"the season {season.id} opens at {season.opens_at.isoformat()}")
    if now > season.deadline:
        raise Conflict(
            f"the deadline of season {season.id} passed at {season.deadline.isoformat()}"
        )


def move(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal,
    season_id: str,
    source: str,
    target: str,
    stamp: str | None,
    now: datetime | None = None,
    draws: dict[str, Any] | None = None,
) -> SeasonRead:
    """Move a season from one state to the next (409 from any other state)."""
    require_staff(principal)
    moment = now or datetime.now(UTC)
    values: dict[str, Any] = {"status": target}
    if stamp is not None:
        values[stamp] = moment
    if draws is not None:
        values["draws"] = draws
    with engine.begin() as conn:
        done = conn.execute(
            update(enrollment_seasons)
            .where(enrollment_seasons.c.id == season_id, enrollment_seasons.c.status == source)
            .values(**values)
        ).rowcount
        if not done:
            current = get_season(engine=engine, season_id=season_id)
            raise Conflict(
                f"the season {season_id} is {current.status}; it must be {source} to become "
                f"{target}"
            )
        audit.append(
            data_dir=data_dir,
            principal=principal,
            action=f"enrollment.season.{target}",
            resource=f"enrollment/{season_id}",
            result="ok",
        )
    return get_season(engine=engine, season_id=season_id)
