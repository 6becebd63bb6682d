"""Anomaly scores without labels: providers and persons against their peers, isolation forests.

Features are computed in DuckDB over a node's settlements and items; each feature is turned
into a robust z-score within the peer group (institution kind and grade for providers, sex
and age band for persons: median and MAD), and an isolation forest scores the z-scores. A
lead is a provider or person ranked by score, with the features that stand out most.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from sklearn.ensemble import IsolationForest

from citybrain.core.errors import BadInput
from citybrain.scenes.medical_insurance.rules import Catalogue
from citybrain.scenes.medical_insurance.sweep import data_paths

PROVIDER_FEATURES = (
    "price_ratio",
    "quantity_ratio",
    "items_per_settlement",
    "amount_per_settlement",
    "settlements_per_person",
    "stay_days",
    "drug_share",
)
PERSON_FEATURES = (
    "settlements",
    "institutions",
    "pharmacies",
    "cities",
    "amount",
    "pharmacy_amount",
    "min_gap_hours",
)

_PROVIDER_SQL = """
with i as (
  select s.institution_id, s.institution_kind, s.institution_grade, s.settlement_id,
         s.person_id, s.kind, s.start, s."end", it.code, it.kind as ikind, it.quantity,
         it.unit_price, it.amount, c.price as std_price, c.max_q
  from s join it using (settlement_id) left join c on c.code = it.code
)
select institution_id, any_value(institution_kind) as kind, any_value(institution_grade) as grade,
       count(distinct settlement_id) as n,
       avg(unit_price / nullif(std_price, 0)) as price_ratio,
       coalesce(avg(case when ikind = 'drug' and kind <> 'inpatient' and max_q > 0
                    then quantity / max_q end), 0) as quantity_ratio,
       count(*) / count(distinct settlement_id) as items_per_settlement,
       sum(amount) / count(distinct settlement_id) as amount_per_settlement,
       count(distinct settlement_id) / count(distinct person_id) as settlements_per_person,
       coalesce(avg(case when kind = 'inpatient'
                    then date_diff('hour', start, "end") / 24.0 end), 0) as stay_days,
       sum(case when ikind = 'drug' then amount else 0 end) / nullif(sum(amount), 0) as drug_share
from i group by institution_id order by institution_id
"""

_PERSON_SQL = """
with o as (
  select person_id, any_value(sex) as sex, any_value(age) as age, count(*) as settlements,
         count(distinct institution_id) as institutions,
         count(distinct case when kind = 'pharmacy' then institution_id end) as pharmacies,
         count(distinct city_code) as cities, sum(total) as amount,
         sum(case when kind = 'pharmacy' then total else 0 end) as pharmacy_amount
  from s group by person_id
), g as (
  select person_id, min(date_diff('minute', prev_end, start)) / 60.0 as min_gap_hours
  from (select person_id, start, lag("end") over (partition by person_id order by start,
               settlement_id) as prev_end from s)
  where prev_end is not null group by person_id
)
select o.*, coalesce(g.min_gap_hours, 8760) as min_gap_hours
from o left join g using (person_id) order by person_id
"""


@dataclass(frozen=True)
class Lead:
    """One provider or person worth a look: its score and the features that stand out."""

    subject: str
    peer_group: str
    score: float
    standouts: list[tuple[str, float, float]]  # feature, value, z-score within the peers


def _connect(data: Path, catalogue: Catalogue) -> duckdb.DuckDBPyConnection:
    s_path, i_path = data_paths(data)
    con = duckdb.connect()
    con.execute(f"create view s as select * from read_parquet('{s_path}')")
    con.execute(f"create view it as select * from read_parquet('{i_path}')")
    entries = sorted(catalogue.entries.values(), key=lambda e: e.code)
    cat = pa.table(
        {
            "code": [e.code for e in entries],
            "price": [e.standard_price for e in entries],
            "max_q": [e.max_quantity or 0 for e in entries],
        }
    )
    con.register("c", cat)
    return con


def robust_z(values: np.ndarray[Any, Any], groups: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Z-scores by median and MAD within each group (a spread of zero counts as tiny)."""
    z = np.zeros_like(values, dtype=float)
    for g in np.unique(groups):
        rows = groups == g
        block = values[rows]
        median = np.median(block, axis=0)
        mad = np.median(np.abs(block - median), axis=0) * 1.4826
        spread = np.where(mad > 1e-9, mad, np.maximum(np.std(block, axis=0), 1e-6))
        z[rows] = (block - median) / spread
    clipped: np.ndarray[Any, Any] = np.clip(z, -50, 50)
    return clipped


