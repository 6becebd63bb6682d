"""The sweep after payment: every rule of the rule base over all settlements, written once in Ibis.

Each rule kind has its batch form here (`BATCH`), next to its single form in `rules.py`; both
read the same rule definition and give the same findings (tests compare them on the same
data). The sweep runs on DuckDB by default and on Spark (PySpark, local mode or a cluster)
with the same expressions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import duckdb.func
import ibis  # type: ignore[import-untyped]
import ibis.expr.types as ir  # type: ignore[import-untyped]
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from citybrain.core.errors import BadInput
from citybrain.scenes.medical_insurance.models import Item, Settlement
from citybrain.scenes.medical_insurance.rules import Catalogue, Rule, RuleBase, reason

if not hasattr(duckdb, "functional"):
    # DuckDB 2 renamed duckdb.functional to duckdb.func; Ibis 10 still imports the old name
    duckdb.functional = duckdb.func  # type: ignore[attr-defined]

FINDING_COLUMNS = ["rule_id", "settlement_id", "person_id", "institution_id", "item_code"]
BACKENDS = ("duckdb", "spark")


@dataclass(frozen=True)
class Frames:
    """The prepared tables every batch form reads."""

    s: ir.Table  # one row per settlement, times as epoch seconds
    i: ir.Table  # one row per item with its settlement's fields
    catalogue: ir.Table
    bundles: ir.Table
    travel: ir.Table  # seconds between two cities' centres at the rule's speed (filled per rule)
    history_s: int


Batch = Callable[[Rule, Frames], ir.Table]


def _out(t: ir.Table, rule: Rule, code: ir.Value | None = None) -> ir.Table:
    return t.select(
        rule_id=ibis.literal(rule.id),
        settlement_id=t.sid,
        person_id=t.person,
        institution_id=t.inst,
        item_code=code if code is not None else ibis.literal(""),
    ).distinct()


Conditions = Callable[[ir.Table, ir.Table], list[Any]]


def _pairs(f: Frames, left: ir.Table, extra: Conditions) -> ir.Table:
    """Join each settlement with the same person's earlier ones within the history window.

    The earlier one's columns are prefixed with h_; `extra` adds conditions on both.
    """
    h = left.rename(lambda c: f"h_{c}")
    before = (h.h_t < left.t) | ((h.h_t == left.t) & (h.h_sid < left.sid))
    return left.join(
        h,
        [left.person == h.h_person, before, left.t - h.h_t <= f.history_s, *extra(left, h)],
    )


def _duplicate_charge(rule: Rule, f: Frames) -> ir.Table:
    t = f.i.select("sid", "person", "inst", "code", "day", "t", "line")
    keys = ["person", "inst", "code", "day"]
    # only lines whose (person, institution, code, day) occurs twice can be duplicates
    twice = t.group_by(keys).aggregate(n=t.count()).filter(lambda g: g.n > 1).select(*keys)
    t = t.semi_join(twice, keys)
    w = ibis.window(group_by=[t.person, t.inst, t.code, t.day], order_by=[t.t, t.sid, t.line])
    t = t.mutate(prev_sid=t.sid.lag().over(w), prev_t=t.t.lag().over(w))
    hit = t.prev_sid.notnull() & ((t.prev_sid == t.sid) | (t.t - t.prev_t <= f.history_s))
    t = t.filter(hit)
    return _out(t, rule, t.code)


def _over_price(rule: Rule, f: Frames) -> ir.Table:
    t = f.i.join(f.catalogue, f.i.code == f.catalogue.c_code)
    t = t.filter(t.price > t.c_price * (1.0 + rule.params["tolerance"]) + 1e-9)
    return _out(t, rule, t.code)


def _unbundled(rule: Rule, f: Frames) -> ir.Table:
    a = f.i.select("sid", "person", "inst", "code")
    b = f.i.select(b_sid=f.i.sid, b_code=f.i.code)
    t = a.join(f.bundles, a.code == f.bundles.package_code)
    t = t.join(b, [t.sid == b.b_sid, t.component_code == b.b_code])
    return _out(t, rule, t.component_code)


def _restricted(rule: Rule, f: Frames) -> ir.Table:
    t = f.i.join(f.catalogue, f.i.code == f.catalogue.c_code)
    bad = ((t.c_gender != "") & (t.c_gender != t.sex)) | (t.age > t.c_max_age)
    t = t.filter(bad)
    return _out(t, rule, t.code)


def _over_quantity(rule: Rule, f: Frames) -> ir.Table:
    t = f.i.filter(f.i.kind.isin(list(rule.params["settlement_kinds"])) & (f.i.ikind == "drug"))
    t = t.group_by(["sid", "person", "inst", "code"]).aggregate(qty=t.qty.sum())
    t = t.join(f.catalogue, t.code == f.catalogue.c_code)
    t = t.filter(t.qty > t.c_max_q)
    return _out(t, rule, t.code)


def _repeated_dispensing(rule: Rule, f: Frames) -> ir.Table:
    t = f.i.filter(f.i.kind.isin(list(rule.params["settlement_kinds"])) & (f.i.ikind == "drug"))
    t = t.select("sid", "person", "inst", "code", "t").distinct()
    w = ibis.window(group_by=[t.person, t.code], order_by=[t.t, t.sid])
    t = t.mutate(prev_t=t.t.lag().over(w))
    window = min(rule.params["window_days"] * 86400, f.history_s)
    t = t.filter(t.prev_t.notnull() & (t.t - t.prev_t <= window))
    return _out(t, rule, t.code)


def _split_admission(rule: Rule, f: Frames) -> ir.Table:
    max_gap = rule.params["max_gap_days"] * 86400
    same = rule.params["same_institution"]

    def conds(a: ir.Table, h: ir.Table) -> list[Any]:
        gap = a.ts - h.h_te
        out = [a.dx == h.h_dx, gap >= 0, gap <= max_gap]
        return [*out, a.inst == h.h_inst] if same else out

    t = _pairs(f, f.s.filter(f.s.kind == "inpatient"), conds)
    return _out(t, rule)


def _bed_hanging(rule: Rule, f: Frames) -> ir.Table:
    t = f.i.filter(f.i.kind == "inpatient")
    beds = list(rule.params["bed_codes"])
    is_bed = t.code.isin(beds) if beds else ibis.literal(False)
    t = t.mutate(bed=is_bed.cast("int8"), care=(~is_bed).cast("int8"))
    days = t.group_by(["sid", "person", "inst", "day"]).aggregate(
        bed=t.bed.max(), care=t.care.max()
    )
    empty = ((days.bed == 1) & (days.care == 0)).cast("int64")
    per = days.group_by(["sid", "person", "inst"]).aggregate(empty=empty.sum())
    return _out(per.filter(per.empty >= rule.params["min_empty_days"]), rule)


def _time_conflict(rule: Rule, f: Frames) -> ir.Table:
    t = _pairs(
        f,
        f.s,
        lambda s, h: [s.inst != h.h_inst, s.city == h.h_city, s.ts < h.h_te, h.h_ts < s.te],
    )
    return _out(t, rule)


def _voucher_lending(rule: Rule, f: Frames) -> ir.Table:
    t = _pairs(f, f.s, lambda s, h: [s.city != h.h_city])
    t = t.join(f.travel, [t.city == f.travel.city_a, t.h_city == f.travel.city_b])
    gap = ibis.greatest(t.ts - t.h_te, t.h_ts - t.te)
    t = t.filter(gap < t.travel_s)
    return _out(t, rule)


def _cash_out(rule: Rule, f: Frames) -> ir.Table:
    p = f.s.filter(f.s.kind == "pharmacy")
    h = p.rename(lambda c: f"h_{c}")
    before = (h.h_t < p.t) | ((h.h_t == p.t) & (h.h_sid <= p.sid))
    window = min(rule.params["window_days"] * 86400, f.history_s)
    t = p.join(h, [p.person == h.h_person, before, p.t - h.h_t <= window])
    g = t.group_by(["sid", "person", "inst"]).aggregate(
        places=t.h_inst.nunique(), amount=t.h_total.sum()
    )
    g = g.filter(
        (g.places >= rule.params["min_pharmacies"]) & (g.amount >= rule.params["min_amount"])
    )
    return _out(g, rule)


BATCH: dict[str, Batch] = {
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


# --- data and backends -----------------------------------------------------------------------


def data_paths(data: Path) -> tuple[Path, Path]:
    """The settlements and items files of a node's data folder."""
    folder = data / "medical_security"
    paths = (folder / "settlements.parquet", folder / "settlement_items.parquet")
    for path in paths:
        if not path.exists():
            raise BadInput(f"{path} is missing: is {data} a node's data folder with settlements?")
    return paths


