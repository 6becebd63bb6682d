"""HTTP routes of the medical-insurance scene under /api/medins, and its two pages under /m/medins.

Thin callers of the service functions: they find the principal and the scene, and pass on.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Body, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, Field

from citybrain.core.errors import Forbidden, NotFound
from citybrain.core.routing import APIRouter
from citybrain.governance.identity.deps import current_principal
from citybrain.governance.principal import Principal, Role
from citybrain.scenes.medical_insurance import cases, panel, settlement, terminals, voucher
from citybrain.scenes.medical_insurance.models import Finding
from citybrain.scenes.medical_insurance.service import Scene, scene_for

router = APIRouter(tags=["medical insurance"])
pages = APIRouter(include_in_schema=False)
SETTLEMENT_BODY = Body(..., description="a settlement: txn_id, voucher, kind, start, end, items")
FINDINGS_BODY = Body(..., max_length=100_000, description="findings of a batch sweep")
STATIC = Path(str(resources.files("citybrain.scenes.medical_insurance").joinpath("static")))


def scene_of(app: Any) -> Scene:
    """Return the scene state of the node an app serves (shared when it has several workers)."""
    settings = app.state.settings
    return scene_for(
        engine=app.state.engine,
        data_dir=settings.data_dir,
        code=settings.code,
        shared=settings.workers > 1,
    )


def _scene(request: Request) -> Scene:
    return scene_of(request.app)


def _government(principal: Principal) -> Principal:
    if not principal.is_government:
        raise Forbidden("this needs a government role")
    return principal


class ActivateRequest(BaseModel):
    """Activation of the voucher on one device."""

    id_number: str = Field(min_length=1, max_length=32)
    device_id: str = Field(min_length=1, max_length=128)


class QrRequest(BaseModel):
    """A fresh QR token for the device the voucher is bound to."""

    device_id: str = Field(min_length=1, max_length=128)
    ttl: int = Field(voucher.TOKEN_TTL, ge=10, le=300)


class ScanRequest(BaseModel):
    """What a terminal read from the phone, and what it is for."""

    token: str = Field(min_length=1, max_length=1024)
    transaction: voucher.Transaction


class TerminalRequest(BaseModel):
    """A terminal to register for a designated institution."""

    institution_id: str = Field(min_length=1, max_length=32)
    label: str = Field("", max_length=200)


class OpenCasesRequest(BaseModel):
    """Which findings become cases: those named, or every one of a source without a case."""

    finding_ids: list[str] | None = Field(None, max_length=5000)
    source: str | None = Field(None, pattern=r"^(sweep|before_payment)$")
    limit: int = Field(1000, ge=1, le=cases.MAX_OPEN)


class AssignRequest(BaseModel):
    """The city a case goes to."""

    to: str = Field(pattern=r"^37\d{4}$")


# --- vouchers --------------------------------------------------------------------------------


@router.post("/api/medins/voucher/activate")
def activate(
    request: Request, body: ActivateRequest, principal: Principal = Depends(current_principal)
) -> voucher.VoucherRead:
    """Activate the signed-in citizen's voucher on this device (identity checked)."""
    return voucher.activate(
        _scene(request), principal=principal, id_number=body.id_number, device_id=body.device_id
    )


@router.get("/api/medins/voucher")
def my_voucher(
    request: Request, principal: Principal = Depends(current_principal)
) -> voucher.VoucherRead:
    """Return the signed-in citizen's voucher (masked)."""
    return voucher.my_voucher(_scene(request), principal=principal)


@router.post("/api/medins/voucher/qr")
def qr(
    request: Request, body: QrRequest, principal: Principal = Depends(current_principal)
) -> voucher.QrToken:
    """Sign a fresh QR token for the phone (valid 60 s by default, usable once)."""
    return voucher.issue_token(
        _scene(request), principal=principal, device_id=body.device_id, ttl=body.ttl
    )


