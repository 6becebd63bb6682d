"""The event centre's subscriptions to device alarms in the hub (NGSI-LD, to its own intake)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from citybrain.core.errors import NotFound
from citybrain.hub.ngsild import subscriptions
from citybrain.hub.ngsild.jsonld import ContextStore
from citybrain.hub.ngsild.service import DEFAULT_TENANT

INTAKE_PATH = "/api/events/intake/ngsi-ld"
PREFIX = "urn:ngsi-ld:Subscription:citybrain:event-centre:"
# who the notifications read as: the devices' owner, a system of the event centre
READER = {
    "subject": "system:event-centre",
    "org": "city_management",
    "role": "service",
    "issuer": "",
    "phone": None,
}

# what raises an alarm (events.service.alarm_type decides which event type it stands for)
ALARMS: dict[str, dict[str, Any]] = {
    "bins": {
        "entities": [{"type": "WasteContainer"}],
        "watchedAttributes": ["fillingLevel"],
        "q": "fillingLevel>=0.9",
        "attributes": ["fillingLevel", "location"],
    },
    "lamps": {
        "entities": [{"type": "Streetlight"}],
        "watchedAttributes": ["status"],
        "q": "|".join(f'status=="{s}"' for s in ("broken", "faulty", "failure", "fault")),
        "attributes": ["status", "location"],
    },
    "cameras": {
        "entities": [{"type": "CameraAlarm"}, {"type": "VideoAlarm"}, {"type": "Alarm"}],
        "watchedAttributes": ["alarmType"],
        "attributes": ["alarmType", "category", "location"],
    },
}


def subscription_body(name: str, base_url: str) -> dict[str, Any]:
    """Return the NGSI-LD subscription of one alarm kind, notifying the node at base_url."""
    alarm = ALARMS[name]
    body: dict[str, Any] = {
        "id": PREFIX + name,
        "type": "Subscription",
        "description": f"event centre: {name} alarms become cases",
        "entities": alarm["entities"],
        "watchedAttributes": alarm["watchedAttributes"],
        "notification": {
            "attributes": alarm["attributes"],
            "format": "normalized",
            "endpoint": {
                "uri": base_url.rstrip("/") + INTAKE_PATH,
                "accept": "application/json",
            },
        },
    }
    if "q" in alarm:
        body["q"] = alarm["q"]
    return body


def ensure_alarm_subscriptions(
    *, engine: Engine, store: ContextStore, base_url: str, issuer: str
) -> list[str]:
    """Create the alarm subscriptions that are missing (idempotent); return the ids created."""
    terms = store.term_map(None)
    created: list[str] = []
    for name in ALARMS:
        sub_id = PREFIX + name
        try:
            subscriptions.get(engine=engine, tenant=DEFAULT_TENANT, sub_id=sub_id)
            continue
        except NotFound:
            pass
        sub = subscriptions.validate(subscription_body(name, base_url), terms)
        sub["_reader"] = {**READER, "issuer": issuer}
        created.append(
            subscriptions.create(engine=engine, tenant=DEFAULT_TENANT, sub=sub, context=None)
        )
    return created
