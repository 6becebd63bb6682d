"""Set-wise eligibility answers agree with the verification service, under the same grants."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
import test_service_setup as setup
from test_service_setup import CITY, Scene

from citybrain.core.errors import Forbidden, Unprocessable
from citybrain.governance.principal import Principal, Role
from citybrain.governance.verification import service as verification
from citybrain.scenes.enrollment import eligibility
from citybrain.scenes.enrollment.household import education
from citybrain.scenes.enrollment.models import Level
from citybrain.scenes.enrollment.plan import entry_level

synth_jinan, scene = setup.synth_jinan, setup.scene

CRITERIA = ["hukou_in_zone", "hukou_in_county", "property_in_zone", "residence_permit"]
CRITERIA += ["social_insurance", "lives_in_zone"]
TERMS = eligibility.Terms(on_date=date(2027, 8, 31), insurance_months=12)


def _zones(data: Path) -> dict[str, list[str]]:
    zones = data / "education" / "catchment_zones.parquet"
    return {
        z: list(cs)
        for z, cs in duckdb.sql(f"select zone_id, community_codes from '{zones}'").fetchall()
    }


def _facts(data: Path, n: int) -> list[eligibility.Facts]:
    """Children with their parents, half at their own address, half at a neighbour's."""
    residents = data / "public_security" / "residents.parquet"
    zones = data / "education" / "catchment_zones.parquet"
    rows = duckdb.sql(
        f"""
        select c.id_number, p.id_number, c.hukou_county, c.address_id, p.community_code,
               z.community_codes, z.zone_id
        from '{residents}' c join '{residents}' p using (household_id)
        join '{zones}' z on list_contains(z.community_codes, p.community_code)
        where c.relation_to_head = '子女' and p.relation_to_head = '户主' and z.level = 'primary'
        order by c.id_number limit {n}
        """
    ).fetchall()
    out = []
    for i, (child, parent, county, address, community, communities, zone) in enumerate(rows):
        out.append(
            eligibility.Facts(
                application=f"a{i}",
                child_id=child,
                parent_id=parent,
                county=county if i % 3 else "370102",
                address_id=address if i % 2 else rows[(i + 1) % len(rows)][3],
                zone_id=zone,
                lives_in_zone=community in communities,
            )
        )
    return out


def _ask(scene: Scene, question: str, params: dict[str, str]) -> bool:
    engine = scene.client.app.state.engine  # type: ignore[attr-defined]
    return verification.answer(
        engine=engine,
        data_dir=scene.data,
        principal=education(CITY),
        question=question,
        params=params,
    ).answer


def _audit(data: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (data / "audit" / "log.jsonl").read_text().splitlines()]


def test_setwise_answers_equal_the_verification_service(scene: Scene) -> None:
    scene.grant_verification()
    facts = _facts(scene.data, 20)
    zones = _zones(scene.data)
    assert len(facts) >= 15
    engine = scene.client.app.state.engine  # type: ignore[attr-defined]
    answers = eligibility.verify(
        engine=engine,
        data_dir=scene.data,
        principal=education(CITY),
        facts=facts,
        zones=zones,
        criteria=CRITERIA,
        terms=TERMS,
        season="test",
    )
    for i, f in enumerate(facts):
        expected = {
            "hukou_in_zone": f.address_id is not None
            and _ask(
                scene, "hukou_at_address", {"id_number": f.child_id, "address_id": f.address_id}
            ),
            "hukou_in_county": _ask(
                scene, "hukou_in_county", {"id_number": f.child_id, "county_code": f.county}
            ),
            "property_in_zone": _ask(
                scene,
                "owns_property_in_communities",
                {"id_number": f.parent_id, "community_codes": ",".join(zones[f.zone_id])},
            ),
            "residence_permit": _ask(
                scene, "residence_permit_valid", {"id_number": f.parent_id, "on_date": "2027-08-31"}
            ),
            "social_insurance": _ask(
                scene, "social_insurance_months", {"id_number": f.parent_id, "months": "12"}
            ),
            "lives_in_zone": f.lives_in_zone,
        }
        got = {c: bool(answers[c][i]) for c in CRITERIA}
        assert got == expected, (i, f)
    # the instance is not trivial: each criterion has yes and no answers somewhere
    for criterion in ("hukou_in_zone", "hukou_in_county", "property_in_zone"):
        assert 0 < int(np.sum(answers[criterion])) < len(facts), criterion
    # the set-wise statement (a batch's path) gives the same answers as the lookups by key
    setwise = eligibility.verify(
        engine=engine,
        data_dir=scene.data,
        principal=education(CITY),
        facts=facts,
        zones=zones,
        criteria=CRITERIA,
        terms=TERMS,
        season="test-setwise",
        by_key=False,
    )
    assert {c: setwise[c].tolist() for c in CRITERIA} == {c: answers[c].tolist() for c in CRITERIA}
    # one audit record per question asked, naming the grant and how many answers were yes
    records = [r for r in _audit(scene.data) if r["detail"].get("season") == "test"]
    batch = [r for r in records if "question" in r["detail"]]
    assert {r["detail"]["question"] for r in batch} == {
        "hukou_at_address",
        "hukou_in_county",
        "owns_property_in_communities",
        "residence_permit_valid",
        "social_insurance_months",
    }
    assert all(r["grant"] and r["rows"] == 0 and r["detail"]["asked"] == len(facts) for r in batch)
    # and one per application: the questions asked, the answers, the grant of each question
    grants = {r["detail"]["question"]: r["grant"] for r in batch}
    per_app = [r for r in records if "application" in r["detail"]]
    assert [r["detail"]["application"] for r in per_app] == [f.application for f in facts]
    question_of = {c: eligibility.CRITERIA[c].question for c in CRITERIA}
    for i, r in enumerate(per_app):
        assert r["action"] == "verify" and r["result"] == "allowed" and r["rows"] == 0
        assert r["detail"]["grants"] == grants
        assert r["detail"]["answers"] == {
            q: bool(answers[c][i]) for c, q in question_of.items() if q is not None
        }


