"""Sharing: requests -> owner and bureau approvals -> grants; expiry, revocation, visibility."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.core.db import create_engine_for, upgrade
from citybrain.core.errors import BadInput, Conflict, Forbidden, NotFound, Unprocessable
from citybrain.governance.catalog import service as catalog
from citybrain.governance.catalog.models import CatalogEntryCreate
from citybrain.governance.principal import Principal, Role
from citybrain.governance.sharing import service
from citybrain.governance.sharing.models import AccessRequestCreate
from conftest import bearer


def _field(name: str, personal: str = "none", mask: str = "none") -> dict[str, str]:
    return {"name": name, "personal": personal, "mask": mask}


def _entries(suffix: str = "") -> list[CatalogEntryCreate]:
    """Four datasets, one of each workflow: conditional important, conditional general,
    unconditional, not shared."""
    raw: list[dict[str, Any]] = [
        {
            "id": f"public_security/residents{suffix}",
            "owner_department": "public_security",
            "data_level": "important",
            "sharing_type": "conditional",
            "fields": [
                _field("person_id", "personal", "pseudonym"),
                _field("id_number", "sensitive", "id_number"),
                _field("name", "personal", "name"),
                _field("birth_date", "personal"),
                _field("hukou_county"),
                _field("residence_county"),
                _field("phone", "personal", "phone"),
            ],
            "scope_fields": ["hukou_county", "residence_county"],
        },
        {
            "id": f"public_security/households{suffix}",
            "owner_department": "public_security",
            "data_level": "general-4",
            "sharing_type": "conditional",
            "fields": [_field("household_id"), _field("size"), _field("hukou_county")],
            "scope_fields": ["hukou_county"],
        },
        {
            "id": f"natural_resources/parcels{suffix}",
            "owner_department": "natural_resources",
            "data_level": "general-1",
            "sharing_type": "unconditional",
            "fields": [
                _field("parcel_id"),
                _field("area"),
                _field("holder_id_number", "sensitive", "id_number"),
            ],
        },
        {
            "id": f"civil_affairs/marriages{suffix}",
            "owner_department": "civil_affairs",
            "data_level": "core",
            "sharing_type": "not_shared",
            "fields": [
                _field("id_number", "sensitive", "id_number"),
                _field("status"),
                _field("county"),
            ],
            "scope_fields": ["county"],
        },
    ]
    return [CatalogEntryCreate.model_validate({"title_en": e["id"], **e}) for e in raw]


def register_catalog(engine: Engine, suffix: str = "") -> None:
    """Describe the test datasets in the node's catalog, as the bureau."""
    for entry in _entries(suffix):
        catalog.register_entry(engine=engine, entry=entry, principal=BUREAU)


BUREAU = Principal(subject="admin", org="bureau", role=Role.bureau_admin, issuer="370000")
RESIDENTS = "public_security/residents"
HOUSEHOLDS = "public_security/households"
PARCELS = "natural_resources/parcels"
MARRIAGES = "civil_affairs/marriages"


def body(dataset_id: str = RESIDENTS, **changes: Any) -> dict[str, Any]:
    """Return a request body for a dataset with sensible defaults."""
    base: dict[str, Any] = {
        "dataset_id": dataset_id,
        "fields": ["name", "birth_date", "hukou_county"],
        "row_scope": {"hukou_county": ["370102"]},
        "purpose": "school enrolment: check the hukou of applicants",
        "legal_basis": "Compulsory Education Law art. 12",
        "duration_days": 365,
    }
    base.update(changes)
    return base


class Node:
    """A node under test with a client and a header per (org, role)."""

    def __init__(self, client: TestClient, data_dir: Path) -> None:
        self.client = client
        self.data_dir = data_dir
        self._headers: dict[tuple[str, str], dict[str, str]] = {}

    @property
    def engine(self) -> Engine:
        engine: Engine = self.client.app.state.engine  # type: ignore[attr-defined]
        return engine

    def h(self, org: str, role: str = "steward") -> dict[str, str]:
        key = (org, role)
        if key not in self._headers:
            self._headers[key] = bearer(self.data_dir, org=org, role=role, subject=f"{org}-u")
        return self._headers[key]

    def post(self, path: str, org: str, role: str = "steward", json: Any = None) -> Any:
        return self.client.post(path, json=json, headers=self.h(org, role))

    def get(self, path: str, org: str, role: str = "steward", **params: Any) -> Any:
        return self.client.get(path, params=params, headers=self.h(org, role))

    def request(self, org: str = "education", role: str = "steward", **kw: Any) -> Any:
        return self.post("/api/sharing/requests", org, role, body(**kw))

    def decide(self, rid: str, action: str, org: str, role: str = "steward", **b: Any) -> Any:
        return self.post(f"/api/sharing/requests/{rid}/{action}", org, role, b or None)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """A province node whose catalog describes the test datasets."""
    app = create_app(load_settings(data_dir=tmp_path))
    with TestClient(app) as client:
        made = Node(client, tmp_path)
        register_catalog(made.engine)
        yield made


