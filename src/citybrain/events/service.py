"""The event centre's storage: intake, transitions, deadlines, escalations, statistics."""

from __future__ import annotations

import logging
import re
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import shapely
from sqlalchemy import Connection, Engine, and_, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from citybrain.core.errors import BadInput, Conflict, NotFound, Unprocessable
from citybrain.decisions.notify import service as notify
from citybrain.events import calendar as working
from citybrain.events import catalogue, classifier
from citybrain.events.models import (
    MAX_TEXT,
    CaseCreate,
    CaseRead,
    Classification,
    DepartmentStats,
    EscalationRead,
    HotlineCreate,
    IntakeResult,
    StatsRead,
    TransitionRead,
    TransitionRequest,
    event_cases,
    event_escalations,
    event_transitions,
)
from citybrain.events.statemachine import (
    CAPTURE,
    MAX_EXTENSIONS,
    OPEN_STATES,
    TRANSITIONS,
    Actor,
    State,
    actors_of,
    allowed,
    check_actor,
    is_centre,
    target_of,
)
from citybrain.geo import service as geo
from citybrain.governance.audit import service as audit
from citybrain.governance.principal import SYSTEM, Principal

log = logging.getLogger(__name__)
SOURCES = ("grid", "hotline", "iot", "task", "open311")
CLOSED_FOR_OPEN311 = frozenset({State.closed, State.rated, State.evaluated, State.discarded})
_DEPARTMENT = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
FILL_ALARM = 0.9
LAMP_FAULTS = frozenset({"broken", "faulty", "off", "failure", "defective", "fault"})
ALARM_TYPES = frozenset({"CameraAlarm", "VideoAlarm", "Alarm", "Alert"})


# ---------------------------------------------------------------------------------------------
# small pieces


def _now(now: datetime | None) -> datetime:
    moment = now or datetime.now(UTC)
    return _utc(moment)


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes: every stored time is UTC
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _opt_utc(moment: datetime | None) -> datetime | None:
    return _utc(moment) if moment is not None else None


def mask_phone(phone: str | None) -> str | None:
    """Return a phone number with its middle digits hidden (138****5678)."""
    if not phone:
        return None
    digits = re.sub(r"\D", "", phone)
    if len(digits) < 7:
        return "*" * len(digits)
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


def _clean_text(text: str | None, what: str) -> str:
    value = (text or "").strip()
    if not value:
        raise BadInput(f"the {what} is empty; say what happened")
    if len(value) > MAX_TEXT:
        raise BadInput(f"the {what} has {len(value)} characters; at most {MAX_TEXT}")
    return value


@cache
def _territory(node_code: str) -> tuple[Any, str]:
    shape = geo.geometry(node_code)
    shapely.prepare(shape)
    return shape, geo.get_unit(node_code).name_zh


def check_territory(*, node_code: str, lon: float, lat: float) -> None:
    """Raise 422 when a point lies outside the node's administrative unit."""
    shape, name = _territory(node_code)
    if not shapely.contains_xy(shape, lon, lat) and not shape.touches(shapely.Point(lon, lat)):
        raise Unprocessable(
            f"the point ({lon}, {lat}) is outside {node_code} {name}, the territory of this node"
        )


def _area_of_point(node_code: str, lon: float, lat: float) -> str:
    if len(node_code) > 6 or not node_code.endswith("00"):
        return node_code  # a county (or below) node: its own code is the finest real area
    unit = geo.locate(lon, lat)
    return unit.code if unit is not None else node_code


@cache
def _county_names(node_code: str) -> tuple[tuple[str, str], ...]:
    if len(node_code) > 6 or not node_code.endswith("00"):
        return ()
    names: list[tuple[str, str]] = []
    for unit in geo.list_units("county", node_code):
        names.append((unit.name_zh, unit.code))
        short = re.sub(r"(新区|区|县|市)$", "", unit.name_zh)
        if len(short) >= 2 and short != unit.name_zh:
            names.append((short, unit.code))
    # longer names first: 市中区 of Jinan before a bare 市中
    return tuple(sorted(names, key=lambda n: -len(n[0])))


def area_from_text(*, node_code: str, text: str) -> str:
    """Return the county of the node a text names (an address), else the node's code."""
    for name, code in _county_names(node_code):
        if name in text:
            return code
    return node_code


