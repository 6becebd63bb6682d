"""Indicator roll-up: a parent pulls its children's own-unit values and rolls them up.

Only aggregates move up: each child answers `GET /api/indicators/export` with the latest
values of its own unit (numbers per item, no records), authenticated by the parent's node
token. Children are asked in parallel within a deadline; one that is down or slow is named
in the result, and the values it sent last time stay in the parent's store.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from pydantic import BaseModel
from sqlalchemy import Engine

from citybrain.core.config import Settings
from citybrain.decisions.indicators import service as indicators
from citybrain.decisions.indicators.models import ChildResult
from citybrain.federation import trust
from citybrain.federation.children import ask_children
from citybrain.federation.models import Relation
from citybrain.governance.audit import service as audit
from citybrain.governance.principal import Principal

DEFAULT_DEADLINE = 5.0


class RollupResult(BaseModel):
    """What one roll-up gathered: children answered and missing, values stored."""

    tree: str
    children: list[str]
    answered: list[str]
    missing: dict[str, str]  # child code -> why
    stored: int
    rolled_up: int
    seconds: float


def _values_of(peer: dict[str, Any], body: Any) -> list[ChildResult]:
    if not isinstance(body, list):
        raise RuntimeError("the answer is not a list of values")
    results = [ChildResult.model_validate(item) for item in body]
    foreign = {r.unit for r in results} - {str(peer["code"])}
    if foreign:
        # a child speaks for its own unit only
        raise RuntimeError(f"values for units other than its own: {sorted(foreign)}")
    return results


async def gather_children(
    *,
    engine: Engine,
    settings: Settings,
    tree: str,
    deadline: float = DEFAULT_DEADLINE,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[list[ChildResult], list[str], dict[str, str], list[str]]:
    """Ask every trusted child for its values in parallel; return values and who answered."""
    indicators.describe_tree(tree=tree)  # an unknown tree is a clear error before any call
    children = trust.list_peers(engine=engine, relation=Relation.child)
    answers, missing = await ask_children(
        peers=children,
        settings=settings,
        path="/api/indicators/export",
        params={"tree": tree},
        check=_values_of,
        deadline=deadline,
        transport=transport,
    )
    codes = [str(p["code"]) for p in children]
    answered = [c for c in codes if c in answers]
    results = [r for c in answered for r in answers[c]]
    return results, answered, missing, codes


def rollup(
    *,
    engine: Engine,
    settings: Settings,
    tree: str,
    principal: Principal | None = None,
    deadline: float = DEFAULT_DEADLINE,
    transport: httpx.AsyncBaseTransport | None = None,
) -> RollupResult:
    """Pull the children's values of a tree, store them and roll them up into this unit."""
    start = time.perf_counter()
    results, answered, missing, codes = asyncio.run(
        gather_children(
            engine=engine, settings=settings, tree=tree, deadline=deadline, transport=transport
        )
    )
    counts = (
        indicators.ingest_child_results(engine=engine, results=results, code=settings.code)
        if results
        else {"stored": 0, "rolled_up": 0}
    )
    outcome = RollupResult(
        tree=tree,
        children=codes,
        answered=sorted(answered),
        missing=dict(sorted(missing.items())),
        stored=int(counts.get("stored", 0)),
        rolled_up=int(counts.get("rolled_up", 0)),
        seconds=round(time.perf_counter() - start, 3),
    )
    audit.append(
        data_dir=settings.data_dir,
        principal=principal,
        action="indicator.rollup",
        resource=f"indicator:{tree}",
        result="partial" if missing else "ok",
        rows=outcome.stored,
        detail={"answered": len(answered), "missing": sorted(missing)},
    )
    return outcome