def audit_actions(data_dir: Path) -> list[dict[str, Any]]:
    """Return the records of the node's audit log."""
    path = data_dir / "audit" / "log.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


# ---- the workflow ------------------------------------------------------------------------


def test_conditional_important_needs_owner_then_bureau(node: Node) -> None:
    made = node.request()
    assert made.status_code == 201, made.text
    req = made.json()
    assert req["status"] == "pending_owner" and req["grant_id"] is None
    assert (req["requester_org"], req["owner_org"], req["data_level"]) == (
        "education",
        "public_security",
        "important",
    )
    assert req["requested_by"] == "education/steward/education-u"
    rid = req["id"]
    assert service.active_grant(engine=node.engine, dataset_id=RESIDENTS, org="education") is None

    owner = node.decide(rid, "approve", "public_security", reason="purpose is lawful")
    assert owner.status_code == 200, owner.text
    assert owner.json()["status"] == "pending_bureau"
    assert owner.json()["owner_decision"]["by"] == "public_security/steward/public_security-u"
    assert owner.json()["owner_decision"]["reason"] == "purpose is lawful"
    assert service.active_grant(engine=node.engine, dataset_id=RESIDENTS, org="education") is None
    waiting = node.get("/api/sharing/requests", "bureau", "bureau_admin", view="to_decide")
    assert [r["id"] for r in waiting.json()] == [rid]

    bureau = node.decide(rid, "approve", "bureau", "bureau_admin")
    assert bureau.status_code == 200, bureau.text
    done = bureau.json()
    assert done["status"] == "approved" and done["grant_id"]
    assert done["bureau_decision"]["decision"] == "approved"

    grant = node.get(f"/api/grants/{done['grant_id']}", "education").json()
    assert grant["status"] == "active"
    assert grant["fields"] == ["name", "birth_date", "hukou_county"]
    assert grant["row_scope"] == {"hukou_county": ["370102"]}
    assert grant["grantee_org"] == "education" and grant["request_id"] == rid
    expires = datetime.fromisoformat(grant["expires_at"])
    granted = datetime.fromisoformat(grant["granted_at"])
    assert expires - granted == timedelta(days=365)
    active = service.active_grant(engine=node.engine, dataset_id=RESIDENTS, org="education")
    assert active is not None and active.id == done["grant_id"]
    # the grant is of this org, this dataset and this kind only
    assert service.active_grant(engine=node.engine, dataset_id=RESIDENTS, org="health") is None
    assert service.active_grant(engine=node.engine, dataset_id=HOUSEHOLDS, org="education") is None
    assert (
        service.active_grant(
            engine=node.engine, dataset_id=RESIDENTS, org="education", kind="verification"
        )
        is None
    )


def test_general_level_is_approved_by_the_owner_alone(node: Node) -> None:
    req = node.request(
        dataset_id=HOUSEHOLDS, fields=["household_id", "size"], row_scope={"hukou_county": [1]}
    ).json()
    assert req["status"] == "pending_owner"
    done = node.decide(req["id"], "approve", "public_security").json()
    assert done["status"] == "approved" and done["grant_id"]
    assert done["bureau_decision"] is None


def test_unconditional_is_granted_at_once(node: Node) -> None:
    made = node.request(dataset_id=PARCELS, fields=["parcel_id", "area"], row_scope={})
    assert made.status_code == 201, made.text
    req = made.json()
    assert req["status"] == "approved" and req["grant_id"]
    grant = service.active_grant(engine=node.engine, dataset_id=PARCELS, org="education")
    assert (
        grant is not None and grant.id == req["grant_id"] and grant.fields == ["parcel_id", "area"]
    )
    # a service account of the department may ask too
    by_service = node.request(
        "health", "service", dataset_id=PARCELS, fields=["area"], row_scope={}
    )
    assert by_service.json()["status"] == "approved"