def _new_id() -> str:
    return "EV" + uuid.uuid4().hex[:20].upper()


def _check_department(conn: Connection, department: str) -> None:
    if not _DEPARTMENT.match(department):
        raise BadInput(f"{department!r} is not a department id (lower-case letters, _)")
    from citybrain.governance.identity.models import identity_orgs

    known = set(conn.execute(select(identity_orgs.c.id)).scalars())
    # a store that no node has seeded yet (a bare command-line store) knows no organisations
    if known and department not in known:
        raise Unprocessable(f"no organisation {department!r} on this node")


def _read(row: Any, now: datetime) -> CaseRead:
    m = row._mapping
    state = State(m["state"])
    deadline = _opt_utc(m["deadline"])
    kind = catalogue.load().types.get(m["event_type"])
    return CaseRead(
        id=m["id"],
        source=m["source"],
        event_type=m["event_type"],
        event_type_zh=kind.name_zh if kind else m["event_type"],
        category=m["category"],
        urgency=m["urgency"],
        description=m["description"],
        address=m["address"],
        lon=m["lon"],
        lat=m["lat"],
        area_code=m["area_code"],
        department=m["department"],
        state=state.value,
        open=state in OPEN_STATES,
        reporter=m["reporter"],
        contact_phone=mask_phone(m["contact_phone"]),
        external_ref=m["external_ref"],
        classified_type=m["classified_type"],
        confidence=m["confidence"],
        deadline=deadline,
        overdue=_is_overdue(state, deadline, now),
        extensions=m["extensions"],
        returns=m["returns"],
        urges=m["urges"],
        escalated=bool(m["escalated"]),
        satisfaction=m["satisfaction"],
        created_at=_utc(m["created_at"]),
        updated_at=_utc(m["updated_at"]),
        dispatched_at=_opt_utc(m["dispatched_at"]),
        handled_at=_opt_utc(m["handled_at"]),
        closed_at=_opt_utc(m["closed_at"]),
        version=m["version"],
        allowed_transitions=allowed(state),
    )


def _is_overdue(state: State, deadline: datetime | None, now: datetime) -> bool:
    return state in OPEN_STATES and deadline is not None and now > deadline


def _audit(
    data_dir: Path,
    principal: Principal,
    action: str,
    case_id: str,
    detail: dict[str, Any],
    *,
    durable: bool = True,
) -> None:
    audit.append(
        data_dir=data_dir,
        principal=principal,
        action=f"events.{action}",
        resource=f"event_case/{case_id}",
        result="ok",
        rows=1,
        detail=detail,
        durable=durable,
    )


# ---------------------------------------------------------------------------------------------
# intake


def _case_row(
    *,
    node_code: str,
    principal: Principal,
    source: str,
    event_type: str,
    description: str,
    lon: float | None,
    lat: float | None,
    address: str | None,
    urgency: str,
    reporter: str | None,
    contact_phone: str | None,
    external_ref: str | None,
    classified_type: str | None = None,
    confidence: float | None = None,
    area_code: str | None = None,
    state: State = State.captured,
    now: datetime,
) -> dict[str, Any]:
    """Validate one report and return its row (no storage)."""
    kind = catalogue.event_type(event_type)
    if urgency not in catalogue.URGENCIES:
        raise BadInput(f"urgency must be one of {', '.join(catalogue.URGENCIES)}")
    if (lon is None) != (lat is None):
        raise BadInput("give both lon and lat, or neither")
    if lon is not None and lat is not None:
        check_territory(node_code=node_code, lon=lon, lat=lat)
        area = area_code or _area_of_point(node_code, lon, lat)
    else:
        area = area_code or area_from_text(node_code=node_code, text=address or description)
    return {
        "id": _new_id(),
        "source": source,
        "event_type": kind.code,
        "category": kind.category,
        "urgency": urgency,
        "description": description,
        "address": (address or "").strip() or None,
        "lon": lon,
        "lat": lat,
        "area_code": area,
        "department": catalogue.department_for(kind.code, area),
        "state": state.value,
        "reporter": (reporter or principal.subject)[:256],
        "reporter_org": principal.org,
        "contact_phone": contact_phone,
        "external_ref": external_ref,
        "classified_type": classified_type,
        "confidence": confidence,
        "deadline": None,
        "extensions": 0,
        "returns": 0,
        "urges": 0,
        "escalated": False,
        "satisfaction": None,
        "created_at": now,
        "updated_at": now,
        "verified_at": now if state != State.captured else None,
        "dispatched_at": None,
        "handled_at": None,
        "closed_at": None,
        "rated_at": None,
        "version": 1,
    }


