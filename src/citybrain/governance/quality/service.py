"""Quality scorecards of departmental tables: completeness, validity, uniqueness, timeliness,
cross-department consistency; kept over time, summed up per department.

Scoring reads raw data as a system read (DuckDB over the Delta snapshot) and keeps counts
only: no value of a record leaves this module.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import yaml
from sqlalchemy import Engine, insert, select

from citybrain.core.errors import BadInput, CityBrainError, Forbidden, NotFound
from citybrain.governance.audit import service as audit
from citybrain.governance.catalog import service as catalog
from citybrain.governance.catalog.models import CatalogEntry, Frequency, Mask
from citybrain.governance.lineage.service import record_lineage
from citybrain.governance.principal import Principal, Role
from citybrain.governance.quality.models import DepartmentScore, Scorecard, quality_scorecards
from citybrain.hub.tables import service as tables
from citybrain.hub.tables.models import ColumnType, TableRead
from citybrain.synth.idcard import is_valid_id_number

PHONE = r"1[3-9][0-9]{9}"
_TABLE_ID = re.compile(r"^([a-z][a-z0-9_]{0,63})/([a-z][a-z0-9_]{0,63})$")
DIMENSIONS = ("completeness", "validity", "uniqueness", "timeliness", "consistency")


@cache
def rules() -> dict[str, Any]:
    """Return the quality rules file, parsed."""
    raw = (
        resources.files("citybrain.governance.quality")
        .joinpath("rules.yaml")
        .read_text(encoding="utf-8")
    )
    parsed: dict[str, Any] = yaml.safe_load(raw)
    return parsed


def _split(dataset_id: str) -> tuple[str, str]:
    match = _TABLE_ID.fullmatch(dataset_id)
    if not match:
        raise BadInput(f"{dataset_id!r} is not a departmental table id (DEPARTMENT/NAME)")
    return match.group(1), match.group(2)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@cache
def _known_code(code: str) -> bool:
    from citybrain.geo import service as geo

    try:
        geo.get_unit(code)
    except CityBrainError:
        return False
    return True


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pct(good: int | float, total: int | float) -> float:
    return 100.0 if total == 0 else round(100.0 * good / total, 2)


def _field_rule(name: str, column_type: ColumnType, entry: CatalogEntry | None) -> str | None:
    """Return the validity rule of a field: id_number, phone, admin_code, date or none."""
    spec = entry.field(name) if entry else None
    if name == "id_number" or name.endswith("_id_number") or (spec and spec.mask is Mask.id_number):
        return "id_number"
    if name == "phone" or name.endswith("_phone") or (spec and spec.mask is Mask.phone):
        return "phone"
    if column_type is ColumnType.string and (name.endswith("_county") or name.endswith("_code")):
        return "admin_code"
    if column_type in (ColumnType.date, ColumnType.timestamp):
        if name in rules().get("future_dates_allowed", []):
            return None
        return "date"
    return None


def _validity(
    con: duckdb.DuckDBPyConnection, table: TableRead, entry: CatalogEntry | None, now: datetime
) -> tuple[float, dict[str, Any]]:
    checked = invalid = 0
    per_field: dict[str, Any] = {}
    for column in table.columns:
        rule = _field_rule(column.name, column.type, entry)
        if rule is None:
            continue
        col = _q(column.name)
        if rule == "phone":
            n, bad = con.execute(
                f"select count({col}), count(*) filter (where {col} is not null "
                f"and not regexp_full_match({col}, '{PHONE}')) from t"
            ).fetchall()[0]
        elif rule == "date":
            limit: date | datetime = now if column.type is ColumnType.timestamp else now.date()
            n, bad = con.execute(
                f"select count({col}), count(*) filter (where {col} > ?) from t", [limit]
            ).fetchall()[0]
        else:
            test = is_valid_id_number if rule == "id_number" else _known_code
            n = bad = 0
            for value, count in con.execute(
                f"select {col}, count(*) from t where {col} is not null group by {col}"
            ).fetchall():
                n += count
                if not test(str(value)):
                    bad += count
        per_field[column.name] = {"rule": rule, "checked": int(n), "invalid": int(bad)}
        checked += int(n)
        invalid += int(bad)
    return _pct(checked - invalid, checked), per_field


def _timeliness(
    newest: datetime | None, frequency: Frequency, now: datetime
) -> tuple[float, dict[str, Any]]:
    hours: dict[str, float] = rules()["frequency_hours"]
    if newest is None:
        return 0.0, {"newest_version_at": None, "frequency": frequency.value}
    age = max(0.0, (now - newest).total_seconds() / 3600)
    detail = {
        "newest_version_at": newest.isoformat(),
        "age_hours": round(age, 2),
        "frequency": frequency.value,
    }
    if frequency is Frequency.irregular:
        return 100.0, detail
    period = float(hours[frequency.value])
    detail["period_hours"] = period
    if age <= period:
        return 100.0, detail
    return round(max(0.0, 100.0 * (1 - (age - period) / (2 * period))), 2), detail


def _newest_version(data_dir: Path, department: str, name: str) -> tuple[int, datetime | None]:
    dt = tables._open(data_dir, department, name)
    history = dt.history(1)
    if not history:
        return dt.version(), None
    return dt.version(), datetime.fromtimestamp(int(history[0]["timestamp"]) / 1000, UTC)


def _consistency(
    con: duckdb.DuckDBPyConnection,
    *,
    engine: Engine,
    data_dir: Path,
    dataset_id: str,
    table: TableRead,
) -> tuple[float | None, list[dict[str, Any]]]:
    names = {c.name for c in table.columns}
    results: list[dict[str, Any]] = []
    shares: list[float] = []
    for i, rule in enumerate(
        r for r in rules().get("consistency", []) if r["dataset"] == dataset_id
    ):
        outcome: dict[str, Any] = {"id": rule["id"], "reference": rule["reference"]}
        results.append(outcome)
        ref_department, ref_name = _split(rule["reference"])
        try:
            reference = tables.describe_table(
                engine=engine, data_dir=data_dir, department=ref_department, name=ref_name
            )
        except NotFound:
            outcome["skipped"] = "the reference table is not on this node"
            continue
        if rule["field"] not in names or rule["reference_field"] not in {
            c.name for c in reference.columns
        }:
            outcome["skipped"] = "a field of the rule is not in the table"
            continue
        alias = f"r{i}"
        con.register(
            alias,
            tables.snapshot(tables._open(data_dir, ref_department, ref_name), reference.columns),
        )
        field, ref_field = _q(rule["field"]), _q(rule["reference_field"])
        total, found = con.execute(
            f"select count(*), count(r.k) "
            f"from (select {field} v from t where {field} is not null) a "
            f"left join (select distinct {ref_field} k from {alias}) r on a.v = r.k"
        ).fetchall()[0]
        share = _pct(int(found), int(total))
        outcome.update(checked=int(total), consistent=int(found), score=share)
        shares.append(share)
    if not shares:
        return None, results
    return round(sum(shares) / len(shares), 2), results


def score_dataset(
    *, engine: Engine, data_dir: Path, dataset_id: str, now: datetime | None = None
) -> Scorecard:
    """Score a departmental table on every dimension and keep the scorecard."""
    department, name = _split(dataset_id)
    now = _aware(now) if now else datetime.now(UTC)
    table = tables.describe_table(
        engine=engine, data_dir=data_dir, department=department, name=name
    )
    entry = catalog.find_entry(engine=engine, dataset_id=dataset_id)
    if entry is None:
        entry = _default_entry(table)
    version, newest = _newest_version(data_dir, department, name)
    con = duckdb.connect()
    try:
        con.register("t", tables.snapshot(tables._open(data_dir, department, name), table.columns))
        optional = set(rules().get("optional_fields", {}).get(dataset_id, []))
        counted = [c.name for c in table.columns if c.name not in optional]
        counts = con.execute(
            "select count(*)" + "".join(f", count({_q(c)})" for c in counted) + " from t"
        ).fetchall()[0]
        rows = int(counts[0])
        present = sum(int(v) for v in counts[1:])
        completeness = _pct(present, rows * len(counted))
        missing = {c: rows - int(v) for c, v in zip(counted, counts[1:], strict=True) if v != rows}
        key = ", ".join(_q(k) for k in table.primary_key)
        distinct = int(
            con.execute(f"select count(*) from (select distinct {key} from t)").fetchall()[0][0]
        )
        uniqueness = _pct(distinct, rows)
        validity, per_field = _validity(con, table, entry, now)
        consistency, rule_results = _consistency(
            con, engine=engine, data_dir=data_dir, dataset_id=dataset_id, table=table
        )
    finally:
        con.close()
    timeliness, time_detail = _timeliness(newest, entry.update_frequency, now)
    scores = {
        "completeness": completeness,
        "validity": validity,
        "uniqueness": uniqueness,
        "timeliness": timeliness,
        "consistency": consistency,
    }
    weights: dict[str, float] = rules()["weights"]
    used = {k: v for k, v in scores.items() if v is not None}
    overall = round(sum(weights[k] * v for k, v in used.items()) / sum(weights[k] for k in used), 2)
    card = Scorecard(
        id=uuid.uuid4().hex,
        dataset_id=dataset_id,
        owner_department=entry.owner_department,
        at=now,
        version=version,
        rows=rows,
        completeness=completeness,
        validity=validity,
        uniqueness=uniqueness,
        timeliness=timeliness,
        consistency=consistency,
        overall=overall,
        detail={
            "completeness": {"fields": counted, "optional": sorted(optional), "missing": missing},
            "validity": per_field,
            "uniqueness": {"key": table.primary_key, "distinct_keys": distinct},
            "timeliness": time_detail,
            "consistency": rule_results,
            "weights": {k: weights[k] for k in used},
        },
    )
    with engine.begin() as conn:
        conn.execute(insert(quality_scorecards).values(**card.model_dump()))
    if newest is not None:
        catalog.mark_updated(engine=engine, dataset_id=dataset_id, at=newest)
    return card


def _default_entry(table: TableRead) -> CatalogEntry:
    """Classify a table without a catalog entry as the built-in rules would."""
    created = catalog.builtin_entry(
        f"{table.department}/{table.name}",
        [c.model_dump(mode="json") for c in table.columns],
        table.description,
    )
    stamp = datetime.now(UTC)
    return CatalogEntry(
        **created.model_dump(exclude={"owner_department"}),
        owner_department=table.owner_department,
        kind="table",
        origin="builtin",
        updated_by="system",
        created_at=stamp,
        updated_at=stamp,
        last_updated=None,
    )


def _owner(engine: Engine, data_dir: Path, dataset_id: str) -> str:
    entry = catalog.find_entry(engine=engine, dataset_id=dataset_id)
    if entry is not None:
        return entry.owner_department
    department, name = _split(dataset_id)
    return tables.describe_table(
        engine=engine, data_dir=data_dir, department=department, name=name
    ).owner_department


def may_run(principal: Principal, owner_department: str) -> bool:
    """Return whether the principal may score a dataset of this owner."""
    if principal.role is Role.bureau_admin:
        return True
    return principal.role is Role.steward and principal.org == owner_department


def run_quality(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal,
    dataset_id: str | None = None,
    all_tables: bool = False,
    now: datetime | None = None,
) -> list[Scorecard]:
    """Score one dataset or every table the principal may score; audit and record lineage."""
    if (dataset_id is None) == (not all_tables):
        raise BadInput("name one dataset or ask for all of them, not both")
    # owners, frequencies and field rules come from the catalog: make sure every table has one
    catalog.ensure_builtin_entries(engine=engine, data_dir=data_dir)
    if dataset_id is not None:
        _split(dataset_id)
        owner = _owner(engine, data_dir, dataset_id)
        if not may_run(principal, owner):
            audit.append(
                data_dir=data_dir,
                principal=principal,
                action="quality.run",
                resource=dataset_id,
                result="denied",
            )
            raise Forbidden(f"only a steward of {owner} or the bureau may score {dataset_id}")
        targets = [dataset_id]
    else:
        targets = []
        for t in tables.list_tables(engine=engine, data_dir=data_dir):
            table_id = f"{t.department}/{t.name}"
            if may_run(principal, _owner(engine, data_dir, table_id)):
                targets.append(table_id)
    cards = []
    for target in targets:
        card = score_dataset(engine=engine, data_dir=data_dir, dataset_id=target, now=now)
        references = [r["reference"] for r in card.detail["consistency"] if "skipped" not in r]
        record_lineage(
            engine=engine,
            output=f"quality:{target}",
            inputs=[target, *references],
            activity="quality.run",
            detail={"scorecard": card.id, "overall": card.overall},
            at=card.at,
        )
        audit.append(
            data_dir=data_dir,
            principal=principal,
            action="quality.run",
            resource=target,
            result="ok",
            detail={"scorecard": card.id, "overall": card.overall, "version": card.version},
        )
        cards.append(card)
    return cards


def _card(row: Any) -> Scorecard:
    return Scorecard(
        id=row.id,
        dataset_id=row.dataset_id,
        owner_department=row.owner_department,
        at=_aware(row.at),
        version=row.version,
        rows=row.rows,
        completeness=row.completeness,
        validity=row.validity,
        uniqueness=row.uniqueness,
        timeliness=row.timeliness,
        consistency=row.consistency,
        overall=row.overall,
        detail=dict(row.detail),
    )


def history(*, engine: Engine, dataset_id: str, limit: int = 100) -> list[Scorecard]:
    """Return a dataset's scorecards, newest first."""
    _split(dataset_id)
    with engine.connect() as conn:
        rows = conn.execute(
            select(quality_scorecards)
            .where(quality_scorecards.c.dataset_id == dataset_id)
            .order_by(quality_scorecards.c.at.desc(), quality_scorecards.c.id)
            .limit(limit)
        ).all()
    return [_card(r) for r in rows]