def test_unconditional_with_sensitive_fields_goes_to_the_owner(node: Node) -> None:
    req = node.request(
        dataset_id=PARCELS, fields=["parcel_id", "holder_id_number"], row_scope={}
    ).json()
    assert req["status"] == "pending_owner" and req["grant_id"] is None
    done = node.decide(req["id"], "approve", "natural_resources").json()
    assert done["status"] == "approved" and done["grant_id"]


def test_not_shared_refuses_records_and_accepts_verification(node: Node) -> None:
    refused = node.request(
        dataset_id=MARRIAGES, fields=["status"], row_scope={"county": ["370102"]}
    )
    assert refused.status_code == 422
    assert "is not shared; ask for a verification grant instead" in refused.json()["title"]
    verification = node.request(
        kind="verification",
        dataset_id=MARRIAGES,
        fields=["id_number", "status"],
        row_scope={"county": ["370102"]},
        questions=["is_married"],
    )
    assert verification.status_code == 201, verification.text
    req = verification.json()
    assert req["kind"] == "verification" and req["status"] == "pending_owner"
    assert req["questions"] == ["is_married"]
    # core level: the bureau decides after the owner
    assert node.decide(req["id"], "approve", "civil_affairs").json()["status"] == "pending_bureau"
    done = node.decide(req["id"], "approve", "bureau", "bureau_admin").json()
    grant = service.active_grant(
        engine=node.engine, dataset_id=MARRIAGES, org="education", kind="verification"
    )
    assert grant is not None and grant.id == done["grant_id"] and grant.questions == ["is_married"]
    assert service.active_grant(engine=node.engine, dataset_id=MARRIAGES, org="education") is None
    # a verification request names its questions; a records request has none
    assert (
        node.request(kind="verification", dataset_id=MARRIAGES, fields=["status"]).status_code
        == 400
    )
    assert node.request(questions=["is_resident"]).status_code == 400


# ---- who may act -------------------------------------------------------------------------


def test_wrong_deciders_are_refused_at_each_step(node: Node) -> None:
    rid = node.request().json()["id"]
    # owner step: only a steward of public_security
    for org, role in (
        ("education", "steward"),
        ("public_security", "operator"),
        ("public_security", "service"),
        ("bureau", "bureau_admin"),
    ):
        for action in ("approve", "reject"):
            got = node.decide(rid, action, org, role, reason="no")
            assert got.status_code == 403, (org, role, action, got.text)
    # a department the request does not concern does not learn it exists
    assert node.decide(rid, "approve", "health").status_code == 404
    assert node.decide(rid, "approve", "public_security").json()["status"] == "pending_bureau"
    # bureau step: only a bureau_admin
    for org, role in (("education", "steward"), ("public_security", "operator")):
        assert node.decide(rid, "approve", org, role).status_code == 403
    # the owner has decided already: a second decision of the owner conflicts
    assert node.decide(rid, "approve", "public_security").status_code == 409
    assert (
        node.decide(rid, "reject", "public_security", reason="changed my mind").status_code == 409
    )
    assert (
        node.get(f"/api/sharing/requests/{rid}", "education").json()["status"] == "pending_bureau"
    )


def test_double_decisions_conflict(node: Node) -> None:
    rid = node.request(dataset_id=HOUSEHOLDS, fields=["size"], row_scope={"hukou_county": ["1"]})
    rid = rid.json()["id"]
    assert node.decide(rid, "approve", "public_security").status_code == 200
    again = node.decide(rid, "approve", "public_security")
    assert again.status_code == 409 and "approved" in again.json()["title"]
    assert node.decide(rid, "reject", "public_security", reason="late").status_code == 409
    assert node.decide(rid, "withdraw", "education").status_code == 409
    # bureau step decided twice
    rid2 = node.request().json()["id"]
    node.decide(rid2, "approve", "public_security")
    assert node.decide(rid2, "approve", "bureau", "bureau_admin").status_code == 200
    assert node.decide(rid2, "approve", "bureau", "bureau_admin").status_code == 409


