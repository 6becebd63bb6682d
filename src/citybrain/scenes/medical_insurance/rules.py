"""The rule base: loading and checking the YAML definition, and the check before payment.

A rule base is one YAML file (see rules/medins.yaml): a version, the days of history the
check before payment needs, and rules. Each rule names its kind (one of `KINDS`), its own id
and version, a grade (warn or block), its parameters (thresholds) and the fields it reads.
The same rule runs on one settlement here (`check_settlement`, pure Python over small lists)
and over all settlements in `sweep.py` (Ibis); tests hold the two forms to the same findings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from citybrain.core.errors import BadInput
from citybrain.scenes.medical_insurance.models import (
    Finding,
    Grade,
    Item,
    Outcome,
    Settlement,
    Verdict,
)

RULES_DIR = Path(__file__).resolve().parent / "rules"
DEFAULT_RULEBASE = RULES_DIR / "medins.yaml"

SETTLEMENT_FIELDS = frozenset(
    {
        "settlement_id",
        "person_id",
        "institution_id",
        "institution_kind",
        "institution_grade",
        "city_code",
        "county_code",
        "kind",
        "diagnosis",
        "sex",
        "age",
        "start",
        "end",
        "settled_at",
        "total",
        "fund_paid",
    }
)
ITEM_FIELDS = frozenset(
    f"items.{f}" for f in ("code", "kind", "quantity", "unit_price", "amount", "service_date")
)
CATALOGUE_FIELDS = frozenset(
    f"catalogue.{f}"
    for f in ("standard_price", "gender", "max_age", "max_quantity_per_visit", "bundles")
)
KNOWN_FIELDS = SETTLEMENT_FIELDS | ITEM_FIELDS | CATALOGUE_FIELDS


# --- catalogue facts the rules read --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """What the catalogues say about one code."""

    code: str
    kind: str
    standard_price: float
    gender: str | None = None
    max_age: int | None = None
    max_quantity: int | None = None


@dataclass(frozen=True)
class Catalogue:
    """Drugs, services and consumables by code, packages with the items they include, and cities."""

    entries: dict[str, CatalogueEntry]
    bundles: dict[str, frozenset[str]] = field(default_factory=dict)
    city_xy: dict[str, tuple[float, float]] = field(default_factory=dict)

    def city_km(self, a: str, b: str) -> float:
        """Great-circle distance between two cities' centres in km (0 when unknown or equal)."""
        if a == b or a not in self.city_xy or b not in self.city_xy:
            return 0.0
        return haversine_km(*self.city_xy[a], *self.city_xy[b])


