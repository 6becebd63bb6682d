"""County enrollment rules in YAML: grades, calendar, zones, capacities, priority classes, checks.

A county's rules are the province's default policy (rules/default.yaml, package data), the
county's own file when it has one (rules/<code>.yaml), and the schools and catchment zones of
the Education Bureau's tables (education/schools and education/catchment_zones). A rules file
a user writes overrides all of these: top-level keys replace the default, `schools` and
`zones` entries merge by id (a file can change one school's capacity and nothing else).

Every problem is reported as an Unprocessable error whose detail lists each field and the
reason, including contradictions between the parts: a zone with no school, a public school
with no seats that serves a zone, a school in two zones of one level, a class that requires an
unknown criterion, a deadline before the opening day, ...
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from datetime import date
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from citybrain.core.errors import CityBrainError, NotFound, Unprocessable
from citybrain.geo import service as geo
from citybrain.geo.models import Level as GeoLevel
from citybrain.scenes.enrollment.models import Level

# What the verification service can answer about a child's family (yes/no), with its meaning.
CRITERIA: dict[str, str] = {
    "hukou_in_zone": "the child's household registration is at an address in the zone",
    "hukou_in_county": "the child's household registration is in the county",
    "property_in_zone": "a parent owns the home at the address basis, in the zone",
    "lives_in_zone": "the family lives at the address basis, in the zone",
    "residence_permit": "a parent holds a valid residence permit of the county",
    "social_insurance": "a parent has paid social insurance for the required months",
}


class Ownership(StrEnum):
    """Who runs a school."""

    public = "public"
    private = "private"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Calendar(_Strict):
    """The season: applications open, the deadline, the draw and the publication of results."""

    open: date
    deadline: date
    draw: date
    publish: date


class Grade(_Strict):
    """An entry grade and the age a child reaches by 31 August of the season's year."""

    level: Level
    entry_age: int = Field(ge=3, le=16)


class PriorityClass(_Strict):
    """One priority class: a child is in the first class whose criteria all hold."""

    name: str = Field(min_length=1)
    requires: list[str] = Field(min_length=1)


class SiblingRule(_Strict):
    """Sibling priority: a child whose sibling attends a school goes first in its class there."""

    enabled: bool = True


class PrivateRule(_Strict):
    """公民同招: private schools enroll at the same time; a lottery when oversubscribed."""

    same_time: bool = True
    lottery_when_oversubscribed: bool = True


class OverflowRule(_Strict):
    """统筹: children placed nowhere go to the nearest public school with seats left."""

    enabled: bool = True


class School(_Strict):
    """A school's entry grade as the allocation sees it."""

    school_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    level: Level
    ownership: Ownership
    capacity: int = Field(ge=0)
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)


class Zone(_Strict):
    """A catchment zone: the communities it serves and its school(s)."""

    zone_id: str = Field(min_length=1)
    level: Level
    school_ids: list[str]
    community_codes: list[str]

    @property
    def kind(self) -> str:
        """single or multi (several schools: parents rank them)."""
        return "multi" if len(self.school_ids) > 1 else "single"