def test_reject_needs_a_reason(node: Node) -> None:
    rid = node.request().json()["id"]
    assert node.decide(rid, "reject", "public_security").status_code == 400
    blank = node.decide(rid, "reject", "public_security", reason="   ")
    assert blank.status_code == 400 and "reason" in blank.json()["title"]
    done = node.decide(rid, "reject", "public_security", reason="purpose too broad")
    assert done.status_code == 200
    assert done.json()["status"] == "rejected"
    assert done.json()["owner_decision"] == {
        "by": "public_security/steward/public_security-u",
        "at": done.json()["owner_decision"]["at"],
        "decision": "rejected",
        "reason": "purpose too broad",
    }
    assert done.json()["grant_id"] is None
    # the bureau may reject at its step
    rid2 = node.request().json()["id"]
    node.decide(rid2, "approve", "public_security")
    by_bureau = node.decide(rid2, "reject", "bureau", "bureau_admin", reason="core interests")
    assert by_bureau.json()["status"] == "rejected"
    assert by_bureau.json()["bureau_decision"]["reason"] == "core interests"
    assert service.active_grant(engine=node.engine, dataset_id=RESIDENTS, org="education") is None


def test_withdraw(node: Node) -> None:
    rid = node.request().json()["id"]
    assert node.decide(rid, "withdraw", "public_security").status_code == 403
    assert node.decide(rid, "withdraw", "education", "operator").status_code == 403
    done = node.decide(rid, "withdraw", "education", reason="no longer needed")
    assert done.status_code == 200 and done.json()["status"] == "withdrawn"
    assert node.decide(rid, "approve", "public_security").status_code == 409
    assert node.decide(rid, "withdraw", "education").status_code == 409


# ---- what may be asked -------------------------------------------------------------------


def test_bad_requests(node: Node) -> None:
    unknown = node.request(fields=["name", "salary", "religion"])
    assert unknown.status_code == 422
    assert "salary" in unknown.json()["title"] and "religion" in unknown.json()["title"]
    off_scope = node.request(row_scope={"name": ["张三"]})
    assert off_scope.status_code == 422 and "scope" in off_scope.json()["title"]
    no_scope = node.request(row_scope={})
    assert no_scope.status_code == 422 and "row_scope" in no_scope.json()["title"]
    own = node.request("public_security")
    assert own.status_code == 422 and "owns" in own.json()["title"]
    assert node.request(dataset_id="education/nothing").status_code == 404
    # validation of the body: 400
    assert node.request(fields=[]).status_code == 400
    assert node.request(fields=["name", "name"]).status_code == 400
    assert node.request(duration_days=0).status_code == 400
    assert node.request(duration_days=1096).status_code == 400
    assert node.request(duration_days=1095).status_code == 201
    assert node.request(purpose="  ").status_code == 400
    assert node.request(legal_basis="").status_code == 400
    assert node.request(row_scope={"hukou_county": []}).status_code == 400
    assert node.request(extra="x").status_code == 400
    assert node.request(purpose="enrol\x00ment").status_code == 400
    assert node.request(dataset_id="residents").status_code == 400
    rid = node.request().json()["id"]
    nul = node.decide(rid, "reject", "public_security", reason="no\x00")
    assert nul.status_code == 400
    missing = body()
    del missing["purpose"]
    assert node.post("/api/sharing/requests", "education", json=missing).status_code == 400
    # who may ask: stewards, services, the bureau; not operators, auditors or citizens
    assert node.request("education", "operator").status_code == 403
    assert node.request("education", "auditor").status_code == 403
    citizen = bearer(node.data_dir, org="citizens", role="citizen", phone="13800000000")
    got = node.client.post("/api/sharing/requests", json=body(), headers=citizen)
    assert got.status_code == 403
    assert node.client.post("/api/sharing/requests", json=body()).status_code == 401


def test_the_bureau_may_ask_without_a_row_scope(node: Node) -> None:
    made = node.request("bureau", "bureau_admin", row_scope={})
    assert made.status_code == 201 and made.json()["status"] == "pending_owner"
    assert made.json()["requester_org"] == "bureau"


def test_pseudonymise_is_carried_to_the_grant(node: Node) -> None:
    req = node.request(
        dataset_id=HOUSEHOLDS,
        fields=["household_id"],
        row_scope={"hukou_county": ["370102"]},
        pseudonymise=True,
    ).json()
    done = node.decide(req["id"], "approve", "public_security").json()
    grant = node.get(f"/api/grants/{done['grant_id']}", "education").json()
    assert grant["pseudonymise"] is True


