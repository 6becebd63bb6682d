"""Event intake: 12345 hotline texts classified, routed and stored, against raw executemany.

5,000 synthetic hotline work orders (a seed other than the model's) go through the service
function `intake_hotline_batch` in batches of 100, as a hotline system pushes them: each text
is classified (character n-grams, LinearSVC), its area found from the address, routed through
the responsibility matrix, and stored as a case plus its capture transition in one transaction
per batch, with an audit record per case. The reference inserts the same rows (cases and
transitions) with raw SQL executemany on sqlite3 into the same database, one transaction per
batch of 100, in the same run. A second figure sends 500 orders one at a time
(`intake_hotline`, one transaction and one durable audit record each).
"""

from __future__ import annotations

import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report  # noqa: E402
from citybrain.core.db import create_engine_for, upgrade  # noqa: E402
from citybrain.events import classifier, corpus, service  # noqa: E402
from citybrain.events.models import HotlineCreate  # noqa: E402
from citybrain.governance.principal import Principal, Role  # noqa: E402

ORDERS = int(os.environ.get("CITYBRAIN_BENCH_EVENTS", "5000"))
SINGLE = int(os.environ.get("CITYBRAIN_BENCH_EVENTS_SINGLE", "500"))
BATCH = 100
REPEAT = int(os.environ.get("CITYBRAIN_BENCH_REPEAT", "3"))
CENTRE = Principal(subject="bench", org="bureau", role=Role.operator, issuer="370100")


def _orders(n: int, seed: int) -> list[HotlineCreate]:
    rng = random.Random(seed)
    rows = corpus.generate(seed=seed, per_type=n // 22 + 1)[:n]
    return [HotlineCreate(text=r["text"], phone=f"13{rng.randrange(10**9):09d}") for r in rows]


def _ours(engine: Any, data: Path, orders: list[HotlineCreate]) -> float:
    start = time.perf_counter()
    for i in range(0, len(orders), BATCH):
        service.intake_hotline_batch(
            engine=engine,
            data_dir=data,
            node_code="370100",
            principal=CENTRE,
            orders=orders[i : i + BATCH],
        )
    return time.perf_counter() - start


def _raw(
    db: Path,
    cases: list[tuple[Any, ...]],
    steps: list[tuple[Any, ...]],
    case_cols: list[str],
    step_cols: list[str],
) -> float:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous=FULL")
    case_sql = (
        f"INSERT INTO event_cases ({', '.join(case_cols)}) "
        f"VALUES ({', '.join('?' for _ in case_cols)})"
    )
    step_sql = (
        f"INSERT INTO event_transitions ({', '.join(step_cols)}) "
        f"VALUES ({', '.join('?' for _ in step_cols)})"
    )
    start = time.perf_counter()
    for i in range(0, len(cases), BATCH):
        conn.execute("BEGIN")
        conn.executemany(case_sql, cases[i : i + BATCH])
        conn.executemany(step_sql, steps[i : i + BATCH])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def main() -> None:
    """Train the model, then time our intake and the raw inserts alternately."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("CITYBRAIN_BENCH_DIR")) as tmp:
        data = Path(tmp)
        db = data / "citybrain.db"
        engine = create_engine_for(f"sqlite:///{db}")
        upgrade(engine)
        model = classifier.get_model(data)  # trained here, at first use, as on a new node
        orders = _orders(ORDERS, seed=99)
        ours_s: list[float] = []
        raw_s: list[float] = []
        for round_ in range(REPEAT):
            ours_s.append(_ours(engine, data, orders))
            # the reference: the very rows just written, under fresh ids
            conn = sqlite3.connect(db)
            cur = conn.execute(
                "SELECT * FROM event_cases ORDER BY rowid DESC LIMIT ?", (len(orders),)
            )
            case_cols = [d[0] for d in cur.description]
            cases = [(f"R{round_}{r[0][2:]}",) + tuple(r[1:]) for r in cur.fetchall()]
            cur = conn.execute(
                "SELECT * FROM event_transitions ORDER BY seq DESC LIMIT ?", (len(orders),)
            )
            step_cols = [d[0] for d in cur.description][1:]
            steps = [(f"R{round_}{r[1][2:]}",) + tuple(r[2:]) for r in cur.fetchall()]
            conn.close()
            raw_s.append(_raw(db, cases, steps, case_cols, step_cols))
        singles = _orders(SINGLE, seed=98)
        start = time.perf_counter()
        for order in singles:
            service.intake_hotline(
                engine=engine, data_dir=data, node_code="370100", principal=CENTRE, body=order
            )
        single_s = time.perf_counter() - start
        truth = [r["event_type"] for r in corpus.generate(seed=99, per_type=ORDERS // 22 + 1)]
        guessed = [g for g, _ in model.predict([o.text for o in orders])]
        accuracy = sum(a == b for a, b in zip(guessed, truth[:ORDERS], strict=True)) / ORDERS
    ours, raw = statistics.median(ours_s), statistics.median(raw_s)
    report(
        "events",
        {
            "orders": ORDERS,
            "batch": BATCH,
            "intake_s_median": round(ours, 3),
            "events_per_s": round(ORDERS / ours),
            "samples_s": [round(s, 3) for s in ours_s],
            "single_orders": SINGLE,
            "single_events_per_s": round(SINGLE / single_s),
            "classifier_accuracy_on_bench_texts": round(accuracy, 4),
            "model_train_s": model.seconds,
            "target": "events_per_s >= 1000",
        },
        {
            "raw_executemany_s_median": round(raw, 3),
            "raw_rows_per_s": round(ORDERS / raw),
            "samples_s": [round(s, 3) for s in raw_s],
        },
        round(ours / raw, 2),
    )


if __name__ == "__main__":
    main()
