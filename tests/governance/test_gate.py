"""The gate on a synthetic city node: owner, grants, masks, scopes, citizens, SQL, verification."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.governance.masking import MaskKind, mask_sql, mask_text
from conftest import bearer

CITY = "370100"
COUNTY = "370102"  # Lixia district
RESIDENTS = "public_security/residents"
RECORDS = f"/api/tables/{RESIDENTS}/records"


@pytest.fixture(scope="session")
def synth_city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generate Jinan once at a tiny scale (deterministic, seed 7)."""
    out = tmp_path_factory.mktemp("synth")
    subprocess.run(
        [sys.executable, "-m", "citybrain", "synth", "--scale", "0.0003", "--seed", "7"]
        + ["--out", str(out / "s"), "--cities", CITY, "--workers", "1"],
        check=True,
        capture_output=True,
    )
    return out / "s" / CITY


class Node:
    """A city node under test with helpers to act as one organisation or another."""

    def __init__(self, client: TestClient, data: Path) -> None:
        self.client = client
        self.data = data

    def h(self, org: str, role: str = "steward", **kw: Any) -> dict[str, str]:
        return bearer(self.data, org=org, role=role, issuer=CITY, **kw)

    def get(self, path: str, org: str, role: str = "steward", **params: Any) -> Any:
        return self.client.get(path, params=params, headers=self.h(org, role))

    def post(self, path: str, body: Any, org: str, role: str = "steward") -> Any:
        return self.client.post(path, json=body, headers=self.h(org, role))

    def grant(self, org: str = "education", **changes: Any) -> str:
        """Request residents for Lixia and have the owner and the bureau approve."""
        body = {
            "dataset_id": RESIDENTS,
            "fields": ["person_id", "id_number", "name", "household_id", "residence_county"]
            + ["phone"],
            "row_scope": {"residence_county": [COUNTY]},
            "purpose": "compulsory-education enrollment",
            "legal_basis": "Compulsory Education Law, art. 12",
            "duration_days": 90,
            **changes,
        }
        request = self.post("/api/sharing/requests", body, org)
        assert request.status_code == 201, request.text
        rid = request.json()["id"]
        owner = self.post(
            f"/api/sharing/requests/{rid}/approve", {"reason": "ok"}, "public_security"
        )
        assert owner.status_code == 200, owner.text
        bureau = self.post(
            f"/api/sharing/requests/{rid}/approve", {"reason": "ok"}, "bureau", "bureau_admin"
        )
        assert bureau.json()["status"] == "approved", bureau.text
        return str(bureau.json()["grant_id"])


@pytest.fixture
def node(synth_city: Path, tmp_path: Path) -> Iterator[Node]:
    data = tmp_path / CITY
    shutil.copytree(synth_city, data)
    app = create_app(load_settings(data_dir=data, code=CITY, level="city"))
    with TestClient(app) as client:
        yield Node(client, data)