def test_no_grant_no_answers(scene: Scene) -> None:
    scene.grant_verification(skip="natural_resources/property_registry")
    engine = scene.client.app.state.engine  # type: ignore[attr-defined]
    facts = _facts(scene.data, 3)
    with pytest.raises(Forbidden, match="no active verification grant"):
        eligibility.verify(
            engine=engine,
            data_dir=scene.data,
            principal=education(CITY),
            facts=facts,
            zones=_zones(scene.data),
            criteria=["property_in_zone"],
            terms=TERMS,
            season="test",
        )
    last = _audit(scene.data)[-1]
    assert (last["action"], last["result"]) == ("verify", "refused")
    # a grant of the Education Bureau is not a grant of civil affairs
    with pytest.raises(Forbidden):
        eligibility.verify(
            engine=engine,
            data_dir=scene.data,
            principal=Principal(subject="x", org="civil_affairs", role=Role.service, issuer=CITY),
            facts=facts,
            zones={},
            criteria=["hukou_in_county"],
            terms=TERMS,
            season="test",
        )
    with pytest.raises(Unprocessable, match="unknown eligibility criteria"):
        eligibility.questions_for(["moon_landing"])


def test_classes_in_order_and_reasons() -> None:
    classes = [("一", ["hukou_in_zone", "property_in_zone"]), ("二", ["hukou_in_zone"])]
    both = eligibility.classify({"hukou_in_zone": True, "property_in_zone": True}, classes)
    assert both.priority_class == 0 and "学区" in both.reason
    one = eligibility.classify({"hukou_in_zone": True, "property_in_zone": False}, classes)
    assert one.priority_class == 1
    none = eligibility.classify({"hukou_in_zone": False, "property_in_zone": False}, classes)
    assert none.priority_class is None and none.failed == ["hukou_in_zone"]
    assert "申诉" in none.reason


def test_entry_grades_from_the_birth_date() -> None:
    ages = {Level.primary: 6, Level.junior: 12}
    assert entry_level(date(2020, 9, 1), 2027, ages) is Level.primary
    assert entry_level(date(2021, 8, 31), 2027, ages) is Level.primary
    assert entry_level(date(2021, 9, 1), 2027, ages) is None
    assert entry_level(date(2014, 12, 1), 2027, ages) is Level.junior
    assert entry_level(date(2010, 1, 1), 2027, ages) is None


def test_revoked_grant_stops_the_next_call_at_once(scene: Scene) -> None:
    from citybrain.governance.sharing import service as sharing

    scene.grant_verification()
    engine = scene.client.app.state.engine  # type: ignore[attr-defined]
    facts = _facts(scene.data, 3)

    def ask() -> dict[str, Any]:
        return eligibility.verify(
            engine=engine,
            data_dir=scene.data,
            principal=education(CITY),
            facts=facts,
            zones=_zones(scene.data),
            criteria=["social_insurance", "hukou_in_county"],
            terms=TERMS,
            season="test",
        )

    assert set(ask()) == {"social_insurance", "hukou_in_county"}
    held = sharing.active_grant(
        engine=engine,
        dataset_id="human_resources/social_insurance",
        org="education",
        kind="verification",
    )
    assert held is not None
    owner = Principal(subject="u", org="human_resources", role=Role.steward, issuer=CITY)
    sharing.revoke_grant(
        engine=engine, data_dir=scene.data, principal=owner, grant_id=str(held.id), reason="r"
    )
    with pytest.raises(Forbidden, match="no active verification grant"):
        ask()
    last = _audit(scene.data)[-1]
    assert (last["action"], last["result"]) == ("verify", "refused")
    assert last["detail"]["question"] == "social_insurance_months"
