"""The access requests a season needs, filed by the Education Bureau through the sharing flow.

`request_grants` files them (the owners and the bureau still decide); `approve_for_demo`
walks them through the owners' and the bureau's approval, which only the demo and the
benchmark do: on a real node each owner's steward decides in the sharing flow.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from citybrain.governance.principal import BUREAU_ORG, Principal, Role
from citybrain.governance.sharing import service as sharing
from citybrain.governance.sharing.models import AccessRequestCreate, AccessRequestRead
from citybrain.scenes.enrollment.household import PREFILL_FIELDS, RESIDENTS

PURPOSE = "compulsory-education enrollment: eligibility and prefill of a parent's children"
LEGAL_BASIS = "Compulsory Education Law of the PRC, art. 12 and 22"
DAYS = 180
# dataset -> (questions, fields named, the column the row scope goes on)
VERIFICATION: dict[str, tuple[list[str], list[str], str | None]] = {
    RESIDENTS: (
        ["hukou_at_address", "hukou_in_county"],
        ["id_number", "hukou_county"],
        "residence_county",
    ),
    "natural_resources/property_registry": (
        ["owns_property_in_communities"],
        ["owner_id_number"],
        None,
    ),
    "human_resources/social_insurance": (
        ["social_insurance_months"],
        ["id_number", "months_contributed"],
        "county_code",
    ),
    "public_security/residence_permits": (
        ["residence_permit_valid"],
        ["id_number", "valid_until"],
        "residence_county",
    ),
}


def request_grants(
    *,
    engine: Engine,
    data_dir: Path,
    code: str,
    counties: list[str],
    user: str = "enrollment",
    prefill: bool = True,
) -> list[AccessRequestRead]:
    """File the Education Bureau's verification (and, with prefill, records) requests."""
    steward = Principal(subject=f"user:{user}", org="education", role=Role.steward, issuer=code)
    bodies = []
    if prefill:
        bodies.append(
            AccessRequestCreate(
                dataset_id=RESIDENTS,
                fields=list(PREFILL_FIELDS),
                row_scope={"residence_county": list(counties)},
                purpose=PURPOSE,
                legal_basis=LEGAL_BASIS,
                duration_days=DAYS,
            )
        )
    for dataset, (questions, fields, scope) in VERIFICATION.items():
        bodies.append(
            AccessRequestCreate(
                kind="verification",
                dataset_id=dataset,
                fields=fields,
                row_scope={scope: list(counties)} if scope else {},
                purpose=PURPOSE,
                legal_basis=LEGAL_BASIS,
                duration_days=DAYS,
                questions=questions,
            )
        )
    return [
        sharing.create_request(engine=engine, data_dir=data_dir, principal=steward, body=body)
        for body in bodies
    ]


def approve_for_demo(
    *, engine: Engine, data_dir: Path, code: str, requests: list[AccessRequestRead]
) -> None:
    """Approve each request as its owner's steward and, where needed, as the bureau."""
    for request in requests:
        current = request
        if current.status.value == "pending_owner":
            owner = Principal(
                subject="user:demo-steward", org=current.owner_org, role=Role.steward, issuer=code
            )
            current = sharing.approve(
                engine=engine,
                data_dir=data_dir,
                principal=owner,
                request_id=current.id,
                reason="demo: enrollment season",
            )
        if current.status.value == "pending_bureau":
            bureau = Principal(
                subject="user:demo-admin", org=BUREAU_ORG, role=Role.bureau_admin, issuer=code
            )
            sharing.approve(
                engine=engine,
                data_dir=data_dir,
                principal=bureau,
                request_id=current.id,
                reason="demo: enrollment season",
            )
