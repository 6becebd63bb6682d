"""Compute indicator trees per administrative unit, keep them as time series, explain, compare.

The only module of the indicators that touches storage: the Delta snapshots of departmental
tables (read through DuckDB as a system computation that returns aggregates per unit, never
records), the NGSI-LD history, quality scorecards, and the indicator_values table.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import Engine, func, insert, select

from citybrain.core.config import Settings
from citybrain.core.errors import BadInput, CityBrainError, NotFound
from citybrain.decisions.indicators import formulas, scoring
from citybrain.decisions.indicators.models import (
    ROLLUP,
    ChildResult,
    Comparison,
    ComputeResult,
    ExplainChild,
    Explanation,
    Group,
    Item,
    ItemFailure,
    NodeRead,
    Tree,
    TreeRead,
    TreeSummary,
    UnitValue,
    ValueRead,
    indicator_runs,
    indicator_values,
)
from citybrain.decisions.indicators.scoring import ROOT, Node
from citybrain.geo import service as geo
from citybrain.governance.audit import service as audit
from citybrain.governance.lineage import service as lineage
from citybrain.governance.principal import Principal
from citybrain.governance.quality import service as quality
from citybrain.hub.ngsild.models import ngsild_history
from citybrain.hub.tables import service as tables
from citybrain.hub.tables.models import ColumnSpec

log = logging.getLogger("citybrain.indicators")
SENSOR_WINDOW = timedelta(hours=24)
EVENTS_MODULE = "citybrain.events.service"
EVENTS_FUNCTION = "indicator_facts"
_ARROW = {
    "VARCHAR": pa.string(),
    "BOOLEAN": pa.bool_(),
    "DOUBLE": pa.float64(),
    "BIGINT": pa.int64(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
}
Clock = Callable[[], datetime]


def now() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


# ---------------------------------------------------------------- trees


def _node_read(tree: Tree, nodes: dict[str, Node], code: str) -> NodeRead:
    node = nodes[code]
    if node.group is not None:
        g = node.group
        kids = [c.code for c in (g.groups or g.items)]
        return NodeRead(
            code=g.code,
            kind="group",
            level=node.level,
            name_zh=g.name_zh,
            name_en=g.name_en,
            weight=g.weight,
            effective_weight=round(node.share * 100, 4),
            confirmed=g.confirmed,
            source=g.source,
            note=g.note,
            children=[_node_read(tree, nodes, k) for k in kids],
        )
    it = node.item
    assert it is not None
    return NodeRead(
        code=it.code,
        kind="item",
        level=node.level,
        name_zh=it.name_zh,
        name_en=it.name_en,
        weight=it.weight,
        effective_weight=round(node.share * 100, 4),
        confirmed=it.confirmed,
        source=it.source,
        note=it.note,
        unit=it.unit,
        direction=it.direction.value,
        target=it.target,
        bands=it.bands.model_dump() if it.bands else None,
        formula=it.formula.sql if it.formula else None,
        formula_text=it.formula_text,
        inputs=it.formula.inputs if it.formula else [],
        rollup=it.rollup,
    )


def _summary(tree: Tree) -> dict[str, Any]:
    nodes = scoring.validate_tree(tree)
    items = [n.item for n in nodes.values() if n.item is not None]
    return {
        "id": tree.id,
        "name_zh": tree.name_zh,
        "name_en": tree.name_en,
        "standard": tree.standard,
        "confirmed": tree.confirmed,
        "groups": sum(1 for n in nodes.values() if n.group is not None),
        "items": len(items),
        "items_with_formula": sum(1 for i in items if i.formula is not None),
    }


def list_trees() -> list[TreeSummary]:
    """Return the shipped trees."""
    return [TreeSummary(**_summary(t)) for t in scoring.shipped_trees().values()]


def describe_tree(*, tree: str) -> TreeRead:
    """Return a tree with every group and item, their weights, formulas and bands."""
    t = scoring.get_tree(tree)
    nodes = scoring.validate_tree(t)
    return TreeRead(
        **_summary(t),
        source=t.source,
        note=t.note,
        weight_basis=t.weight_basis,
        stars=t.stars,
        stars_confirmed=t.stars_confirmed,
        children=[_node_read(t, nodes, g.code) for g in t.groups],
    )


# ---------------------------------------------------------------- sources of formulas


def _empty(source: formulas.Source) -> pa.Table:
    return pa.schema([(c, _ARROW[t]) for c, t in source.columns.items()]).empty_table()


def _as_table(source: formulas.Source, rows: Any) -> pa.Table:
    schema = pa.schema([(c, _ARROW[t]) for c, t in source.columns.items()])
    if isinstance(rows, pa.Table):
        return rows.select(list(source.columns)).cast(schema)
    return pa.Table.from_pylist([{c: r.get(c) for c in source.columns} for r in rows], schema)


def _load_source(
    name: str, *, engine: Engine, start: datetime, end: datetime, at: datetime
) -> tuple[pa.Table | None, str | None]:
    """Return a source's rows, or None and why it is absent on this node."""
    source = formulas.SOURCES[name]
    if name == "sensor_observations":
        since = min(at, end) - SENSOR_WINDOW
        with engine.connect() as conn:
            rows = conn.execute(
                select(ngsild_history.c.entity_id, func.max(ngsild_history.c.at))
                .where(ngsild_history.c.at >= since, ngsild_history.c.at <= min(at, end))
                .group_by(ngsild_history.c.entity_id)
            ).all()
        keys: dict[str, datetime] = {}
        for entity_id, last in rows:
            key = str(entity_id).rsplit(":", 1)[-1]
            stamp = last if last.tzinfo else last.replace(tzinfo=UTC)
            keys[key] = max(stamp, keys.get(key, stamp))
        return _as_table(source, [{"device_key": k, "last_at": v} for k, v in keys.items()]), None
    if name == "quality_scores":
        cards = quality.department_scorecard(engine=engine)
        return _as_table(source, [c.model_dump() for c in cards]), None
    # the event centre is another domain, possibly not installed: no data, never an error
    try:
        provider = getattr(importlib.import_module(EVENTS_MODULE), EVENTS_FUNCTION)
    except (ImportError, AttributeError):
        return None, f"the event centre is not on this node ({source.provider})"
    return _as_table(source, provider(engine=engine, start=start, end=end)), None


