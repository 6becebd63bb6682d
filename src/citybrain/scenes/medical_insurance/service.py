"""The scene's state in one node process: store, key, caches, the group writer, the counters.

Every service function of the scene (voucher, settlement, cases, panel) takes a `Scene`.
`scene_for` returns one per (store, data folder, node code) and keeps it for the process, so
the API, the CLI and the benchmarks share one code path. Reference data (institutions,
catalogues) is read through the governance gate as the medical security bureau, the owner,
once per process and kept.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine

from citybrain.core.errors import NotFound, Unprocessable
from citybrain.governance.keys import node_key
from citybrain.governance.principal import Principal, Role
from citybrain.scenes.medical_insurance.group_commit import GroupWriter

DEPARTMENT = "medical_security"
# the scene reads reference data as the department that owns it
OWNER = Principal(
    subject="scene:medical_insurance", org=DEPARTMENT, role=Role.service, issuer="local"
)
PROVINCE = "370000"

if TYPE_CHECKING:
    from citybrain.scenes.medical_insurance.rules import RuleBase


@dataclass(frozen=True, slots=True)
class Institution:
    """A designated institution as the settlement check needs it."""

    institution_id: str
    name: str
    kind: str
    grade: str
    county_code: str


@dataclass
class Scene:
    """Everything the scene keeps for one node in this process."""

    engine: Engine
    data_dir: Path
    code: str
    key: Ed25519PrivateKey
    public: Ed25519PublicKey
    writer: GroupWriter
    phone_key: bytes
    lock: threading.Lock = field(default_factory=threading.Lock)
    institutions: dict[str, Institution] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # other worker processes of the node settle too (citybrain serve --workers): what one
    # process remembers of a person's payments may be incomplete, so the store is asked
    shared: bool = False

    def phone_hmac(self, phone: str) -> str:
        """Return the keyed hash a voucher keeps instead of the phone number."""
        return hmac.new(self.phone_key, phone.encode(), hashlib.sha256).hexdigest()


_scenes: dict[tuple[str, str, str], Scene] = {}
_scenes_lock = threading.Lock()


def scene_for(*, engine: Engine, data_dir: Path, code: str, shared: bool = False) -> Scene:
    """Return the scene state of a node, made on first use in this process.

    shared: the node runs several worker processes (Scene.shared).
    """
    key = (str(id(engine)), str(data_dir), code)
    scene = _scenes.get(key)
    if scene is not None and scene.engine is engine:
        return scene
    with _scenes_lock:
        scene = _scenes.get(key)
        if scene is None or scene.engine is not engine:
            private = node_key(data_dir)
            raw = private.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            scene = Scene(
                engine=engine,
                data_dir=data_dir,
                code=code,
                key=private,
                public=private.public_key(),
                writer=GroupWriter(engine, on_commit=_audit_batch(data_dir)),
                phone_key=hashlib.sha256(b"citybrain medins: voucher phones\0" + raw).digest(),
                shared=shared,
            )
            _scenes[key] = scene
        return scene


def _audit_batch(data_dir: Path) -> Callable[[list[Any]], None]:
    """Return the after-commit step: one audit record for the settlements of one commit."""

    def audit_settlements(results: list[Any]) -> None:
        from citybrain.governance.audit import service as audit

        settled = [r for r in results if isinstance(r, dict) and r.get("audit") == "settle"]
        if not settled:
            return
        audit.append(
            data_dir=data_dir,
            principal=None,
            action="medins.settle",
            resource="medins:settlements",
            result="ok",
            rows=len(settled),
            detail={
                "settlements": [
                    [r["id"], r["institution"], r["txn"], r["outcome"]] for r in settled
                ]
            },
            durable=False,
        )

    return audit_settlements


def forget_scenes() -> None:
    """Drop every scene state of this process (tests that restart a node call it)."""
    with _scenes_lock:
        for scene in _scenes.values():
            scene.writer.close()
        _scenes.clear()


def now_utc(now: datetime | None = None) -> datetime:
    """Return `now` as an aware UTC time (the clock when None)."""
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo else now.replace(tzinfo=UTC)


def read_table(
    scene: Scene, name: str, *, principal: Principal = OWNER, filters: list[str] | None = None
) -> list[dict[str, Any]]:
    """Read every record of one of the node's departmental tables through the gate."""
    from citybrain.hub.tables import service as tables

    records: list[dict[str, Any]] = []
    after: str | None = None
    department, _, table = name.partition("/")
    while True:
        page = tables.read_records(
            engine=scene.engine,
            data_dir=scene.data_dir,
            principal=principal,
            department=department,
            name=table,
            filters=filters,
            after=after,
            limit=10_000,
        )
        records.extend(page.records)
        if page.next_after is None:
            return records
        after = page.next_after


