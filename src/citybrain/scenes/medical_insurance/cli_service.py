"""`citybrain medins terminals|voucher|settle|findings|cases|panel`: the scene's service commands.

They act on a node's data folder (a node started once) as its administrator: whoever can
read the folder runs the node. `voucher activate` and `voucher show` stand in for the phone
of a citizen whose phone number is given; the same service functions answer the API.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Engine

from citybrain.core.config import load_settings
from citybrain.core.db import check_connection, create_engine_for, upgrade
from citybrain.core.errors import BadInput
from citybrain.governance.identity.service import validate_phone
from citybrain.governance.principal import BUREAU_ORG, Principal, Role
from citybrain.node import service as node_service
from citybrain.scenes.medical_insurance import cases, panel, settlement, terminals, voucher
from citybrain.scenes.medical_insurance.models import Finding
from citybrain.scenes.medical_insurance.service import Scene, scene_for

DATA = typer.Option(..., "--data", help="the node's data folder")
ADMIN = Principal(subject="cli", org=BUREAU_ORG, role=Role.bureau_admin, issuer="local")
SUPERVISOR = Principal(subject="cli", org="medical_security", role=Role.operator, issuer="local")

terminals_app = typer.Typer(no_args_is_help=True, help="Terminals of designated institutions.")
voucher_app = typer.Typer(no_args_is_help=True, help="E-vouchers: activate, show, scan.")
findings_app = typer.Typer(no_args_is_help=True, help="Findings before and after payment.")
cases_app = typer.Typer(no_args_is_help=True, help="Supervision cases and their stages.")


def _open(data: Path) -> tuple[Scene, Engine]:
    settings = load_settings(data_dir=data)
    if not data.is_dir():
        raise BadInput(f"{data} is not a folder")
    engine = create_engine_for(settings.effective_database_url)
    check_connection(engine)
    upgrade(engine)
    code = node_service.node_code(engine=engine)
    return scene_for(engine=engine, data_dir=settings.data_dir, code=code), engine


def _citizen(phone: str) -> Principal:
    number = validate_phone(phone)
    return Principal(
        subject=f"citizen:{number}",
        org="citizens",
        role=Role.citizen,
        issuer="local",
        phone=number,
    )


def _terminal(scene: Scene, institution_id: str) -> Principal:
    return Principal(
        subject=f"cli:{institution_id}",
        org=terminals.org_of(institution_id),
        role=Role.service,
        issuer=scene.code,
    )


def _json_file(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {path}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        try:
            return [json.loads(ln) for ln in lines]
        except json.JSONDecodeError:
            raise BadInput(f"{path} is neither JSON nor JSON Lines: {exc}") from None


def _parquet_rows(path: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_table(path).to_pylist())
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot read the Parquet file {path}: {exc}") from None


def _echo(value: Any) -> None:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if hasattr(v, "model_dump") else v for v in value]
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2))


# --- terminals -------------------------------------------------------------------------------


@terminals_app.command("add")
def add_terminal(
    institution: str = typer.Option(..., "--institution", help="designated institution id"),
    label: str = typer.Option("", "--label"),
    data: Path = DATA,
) -> None:
    """Register a terminal; prints its client id and secret (shown once)."""
    scene, _ = _open(data)
    _echo(terminals.add_terminal(scene, actor=ADMIN, institution_id=institution, label=label))


# --- vouchers --------------------------------------------------------------------------------


@voucher_app.command("activate")
def activate(
    phone: str = typer.Option(..., "--phone", help="the citizen's verified phone"),
    id_number: str = typer.Option(..., "--id-number", help="the citizen's ID number"),
    device: str = typer.Option(..., "--device", help="the phone's device id"),
    data: Path = DATA,
) -> None:
    """Activate a citizen's voucher on a device (identity checked as on the phone page)."""
    scene, _ = _open(data)
    _echo(voucher.activate(scene, principal=_citizen(phone), id_number=id_number, device_id=device))


@voucher_app.command("show")
def show(
    phone: str = typer.Option(..., "--phone"),
    device: str = typer.Option(..., "--device"),
    ttl: int = typer.Option(voucher.TOKEN_TTL, "--ttl", min=10, max=300),
    data: Path = DATA,
) -> None:
    """Print a fresh QR payload of the voucher, as the phone shows it."""
    scene, _ = _open(data)
    _echo(voucher.issue_token(scene, principal=_citizen(phone), device_id=device, ttl=ttl))


@voucher_app.command("scan")
def scan(
    token: str = typer.Argument(..., help="the scanned payload (CBV1....)"),
    institution: str = typer.Option(..., "--institution"),
    transaction: voucher.Transaction = typer.Option(
        voucher.Transaction.outpatient, "--transaction"
    ),
    data: Path = DATA,
) -> None:
    """Scan a payload as an institution's terminal: the person (masked), or the refusal."""
    scene, _ = _open(data)
    terminals.institution_of(scene, _terminal(scene, institution))
    _echo(
        voucher.scan(
            scene,
            principal=_terminal(scene, institution),
            institution_id=institution,
            token=token,
            transaction=transaction,
        )
    )


