"""Lookups by key behind the gate show exactly what the gate's SQL shows, with the same evidence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import test_service_setup as setup
from test_service_setup import CITY, Scene

from citybrain.core.errors import Forbidden
from citybrain.governance.principal import Principal, Role
from citybrain.scenes.enrollment import household, sources

synth_jinan, scene, opened = setup.synth_jinan, setup.scene, setup.opened
RESIDENTS = household.RESIDENTS


def _audit(data: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (data / "audit" / "log.jsonl").read_text().splitlines()]


def _key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, default=str)


def test_lookup_equals_the_gated_sql(opened: Scene) -> None:
    engine = opened.client.app.state.engine  # type: ignore[attr-defined]
    checked = 0
    for family in opened.families()[:8]:
        citizen = Principal(
            subject=f"citizen:{family.phone}",
            org="citizens",
            role=Role.citizen,
            issuer=CITY,
            phone=family.phone,
        )
        common = {"engine": engine, "data_dir": opened.data, "dataset": RESIDENTS}
        own_sql = sources.gated_rows(
            **common, principal=citizen, where="true", params=[], purpose="t"
        )
        own = sources.gated_lookup(
            **common, principal=citizen, key=None, value=None, match={}, purpose="t"
        )
        assert own_sql and sorted(map(_key, own)) == sorted(map(_key, own_sql))
        household_id = own[0]["household_id"]
        bureau = household.education(CITY)
        fields = list(household.PREFILL_FIELDS)
        children_sql = sources.gated_rows(
            **common,
            principal=bureau,
            where="household_id = ? and relation_to_head = ?",
            params=[household_id, "子女"],
            purpose="t",
            fields=fields,
        )
        children = sources.gated_lookup(
            **common,
            principal=bureau,
            key="household_id",
            value=household_id,
            match={"household_id": household_id, "relation_to_head": "子女"},
            purpose="t",
            fields=fields,
        )
        # masked as the catalog says (ID number 6+4, name keeps the surname), the same rows
        assert children_sql and sorted(map(_key, children)) == sorted(map(_key, children_sql))
        assert all("*" in c["id_number"] for c in children)
        assert set(children[0]) == set(children_sql[0])
        checked += 1
    assert checked == 8
    reads = [
        r for r in _audit(opened.data) if r["action"] == "read" and r["detail"]["purpose"] == "t"
    ]
    # every lookup left the same evidence as its SQL twin
    sql_reads = reads[0::2]
    lookup_reads = reads[1::2]
    assert len(sql_reads) == len(lookup_reads) == 16
    for a, b in zip(sql_reads, lookup_reads, strict=True):
        assert (a["actor"], a["grant"], a["rows"], a["detail"]["basis"]) == (
            b["actor"],
            b["grant"],
            b["rows"],
            b["detail"]["basis"],
        )


def test_lookup_outside_the_grant_is_refused(opened: Scene) -> None:
    engine = opened.client.app.state.engine  # type: ignore[attr-defined]
    with pytest.raises(Forbidden):
        sources.gated_lookup(
            engine=engine,
            data_dir=opened.data,
            principal=household.education(CITY),
            dataset=RESIDENTS,
            key="household_id",
            value="x",
            match={},
            purpose="t",
            fields=["phone"],
        )
    last = _audit(opened.data)[-1]
    assert (last["action"], last["result"]) == ("read", "refused")
    # a lookup by subject needs a citizen's decision
    with pytest.raises(ValueError, match="subject"):
        sources.gated_lookup(
            engine=engine,
            data_dir=opened.data,
            principal=household.education(CITY),
            dataset=RESIDENTS,
            key=None,
            value=None,
            match={},
            purpose="t",
        )
