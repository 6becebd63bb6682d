"""MQTT device telemetry: topics map to entities, payloads to attributes with temporal history.

Delivery is at least once (QoS 1, a persistent broker session); a per-device checkpoint of the
last observedAt, committed with the update, turns redeliveries into no-ops.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine

from citybrain.core.errors import BadInput, CityBrainError
from citybrain.hub.connectors import checkpoints
from citybrain.hub.ngsild import service
from citybrain.hub.ngsild.entities import expand_entity
from citybrain.hub.ngsild.jsonld import ContextStore, TermMap

log = logging.getLogger(__name__)
CONNECTOR = "mqtt-telemetry"
DEFAULT_PATTERN = "citybrain/{city}/devices/{type}/{device}"
DEFAULT_ID = "urn:ngsi-ld:{type}:{device}"
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass
class Mapping:
    """How a topic names an entity: a pattern with placeholders and an id template."""

    pattern: str = DEFAULT_PATTERN
    id_template: str = DEFAULT_ID
    regex: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        names = _PLACEHOLDER.findall(self.pattern)
        if "type" not in names or not all(
            n in names for n in _PLACEHOLDER.findall(self.id_template)
        ):
            raise BadInput(
                "the topic pattern needs {type} and every placeholder of the id template"
            )
        regex = re.escape(self.pattern)
        for name in names:
            regex = regex.replace(re.escape("{" + name + "}"), f"(?P<{name}>[^/]+)")
        self.regex = re.compile(f"^{regex}$")

    def subscription(self) -> str:
        """Return the MQTT subscription filter covering the pattern."""
        return _PLACEHOLDER.sub("+", self.pattern)


@dataclass
class Counters:
    """What the connector has done since it started."""

    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)


def to_entity(mapping: Mapping, topic: str, payload: bytes) -> tuple[dict[str, Any], str]:
    """Turn one message into an entity fragment and its observedAt, or raise BadInput."""
    match = mapping.regex.match(topic)
    if match is None:
        raise BadInput(f"topic {topic!r} does not match {mapping.pattern!r}")
    try:
        body = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadInput("the payload is not JSON") from None
    if not isinstance(body, dict):
        raise BadInput("the payload must be a JSON object")
    observed = body.get("observedAt")
    if not isinstance(observed, str):
        raise BadInput("the payload needs observedAt")
    try:
        moment = datetime.fromisoformat(observed.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"observedAt {observed!r} is not a date-time") from None
    # devices may send any offset; NGSI-LD keeps UTC with a Z
    utc = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    observed = utc.astimezone(UTC).isoformat().replace("+00:00", "Z")
    parts = match.groupdict()
    entity: dict[str, Any] = {"id": mapping.id_template.format(**parts), "type": parts["type"]}
    readings = {k: v for k, v in body.items() if k != "observedAt"}
    if not readings:
        raise BadInput("the payload has no readings")
    for name, value in readings.items():
        if isinstance(value, dict) and "value" in value:
            entity[name] = {"type": "Property", **value, "observedAt": observed}
        elif isinstance(value, (int, float, str, bool)):
            entity[name] = {"type": "Property", "value": value, "observedAt": observed}
        else:
            raise BadInput(
                f"reading {name!r} must be a number, text, true/false or {{value, unitCode}}"
            )
    return entity, observed


def ingest(
    *,
    engine: Engine,
    terms: TermMap,
    mapping: Mapping,
    topic: str,
    payload: bytes,
    tenant: str = "",
    counters: Counters | None = None,
) -> str:
    """Apply one message; return 'applied', 'duplicate' or 'rejected' (with the reason logged)."""
    counters = counters or Counters()
    try:
        fragment, observed = to_entity(mapping, topic, payload)
        entity = expand_entity(fragment, terms)
    except CityBrainError as exc:
        counters.rejected += 1
        counters.reasons.append(exc.message)
        log.warning("telemetry rejected", extra={"topic": topic, "reason": exc.message})
        return "rejected"
    stamp = datetime.fromisoformat(observed.replace("Z", "+00:00")).isoformat()
    with engine.begin() as conn:
        last = checkpoints.read(conn, CONNECTOR, f"{tenant}|{entity['id']}")
        if last is not None and stamp <= last:
            counters.duplicates += 1
            return "duplicate"
        service.upsert_many_in(conn, tenant=tenant, entities=[entity], mode="upsert")
        checkpoints.write(conn, CONNECTOR, f"{tenant}|{entity['id']}", stamp)
    counters.applied += 1
    return "applied"


class TelemetryConnector:
    """Subscribe to a broker and ingest every message until stopped."""

    def __init__(
        self, *, engine: Engine, broker: str, mapping: Mapping, client_id: str, tenant: str = ""
    ) -> None:
        parsed = urlparse(broker)
        if parsed.scheme not in ("mqtt", "tcp") or not parsed.hostname:
            raise BadInput(f"the broker must be mqtt://host:port, not {broker!r}")
        self.host, self.port = parsed.hostname, parsed.port or 1883
        self.engine, self.mapping, self.tenant = engine, mapping, tenant
        self.terms = ContextStore().term_map(None)
        self.counters = Counters()
        self.connected = threading.Event()
        # a persistent session (clean_session=False) keeps QoS 1 messages while we are away
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        client.subscribe(self.mapping.subscription(), qos=1)
        self.connected.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            ingest(
                engine=self.engine,
                terms=self.terms,
                mapping=self.mapping,
                topic=message.topic,
                payload=bytes(message.payload),
                tenant=self.tenant,
                counters=self.counters,
            )
        except Exception:  # never lose the loop; the broker redelivers what was not acknowledged
            log.exception("telemetry ingest failed", extra={"topic": message.topic})

    def start(self) -> None:
        """Connect and process messages in a background thread."""
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise BadInput(
                f"cannot reach the MQTT broker at {self.host}:{self.port}: {exc}"
            ) from None
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect, keeping the broker session for the next start."""
        self.client.loop_stop()
        self.client.disconnect()