class _Runner:
    """One DuckDB connection with the node's tables and sources as views, for one computation."""

    def __init__(
        self,
        *,
        engine: Engine,
        data_dir: Path,
        code: str,
        pairs: list[tuple[str, str]],
        period: str,
        inputs: set[str],
        at: datetime,
    ) -> None:
        self.con = duckdb.connect()
        self.missing: dict[str, str] = {}  # input -> why it cannot be read (an error)
        self.absent: dict[str, str] = {}  # source -> why it is not there (no data)
        first, last = formulas.period_bounds(period)
        start = datetime(first.year, first.month, first.day, tzinfo=UTC)
        end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
        self.con.register(
            "unit_map",
            pa.table(
                {"county_code": [p[0] for p in pairs], "unit_code": [p[1] for p in pairs]},
                schema=pa.schema([("county_code", pa.string()), ("unit_code", pa.string())]),
            ),
        )
        self.con.register("node", pa.table({"unit_code": [code]}))
        self.con.register(
            "period",
            pa.table({"period": [period], "period_start": [first], "period_end": [last]}),
        )
        for name in sorted(inputs):
            kind, value = formulas.parse_input(name)
            try:
                if kind == "table":
                    self._table(engine, data_dir, value)
                else:
                    table, why = _load_source(value, engine=engine, start=start, end=end, at=at)
                    if table is None:
                        self.absent[name] = why or "absent"
                        # an empty view keeps SQL over it valid; the item reports no data
                        self.con.register(value, _empty(formulas.SOURCES[value]))
                    else:
                        self.con.register(value, table)
            except CityBrainError as exc:
                self.missing[name] = exc.message
            except Exception as exc:  # a provider's failure is that item's error, not ours
                self.missing[name] = f"{name} could not be read: {exc}"
        # formulas are data queries: no files, no network, whatever their text says
        self.con.execute("set enable_external_access = false")

    def _table(self, engine: Engine, data_dir: Path, dataset: str) -> None:
        # the same registration as tables.service.evaluate: the current Delta snapshot as a view
        department, name = dataset.split("/", 1)
        try:
            row = tables._spec_row(engine, department, name)
        except NotFound:
            raise NotFound(f"table {dataset} is not on this node") from None
        columns = [ColumnSpec.model_validate(c) for c in row.columns]
        snap = tables.snapshot(tables._open(data_dir, department, name), columns)
        self.con.execute(f'create schema if not exists "{department}"')
        self.con.register(f"__{department}__{name}", snap)
        self.con.execute(
            f'create view "{department}"."{name}" as select * from "__{department}__{name}"'
        )

    def run(self, item: Item, units: list[str]) -> tuple[dict[str, float | None], str | None]:
        """Run an item's formula; return values by unit, or the reason it has none."""
        assert item.formula is not None
        for name in item.formula.inputs:
            if name in self.missing:
                raise ValueError(self.missing[name])
        rows = self.con.execute(formulas.wrap(item.formula.sql)).fetchall()
        values = formulas.read_rows(rows, units)
        absent = [self.absent[n] for n in item.formula.inputs if n in self.absent]
        return values, absent[0] if absent and not values else None

    def close(self) -> None:
        self.con.close()