def catalogue_folder(data: Path) -> Path:
    """Where the catalogues of a node's data are: its own folder or the province's beside it."""
    own = data / "medical_security"
    if (own / "drug_catalogue.parquet").exists():
        return own
    province = data.parent / "370000" / "medical_security"
    if (province / "drug_catalogue.parquet").exists():
        return province
    raise BadInput(f"no catalogues in {own} or {province}")


NO_LIMIT = 1 << 40


def _limit(value: int | None) -> int:
    return NO_LIMIT if value is None else int(value)


def _catalogue_tables(cat: Catalogue) -> tuple[pa.Table, pa.Table]:
    entries = sorted(cat.entries.values(), key=lambda e: e.code)
    table = pa.table(
        {
            "c_code": pa.array([e.code for e in entries], pa.string()),
            "c_price": pa.array([e.standard_price for e in entries], pa.float64()),
            # no nulls: "" and NO_LIMIT stand for none (nulls in small tables differ by backend)
            "c_gender": pa.array([e.gender or "" for e in entries], pa.string()),
            "c_max_age": pa.array([_limit(e.max_age) for e in entries], pa.int64()),
            "c_max_q": pa.array([_limit(e.max_quantity) for e in entries], pa.int64()),
        }
    )
    pairs = sorted((p, c) for p, cs in cat.bundles.items() for c in cs)
    bundles = pa.table(
        {
            "package_code": pa.array([p for p, _ in pairs], pa.string()),
            "component_code": pa.array([c for _, c in pairs], pa.string()),
        }
    )
    return table, bundles