# ---- time, revocation, visibility --------------------------------------------------------


def test_expiry_with_injected_time(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    start = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)
    monkeypatch.setattr(service, "clock", lambda: start)
    req = node.request(dataset_id=PARCELS, fields=["area"], row_scope={}, duration_days=30).json()
    gid = req["grant_id"]
    grant = service.active_grant(engine=node.engine, dataset_id=PARCELS, org="education")
    assert grant is not None and grant.granted_at == start
    assert grant.expires_at == start + timedelta(days=30)
    almost = start + timedelta(days=30) - timedelta(microseconds=1)
    assert service.active_grant(engine=node.engine, dataset_id=PARCELS, org="education", at=almost)
    assert (
        service.active_grant(
            engine=node.engine, dataset_id=PARCELS, org="education", at=start + timedelta(days=30)
        )
        is None
    )
    # not active before it was granted
    assert (
        service.active_grant(
            engine=node.engine, dataset_id=PARCELS, org="education", at=start - timedelta(days=1)
        )
        is None
    )
    # a time in another zone means the same instant
    beijing = (start + timedelta(days=10)).astimezone(timezone(timedelta(hours=8)))
    assert beijing.hour == 16
    assert service.active_grant(engine=node.engine, dataset_id=PARCELS, org="education", at=beijing)
    monkeypatch.setattr(service, "clock", lambda: start + timedelta(days=31))
    assert service.active_grant(engine=node.engine, dataset_id=PARCELS, org="education") is None
    assert node.get(f"/api/grants/{gid}", "education").json()["status"] == "expired"
    assert node.get("/api/grants", "education", active=True).json() == []
    assert [g["id"] for g in node.get("/api/grants", "education").json()] == [gid]


def test_active_grant_by_id_and_newest(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    start = datetime(2027, 5, 1, tzinfo=UTC)
    monkeypatch.setattr(service, "clock", lambda: start)
    first = node.request(dataset_id=PARCELS, fields=["area"], row_scope={}).json()["grant_id"]
    monkeypatch.setattr(service, "clock", lambda: start + timedelta(hours=1))
    second = node.request(dataset_id=PARCELS, fields=["parcel_id"], row_scope={}).json()
    second_id = second["grant_id"]
    newest = service.active_grant(engine=node.engine, dataset_id=PARCELS, org="education")
    assert newest is not None and newest.id == second_id
    named = service.active_grant(
        engine=node.engine, dataset_id=PARCELS, org="education", grant_id=first
    )
    assert named is not None and named.id == first
    # a grant id of another organisation or dataset is no grant of this one
    other = node.request("health", dataset_id=PARCELS, fields=["area"], row_scope={}).json()
    assert (
        service.active_grant(
            engine=node.engine, dataset_id=PARCELS, org="education", grant_id=other["grant_id"]
        )
        is None
    )


def test_active_grant_is_one_indexed_query(node: Node) -> None:
    node.request(dataset_id=PARCELS, fields=["area"], row_scope={})
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, params))

    event.listen(node.engine, "before_cursor_execute", capture)
    try:
        assert service.active_grant(engine=node.engine, dataset_id=PARCELS, org="education")
    finally:
        event.remove(node.engine, "before_cursor_execute", capture)
    queries = [(q, p) for q, p in seen if q.lstrip().upper().startswith("SELECT")]
    assert len(queries) == 1
    statement, params = queries[0]
    with node.engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
    assert any("ix_grants_dataset_grantee" in str(row) for row in plan), plan