def _capture_rows(row: dict[str, Any], principal: Principal, note: str) -> list[dict[str, Any]]:
    """Return the transitions log rows of a new case (capture, then any automatic steps)."""
    base = {
        "case_id": row["id"],
        "department": row["department"],
        "actor": principal.label(),
        "actor_org": principal.org,
        "at": row["created_at"],
    }
    rows = [{**base, "transition": CAPTURE, "from_state": "", "to_state": "captured", "note": note}]
    if row["state"] == State.registered.value:
        rows.append(
            {
                **base,
                "transition": "verify",
                "from_state": "captured",
                "to_state": "verified",
                "note": "verified by the parent node",
            }
        )
        rows.append(
            {
                **base,
                "transition": "create_case",
                "from_state": "verified",
                "to_state": "registered",
                "note": "",
            }
        )
    return rows


def _store(engine: Engine, cases: list[dict[str, Any]], log_rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(event_cases), cases)
        conn.execute(insert(event_transitions), log_rows)


def _capture_detail(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": row["source"],
        "event_type": row["event_type"],
        "department": row["department"],
        "area": row["area_code"],
        "to": row["state"],
    }


def report_case(
    *,
    engine: Engine,
    data_dir: Path,
    node_code: str,
    principal: Principal,
    body: CaseCreate,
    source: str = "grid",
    contact_phone: str | None = None,
    now: datetime | None = None,
) -> CaseRead:
    """Record a report whose event type is known (a grid worker, Open311); state captured."""
    moment = _now(now)
    row = _case_row(
        node_code=node_code,
        principal=principal,
        source=source,
        event_type=body.event_type,
        description=_clean_text(body.description, "description"),
        lon=body.lon,
        lat=body.lat,
        address=body.address,
        urgency=body.urgency,
        reporter=body.reporter,
        contact_phone=contact_phone,
        external_ref=None,
        now=moment,
    )
    _store(engine, [row], _capture_rows(row, principal, f"reported via {source}"))
    _audit(data_dir, principal, CAPTURE, row["id"], _capture_detail(row))
    return get_case(engine=engine, case_id=row["id"], now=moment)


def classify(*, data_dir: Path, text: str, area_code: str | None = None) -> Classification:
    """Suggest the event type of a text and the department the matrix routes it to."""
    code, confidence = classifier.get_model(data_dir).predict([_clean_text(text, "text")])[0]
    kind = catalogue.event_type(code)
    return Classification(
        event_type=code,
        name_zh=kind.name_zh,
        confidence=confidence,
        department=catalogue.department_for(code, area_code),
    )


def intake_hotline(
    *,
    engine: Engine,
    data_dir: Path,
    node_code: str,
    principal: Principal,
    body: HotlineCreate,
    now: datetime | None = None,
) -> CaseRead:
    """Record a 12345 work order: classify the text, route it, state captured."""
    ids = intake_hotline_batch(
        engine=engine,
        data_dir=data_dir,
        node_code=node_code,
        principal=principal,
        orders=[body],
        now=now,
    )
    return get_case(engine=engine, case_id=ids[0], now=now)


def intake_hotline_batch(
    *,
    engine: Engine,
    data_dir: Path,
    node_code: str,
    principal: Principal,
    orders: list[HotlineCreate],
    now: datetime | None = None,
) -> list[str]:
    """Record many work orders: one classification pass, one transaction; return the ids."""
    if not orders:
        return []
    moment = _now(now)
    texts = [_clean_text(o.text, "text") for o in orders]
    predictions = classifier.get_model(data_dir).predict(texts)
    cases: list[dict[str, Any]] = []
    log_rows: list[dict[str, Any]] = []
    for order, text, (code, confidence) in zip(orders, texts, predictions, strict=True):
        row = _case_row(
            node_code=node_code,
            principal=principal,
            source="hotline",
            event_type=code,
            description=text,
            lon=order.lon,
            lat=order.lat,
            address=order.address,
            urgency=order.urgency,
            reporter=None,
            contact_phone=order.phone,
            external_ref=None,
            classified_type=code,
            confidence=confidence,
            now=moment,
        )
        cases.append(row)
        log_rows.extend(_capture_rows(row, principal, f"12345 work order ({confidence})"))
    _store(engine, cases, log_rows)
    # one durable record closes the batch: the ones before it reach the disk with it
    for i, row in enumerate(cases):
        _audit(
            data_dir,
            principal,
            CAPTURE,
            row["id"],
            _capture_detail(row),
            durable=i == len(cases) - 1,
        )
    return [row["id"] for row in cases]


