"""The sweep after payment over 10 million settlements on DuckDB: Ibis against raw DuckDB SQL.

The settlements come from the synth's vectorised year of care (`synth.medical.care_year`)
for enough synthetic insured persons (CITYBRAIN_BENCH_MEDINS_SETTLEMENTS, default 10
million), written once as one settlements and one items Parquet file. Measured: every rule of
the shipped rule base as one Ibis expression on DuckDB, and the same rules as hand-written
raw DuckDB SQL in the same run; both must give the same findings. Target: under 60 s.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report  # noqa: E402
from citybrain.geo import service as geo  # noqa: E402
from citybrain.geo.models import Level  # noqa: E402
from citybrain.scenes.medical_insurance import rules, sweep, sweep_sql  # noqa: E402
from citybrain.synth.medical import (  # noqa: E402
    CareOptions,
    Institutions,
    care_year,
    consumable_tables,
)
from citybrain.synth.province import catalogues  # noqa: E402
from citybrain.synth.service import _far_counties  # noqa: E402

TARGET = int(os.environ.get("CITYBRAIN_BENCH_MEDINS_SETTLEMENTS", "10000000"))
REPEAT = int(os.environ.get("CITYBRAIN_BENCH_REPEAT", "3"))
PER_PERSON = 4.8  # settlements a person-year in the generator (measured)
CHUNK = 150_000  # persons a chunk, one county each


def _institutions(county: str, persons: int) -> Institutions:
    kinds = [
        ("hospital", "三级", "H3", 1),
        ("hospital", "二级", "H2", max(1, persons // 150_000)),
        ("hospital", "一级", "H1", max(1, persons // 40_000)),
        ("clinic", "未定级", "C0", max(2, persons // 4_000)),
        ("pharmacy", "未定级", "D0", max(2, persons // 3_000)),
    ]
    ids, kind, grade = [], [], []
    for k, g, code, n in kinds:
        for i in range(n):
            ids.append(f"M{county}{code}{i:04d}")
            kind.append(k)
            grade.append(g)
    return Institutions(
        ids=np.asarray(ids, dtype=object),
        kind=np.asarray(kind, dtype=object),
        grade=np.asarray(grade, dtype=object),
        county=np.full(len(ids), county, dtype=object),
    )


def _chunk(args: tuple[int, str, list[str], list[str]]) -> tuple[pa.Table, pa.Table]:
    index, county, same_city, far = args
    rng = np.random.default_rng(np.random.SeedSequence([99, index]))
    n = CHUNK
    age = np.minimum(rng.gamma(4.0, 10.0, n).astype(np.int64), 100)
    tables = care_year(
        rng,
        county=county,
        person_ids=np.asarray([f"P{county}-{index:03d}{i:07d}" for i in range(n)], dtype=object),
        male=(rng.random(n) < 0.5).astype(np.int64),
        age=age,
        institutions=_institutions(county, n),
        same_city_counties=same_city,
        far_counties=far,
        options=CareOptions(catalogue_seed=1),
    )
    return tables[("medical_security", "settlements")], tables[
        ("medical_security", "settlement_items")
    ]


def generate(folder: Path) -> tuple[int, int, float]:
    """Write about TARGET settlements under folder/medical_security; return rows and seconds."""
    start = time.perf_counter()
    counties = [c.code for c in geo.list_units(Level.county)]
    far = _far_counties()
    chunks = int(np.ceil(TARGET / PER_PERSON / CHUNK))
    work = []
    for k in range(chunks):
        county = counties[k % len(counties)]
        city = county[:4] + "00"
        same = [c.code for c in geo.list_units(Level.county, city)]
        work.append((k, county, same, list(far[city])))
    out = folder / "medical_security"
    out.mkdir(parents=True)
    writers: dict[str, pq.ParquetWriter] = {}
    rows = [0, 0]
    with ProcessPoolExecutor(max_workers=2) as pool:
        for s, i in pool.map(_chunk, work):
            for name, table, slot in (("settlements", s, 0), ("settlement_items", i, 1)):
                if name not in writers:
                    writers[name] = pq.ParquetWriter(
                        out / f"{name}.parquet", table.schema, compression="zstd"
                    )
                writers[name].write_table(table.cast(writers[name].schema), row_group_size=1 << 20)
                rows[slot] += table.num_rows
    for w in writers.values():
        w.close()
    return rows[0], rows[1], time.perf_counter() - start


def main() -> None:
    """Generate the settlements, then time the Ibis sweep and the raw SQL on DuckDB."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "node"
        settlements, items, gen_s = generate(data)

        cat_dir = Path(tmp) / "catalogue"
        cat_dir.mkdir()
        for (_, name), table in (catalogues(1) | consumable_tables()).items():
            pq.write_table(table, cat_dir / f"{name}.parquet")
        catalogue = rules.load_catalogue(cat_dir)
        rb = rules.load_rulebase(catalogue=catalogue)
        ibis_s, sql_s, found = [], [], [0, 0]
        for _ in range(REPEAT):
            t = time.perf_counter()
            a = sweep.sweep(data, rb)
            ibis_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            b = sweep_sql.sweep_sql(data, rb)
            sql_s.append(time.perf_counter() - t)
            found = [a.num_rows, b.num_rows]
        same = a.equals(b)
    ibis_median, sql_median = statistics.median(ibis_s), statistics.median(sql_s)
    report(
        "medins_sweep",
        {
            "settlements": settlements,
            "items": items,
            "rules": len(rb.rules),
            "findings": found[0],
            "ibis_duckdb_seconds": round(ibis_median, 2),
            "ibis_samples": [round(x, 2) for x in ibis_s],
            "settlements_per_second": round(settlements / ibis_median),
            "same_findings_as_sql": same,
            "target_seconds": 60,
            "generate_seconds": round(gen_s, 1),
        },
        {
            "raw_duckdb_sql_seconds": round(sql_median, 2),
            "sql_samples": [round(x, 2) for x in sql_s],
        },
        round(ibis_median / sql_median, 2),
    )


if __name__ == "__main__":
    main()