@router.post("/api/medins/vouchers/scan")
def scan(
    request: Request, body: ScanRequest, principal: Principal = Depends(current_principal)
) -> voucher.ScanResult:
    """A terminal scans a voucher: the person (masked) for one transaction, or a refusal."""
    scene = _scene(request)
    institution_id = terminals.institution_of(scene, principal)
    return voucher.scan(
        scene,
        principal=principal,
        institution_id=institution_id,
        token=body.token,
        transaction=body.transaction,
    )


@router.post("/api/medins/terminals", status_code=201)
def add_terminal(
    request: Request, body: TerminalRequest, principal: Principal = Depends(current_principal)
) -> terminals.TerminalIssued:
    """Register a terminal of a designated institution; the secret is shown once."""
    return terminals.add_terminal(
        _scene(request), actor=principal, institution_id=body.institution_id, label=body.label
    )


# --- settlements -----------------------------------------------------------------------------


@router.post("/api/medins/settlements", responses={200: {"model": settlement.SettlementAnswer}})
async def settle(
    request: Request,
    body: Any = SETTLEMENT_BODY,
    principal: Principal = Depends(current_principal),
) -> Response:
    """Check a settlement before payment and pay it unless blocked; idempotent by txn_id."""
    answer = await settle_answer(request.app, body, principal)
    return Response(answer, media_type="application/json")


async def settle_answer(app: Any, body: Any, principal: Principal) -> bytes:
    """Settle one submission and return the JSON answer (the route's and its fast lane's)."""
    scene = scene_of(app)
    institution_id = terminals.institution_of(scene, principal)
    # async: the commit is awaited on the loop, so a thousand settlements a second do not
    # each take a worker thread; the checks before it are pure Python of microseconds
    answer = await settlement.submit_async(
        scene, principal=principal, institution_id=institution_id, body=body
    )
    # serialised once here: the answer is a model already, validating it again costs time
    return answer.model_dump_json().encode()