def _score(
    subjects: list[str],
    groups: np.ndarray[Any, Any],
    features: tuple[str, ...],
    x: np.ndarray[Any, Any],
    seed: int,
) -> list[Lead]:
    if len(subjects) == 0:
        return []
    x = np.nan_to_num(x.astype(float))
    z = robust_z(x, groups)
    forest = IsolationForest(n_estimators=200, random_state=seed, contamination="auto")
    forest.fit(np.abs(z))
    scores = -forest.score_samples(np.abs(z))
    leads = []
    for k in np.argsort(-scores, kind="stable"):
        top = np.argsort(-np.abs(z[k]), kind="stable")[:3]
        leads.append(
            Lead(
                subject=subjects[k],
                peer_group=str(groups[k]),
                score=round(float(scores[k]), 6),
                standouts=[
                    (features[j], round(float(x[k, j]), 4), round(float(z[k, j]), 2)) for j in top
                ],
            )
        )
    return leads


def provider_leads(data: Path, catalogue: Catalogue, *, min_settlements: int = 20) -> list[Lead]:
    """Providers ranked by how far they stand from their peers (kind and grade)."""
    con = _connect(data, catalogue)
    table = con.sql(_PROVIDER_SQL).to_arrow_table()
    rows = table.filter(pa.compute.greater_equal(table["n"], min_settlements))
    if rows.num_rows == 0:
        raise BadInput(f"no provider in {data} has {min_settlements} or more settlements")
    x = np.column_stack([rows[f].to_numpy(zero_copy_only=False) for f in PROVIDER_FEATURES])
    groups = np.asarray(
        [
            f"{k}/{g}"
            for k, g in zip(rows["kind"].to_pylist(), rows["grade"].to_pylist(), strict=True)
        ]
    )
    return _score(rows["institution_id"].to_pylist(), groups, PROVIDER_FEATURES, x, seed=7)


def person_leads(data: Path, catalogue: Catalogue) -> list[Lead]:
    """Persons ranked by how far their year of care stands from people of their sex and age."""
    con = _connect(data, catalogue)
    rows = con.sql(_PERSON_SQL).to_arrow_table()
    if rows.num_rows == 0:
        raise BadInput(f"no settlements in {data}")
    x = np.column_stack([rows[f].to_numpy(zero_copy_only=False) for f in PERSON_FEATURES])
    ages = rows["age"].to_numpy(zero_copy_only=False).astype(int)
    band = np.minimum(ages // 15, 5)
    groups = np.asarray(
        [f"{s}/{b * 15}+" for s, b in zip(rows["sex"].to_pylist(), band.tolist(), strict=True)]
    )
    return _score(rows["person_id"].to_pylist(), groups, PERSON_FEATURES, x, seed=11)


def roc_auc(scores: dict[str, float], labels: dict[str, bool]) -> float:
    """Area under the ROC curve of scores against labels (subjects in both only)."""
    from sklearn.metrics import roc_auc_score

    keys = sorted(set(scores) & set(labels))
    y = [labels[k] for k in keys]
    if len(set(y)) < 2:
        raise BadInput("the labels need both frauds and others to measure an AUC")
    return float(roc_auc_score(y, [scores[k] for k in keys]))
