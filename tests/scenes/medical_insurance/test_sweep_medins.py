"""The sweep after payment: Ibis on DuckDB, the raw SQL reference and the check before payment
agree on generated data, and catch the injected abuse."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from citybrain.cli import app
from citybrain.core.errors import BadInput
from citybrain.scenes.medical_insurance import rules, sweep, sweep_sql
from citybrain.synth import service
from citybrain.synth.medical import PATTERNS

CITY = "370500"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("medins") / "out"
    service.generate(
        scale=0.002,
        seed=21,
        out=out,
        cities=[CITY],
        workers=1,
        abuse_rates=dict.fromkeys(PATTERNS, 0.03),
    )
    return out / CITY


@pytest.fixture(scope="module")
def rulebase(data: Path) -> rules.RuleBase:
    return rules.load_rulebase(catalogue=rules.load_catalogue(sweep.catalogue_folder(data)))


@pytest.fixture(scope="module")
def findings(data: Path, rulebase: rules.RuleBase) -> set[tuple[str, str, str]]:
    table = sweep.sweep(data, rulebase)
    assert table.column_names == [*sweep.FINDING_COLUMNS, "rule_version", "grade", "reason"]
    return {(r["rule_id"], r["settlement_id"], r["item_code"]) for r in table.to_pylist()}


def test_single_form_agrees_with_batch(
    data: Path, rulebase: rules.RuleBase, findings: set[tuple[str, str, str]]
) -> None:
    records = sweep.read_settlements(data)
    by_person = defaultdict(list)
    for s in records:
        by_person[s.person_id].append(s)
    single = set()
    for s in records:
        single |= {
            f.key() for f in rules.check_settlement(rulebase, s, by_person[s.person_id]).findings
        }
    assert single == findings
    assert {f[0] for f in findings} == {r.id for r in rulebase.rules}  # every rule finds


def test_raw_sql_gives_the_same_findings(data: Path, rulebase: rules.RuleBase) -> None:
    assert sweep_sql.sweep_sql(data, rulebase).equals(sweep.sweep(data, rulebase))


def test_injected_abuse_is_caught(
    data: Path, rulebase: rules.RuleBase, findings: set[tuple[str, str, str]]
) -> None:
    labels = pq.read_table(data.parent / "labels" / CITY / "medical_abuse.parquet").to_pylist()
    kind_of = {r.id: r.kind for r in rulebase.rules}
    found: dict[str, set[str]] = defaultdict(set)
    for rule_id, sid, _ in findings:
        found[kind_of[rule_id]].add(sid)
    person_of = {s.settlement_id: s.person_id for s in sweep.read_settlements(data)}
    labelled: dict[str, set[str]] = defaultdict(set)
    for row in labels:
        labelled[row["pattern"]].add(row["settlement_id"])
    for pattern in PATTERNS:
        got, want = found[pattern], labelled[pattern]
        if pattern == "cash_out":  # a person's pattern: caught when any purchase is flagged
            got = {person_of[s] for s in got}
            want = {person_of[s] for s in want}
        if not want:
            continue
        tp = len(got & want)
        assert tp / len(got) >= 0.9 and tp / len(want) >= 0.9, (pattern, len(got), len(want), tp)


def test_changed_threshold_changes_findings(data: Path, rulebase: rules.RuleBase) -> None:
    text = rules.DEFAULT_RULEBASE.read_text(encoding="utf-8").replace(
        "{tolerance: 0.05}", "{tolerance: 5.0}"
    )
    loose = rules.parse_rulebase(text, rulebase.catalogue)
    table = sweep.sweep(data, loose)
    assert "MI02_over_price" not in set(table["rule_id"].to_pylist())


def test_cli_sweep(data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "findings.parquet"
    result = runner.invoke(app, ["medins", "sweep", "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "MI09_time_conflict" in result.output and pq.read_metadata(out).num_rows > 0
    sql = runner.invoke(app, ["medins", "sweep", "--data", str(data), "--engine", "sql"])
    assert sql.exit_code == 0 and "findings" in sql.output


def test_bad_input(tmp_path: Path, rulebase: rules.RuleBase) -> None:
    with pytest.raises(BadInput, match="missing"):
        sweep.sweep(tmp_path, rulebase)
    with pytest.raises(BadInput, match="backend"):
        sweep.connect("oracle")
    runner = CliRunner()
    for args in (
        ["medins", "sweep", "--data", str(tmp_path)],
        ["medins", "sweep", "--data", str(tmp_path), "--backend", "oracle"],
        ["medins", "sweep", "--data", str(tmp_path), "--engine", "sql", "--backend", "spark"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code != 0


def test_the_sweep_reads_through_the_gate(data: Path, tmp_path: Path) -> None:
    import shutil

    from typer.testing import CliRunner

    from citybrain.cli import app
    from citybrain.governance.audit import service as audit_service

    node = tmp_path / data.name
    shutil.copytree(data, node)
    shutil.copytree(data.parent / "370000", tmp_path / "370000")
    runner = CliRunner()
    refused = runner.invoke(app, ["medins", "sweep", "--data", str(node), "--org", "education"])
    assert refused.exit_code != 0 and "no active grant" in str(refused.exception or refused.output)
    done = runner.invoke(app, ["medins", "sweep", "--data", str(node)])
    assert done.exit_code == 0, done.output
    page = audit_service.query(data_dir=node, action="medins.sweep", limit=100)
    records = [r if isinstance(r, dict) else r.model_dump() for r in page.records]
    assert {(r["resource"], r["result"]) for r in records} >= {
        ("medical_security/settlements", "allowed"),
        ("medical_security/settlement_items", "allowed"),
    }
    assert any(r["result"] == "refused" and r["org"] == "education" for r in records)
