"""Ask every trusted child node the same question in parallel, within a deadline.

The roll-ups (indicator values, enrollment statistics, the medical-insurance panel) all pull
aggregates from the children with the parent's node token; a child that is down, slow or
answers something else is named with the reason, and the others' answers are kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import ValidationError

from citybrain.core.config import Settings
from citybrain.federation import trust

Check = Callable[[dict[str, Any], Any], Any]


async def _ask(
    client: httpx.AsyncClient,
    peer: dict[str, Any],
    *,
    settings: Settings,
    path: str,
    params: dict[str, Any] | None,
    check: Check,
) -> Any:
    token = trust.peer_token(
        data_dir=settings.data_dir, caller=settings.code, audience=str(peer["code"])
    )
    response = await client.get(
        str(peer["url"]).rstrip("/") + path,
        params=params,
        headers={"Authorization": f"Bearer {token}"},
    )
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
    return check(peer, response.json())


async def ask_children(
    *,
    peers: list[dict[str, Any]],
    settings: Settings,
    path: str,
    check: Check,
    params: dict[str, Any] | None = None,
    deadline: float = 5.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """GET path at every peer; return {code: check(peer, body)} and {code: why it is missing}."""
    answers: dict[str, Any] = {}
    missing: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=deadline, transport=transport) as client:
        tasks = {
            str(p["code"]): asyncio.create_task(
                _ask(client, p, settings=settings, path=path, params=params, check=check)
            )
            for p in peers
        }
        if tasks:
            _done, pending = await asyncio.wait(tasks.values(), timeout=deadline)
            for task in pending:
                task.cancel()
        for code, task in tasks.items():
            if not task.done() or task.cancelled():
                missing[code] = f"no answer within {deadline:g} s"
                continue
            error = task.exception()
            if error is not None:
                reason = "invalid values" if isinstance(error, ValidationError) else str(error)
                missing[code] = (reason or type(error).__name__)[:300]
                continue
            answers[code] = task.result()
    return answers, missing