def travel_table(cat: Catalogue, speed_kmh: float) -> pa.Table:
    """Seconds of travel between every two known cities at this speed (as the single form)."""
    rows = [
        (a, b, cat.city_km(a, b) / speed_kmh * 3600)
        for a in sorted(cat.city_xy)
        for b in sorted(cat.city_xy)
        if a != b and speed_kmh > 0
    ]
    return pa.table(
        {
            "city_a": pa.array([r[0] for r in rows], pa.string()),
            "city_b": pa.array([r[1] for r in rows], pa.string()),
            "travel_s": pa.array([r[2] for r in rows], pa.float64()),
        }
    )


def _frames(
    settlements: ir.Table, items: ir.Table, rulebase: RuleBase, *, cache: bool = False
) -> Frames:
    s = settlements.select(
        sid=settlements.settlement_id,
        person=settlements.person_id,
        inst=settlements.institution_id,
        city=settlements.city_code,
        kind=settlements.kind,
        dx=settlements.diagnosis,
        sex=settlements.sex,
        age=settlements.age.cast("int64"),
        t=settlements.settled_at.epoch_seconds().cast("int64"),
        ts=settlements.start.epoch_seconds().cast("int64"),
        te=settlements.end.epoch_seconds().cast("int64"),
        total=settlements.total,
    )
    it = items.select(
        i_sid=items.settlement_id,
        line=items.line,
        code=items.code,
        ikind=items.kind,
        qty=items.quantity,
        price=items.unit_price,
        day=items.service_date,
    )
    # items carry only the settlement fields item rules read
    slim = s.select("sid", "person", "inst", "kind", "sex", "age", "t")
    i = slim.join(it, slim.sid == it.i_sid).drop("i_sid")
    if cache:  # every rule reads these two: materialise them once on the backend
        s, i = s.cache(), i.cache()
    cat, bundles = _catalogue_tables(rulebase.catalogue)
    return Frames(
        s=s,
        i=i,
        catalogue=ibis.memtable(cat),
        bundles=ibis.memtable(bundles),
        travel=ibis.memtable(travel_table(rulebase.catalogue, 100.0)),
        history_s=rulebase.history_days * 86400,
    )


