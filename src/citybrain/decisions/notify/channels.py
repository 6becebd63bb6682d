"""The three channels a notification travels by: webhook, e-mail over SMTP, MQTT.

Each `send_*` either returns (delivered) or raises DeliveryError saying why; the outbox
decides about retries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import smtplib
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx

from citybrain.core.errors import BadInput

SIGNATURE_HEADER = "X-CityBrain-Signature"
TIMEOUT_SECONDS = 5.0
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")
_TOPIC = re.compile(r"^[^#+\s][^#+]*$")


class DeliveryError(Exception):
    """A delivery that did not go through (a retry may)."""


def check_target(channel: str, target: str) -> str:
    """Return the target if it suits the channel; 400 naming the expected form otherwise."""
    target = target.strip()
    if channel == "webhook":
        parts = urlsplit(target)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise BadInput(f"a webhook target is an http(s) URL, not {target!r}")
    elif channel == "email":
        if not _EMAIL.match(target):
            raise BadInput(f"an e-mail target is an address like name@example.org, not {target!r}")
    elif channel == "mqtt":
        broker_host(target)
    return target


def broker_host(target: str) -> tuple[str, int, str | None]:
    """Split an MQTT target mqtt://host:port[/topic] into host, port and topic (or None)."""
    parts = urlsplit(target)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise BadInput(f"an MQTT target is mqtt://host:port[/topic], not {target!r}")
    try:
        port = parts.port or 1883
    except ValueError:
        raise BadInput(f"the port of {target!r} is not a number from 1 to 65535") from None
    topic = parts.path.lstrip("/") or None
    if parts.fragment or parts.query or "#" in target:
        raise BadInput(f"the MQTT target {target!r} may not hold wildcards (+, #) or a query")
    if topic is not None and not _TOPIC.match(topic):
        raise BadInput(f"the MQTT topic {topic!r} may not hold wildcards (+, #)")
    return parts.hostname, port, topic


def signature(secret: str, body: bytes) -> str:
    """Return the HMAC-SHA256 signature header value of a body: sha256=<hex>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def body_of(payload: dict[str, Any]) -> bytes:
    """Return the JSON bytes of a payload exactly as signed and sent."""
    return json.dumps(payload, ensure_ascii=False, sort_keys=True).encode()


def send_webhook(url: str, payload: dict[str, Any], *, secret: str | None = None) -> None:
    """POST the payload as JSON; a 2xx answer is delivered."""
    body = body_of(payload)
    headers = {"Content-Type": "application/json"}
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, body)
    try:
        answer = httpx.post(url, content=body, headers=headers, timeout=TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
    if not 200 <= answer.status_code < 300:
        raise DeliveryError(f"the webhook answered {answer.status_code}")


def subject_of(payload: dict[str, Any]) -> str:
    """Return the e-mail subject of a notification."""
    return f"[CityBrain] {payload['happening']}: {payload['event_type_zh']} {payload['case_id']}"


def text_of(payload: dict[str, Any]) -> str:
    """Return the plain-text body of a notification, one field a line."""
    return "\n".join(f"{k}: {v}" for k, v in payload.items() if v is not None) + "\n"


def send_email(*, host: str, port: int, sender: str, to: str, payload: dict[str, Any]) -> None:
    """Send the notification as a plain-text e-mail through an SMTP server."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject_of(payload)
    message.set_content(text_of(payload))
    try:
        with smtplib.SMTP(host, port, timeout=TIMEOUT_SECONDS) as smtp:
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc


def send_mqtt(*, host: str, port: int, topic: str, payload: dict[str, Any]) -> None:
    """Publish the payload as JSON with QoS 1 and wait until the broker has it."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    try:
        client.connect(host, port, keepalive=10)
        client.loop_start()
        info = client.publish(topic, body_of(payload), qos=1)
        info.wait_for_publish(timeout=TIMEOUT_SECONDS)
        if not info.is_published():
            raise DeliveryError(f"the broker {host}:{port} did not acknowledge {topic}")
    except (OSError, ValueError, RuntimeError) as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        client.loop_stop()
        client.disconnect()
