"""Background work of a running node: registering with the parent and keeping in touch."""

from __future__ import annotations

import asyncio
import logging

import httpx
from sqlalchemy import Engine

from citybrain import __version__
from citybrain.core.config import Settings
from citybrain.node import service

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 30.0


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
    }


async def keep_registered(
    *, engine: Engine, settings: Settings, heartbeat: float = HEARTBEAT_SECONDS
) -> None:
    """Register with the parent, retrying with backoff, then refresh on every heartbeat."""
    assert settings.parent_url is not None
    url = settings.parent_url.rstrip("/") + "/api/nodes/register"
    delay = 0.5
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            payload = registration_payload(engine=engine, settings=settings)
            try:
                response = await client.post(url, json=payload)
                if response.status_code == 200:
                    delay = heartbeat
                elif 400 <= response.status_code < 500:
                    # the parent refuses us for a reason retrying will not change; say why
                    log.error(
                        "parent refused registration",
                        extra={"status": response.status_code, "body": response.text[:300]},
                    )
                    delay = heartbeat
                else:
                    delay = min(delay * 2, heartbeat)
            except httpx.HTTPError as exc:
                log.warning("parent unreachable", extra={"parent": url, "error": str(exc)})
                delay = min(delay * 2, heartbeat)
            await asyncio.sleep(delay)
