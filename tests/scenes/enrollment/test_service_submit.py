"""The parent's submission: grants, prefill, eligibility at once, and every bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import test_service_setup as setup
from sqlalchemy import func, select
from test_service_setup import CITY, Scene

from citybrain.core.errors import Conflict
from citybrain.governance.principal import Principal, Role
from citybrain.scenes.enrollment import service
from citybrain.scenes.enrollment.store import enrollment_applications, enrollment_notices
from citybrain.synth.idcard import check_digit

# the shared fixtures
synth_jinan, scene, opened = setup.synth_jinan, setup.scene, setup.opened

APPS = "/api/enrollment/applications"


def _audit(data: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (data / "audit" / "log.jsonl").read_text().splitlines()]


def _count(scene: Scene, table: Any = enrollment_applications) -> int:
    engine = scene.client.app.state.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_season_cannot_open_without_the_grants(scene: Scene) -> None:
    refused = scene.open_season()
    assert refused.status_code == 422
    title = refused.json()["title"]
    assert "hukou_at_address" in title and "records grant on public_security/residents" in title
    scene.grant_prefill()
    scene.grant_verification(skip="human_resources/social_insurance")
    still = scene.open_season()
    assert still.status_code == 422
    assert "social_insurance_months" in still.json()["title"]
    assert "hukou_at_address" not in still.json()["title"]
    scene.grant_verification()
    assert scene.open_season().status_code == 201
    assert scene.open_season().status_code == 409
    # parents and other departments do not run seasons
    other = scene.post("/api/enrollment/seasons", {"year": 2028}, scene.h("public_security"))
    assert other.status_code == 403


def test_parent_sees_children_prefilled_masked(opened: Scene) -> None:
    family = opened.families()[0]
    page = opened.get("/api/enrollment/household", opened.parent(family.phone))
    assert page.status_code == 200, page.text
    body = page.json()
    masked = {c["masked_id"] for c in body["children"]}
    assert family.child_id[:6] + "********" + family.child_id[-4:] in masked
    assert all("*" in c["masked_name"] or len(c["masked_name"]) <= 1 for c in body["children"])
    assert any(z["home"] for z in body["zones"])
    # the parent's own read and the bureau's read of the household are both in the audit log
    reads = [r for r in _audit(opened.data) if r["action"] == "read"]
    assert {"citizen", "grant"} <= {r["detail"].get("basis") for r in reads}
    # someone who is not in the register as a parent
    stranger = opened.get("/api/enrollment/household", opened.parent("13900000000"))
    assert stranger.status_code == 403


def test_submit_classifies_at_once_and_refuses_duplicates(opened: Scene) -> None:
    family = opened.families()[0]
    parent = opened.parent(family.phone)
    made = opened.post(APPS, {"child_id_number": family.child_id}, parent)
    assert made.status_code == 201, made.text
    app = made.json()
    assert app["level"] == "primary" and app["county_code"] == family.county
    assert set(app["checks"]) >= {"hukou_in_zone", "property_in_zone", "hukou_in_county"}
    assert app["reason"]
    assert (app["priority_class"] is None) == (app["status"] == "not_eligible")
    assert "*" in app["child_id_number"]
    verified = [
        r
        for r in _audit(opened.data)
        if r["action"] == "verify" and r["detail"].get("season") == f"{CITY}-2027"
    ]
    asked = [r for r in verified if "question" in r["detail"]]
    assert asked and all(r["result"] == "allowed" and r["grant"] for r in asked)
    assert all(r["rows"] == 0 for r in verified)  # yes/no only, no records
    # the application's own verification record: its questions, answers and grants
    mine = [r for r in verified if r["detail"].get("application") == app["id"]]
    assert mine and all(set(r["detail"]["answers"]) == set(r["detail"]["grants"]) for r in mine)
    again = opened.post(APPS, {"child_id_number": family.child_id}, parent)
    assert again.status_code == 409
    assert _count(opened) == 1 and _count(opened, enrollment_notices) == 1
    mine = opened.get(APPS, parent).json()
    assert [a["id"] for a in mine] == [app["id"]]
    other = opened.families()[1]
    assert opened.get(f"{APPS}/{app['id']}", opened.parent(other.phone)).status_code == 404
    assert opened.get(f"{APPS}/{app['id']}", opened.h("education", "operator")).status_code == 200


def test_bad_input_is_refused_and_leaves_nothing(opened: Scene) -> None:
    families = opened.families()
    family, other = families[0], families[1]
    parent = opened.parent(family.phone)
    # a valid ID number of a child of another household
    assert opened.post(APPS, {"child_id_number": other.child_id}, parent).status_code == 403
    # a wrong check digit
    wrong = family.child_id[:17] + ("0" if family.child_id[17] != "0" else "1")
    bad = opened.post(APPS, {"child_id_number": wrong}, parent)
    assert bad.status_code == 422 and "check digit" in bad.json()["title"]
    # the hidden digits of a real child changed: same mask, valid check digit, not registered
    body = family.child_id[:14] + "999"
    forged = body + check_digit(body)
    if forged != family.child_id:
        assert opened.post(APPS, {"child_id_number": forged}, parent).status_code == 403
    # shapes and unknown fields
    assert opened.post(APPS, {"child_id_number": "x" * 40}, parent).status_code == 400
    assert (
        opened.post(APPS, {"child_id_number": family.child_id, "x": 1}, parent).status_code == 400
    )
    assert (
        opened.post(
            APPS, {"child_id_number": family.child_id, "basis": "castle"}, parent
        ).status_code
        == 400
    )
    # the wrong grade, a school outside the zone, a property zone that does not exist
    assert (
        opened.post(
            APPS, {"child_id_number": family.child_id, "level": "junior"}, parent
        ).status_code
        == 422
    )
    assert (
        opened.post(
            APPS, {"child_id_number": family.child_id, "choices": ["S000000X000"]}, parent
        ).status_code
        == 422
    )
    assert (
        opened.post(
            APPS, {"child_id_number": family.child_id, "basis": "property", "zone_id": "Z1"}, parent
        ).status_code
        == 422
    )
    # no token, and staff tokens, do not submit
    assert opened.client.post(APPS, json={"child_id_number": family.child_id}).status_code == 401
    assert (
        opened.post(APPS, {"child_id_number": family.child_id}, opened.h("education")).status_code
        == 403
    )
    assert _count(opened) == 0 and _count(opened, enrollment_notices) == 0


def test_after_the_deadline_nothing_is_accepted(opened: Scene) -> None:
    family = opened.families()[0]
    engine = opened.client.app.state.engine  # type: ignore[attr-defined]
    principal = Principal(
        subject=f"citizen:{family.phone}",
        org="citizens",
        role=Role.citizen,
        issuer=CITY,
        phone=family.phone,
    )
    late = datetime(2027, 6, 21, tzinfo=UTC)
    with pytest.raises(Conflict, match="deadline"):
        service.submit(
            engine=engine,
            data_dir=opened.data,
            code=CITY,
            principal=principal,
            body=service.ApplicationIn(child_id_number=family.child_id),
            now=late,
        )
    early = datetime.now(UTC) - timedelta(days=1)
    with pytest.raises(Conflict, match="opens"):
        service.submit(
            engine=engine,
            data_dir=opened.data,
            code=CITY,
            principal=principal,
            body=service.ApplicationIn(child_id_number=family.child_id),
            now=early,
        )
    assert _count(opened) == 0