# ---------------------------------------------------------------- scoring and aggregation


def _item_row(tree: Tree, item: Item, value: float | None) -> dict[str, Any]:
    """Score one value of an item: score, stars and the band it fell in."""
    if value is None:
        return {"value": None, "score": None, "stars": None, "detail": {}}
    score, band = scoring.score_value(item, value)
    return {
        "value": value,
        "score": None if score is None else round(score, 4),
        "stars": scoring.stars_of(tree, score),
        "detail": {"band": band} if band else {"band": None, "scored": False},
    }


def _aggregate(
    tree: Tree, nodes: dict[str, Node], scores: dict[str, float | None], status: dict[str, str]
) -> list[dict[str, Any]]:
    """Weighted scores of every group and of the tree from item scores, deepest first."""
    children: dict[str, list[Node]] = {}
    for node in nodes.values():
        children.setdefault(node.parent, []).append(node)
    out: list[dict[str, Any]] = []

    def visit(code: str) -> float | None:
        kids = children.get(code, [])
        parts: list[dict[str, Any]] = []
        pairs: list[tuple[float, float | None]] = []
        for kid in kids:
            score = visit(kid.code) if kid.group is not None else scores.get(kid.code)
            kid_status = status.get(kid.code, "no_data")
            # a context item (weight 0) or an unscored item does not count towards its group
            pairs.append((kid.share, score))
            parts.append(
                {
                    "code": kid.code,
                    "kind": "group" if kid.group is not None else "item",
                    "share": round(kid.share, 6),
                    "score": None if score is None else round(score, 4),
                    "stars": scoring.stars_of(tree, score),
                    "status": kid_status,
                }
            )
        score, coverage = scoring.weighted_score(pairs)
        status[code] = "ok" if score is not None else "no_data"
        out.append(
            {
                "item": code,
                "kind": "tree" if code == ROOT else "group",
                "value": None if score is None else round(score, 4),
                "score": None if score is None else round(score, 4),
                "stars": scoring.stars_of(tree, score),
                "status": status[code],
                "reason": None if score is not None else "no child of this group has a score",
                "detail": {"coverage": round(coverage, 6), "children": parts},
            }
        )
        return score

    visit(ROOT)
    return out