class CountyRules(_Strict):
    """Everything a county decides for one season."""

    county: str = Field(pattern=r"^\d{6}$")
    year: int = Field(ge=2000, le=2100)
    calendar: Calendar
    grades: list[Grade] = Field(min_length=1)
    social_insurance_min_months: int = Field(default=12, ge=0, le=600)
    priority_classes: list[PriorityClass] = Field(min_length=1)
    sibling_priority: SiblingRule = SiblingRule()
    private_schools: PrivateRule = PrivateRule()
    overflow: OverflowRule = OverflowRule()
    schools: list[School] = Field(default_factory=list)
    zones: list[Zone] = Field(default_factory=list)

    def sha256(self) -> str:
        """Hash of the rules in canonical JSON, published with a draw."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def school(self, school_id: str) -> School:
        """The school with this id."""
        for school in self.schools:
            if school.school_id == school_id:
                return school
        raise NotFound(f"no school {school_id} in the rules of county {self.county}")

    def zone_of(self, level: Level | str, community_code: str) -> Zone:
        """The catchment zone of a community at one level."""
        for zone in self.zones:
            if zone.level == level and community_code in zone.community_codes:
                return zone
        raise NotFound(
            f"community {community_code} is in no {Level(level).value} zone of county {self.county}"
        )

    def private_schools_of(self, level: Level | str) -> list[School]:
        """Private schools of a level (they enroll county-wide, by lottery)."""
        return [s for s in self.schools if s.level == level and s.ownership is Ownership.private]

    def grade(self, level: Level | str) -> Grade:
        """The entry grade of a level."""
        for grade in self.grades:
            if grade.level == level:
                return grade
        raise NotFound(f"county {self.county} has no {Level(level).value} entry grade")

    def to_yaml(self) -> str:
        """The rules as YAML (what `citybrain enrollment rules show` prints)."""
        return yaml.safe_dump(
            self.model_dump(mode="json"), allow_unicode=True, sort_keys=False, width=100
        )


# --- classification ------------------------------------------------------------------------------


def classify(rules: CountyRules, facts: Mapping[str, bool | int]) -> int | None:
    """Index of the first priority class whose criteria all hold, or None (no class applies).

    `social_insurance` may be given as months paid; it holds from the rules' minimum.
    """
    for index, klass in enumerate(rules.priority_classes):
        if all(_holds(rules, facts, criterion) for criterion in klass.requires):
            return index
    return None


def _holds(rules: CountyRules, facts: Mapping[str, bool | int], criterion: str) -> bool:
    if criterion not in CRITERIA:
        raise Unprocessable(
            f"unknown criterion {criterion!r}",
            detail={"field": "requires", "reason": f"known: {', '.join(CRITERIA)}"},
        )
    value = facts.get(criterion, False)
    if criterion == "social_insurance" and not isinstance(value, bool):
        return int(value) >= rules.social_insurance_min_months
    return bool(value)


def priority_rank(rules: CountyRules, class_index: int, sibling: bool) -> int:
    """Rank the allocation uses at one school: the class, siblings first inside it when enabled."""
    if rules.sibling_priority.enabled:
        return class_index * 2 + (0 if sibling else 1)
    return class_index


def with_calendar(rules: CountyRules, calendar: Mapping[str, Any]) -> CountyRules:
    """The same rules with another season calendar (checked like a file)."""
    raw = rules.model_dump(mode="json")
    raw["calendar"] = dict(calendar)
    return validate_rules(raw)


# --- checks --------------------------------------------------------------------------------------


def _problem(field: str, reason: str) -> dict[str, str]:
    return {"field": field, "reason": reason}


def _pydantic_problems(exc: ValidationError) -> list[dict[str, str]]:
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(file)"
        problems.append(_problem(field, error["msg"]))
    return problems


def _calendar_problems(rules: CountyRules) -> list[dict[str, str]]:
    cal = rules.calendar
    out = []
    order = [("open", cal.open), ("deadline", cal.deadline), ("draw", cal.draw)]
    order.append(("publish", cal.publish))
    for (a, da), (b, db) in zip(order, order[1:], strict=False):
        if db < da:
            out.append(_problem(f"calendar.{b}", f"{b} {db} is before {a} {da}"))
    if cal.open.year != rules.year:
        out.append(_problem("calendar.open", f"opens in {cal.open.year}, not in {rules.year}"))
    return out


def _class_problems(rules: CountyRules) -> list[dict[str, str]]:
    out = []
    seen: set[str] = set()
    for i, klass in enumerate(rules.priority_classes):
        if klass.name in seen:
            out.append(_problem(f"priority_classes.{i}.name", f"class {klass.name!r} twice"))
        seen.add(klass.name)
        for criterion in klass.requires:
            if criterion not in CRITERIA:
                out.append(
                    _problem(
                        f"priority_classes.{i}.requires",
                        f"unknown criterion {criterion!r} (known: {', '.join(CRITERIA)})",
                    )
                )
    # national policy since 2020: no selection by private schools, a lottery when oversubscribed
    if not rules.private_schools.same_time:
        out.append(
            _problem(
                "private_schools.same_time",
                "公民同招: private schools enroll at the same time as public ones",
            )
        )
    if not rules.private_schools.lottery_when_oversubscribed:
        out.append(
            _problem(
                "private_schools.lottery_when_oversubscribed",
                "an oversubscribed private school admits by lottery, not by selection",
            )
        )
    levels = [g.level for g in rules.grades]
    for level in set(levels):
        if levels.count(level) > 1:
            out.append(_problem("grades", f"entry grade {level.value} given twice"))
    return out


def _zone_problems(rules: CountyRules) -> list[dict[str, str]]:
    out = []
    schools = {}
    for i, school in enumerate(rules.schools):
        if school.school_id in schools:
            out.append(_problem(f"schools.{i}.school_id", f"school {school.school_id} twice"))
        schools[school.school_id] = school
    grades = {g.level for g in rules.grades}
    zone_of_school: dict[tuple[Level, str], str] = {}
    zone_of_community: dict[tuple[Level, str], str] = {}
    zone_ids: set[str] = set()
    for i, zone in enumerate(rules.zones):
        where = f"zones.{i}"
        if zone.zone_id in zone_ids:
            out.append(_problem(f"{where}.zone_id", f"zone {zone.zone_id} twice"))
        zone_ids.add(zone.zone_id)
        if zone.level not in grades:
            out.append(_problem(f"{where}.level", f"no {zone.level.value} entry grade"))
        if not zone.school_ids:
            out.append(_problem(f"{where}.school_ids", f"zone {zone.zone_id} has no school"))
        if not zone.community_codes:
            out.append(_problem(f"{where}.community_codes", f"zone {zone.zone_id} serves nobody"))
        for sid in zone.school_ids:
            found = schools.get(sid)
            if found is None:
                out.append(_problem(f"{where}.school_ids", f"unknown school {sid}"))
                continue
            school = found
            if school.level != zone.level:
                out.append(
                    _problem(
                        f"{where}.school_ids",
                        f"{sid} is a {school.level.value} school in a {zone.level.value} zone",
                    )
                )
            if school.ownership is Ownership.private:
                out.append(
                    _problem(
                        f"{where}.school_ids",
                        f"{sid} is private: private schools enroll county-wide, not by zone",
                    )
                )
            if school.capacity == 0:
                out.append(
                    _problem(
                        f"{where}.school_ids",
                        f"school {sid} has capacity 0 but serves zone {zone.zone_id}",
                    )
                )
            other = zone_of_school.setdefault((zone.level, sid), zone.zone_id)
            if other != zone.zone_id:
                out.append(
                    _problem(
                        f"{where}.school_ids",
                        f"school {sid} is in two {zone.level.value} zones: {other}, {zone.zone_id}",
                    )
                )
        for code in zone.community_codes:
            other = zone_of_community.setdefault((zone.level, code), zone.zone_id)
            if other != zone.zone_id:
                out.append(
                    _problem(
                        f"{where}.community_codes",
                        f"community {code} is in two {zone.level.value} zones: "
                        f"{other}, {zone.zone_id}",
                    )
                )
    # a public school that serves no zone is allowed: it takes overflow (统筹) children only
    return out


def _county_problems(rules: CountyRules) -> list[dict[str, str]]:
    try:
        unit = geo.get_unit(rules.county)
    except CityBrainError:
        return [_problem("county", f"{rules.county} is not a county of Shandong")]
    if unit.level != GeoLevel.county:
        return [_problem("county", f"{rules.county} is a {unit.level.value}, not a county")]
    return []


def check_rules(rules: CountyRules) -> list[dict[str, str]]:
    """Contradictions between the parts of valid-looking rules, each with field and reason."""
    return (
        _county_problems(rules)
        + _calendar_problems(rules)
        + _class_problems(rules)
        + _zone_problems(rules)
    )


def _refuse(problems: list[dict[str, str]], source: str) -> Unprocessable:
    first = problems[0]
    listed = "; ".join(f"{p['field']}: {p['reason']}" for p in problems[:10])
    more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
    return Unprocessable(
        f"{source}: {len(problems)} problem(s): {listed}{more}",
        detail={"field": first["field"], "reason": first["reason"], "problems": problems},
    )


def validate_rules(raw: Mapping[str, Any], source: str = "rules") -> CountyRules:
    """Validate a rules mapping: its shape (pydantic) and then its contradictions."""
    try:
        rules = CountyRules.model_validate(raw)
    except ValidationError as exc:
        raise _refuse(_pydantic_problems(exc), source) from None
    problems = check_rules(rules)
    if problems:
        raise _refuse(problems, source)
    return rules


# --- loading -------------------------------------------------------------------------------------


def _package_yaml(name: str) -> dict[str, Any] | None:
    path = resources.files("citybrain.scenes.enrollment").joinpath("rules", name)
    if not path.is_file():
        return None
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else None


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        reason = str(getattr(exc, "problem", None) or exc)
        raise Unprocessable(
            f"{source}: not valid YAML at {where}: {reason}",
            detail={"field": where, "reason": reason},
        ) from None
    if not isinstance(loaded, dict):
        raise Unprocessable(
            f"{source}: the rules must be a YAML mapping (county, year, calendar, ...)",
            detail={"field": "(file)", "reason": "not a mapping"},
        )
    return loaded


def _merge_by_id(base: list[Any], extra: Any, key: str, field: str) -> list[Any]:
    """Entries of extra update the base entry with the same id, or are added."""
    if not isinstance(extra, list):
        raise Unprocessable(
            f"rules: {field} must be a list", detail={"field": field, "reason": "not a list"}
        )
    merged = [dict(item) for item in base]
    index = {item.get(key): i for i, item in enumerate(merged)}
    for i, item in enumerate(extra):
        if not isinstance(item, dict) or key not in item:
            raise Unprocessable(
                f"rules: {field}.{i} needs a {key}",
                detail={"field": f"{field}.{i}.{key}", "reason": "missing"},
            )
        if item[key] in index:
            merged[index[item[key]]].update(item)
        else:
            index[item[key]] = len(merged)
            merged.append(dict(item))
    return merged


def _overlay(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if key == "schools":
            out["schools"] = _merge_by_id(out.get("schools", []), value, "school_id", key)
        elif key == "zones":
            out["zones"] = _merge_by_id(out.get("zones", []), value, "zone_id", key)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _tables_part(county: str, schools: pa.Table | None, zones: pa.Table | None) -> dict[str, Any]:
    """Schools and zones of one county from the Education Bureau's tables."""
    part: dict[str, Any] = {}
    if schools is not None:
        rows = [r for r in schools.to_pylist() if r["county_code"] == county]
        part["schools"] = [
            {
                "school_id": r["school_id"],
                "name": r["name"],
                "level": r["level"],
                "ownership": r["ownership"],
                "capacity": int(r["entry_capacity"]),
                "lon": float(r["lon"]),
                "lat": float(r["lat"]),
            }
            for r in rows
        ]
    if zones is not None:
        part["zones"] = [
            {
                "zone_id": r["zone_id"],
                "level": r["level"],
                "school_ids": list(r["school_ids"]),
                "community_codes": list(r["community_codes"]),
            }
            for r in zones.to_pylist()
            if r["county_code"] == county
        ]
    return part