def _value(attribute: Any) -> Any:
    """Return the value of an NGSI-LD attribute, normalized or keyValues."""
    if isinstance(attribute, dict):
        if "value" in attribute:
            return attribute["value"]
        if "object" in attribute:
            return attribute["object"]
    return attribute


def _short_type(entity_type: Any) -> str:
    text = str(entity_type or "")
    return re.split(r"[/#:]", text)[-1]


def alarm_type(entity: dict[str, Any]) -> str | None:
    """Return the event type an alarm entity stands for, or None when it is no alarm."""
    kind = _short_type(entity.get("type"))
    if kind == "WasteContainer":
        level = _value(entity.get("fillingLevel"))
        if isinstance(level, int | float) and not isinstance(level, bool):
            # fillingLevel is a ratio in Smart Data Models; some devices send percent
            ratio = level / 100 if level > 1 else level
            return "overflowing_bin" if ratio >= FILL_ALARM else None
        return None
    if kind in {"Streetlight", "StreetLight"}:
        status = str(_value(entity.get("status")) or "").lower()
        return "street_lamp" if status in LAMP_FAULTS else None
    if kind in ALARM_TYPES or "alarmType" in entity:
        for key in ("alarmType", "category", "subCategory", "eventType"):
            named = _value(entity.get(key))
            for name in named if isinstance(named, list) else [named]:
                if isinstance(name, str):
                    code = catalogue.resolve_alias(name)
                    if code is not None:
                        return code
    return None


def _point(entity: dict[str, Any]) -> tuple[float, float] | None:
    location = _value(entity.get("location"))
    if isinstance(location, dict) and location.get("type") == "Point":
        coords = location.get("coordinates")
        if (
            isinstance(coords, list)
            and len(coords) >= 2
            and all(isinstance(c, int | float) for c in coords[:2])
        ):
            return float(coords[0]), float(coords[1])
    return None


def intake_ngsi_ld(
    *,
    engine: Engine,
    data_dir: Path,
    node_code: str,
    principal: Principal,
    notification: Any,
    now: datetime | None = None,
) -> IntakeResult:
    """Turn an NGSI-LD notification of device or camera alarms into cases (deduplicated)."""
    if not isinstance(notification, dict) or not isinstance(notification.get("data"), list):
        raise BadInput("an NGSI-LD notification has a data member listing entities")
    moment = _now(now)
    created: list[str] = []
    duplicates: list[str] = []
    ignored = 0
    for entity in notification["data"]:
        if not isinstance(entity, dict) or not isinstance(entity.get("id"), str):
            ignored += 1
            continue
        code = alarm_type(entity)
        if code is None:
            ignored += 1
            continue
        point = _point(entity)
        entity_id = entity["id"][:256]
        with engine.connect() as conn:
            existing = conn.execute(
                select(event_cases.c.id).where(
                    event_cases.c.external_ref == entity_id,
                    event_cases.c.event_type == code,
                    event_cases.c.state.in_([s.value for s in OPEN_STATES]),
                )
            ).first()
        if existing is not None:
            duplicates.append(existing[0])
            continue
        kind = catalogue.event_type(code)
        try:
            row = _case_row(
                node_code=node_code,
                principal=principal,
                source="iot",
                event_type=code,
                description=f"设备告警：{kind.name_zh}（{_short_type(entity.get('type'))} "
                f"{entity_id}）",
                lon=point[0] if point else None,
                lat=point[1] if point else None,
                address=None,
                urgency="urgent" if code == "gas_leak" else "normal",
                reporter=f"device:{entity_id}",
                contact_phone=None,
                external_ref=entity_id,
                now=moment,
            )
        except Unprocessable:
            ignored += 1  # a device outside the territory belongs to another node
            continue
        _store(engine, [row], _capture_rows(row, principal, "alarm from a hub subscription"))
        _audit(data_dir, principal, CAPTURE, row["id"], _capture_detail(row))
        created.append(row["id"])
    return IntakeResult(created=created, duplicates=duplicates, ignored=ignored)


