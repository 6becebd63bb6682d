"""Background work of a running node: registering with the parent and keeping in touch."""

from __future__ import annotations

import asyncio
import logging

import httpx
from sqlalchemy import Engine

from citybrain import __version__
from citybrain.core.config import Settings
from citybrain.federation import outbox, trust
from citybrain.node import service

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 30.0
CAPABILITIES = ["tasks", "escalations"]


def registration_payload(*, engine: Engine, settings: Settings) -> dict[str, object]:
    """Build what a child tells its parent about itself."""
    return {
        "code": settings.code,
        "level": settings.level.value,
        "url": settings.effective_public_url,
        "version": __version__,
        "datasets": [
            {"department": d.department, "name": d.name, "rows": d.rows}
            for d in service.list_datasets(engine=engine)
        ],
        "public_key": trust.own_public_key(settings.data_dir),
        "capabilities": CAPABILITIES,
    }


async def register_once(
    *, engine: Engine, settings: Settings, client: httpx.AsyncClient
) -> httpx.Response | None:
    """Register with the parent once, signed with a peer token; None when no parent is trusted."""
    assert settings.parent_url is not None
    parent = trust.parent_peer(engine=engine)
    if parent is None:
        log.error(
            "no parent key registered; run citybrain nodes set-parent",
            extra={"parent": settings.parent_url},
        )
        return None
    token = trust.peer_token(
        data_dir=settings.data_dir, caller=settings.code, audience=parent["code"]
    )
    response = await client.post(
        settings.parent_url.rstrip("/") + "/api/nodes/register",
        json=registration_payload(engine=engine, settings=settings),
        headers={"Authorization": f"Bearer {token}"},
    )
    if response.status_code == 200:
        trust.touch_peer(
            engine=engine, code=parent["code"], version=response.headers.get("CityBrain-Version")
        )
        # the parent answers again: send what waited for it now
        outbox.nudge(engine=engine, peer_code=parent["code"])
    return response


async def keep_registered(
    *, engine: Engine, settings: Settings, heartbeat: float = HEARTBEAT_SECONDS
) -> None:
    """Register with the parent, retrying with backoff, then refresh on every heartbeat."""
    delay = 0.5
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            try:
                response = await register_once(engine=engine, settings=settings, client=client)
                if response is None:
                    # the administrator may trust the parent while the node runs
                    delay = min(max(delay * 2, 1.0), heartbeat)
                elif response.status_code == 200:
                    delay = heartbeat
                elif 400 <= response.status_code < 500:
                    # the parent refuses us for a reason retrying soon will not change; say why
                    log.error(
                        "parent refused registration",
                        extra={"status": response.status_code, "body": response.text[:300]},
                    )
                    delay = heartbeat
                else:
                    delay = min(delay * 2, heartbeat)
            except httpx.HTTPError as exc:
                log.warning(
                    "parent unreachable", extra={"parent": settings.parent_url, "error": str(exc)}
                )
                delay = min(delay * 2, heartbeat)
            await asyncio.sleep(delay)
