"""The parent's household as the gate shows it: the parent's own row, the children masked.

A citizen reads only their own resident row (the catalog's subject field is the phone), in
the clear: it gives their ID number, household and address. The children have no phone, so
their rows are read by the Education Bureau under its records grant on
`public_security/residents`, masked as the catalog says (name keeps the surname, ID number
6+4, birth date hidden). The parent confirms a child by typing the child's full ID number;
it must match a child of the household in its masked form and be registered (verified).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from citybrain.core.errors import Forbidden, Unprocessable
from citybrain.governance.masking import MaskKind, mask_text
from citybrain.governance.principal import Principal, Role
from citybrain.scenes.enrollment import sources
from citybrain.synth.idcard import is_valid_id_number

RESIDENTS = "public_security/residents"
PARENT_RELATIONS = ("户主", "配偶")
CHILD_RELATION = "子女"
# what the Education Bureau's records grant on residents must cover for the prefill
PREFILL_FIELDS = (
    "id_number",
    "name",
    "household_id",
    "relation_to_head",
    "hukou_county",
    "residence_county",
)


@dataclass(frozen=True)
class Parent:
    """The signed-in parent's own resident row (read by the parent, in the clear)."""

    phone: str
    id_number: str
    household_id: str
    relation: str
    address_id: str | None
    community_code: str | None
    residence_county: str
    hukou_county: str


@dataclass(frozen=True)
class Child:
    """A child of the household as the Education Bureau's grant shows it (masked)."""

    masked_id: str
    masked_name: str
    hukou_county: str
    residence_county: str


def education(code: str) -> Principal:
    """The principal the scene acts as: the Education Bureau's enrollment system."""
    return Principal(subject="scene:enrollment", org="education", role=Role.service, issuer=code)


def parent_of(*, engine: Engine, data_dir: Path, principal: Principal) -> Parent:
    """Read the citizen's own resident row through the gate; refuse who is not a parent."""
    if principal.role is not Role.citizen or not principal.phone:
        raise Forbidden("the parent's pages are for citizens signed in with their phone")
    # the citizen's own rows: looked up by the gate's subject filter (their phone)
    rows = sources.gated_lookup(
        engine=engine,
        data_dir=data_dir,
        principal=principal,
        dataset=RESIDENTS,
        key=None,
        value=None,
        match={},
        purpose="enrollment: the parent's own household",
    )
    parents = [r for r in rows if r.get("relation_to_head") in PARENT_RELATIONS]
    if not parents:
        raise Forbidden(
            "no head of household or spouse in the household register has this phone; "
            "a parent applies with the phone recorded for them at the police station"
        )
    row = parents[0]
    return Parent(
        phone=principal.phone,
        id_number=str(row["id_number"]),
        household_id=str(row["household_id"]),
        relation=str(row["relation_to_head"]),
        address_id=row.get("address_id"),
        community_code=row.get("community_code"),
        residence_county=str(row["residence_county"]),
        hukou_county=str(row["hukou_county"]),
    )


def children_of(*, engine: Engine, data_dir: Path, code: str, parent: Parent) -> list[Child]:
    """Read the children of the parent's household under the Education Bureau's grant."""
    rows = sources.gated_lookup(
        engine=engine,
        data_dir=data_dir,
        principal=education(code),
        dataset=RESIDENTS,
        key="household_id",
        value=parent.household_id,
        match={"household_id": parent.household_id, "relation_to_head": CHILD_RELATION},
        purpose="enrollment: prefill the children of an applying parent's household",
        fields=list(PREFILL_FIELDS),
    )
    return [
        Child(
            masked_id=str(r["id_number"]),
            masked_name=str(r["name"]),
            hukou_county=str(r["hukou_county"]),
            residence_county=str(r["residence_county"]),
        )
        for r in rows
    ]


def check_id_number(value: str) -> str:
    """Return a normalised ID number, or refuse one that breaks GB 11643 (422)."""
    text = value.strip().upper()
    if not is_valid_id_number(text):
        raise Unprocessable(
            "the ID number is not valid: 18 characters, a real birth date and the GB 11643 "
            "check digit (the last character)"
        )
    return text


def birth_date(id_number: str) -> date:
    """Return the birth date an ID number carries."""
    return date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))


def match_child(children: list[Child], id_number: str) -> Child:
    """Return the household's child whose masked ID number the typed one matches, or 403."""
    masked = mask_text(MaskKind.id_number, id_number)
    found = [c for c in children if c.masked_id == masked]
    if not found:
        raise Forbidden(
            "this ID number is not a child of your household in the household register; "
            "only a parent (head of household or spouse) applies for their own child"
        )
    return found[0]


def as_json(child: Child) -> dict[str, Any]:
    """The child as the parent's page shows it."""
    return {
        "masked_id": child.masked_id,
        "masked_name": child.masked_name,
        "hukou_county": child.hukou_county,
    }