def create_case_from_task(
    *,
    engine: Engine,
    data_dir: Path,
    node_code: str,
    task_id: str,
    event_type: str,
    description: str,
    lon: float | None = None,
    lat: float | None = None,
    address: str | None = None,
    urgency: str = "normal",
    principal: Principal | None = None,
    now: datetime | None = None,
) -> CaseRead:
    """Open a case for a task of the parent node (verified already: registered); idempotent."""
    moment = _now(now)
    actor = principal or SYSTEM
    ref = f"task:{task_id}"[:256]
    with engine.connect() as conn:
        existing = conn.execute(
            select(event_cases.c.id).where(
                event_cases.c.external_ref == ref, event_cases.c.source == "task"
            )
        ).first()
    if existing is not None:
        return get_case(engine=engine, case_id=existing[0], now=moment)
    row = _case_row(
        node_code=node_code,
        principal=actor,
        source="task",
        event_type=event_type,
        description=_clean_text(description, "description"),
        lon=lon,
        lat=lat,
        address=address,
        urgency=urgency,
        reporter=actor.subject,
        contact_phone=None,
        external_ref=ref,
        state=State.registered,
        now=moment,
    )
    _store(engine, [row], _capture_rows(row, actor, f"task {task_id} of the parent node"))
    _audit(data_dir, actor, CAPTURE, row["id"], {**_capture_detail(row), "task": task_id})
    return get_case(engine=engine, case_id=row["id"], now=moment)


# ---------------------------------------------------------------------------------------------
# reading


def _may_see(principal: Principal, m: Any) -> bool:
    return bool(
        actors_of(
            principal,
            department=m["department"],
            reporter=m["reporter"],
            contact_phone=m["contact_phone"],
        )
    )


def get_case(
    *,
    engine: Engine,
    case_id: str,
    principal: Principal | None = None,
    now: datetime | None = None,
) -> CaseRead:
    """Return a case; a principal that may not see it gets 404 as if it did not exist."""
    with engine.connect() as conn:
        row = conn.execute(select(event_cases).where(event_cases.c.id == case_id)).first()
    if row is None or (principal is not None and not _may_see(principal, row._mapping)):
        raise NotFound(f"no case {case_id}")
    return _read(row, _now(now))


def list_cases(
    *,
    engine: Engine,
    principal: Principal | None = None,
    state: str | None = None,
    department: str | None = None,
    event_type: str | None = None,
    ids: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 100,
    now: datetime | None = None,
) -> list[CaseRead]:
    """List cases, newest first, filtered; a principal sees only the cases it may see."""
    if state is not None and state not in {s.value for s in State}:
        raise BadInput(f"unknown state {state!r}; states are {', '.join(s.value for s in State)}")
    query = select(event_cases).order_by(event_cases.c.created_at.desc(), event_cases.c.id)
    if state:
        query = query.where(event_cases.c.state == state)
    if department:
        query = query.where(event_cases.c.department == department)
    if event_type:
        query = query.where(event_cases.c.event_type == event_type)
    if ids is not None:
        query = query.where(event_cases.c.id.in_(ids))
    if start is not None:
        query = query.where(event_cases.c.created_at >= _utc(start))
    if end is not None:
        query = query.where(event_cases.c.created_at < _utc(end))
    if principal is not None and not is_centre(principal):
        # a department sees its cases, anyone else what they reported
        query = query.where(
            (event_cases.c.department == principal.org)
            | (event_cases.c.reporter == principal.subject)
            | (event_cases.c.contact_phone == (principal.phone or "\x00"))
        )
    moment = _now(now)
    with engine.connect() as conn:
        rows = conn.execute(query.limit(max(1, min(limit, 1000)))).fetchall()
    found = [_read(r, moment) for r in rows]
    if principal is not None and not is_centre(principal):
        found = [c for c, r in zip(found, rows, strict=True) if _may_see(principal, r._mapping)]
    return found


def timeline(
    *, engine: Engine, case_id: str, principal: Principal | None = None
) -> list[TransitionRead]:
    """Return the transitions log of a case, oldest first."""
    get_case(engine=engine, case_id=case_id, principal=principal)
    with engine.connect() as conn:
        rows = conn.execute(
            select(event_transitions)
            .where(event_transitions.c.case_id == case_id)
            .order_by(event_transitions.c.seq)
        ).fetchall()
    return [TransitionRead(**{**r._mapping, "at": _utc(r._mapping["at"])}) for r in rows]