def haversine_km(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def shandong_cities() -> dict[str, tuple[float, float]]:
    """Centres of Shandong's cities from the shipped geography."""
    from citybrain.geo import service as geo
    from citybrain.geo.models import Level

    return {u.code: (u.centroid_lon, u.centroid_lat) for u in geo.list_units(Level.city)}


def load_catalogue(folder: Path) -> Catalogue:
    """Read the catalogues from a medical_security folder of synthetic or real data."""
    import pyarrow.parquet as pq

    entries: dict[str, CatalogueEntry] = {}
    for name, kind in (
        ("drug_catalogue", "drug"),
        ("service_catalogue", "service"),
        ("consumable_catalogue", "consumable"),
    ):
        path = folder / f"{name}.parquet"
        if not path.exists():
            raise BadInput(f"the catalogue {path} is missing")
        for row in pq.read_table(path).to_pylist():
            entries[row["code"]] = CatalogueEntry(
                code=row["code"],
                kind=kind,
                standard_price=float(row["standard_price"]),
                gender=row.get("gender"),
                max_age=row.get("max_age"),
                max_quantity=row.get("max_quantity_per_visit"),
            )
    bundles: dict[str, set[str]] = {}
    bundle_path = folder / "service_bundles.parquet"
    if bundle_path.exists():
        for row in pq.read_table(bundle_path).to_pylist():
            bundles.setdefault(row["package_code"], set()).add(row["component_code"])
    return Catalogue(
        entries=entries,
        bundles={k: frozenset(v) for k, v in bundles.items()},
        city_xy=shandong_cities(),
    )


# --- the rule base --------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One parameter of a rule kind: its type and default."""

    kind: type
    default: Any


@dataclass(frozen=True)
class KindSpec:
    """A rule kind: what it detects, its parameters and the fields it must read."""

    title: str
    params: dict[str, Param]
    needs: frozenset[str]


KINDS: dict[str, KindSpec] = {
    "duplicate_charge": KindSpec(
        "the same item charged twice by one institution for one day",
        {},
        frozenset(
            {"person_id", "institution_id", "settled_at", "items.code", "items.service_date"}
        ),
    ),
    "over_price": KindSpec(
        "an item charged above its standard price",
        {"tolerance": Param(float, 0.0)},
        frozenset({"items.code", "items.unit_price", "catalogue.standard_price"}),
    ),
    "unbundled_charge": KindSpec(
        "an item charged apart although its package includes it",
        {},
        frozenset({"items.code", "catalogue.bundles"}),
    ),
    "restricted_item": KindSpec(
        "an item restricted to one sex or to young ages charged to someone else",
        {},
        frozenset({"sex", "age", "items.code", "catalogue.gender", "catalogue.max_age"}),
    ),
    "over_quantity": KindSpec(
        "a drug dispensed above its quantity limit per visit",
        {"settlement_kinds": Param(list, ["outpatient", "pharmacy"])},
        frozenset({"kind", "items.code", "items.quantity", "catalogue.max_quantity_per_visit"}),
    ),
    "repeated_dispensing": KindSpec(
        "the same drug dispensed again within a few days",
        {"window_days": Param(int, 7), "settlement_kinds": Param(list, ["outpatient", "pharmacy"])},
        frozenset({"person_id", "kind", "settled_at", "items.code", "items.kind"}),
    ),
    "split_admission": KindSpec(
        "a readmission soon after discharge for the same diagnosis",
        {"max_gap_days": Param(int, 15), "same_institution": Param(bool, True)},
        frozenset({"person_id", "institution_id", "kind", "diagnosis", "start", "end"}),
    ),
    "bed_hanging": KindSpec(
        "inpatient days charged with a bed and no care",
        {"bed_codes": Param(list, []), "min_empty_days": Param(int, 2)},
        frozenset({"kind", "items.code", "items.service_date"}),
    ),
    "time_conflict": KindSpec(
        "one person treated at two institutions of one city at the same time",
        {},
        frozenset({"person_id", "institution_id", "city_code", "start", "end", "settled_at"}),
    ),
    "voucher_lending": KindSpec(
        "one person's voucher used in two cities closer in time than travel allows",
        {"speed_kmh": Param(float, 100.0)},
        frozenset({"person_id", "city_code", "start", "end", "settled_at"}),
    ),
    "cash_out": KindSpec(
        "high-value purchases spread over many pharmacies",
        {
            "window_days": Param(int, 30),
            "min_pharmacies": Param(int, 4),
            "min_amount": Param(float, 2000.0),
        },
        frozenset({"person_id", "institution_id", "kind", "settled_at", "total"}),
    ),
}


@dataclass(frozen=True)
class Rule:
    """One rule of the rule base."""

    id: str
    version: int
    kind: str
    grade: Grade
    title: str
    params: dict[str, Any]
    fields: tuple[str, ...]


@dataclass(frozen=True)
class RuleBase:
    """A versioned set of rules with the catalogue facts they read."""

    name: str
    version: int
    history_days: int
    rules: tuple[Rule, ...]
    catalogue: Catalogue

    def rule(self, rule_id: str) -> Rule:
        """The rule with this id."""
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)


def _line(node: yaml.Node | None) -> int:
    return node.start_mark.line + 1 if node is not None else 0


def _mapping(node: yaml.Node) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        raise BadInput(f"line {_line(node)}: expected a mapping")
    out: dict[str, yaml.Node] = {}
    for key, value in node.value:
        out[str(key.value)] = value
    return out


def _refuse(path: str, node: yaml.Node | None, message: str) -> BadInput:
    return BadInput(f"{path}, line {_line(node)}: {message}", detail={"line": _line(node)})


