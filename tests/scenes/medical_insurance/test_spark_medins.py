"""The same Ibis sweep on Spark (local mode) gives the same findings as on DuckDB."""

from __future__ import annotations

from pathlib import Path

import pytest

from citybrain.scenes.medical_insurance import rules, sweep
from citybrain.synth import service
from citybrain.synth.medical import PATTERNS

CITY = "370500"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("medins-spark") / "out"
    service.generate(
        scale=0.0005,
        seed=4,
        out=out,
        cities=[CITY],
        workers=1,
        abuse_rates=dict.fromkeys(PATTERNS, 0.04),
    )
    return out / CITY


def test_spark_and_duckdb_find_the_same(data: Path) -> None:
    rb = rules.load_rulebase(catalogue=rules.load_catalogue(sweep.catalogue_folder(data)))
    on_duckdb = sweep.sweep(data, rb, backend="duckdb")
    on_spark = sweep.sweep(data, rb, backend="spark")
    assert on_duckdb.num_rows > 20
    assert len(set(on_duckdb["rule_id"].to_pylist())) >= 8  # most rules have findings here
    assert on_spark.equals(on_duckdb)
