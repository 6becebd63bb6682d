"""The synthetic hotline corpus, the classifier's held-out accuracy, and the commands."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from citybrain.cli import app
from citybrain.events import catalogue, classifier, corpus


def test_corpus_is_deterministic_and_covers_every_type() -> None:
    first = corpus.generate(seed=3, per_type=10)
    assert first == corpus.generate(seed=3, per_type=10)
    assert first != corpus.generate(seed=4, per_type=10)
    assert {r["event_type"] for r in first} == set(catalogue.load().types)
    assert len({r["text"] for r in first}) > 0.9 * len(first)


def test_held_out_accuracy_on_a_small_seeded_corpus() -> None:
    model = classifier.train(corpus.generate(seed=11, per_type=30), seed=11)
    assert model.accuracy >= 0.9
    # whole phrasings held out: lower, and reported beside it rather than hidden
    assert model.unseen_phrasing_accuracy is not None
    assert 0.5 <= model.unseen_phrasing_accuracy <= 1.0
    assert model.test_rows == round(0.2 * 30 * len(catalogue.load().types))
    # texts of another seed: new combinations of places, openings and variants
    other = corpus.generate(seed=12, per_type=10)
    guesses = model.predict([r["text"] for r in other])
    right = sum(g == r["event_type"] for (g, _), r in zip(guesses, other, strict=True))
    assert right / len(other) >= 0.9


def test_model_is_trained_at_first_use_and_saved(tmp_path: Path) -> None:
    assert not classifier.model_path(tmp_path).exists()
    model = classifier.get_model(tmp_path)
    assert classifier.model_path(tmp_path).exists() and model.seed == classifier.DEFAULT_SEED
    classifier.forget(tmp_path)
    reloaded = classifier.get_model(tmp_path)
    assert reloaded.accuracy == model.accuracy and reloaded.trained_at == model.trained_at


def test_corpus_train_and_case_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "corpus.jsonl"
    made = runner.invoke(
        app, ["events", "corpus", "--seed", "5", "--per-type", "20", "--out", str(out)]
    )
    assert made.exit_code == 0, made.output
    assert len(out.read_text(encoding="utf-8").splitlines()) == 20 * len(catalogue.load().types)
    data = tmp_path / "node"
    trained = runner.invoke(app, ["events", "train", "--data", str(data), "--corpus", str(out)])
    assert trained.exit_code == 0, trained.output
    report = json.loads(trained.output)
    assert report["accuracy"] >= 0.9 and Path(report["model"]).exists()
    intake = runner.invoke(
        app,
        [
            "events",
            "intake",
            "济南历下区泉城路路灯不亮",
            "--phone",
            "13811112222",
            "--data",
            str(data),
        ],
    )
    assert intake.exit_code == 0, intake.output
    case = json.loads(intake.output)
    assert case["event_type"] == "street_lamp" and case["contact_phone"] == "138****2222"
    listed = runner.invoke(app, ["events", "list", "--data", str(data), "--format", "json"])
    assert json.loads(listed.output)[0]["id"] == case["id"]
    for name in ("verify", "create_case", "dispatch"):
        moved = runner.invoke(app, ["events", "transition", case["id"], name, "--data", str(data)])
        assert moved.exit_code == 0, moved.output
    assert "dispatched" in moved.output
    shown = json.loads(
        runner.invoke(app, ["events", "show", case["id"], "--data", str(data)]).output
    )
    assert [s["transition"] for s in shown["timeline"]][-1] == "dispatch"
    stats = json.loads(runner.invoke(app, ["events", "stats", "--data", str(data)]).output)
    assert stats["departments"][0]["received"] == 1
    refused = runner.invoke(app, ["events", "transition", case["id"], "close", "--data", str(data)])
    assert refused.exit_code != 0


def test_a_node_trains_on_the_corpus_citybrain_synth_wrote(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from citybrain.events import classifier
    from citybrain.synth.service import HOTLINE, hotline_corpus

    table = hotline_corpus(7)
    assert table.equals(hotline_corpus(7))  # the same seed, the same corpus
    assert set(table.column("event_type").to_pylist()) >= {"manhole_cover", "street_lamp"}
    path = tmp_path / HOTLINE[0] / f"{HOTLINE[1]}.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)
    classifier.forget(tmp_path)
    model = classifier.get_model(tmp_path)
    assert model.meta["corpus"] == f"synth {classifier.SYNTH_CORPUS}"
    assert model.train_rows + model.test_rows == table.num_rows
    assert model.accuracy >= 0.9 and model.unseen_phrasing_accuracy is not None