def parse_rulebase(text: str, catalogue: Catalogue, *, source: str = "rule base") -> RuleBase:
    """Parse and check a rule base; refuse it with the line and field of the first fault."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise BadInput(
            f"{source}, line {line}: not valid YAML: {exc.problem}", detail={"line": line}
        ) from None
    except yaml.YAMLError as exc:
        raise BadInput(f"{source}: not valid YAML: {exc}") from None
    if root is None or not isinstance(data, dict):
        raise BadInput(f"{source}: expected a mapping with name, version and rules")
    top = _mapping(root)
    for key in top:
        if key not in ("name", "version", "history_days", "rules"):
            raise _refuse(source, top[key], f"unknown key {key!r}")
    for key in ("name", "version", "rules"):
        if key not in data:
            raise _refuse(source, root, f"missing {key!r}")
    version = data["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _refuse(source, top["version"], "version must be a positive integer")
    history = data.get("history_days", 30)
    if not isinstance(history, int) or isinstance(history, bool) or not 1 <= history <= 366:
        raise _refuse(source, top.get("history_days"), "history_days must be 1..366")
    rules_node = top["rules"]
    if not isinstance(rules_node, yaml.SequenceNode) or not isinstance(data["rules"], list):
        raise _refuse(source, rules_node, "rules must be a list")
    rules: list[Rule] = []
    seen: set[str] = set()
    for node, raw in zip(rules_node.value, data["rules"], strict=True):
        rule = _parse_rule(source, node, raw, history)
        if rule.id in seen:
            raise _refuse(source, node, f"rule id {rule.id!r} appears twice")
        seen.add(rule.id)
        rules.append(rule)
    return RuleBase(
        name=str(data["name"]),
        version=version,
        history_days=history,
        rules=tuple(rules),
        catalogue=catalogue,
    )


def _parse_rule(source: str, node: yaml.Node, raw: Any, history_days: int) -> Rule:
    if not isinstance(raw, dict):
        raise _refuse(source, node, "a rule must be a mapping")
    nodes = _mapping(node)
    allowed = ("id", "version", "kind", "grade", "title", "params", "fields")
    for key in raw:
        if key not in allowed:
            raise _refuse(source, nodes.get(str(key)), f"unknown key {key!r} in a rule")
    for key in ("id", "version", "kind", "grade", "fields"):
        if key not in raw:
            raise _refuse(source, node, f"rule is missing {key!r}")
    rid = raw["id"]
    if not isinstance(rid, str) or not rid.replace("_", "").isalnum():
        raise _refuse(source, nodes["id"], "id must be letters, digits and _")
    where = f"{source}, rule {rid}"
    if not isinstance(raw["version"], int) or isinstance(raw["version"], bool):
        raise _refuse(where, nodes["version"], "version must be an integer")
    kind = raw["kind"]
    if kind not in KINDS:
        raise _refuse(where, nodes["kind"], f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    spec = KINDS[kind]
    try:
        grade = Grade(raw["grade"])
    except ValueError:
        raise _refuse(where, nodes["grade"], "grade must be warn or block") from None
    fields = raw["fields"]
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise _refuse(where, nodes["fields"], "fields must be a list of names")
    field_nodes = getattr(nodes["fields"], "value", [])
    for i, name in enumerate(fields):
        if name not in KNOWN_FIELDS:
            at = field_nodes[i] if i < len(field_nodes) else nodes["fields"]
            raise _refuse(where, at, f"unknown field {name!r}")
    missing = sorted(spec.needs - set(fields))
    if missing:
        raise _refuse(where, nodes["fields"], f"the rule reads {', '.join(missing)}: declare it")
    raw_params = raw.get("params") or {}
    if not isinstance(raw_params, dict):
        raise _refuse(where, nodes.get("params"), "params must be a mapping")
    param_nodes = _mapping(nodes["params"]) if "params" in nodes and raw_params else {}
    params: dict[str, Any] = {}
    for key, value in raw_params.items():
        if key not in spec.params:
            known = ", ".join(spec.params) or "none"
            raise _refuse(
                where, param_nodes.get(key), f"unknown parameter {key!r} (known: {known})"
            )
        params[key] = _param(where, param_nodes.get(key), key, spec.params[key], value)
    for key, p in spec.params.items():
        params.setdefault(key, p.default)
    for key in ("window_days", "max_gap_days"):
        if key in params and not 0 < params[key] <= history_days:
            raise _refuse(where, param_nodes.get(key), f"{key} must be 1..history_days")
    return Rule(
        id=rid,
        version=raw["version"],
        kind=kind,
        grade=grade,
        title=str(raw.get("title") or spec.title),
        params=params,
        fields=tuple(fields),
    )


def _param(where: str, node: yaml.Node | None, key: str, p: Param, value: Any) -> Any:
    if p.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, p.kind) or (p.kind is not bool and isinstance(value, bool)):
        raise _refuse(where, node, f"parameter {key!r} must be {p.kind.__name__}")
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise _refuse(where, node, f"parameter {key!r} must not be negative")
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise _refuse(where, node, f"parameter {key!r} must be a list of strings")
        return tuple(value)
    return value


def load_rulebase(path: Path | None = None, catalogue: Catalogue | None = None) -> RuleBase:
    """Read a rule base file (the shipped one by default) with the catalogue it checks against."""
    path = path or DEFAULT_RULEBASE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read the rule base {path}: {exc}") from None
    return parse_rulebase(text, catalogue or Catalogue(entries={}), source=str(path))


# --- the single form: one settlement and the person's recent history -------------------------

Single = Callable[[Rule, Settlement, Sequence[Settlement], Catalogue], Iterable[str]]


def _key(s: Settlement) -> tuple[datetime, str]:
    return (s.settled_at, s.settlement_id)


def _drug_codes(s: Settlement) -> set[str]:
    return {i.code for i in s.items if i.kind == "drug"}


def _duplicate_charge(
    rule: Rule, s: Settlement, history: Sequence[Settlement], cat: Catalogue
) -> Iterable[str]:
    seen: set[tuple[str, date]] = set()
    for h in history:
        if h.institution_id == s.institution_id:
            seen.update((i.code, i.service_date) for i in h.items)
    for item in s.items:
        key = (item.code, item.service_date)
        if key in seen:
            yield item.code
        seen.add(key)


def _over_price(
    rule: Rule, s: Settlement, history: Sequence[Settlement], cat: Catalogue
) -> Iterable[str]:
    factor = 1.0 + rule.params["tolerance"]
    for item in s.items:
        entry = cat.entries.get(item.code)
        if entry is not None and item.unit_price > entry.standard_price * factor + 1e-9:
            yield item.code


def _unbundled(
    rule: Rule, s: Settlement, history: Sequence[Settlement], cat: Catalogue
) -> Iterable[str]:
    codes = {i.code for i in s.items}
    for package in codes & cat.bundles.keys():
        yield from cat.bundles[package] & codes


def _restricted(
    rule: Rule, s: Settlement, history: Sequence[Settlement], cat: Catalogue
) -> Iterable[str]:
    for item in s.items:
        entry = cat.entries.get(item.code)
        if entry is None:
            continue
        if (entry.gender is not None and entry.gender != s.sex) or (
            entry.max_age is not None and s.age > entry.max_age
        ):
            yield item.code


def _over_quantity(
    rule: Rule, s: Settlement, history: Sequence[Settlement], cat: Catalogue
) -> Iterable[str]:
    if s.kind not in rule.params["settlement_kinds"]:
        return
    totals: dict[str, float] = {}
    for item in s.items:
        if item.kind == "drug":
            totals[item.code] = totals.get(item.code, 0.0) + item.quantity
    for code, quantity in totals.items():
        entry = cat.entries.get(code)
        if entry is not None and entry.max_quantity is not None and quantity > entry.max_quantity:
            yield code


def _repeated_dispensing(
    rule: Rule, s: Settlement, history: Sequence[Settlement], cat: Catalogue
) -> Iterable[str]:
    kinds = rule.params["settlement_kinds"]
    if s.kind not in kinds:
        return
    window = rule.params["window_days"] * 86400
    earlier: set[str] = set()
    for h in history:
        if h.kind in kinds and (s.settled_at - h.settled_at).total_seconds() <= window:
            earlier |= _drug_codes(h)
    yield from _drug_codes(s) & earlier


def _split_admission(
    rule: Rule, s: Settlement, history: Sequence[Settlement], cat: Catalogue
) -> Iterable[str]:
    if s.kind != "inpatient":
        return
    gap = rule.params["max_gap_days"] * 86400
    for h in history:
        if (
            h.kind == "inpatient"
            and h.diagnosis == s.diagnosis
            and (not rule.params["same_institution"] or h.institution_id == s.institution_id)
            and 0 <= (s.start - h.end).total_seconds() <= gap
        ):
            yield ""
            return


def _bed_hanging(
    rule: Rule, s: Settlement, history: Sequence[Settlement], cat: Catalogue
) -> Iterable[str]:
    if s.kind != "inpatient":
        return
    beds = set(rule.params["bed_codes"])
    bed_days = {i.service_date for i in s.items if i.code in beds}
    care_days = {i.service_date for i in s.items if i.code not in beds}
    if len(bed_days - care_days) >= rule.params["min_empty_days"]:
        yield ""


def _time_conflict(
    rule: Rule, s: Settlement, history: Sequence[Settlement], cat: Catalogue
) -> Iterable[str]:
    for h in history:
        if (
            h.institution_id != s.institution_id
            and h.city_code == s.city_code
            and s.start < h.end
            and h.start < s.end
        ):
            yield ""
            return


def _voucher_lending(
    rule: Rule, s: Settlement, history: Sequence[Settlement], cat: Catalogue
) -> Iterable[str]:
    speed = rule.params["speed_kmh"]
    for h in history:
        if h.city_code == s.city_code:
            continue
        km = cat.city_km(s.city_code, h.city_code)
        if km <= 0 or speed <= 0:
            continue  # cities without a known place: nothing to measure against
        travel = km / speed * 3600
        gap = max((s.start - h.end).total_seconds(), (h.start - s.end).total_seconds())
        if gap < travel:
            yield ""
            return


def _cash_out(
    rule: Rule, s: Settlement, history: Sequence[Settlement], cat: Catalogue
) -> Iterable[str]:
    if s.kind != "pharmacy":
        return
    window = rule.params["window_days"] * 86400
    places = {s.institution_id}
    amount = s.total
    for h in history:
        if h.kind == "pharmacy" and (s.settled_at - h.settled_at).total_seconds() <= window:
            places.add(h.institution_id)
            amount += h.total
    if len(places) >= rule.params["min_pharmacies"] and amount >= rule.params["min_amount"]:
        yield ""


SINGLE: dict[str, Single] = {
    "duplicate_charge": _duplicate_charge,
    "over_price": _over_price,
    "unbundled_charge": _unbundled,
    "restricted_item": _restricted,
    "over_quantity": _over_quantity,
    "repeated_dispensing": _repeated_dispensing,
    "split_admission": _split_admission,
    "bed_hanging": _bed_hanging,
    "time_conflict": _time_conflict,
    "voucher_lending": _voucher_lending,
    "cash_out": _cash_out,
}


def reason(rule: Rule, item_code: str) -> str:
    """The sentence a finding gives: the rule's title, its version and the item."""
    where = f" (item {item_code})" if item_code else ""
    return f"{rule.id} v{rule.version}: {rule.title}{where}"