# --- settlements -----------------------------------------------------------------------------


def settle(
    file: str = typer.Argument(..., help="settlement JSON (- for stdin)"),
    institution: str = typer.Option(..., "--institution"),
    data: Path = DATA,
) -> None:
    """Submit a settlement as an institution's terminal; prints the check's answer."""
    submitted = _json_file(file)
    scene, _ = _open(data)
    principal = _terminal(scene, institution)
    terminals.institution_of(scene, principal)
    _echo(settlement.submit(scene, principal=principal, institution_id=institution, body=submitted))


# --- findings and cases ----------------------------------------------------------------------


@findings_app.command("import")
def import_findings(
    file: str = typer.Argument(
        ..., help="findings of a sweep: Parquet (medins sweep --out), a JSON list or JSON Lines"
    ),
    data: Path = DATA,
) -> None:
    """Store the findings of a batch sweep (each once)."""
    scene, _ = _open(data)
    raw = _parquet_rows(file) if file.endswith(".parquet") else _json_file(file)
    if isinstance(raw, dict):
        raw = raw.get("findings", [raw])
    try:
        items = TypeAdapter(list[Finding]).validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadInput(f"{file}: finding {where}: {first['msg']}") from None
    _echo(cases.import_findings(scene, principal=SUPERVISOR, items=items))


@findings_app.command("list")
def list_findings(
    rule: str | None = typer.Option(None, "--rule"),
    institution: str | None = typer.Option(None, "--institution"),
    source: str | None = typer.Option(None, "--source"),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000),
    data: Path = DATA,
) -> None:
    """List findings, newest first."""
    scene, _ = _open(data)
    _echo(
        cases.list_findings(
            scene, rule_id=rule, institution_id=institution, source=source, limit=limit
        )
    )


@cases_app.command("open")
def open_cases(
    source: str | None = typer.Option(None, "--source", help="sweep or before_payment"),
    limit: int = typer.Option(1000, "--limit", min=1, max=cases.MAX_OPEN),
    data: Path = DATA,
) -> None:
    """Turn findings without a case into cases; prints how many and their ids."""
    scene, _ = _open(data)
    opened = cases.open_cases(scene, principal=SUPERVISOR, source=source, limit=limit)
    _echo({"opened": len(opened), "cases": [c.id for c in opened]})


@cases_app.command("list")
def list_cases(
    stage: cases.Stage | None = typer.Option(None, "--stage"),
    status: str | None = typer.Option(None, "--status"),
    overdue: bool = typer.Option(False, "--overdue"),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000),
    data: Path = DATA,
) -> None:
    """List cases, newest first."""
    scene, _ = _open(data)
    _echo(cases.list_cases(scene, stage=stage, status=status, overdue=overdue, limit=limit))


@cases_app.command("act")
def act(
    case_id: str = typer.Argument(...),
    action: cases.Action = typer.Option(..., "--action"),
    note: str = typer.Option(..., "--note"),
    data: Path = DATA,
) -> None:
    """Advance a case to its next stage, or dismiss it."""
    scene, _ = _open(data)
    try:
        change = cases.CaseAction(action=action, note=note)
    except ValidationError:
        raise BadInput("--note must not be empty (at most 2000 characters)") from None
    _echo(cases.act(scene, principal=SUPERVISOR, case_id=case_id, change=change))


@cases_app.command("assign")
def assign(
    case_id: str = typer.Argument(...),
    to: str = typer.Option(..., "--to", help="the city node's code"),
    data: Path = DATA,
) -> None:
    """Send a case down to a city (a federation task through the outbox)."""
    scene, _ = _open(data)
    _echo(cases.assign(scene, principal=ADMIN, case_id=case_id, to=to))


@cases_app.command("take")
def take(data: Path = DATA) -> None:
    """Open cases for the supervision tasks the province sent down."""
    scene, _ = _open(data)
    _echo(cases.take_assigned(scene, principal=ADMIN))


def show_panel(
    days: int = typer.Option(30, "--days", min=1, max=366),
    data: Path = DATA,
) -> None:
    """Print this node's panel figures (fund flow, findings, cases, vouchers)."""
    scene, _ = _open(data)
    _echo(panel.figures(scene, days=days))


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the scene's command group."""
    app.add_typer(terminals_app, name="terminals")
    app.add_typer(voucher_app, name="voucher")
    app.add_typer(findings_app, name="findings")
    app.add_typer(cases_app, name="cases")
    app.command("settle")(settle)
    app.command("panel")(show_panel)
