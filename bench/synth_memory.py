"""Peak memory of `citybrain synth` at two scales: it must not grow with the scale."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report  # noqa: E402

SMALL = float(os.environ.get("CITYBRAIN_BENCH_SMALL", "0.01"))
LARGE = float(os.environ.get("CITYBRAIN_BENCH_LARGE", "0.05"))


def peak_rss(scale: float) -> tuple[int, float]:
    """Run synth in a subprocess and return the peak RSS of its process tree and the seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "citybrain",
            "synth",
            "--scale",
            str(scale),
            "--seed",
            "1",
            "--out",
            str(Path(tmp) / "out"),
        ]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        parent = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                tree = [parent, *parent.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)
        if proc.returncode != 0:
            raise SystemExit(f"synth failed at scale {scale}")
        return peak, time.perf_counter() - start


def main() -> None:
    """Measure both scales and report the ratio of their peaks."""
    small, small_s = peak_rss(SMALL)
    large, large_s = peak_rss(LARGE)
    mib = 1024 * 1024
    report(
        "synth_memory",
        {
            f"peak_rss_mib_scale_{LARGE}": round(large / mib),
            f"seconds_scale_{LARGE}": round(large_s, 1),
            "scale_ratio": round(LARGE / SMALL, 1),
        },
        {
            f"peak_rss_mib_scale_{SMALL}": round(small / mib),
            f"seconds_scale_{SMALL}": round(small_s, 1),
        },
        round(large / small, 2),
    )


if __name__ == "__main__":
    main()