def _has_table(scene: Scene, name: str) -> bool:
    from citybrain.hub.tables import service as tables

    department, _, table = name.partition("/")
    try:
        tables.describe_table(
            engine=scene.engine, data_dir=scene.data_dir, department=department, name=table
        )
    except NotFound:
        return False
    return True


def institutions(scene: Scene) -> dict[str, Institution]:
    """Return the node's designated institutions by id (read once through the gate)."""
    if scene.institutions is None:
        name = f"{DEPARTMENT}/designated_institutions"
        if not _has_table(scene, name):
            raise Unprocessable(
                f"node {scene.code} has no table {name}; load the designated institutions first"
            )
        scene.institutions = {
            r["institution_id"]: Institution(
                institution_id=str(r["institution_id"]),
                name=str(r["name"]),
                kind=str(r["kind"]),
                grade=str(r["grade"]),
                county_code=str(r["county_code"]),
            )
            for r in read_table(scene, name)
        }
    return scene.institutions


def institution(scene: Scene, institution_id: str) -> Institution:
    """Return one designated institution of this node, or raise 422."""
    found = institutions(scene).get(institution_id)
    if found is None:
        raise Unprocessable(
            f"{institution_id} is not a designated institution of node {scene.code}"
        )
    return found


CATALOGUE_FILES = ("drug_catalogue", "service_catalogue", "consumable_catalogue")


def catalogue_folder(scene: Scene) -> Path:
    """Return the folder of the province's catalogues this node checks settlements against.

    The catalogues are published by the province: a node holds them in its own
    medical_security folder, or (a city of a synthetic province) reads the province's folder
    beside its own. They are reference data without personal fields.
    """
    for folder in (
        scene.data_dir / DEPARTMENT,
        scene.data_dir.resolve().parent / PROVINCE / DEPARTMENT,
    ):
        if (folder / "drug_catalogue.parquet").is_file():
            return folder
    raise Unprocessable(
        f"node {scene.code} has no medical catalogues: put the province's "
        f"{DEPARTMENT}/drug_catalogue.parquet (and the service and consumable catalogues) "
        "in its data folder"
    )


def rulebase(scene: Scene) -> RuleBase:
    """Return the rule base the check before payment uses, with the catalogues (once)."""
    found: RuleBase | None = scene.extra.get("rulebase")
    if found is None:
        from citybrain.scenes.medical_insurance import rules

        found = rules.load_rulebase(catalogue=rules.load_catalogue(catalogue_folder(scene)))
        scene.extra["rulebase"] = found
    return found


def categories(scene: Scene) -> dict[str, str]:
    """Return the reimbursement category (甲/乙/丙) of every catalogue code (once)."""
    found: dict[str, str] | None = scene.extra.get("categories")
    if found is None:
        import pyarrow.parquet as pq

        folder = catalogue_folder(scene)
        found = {}
        for name in CATALOGUE_FILES:
            path = folder / f"{name}.parquet"
            if path.is_file():
                table = pq.read_table(path)
                codes = table.column("code").to_pylist()
                cats = (
                    table.column("category").to_pylist()
                    if "category" in table.schema.names
                    else ["乙"] * len(codes)
                )
                found.update(zip(codes, cats, strict=True))
        scene.extra["categories"] = found
    return found
