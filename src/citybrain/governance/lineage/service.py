"""Lineage: record which inputs a derived dataset, indicator or scorecard was made from."""

from __future__ import annotations

import re
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.exc import IntegrityError

from citybrain.core.errors import BadInput
from citybrain.governance.lineage.models import (
    LineageEdge,
    LineageGraph,
    LineageNode,
    lineage_edges,
)

PREFIXES = ("file:", "url:", "indicator:", "quality:", "ngsi-ld:")
_TABLE = re.compile(r"^[a-z][a-z0-9_]{0,63}/[a-z][a-z0-9_]{0,63}$")
MAX_DEPTH = 10
MAX_EDGES = 5000


def node_kind(node: str) -> str:
    """Return the kind of a lineage node id; BadInput for an id of no known kind."""
    if not node or len(node) > 300 or any(ord(ch) < 32 for ch in node):
        raise BadInput("a lineage node is 1 to 300 printable characters")
    if node.startswith("ngsi-ld:"):
        return "entity_type"
    for prefix in PREFIXES:
        if node.startswith(prefix) and len(node) > len(prefix):
            return prefix[:-1]
    if _TABLE.match(node):
        return "table"
    raise BadInput(
        f"{node!r} is not a lineage node: use DEPT/NAME, ngsi-ld:TYPE, file:..., url:..., "
        "indicator:... or quality:..."
    )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def record_lineage(
    *,
    engine: Engine,
    output: str,
    inputs: list[str],
    activity: str,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Record that `output` was made from `inputs` by `activity` (repeats count as runs)."""
    node_kind(output)
    for item in inputs:
        node_kind(item)
    if not activity or len(activity) > 64:
        raise BadInput("an activity is 1 to 64 characters")
    stamp = at or datetime.now(UTC)
    for item in dict.fromkeys(inputs):
        if item == output:
            continue
        key = (
            (lineage_edges.c.output == output)
            & (lineage_edges.c.input == item)
            & (lineage_edges.c.activity == activity)
        )
        with engine.begin() as conn:
            changed = conn.execute(
                update(lineage_edges)
                .where(key)
                .values(runs=lineage_edges.c.runs + 1, at=stamp, detail=detail or {})
            ).rowcount
        if changed:
            continue
        try:
            with engine.begin() as conn:
                conn.execute(
                    lineage_edges.insert().values(
                        id=uuid.uuid4().hex,
                        output=output,
                        input=item,
                        activity=activity,
                        detail=detail or {},
                        runs=1,
                        first_at=stamp,
                        at=stamp,
                    )
                )
        except IntegrityError:
            # another process recorded the same edge meanwhile: count this run on it
            with engine.begin() as conn:
                conn.execute(
                    update(lineage_edges)
                    .where(key)
                    .values(runs=lineage_edges.c.runs + 1, at=stamp, detail=detail or {})
                )


def lineage_graph(*, engine: Engine, dataset_id: str, depth: int = 3) -> LineageGraph:
    """Return the nodes and edges within `depth` steps up- and downstream of a dataset."""
    node_kind(dataset_id)
    if not 1 <= depth <= MAX_DEPTH:
        raise BadInput(f"depth must be between 1 and {MAX_DEPTH}")
    edges: dict[str, Any] = {}
    levels: dict[str, dict[str, int]] = {"up": {dataset_id: 0}, "down": {dataset_id: 0}}
    with engine.connect() as conn:
        for direction in ("up", "down"):
            seen = levels[direction]
            queue: deque[str] = deque([dataset_id])
            near = lineage_edges.c.output if direction == "up" else lineage_edges.c.input
            while queue and len(edges) < MAX_EDGES:
                batch = list(queue)
                queue.clear()
                rows = conn.execute(select(lineage_edges).where(or_(near.in_(batch)))).all()
                for row in rows:
                    edges[row.id] = row
                    here = row.output if direction == "up" else row.input
                    there = row.input if direction == "up" else row.output
                    step = seen[here] + 1
                    if there not in seen and step <= depth:
                        seen[there] = step
                        if step < depth:
                            queue.append(there)
    # only edges between nodes within reach; a leaf's other edges lie beyond the depth
    reach = set(levels["up"]) | set(levels["down"])
    kept = [
        e
        for e in edges.values()
        if e.input in reach
        and e.output in reach
        and (
            (e.output in levels["up"] and e.input in levels["up"])
            or (e.input in levels["down"] and e.output in levels["down"])
        )
    ]
    kept.sort(key=lambda e: (e.output, e.input, e.activity))
    names = sorted(reach)
    return LineageGraph(
        root=dataset_id,
        depth=depth,
        nodes=[LineageNode(id=n, kind=_safe_kind(n)) for n in names],
        edges=[
            LineageEdge(
                source=e.input,
                target=e.output,
                activity=e.activity,
                runs=int(e.runs),
                first_at=_aware(e.first_at),
                at=_aware(e.at),
                detail=dict(e.detail or {}),
            )
            for e in kept
        ],
        upstream=sorted(n for n in levels["up"] if n != dataset_id),
        downstream=sorted(n for n in levels["down"] if n != dataset_id),
    )


def _safe_kind(node: str) -> str:
    try:
        return node_kind(node)
    except BadInput:
        return "other"
