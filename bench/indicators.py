"""Indicator computation for all 16 cities and 136 counties from demo-scale synthetic data.

`citybrain synth --scale 0.001` (the whole province; CITYBRAIN_BENCH_INDICATORS_SCALE to
change it) is generated once; each city's folder becomes a city node whose Parquet files are
imported as Delta tables (timed apart as "load"). The measured work: every city node computes
the three shipped trees for itself and its counties (formulas, scores, stars, groups, stored
time series, lineage, audit), then the province node ingests the cities' results and rolls
them up. The reference, in the same run: the same formulas as one raw DuckDB query (a UNION
ALL of every formula) over the same Parquet files of all cities at once, with the same
unit_map, computing the same values for the same 152 units with none of the engine around it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report  # noqa: E402
from citybrain.core.config import load_settings  # noqa: E402
from citybrain.core.db import create_engine_for, upgrade  # noqa: E402
from citybrain.decisions.indicators import formulas, scoring, service  # noqa: E402
from citybrain.geo import service as geo  # noqa: E402
from citybrain.hub.tables.importer import import_synth_tables  # noqa: E402
from citybrain.node import service as node_service  # noqa: E402

SCALE = os.environ.get("CITYBRAIN_BENCH_INDICATORS_SCALE", "0.001")
TREES = ["operational", "u4ssc", "gbt33356"]
PERIOD = "2026-11"


def _synth(out: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "citybrain", "synth", "--scale", SCALE, "--seed", "7"]
        + ["--out", str(out), "--workers", "4"],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def _node(data: Path, code: str, level: str) -> Any:
    settings = load_settings(data_dir=data, code=code, level=level)
    engine = create_engine_for(settings.effective_database_url)
    upgrade(engine)
    node_service.init_node(engine=engine, settings=settings)
    return engine


def _reference(out: Path, cities: list[str]) -> tuple[float, dict[tuple[str, str], float | None]]:
    """Every formula of every tree as one UNION ALL query over all cities' Parquet files."""
    con = duckdb.connect()
    pairs: list[tuple[str, str]] = []
    for city in cities:
        pairs += formulas.unit_scope(city, "city")[1]
    con.execute("create table unit_map(county_code varchar, unit_code varchar)")
    con.executemany("insert into unit_map values (?, ?)", pairs)
    con.execute("create table node as select '370000' as unit_code")
    con.execute(
        f"create table period as select '{PERIOD}' as period, "
        "date '2026-11-01' as period_start, date '2026-11-30' as period_end"
    )
    for name, source in formulas.SOURCES.items():
        cols = ", ".join(f"{c} {t}" for c, t in source.columns.items())
        con.execute(f"create table {name} ({cols})")
    parts: list[str] = []
    for tree_id in TREES:
        tree = scoring.get_tree(tree_id)
        for node in scoring.validate_tree(tree).values():
            item = node.item
            if item is None or item.formula is None:
                continue
            for name in item.formula.inputs:
                kind, table = formulas.parse_input(name)
                if kind == "table":
                    dept, tname = table.split("/")
                    con.execute(f'create schema if not exists "{dept}"')
                    con.execute(
                        f'create or replace view "{dept}"."{tname}" as select * from '
                        f"read_parquet('{out}/37??00/{dept}/{tname}.parquet')"
                    )
            parts.append(
                f"select '{tree_id}/{item.code}' as item, * from ({item.formula.sql.strip()})"
            )
    sql = "\nunion all\n".join(parts)
    start = time.perf_counter()
    rows = con.execute(sql).fetchall()
    seconds = time.perf_counter() - start
    con.close()
    return seconds, {(r[0], str(r[1])): r[2] for r in rows}


def main() -> None:
    """Generate, load, compute, compare with the raw query, report."""
    with tempfile.TemporaryDirectory(prefix="citybrain-bench-indicators-") as tmp:
        root = Path(tmp)
        synth_seconds = _synth(root / "synth")
        cities = [u.code for u in geo.list_units("city")]
        engines: dict[str, Any] = {}
        start = time.perf_counter()
        for city in cities:
            data = root / "nodes" / city
            shutil.copytree(root / "synth" / city, data)
            engines[city] = _node(data, city, "city")
            import_synth_tables(engine=engines[city], data_dir=data)
        load_seconds = time.perf_counter() - start
        province = _node(root / "nodes" / "370000", "370000", "province")

        start = time.perf_counter()
        failures = 0
        computed: dict[tuple[str, str], float | None] = {}
        for city in cities:
            for tree in TREES:
                result = service.compute(
                    engine=engines[city],
                    data_dir=root / "nodes" / city,
                    code=city,
                    level="city",
                    tree=tree,
                    period=PERIOD,
                    trigger="cli",
                )
                failures += result.items_failed
        city_seconds = time.perf_counter() - start
        for city in cities:
            results = []
            for tree in TREES:
                results += service.export_results(
                    engine=engines[city], tree=tree, unit=city, period=PERIOD
                )
            service.ingest_child_results(engine=province, results=results, code="370000")
        total_seconds = time.perf_counter() - start
        units = 0
        for city in cities:
            for tree in TREES:
                for v in service.values(engine=engines[city], tree=tree, period=PERIOD):
                    if v.kind == "item":
                        computed[(f"{tree}/{v.item}", v.unit)] = v.value
            units += len(formulas.unit_scope(city, "city")[0])

        reference_seconds, reference = _reference(root / "synth", cities)
        # the engine must give the raw query's numbers
        checked = mismatched = 0
        for key, want in reference.items():
            got = computed.get(key)
            if want is None and got is None:
                continue
            checked += 1
            if got is None or want is None or abs(got - float(want)) > 1e-6 * max(1, abs(got)):
                mismatched += 1
        for engine in [*engines.values(), province]:
            engine.dispose()
    ratio = round(total_seconds / reference_seconds, 1) if reference_seconds else None
    report(
        "indicators",
        {
            "scale": float(SCALE),
            "cities": len(cities),
            "units": units,
            "trees": len(TREES),
            "compute_seconds_all_cities": round(city_seconds, 3),
            "compute_and_rollup_seconds": round(total_seconds, 3),
            "items_failed": failures,
            "values_checked_against_reference": checked,
            "values_mismatched": mismatched,
            "load_seconds_delta_import": round(load_seconds, 2),
            "synth_seconds": round(synth_seconds, 2),
        },
        {
            "raw_duckdb_one_query_seconds": round(reference_seconds, 4),
            "what": "every formula as one UNION ALL over all cities' Parquet files",
        },
        ratio,
    )


if __name__ == "__main__":
    main()
