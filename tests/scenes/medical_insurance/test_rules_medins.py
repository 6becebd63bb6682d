"""The rule base: loading, refusals by line and field, and each rule's check before payment."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from citybrain.cli import app
from citybrain.core.errors import BadInput
from citybrain.scenes.medical_insurance.models import Item, Outcome, Settlement
from citybrain.scenes.medical_insurance.rules import (
    DEFAULT_RULEBASE,
    KINDS,
    SINGLE,
    Catalogue,
    CatalogueEntry,
    RuleBase,
    check_settlement,
    load_rulebase,
    parse_rulebase,
    shandong_cities,
)

T0 = datetime(2026, 3, 2, 9, 0)
CAT = Catalogue(
    entries={
        "FW00001": CatalogueEntry("FW00001", "service", 6.0),
        "FW00002": CatalogueEntry("FW00002", "service", 35.0),
        "FW00003": CatalogueEntry("FW00003", "service", 20.0),
        "FW00008": CatalogueEntry("FW00008", "service", 45.0, gender="男"),
        "FW00015": CatalogueEntry("FW00015", "service", 1200.0),
        "HC0001": CatalogueEntry("HC0001", "consumable", 80.0),
        "XD00010": CatalogueEntry("XD00010", "drug", 1.8, max_quantity=28),
        "XD00230": CatalogueEntry("XD00230", "drug", 0.9, max_age=12, max_quantity=28),
        "XD00090": CatalogueEntry("XD00090", "drug", 48.0, max_quantity=42),
    },
    bundles={"FW00015": frozenset({"HC0001"})},
    city_xy=shandong_cities(),
)


@pytest.fixture(scope="module")
def rb() -> RuleBase:
    return load_rulebase(catalogue=CAT)


def item(code: str, qty: float = 1, price: float | None = None, day: date | None = None) -> Item:
    entry = CAT.entries[code]
    p = entry.standard_price * 0.9 if price is None else price
    return Item(
        code=code,
        kind=entry.kind,
        quantity=qty,
        unit_price=p,
        amount=round(p * qty, 2),
        service_date=day or T0.date(),
    )


def settlement(sid: str, *items: Item, **over: Any) -> Settlement:
    start = over.pop("start", T0)
    kind = over.pop("kind", "outpatient")
    end = over.pop("end", start + timedelta(minutes=30))
    if kind != "inpatient":  # a visit's items are dated on the day of the visit
        items = tuple(i.model_copy(update={"service_date": start.date()}) for i in items)
    base: dict[str, Any] = {
        "settlement_id": sid,
        "person_id": "P1",
        "institution_id": "M370102C00000",
        "institution_kind": "clinic",
        "institution_grade": "未定级",
        "city_code": "370100",
        "county_code": "370102",
        "kind": kind,
        "diagnosis": "J06.9",
        "sex": "女",
        "age": 40,
        "start": start,
        "end": end,
        "settled_at": end,
        "total": round(sum(i.amount for i in items), 2),
        "fund_paid": 0.0,
        "items": items,
    }
    base.update(over)
    return Settlement(**base)


def ids(verdict: Any) -> set[tuple[str, str]]:
    return {(f.rule_id.split("_", 1)[1], f.item_code) for f in verdict.findings}


def test_shipped_rule_base_covers_every_kind(rb: RuleBase) -> None:
    assert rb.version >= 1 and rb.history_days == 30
    assert {r.kind for r in rb.rules} == set(KINDS) == set(SINGLE)
    assert all(r.version >= 1 and r.fields for r in rb.rules)


def test_clean_settlement_passes(rb: RuleBase) -> None:
    v = check_settlement(rb, settlement("S1", item("FW00001"), item("XD00010", 14)), [])
    assert v.outcome == Outcome.pass_ and v.findings == []


def test_duplicate_in_one_and_across_settlements(rb: RuleBase) -> None:
    v = check_settlement(rb, settlement("S1", item("FW00001"), item("FW00001")), [])
    assert ids(v) == {("duplicate_charge", "FW00001")} and v.outcome == Outcome.block
    first = settlement("S1", item("FW00001"))
    again = settlement("S2", item("FW00001"), start=T0 + timedelta(hours=1))
    assert ids(check_settlement(rb, again, [first])) == {("duplicate_charge", "FW00001")}
    elsewhere = settlement(
        "S2", item("FW00001"), start=T0 + timedelta(hours=1), institution_id="M370102C00001"
    )
    assert ("duplicate_charge", "FW00001") not in ids(check_settlement(rb, elsewhere, [first]))


def test_price_bundle_sex_and_age(rb: RuleBase) -> None:
    over = settlement("S1", item("XD00010", 10, price=1.8 * 1.3))
    assert ids(check_settlement(rb, over, [])) == {("over_price", "XD00010")}
    at_tolerance = settlement("S1", item("XD00010", 10, price=1.8 * 1.05))
    assert check_settlement(rb, at_tolerance, []).findings == []
    bundle = settlement(
        "S1", item("FW00015"), item("HC0001"), kind="inpatient", end=T0 + timedelta(days=2)
    )
    assert ("unbundled_charge", "HC0001") in ids(check_settlement(rb, bundle, []))
    assert ids(check_settlement(rb, settlement("S1", item("FW00008")), [])) == {
        ("restricted_item", "FW00008")
    }
    man = settlement("S1", item("FW00008"), sex="男")
    assert check_settlement(rb, man, []).findings == []
    adult = settlement("S1", item("XD00230", 5))
    assert ids(check_settlement(rb, adult, [])) == {("restricted_item", "XD00230")}
    child = settlement("S1", item("XD00230", 5), age=8)
    assert check_settlement(rb, child, []).findings == []


def test_quantity_and_repeats(rb: RuleBase) -> None:
    big = settlement("S1", item("XD00010", 20), item("XD00010", 20, day=T0.date()))
    found = ids(check_settlement(rb, big, []))
    assert ("over_quantity", "XD00010") in found  # 40 over two lines against a limit of 28
    first = settlement("S1", item("XD00010", 10))
    soon = settlement(
        "S2",
        item("XD00010", 10),
        start=T0 + timedelta(days=5),
        institution_id="M370102D00000",
        institution_kind="pharmacy",
        kind="pharmacy",
    )
    assert ids(check_settlement(rb, soon, [first])) == {("repeated_dispensing", "XD00010")}
    later = settlement(
        "S2",
        item("XD00010", 10),
        start=T0 + timedelta(days=9),
        kind="pharmacy",
        institution_kind="pharmacy",
    )
    assert check_settlement(rb, later, [first]).findings == []


def inpatient(
    sid: str, start: datetime, days: int, *, care_days: int | None = None, **over: Any
) -> Settlement:
    lines = []
    for d in range(days):
        day = (start + timedelta(days=d)).date()
        lines += [item("FW00002", day=day), item("FW00003", day=day)]
        if care_days is None or d < care_days:
            lines.append(item("XD00010", 2, day=day))
    return settlement(
        sid,
        *lines,
        kind="inpatient",
        start=start,
        end=start + timedelta(days=days, hours=1),
        institution_id="M370102H20000",
        institution_kind="hospital",
        institution_grade="二级",
        **over,
    )


def test_split_admission_and_bed_hanging(rb: RuleBase) -> None:
    first = inpatient("S1", T0, 4)
    back = inpatient("S2", T0 + timedelta(days=6), 3)
    assert ids(check_settlement(rb, back, [first])) == {("split_admission", "")}
    other_dx = inpatient("S2", T0 + timedelta(days=6), 3, diagnosis="K35.8")
    assert check_settlement(rb, other_dx, [first]).findings == []
    late = inpatient("S2", T0 + timedelta(days=22), 3)
    assert check_settlement(rb, late, [first]).findings == []
    hung = inpatient("S1", T0, 6, care_days=3)
    assert ids(check_settlement(rb, hung, [])) == {("bed_hanging", "")}
    one_empty = inpatient("S1", T0, 6, care_days=5)
    assert check_settlement(rb, one_empty, []).findings == []


def test_time_conflict_lending_and_cash_out(rb: RuleBase) -> None:
    visit = settlement("S1", item("FW00001"))
    ghost = inpatient("S2", T0 - timedelta(days=1), 3)
    assert ids(check_settlement(rb, ghost, [visit])) == {("time_conflict", "")}
    qingdao = settlement(
        "S2",
        item("FW00001"),
        start=T0 + timedelta(hours=1),
        city_code="370200",
        county_code="370202",
        institution_id="M370202C00000",
    )
    assert ids(check_settlement(rb, qingdao, [visit])) == {("voucher_lending", "")}
    next_day = settlement(
        "S2",
        item("FW00001"),
        start=T0 + timedelta(days=1),
        city_code="370200",
        county_code="370202",
        institution_id="M370202C00000",
    )
    assert check_settlement(rb, next_day, [visit]).findings == []
    buys = [
        settlement(
            f"S{k}",
            item("XD00090", 12),
            start=T0 + timedelta(days=8 * k),
            kind="pharmacy",
            institution_kind="pharmacy",
            institution_id=f"M370102D0000{k}",
        )
        for k in range(4)
    ]
    assert check_settlement(rb, buys[2], buys[:2]).findings == []
    assert ids(check_settlement(rb, buys[3], buys[:3])) == {("cash_out", "")}


def test_history_of_others_and_later_is_ignored(rb: RuleBase) -> None:
    first = settlement("S1", item("FW00001"))
    other = settlement("S0", item("FW00001"), person_id="P2")
    later = settlement("S9", item("FW00001"), start=T0 + timedelta(hours=2))
    assert check_settlement(rb, first, [other, later]).findings == []


RULE = """name: t
version: 2
rules:
  - id: R1
    version: 1
    kind: over_price
    grade: warn
    params: {tolerance: 0.1}
    fields: [items.code, items.unit_price, catalogue.standard_price]