def finding(
    rule: Rule, settlement_id: str, person_id: str, institution_id: str, code: str
) -> Finding:
    """Build the finding of one rule on one settlement and item."""
    return Finding(
        rule_id=rule.id,
        rule_version=rule.version,
        grade=rule.grade,
        settlement_id=settlement_id,
        person_id=person_id,
        institution_id=institution_id,
        item_code=code,
        reason=reason(rule, code),
    )


def relevant_history(
    rulebase: RuleBase, settlement: Settlement, history: Iterable[Settlement]
) -> list[Settlement]:
    """The person's settlements before this one within the rule base's history window."""
    limit = rulebase.history_days * 86400
    key = _key(settlement)
    return [
        h
        for h in history
        if h.person_id == settlement.person_id
        and h.settlement_id != settlement.settlement_id
        and _key(h) < key
        and (settlement.settled_at - h.settled_at).total_seconds() <= limit
    ]


def check_settlement(
    rulebase: RuleBase, settlement: Settlement, history: Iterable[Settlement]
) -> Verdict:
    """Judge one settlement before payment: pass, warn or block, with the findings."""
    earlier = relevant_history(rulebase, settlement, history)
    findings: list[Finding] = []
    for rule in rulebase.rules:
        codes = sorted(set(SINGLE[rule.kind](rule, settlement, earlier, rulebase.catalogue)))
        for code in codes:
            findings.append(
                finding(
                    rule,
                    settlement.settlement_id,
                    settlement.person_id,
                    settlement.institution_id,
                    code,
                )
            )
    grades = {f.grade for f in findings}
    outcome = Outcome.block if Grade.block in grades else Outcome.warn if grades else Outcome.pass_
    return Verdict(outcome=outcome, findings=findings)


def items_of(rows: Iterable[dict[str, Any]]) -> tuple[Item, ...]:
    """Items from table rows (settlement_items)."""
    return tuple(
        Item(
            code=r["code"],
            kind=r["kind"],
            quantity=r["quantity"],
            unit_price=r["unit_price"],
            amount=r["amount"],
            service_date=r["service_date"],
        )
        for r in rows
    )