def test_revocation(node: Node) -> None:
    gid = node.request(dataset_id=PARCELS, fields=["area"], row_scope={}).json()["grant_id"]
    path = f"/api/grants/{gid}/revoke"
    assert node.post(path, "education", json={"reason": "mine"}).status_code == 403
    assert node.post(path, "natural_resources", "operator", json={"reason": "x"}).status_code == 403
    assert node.post(path, "health", json={"reason": "x"}).status_code == 404
    assert node.post(path, "natural_resources", json={}).status_code == 400
    assert node.post(path, "natural_resources", json={"reason": "  "}).status_code == 400
    done = node.post(path, "natural_resources", json={"reason": "purpose ended"})
    assert done.status_code == 200, done.text
    grant = done.json()
    assert grant["status"] == "revoked" and grant["revoke_reason"] == "purpose ended"
    assert grant["revoked_by"] == "natural_resources/steward/natural_resources-u"
    assert service.active_grant(engine=node.engine, dataset_id=PARCELS, org="education") is None
    assert node.post(path, "bureau", "bureau_admin", json={"reason": "again"}).status_code == 409
    # the bureau may revoke too
    gid2 = node.request(dataset_id=PARCELS, fields=["area"], row_scope={}).json()["grant_id"]
    by_bureau = node.post(
        f"/api/grants/{gid2}/revoke", "bureau", "bureau_admin", json={"reason": "r"}
    )
    assert by_bureau.json()["status"] == "revoked"


def test_visibility(node: Node) -> None:
    rid = node.request().json()["id"]
    parcels = node.request(dataset_id=PARCELS, fields=["area"], row_scope={}).json()
    gid = parcels["grant_id"]
    # another department learns nothing: 404, empty lists
    assert node.get(f"/api/sharing/requests/{rid}", "health").status_code == 404
    assert node.get(f"/api/grants/{gid}", "health").status_code == 404
    assert node.get("/api/sharing/requests", "health").json() == []
    assert node.get("/api/grants", "health").json() == []
    assert node.get(f"/api/sharing/requests/{uuid.uuid4().hex}", "education").status_code == 404
    # requester and owner see it; the bureau sees everything
    assert node.get(f"/api/sharing/requests/{rid}", "education", "operator").status_code == 200
    assert node.get(f"/api/sharing/requests/{rid}", "public_security").status_code == 200
    assert node.get(f"/api/grants/{gid}", "natural_resources").status_code == 200
    every = node.get("/api/sharing/requests", "bureau", "bureau_admin").json()
    assert {r["id"] for r in every} == {rid, parcels["id"]}
    mine = node.get("/api/sharing/requests", "education", view="requested").json()
    assert {r["id"] for r in mine} == {rid, parcels["id"]}
    owner_todo = node.get("/api/sharing/requests", "public_security", view="to_decide").json()
    assert [r["id"] for r in owner_todo] == [rid]
    assert node.get("/api/sharing/requests", "public_security", view="requested").json() == []
    assert node.get("/api/sharing/requests", "education", view="to_decide").json() == []
    pending = node.get("/api/sharing/requests", "education", status="pending_owner").json()
    assert [r["id"] for r in pending] == [rid]
    assert node.get("/api/sharing/requests", "education", status="nonsense").status_code == 400
    assert node.get("/api/sharing/requests", "education", view="nonsense").status_code == 400
    by_dataset = node.get("/api/grants", "natural_resources", dataset_id=PARCELS).json()
    assert [g["id"] for g in by_dataset] == [gid]
    # auditors and citizens read no requests
    assert node.get("/api/sharing/requests", "education", "auditor").status_code == 403
    assert node.get("/api/grants", "education", "auditor").status_code == 403


def test_every_step_is_audited(node: Node) -> None:
    rid = node.request().json()["id"]
    node.decide(rid, "approve", "public_security")
    gid = node.decide(rid, "approve", "bureau", "bureau_admin").json()["grant_id"]
    node.post(f"/api/grants/{gid}/revoke", "public_security", json={"reason": "over"})
    rid2 = node.request().json()["id"]
    node.decide(rid2, "reject", "public_security", reason="no")
    rid3 = node.request().json()["id"]
    node.decide(rid3, "withdraw", "education")
    records = audit_actions(node.data_dir)
    sharing = [r for r in records if r["action"].startswith(("sharing.", "grant."))]
    assert [r["action"] for r in sharing] == [
        "sharing.request",
        "sharing.approve",
        "sharing.approve",
        "grant.create",
        "grant.revoke",
        "sharing.request",
        "sharing.reject",
        "sharing.request",
        "sharing.withdraw",
    ]
    assert all(r["resource"] == RESIDENTS and r["result"] == "ok" for r in sharing)
    assert sharing[0]["actor"] == "education/steward/education-u"
    assert sharing[0]["detail"]["request"] == rid
    assert sharing[0]["purpose"] == body()["purpose"]
    assert sharing[1]["detail"]["step"] == "owner" and sharing[2]["detail"]["step"] == "bureau"
    assert sharing[3]["grant"] == gid and sharing[3]["detail"]["grantee"] == "education"
    assert sharing[4]["grant"] == gid and sharing[4]["detail"]["reason"] == "over"
    assert sharing[6]["detail"]["reason"] == "no"
    # refused attempts change nothing and leave the log as it was
    node.decide(rid2, "approve", "public_security")
    assert len(audit_actions(node.data_dir)) == len(records)