# ---------------------------------------------------------------------------------------------
# transitions


def transition(
    *,
    engine: Engine,
    data_dir: Path,
    case_id: str,
    name: str,
    principal: Principal,
    body: TransitionRequest | None = None,
    now: datetime | None = None,
) -> CaseRead:
    """Fire a named transition: 409 when the state forbids it, 403 for the wrong principal."""
    args = body or TransitionRequest()
    moment = _now(now)
    note = args.note.strip()
    with engine.begin() as conn:
        row = conn.execute(select(event_cases).where(event_cases.c.id == case_id)).first()
        if row is None:
            raise NotFound(f"no case {case_id}")
        m = row._mapping
        actors = actors_of(
            principal,
            department=m["department"],
            reporter=m["reporter"],
            contact_phone=m["contact_phone"],
        )
        if not actors:
            raise NotFound(f"no case {case_id}")
        current = State(m["state"])
        target = target_of(name, current)
        # while a case sits at the centre (before dispatch, after a return), its department
        # is only the matrix's suggestion: that department cannot act on it yet
        if current not in {State.dispatched, State.handling, State.handled}:
            actors.discard(Actor.department)
        check_actor(name, actors)
        if TRANSITIONS[name].needs_note and not note:
            raise BadInput(f"{name} needs a note saying why")
        changes: dict[str, Any] = {"state": target.value, "updated_at": moment}
        department = m["department"]
        log_department = department
        deadline = _opt_utc(m["deadline"])
        detail: dict[str, Any] = {"from": current.value, "to": target.value}
        if name == "verify":
            changes["verified_at"] = moment
        elif name == "dispatch":
            department = args.department or department
            _check_department(conn, department)
            changes["department"] = log_department = department
            if m["dispatched_at"] is None:
                changes["dispatched_at"] = moment
            if deadline is None:
                days = catalogue.deadline_days(m["event_type"], m["urgency"])
                changes["deadline"] = working.add_working_days(moment, days)
        elif name == "reassign":
            if not args.department or args.department == department:
                raise BadInput("reassign needs a department other than the current one")
            _check_department(conn, args.department)
            changes["department"] = log_department = args.department
            detail["previous_department"] = department
        elif name == "feedback":
            changes["handled_at"] = moment
        elif name == "close":
            changes["closed_at"] = moment
        elif name in {"rate", "call_back"}:
            if args.rating is None:
                raise BadInput(f"{name} needs a rating from 1 to 5")
            changes["satisfaction"] = args.rating
            changes["rated_at"] = moment
            detail["rating"] = args.rating
        elif name == "urge":
            changes["urges"] = m["urges"] + 1
        elif name == "return":
            changes["returns"] = m["returns"] + 1
        elif name == "extend":
            if args.days is None:
                raise BadInput("extend needs days (working days, 1 to 30)")
            if m["extensions"] >= MAX_EXTENSIONS:
                raise Conflict(
                    f"the deadline of {case_id} was extended {m['extensions']} times already; "
                    f"at most {MAX_EXTENSIONS}",
                    detail={"allowed": [a for a in allowed(current) if a != "extend"]},
                )
            base = deadline or moment
            changes["deadline"] = working.add_working_days(base, args.days)
            changes["extensions"] = m["extensions"] + 1
            detail["days"] = args.days
        elif name == "escalate":
            if m["escalated"]:
                raise Conflict(f"{case_id} is escalated already")
            changes["escalated"] = True
            conn.execute(
                insert(event_escalations).values(
                    id="ES" + uuid.uuid4().hex[:20].upper(),
                    case_id=case_id,
                    reason=note or "escalated",
                    status="pending",
                    created_by=principal.label(),
                    created_at=moment,
                    sent_at=None,
                )
            )
        if "deadline" in changes:
            changes["deadline"] = _utc(changes["deadline"])
            detail["deadline"] = changes["deadline"].isoformat()
        changes["version"] = m["version"] + 1
        done = conn.execute(
            update(event_cases)
            .where(event_cases.c.id == case_id, event_cases.c.version == m["version"])
            .values(**changes)
        )
        if done.rowcount != 1:
            raise Conflict(f"{case_id} changed while this {name} was decided; try again")
        logged = conn.execute(
            insert(event_transitions).values(
                case_id=case_id,
                transition=name,
                from_state=current.value,
                to_state=target.value,
                department=log_department,
                actor=principal.label(),
                actor_org=principal.org,
                at=moment,
                note=note,
            )
        )
    detail["department"] = log_department
    _audit(data_dir, principal, name, case_id, detail)
    case = get_case(engine=engine, case_id=case_id, now=moment)
    seq = logged.inserted_primary_key[0] if logged.inserted_primary_key else None
    notify.notify_transition(engine=engine, case=case, transition_name=name, seq=seq, now=moment)
    return case