"""


def test_parse_and_refusals() -> None:
    rb = parse_rulebase(RULE, CAT)
    assert rb.rules[0].params == {"tolerance": 0.1} and rb.version == 2
    cases = {
        RULE.replace("items.unit_price", "items.price"): ("line 9", "unknown field 'items.price'"),
        RULE.replace("kind: over_price", "kind: over_pricing"): ("line 6", "unknown kind"),
        RULE.replace("tolerance", "tolerence"): ("line 8", "unknown parameter 'tolerence'"),
        RULE.replace("0.1}", "'high'}"): ("line 8", "must be float"),
        RULE.replace("grade: warn", "grade: stop"): ("line 7", "grade must be warn or block"),
        RULE.replace(", items.unit_price", ""): ("line 9", "reads items.unit_price"),
        RULE.replace("    fields", "    colour: red\n    fields"): ("line 9", "unknown key"),
        RULE + RULE[RULE.index("  - id") :]: ("line 10", "appears twice"),
        RULE.replace("{tolerance: 0.1}", "{tolerance: 0.1"): ("line 9", "not valid YAML"),
        "just text": ("", "expected a mapping"),
        RULE.replace("version: 2", "version: zero"): ("line 2", "positive integer"),
    }
    for text, (line, words) in cases.items():
        with pytest.raises(BadInput) as err:
            parse_rulebase(text, CAT)
        assert line in err.value.message and words in err.value.message, err.value.message


def test_cli_rules_check(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["medins", "rules", "check", str(DEFAULT_RULEBASE)])
    assert ok.exit_code == 0 and "11 rules" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(RULE.replace("items.unit_price", "items.price"), encoding="utf-8")
    refused = runner.invoke(app, ["medins", "rules", "check", str(bad)])
    assert refused.exit_code != 0
    assert "unknown field 'items.price'" in (refused.output + str(refused.exception))
    missing = runner.invoke(app, ["medins", "rules", "check", str(tmp_path / "none.yaml")])
    assert missing.exit_code != 0
    listed = runner.invoke(app, ["medins", "rules", "list"])
    assert listed.exit_code == 0 and "MI11_cash_out" in listed.output
