"""HTTP routes of the event centre (/api/events) and its Open311 GeoReport v2 API (/open311/v2)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path as FsPath
from typing import Any
from urllib.parse import parse_qs

from fastapi import Body, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from citybrain.core.errors import BadInput, CityBrainError, Forbidden, NotFound
from citybrain.core.routing import APIRouter
from citybrain.events import catalogue, grid, service
from citybrain.events.models import (
    CaseCreate,
    CaseRead,
    Classification,
    ClassifyRequest,
    EscalationRead,
    HotlineCreate,
    IntakeResult,
    StatsRead,
    TransitionRead,
    TransitionRequest,
)
from citybrain.events.statemachine import is_centre
from citybrain.governance.identity.deps import current_principal
from citybrain.governance.identity.models import OtpVerify, TokenResponse
from citybrain.governance.principal import Principal, Role

router = APIRouter()
OPEN311 = "/open311/v2"
MAX_OPEN311_BODY = 64 * 1024
NOTIFICATION_BODY = Body(..., description="an NGSI-LD notification")


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _data(request: Request) -> FsPath:
    data_dir: FsPath = request.app.state.settings.data_dir
    return data_dir


def _code(request: Request) -> str:
    code: str = request.app.state.settings.code
    return code


def _centre(principal: Principal) -> Principal:
    if not is_centre(principal):
        raise Forbidden("only the operations centre of this node (bureau operators) may do this")
    return principal


def _when(value: str | None, what: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{what} must be an ISO 8601 date or time, not {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# /api/events


@router.get("/api/events/catalogue", tags=["events"])
def get_catalogue() -> dict[str, Any]:
    """Return the event-type tree (部件 components, 事件 events) and the responsibility matrix."""
    loaded = catalogue.load()
    return {
        "categories": loaded.tree,
        "responsibility": [
            {"type": t, "area": a, "department": d} for t, a, d in loaded.responsibility
        ],
    }


@router.post("/api/events/cases", status_code=201, tags=["events"])
def report(
    request: Request, body: CaseCreate, principal: Principal = Depends(current_principal)
) -> CaseRead:
    """Report an event from the field (a grid worker): type, description, lon/lat."""
    return service.report_case(
        engine=_engine(request),
        data_dir=_data(request),
        node_code=_code(request),
        principal=principal,
        body=body,
    )


@router.post("/api/events/hotline", status_code=201, tags=["events"])
def hotline(
    request: Request, body: HotlineCreate, principal: Principal = Depends(current_principal)
) -> CaseRead:
    """Record a 12345 hotline work order; its type and department come from the classifier."""
    return service.intake_hotline(
        engine=_engine(request),
        data_dir=_data(request),
        node_code=_code(request),
        principal=_centre(principal),
        body=body,
    )


@router.post("/api/events/classify", tags=["events"])
def classify(
    request: Request, body: ClassifyRequest, principal: Principal = Depends(current_principal)
) -> Classification:
    """Suggest the event type and department of a text."""
    return service.classify(data_dir=_data(request), text=body.text)


@router.post("/api/events/intake/ngsi-ld", tags=["events"])
def intake_ngsi_ld(
    request: Request,
    notification: Any = NOTIFICATION_BODY,
    principal: Principal = Depends(current_principal),
) -> IntakeResult:
    """Turn an NGSI-LD notification (device or camera alarms) into cases."""
    if principal.role not in {Role.service, Role.node, Role.bureau_admin, Role.operator}:
        raise Forbidden("alarm intake is for systems and the operations centre")
    return service.intake_ngsi_ld(
        engine=_engine(request),
        data_dir=_data(request),
        node_code=_code(request),
        principal=principal,
        notification=notification,
    )


@router.get("/api/events/cases", tags=["events"])
def list_cases(
    request: Request,
    state: str | None = Query(None, max_length=16),
    department: str | None = Query(None, max_length=64),
    event_type: str | None = Query(None, max_length=64),
    limit: int = Query(100, ge=1, le=1000),
    principal: Principal = Depends(current_principal),
) -> list[CaseRead]:
    """List the cases the caller may see, newest first."""
    return service.list_cases(
        engine=_engine(request),
        principal=principal,
        state=state,
        department=department,
        event_type=event_type,
        limit=limit,
    )


@router.get("/api/events/cases/{case_id}", tags=["events"])
def get_case(
    request: Request,
    case_id: str = Path(max_length=32),
    principal: Principal = Depends(current_principal),
) -> CaseRead:
    """Return one case with the transitions allowed from its state."""
    return service.get_case(engine=_engine(request), case_id=case_id, principal=principal)


@router.get("/api/events/cases/{case_id}/transitions", tags=["events"])
def timeline(
    request: Request,
    case_id: str = Path(max_length=32),
    principal: Principal = Depends(current_principal),
) -> list[TransitionRead]:
    """Return the timeline of a case: every transition, who, when, from, to, note."""
    return service.timeline(engine=_engine(request), case_id=case_id, principal=principal)


@router.post("/api/events/cases/{case_id}/transitions/{name}", tags=["events"])
def fire(
    request: Request,
    case_id: str = Path(max_length=32),
    name: str = Path(max_length=32),
    body: TransitionRequest | None = None,
    principal: Principal = Depends(current_principal),
) -> CaseRead:
    """Fire a named transition (verify, dispatch, handle, feedback, close, rate, urge, ...)."""
    return service.transition(
        engine=_engine(request),
        data_dir=_data(request),
        case_id=case_id,
        name=name,
        principal=principal,
        body=body,
    )


@router.get("/api/events/overdue", tags=["events"])
def overdue(request: Request, principal: Principal = Depends(current_principal)) -> list[CaseRead]:
    """List the open cases past their deadline."""
    _centre(principal)
    return service.overdue_cases(engine=_engine(request))


@router.post("/api/events/overdue/escalate", tags=["events"])
def escalate_overdue(
    request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, list[str]]:
    """Escalate every overdue case not escalated yet."""
    _centre(principal)
    return {"escalated": service.escalate_overdue(engine=_engine(request), data_dir=_data(request))}


@router.get("/api/events/escalations", tags=["events"])
def escalations(
    request: Request, principal: Principal = Depends(current_principal)
) -> list[EscalationRead]:
    """List the escalations waiting to be sent to the parent node."""
    _centre(principal)
    return service.pending_escalations(engine=_engine(request))


@router.get("/api/events/stats", tags=["events"])
def stats(
    request: Request,
    start: str | None = Query(None, max_length=40, description="ISO date or time, inclusive"),
    end: str | None = Query(None, max_length=40, description="ISO date or time, exclusive"),
    principal: Principal = Depends(current_principal),
) -> StatsRead:
    """Return department performance over a period (default: the last 30 days)."""
    if not principal.is_government and principal.role != Role.auditor:
        raise Forbidden("department statistics are for government principals")
    now = datetime.now(UTC)
    until = _when(end, "end") or now
    since = _when(start, "start") or until - timedelta(days=30)
    return service.department_stats(engine=_engine(request), start=since, end=until, now=now)


# ---------------------------------------------------------------------------------------------
# grid workers on their phones (the page is /m/grid)


@router.post("/auth/grid/verify", tags=["events"], response_model=TokenResponse)
def grid_sign_in(body: OtpVerify, request: Request) -> JSONResponse:
    """Sign a grid worker in with the code sent to their phone (ask at /auth/otp/request)."""
    answer = grid.sign_in(
        engine=_engine(request),
        data_dir=_data(request),
        issuer=_code(request),
        phone=body.phone,
        code=body.code,
    )
    return JSONResponse(answer.model_dump(), headers={"Cache-Control": "no-store"})


@router.get("/api/events/grid/me", tags=["events"])
def grid_me(request: Request, principal: Principal = Depends(current_principal)) -> grid.GridWorker:
    """Return the signed-in grid worker's id, grid and the grid's centre."""
    return grid.me(engine=_engine(request), data_dir=_data(request), principal=principal)


# ---------------------------------------------------------------------------------------------
# Open311 GeoReport v2


def _open311_error(status: int, description: str) -> JSONResponse:
    return JSONResponse([{"code": status, "description": description}], status_code=status)


def _open311(handler: Callable[[], Any]) -> Any:
    """Run an Open311 handler; errors leave in the Open311 format with their status."""
    try:
        return handler()
    except CityBrainError as exc:
        return _open311_error(exc.status, exc.message)


def _service(kind: catalogue.EventType) -> dict[str, Any]:
    return {
        "service_code": kind.code,
        "service_name": kind.name_zh,
        "description": f"{kind.name_zh} {kind.name_en}（{kind.category_zh} / {kind.group_zh}）",
        "metadata": True,
        "type": "realtime",
        "keywords": ",".join([kind.name_en.lower(), *kind.aliases]),
        "group": kind.group_zh,
    }


def _request(case: CaseRead, notes: dict[str, str]) -> dict[str, Any]:
    kind = catalogue.load().types.get(case.event_type)
    return {
        "service_request_id": case.id,
        "status": "open" if case.open else "closed",
        "status_notes": notes.get(case.id, case.state),
        "service_name": kind.name_zh if kind else case.event_type,
        "service_code": case.event_type,
        "description": case.description,
        "agency_responsible": case.department,
        "service_notice": None,
        "requested_datetime": case.created_at.isoformat(),
        "updated_datetime": case.updated_at.isoformat(),
        "expected_datetime": case.deadline.isoformat() if case.deadline else None,
        "address": case.address,
        "address_id": None,
        "zipcode": None,
        "lat": case.lat,
        "long": case.lon,
        "media_url": None,
    }


@router.get(OPEN311 + "/services", tags=["open311"])
@router.get(OPEN311 + "/services.json", tags=["open311"], include_in_schema=False)
def open311_services() -> list[dict[str, Any]]:
    """List the event types as Open311 services."""
    return [_service(kind) for kind in catalogue.load().types.values()]


@router.get(OPEN311 + "/services/{service_code}.json", tags=["open311"])
def open311_service(service_code: str = Path(max_length=64)) -> Any:
    """Describe one service: its attributes (the urgency)."""

    def run() -> dict[str, Any]:
        if service_code not in catalogue.load().types:
            raise NotFound(f"no service {service_code}")
        kind = catalogue.event_type(service_code)
        return {
            "service_code": service_code,
            "attributes": [
                {
                    "variable": True,
                    "code": "urgency",
                    "datatype": "singlevaluelist",
                    "required": False,
                    "datatype_description": "normal, urgent or critical",
                    "order": 1,
                    "description": "紧急程度 urgency (deadline in working days: "
                    + ", ".join(f"{u} {d}" for u, d in kind.deadlines.items())
                    + ")",
                    "values": [
                        {"key": "normal", "name": "一般 normal"},
                        {"key": "urgent", "name": "紧急 urgent"},
                        {"key": "critical", "name": "特急 critical"},
                    ],
                }
            ],
        }

    return _open311(run)


async def _open311_fields(request: Request) -> dict[str, str]:
    raw = await request.body()
    if len(raw) > MAX_OPEN311_BODY:
        raise BadInput(f"the request body is larger than {MAX_OPEN311_BODY} bytes")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("the request body is not UTF-8") from None
    if media == "application/json":
        try:
            data = json.loads(text or "{}")
        except json.JSONDecodeError as exc:
            raise BadInput(f"the JSON body does not parse: {exc.msg}") from None
        if not isinstance(data, dict):
            raise BadInput("the JSON body must be an object")
        return {str(k): "" if v is None else str(v) for k, v in data.items()}
    if media not in ("", "application/x-www-form-urlencoded"):
        raise BadInput(f"send application/x-www-form-urlencoded, not {media}")
    fields = parse_qs(text, keep_blank_values=True)
    return {k: v[-1] for k, v in fields.items()}


def _float(fields: dict[str, str], name: str, low: float, high: float) -> float | None:
    value = fields.get(name, "").strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise BadInput(f"{name} must be a number, not {value!r}") from None
    if not low <= number <= high:
        raise BadInput(f"{name} must lie between {low} and {high}")
    return number


@router.post(OPEN311 + "/requests", tags=["open311"])
@router.post(OPEN311 + "/requests.json", tags=["open311"], include_in_schema=False)
async def open311_post(request: Request, principal: Principal = Depends(current_principal)) -> Any:
    """Create a service request (form-encoded per GeoReport v2, or JSON)."""
    try:
        fields = await _open311_fields(request)
    except CityBrainError as exc:
        return _open311_error(exc.status, exc.message)

    def run() -> list[dict[str, Any]]:
        code = fields.get("service_code", "").strip()
        if not code:
            raise BadInput("service_code is required")
        lat = _float(fields, "lat", -90, 90)
        lon = _float(fields, "long", -180, 180)
        if (lat is None) != (lon is None):
            raise BadInput("give both lat and long, or neither")
        urgency = fields.get("attribute[urgency]", "").strip() or "normal"
        case = service.report_open311(
            engine=_engine(request),
            data_dir=_data(request),
            node_code=_code(request),
            principal=principal,
            service_code=code,
            description=fields.get("description", ""),
            lon=lon,
            lat=lat,
            address=fields.get("address_string") or None,
            urgency=urgency,
            phone=fields.get("phone") or None,
            reporter=fields.get("email") or fields.get("device_id") or None,
        )
        return [
            {
                "service_request_id": case.id,
                "service_notice": f"已受理，转{case.department}办理 "
                f"(received; routed to {case.department})",
                "account_id": fields.get("account_id") or None,
            }
        ]

    return _open311(run)


@router.get(OPEN311 + "/requests", tags=["open311"])
@router.get(OPEN311 + "/requests.json", tags=["open311"], include_in_schema=False)
def open311_requests(
    request: Request,
    service_request_id: str | None = Query(None, max_length=4000),
    service_code: str | None = Query(None, max_length=64),
    start_date: str | None = Query(None, max_length=40),
    end_date: str | None = Query(None, max_length=40),
    status: str | None = Query(None, max_length=16),
    _principal: Principal = Depends(current_principal),
) -> Any:
    """List service requests (by ids, service, period and status; 1,000 at most)."""

    def run() -> list[dict[str, Any]]:
        if status not in (None, "", "open", "closed"):
            raise BadInput("status is open or closed")
        ids = [i.strip() for i in service_request_id.split(",")] if service_request_id else None
        cases = service.list_cases(
            engine=_engine(request),
            event_type=service_code or None,
            ids=ids,
            start=_when(start_date, "start_date"),
            end=_when(end_date, "end_date"),
            limit=1000,
        )
        if status:
            cases = [c for c in cases if c.open == (status == "open")]
        notes = service.last_notes(engine=_engine(request), case_ids=[c.id for c in cases])
        return [_request(c, notes) for c in cases]

    return _open311(run)


@router.get(OPEN311 + "/requests/{request_id}.json", tags=["open311"])
def open311_request(
    request: Request,
    request_id: str = Path(max_length=32),
    _principal: Principal = Depends(current_principal),
) -> Any:
    """Return one service request (as a list of one, per the specification)."""

    def run() -> list[dict[str, Any]]:
        case = service.get_case(engine=_engine(request), case_id=request_id)
        notes = service.last_notes(engine=_engine(request), case_ids=[case.id])
        return [_request(case, notes)]

    return _open311(run)
