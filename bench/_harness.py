"""Common parts of the benchmarks: their output (figures, bench/results/NAME.json), health
waits, and reading the answers of the raw HTTP load generators."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, list[float]]:
    """Run fn `repeat` times and return the median seconds and every sample."""
    samples: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), samples


def report(
    name: str, figures: dict[str, Any], reference: dict[str, Any], ratio: float | None
) -> dict[str, Any]:
    """Print a benchmark's figures and save them as bench/results/NAME.json."""
    result = {"name": name, "figures": figures, "reference": reference, "ratio": ratio}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"== {name}")
    for key, value in figures.items():
        print(f"  {key}: {value}")
    for key, value in reference.items():
        print(f"  reference {key}: {value}")
    print(f"  ratio: {ratio}")
    return result


def wait_healthy(port: int, tries: int = 150, pause: float = 0.2) -> bool:
    """Poll http://127.0.0.1:PORT/health until it answers 200; False if it never does."""
    import httpx

    for _ in range(tries):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(pause)
    return False


async def read_status(reader: asyncio.StreamReader) -> bytes:
    """Read one answer: its status code; the headers and Content-Length bytes of body skipped."""
    status = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    parts = status.split(b" ", 2)
    return parts[1] if len(parts) > 1 else b"closed"