def findings_expr(
    settlements: ir.Table, items: ir.Table, rulebase: RuleBase, *, cache: bool = False
) -> ir.Table:
    """One Ibis expression giving every rule's findings over these tables."""
    f = _frames(settlements, items, rulebase, cache=cache)
    parts = []
    for rule in rulebase.rules:
        frames = f
        if rule.kind == "voucher_lending":
            speed = float(rule.params["speed_kmh"])
            frames = Frames(
                f.s,
                f.i,
                f.catalogue,
                f.bundles,
                ibis.memtable(travel_table(rulebase.catalogue, speed)),
                f.history_s,
            )
        parts.append(BATCH[rule.kind](rule, frames))
    if not parts:
        raise BadInput("the rule base has no rules")
    return ibis.union(*parts) if len(parts) > 1 else parts[0]


def finish(raw: pa.Table, rulebase: RuleBase) -> pa.Table:
    """Add version, grade and reason to raw findings and sort them (the sweep's answer)."""
    raw = raw.select(FINDING_COLUMNS)
    rules = {r.id: r for r in rulebase.rules}
    ids = raw["rule_id"].to_pylist()
    codes = raw["item_code"].to_pylist()
    table = raw.append_column("rule_version", pa.array([rules[r].version for r in ids], pa.int32()))
    table = table.append_column("grade", pa.array([str(rules[r].grade) for r in ids], pa.string()))
    table = table.append_column(
        "reason", pa.array([reason(rules[r], c) for r, c in zip(ids, codes, strict=True)])
    )
    order = pc.sort_indices(
        table,
        sort_keys=[
            ("settlement_id", "ascending"),
            ("rule_id", "ascending"),
            ("item_code", "ascending"),
        ],
    )
    return table.take(order)


def spark_session() -> Any:
    """A local Spark session for the sweep: UTC clock, few shuffle partitions, quiet logs."""
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("citybrain-medins-sweep")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def connect(backend: str) -> Any:
    """An Ibis connection of the named backend."""
    if backend == "duckdb":
        con = ibis.duckdb.connect()
        con.raw_sql("set enable_progress_bar = false")
        con.raw_sql("set preserve_insertion_order = false")  # the findings are sorted at the end
        return con
    if backend == "spark":
        return ibis.pyspark.connect(spark_session())
    raise BadInput(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")


def sweep(data: Path, rulebase: RuleBase, *, backend: str = "duckdb") -> pa.Table:
    """Run every rule over a node's settlements; return the findings as an Arrow table."""
    s_path, i_path = data_paths(data)
    con = connect(backend)

    settlements = con.read_parquet(str(s_path))
    items = con.read_parquet(str(i_path))
    return finish(_arrow(con.to_pyarrow(findings_expr(settlements, items, rulebase))), rulebase)


def _arrow(result: Any) -> pa.Table:
    # DuckDB 2 under Ibis 10 hands back a batch reader where Ibis promises a table
    return result.read_all() if isinstance(result, pa.RecordBatchReader) else result


# --- settlements as records, for the single form and tests ---------------------------------


def read_settlements(data: Path) -> list[Settlement]:
    """Every settlement of a node's data folder as records with their items."""
    s_path, i_path = data_paths(data)
    return settlements_from_tables(pq.read_table(s_path), pq.read_table(i_path))


def settlements_from_tables(settlements: pa.Table, items: pa.Table) -> list[Settlement]:
    """Build settlement records from the settlements and settlement_items tables."""
    by_sid: dict[str, list[Item]] = {}
    for row in items.sort_by([("settlement_id", "ascending"), ("line", "ascending")]).to_pylist():
        by_sid.setdefault(row["settlement_id"], []).append(
            Item.model_construct(
                code=row["code"],
                kind=row["kind"],
                quantity=row["quantity"],
                unit_price=row["unit_price"],
                amount=row["amount"],
                service_date=row["service_date"],
            )
        )
    out = []
    for row in settlements.to_pylist():
        out.append(
            Settlement.model_construct(**row, items=tuple(by_sid.get(row["settlement_id"], ())))
        )
    return out
