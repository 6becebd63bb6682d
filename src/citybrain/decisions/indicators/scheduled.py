"""One scheduled indicator computation, in a process of its own.

A node's schedule computes every tree once an hour. In the serving process that work held
the interpreter lock for seconds, and every request waited behind it (a settlement's p99 went
from tens of milliseconds to more than a second). The schedule starts this module instead:
`python -m citybrain.decisions.indicators.scheduled DATA CODE LEVEL TREE...`, with the store's
URL in CITYBRAIN_DATABASE_URL, at a lower priority, so the serving processes keep the cores.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from citybrain.core.config import Settings

# the child yields the cores to the serving processes
NICENESS = 10


def main(argv: list[str]) -> int:
    """Compute the trees for a node (the child's side); the number of trees that failed."""
    from citybrain.core.db import create_engine_for
    from citybrain.decisions.indicators.service import compute

    data, code, level, *trees = argv
    os.nice(NICENESS)
    engine = create_engine_for(os.environ["CITYBRAIN_DATABASE_URL"])
    failed = 0
    try:
        for tree in trees:
            try:
                compute(
                    engine=engine,
                    data_dir=Path(data),
                    code=code,
                    level=level,
                    tree=tree,
                    trigger="schedule",
                )
            except Exception as exc:  # the other trees are still computed
                failed += 1
                print(f"{tree}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    finally:
        engine.dispose()
    return failed


async def compute_in_child(settings: Settings, trees: list[str]) -> None:
    """Run the scheduled computation of some trees in one child process; raise if any failed."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "citybrain.decisions.indicators.scheduled",
        str(settings.data_dir),
        settings.code,
        settings.level.value,
        *trees,
        env={**os.environ, "CITYBRAIN_DATABASE_URL": settings.effective_database_url},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await child.communicate()
    except asyncio.CancelledError:  # the node stops: so does the computation
        child.kill()
        await child.wait()
        raise
    if child.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines() or ["no message"]
        raise RuntimeError(
            f"the scheduled computation exited with {child.returncode}: " + "; ".join(lines[-5:])
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
