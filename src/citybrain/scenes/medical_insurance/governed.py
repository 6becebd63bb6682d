"""The sweep and the leads read settlements as any reader of governed data does: gate, audit."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from citybrain.core.errors import BadInput, Forbidden
from citybrain.governance import gate
from citybrain.governance.audit import service as audit
from citybrain.governance.principal import Principal, Role

DATASETS = ("medical_security/settlements", "medical_security/settlement_items")
OWNER = "medical_security"


def analyst(org: str = OWNER, role: str = Role.steward.value, code: str = "") -> Principal:
    """The principal a command-line sweep acts as (by default the fund's owner, its steward)."""
    try:
        return Principal(subject=f"cli:{org}", org=org, role=Role(role), issuer=code)
    except ValueError:
        raise BadInput(f"unknown role {role!r}") from None


def authorize_sweep(*, data: Path, principal: Principal, action: str) -> int:
    """Let the gate decide the read of a node's settlements and audit it; return the rows.

    The node's tables are imported first (as serving the node does), so the gate knows their
    owner; a department without a grant is refused (403) and the refusal is audited.
    """
    from citybrain.app import import_deferred_tables, prepare_node
    from citybrain.core.config import load_settings
    from citybrain.geo import service as geo

    code = data.resolve().name
    try:
        level = geo.get_unit(code).level.value
    except Exception:  # noqa: BLE001 - a folder not named by a code: read as a province node
        code, level = "370000", "province"
    engine = prepare_node(load_settings(data_dir=data, code=code, level=level))
    try:
        # the year of care is imported after a node starts serving; here, before the gate asks
        import_deferred_tables(engine, data)
        rows = 0
        for dataset_id in DATASETS:
            decision = gate.authorize_read(
                engine=engine,
                data_dir=data,
                principal=principal,
                dataset_id=dataset_id,
                action=action,
                owner=OWNER,
            )
            if decision.restricted:
                # the rules need every settlement and every field, in the clear
                raise Forbidden(
                    f"the sweep reads all of {dataset_id}; a grant limited to some rows or "
                    "fields does not allow it"
                )
            path = data / f"{dataset_id}.parquet"
            count = pq.read_metadata(path).num_rows if path.exists() else 0
            rows += count
            audit.append(
                data_dir=data,
                principal=principal,
                action=action,
                resource=dataset_id,
                result="allowed",
                grant_id=decision.grant_id,
                purpose=decision.purpose,
                rows=count,
                detail={"basis": decision.basis},
            )
        return rows
    finally:
        engine.dispose()
