"""County enrollment rules: defaults over the education tables, overrides, contradictions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from citybrain.cli import app as cli_app
from citybrain.cli import main
from citybrain.core.errors import NotFound, Unprocessable
from citybrain.scenes.enrollment.rules import (
    CountyRules,
    classify,
    default_rules_for,
    load_county_rules,
    priority_rank,
    read_education_tables,
    with_calendar,
)
from citybrain.synth.county import generate_county
from citybrain.synth.service import plan

COUNTY = "370112"  # 历城区: large enough for several schools and a multi-school zone


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The education tables of two Jinan counties, as `citybrain synth` writes them."""
    out = tmp_path_factory.mktemp("synth")
    folder = out / "370100" / "education"
    folder.mkdir(parents=True)
    schools, zones = [], []
    for item in plan(scale=0.01, seed=3, cities=["370100"]):
        if item.county.code in (COUNTY, "370102"):
            tables = generate_county(item, [])
            schools.append(tables[("education", "schools")])
            zones.append(tables[("education", "catchment_zones")])
    pq.write_table(pa.concat_tables(schools), folder / "schools.parquet")
    pq.write_table(pa.concat_tables(zones), folder / "catchment_zones.parquet")
    return out


@pytest.fixture(scope="module")
def tables(synth_dir: Path) -> tuple[pa.Table, pa.Table]:
    return read_education_tables(synth_dir, COUNTY)


@pytest.fixture(scope="module")
def rules(tables: tuple[pa.Table, pa.Table]) -> CountyRules:
    return default_rules_for(COUNTY, *tables)


def test_defaults_take_schools_and_zones_from_the_tables(
    rules: CountyRules, tables: tuple[pa.Table, pa.Table]
) -> None:
    schools, zones = tables
    mine = [r for r in schools.to_pylist() if r["county_code"] == COUNTY]
    assert {s.school_id for s in rules.schools} == {r["school_id"] for r in mine}
    by_id = {r["school_id"]: r for r in mine}
    assert all(s.capacity == by_id[s.school_id]["entry_capacity"] for s in rules.schools)
    kinds = {r["zone_id"]: r["kind"] for r in zones.to_pylist() if r["county_code"] == COUNTY}
    assert {z.zone_id: z.kind for z in rules.zones} == kinds
    assert [g.level.value for g in rules.grades] == ["primary", "junior"]
    assert [g.entry_age for g in rules.grades] == [6, 12]
    assert rules.calendar.open < rules.calendar.deadline < rules.calendar.draw
    assert rules.private_schools.same_time and rules.overflow.enabled


def test_a_county_file_in_the_package_changes_its_defaults(
    tables: tuple[pa.Table, pa.Table], rules: CountyRules
) -> None:
    lixia = default_rules_for("370102", *tables)
    assert lixia.social_insurance_min_months == 24 and len(lixia.priority_classes) == 5
    assert rules.social_insurance_min_months == 12 and len(rules.priority_classes) == 4
    assert lixia.sha256() != default_rules_for("370102").sha256()  # the tables count


def test_zone_of_a_community_and_the_school_lookup(rules: CountyRules) -> None:
    zone = rules.zones[0]
    assert rules.zone_of(zone.level, zone.community_codes[0]) == zone
    assert rules.school(zone.school_ids[0]).level == zone.level
    with pytest.raises(NotFound, match="in no primary zone"):
        rules.zone_of("primary", "370112999999")
    with pytest.raises(NotFound):
        rules.school("S-none")


def _write(tmp_path: Path, body: dict[str, Any]) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path


def test_a_file_overrides_one_school_and_the_calendar(
    tmp_path: Path, rules: CountyRules, tables: tuple[pa.Table, pa.Table]
) -> None:
    target = rules.zones[0].school_ids[0]
    path = _write(
        tmp_path,
        {
            "county": COUNTY,
            "calendar": {
                "open": "2027-05-20",
                "deadline": "2027-06-10",
                "draw": "2027-06-30",
                "publish": "2027-07-02",
            },
            "schools": [{"school_id": target, "capacity": 999}],
        },
    )
    loaded = load_county_rules(path, schools=tables[0], zones=tables[1])
    assert loaded.school(target).capacity == 999
    assert loaded.school(target).name == rules.school(target).name
    assert str(loaded.calendar.deadline) == "2027-06-10"
    assert len(loaded.schools) == len(rules.schools)
    assert loaded.sha256() != rules.sha256()


