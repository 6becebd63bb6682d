"""Terminals of designated institutions: a service account per institution that scans and settles.

`add_terminal` gives an institution an organisation of its own (`inst-<id>`, lower case) and a
service account in it; a token of that organisation speaks for that institution and no other.
"""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import insert, select

from citybrain.core.errors import Forbidden
from citybrain.governance.identity import service as identity
from citybrain.governance.identity.models import OrgCreate, ServiceAccountCreate
from citybrain.governance.principal import Principal, Role
from citybrain.scenes.medical_insurance.service import Scene, institution, now_utc
from citybrain.scenes.medical_insurance.tables import terminals


class TerminalIssued(BaseModel):
    """A new terminal: its institution, organisation and client credentials (shown once)."""

    institution_id: str
    org: str
    client_id: str
    client_secret: str


def org_of(institution_id: str) -> str:
    """Return the organisation id of an institution's terminals."""
    return "inst-" + institution_id.lower()


def add_terminal(
    scene: Scene, *, actor: Principal, institution_id: str, label: str = ""
) -> TerminalIssued:
    """Register a terminal for a designated institution of this node (bureau or department)."""
    if not (
        actor.role is Role.bureau_admin or (actor.org == "medical_security" and actor.is_government)
    ):
        raise Forbidden("terminals are registered by the bureau or the medical security bureau")
    found = institution(scene, institution_id)
    org = org_of(institution_id)
    known = {o.id for o in identity.list_orgs(engine=scene.engine)}
    if org not in known:
        identity.create_org(
            engine=scene.engine,
            data_dir=scene.data_dir,
            actor=actor,
            org=OrgCreate(
                id=org, name_zh=found.name[:128], name_en=f"Institution {institution_id}"
            ),
        )
    issued = identity.create_service_account(
        engine=scene.engine,
        data_dir=scene.data_dir,
        actor=actor,
        account=ServiceAccountCreate(org=org, role="service", label=label or "medins terminal"),
    )
    with scene.engine.begin() as conn:
        conn.execute(
            insert(terminals).values(
                client_id=issued.client_id,
                institution_id=institution_id,
                org=org,
                label=label or "medins terminal",
                created_at=now_utc(),
            )
        )
    scene.extra.pop("terminal_orgs", None)
    return TerminalIssued(
        institution_id=institution_id,
        org=org,
        client_id=issued.client_id,
        client_secret=issued.client_secret,
    )


def institution_of(scene: Scene, principal: Principal) -> str:
    """Return the institution a terminal's token speaks for, or refuse with 403."""
    orgs: dict[str, str] | None = scene.extra.get("terminal_orgs")
    if orgs is None:
        with scene.engine.connect() as conn:
            orgs = {r.org: r.institution_id for r in conn.execute(select(terminals))}
        scene.extra["terminal_orgs"] = orgs
    found = orgs.get(principal.org)
    if found is None and principal.role is Role.service:
        # a terminal added by another process of the node (the command line) since
        with scene.engine.connect() as conn:
            row = conn.execute(
                select(terminals.c.institution_id).where(terminals.c.org == principal.org)
            ).first()
        if row is not None:
            found = orgs[principal.org] = str(row.institution_id)
    if found is None or principal.role is not Role.service:
        raise Forbidden(
            "only a registered terminal of a designated institution may do this "
            "(citybrain medins terminals add)"
        )
    return found