def _default_raw(county: str) -> dict[str, Any]:
    raw = _package_yaml("default.yaml")
    if raw is None:  # the package always ships it; a broken install is worth a clear sentence
        raise NotFound("the default enrollment rules (rules/default.yaml) are missing")
    raw["county"] = county
    own = _package_yaml(f"{county}.yaml")
    return _overlay(raw, own) if own else raw


def default_rules_for(
    county: str, schools: pa.Table | None = None, zones: pa.Table | None = None
) -> CountyRules:
    """The default rules of a county, with its schools and zones from the education tables."""
    raw = _overlay(_default_raw(county), _tables_part(county, schools, zones))
    return validate_rules(raw, source=f"default rules of {county}")


def load_county_rules(
    source: Path | str,
    *,
    schools: pa.Table | None = None,
    zones: pa.Table | None = None,
) -> CountyRules:
    """Load a rules file (a path or YAML text) over the county's defaults and tables."""
    if isinstance(source, Path):
        if not source.is_file():
            raise NotFound(f"there is no rules file {source}")
        text, name = source.read_text(encoding="utf-8"), str(source)
    else:
        text, name = source, "rules"
    raw = _parse_yaml(text, name)
    county = raw.get("county")
    if not isinstance(county, str):
        raise Unprocessable(
            f'{name}: county must be given as a 6-digit code in quotes, e.g. "370102"',
            detail={"field": "county", "reason": "missing or not a string"},
        )
    base = _default_raw(county) if len(county) == 6 and county.isdigit() else {}
    base = _overlay(base, _tables_part(county, schools, zones))
    return validate_rules(_overlay(base, raw), source=name)


def read_education_tables(folder: Path, county: str) -> tuple[pa.Table, pa.Table]:
    """Schools and catchment zones of a county from a synth output or a node's data folder."""
    if not folder.is_dir():
        raise NotFound(f"there is no folder {folder}")
    city = county[:4] + "00"
    for root in (folder / city / "education", folder / "education"):
        if (root / "schools.parquet").is_file() and (root / "catchment_zones.parquet").is_file():
            return pq.read_table(root / "schools.parquet"), pq.read_table(
                root / "catchment_zones.parquet"
            )
    raise NotFound(
        f"no education/schools.parquet and catchment_zones.parquet for {county} under {folder}"
        " (run `citybrain synth` first)"
    )