def _base(rules: CountyRules) -> dict[str, Any]:
    return rules.model_dump(mode="json")


def _zone(raw: dict[str, Any], kind: str = "single") -> dict[str, Any]:
    return next(z for z in raw["zones"] if (len(z["school_ids"]) > 1) == (kind == "multi"))


def _no_school(raw: dict[str, Any]) -> None:
    raw["zones"][0]["school_ids"] = []


def _capacity_zero(raw: dict[str, Any]) -> None:
    sid = raw["zones"][0]["school_ids"][0]
    next(s for s in raw["schools"] if s["school_id"] == sid)["capacity"] = 0


def _two_zones(raw: dict[str, Any]) -> None:
    zones = [z for z in raw["zones"] if z["level"] == "primary"]
    zones[1]["school_ids"].append(zones[0]["school_ids"][0])


def _unknown_criterion(raw: dict[str, Any]) -> None:
    raw["priority_classes"][1]["requires"].append("owns_a_yacht")


def _deadline_first(raw: dict[str, Any]) -> None:
    raw["calendar"]["deadline"] = "2027-05-01"


def _community_twice(raw: dict[str, Any]) -> None:
    zones = [z for z in raw["zones"] if z["level"] == "primary"]
    zones[1]["community_codes"].append(zones[0]["community_codes"][0])


def _unknown_school(raw: dict[str, Any]) -> None:
    raw["zones"][0]["school_ids"].append("S-nowhere")


def _level_mismatch(raw: dict[str, Any]) -> None:
    junior = next(z for z in raw["zones"] if z["level"] == "junior")
    primary = next(z for z in raw["zones"] if z["level"] == "primary")
    primary["school_ids"].append(junior["school_ids"][0])


def _private_in_zone(raw: dict[str, Any]) -> None:
    raw["schools"].append(
        {
            "school_id": "S-private",
            "name": "实验小学",
            "level": "primary",
            "ownership": "private",
            "capacity": 90,
            "lon": 117.0,
            "lat": 36.6,
        }
    )
    raw["zones"][0]["school_ids"].append("S-private")


def _negative_capacity(raw: dict[str, Any]) -> None:
    raw["schools"][0]["capacity"] = -5


def _extra_key(raw: dict[str, Any]) -> None:
    raw["lottery_by_height"] = True


def _duplicate_class(raw: dict[str, Any]) -> None:
    raw["priority_classes"].append(dict(raw["priority_classes"][0]))


def _no_classes(raw: dict[str, Any]) -> None:
    raw["priority_classes"] = []


def _not_a_county(raw: dict[str, Any]) -> None:
    raw["county"] = "999999"


def _a_city(raw: dict[str, Any]) -> None:
    raw["county"] = "370100"


def _private_selects(raw: dict[str, Any]) -> None:
    raw["private_schools"] = {"same_time": False, "lottery_when_oversubscribed": False}


@pytest.mark.parametrize(
    ("spoil", "field", "reason"),
    [
        (_no_school, "zones.0.school_ids", "has no school"),
        (_capacity_zero, "zones.0.school_ids", "has capacity 0 but serves zone"),
        (_two_zones, "zones.", "is in two primary zones"),
        (_unknown_criterion, "priority_classes.1.requires", "unknown criterion 'owns_a_yacht'"),
        (_deadline_first, "calendar.deadline", "is before open"),
        (_community_twice, "zones.", "community"),
        (_unknown_school, "zones.0.school_ids", "unknown school S-nowhere"),
        (_level_mismatch, "zones.", "is a junior school in a primary zone"),
        (_private_in_zone, "zones.0.school_ids", "private schools enroll county-wide"),
        (_negative_capacity, "schools.0.capacity", "greater than or equal to 0"),
        (_extra_key, "lottery_by_height", "Extra inputs are not permitted"),
        (_duplicate_class, "priority_classes.", "twice"),
        (_no_classes, "priority_classes", "at least 1"),
        (_not_a_county, "county", "999999 is not a county of Shandong"),
        (_a_city, "county", "370100 is a city, not a county"),
        (_private_selects, "private_schools.same_time", "公民同招"),
        (_private_selects, "private_schools.lottery_when_oversubscribed", "admits by lottery"),
    ],
)
def test_contradictions_are_reported_with_field_and_reason(
    tmp_path: Path, rules: CountyRules, spoil: Any, field: str, reason: str
) -> None:
    raw = _base(rules)
    spoil(raw)
    with pytest.raises(Unprocessable) as caught:
        load_county_rules(_write(tmp_path, raw))
    problems = caught.value.detail["problems"]
    assert isinstance(problems, list)
    assert any(p["field"].startswith(field) and reason in p["reason"] for p in problems), problems
    assert reason in caught.value.message
    assert caught.value.status == 422


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("county: [unclosed", "not valid YAML at line"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("year: 2027\n", "county must be given"),
        ("county: 370112\n", "county must be given"),  # a number, not a code in quotes
    ],
)
def test_unreadable_files_are_refused(text: str, expected: str) -> None:
    with pytest.raises(Unprocessable, match=expected):
        load_county_rules(text)


