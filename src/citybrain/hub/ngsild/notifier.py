"""Deliver queued NGSI-LD notifications over HTTP or MQTT, retrying until they get through."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import paho.mqtt.publish as mqtt_publish
from sqlalchemy import Engine, select

from citybrain.core.errors import CityBrainError
from citybrain.hub.ngsild import gated, linked, service, subscriptions
from citybrain.hub.ngsild.entities import ENTITY_MEMBERS, instances, render
from citybrain.hub.ngsild.jsonld import CORE_URL, ContextStore, link_header_for
from citybrain.hub.ngsild.models import ngsild_subscriptions
from citybrain.hub.ngsild.projection import WHOLE, parse_join

log = logging.getLogger(__name__)


def build_notification(
    sub: dict[str, Any],
    entities: list[dict[str, Any]],
    store: ContextStore,
    notified_at: str,
    *,
    engine: Engine | None = None,
    tenant: str = "",
    reader: gated.Reader | None = None,
) -> dict[str, Any]:
    """Render the notification body with the subscription's own @context and format.

    With notification.join (and the engine to read them from), the linked entities go with
    the data, inline or after the entities, as the subscription's reader may see them.
    """
    terms = store.term_map(sub.get("jsonldContext") or sub.get("_context"))
    notification = sub.get("notification", {})
    attrs = set(notification["attributes"]) if notification.get("attributes") else None
    fmt = notification.get("format", "normalized")
    sys_attrs = bool(notification.get("sysAttrs"))
    if not notification.get("showChanges"):
        entities = [_without_previous(e) for e in entities]
    pairs = [
        (e, _picked(render(e, terms, fmt=fmt, attrs=attrs, sys_attrs=sys_attrs), notification))
        for e in entities
    ]
    data = [rendered for _, rendered in pairs]
    join = parse_join(notification)
    if join is not None and engine is not None:
        joiner = linked.Joiner(
            engine=engine,
            tenant=tenant,
            reader=reader,
            terms=terms,
            fmt=fmt,
            # the linked entities are sent whole: attributes, pick and omit are the entity's
            render=lambda e, _: render(e, terms, fmt=fmt),
            join=join,
        )
        data += joiner.expand(pairs, WHOLE)
    return {
        "id": f"urn:ngsi-ld:Notification:{uuid.uuid4()}",
        "type": "Notification",
        "subscriptionId": sub["id"],
        "notifiedAt": notified_at,
        "data": data,
    }


def _picked(rendered: dict[str, Any], notification: dict[str, Any]) -> dict[str, Any]:
    """Keep the members notification.pick names, or drop those notification.omit names."""
    pick, omit = notification.get("pick"), notification.get("omit")
    if pick:
        return {k: v for k, v in rendered.items() if k in pick}
    if omit:
        return {k: v for k, v in rendered.items() if k not in omit}
    return rendered


def _without_previous(entity: dict[str, Any]) -> dict[str, Any]:
    """Drop the previous* members, which only a subscription with showChanges receives.

    A deleted entity is then its id, type and deletedAt.
    """
    if "deletedAt" in entity:
        return {k: v for k, v in entity.items() if k in ENTITY_MEMBERS}
    out: dict[str, Any] = {}
    for name, attr in entity.items():
        if name in ENTITY_MEMBERS or not isinstance(attr, dict | list):
            out[name] = attr
            continue
        kept = [
            {k: v for k, v in i.items() if not k.startswith("previous")} for i in instances(attr)
        ]
        out[name] = kept[0] if len(kept) == 1 else kept
    return out


def notification_context(sub: dict[str, Any]) -> str:
    """The @context a subscription's notifications name: its jsonldContext, else the one it
    was made with (when that is one URL), else the core context."""
    chosen = sub.get("jsonldContext")
    if isinstance(chosen, str):
        return chosen
    context = sub.get("_context")
    if isinstance(context, list) and len(context) == 1:
        context = context[0]
    return context if isinstance(context, str) else CORE_URL


def deliver(
    endpoint: dict[str, Any],
    body: dict[str, Any],
    context_url: str,
    timeout: float = 5.0,
    extra_headers: dict[str, str] | None = None,
) -> None:
    """Send one notification (with the receiver's receiverInfo headers); raise on failure."""
    uri = str(endpoint["uri"])
    parsed = urlparse(uri)
    receiver = {p["key"]: p["value"] for p in endpoint.get("receiverInfo") or []}
    if parsed.scheme in ("http", "https"):
        headers = {**receiver, **(extra_headers or {})}
        if endpoint.get("accept") == "application/ld+json":
            # JSON-LD carries its @context in the body, never in a Link header (clause 6.3.5)
            headers["Content-Type"] = "application/ld+json"
            body = {**body, "@context": context_url}
        else:
            headers["Content-Type"] = "application/json"
            headers["Link"] = link_header_for(context_url)
        response = httpx.post(uri, content=json.dumps(body), headers=headers, timeout=timeout)
        if response.status_code >= 300:
            raise RuntimeError(f"HTTP {response.status_code} from {uri}")
        return
    topic = parsed.path.lstrip("/")
    if not topic:
        raise RuntimeError(f"no MQTT topic in {uri}")
    auth = {"username": parsed.username, "password": parsed.password} if parsed.username else None
    mqtt_publish.single(
        topic,
        payload=json.dumps(
            {
                "metadata": {
                    **receiver,
                    "Content-Type": "application/json",
                    "Link": link_header_for(context_url),
                },
                "body": body,
            }
        ),
        qos=1,
        hostname=parsed.hostname or "127.0.0.1",
        port=parsed.port or (8883 if parsed.scheme == "mqtts" else 1883),
        auth=auth,  # type: ignore[arg-type]
        keepalive=10,
    )


def _same_origin(uri: str, base: str | None) -> bool:
    if not base:
        return False
    a, b = urlparse(uri), urlparse(base)
    return (a.scheme, a.hostname, a.port or 80) == (b.scheme, b.hostname, b.port or 80)


def self_headers(
    sub: dict[str, Any], uri: str, *, data_dir: Path | None, self_url: str | None, issuer: str
) -> dict[str, str]:
    """A short token of the subscription's reader, only for notifications to this node itself.

    The node's own routes (alarm intake at the event centre) need a credential like any
    caller; a token signed here for one minute goes to nowhere but this node.
    """
    claims = sub.get("_reader")
    if data_dir is None or not isinstance(claims, dict) or not _same_origin(uri, self_url):
        return {}
    from citybrain.governance.identity.tokens import issue_token

    try:
        token = issue_token(
            data_dir=data_dir,
            issuer=issuer,
            subject=str(claims["subject"]),
            org=str(claims["org"]),
            role=str(claims["role"]),
            ttl=60,
            phone=claims.get("phone"),
        )
    except (KeyError, ValueError, CityBrainError):
        return {}
    return {"Authorization": f"Bearer {token}"}


class EndpointBreaker:
    """Endpoints that failed lately, left alone for a while so they do not hold up the others.

    Without it a receiver that is down took a connection attempt (or a 5 s timeout) for every
    change queued for it, and every other subscription's notifications waited behind them.
    """

    FIRST = 1.0
    LONGEST = 60.0

    def __init__(self) -> None:
        self._down: dict[str, tuple[float, float]] = {}  # uri -> (retry at, current pause)

    def down_until(self, uri: str) -> float | None:
        """The monotonic time before which the endpoint is not tried, or None."""
        found = self._down.get(uri)
        if found is None or found[0] <= time.monotonic():
            return None
        return found[0]

    def failed(self, uri: str) -> None:
        """Pause the endpoint, twice as long as last time (1 s to 60 s)."""
        pause = min(self.LONGEST, 2 * self._down[uri][1]) if uri in self._down else self.FIRST
        self._down[uri] = (time.monotonic() + pause, pause)

    def worked(self, uri: str) -> None:
        """Forget the endpoint's failures."""
        self._down.pop(uri, None)


def dispatch_once(
    *,
    engine: Engine,
    store: ContextStore,
    data_dir: Path | None = None,
    self_url: str | None = None,
    issuer: str = "",
    breaker: EndpointBreaker | None = None,
) -> int:
    """Deliver every due notification once; return how many were delivered.

    breaker: endpoints that failed in earlier passes (run keeps one); their notifications are
    put off until the endpoint is tried again, without an attempt counted.
    """
    delivered = 0
    breaker = breaker or EndpointBreaker()
    cache: dict[tuple[str, str], dict[str, Any] | None] = {}
    put_off: dict[float, list[Any]] = {}
    for row in subscriptions.pending(engine=engine):
        uri = str(row.endpoint.get("uri", ""))
        until = breaker.down_until(uri)
        if until is not None:
            put_off.setdefault(until, []).append(row)
            continue
        key = (row.tenant, row.subscription_id)
        if key not in cache:
            try:
                cache[key] = subscriptions.get(
                    engine=engine, tenant=row.tenant, sub_id=row.subscription_id
                )
            except Exception:  # the subscription was deleted meanwhile
                cache[key] = None
        sub = cache[key]
        if sub is None:
            subscriptions.mark(engine=engine, row=row, error=None)
            continue
        shown = gated.notified_entities(
            sub, [row.payload["entity"]], engine=engine, data_dir=data_dir
        )
        if not shown:
            # the subscription's reader may not see this entity: nothing is sent
            subscriptions.mark(engine=engine, row=row, error=None)
            continue
        try:
            reader = gated.subscription_reader(sub, engine=engine, data_dir=data_dir)
            body = build_notification(
                sub,
                shown,
                store,
                row.payload["notifiedAt"],
                engine=engine,
                tenant=row.tenant,
                reader=reader,
            )
            if reader is not None:
                reader.finish()  # the linked entities read for the notification
            context_url = notification_context(sub)
            own = self_headers(
                sub, str(row.endpoint["uri"]), data_dir=data_dir, self_url=self_url, issuer=issuer
            )
            deliver(row.endpoint, body, context_url, extra_headers=own)
        except Exception as exc:  # any failure is retried later: delivery is at least once
            subscriptions.mark(engine=engine, row=row, error=str(exc) or type(exc).__name__)
            breaker.failed(uri)
            log.warning(
                "notification failed",
                extra={"subscription": row.subscription_id, "error": str(exc)},
            )
            continue
        breaker.worked(uri)
        subscriptions.mark(engine=engine, row=row, error=None)
        delivered += 1
    now = time.monotonic()
    for until, rows in put_off.items():
        wall = datetime.now(UTC) + timedelta(seconds=max(0.0, until - now))
        subscriptions.postpone(engine=engine, rows=rows, until=wall)
    return delivered


def periodic_once(*, engine: Engine, now: datetime | None = None) -> int:
    """Queue notifications for timeInterval subscriptions that are due."""
    moment = now or datetime.now(UTC)
    queued = 0
    with engine.connect() as conn:
        rows = list(conn.execute(select(ngsild_subscriptions)))
    for row in rows:
        sub = row.subscription
        interval = sub.get("timeInterval")
        if not interval or not sub.get("isActive", True):
            continue
        last = row.last_notification
        if (
            last is not None
            and (moment - (last if last.tzinfo else last.replace(tzinfo=UTC))).total_seconds()
            < interval
        ):
            continue
        types = [s["type"] for s in sub.get("entities", [])]
        page, _ = service.query_entities(
            engine=engine,
            tenant=row.tenant,
            spec=service.EntityQuery(types=types or None),
            limit=10_000,
            offset=0,
        )
        with engine.begin() as conn:
            for entity in page:
                if subscriptions.matches(
                    {k: v for k, v in sub.items() if k != "watchedAttributes"}, entity, set(entity)
                ):
                    subscriptions.queue_one(conn, row.tenant, row.id, sub, entity, moment)
                    queued += 1
            subscriptions.touch(conn, row.tenant, row.id, moment)
    return queued


async def run(
    *,
    engine: Engine,
    store: ContextStore,
    data_dir: Path | None = None,
    interval: float = 0.2,
    self_url: str | None = None,
    issuer: str = "",
) -> None:
    """Deliver notifications until cancelled (gated by each subscription's reader)."""
    breaker = EndpointBreaker()
    while True:
        try:
            await asyncio.to_thread(periodic_once, engine=engine)
            await asyncio.to_thread(
                dispatch_once,
                engine=engine,
                store=store,
                data_dir=data_dir,
                self_url=self_url,
                issuer=issuer,
                breaker=breaker,
            )
        except asyncio.CancelledError:
            raise
        except Exception:  # keep the loop alive; the rows stay queued
            log.exception("notification dispatcher error")
        await asyncio.sleep(interval)