def _audit(data: Path) -> list[dict[str, Any]]:
    lines = (data / "audit" / "log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _last_of(data: Path, org: str) -> dict[str, Any]:
    """The newest record of one organisation's requests (the node's own work may follow it)."""
    return [r for r in _audit(data) if r["org"] == org][-1]


def test_node_start_imports_synth_tables_into_the_catalog(node: Node) -> None:
    tables = node.get("/api/tables", "bureau", "bureau_admin").json()
    names = {f"{t['department']}/{t['name']}" for t in tables}
    assert {RESIDENTS, "education/schools", "human_resources/social_insurance"} <= names
    entry = node.get(f"/api/catalog/{RESIDENTS}", "education").json()
    assert entry["data_level"] == "important" and entry["sharing_type"] == "conditional"


def test_owner_reads_in_the_clear_others_need_a_grant(node: Node) -> None:
    own = node.get(RECORDS, "public_security", limit=3).json()["records"]
    assert len(own[0]["id_number"]) == 18 and "*" not in own[0]["id_number"]
    refused = node.get(RECORDS, "education", limit=3)
    assert refused.status_code == 403 and "no active grant" in refused.json()["title"]
    last = _last_of(node.data, "education")
    assert (last["action"], last["result"]) == ("read", "refused")


def test_grant_masks_projects_and_scopes(node: Node) -> None:
    grant = node.grant()
    page = node.get(RECORDS, "education", limit=50).json()
    assert page["records"], "Lixia has residents at this scale"
    for record in page["records"]:
        assert set(record) == {
            "person_id",
            "id_number",
            "name",
            "household_id",
            "residence_county",
            "phone",
        }
        assert record["residence_county"] == COUNTY
        assert record["id_number"][6:14] == "********" and len(record["id_number"]) == 18
        assert record["name"][1:] == "*" * (len(record["name"]) - 1)
        if record["phone"]:
            assert record["phone"][3:7] == "****"
    last = _last_of(node.data, "education")
    assert last["grant"] == grant and last["rows"] == len(page["records"])
    assert last["purpose"] == "compulsory-education enrollment"
    # a field outside the grant, and an explicit filter outside the row scope, are refused
    outside = node.get(RECORDS, "education", fields="sex")
    assert outside.status_code == 403 and "outside" in outside.json()["title"]
    other_county = node.get(RECORDS, "education", filter="residence_county==370103")
    assert other_county.status_code == 403 and "row scope" in other_county.json()["title"]
    # filters see masked values: probing a raw ID number finds nothing
    raw_id = node.get(RECORDS, "public_security", limit=1).json()["records"][0]["id_number"]
    probe = node.get(RECORDS, "education", filter=f"id_number=={raw_id}")
    assert probe.status_code == 200 and probe.json()["records"] == []


def test_sealed_cursors_page_through_without_revealing_keys(node: Node) -> None:
    node.grant()
    seen: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 7}
        if after:
            params["after"] = after
        page = node.get(RECORDS, "education", **params).json()
        seen += [r["household_id"] + r["id_number"] for r in page["records"]]
        after = page["next_after"]
        if not after:
            break
        assert after.startswith("s.") and "P370" not in after
    total = node.get(RECORDS, "public_security", limit=10_000, filter=f"residence_county=={COUNTY}")
    assert len(seen) == len(total.json()["records"])
    forged = node.get(RECORDS, "education", after="s.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    assert forged.status_code == 400


def test_pseudonyms_join_within_a_grant_not_across(node: Node) -> None:
    first = node.grant(pseudonymise=True)
    second = node.grant(org="civil_affairs", pseudonymise=True)
    a = node.get(RECORDS, "education", limit=5, grant=first).json()["records"]
    b = node.get(RECORDS, "civil_affairs", limit=5, grant=second).json()["records"]
    assert all(len(r["id_number"]) == 16 and "*" not in r["id_number"] for r in a)
    again = node.get(RECORDS, "education", limit=5, grant=first).json()["records"]
    assert [r["id_number"] for r in a] == [r["id_number"] for r in again]
    assert not {r["id_number"] for r in a} & {r["id_number"] for r in b}
    # a grant of another organisation cannot be borrowed
    borrowed = node.get(RECORDS, "education", grant=second)
    assert borrowed.status_code == 403


def test_revoked_grant_is_refused(node: Node) -> None:
    grant = node.grant()
    assert node.get(RECORDS, "education", limit=1).status_code == 200
    revoked = node.post(f"/api/grants/{grant}/revoke", {"reason": "season over"}, "public_security")
    assert revoked.status_code == 200, revoked.text
    assert node.get(RECORDS, "education", limit=1).status_code == 403


def test_sql_jobs_see_only_what_the_grant_allows(node: Node) -> None:
    job = {"sql": "select residence_county, count(*) from public_security.residents group by 1"}
    assert node.post("/api/sql", job, "education").status_code == 403
    node.grant()
    rows = node.post("/api/sql", job, "education").json()["rows"]
    assert [r[0] for r in rows] == [COUNTY]
    masked = node.post(
        "/api/sql", {"sql": "select id_number from public_security.residents limit 3"}, "education"
    ).json()["rows"]
    assert all(r[0][6:14] == "********" for r in masked)
    hidden = node.post(
        "/api/sql", {"sql": "select sex from public_security.residents"}, "education"
    )
    assert hidden.status_code == 400  # the gated view has no such column
    unknown = node.post("/api/sql", {"sql": "select * from nowhere.t"}, "education")
    assert unknown.status_code == 400 and "not a table" in unknown.json()["title"]
    # the owner's own SQL is unrestricted; a job naming someone else's table is refused
    own = node.post("/api/sql", job, "public_security").json()["rows"]
    assert len(own) > 1
    other = node.post(
        "/api/sql", {"sql": "select count(*) from human_resources.social_insurance"}, "education"
    )
    assert other.status_code == 403


def test_citizens_read_only_their_own_rows(node: Node) -> None:
    own = node.get(RECORDS, "public_security", limit=50).json()["records"]
    person = next(r for r in own if r["phone"])
    mine = node.get(RECORDS, "citizens", "citizen", limit=50)
    assert mine.status_code == 403  # a citizen token without a phone claim
    headers = node.h("citizens", "citizen", phone=person["phone"], subject="citizen:x")
    page = node.client.get(RECORDS, headers=headers, params={"limit": 50}).json()["records"]
    assert page and all(r["phone"] == person["phone"] for r in page)
    assert node.client.get("/api/sql", headers=headers).status_code in (403, 405)


def test_auditors_read_the_log_not_the_data(node: Node) -> None:
    assert node.get(RECORDS, "bureau", "auditor").status_code == 403
    assert node.get("/api/audit", "bureau", "auditor").status_code == 200


def test_verification_answers_yes_or_no_under_a_grant(node: Node) -> None:
    resident = node.get(
        RECORDS, "public_security", limit=1, filter=f"hukou_county=={COUNTY}"
    ).json()["records"][0]
    ask = {"params": {"id_number": resident["id_number"], "county_code": COUNTY}}
    assert node.post("/api/verification/hukou_in_county", ask, "education").status_code == 403
    request = node.post(
        "/api/sharing/requests",
        {
            "kind": "verification",
            "dataset_id": RESIDENTS,
            "fields": ["id_number", "hukou_county"],
            "row_scope": {"residence_county": [COUNTY]},
            "purpose": "enrollment eligibility",
            "legal_basis": "Compulsory Education Law, art. 12",
            "duration_days": 30,
            "questions": ["hukou_in_county"],
        },
        "education",
    ).json()
    for org, role in (("public_security", "steward"), ("bureau", "bureau_admin")):
        node.post(f"/api/sharing/requests/{request['id']}/approve", {"reason": "ok"}, org, role)
    yes = node.post("/api/verification/hukou_in_county", ask, "education")
    assert yes.status_code == 200, yes.text
    assert yes.json()["answer"] is True and set(yes.json()) == {"question", "answer", "grant"}
    ask["params"]["county_code"] = "370103"
    assert (
        node.post("/api/verification/hukou_in_county", ask, "education").json()["answer"] is False
    )
    # a question the grant does not cover, unknown questions and bad parameters
    other = {"params": {"id_number": resident["id_number"], "address_id": "A1"}}
    assert node.post("/api/verification/hukou_at_address", other, "education").status_code == 403
    assert node.post("/api/verification/nothing", ask, "education").status_code == 404
    bad = node.post("/api/verification/hukou_in_county", {"params": {"x": "1"}}, "education")
    assert bad.status_code == 400
    asked = [r for r in _audit(node.data) if r["action"] == "verify"]
    assert [(r["result"], r["detail"].get("answer")) for r in asked] == [
        ("refused", None),
        ("allowed", True),
        ("allowed", False),
        ("refused", None),
    ]


@given(st.sampled_from(list(MaskKind)), st.text(max_size=30))
def test_python_and_sql_masks_agree(kind: MaskKind, value: str) -> None:
    import duckdb

    if kind is MaskKind.pseudonym:
        return
    with duckdb.connect() as con:
        sql = con.execute(f"select {mask_sql(kind, 'x')} from (select ?::varchar as x)", [value])
        assert sql.fetchone() == (mask_text(kind, value),)