# ---------------------------------------------------------------------------------------------
# deadlines and escalation


def overdue_cases(*, engine: Engine, now: datetime | None = None) -> list[CaseRead]:
    """Return the open cases past their deadline at now, the most overdue first."""
    moment = _now(now)
    with engine.connect() as conn:
        rows = conn.execute(
            select(event_cases)
            .where(
                event_cases.c.state.in_([s.value for s in OPEN_STATES]),
                event_cases.c.deadline.is_not(None),
                event_cases.c.deadline < moment,
            )
            .order_by(event_cases.c.deadline)
        ).fetchall()
    return [c for c in (_read(r, moment) for r in rows) if c.overdue]


def escalate_overdue(*, engine: Engine, data_dir: Path, now: datetime | None = None) -> list[str]:
    """Escalate every overdue case not escalated yet; return their ids."""
    done: list[str] = []
    for case in overdue_cases(engine=engine, now=now):
        if case.escalated:
            continue
        notify.notify_transition(engine=engine, case=case, transition_name="overdue", now=now)
        try:
            transition(
                engine=engine,
                data_dir=data_dir,
                case_id=case.id,
                name="escalate",
                principal=SYSTEM,
                body=TransitionRequest(note=f"overdue since {case.deadline}"),
                now=now,
            )
            done.append(case.id)
        except Conflict:
            continue  # escalated or moved on meanwhile
    return done


