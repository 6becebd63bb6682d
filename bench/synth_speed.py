"""Synth at scale 0.01 (about 1 million residents): residents/s, against pyarrow writing alone."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report  # noqa: E402
from citybrain.synth import service  # noqa: E402

SCALE = float(os.environ.get("CITYBRAIN_BENCH_SCALE", "0.01"))


def main() -> None:
    """Time synth, then time writing the same tables with pyarrow alone."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "synth"
        start = time.perf_counter()
        summary = service.generate(scale=SCALE, seed=1, out=out)
        synth_s = time.perf_counter() - start
        tables = {p: pq.read_table(p) for p in sorted(out.glob("*/*/*.parquet"))}
        total_bytes = sum(p.stat().st_size for p in tables)
        ref_dir = Path(tmp) / "ref"
        start = time.perf_counter()
        for path, table in tables.items():
            target = ref_dir / path.relative_to(out)
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, target, compression="zstd")
        write_s = time.perf_counter() - start
    report(
        "synth_speed",
        {
            "scale": SCALE,
            "residents": summary.residents,
            "seconds": round(synth_s, 2),
            "residents_per_second": round(summary.residents / synth_s),
            "parquet_bytes": total_bytes,
            "target_seconds": 60 if SCALE == 0.01 else None,
        },
        {"pyarrow_write_seconds": round(write_s, 3)},
        round(synth_s / write_s, 1),
    )


if __name__ == "__main__":
    main()
