"""Anomaly scores without labels: fraudulent providers and cash-out persons rank high."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from citybrain.cli import app
from citybrain.core.errors import BadInput
from citybrain.scenes.medical_insurance import anomaly, rules, sweep
from citybrain.synth import service

CITIES = ["370500", "371100"]  # Dongying and Rizhao: small, with providers enough to rank


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("medins-anomaly") / "out"
    service.generate(scale=0.002, seed=31, out=target, cities=CITIES, workers=1)
    return target


def _catalogue(data: Path) -> rules.Catalogue:
    return rules.load_catalogue(sweep.catalogue_folder(data))


def test_fraudulent_providers_rank_high(out: Path) -> None:
    scores: dict[str, float] = {}
    labels: dict[str, bool] = {}
    for city in CITIES:
        data = out / city
        leads = anomaly.provider_leads(data, _catalogue(data))
        assert leads == sorted(leads, key=lambda lead: -lead.score)
        assert all(len(lead.standouts) == 3 for lead in leads)
        scores |= {lead.subject: lead.score for lead in leads}
        table = pq.read_table(out / "labels" / city / "medical_fraud_institutions.parquet")
        labels |= dict(
            zip(table["institution_id"].to_pylist(), table["fraud"].to_pylist(), strict=True)
        )
    assert sum(labels.values()) >= 2
    assert anomaly.roc_auc(scores, labels) >= 0.85


def test_cash_out_persons_rank_high(out: Path) -> None:
    data = out / CITIES[0]
    leads = anomaly.person_leads(data, _catalogue(data))
    abuse = pq.read_table(out / "labels" / CITIES[0] / "medical_abuse.parquet").to_pylist()
    cash = {r["person_id"] for r in abuse if r["pattern"] == "cash_out"}
    top = [lead.subject for lead in leads[: 2 * len(cash)]]
    assert len(cash & set(top)) >= 0.6 * len(cash)
    assert leads[0].standouts[0][0] in anomaly.PERSON_FEATURES


def test_robust_z_per_group() -> None:
    values = np.asarray([[1.0], [1.1], [0.9], [5.0], [10.0], [10.5], [9.5]])
    groups = np.asarray(["a", "a", "a", "a", "b", "b", "b"])
    z = anomaly.robust_z(values, groups)
    assert z[3, 0] > 10 and abs(z[4, 0]) < 1e-9


def test_cli_leads_and_bad_input(out: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    data = str(out / CITIES[0])
    result = runner.invoke(
        app, ["medins", "leads", "--data", data, "--top", "3", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    leads = json.loads(result.output)
    assert len(leads) == 3 and {"subject", "score", "standouts"} <= set(leads[0])
    person = runner.invoke(app, ["medins", "leads", "--data", data, "--level", "person"])
    assert person.exit_code == 0 and "person leads" in person.output
    for args in (["--level", "city"], ["--format", "xml"], ["--top", "0"]):
        assert runner.invoke(app, ["medins", "leads", "--data", data, *args]).exit_code != 0
    with pytest.raises(BadInput):
        anomaly.roc_auc({"a": 1.0}, {"a": True})
    with pytest.raises(BadInput):
        anomaly.provider_leads(tmp_path, _catalogue(out / CITIES[0]))