def test_a_missing_file_or_folder_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        load_county_rules(tmp_path / "absent.yaml")
    with pytest.raises(NotFound, match="run `citybrain synth` first"):
        read_education_tables(tmp_path, COUNTY)


def test_classes_follow_the_order_of_the_rules(
    rules: CountyRules, tables: tuple[pa.Table, pa.Table]
) -> None:
    both = {"hukou_in_zone": True, "property_in_zone": True, "lives_in_zone": True}
    assert classify(rules, both) == 0
    assert classify(rules, {"hukou_in_zone": True, "lives_in_zone": True}) == 1
    assert classify(rules, {"property_in_zone": True}) == 2
    migrant = {"lives_in_zone": True, "residence_permit": True, "social_insurance": 12}
    assert classify(rules, migrant) == 3
    assert classify(rules, {**migrant, "social_insurance": 11}) is None
    assert classify(rules, {**migrant, "social_insurance": True}) == 3
    lixia = default_rules_for("370102", *tables)
    assert classify(lixia, {**migrant, "social_insurance": 12}) is None  # 24 months there
    assert classify(lixia, {**migrant, "social_insurance": 24}) == 3
    assert classify(lixia, {"hukou_in_county": True}) == 4


def test_sibling_priority_goes_first_inside_the_class(rules: CountyRules) -> None:
    assert priority_rank(rules, 0, True) < priority_rank(rules, 0, False)
    assert priority_rank(rules, 0, False) < priority_rank(rules, 1, True)
    off = CountyRules.model_validate({**_base(rules), "sibling_priority": {"enabled": False}})
    assert priority_rank(off, 1, True) == priority_rank(off, 1, False) == 1


def test_another_calendar_is_checked(rules: CountyRules) -> None:
    ok = {
        "open": "2027-06-02",
        "deadline": "2027-06-21",
        "draw": "2027-07-01",
        "publish": "2027-07-03",
    }
    assert str(with_calendar(rules, ok).calendar.open) == "2027-06-02"
    with pytest.raises(Unprocessable, match="draw 2027-06-01 is before deadline"):
        with_calendar(rules, {**ok, "draw": "2027-06-01"})


def test_cli_check_and_show(tmp_path: Path, synth_dir: Path, rules: CountyRules) -> None:
    shown = CliRunner().invoke(
        cli_app, ["enrollment", "rules", "show", "--county", COUNTY, "--synth", str(synth_dir)]
    )
    assert shown.exit_code == 0, shown.output
    path = tmp_path / "county.yaml"
    path.write_text(shown.output, encoding="utf-8")
    checked = CliRunner().invoke(cli_app, ["enrollment", "rules", "check", str(path)])
    assert checked.exit_code == 0, checked.output
    assert f"ok: county {COUNTY}" in checked.output and rules.sha256() in checked.output


def test_cli_check_of_contradictory_rules_exits_2_with_the_reasons(
    tmp_path: Path, rules: CountyRules, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    raw = _base(rules)
    _no_school(raw)
    _deadline_first(raw)
    path = _write(tmp_path, raw)
    monkeypatch.setattr(sys, "argv", ["citybrain", "enrollment", "rules", "check", str(path)])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "2 problem(s)" in err and "has no school" in err
    assert "deadline 2027-05-01 is before open" in err
