"""Detection quality of the medical-insurance rules and anomaly scores on labelled synthetic data.

`citybrain synth` (the whole province at CITYBRAIN_BENCH_MEDINS_SCALE, default 0.002, abuse
at the default 1 % of eligible persons per pattern) is generated once. Each city's
settlements are swept with the shipped rule base; findings are compared with the injected
labels (OUT/labels/<city>/, never read by the detectors): precision and recall per rule
pattern and overall, by settlement (cash-out by person, the pattern being a person's). The
provider-level anomaly scores are compared with the providers given fraud: ROC AUC. Targets:
precision and recall >= 0.95 per rule pattern, AUC >= 0.9. Timing figure: the Ibis sweep on
DuckDB against the same rules as raw DuckDB SQL on the same data, in the same run.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report  # noqa: E402
from citybrain.scenes.medical_insurance import anomaly, rules, sweep, sweep_sql  # noqa: E402
from citybrain.synth import service  # noqa: E402
from citybrain.synth.medical import PATTERNS  # noqa: E402

SCALE = float(os.environ.get("CITYBRAIN_BENCH_MEDINS_SCALE", "0.002"))


def _pr(found: set[str], labelled: set[str]) -> dict[str, float | int | None]:
    tp = len(found & labelled)
    return {
        "labelled": len(labelled),
        "found": len(found),
        "precision": round(tp / len(found), 4) if found else None,
        "recall": round(tp / len(labelled), 4) if labelled else None,
    }


def main() -> None:
    """Generate, sweep every city, score every provider, and compare with the labels."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "synth"
        start = time.perf_counter()
        service.generate(scale=SCALE, seed=3, out=out)
        synth_s = time.perf_counter() - start
        catalogue = rules.load_catalogue(out / "370000" / "medical_security")
        rb = rules.load_rulebase(catalogue=catalogue)
        kind_of = {r.id: r.kind for r in rb.rules}
        found: dict[str, set[str]] = defaultdict(set)
        labelled: dict[str, set[str]] = defaultdict(set)
        scores: dict[str, float] = {}
        frauds: dict[str, bool] = {}
        ibis_s = sql_s = 0.0
        settlements = 0
        cities = sorted(p.name for p in (out / "labels").iterdir())
        for city in cities:
            data = out / city
            table = pq.read_table(data / "medical_security" / "settlements.parquet")
            settlements += table.num_rows
            person_of = dict(
                zip(table["settlement_id"].to_pylist(), table["person_id"].to_pylist(), strict=True)
            )
            t = time.perf_counter()
            findings = sweep.sweep(data, rb)
            ibis_s += time.perf_counter() - t
            t = time.perf_counter()
            reference = sweep_sql.sweep_sql(data, rb)
            sql_s += time.perf_counter() - t
            assert reference.equals(findings), f"raw SQL and Ibis differ in {city}"

            def unit(pattern: str, sid: str) -> str:
                return person_of[sid] if pattern == "cash_out" else sid  # noqa: B023

            for r in findings.select(["rule_id", "settlement_id"]).to_pylist():
                pattern = kind_of[r["rule_id"]]
                found[pattern].add(unit(pattern, r["settlement_id"]))
            labels = out / "labels" / city
            for r in pq.read_table(labels / "medical_abuse.parquet").to_pylist():
                labelled[r["pattern"]].add(unit(r["pattern"], r["settlement_id"]))
            for lead in anomaly.provider_leads(data, catalogue):
                scores[lead.subject] = lead.score
            fraud = pq.read_table(labels / "medical_fraud_institutions.parquet")
            frauds |= dict(
                zip(fraud["institution_id"].to_pylist(), fraud["fraud"].to_pylist(), strict=True)
            )
    per_rule = {p: _pr(found[p], labelled[p]) for p in PATTERNS}
    every_found = {(p, u) for p in PATTERNS for u in found[p]}
    every_label = {(p, u) for p in PATTERNS for u in labelled[p]}
    overall = _pr({f"{p}|{u}" for p, u in every_found}, {f"{p}|{u}" for p, u in every_label})
    auc = anomaly.roc_auc(scores, frauds)
    worst_p = min(v["precision"] or 0.0 for v in per_rule.values())
    worst_r = min(v["recall"] or 0.0 for v in per_rule.values())
    report(
        "medins_detection",
        {
            "scale": SCALE,
            "settlements": settlements,
            "per_rule": per_rule,
            "overall": overall,
            "min_precision": worst_p,
            "min_recall": worst_r,
            "provider_auc": round(auc, 4),
            "providers": len(set(scores) & set(frauds)),
            "fraud_providers": sum(frauds[k] for k in set(scores) & set(frauds)),
            "targets": {"precision": 0.95, "recall": 0.95, "provider_auc": 0.9},
            "synth_seconds": round(synth_s, 1),
            "ibis_sweep_seconds": round(ibis_s, 2),
        },
        {"raw_duckdb_sql_sweep_seconds": round(sql_s, 2)},
        round(ibis_s / sql_s, 2) if sql_s else None,
    )


if __name__ == "__main__":
    main()