def pending_escalations(*, engine: Engine, limit: int = 100) -> list[EscalationRead]:
    """Return the escalations waiting to be sent to the parent node, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(event_escalations, event_cases)
            .join(event_cases, event_cases.c.id == event_escalations.c.case_id)
            .where(event_escalations.c.status == "pending")
            .order_by(event_escalations.c.created_at, event_escalations.c.id)
            .limit(limit)
        ).fetchall()
    result = []
    moment = _now(None)
    for row in rows:
        m = row._mapping
        case = _read(row, moment)
        result.append(
            EscalationRead(
                id=m[event_escalations.c.id],
                case_id=m[event_escalations.c.case_id],
                reason=m[event_escalations.c.reason],
                status=m[event_escalations.c.status],
                created_by=m[event_escalations.c.created_by],
                created_at=_utc(m[event_escalations.c.created_at]),
                sent_at=_opt_utc(m[event_escalations.c.sent_at]),
                # what the parent needs to follow the case; no caller phone leaves the node
                case=case.model_dump(
                    mode="json",
                    include={
                        "id",
                        "event_type",
                        "event_type_zh",
                        "urgency",
                        "description",
                        "area_code",
                        "department",
                        "state",
                        "deadline",
                        "created_at",
                        "lon",
                        "lat",
                    },
                ),
            )
        )
    return result


def mark_escalation_sent(
    *, engine: Engine, escalation_id: str, now: datetime | None = None
) -> None:
    """Record that the federation delivered an escalation to the parent node."""
    with engine.begin() as conn:
        done = conn.execute(
            update(event_escalations)
            .where(event_escalations.c.id == escalation_id)
            .values(status="sent", sent_at=_now(now))
        )
    if done.rowcount != 1:
        raise NotFound(f"no escalation {escalation_id}")


# ---------------------------------------------------------------------------------------------
# statistics


def department_stats(
    *,
    engine: Engine,
    start: datetime,
    end: datetime,
    now: datetime | None = None,
) -> StatsRead:
    """Return per-department performance over [start, end) (overdue counted at now)."""
    a, b, moment = _utc(start), _utc(end), _now(now or end)
    if b <= a:
        raise BadInput("the period ends before it starts")
    tally: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "received": 0,
            "closed": 0,
            "on_time": 0,
            "handling": [],
            "ratings": [],
            "returns": 0,
            "overdue": 0,
        }
    )
    t = event_transitions.c
    c = event_cases.c
    try:
        with engine.connect() as conn:
            for name, department, count in conn.execute(
                select(t.transition, t.department, func.count())
                .where(t.transition.in_(["dispatch", "reassign", "return"]), t.at >= a, t.at < b)
                .group_by(t.transition, t.department)
            ):
                key = "returns" if name == "return" else "received"
                tally[department or ""][key] += int(count)
            for row in conn.execute(
                select(c.department, c.closed_at, c.deadline, c.dispatched_at, c.handled_at).where(
                    c.closed_at.is_not(None), c.closed_at >= a, c.closed_at < b
                )
            ):
                entry = tally[row.department]
                entry["closed"] += 1
                if row.deadline is None or _utc(row.closed_at) <= _utc(row.deadline):
                    entry["on_time"] += 1
                if row.dispatched_at is not None and row.handled_at is not None:
                    hours = working.working_hours_between(
                        _utc(row.dispatched_at), _utc(row.handled_at)
                    )
                    entry["handling"].append(hours / 24)
            for department, rating in conn.execute(
                select(c.department, c.satisfaction).where(
                    c.rated_at.is_not(None), c.rated_at >= a, c.rated_at < b
                )
            ):
                tally[department]["ratings"].append(int(rating))
            for (department,) in conn.execute(
                select(c.department).where(
                    and_(
                        # a case back at the centre (returned) is not the department's delay
                        c.state.in_(["dispatched", "handling", "handled"]),
                        c.deadline.is_not(None),
                        c.deadline < moment,
                    )
                )
            ):
                tally[department]["overdue"] += 1
    except SQLAlchemyError as exc:
        raise BadInput(f"cannot compute the statistics: {exc.__class__.__name__}") from None
    departments = []
    for department in sorted(tally):
        e = tally[department]
        departments.append(
            DepartmentStats(
                department=department,
                received=e["received"],
                closed=e["closed"],
                on_time=e["on_time"],
                on_time_rate=round(e["on_time"] / e["closed"], 4) if e["closed"] else None,
                avg_handling_days=round(sum(e["handling"]) / len(e["handling"]), 3)
                if e["handling"]
                else None,
                satisfaction_mean=round(sum(e["ratings"]) / len(e["ratings"]), 3)
                if e["ratings"]
                else None,
                ratings=len(e["ratings"]),
                returns=e["returns"],
                overdue=e["overdue"],
            )
        )
    return StatsRead(start=a, end=b, now=moment, departments=departments)


def last_notes(*, engine: Engine, case_ids: list[str]) -> dict[str, str]:
    """Return the note of the latest transition with a note, per case (Open311 status_notes)."""
    if not case_ids:
        return {}
    t = event_transitions.c
    notes: dict[str, str] = {}
    with engine.connect() as conn:
        for case_id, note in conn.execute(
            select(t.case_id, t.note)
            .where(t.case_id.in_(case_ids), t.note != "", t.transition != CAPTURE)
            .order_by(t.seq)
        ):
            notes[case_id] = note
    return notes


def report_open311(
    *,
    engine: Engine,
    data_dir: Path,
    node_code: str,
    principal: Principal,
    service_code: str,
    description: str,
    lon: float | None,
    lat: float | None,
    address: str | None,
    urgency: str = "normal",
    phone: str | None = None,
    reporter: str | None = None,
    now: datetime | None = None,
) -> CaseRead:
    """Record an Open311 service request (a point, or an address only); state captured."""
    moment = _now(now)
    if lon is None and not (address or "").strip():
        raise BadInput("give lat and long, or an address_string")
    row = _case_row(
        node_code=node_code,
        principal=principal,
        source="open311",
        event_type=service_code,
        description=_clean_text(description, "description"),
        lon=lon,
        lat=lat,
        address=address,
        urgency=urgency,
        reporter=reporter,
        contact_phone=phone,
        external_ref=None,
        now=moment,
    )
    _store(engine, [row], _capture_rows(row, principal, "reported via Open311"))
    _audit(data_dir, principal, CAPTURE, row["id"], _capture_detail(row))
    return get_case(engine=engine, case_id=row["id"], now=moment)