def _unit_rows(
    tree: Tree, nodes: dict[str, Node], results: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Rows for one unit: its item results as given, then every group and the tree."""
    scores = {code: r.get("score") for code, r in results.items()}
    status = {code: r["status"] for code, r in results.items()}
    rows = [{"item": code, "kind": "item", **r} for code, r in results.items()]
    return rows + _aggregate(tree, nodes, scores, status)


def _store(
    *,
    engine: Engine,
    run_id: str,
    tree: str,
    period: str,
    at: datetime,
    per_unit: dict[str, list[dict[str, Any]]],
    source: Callable[[str], str],
) -> None:
    batch = [
        {
            "id": uuid.uuid4().hex,
            "run_id": run_id,
            "tree": tree,
            "item": r["item"],
            "kind": r["kind"],
            "unit": unit,
            "period": period,
            "value": r.get("value"),
            "score": r.get("score"),
            "stars": r.get("stars"),
            "status": r["status"],
            "reason": r.get("reason"),
            "source": source(unit),
            "computed_at": at,
            "inputs": r.get("inputs", []),
            "detail": r.get("detail", {}),
        }
        for unit, rows in per_unit.items()
        for r in rows
    ]
    if batch:
        with engine.begin() as conn:
            conn.execute(insert(indicator_values), batch)


# ---------------------------------------------------------------- compute


def compute(
    *,
    engine: Engine,
    data_dir: Path,
    code: str,
    level: str,
    tree: str,
    period: str | None = None,
    principal: Principal | None = None,
    trigger: str = "api",
    clock: Clock = now,
    definition: Tree | None = None,
) -> ComputeResult:
    """Compute a tree for the node's unit and its child units; keep and return what happened.

    A formula that fails (bad SQL, a table the node does not hold) is recorded as an error of
    that item with its reason; the other items are computed. `definition` replaces the
    shipped tree of that id (tests, local trees).
    """
    t = definition or scoring.get_tree(tree)
    nodes = scoring.validate_tree(t)
    at = clock()
    period = period or formulas.current_period(at)
    formulas.period_bounds(period)
    units, pairs = formulas.unit_scope(code, level)
    started = time.perf_counter()
    items = [n.item for n in nodes.values() if n.item is not None]
    inputs = {i for it in items if it.formula for i in it.formula.inputs}
    for name in inputs:
        formulas.parse_input(name)
    runner = _Runner(
        engine=engine,
        data_dir=data_dir,
        code=code,
        pairs=pairs,
        period=period,
        inputs=inputs,
        at=at,
    )
    results: dict[str, dict[str, dict[str, Any]]] = {u: {} for u in units}
    failures: list[ItemFailure] = []
    counts = {"ok": 0, "no_data": 0, "error": 0}
    try:
        for it in items:
            if it.formula is None:
                for unit in units:
                    results[unit][it.code] = {
                        **_item_row(t, it, None),
                        "status": "no_data",
                        "reason": "no formula: no department of a node holds the data it needs",
                    }
                counts["no_data"] += 1
                continue
            try:
                values, absent = runner.run(it, units)
            except (duckdb.Error, ValueError, BadInput) as exc:
                reason = str(getattr(exc, "message", exc)).strip().splitlines()[0][:500]
                failures.append(ItemFailure(item=it.code, reason=reason))
                counts["error"] += 1
                for unit in units:
                    results[unit][it.code] = {
                        **_item_row(t, it, None),
                        "status": "error",
                        "reason": reason,
                        "inputs": it.formula.inputs,
                    }
                continue
            any_value = False
            for unit in units:
                value = values.get(unit)
                any_value = any_value or value is not None
                results[unit][it.code] = {
                    **_item_row(t, it, value),
                    "status": "ok" if value is not None else "no_data",
                    "reason": None
                    if value is not None
                    else (absent or "the formula gave no value for this unit"),
                    "inputs": it.formula.inputs,
                }
            counts["ok" if any_value else "no_data"] += 1
            if any_value:
                lineage.record_lineage(
                    engine=engine,
                    output=f"indicator:{t.id}/{it.code}",
                    inputs=formulas.lineage_inputs(it.formula.inputs),
                    activity="indicator.compute",
                    detail={"period": period, "units": len(units)},
                    at=at,
                )
    finally:
        runner.close()
    run_id = uuid.uuid4().hex
    per_unit = {u: _unit_rows(t, nodes, results[u]) for u in units}
    _store(
        engine=engine,
        run_id=run_id,
        tree=t.id,
        period=period,
        at=at,
        per_unit=per_unit,
        source=lambda _u: "local",
    )
    seconds = time.perf_counter() - started
    with engine.begin() as conn:
        conn.execute(
            insert(indicator_runs).values(
                id=run_id,
                tree=t.id,
                period=period,
                node=code,
                trigger=trigger,
                started_at=at,
                finished_at=at + timedelta(seconds=seconds),
                items_ok=counts["ok"],
                items_no_data=counts["no_data"],
                items_failed=counts["error"],
                detail={"failures": [f.model_dump() for f in failures], "units": units},
            )
        )
    audit.append(
        data_dir=data_dir,
        principal=principal,
        action="indicator.compute",
        resource=f"indicator:{t.id}",
        result="ok" if not failures else "partial",
        rows=len(units),
        detail={"period": period, "run": run_id, **counts},
    )
    return ComputeResult(
        run_id=run_id,
        tree=t.id,
        period=period,
        units=units,
        items_ok=counts["ok"],
        items_no_data=counts["no_data"],
        items_failed=counts["error"],
        failures=failures,
        computed_at=at,
        seconds=round(seconds, 4),
    )


# ---------------------------------------------------------------- reading values


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _value(row: Any) -> ValueRead:
    return ValueRead(
        tree=row.tree,
        item=row.item,
        kind=row.kind,
        unit=row.unit,
        period=row.period,
        value=row.value,
        score=row.score,
        stars=row.stars,
        status=row.status,
        reason=row.reason,
        source=row.source,
        computed_at=_aware(row.computed_at),
        inputs=list(row.inputs or []),
    )


def _rows(
    *,
    engine: Engine,
    tree: str,
    item: str | None = None,
    unit: str | None = None,
    units: list[str] | None = None,
    period: str | None = None,
) -> list[Any]:
    c = indicator_values.c
    query = select(indicator_values).where(c.tree == tree)
    if item is not None:
        query = query.where(c.item == item)
    if unit is not None:
        query = query.where(c.unit == unit)
    if units is not None:
        query = query.where(c.unit.in_(units))
    if period is not None:
        query = query.where(c.period == period)
    with engine.connect() as conn:
        return list(conn.execute(query.order_by(c.computed_at.desc(), c.id)))


def _latest_period(*, engine: Engine, tree: str) -> str | None:
    c = indicator_values.c
    with engine.connect() as conn:
        row = conn.execute(
            select(c.period).where(c.tree == tree).order_by(c.computed_at.desc()).limit(1)
        ).first()
    return None if row is None else str(row.period)


def values(
    *,
    engine: Engine,
    tree: str,
    item: str | None = None,
    unit: str | None = None,
    period: str | None = None,
    history: bool = False,
    limit: int = 1000,
) -> list[ValueRead]:
    """Return stored values, the latest per item, unit and period (every one with history)."""
    scoring.get_tree(tree)
    if period is not None:
        formulas.period_bounds(period)
    rows = _rows(engine=engine, tree=tree, item=item, unit=unit, period=period)
    if not history:
        seen: set[tuple[str, str, str]] = set()
        latest = []
        for r in rows:
            key = (r.item, r.unit, r.period)
            if key not in seen:
                seen.add(key)
                latest.append(r)
        rows = latest
    return [_value(r) for r in rows[:limit]]


def _latest(*, engine: Engine, tree: str, item: str, unit: str, period: str | None) -> Any | None:
    rows = _rows(engine=engine, tree=tree, item=item, unit=unit, period=period)
    return rows[0] if rows else None


def explain(
    *, engine: Engine, tree: str, item: str, unit: str, period: str | None = None
) -> Explanation:
    """Explain a stored score down to its inputs: formula, value, band, score, stars, children."""
    t = scoring.get_tree(tree)
    nodes = scoring.validate_tree(t)
    if item != ROOT and item not in nodes:
        raise NotFound(f"tree {tree} has no item or group {item!r} (the whole tree is '*')")
    period = period or _latest_period(engine=engine, tree=tree)
    row = (
        None
        if period is None
        else _latest(engine=engine, tree=tree, item=item, unit=unit, period=period)
    )
    if row is None:
        raise NotFound(f"no value of {tree}/{item} for {unit}; compute the tree first")
    detail = dict(row.detail or {})
    node = nodes.get(item)
    base: dict[str, Any] = {
        "tree": tree,
        "item": item,
        "kind": row.kind,
        "unit": unit,
        "period": row.period,
        "status": row.status,
        "reason": row.reason,
        "value": row.value,
        "score": row.score,
        "stars": row.stars,
        "stars_rule": t.stars,
        "computed_at": _aware(row.computed_at),
        "inputs": list(row.inputs or []),
    }
    if node is not None and node.item is not None:
        it = node.item
        return Explanation(
            **base,
            name_zh=it.name_zh,
            name_en=it.name_en,
            unit_of_measure=it.unit,
            direction=it.direction.value,
            target=it.target,
            formula=it.formula.sql.strip() if it.formula else None,
            bands=it.bands.model_dump() if it.bands else None,
            band=detail.get("band"),
            confirmed=it.confirmed,
        )
    group: Group | None = None if node is None else node.group
    children = [
        ExplainChild(
            code=c["code"],
            kind=c["kind"],
            name_en=_name(nodes, c["code"]),
            weight=round(c["share"] * 100, 4),
            score=c["score"],
            stars=c["stars"],
            status=c["status"],
            contribution=None if c["score"] is None else round(c["share"] * c["score"], 4),
        )
        for c in detail.get("children", [])
    ]
    return Explanation(
        **base,
        name_zh=group.name_zh if group else t.name_zh,
        name_en=group.name_en if group else t.name_en,
        coverage=detail.get("coverage"),
        children=children,
        confirmed=group.confirmed if group else t.confirmed,
    )


def _name(nodes: dict[str, Node], code: str) -> str:
    node = nodes.get(code)
    if node is None:
        return code
    return node.group.name_en if node.group else node.item.name_en if node.item else code


def compare(
    *,
    engine: Engine,
    tree: str,
    units: list[str],
    period: str | None = None,
    item: str | None = None,
) -> Comparison:
    """Put units side by side: the tree and its level-1 groups, or one group's children."""
    t = scoring.get_tree(tree)
    nodes = scoring.validate_tree(t)
    if not units or len(units) > 200:
        raise BadInput("compare 1 to 200 units (units=CODE,CODE,...)")
    for u in units:
        geo.get_unit(u)
    if item is not None and item != ROOT and item not in nodes:
        raise NotFound(f"tree {tree} has no item or group {item!r}")
    if item is None or item == ROOT:
        codes = [ROOT] + [g.code for g in t.groups]
    elif nodes[item].group is not None:
        group = nodes[item].group
        assert group is not None
        codes = [item] + [c.code for c in (group.groups or group.items)]
    else:
        codes = [item]
    period = period or _latest_period(engine=engine, tree=tree)
    latest: dict[tuple[str, str], Any] = {}
    if period is not None:
        for r in _rows(engine=engine, tree=tree, units=units, period=period):
            latest.setdefault((r.item, r.unit), r)
    rows = []
    for code in codes:
        cells: dict[str, Any] = {}
        for u in units:
            r = latest.get((code, u))
            cells[u] = (
                {"value": None, "score": None, "stars": None, "status": "no_data"}
                if r is None
                else {"value": r.value, "score": r.score, "stars": r.stars, "status": r.status}
            )
        scored = [(u, c["score"]) for u, c in cells.items() if c["score"] is not None]
        ranking = [u for u, _ in sorted(scored, key=lambda p: -p[1])]
        rows.append(
            {
                "code": code,
                "name_en": t.name_en if code == ROOT else _name(nodes, code),
                "kind": "tree" if code == ROOT else ("group" if nodes[code].group else "item"),
                "values": cells,
                "ranking": ranking,
            }
        )
    return Comparison(tree=tree, period=period, units=units, rows=rows)


# ---------------------------------------------------------------- roll-up seam for federation


def combine_child_values(tree: str, item: str, child_values: list[UnitValue]) -> float | None:
    """Combine child units' values of an item as the item declares (sum, mean, weighted_mean).

    For weighted_mean(W), each UnitValue carries the child's value of item W as its weight.
    """
    nodes = scoring.validate_tree(scoring.get_tree(tree))
    node = nodes.get(item)
    if node is None or node.item is None:
        raise NotFound(f"tree {tree} has no item {item!r}")
    return scoring.combine(node.item.rollup, child_values)


def _weight_item(rollup: str) -> str | None:
    match = ROLLUP.match(rollup)
    return None if match is None else match.group(2)


def ingest_child_results(
    *,
    engine: Engine,
    results: list[ChildResult],
    code: str | None = None,
    clock: Clock = now,
) -> dict[str, int]:
    """Store item values computed by child nodes and roll them up into this node's unit.

    Each result is a child unit's own value of an item. The child units' groups and tree
    are re-scored with this node's tree, and this node's unit gets, per item, the roll-up of
    the latest values of all its children for that period (source "rollup").
    """
    from citybrain.node import service as node_service

    parent = code or node_service.node_code(engine=engine)
    children = (
        {u.code for u in geo.children(parent)}
        if geo.get_unit(parent).level.value
        in (
            "province",
            "city",
        )
        else set()
    )
    at = clock()
    touched: dict[tuple[str, str], set[str]] = {}
    # each tree is validated once per ingest, not once per value
    validated: dict[str, dict[str, Node]] = {}
    for r in results:
        if r.tree not in validated:
            validated[r.tree] = scoring.validate_tree(scoring.get_tree(r.tree))
        nodes = validated[r.tree]
        if r.item not in nodes or nodes[r.item].item is None:
            raise BadInput(f"tree {r.tree} has no item {r.item!r}")
        if r.unit not in children:
            raise BadInput(f"{r.unit} is not a child unit of {parent}")
        formulas.period_bounds(r.period)
        touched.setdefault((r.tree, r.period), set()).add(r.unit)
    stored = rolled = 0
    for (tree_id, period), units in touched.items():
        t = scoring.get_tree(tree_id)
        nodes = validated[tree_id]
        given = {(r.unit, r.item): r for r in results if r.tree == tree_id and r.period == period}
        per_unit: dict[str, list[dict[str, Any]]] = {}
        for unit in sorted(units):
            rows: dict[str, dict[str, Any]] = {}
            for node in nodes.values():
                if node.item is None:
                    continue
                got = given.get((unit, node.code))
                if got is None:
                    continue
                value = got.value if got.status == "ok" else None
                rows[node.code] = {
                    **_item_row(t, node.item, value),
                    "status": "ok" if value is not None else got.status,
                    "reason": None if value is not None else f"reported {got.status} by {unit}",
                    "inputs": [f"child:{unit}"],
                }
                stored += 1
            per_unit[unit] = _unit_rows(t, nodes, rows)
        run_id = uuid.uuid4().hex
        _store(
            engine=engine,
            run_id=run_id,
            tree=tree_id,
            period=period,
            at=at,
            per_unit=per_unit,
            source=lambda u: f"child:{u}",
        )
        # the parent's own unit: latest child value of every item, combined by its rule; the
        # children that answered now give theirs, the store the others' last (one query)
        latest: dict[tuple[str, str], float | None] = {
            (unit, item): (got.value if got.status == "ok" else None)
            for (unit, item), got in given.items()
        }
        silent = sorted(children - units)
        if silent:
            for row in _rows(engine=engine, tree=tree_id, units=silent, period=period):
                if row.kind == "item" and str(row.source).startswith("child:"):
                    latest.setdefault((row.unit, row.item), row.value)
        parent_rows: dict[str, dict[str, Any]] = {}
        for node in nodes.values():
            if node.item is None:
                continue
            weight_item = _weight_item(node.item.rollup)
            child_values = [
                UnitValue(
                    unit=u,
                    value=latest.get((u, node.code)),
                    weight=None if weight_item is None else latest.get((u, weight_item)),
                )
                for u in sorted(children)
                if (u, node.code) in latest
            ]
            value = scoring.combine(node.item.rollup, child_values)
            parent_rows[node.code] = {
                **_item_row(t, node.item, value),
                "status": "ok" if value is not None else "no_data",
                "reason": None if value is not None else "no child reported a value",
                "inputs": [f"child:{v.unit}" for v in child_values],
                "detail": {
                    **_item_row(t, node.item, value)["detail"],
                    "rollup": node.item.rollup,
                    "children": len(child_values),
                },
            }
            rolled += value is not None
        _store(
            engine=engine,
            run_id=run_id,
            tree=tree_id,
            period=period,
            at=at,
            per_unit={parent: _unit_rows(t, nodes, parent_rows)},
            source=lambda _u: "rollup",
        )
        with engine.begin() as conn:
            conn.execute(
                insert(indicator_runs).values(
                    id=run_id,
                    tree=tree_id,
                    period=period,
                    node=parent,
                    trigger="ingest",
                    started_at=at,
                    finished_at=clock(),
                    items_ok=rolled,
                    items_no_data=0,
                    items_failed=0,
                    detail={"children": sorted(units)},
                )
            )
    return {"stored": stored, "rolled_up": rolled}


def export_results(
    *, engine: Engine, tree: str, unit: str, period: str | None = None
) -> list[ChildResult]:
    """Return this node's latest item values of its own unit, as a parent ingests them."""
    t = scoring.get_tree(tree)
    items = {n.code for n in scoring.validate_tree(t).values() if n.item is not None}
    period = period or _latest_period(engine=engine, tree=tree)
    if period is None:
        return []
    out = []
    for v in values(engine=engine, tree=tree, unit=unit, period=period):
        if v.item in items:
            status = v.status if v.status in ("ok", "no_data", "error") else "no_data"
            out.append(
                ChildResult(
                    tree=tree,
                    item=v.item,
                    unit=unit,
                    period=v.period,
                    value=v.value,
                    status=status,
                    computed_at=v.computed_at,
                )
            )
    return out


# ---------------------------------------------------------------- schedule


async def _rollup_children(*, engine: Engine, settings: Settings, trees: list[str] | None) -> None:
    """Pull the trusted children's values of every tree (a node with no children skips)."""
    # imported here: federation's roll-up calls this module's ingest function
    from citybrain.federation import rollup, trust
    from citybrain.federation.models import Relation

    if not trust.list_peers(engine=engine, relation=Relation.child):
        return
    for tree in trees or sorted(scoring.shipped_trees()):
        try:
            await asyncio.to_thread(rollup.rollup, engine=engine, settings=settings, tree=tree)
        except Exception:  # a failed roll-up is retried at the next run
            log.exception("scheduled indicator roll-up failed", extra={"tree": tree})


async def run_schedule(
    *,
    engine: Engine,
    settings: Settings,
    every: float = 3600.0,
    first_after: float = 60.0,
    clock: Clock = now,
    trees: list[str] | None = None,
    iterations: int | None = None,
) -> None:
    """Compute every tree for the current period now and then, until cancelled.

    Each tree is computed in a child process (scheduled.py), so the requests the node
    serves meanwhile do not wait for it. A node with children then rolls their values up
    (citybrain.federation.rollup). The first run waits `first_after` seconds so a starting
    node serves requests at once; a failure is logged and the loop goes on.
    """
    from citybrain.decisions.indicators.scheduled import compute_in_child

    done = 0
    await asyncio.sleep(first_after)
    while iterations is None or done < iterations:
        every_tree = trees or sorted(scoring.shipped_trees())
        if clock is now:  # in a process of its own, off the serving interpreter
            try:
                await compute_in_child(settings, every_tree)
            except Exception:  # the schedule outlives one bad run
                log.exception("scheduled indicator computation failed", extra={"trees": every_tree})
        # an injected clock (tests) cannot cross to a child: computed here
        for tree in every_tree if clock is not now else []:
            try:
                await asyncio.to_thread(
                    compute,
                    engine=engine,
                    data_dir=settings.data_dir,
                    code=settings.code,
                    level=settings.level.value,
                    tree=tree,
                    trigger="schedule",
                    clock=clock,
                )
            except Exception:  # the schedule outlives one bad run
                log.exception("scheduled indicator computation failed", extra={"tree": tree})
        await _rollup_children(engine=engine, settings=settings, trees=trees)
        done += 1
        if iterations is not None and done >= iterations:
            break
        await asyncio.sleep(every)