def latest(*, engine: Engine, dataset_id: str) -> Scorecard:
    """Return a dataset's newest scorecard; NotFound when it was never scored."""
    cards = history(engine=engine, dataset_id=dataset_id, limit=1)
    if not cards:
        raise NotFound(f"{dataset_id} has no quality scorecard yet")
    return cards[0]


def department_scorecard(*, engine: Engine, department: str | None = None) -> list[DepartmentScore]:
    """Return each department's mean scores over the latest scorecard of each of its datasets."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(quality_scorecards).order_by(
                quality_scorecards.c.dataset_id, quality_scorecards.c.at.desc()
            )
        ).all()
    newest: dict[str, Any] = {}
    for row in rows:
        newest.setdefault(row.dataset_id, row)
    groups: dict[str, list[Any]] = defaultdict(list)
    for row in newest.values():
        if department is None or row.owner_department == department:
            groups[row.owner_department].append(row)
    out = []
    for owner, cards in sorted(groups.items()):

        def mean(name: str, items: list[Any] = cards) -> float | None:
            values = [getattr(c, name) for c in items if getattr(c, name) is not None]
            return round(sum(values) / len(values), 2) if values else None

        out.append(
            DepartmentScore(
                department=owner,
                datasets=len(cards),
                completeness=mean("completeness") or 0.0,
                validity=mean("validity") or 0.0,
                uniqueness=mean("uniqueness") or 0.0,
                timeliness=mean("timeliness") or 0.0,
                consistency=mean("consistency"),
                overall=mean("overall") or 0.0,
                at=max(_aware(c.at) for c in cards),
            )
        )
    return out
