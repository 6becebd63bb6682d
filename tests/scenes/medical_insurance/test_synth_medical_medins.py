"""A year of medical-insurance care in the synthetic province: tables, labels apart, rates."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from citybrain.cli import app
from citybrain.core.errors import BadInput
from citybrain.scenes.medical_insurance.models import Settlement
from citybrain.scenes.medical_insurance.sweep import read_settlements
from citybrain.synth import service
from citybrain.synth.medical import CARE_TABLES, PATTERNS, parse_rates

CITY = "370500"


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("synth-medins") / "out"
    service.generate(scale=0.001, seed=9, out=target, cities=[CITY], workers=1)
    return target


def _sql(query: str) -> list[tuple[object, ...]]:
    return duckdb.connect().sql(query).fetchall()


def test_tables_and_labels_apart(out: Path) -> None:
    folder = out / CITY / "medical_security"
    for name in CARE_TABLES:
        assert (folder / f"{name}.parquet").exists(), name
    assert not list((out / CITY).rglob("*label*")) and not list((out / CITY).rglob("*fraud*"))
    labels = out / "labels" / CITY
    assert {p.name for p in labels.iterdir()} == {
        "medical_abuse.parquet",
        "medical_fraud_institutions.parquet",
    }
    for name in ("consumable_catalogue", "service_bundles"):
        assert (out / "370000" / "medical_security" / f"{name}.parquet").exists()
    paths = {f["path"] for f in json.loads((out / "synth.json").read_text())["files"]}
    assert f"labels/{CITY}/medical_abuse.parquet" in paths


def test_records_are_valid_and_consistent(out: Path) -> None:
    f = out / CITY / "medical_security"
    s, i = f / "settlements.parquet", f / "settlement_items.parquet"
    ((bad,),) = _sql(
        f"""select count(*) from (select s.settlement_id, any_value(s.total) t, sum(i.amount) a
        from '{s}' s join '{i}' i using (settlement_id) group by 1) where abs(t - a) > 0.05"""
    )
    assert bad == 0
    ((n, persons, first, last),) = _sql(
        f"select count(*), count(distinct person_id), min(start), max(settled_at) from '{s}'"
    )
    insured = _sql(f"select count(*) from '{out / CITY}/medical_security/insured_persons.parquet'")
    assert 3.5 < n / insured[0][0] < 8  # settlements per insured person-year
    assert str(first) >= "2025-09-01" and str(last) < "2026-09-01"
    kinds = dict(_sql(f"select kind, count(*) from '{s}' group by 1"))
    assert set(kinds) == {"outpatient", "inpatient", "pharmacy"}
    assert kinds["inpatient"] < kinds["pharmacy"] < kinds["outpatient"]
    ((unique_items,),) = _sql(f"select count(*) = count(distinct item_id) from '{i}'")
    assert unique_items
    for record in read_settlements(out / CITY)[:300]:
        Settlement.model_validate(record.model_dump(warnings=False))  # the contract's checks hold


def test_rates_and_off_switch(tmp_path: Path) -> None:
    quiet = tmp_path / "quiet"
    service.generate(
        scale=0.0005,
        seed=9,
        out=quiet,
        cities=[CITY],
        workers=1,
        abuse_rates=dict.fromkeys(PATTERNS, 0.0),
    )
    ((n,),) = _sql(f"select count(*) from '{quiet}/labels/{CITY}/medical_abuse.parquet'")
    assert n == 0
    loud = tmp_path / "loud"
    service.generate(
        scale=0.0005,
        seed=9,
        out=loud,
        cities=[CITY],
        workers=1,
        abuse_rates=dict.fromkeys(PATTERNS, 0.0) | {"over_price": 0.05},
    )
    rows = _sql(
        f"select pattern, count(*) from '{loud}/labels/{CITY}/medical_abuse.parquet' group by 1"
    )
    assert [r[0] for r in rows] == ["over_price"] and rows[0][1] > 5
    none = tmp_path / "none"
    service.generate(scale=0.0005, seed=9, out=none, cities=[CITY], workers=1, care_share=0)
    assert not (none / CITY / "medical_security" / "settlements.parquet").exists()
    # the year of care draws from its own stream: every other table is the same
    for path in (none / CITY).rglob("*.parquet"):
        assert path.read_bytes() == (quiet / path.relative_to(none)).read_bytes(), path


def test_bad_rates() -> None:
    assert parse_rates("0.02")["cash_out"] == 0.02
    assert parse_rates("over_price=0.03")["over_price"] == 0.03
    for text in ("lots", "over_price=x", "bogus=0.1", "0.5", "-0.1"):
        with pytest.raises(ValueError):
            parse_rates(text)
    with pytest.raises(BadInput, match="care-share"):
        service.generate(scale=0.001, seed=1, out=Path("/nonexistent"), care_share=2.0)
    result = CliRunner().invoke(
        app, ["synth", "--scale", "0.001", "--seed", "1", "--out", "/tmp/x", "--abuse-rate", "lots"]
    )
    assert result.exit_code != 0
