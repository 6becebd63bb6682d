"""Free text to event type: character n-grams (TF-IDF) and a linear SVM, trained locally."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib  # type: ignore[import-untyped,unused-ignore]
import numpy as np

# scikit-learn is imported where a model is built or loaded: it is 0.7 s of every node's start,
# and a node classifies nothing until its first report
if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline  # type: ignore[import-untyped,unused-ignore]

from citybrain.core.errors import BadInput
from citybrain.events import corpus

MODEL_FILE = "event_classifier.joblib"
DEFAULT_SEED = 1
DEFAULT_PER_TYPE = 80
log = logging.getLogger(__name__)
_lock = threading.Lock()
_loaded: dict[Path, Model] = {}


@dataclass
class Model:
    """A trained pipeline and what it was trained on."""

    pipeline: Pipeline
    seed: int | None
    accuracy: float
    train_rows: int
    test_rows: int
    trained_at: str
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)
    # accuracy on phrasings never seen in training (None when the corpus has no phrase ids)
    unseen_phrasing_accuracy: float | None = None

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """Return (type code, confidence in 0..1) for each text."""
        scores = np.atleast_2d(self.pipeline.decision_function(texts))
        classes = self.pipeline.classes_
        # a softmax of the margins: not a calibrated probability, but ordered and in 0..1
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1)
        return [(str(classes[i]), round(float(probs[r, i]), 3)) for r, i in enumerate(best)]


def model_path(data_dir: Path) -> Path:
    """Return where a node keeps its classifier."""
    return data_dir / "models" / MODEL_FILE


def build_pipeline() -> Pipeline:
    """Return the untrained pipeline."""
    from sklearn.feature_extraction.text import (  # type: ignore[import-untyped,unused-ignore]
        TfidfVectorizer,
    )
    from sklearn.pipeline import Pipeline  # type: ignore[import-untyped,unused-ignore]
    from sklearn.svm import LinearSVC  # type: ignore[import-untyped,unused-ignore]

    return Pipeline(
        [
            (
                "tfidf",
                TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True),
            ),
            ("svm", LinearSVC(C=1.0)),
        ]
    )


def train(rows: list[dict[str, Any]], *, seed: int | None, test_size: float = 0.2) -> Model:
    """Train on rows ({text, event_type}), hold out test_size stratified, report accuracy."""
    if len(rows) < 20:
        raise BadInput(f"a corpus of {len(rows)} rows is too small to train on (20 or more)")
    texts = [r["text"] for r in rows]
    labels = [r["event_type"] for r in rows]
    from sklearn.model_selection import (  # type: ignore[import-untyped,unused-ignore]
        train_test_split,
    )

    start = time.perf_counter()
    x_train, x_test, y_train, y_test = train_test_split(
        texts, labels, test_size=test_size, random_state=seed or 0, stratify=labels
    )
    pipeline = build_pipeline()
    pipeline.fit(x_train, y_train)
    accuracy = float(np.mean(pipeline.predict(x_test) == np.array(y_test)))
    return Model(
        pipeline=pipeline,
        seed=seed,
        accuracy=round(accuracy, 4),
        train_rows=len(x_train),
        test_rows=len(x_test),
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - start, 3),
        unseen_phrasing_accuracy=unseen_phrasing_accuracy(rows),
    )


def unseen_phrasing_accuracy(rows: list[dict[str, Any]]) -> float | None:
    """Hold out each type's last phrasing entirely, train on the rest, return the accuracy.

    A random split shares phrasings between training and test (only the surrounding words
    differ), which flatters the model; this is the figure for what callers say in new words.
    """
    if not rows or not all(isinstance(r.get("phrase"), int) for r in rows):
        return None
    last: dict[str, int] = {}
    for r in rows:
        last[r["event_type"]] = max(last.get(r["event_type"], 0), r["phrase"])

    def is_held(r: dict[str, Any]) -> bool:
        return last[r["event_type"]] > 0 and r["phrase"] == last[r["event_type"]]

    held = [r for r in rows if is_held(r)]
    kept = [r for r in rows if not is_held(r)]
    if not held or len({r["event_type"] for r in kept}) < 2:
        return None
    pipeline = build_pipeline()
    pipeline.fit([r["text"] for r in kept], [r["event_type"] for r in kept])
    predicted = pipeline.predict([r["text"] for r in held])
    return round(float(np.mean(predicted == np.array([r["event_type"] for r in held]))), 4)


def save(model: Model, data_dir: Path) -> Path:
    """Save the model under DATA_DIR/models/ (written aside, then renamed)."""
    path = model_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    joblib.dump(model, partial)
    partial.replace(path)
    _loaded[path.resolve()] = model
    return path


def train_and_save(
    *,
    data_dir: Path,
    seed: int = DEFAULT_SEED,
    per_type: int = DEFAULT_PER_TYPE,
    rows: list[dict[str, Any]] | None = None,
) -> Model:
    """Train on the given rows (or a fresh corpus from seed) and save under the data folder."""
    used_seed: int | None = seed if rows is None else None
    model = train(
        rows if rows is not None else corpus.generate(seed=seed, per_type=per_type),
        seed=used_seed if used_seed is not None else seed,
    )
    model.meta["corpus"] = "generated" if rows is None else "file"
    save(model, data_dir)
    log.info(
        "event classifier trained",
        extra={"accuracy": model.accuracy, "rows": model.train_rows, "seconds": model.seconds},
    )
    return model


def get_model(data_dir: Path) -> Model:
    """Return the node's model, loading it once, training one at first use when none exists."""
    path = model_path(data_dir).resolve()
    model = _loaded.get(path)
    if model is not None:
        return model
    with _lock:
        model = _loaded.get(path)
        if model is not None:
            return model
        if path.exists():
            try:
                loaded = joblib.load(path)
                if isinstance(loaded, Model):
                    _loaded[path] = loaded
                    return loaded
            except Exception as exc:  # noqa: BLE001 - a damaged file is retrained, not fatal
                log.warning("event classifier unreadable, retraining", extra={"error": str(exc)})
        synth = synth_corpus(data_dir)
        if synth is not None:
            model = train_and_save(data_dir=data_dir, rows=synth)
            model.meta["corpus"] = f"synth {SYNTH_CORPUS}"
            save(model, data_dir)
            return model
        return train_and_save(data_dir=data_dir)


SYNTH_CORPUS = "bureau/hotline_corpus.parquet"


def synth_corpus(data_dir: Path) -> list[dict[str, Any]] | None:
    """The labelled hotline corpus `citybrain synth` wrote into the node's folder, if any."""
    path = data_dir / SYNTH_CORPUS
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["text", "event_type", "phrase"])
    except (OSError, ValueError, KeyError) as exc:
        log.warning("hotline corpus unreadable, generating one", extra={"error": str(exc)})
        return None
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows or None


def forget(data_dir: Path) -> None:
    """Drop the cached model of a data folder (tests, or after a retrain elsewhere)."""
    _loaded.pop(model_path(data_dir).resolve(), None)