@router.get("/api/medins/settlements/{settlement_id}")
def get_settlement(
    request: Request, settlement_id: str, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    """Return one settlement (the institution's terminal, or the supervisors)."""
    scene = _scene(request)
    found = settlement.get_settlement(scene, settlement_id=settlement_id)
    if not cases.may_handle(principal):
        try:
            mine = terminals.institution_of(scene, principal)
        except Forbidden:
            mine = None
        if mine != found["answer"].get("institution_id"):
            raise NotFound(f"no settlement {settlement_id}")
    return found


# --- findings and cases ----------------------------------------------------------------------


@router.get("/api/medins/findings")
def list_findings(
    request: Request,
    rule: str | None = Query(None, max_length=64),
    institution: str | None = Query(None, max_length=32),
    source: str | None = Query(None, pattern=r"^(sweep|before_payment)$"),
    limit: int = Query(100, ge=1, le=10_000),
    principal: Principal = Depends(current_principal),
) -> list[dict[str, Any]]:
    """Findings before and after payment, newest first."""
    if not cases.may_handle(principal):
        raise Forbidden("findings are for the medical security bureau and the bureau")
    return cases.list_findings(
        _scene(request), rule_id=rule, institution_id=institution, source=source, limit=limit
    )


@router.post("/api/medins/findings")
def import_findings(
    request: Request,
    body: list[Finding] = FINDINGS_BODY,
    principal: Principal = Depends(current_principal),
) -> dict[str, int]:
    """Store the findings of a batch sweep (each once)."""
    return cases.import_findings(_scene(request), principal=principal, items=body)


@router.post("/api/medins/cases", status_code=201)
def open_cases(
    request: Request, body: OpenCasesRequest, principal: Principal = Depends(current_principal)
) -> list[cases.CaseRead]:
    """Turn findings without a case into cases (linked to the event centre)."""
    return cases.open_cases(
        _scene(request),
        principal=principal,
        finding_ids=body.finding_ids,
        source=body.source,
        limit=body.limit,
    )


@router.get("/api/medins/cases")
def list_cases(
    request: Request,
    stage: cases.Stage | None = None,
    status: str | None = Query(None, pattern=r"^(open|sanctioned|dismissed)$"),
    overdue: bool = False,
    limit: int = Query(100, ge=1, le=10_000),
    principal: Principal = Depends(current_principal),
) -> list[cases.CaseRead]:
    """Cases, newest first."""
    if not cases.may_handle(principal):
        raise Forbidden("cases are for the medical security bureau and the bureau")
    return cases.list_cases(
        _scene(request), stage=stage, status=status, overdue=overdue, limit=limit
    )


@router.post("/api/medins/cases/take")
def take_cases(
    request: Request, principal: Principal = Depends(current_principal)
) -> list[cases.CaseRead]:
    """Open cases for the supervision tasks the province sent down."""
    return cases.take_assigned(_scene(request), principal=principal)


@router.get("/api/medins/cases/{case_id}")
def get_case(
    request: Request, case_id: str, principal: Principal = Depends(current_principal)
) -> cases.CaseRead:
    """One case with its history and the state of its event-centre case."""
    if not cases.may_handle(principal):
        raise NotFound(f"no supervision case {case_id}")
    return cases.get_case(_scene(request), case_id=case_id)


@router.post("/api/medins/cases/{case_id}/actions")
def act(
    request: Request,
    case_id: str,
    body: cases.CaseAction,
    principal: Principal = Depends(current_principal),
) -> cases.CaseRead:
    """Advance a case to its next stage, or dismiss it, with a note."""
    return cases.act(_scene(request), principal=principal, case_id=case_id, change=body)


@router.post("/api/medins/cases/{case_id}/assign")
def assign(
    request: Request,
    case_id: str,
    body: AssignRequest,
    principal: Principal = Depends(current_principal),
) -> cases.CaseRead:
    """Send a case down to a city through federation (bureau_admin)."""
    return cases.assign(_scene(request), principal=principal, case_id=case_id, to=body.to)


# --- panel -----------------------------------------------------------------------------------


@router.get("/api/medins/panel")
def get_panel(
    request: Request,
    scope: str = Query("node", pattern=r"^(node|tree)$"),
    days: int = Query(30, ge=1, le=366),
    principal: Principal = Depends(current_principal),
) -> dict[str, Any]:
    """Fund flow, findings, cases and vouchers of this node, or rolled up over its children."""
    _government(principal)
    scene = _scene(request)
    if scope == "tree":
        return panel.rolled_up(scene, request.app.state.settings, days=days)
    return panel.figures(scene, days=days)


@router.get("/api/medins/panel/dashboard")
def dashboard_panel(
    request: Request,
    days: int = Query(30, ge=1, le=366),
    principal: Principal = Depends(current_principal),
) -> dict[str, Any]:
    """The panel in the one screen's form, rolled up over this node's children."""
    _government(principal)
    scene = _scene(request)
    return panel.dashboard_form(panel.rolled_up(scene, request.app.state.settings, days=days))


@router.get("/api/medins/panel/export")
def export_panel(
    request: Request,
    days: int = Query(30, ge=1, le=366),
    principal: Principal = Depends(current_principal),
) -> dict[str, Any]:
    """This node's own panel figures for its parent (aggregates only)."""
    if principal.role not in (Role.node, Role.bureau_admin):
        raise Forbidden("the export is for the parent node")
    return panel.figures(_scene(request), days=days)


# --- pages -----------------------------------------------------------------------------------


@pages.get("/m/medins/voucher", response_class=HTMLResponse)
def voucher_page() -> HTMLResponse:
    """Serve the phone page: sign in, activate, show the dynamic QR payload."""
    return HTMLResponse((STATIC / "voucher.html").read_text(encoding="utf-8"))


@pages.get("/m/medins/terminal", response_class=HTMLResponse)
def terminal_page() -> HTMLResponse:
    """Serve the terminal page: scan a payload, see the person, settle."""
    return HTMLResponse((STATIC / "terminal.html").read_text(encoding="utf-8"))


_TYPES = {".js": "text/javascript", ".css": "text/css"}


@pages.get("/m/medins/static/{name}")
def static_file(name: str) -> FileResponse:
    """Serve a file of the scene's pages (no sub-folders)."""
    target = (STATIC / name).resolve()
    if target.parent != STATIC.resolve() or not target.is_file():
        raise NotFound(f"no file {name!r}")
    return FileResponse(target, media_type=_TYPES.get(target.suffix))