def test_at_once_grant_is_audited_with_the_request(node: Node) -> None:
    gid = node.request(dataset_id=PARCELS, fields=["area"], row_scope={}).json()["grant_id"]
    actions = [(r["action"], r["grant"]) for r in audit_actions(node.data_dir)]
    assert actions[-2:] == [("sharing.request", gid), ("grant.create", gid)]


# ---- the service with an explicit clock, on PostgreSQL -----------------------------------


def _principal(org: str, role: Role = Role.steward) -> Principal:
    return Principal(subject=f"{org}-svc", org=org, role=role, issuer="370000")


def test_service_flow_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    suffix = "_" + uuid.uuid4().hex[:8]
    engine = create_engine_for(postgres_url)
    upgrade(engine)
    register_catalog(engine, suffix)
    residents = f"{RESIDENTS}{suffix}"
    start = datetime(2027, 1, 10, 9, 30, tzinfo=UTC)
    try:
        req = service.create_request(
            engine=engine,
            data_dir=tmp_path,
            principal=_principal("education"),
            body=AccessRequestCreate.model_validate(body(residents, duration_days=10)),
            now=start,
        )
        assert req.status == "pending_owner" and req.created_at == start
        with pytest.raises(Forbidden):
            service.approve(
                engine=engine,
                data_dir=tmp_path,
                principal=_principal("bureau", Role.bureau_admin),
                request_id=req.id,
            )
        with pytest.raises(NotFound):
            service.get_request(engine=engine, principal=_principal("health"), request_id=req.id)
        step = service.approve(
            engine=engine,
            data_dir=tmp_path,
            principal=_principal("public_security"),
            request_id=req.id,
            now=start,
        )
        assert step.status == "pending_bureau"
        with pytest.raises(BadInput):
            service.reject(
                engine=engine,
                data_dir=tmp_path,
                principal=_principal("bureau", Role.bureau_admin),
                request_id=req.id,
                reason=None,
            )
        done = service.approve(
            engine=engine,
            data_dir=tmp_path,
            principal=_principal("bureau", Role.bureau_admin),
            request_id=req.id,
            now=start + timedelta(hours=1),
        )
        assert done.status == "approved" and done.grant_id
        with pytest.raises(Conflict):
            service.approve(
                engine=engine,
                data_dir=tmp_path,
                principal=_principal("bureau", Role.bureau_admin),
                request_id=req.id,
            )
        at = start + timedelta(days=5)
        grant = service.active_grant(engine=engine, dataset_id=residents, org="education", at=at)
        assert grant is not None and grant.id == done.grant_id
        assert grant.expires_at == start + timedelta(hours=1, days=10)
        later = start + timedelta(days=11)
        assert (
            service.active_grant(engine=engine, dataset_id=residents, org="education", at=later)
            is None
        )
        listed = service.list_grants(
            engine=engine, principal=_principal("education"), dataset_id=residents, at=later
        )
        assert [(g.id, g.status) for g in listed] == [(done.grant_id, "expired")]
        revoked = service.revoke_grant(
            engine=engine,
            data_dir=tmp_path,
            principal=_principal("public_security"),
            grant_id=done.grant_id,
            reason="audit finding",
            now=at,
        )
        assert revoked.status == "revoked" and revoked.revoked_at == at
        assert (
            service.active_grant(engine=engine, dataset_id=residents, org="education", at=at)
            is None
        )
        with pytest.raises(Unprocessable):
            service.create_request(
                engine=engine,
                data_dir=tmp_path,
                principal=_principal("education"),
                body=AccessRequestCreate.model_validate(
                    body(f"{MARRIAGES}{suffix}", fields=["status"], row_scope={"county": ["1"]})
                ),
            )
        actions = [r["action"] for r in audit_actions(tmp_path)]
        assert actions == [
            "sharing.request",
            "sharing.approve",
            "sharing.approve",
            "grant.create",
            "grant.revoke",
        ]
    finally:
        engine.dispose()
