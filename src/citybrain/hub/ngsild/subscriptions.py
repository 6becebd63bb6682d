"""NGSI-LD subscriptions: validation, matching on every write, and a durable notification outbox.

A change and the notifications it triggers are written in one transaction, so a notification
is never lost: the dispatcher delivers each outbox row at least once, also after a restart.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, update

from citybrain.core.errors import BadInput, Conflict, NotFound
from citybrain.hub.ngsild import geoquery, query
from citybrain.hub.ngsild.entities import ENTITY_MEMBERS, NGSI_NULL, instances
from citybrain.hub.ngsild.jsonld import TermMap, is_iri
from citybrain.hub.ngsild.models import ngsild_outbox, ngsild_subscriptions
from citybrain.hub.ngsild.projection import parse_join

FORMATS = ("normalized", "keyValues", "concise")
# clause 5.2.12: notificationTrigger; without one a subscription hears creations and updates
TRIGGERS = (
    "entityCreated",
    "entityUpdated",
    "entityDeleted",
    "attributeCreated",
    "attributeUpdated",
    "attributeDeleted",
)
DEFAULT_TRIGGERS = ("entityCreated", "entityUpdated", "attributeCreated", "attributeUpdated")
# how a deleted attribute is notified (clause 5.8.7): its NGSI-LD Null, the old content after
NULL_FORMS = {
    "Relationship": ("object", NGSI_NULL, "previousObject"),
    "ListRelationship": ("objectList", [NGSI_NULL], "previousObjectList"),
    "LanguageProperty": ("languageMap", {"@none": NGSI_NULL}, "previousLanguageMap"),
    "ListProperty": ("valueList", [NGSI_NULL], "previousValueList"),
    "VocabProperty": ("vocab", NGSI_NULL, "previousVocab"),
    "JsonProperty": ("json", NGSI_NULL, "previousJson"),
}
SCHEMES = ("http", "https", "mqtt", "mqtts")


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _expired(sub: dict[str, Any]) -> bool:
    """Return whether a subscription's expiresAt has passed."""
    raw = sub.get("expiresAt")
    if not raw:
        return False
    stamp = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)) <= _now()


def _positive(body: dict[str, Any], key: str) -> float | None:
    if key not in body:
        return None
    value = body[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise BadInput(f"{key} must be a positive number of seconds")
    return value  # kept as given: 5 reads back as 5, not 5.0


def validate(body: Any, terms: TermMap, *, partial: bool = False) -> dict[str, Any]:
    """Check a subscription (or a PATCH fragment) and return it with names expanded."""
    if not isinstance(body, dict):
        raise BadInput("a subscription must be a JSON object")
    if not partial and body.get("type") != "Subscription":
        raise BadInput('a subscription needs "type": "Subscription"')
    out: dict[str, Any] = {}
    if "id" in body:
        if not isinstance(body["id"], str) or not is_iri(body["id"]):
            raise BadInput("the subscription id must be a URI")
        out["id"] = body["id"]
    for key in ("subscriptionName", "description"):
        if key in body:
            out[key] = str(body[key])
    if "entities" in body:
        selectors = body["entities"]
        if not isinstance(selectors, list) or not selectors:
            raise BadInput("entities must be a non-empty list")
        out["entities"] = []
        for sel in selectors:
            if not isinstance(sel, dict) or not isinstance(sel.get("type"), str):
                raise BadInput("every entities item needs a type")
            item: dict[str, Any] = {"type": terms.expand(sel["type"])}
            if "id" in sel:
                if not isinstance(sel["id"], str) or not is_iri(sel["id"]):
                    raise BadInput("an entities id must be a URI")
                item["id"] = sel["id"]
            if "idPattern" in sel:
                try:
                    re.compile(sel["idPattern"])
                except (re.error, TypeError):
                    raise BadInput("idPattern is not a valid regular expression") from None
                item["idPattern"] = sel["idPattern"]
            out["entities"].append(item)
    if "watchedAttributes" in body:
        watched = body["watchedAttributes"]
        if (
            not isinstance(watched, list)
            or not watched
            or not all(isinstance(w, str) for w in watched)
        ):
            raise BadInput("watchedAttributes must be a non-empty list of names")
        out["watchedAttributes"] = [terms.expand(w) for w in watched]
    if "q" in body:
        if not isinstance(body["q"], str):
            raise BadInput("q must be a string")
        parsed = query.parse(body["q"])
        out["q"] = body["q"]
        out["qNames"] = {n: terms.expand(n) for n in query.names(parsed)}
        out["qNames"].update({s: terms.expand(s) for s in _subs(parsed)})
    if "csf" in body:
        # a context source filter is a query as q is (clause 4.9); kept for registrations
        if not isinstance(body["csf"], str):
            raise BadInput("csf must be a string")
        query.parse(body["csf"])
        out["csf"] = body["csf"]
    if "jsonldContext" in body:
        context = body["jsonldContext"]
        parsed_context = urlparse(context) if isinstance(context, str) else None
        if parsed_context is None or not parsed_context.scheme or not parsed_context.netloc:
            raise BadInput("jsonldContext must be the URL of an @context")
        out["jsonldContext"] = context
    if "geoQ" in body:
        geo = body["geoQ"]
        if not isinstance(geo, dict):
            raise BadInput("geoQ must be an object")
        parsed_geo = geoquery.parse(
            str(geo.get("georel", "")),
            geo.get("geometry"),
            geo.get("coordinates"),
            geo.get("geoproperty"),
        )
        out["geoQ"] = {**geo, "geoproperty": terms.expand(parsed_geo.geoproperty)}
    for key in ("throttling", "timeInterval"):
        value = _positive(body, key)
        if value is not None:
            out[key] = value
    if "throttling" in out and "timeInterval" in out:
        raise BadInput("throttling and timeInterval cannot be used together")
    if "expiresAt" in body:
        try:
            expires = datetime.fromisoformat(str(body["expiresAt"]).replace("Z", "+00:00"))
        except ValueError:
            raise BadInput("expiresAt is not a valid date-time") from None
        if (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) <= _now():
            raise BadInput("expiresAt must be in the future")
        out["expiresAt"] = body["expiresAt"]
    if "notificationTrigger" in body:
        triggers = body["notificationTrigger"]
        if (
            not isinstance(triggers, list)
            or not triggers
            or not all(t in TRIGGERS for t in triggers)
        ):
            raise BadInput(f"notificationTrigger must be a non-empty list of {', '.join(TRIGGERS)}")
        out["notificationTrigger"] = list(dict.fromkeys(triggers))
    if "isActive" in body:
        if not isinstance(body["isActive"], bool):
            raise BadInput("isActive must be true or false")
        out["isActive"] = body["isActive"]
    if "notification" in body:
        out["notification"] = _notification(body["notification"], terms)
    elif not partial:
        raise BadInput("a subscription needs notification.endpoint.uri")
    if not partial and not any(k in out for k in ("entities", "watchedAttributes")):
        raise BadInput("a subscription needs entities or watchedAttributes")
    return out


def _subs(expr: query.Expr) -> list[str]:
    if isinstance(expr, query.Comparison):
        return [s for s in expr.path.sub if s not in query.META]
    return [s for part in expr.parts for s in _subs(part)]


def _notification(raw: Any, terms: TermMap) -> dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("endpoint"), dict):
        raise BadInput("notification needs an endpoint object")
    uri = raw["endpoint"].get("uri")
    parsed = urlparse(uri) if isinstance(uri, str) else None
    if parsed is None or parsed.scheme not in SCHEMES or not parsed.hostname:
        raise BadInput("notification.endpoint.uri must be an http(s) or mqtt(s) URL with a host")
    fmt = raw.get("format", "normalized")
    if fmt not in FORMATS:
        raise BadInput(f"notification.format must be one of {', '.join(FORMATS)}")
    out: dict[str, Any] = {
        "endpoint": {"uri": uri, "accept": raw["endpoint"].get("accept", "application/json")},
        "format": fmt,
    }
    if "receiverInfo" in raw["endpoint"]:
        out["endpoint"]["receiverInfo"] = _key_values(
            raw["endpoint"]["receiverInfo"], "notification.endpoint.receiverInfo"
        )
    if "notifierInfo" in raw["endpoint"]:
        out["endpoint"]["notifierInfo"] = _key_values(
            raw["endpoint"]["notifierInfo"], "notification.endpoint.notifierInfo"
        )
    if "sysAttrs" in raw:
        if not isinstance(raw["sysAttrs"], bool):
            raise BadInput("notification.sysAttrs must be true or false")
        out["sysAttrs"] = raw["sysAttrs"]
    if "showChanges" in raw:
        if not isinstance(raw["showChanges"], bool):
            raise BadInput("notification.showChanges must be true or false")
        if raw["showChanges"] and fmt == "keyValues":
            raise BadInput("notification.showChanges needs the normalized or concise format")
        out["showChanges"] = raw["showChanges"]
    join = parse_join({k: raw[k] for k in ("join", "joinLevel") if k in raw})
    if join is not None:
        out["join"], out["joinLevel"] = join.mode, join.level
    for member in ("attributes", "pick", "omit"):
        if member in raw:
            names = raw[member]
            if (
                not isinstance(names, list)
                or not names
                or not all(isinstance(a, str) and a for a in names)
            ):
                raise BadInput(f"notification.{member} must be a non-empty list of names")
    if "attributes" in raw and ("pick" in raw or "omit" in raw):
        raise BadInput("notification.attributes cannot be used with pick or omit")
    if set(raw.get("pick") or []) & set(raw.get("omit") or []):
        raise BadInput("a member cannot be in both notification.pick and notification.omit")
    if "attributes" in raw:
        out["attributes"] = [terms.expand(a) for a in raw["attributes"]]
    for member in ("pick", "omit"):
        if member in raw:
            # applied to the rendered entities, whose names are in the subscription's terms
            out[member] = list(raw[member])
    return out


def _key_values(raw: Any, where: str) -> list[dict[str, str]]:
    """Check a list of {key, value} pairs (headers the receiver wants with each notification)."""
    if not isinstance(raw, list) or not all(
        isinstance(p, dict)
        and set(p) == {"key", "value"}
        and isinstance(p["key"], str)
        and isinstance(p["value"], str)
        and re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", p["key"])
        and "\n" not in p["value"]
        and "\r" not in p["value"]
        for p in raw
    ):
        raise BadInput(f"{where} must be a list of {{key, value}} header names and values")
    return [{"key": p["key"], "value": p["value"]} for p in raw]


def create(*, engine: Engine, tenant: str, sub: dict[str, Any], context: Any) -> str:
    """Store a new subscription and return its id."""
    sub_id = sub.get("id") or f"urn:ngsi-ld:Subscription:{uuid.uuid4()}"
    sub = {**sub, "id": sub_id, "type": "Subscription"}
    with engine.begin() as conn:
        exists = conn.execute(
            select(ngsild_subscriptions.c.id).where(
                ngsild_subscriptions.c.tenant == tenant, ngsild_subscriptions.c.id == sub_id
            )
        ).first()
        if exists:
            raise Conflict(f"subscription {sub_id} exists already")
        conn.execute(
            insert(ngsild_subscriptions).values(
                tenant=tenant,
                id=sub_id,
                subscription=sub,
                context=context,
                created_at=_now(),
                times_sent=0,
                times_failed=0,
            )
        )
    return str(sub_id)


def get(*, engine: Engine, tenant: str, sub_id: str) -> dict[str, Any]:
    """Return a subscription with its delivery status."""
    with engine.connect() as conn:
        row = conn.execute(
            select(ngsild_subscriptions).where(
                ngsild_subscriptions.c.tenant == tenant, ngsild_subscriptions.c.id == sub_id
            )
        ).first()
    if row is None:
        raise NotFound(f"subscription {sub_id} not found")
    return _with_status(row)


def _with_status(row: Any) -> dict[str, Any]:
    """The stored subscription with what the system adds (clause 5.2.12, 5.2.14).

    Members the system only knows after notifying (the counts, the times and the status of
    the notifications) appear once there is something to tell; isActive as the user set it.
    """
    sub = dict(row.subscription)
    sub["status"] = (
        "expired" if _expired(sub) else ("active" if sub.get("isActive", True) else "paused")
    )
    notification = dict(sub.get("notification", {}))
    for key, count in (("timesSent", row.times_sent), ("timesFailed", row.times_failed)):
        if count:
            notification[key] = count
    for key, value in (
        ("lastNotification", row.last_notification),
        ("lastSuccess", row.last_success),
        ("lastFailure", row.last_failure),
    ):
        if value is not None:
            notification[key] = _aware(value).isoformat().replace("+00:00", "Z")  # type: ignore[union-attr]
    if row.last_notification or row.last_success or row.last_failure:
        notification["status"] = (
            "failed"
            if row.last_failure and (not row.last_success or row.last_failure > row.last_success)
            else "ok"
        )
    sub["notification"] = notification
    sub["_context"] = row.context
    return sub


def list_all(
    *, engine: Engine, tenant: str, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """Return a page of subscriptions and how many there are."""
    with engine.connect() as conn:
        total = conn.execute(
            select(func.count())
            .select_from(ngsild_subscriptions)
            .where(ngsild_subscriptions.c.tenant == tenant)
        ).scalar_one()
        rows = conn.execute(
            select(ngsild_subscriptions)
            .where(ngsild_subscriptions.c.tenant == tenant)
            .order_by(ngsild_subscriptions.c.created_at, ngsild_subscriptions.c.id)
            .limit(limit)
            .offset(offset)
        )
        return [_with_status(r) for r in rows], int(total)


def patch(*, engine: Engine, tenant: str, sub_id: str, fragment: dict[str, Any]) -> None:
    """Change some members of a subscription."""
    if "id" in fragment and fragment["id"] != sub_id:
        raise BadInput("the id of a subscription cannot change")
    with engine.begin() as conn:
        row = conn.execute(
            select(ngsild_subscriptions.c.subscription).where(
                ngsild_subscriptions.c.tenant == tenant, ngsild_subscriptions.c.id == sub_id
            )
        ).first()
        if row is None:
            raise NotFound(f"subscription {sub_id} not found")
        merged = {**row.subscription, **fragment}
        if "throttling" in merged and "timeInterval" in merged:
            raise BadInput("throttling and timeInterval cannot be used together")
        conn.execute(
            update(ngsild_subscriptions)
            .where(ngsild_subscriptions.c.tenant == tenant, ngsild_subscriptions.c.id == sub_id)
            .values(subscription=merged)
        )


def remove(*, engine: Engine, tenant: str, sub_id: str) -> None:
    """Delete a subscription (pending notifications for it are dropped too)."""
    with engine.begin() as conn:
        gone = conn.execute(
            delete(ngsild_subscriptions).where(
                ngsild_subscriptions.c.tenant == tenant, ngsild_subscriptions.c.id == sub_id
            )
        ).rowcount
        conn.execute(
            delete(ngsild_outbox).where(
                ngsild_outbox.c.tenant == tenant,
                ngsild_outbox.c.subscription_id == sub_id,
                ngsild_outbox.c.delivered_at.is_(None),
            )
        )
    if not gone:
        raise NotFound(f"subscription {sub_id} not found")


def matches(sub: dict[str, Any], entity: dict[str, Any], changed: set[str]) -> bool:
    """Return whether a change to an entity concerns a subscription."""
    if not sub.get("isActive", True):
        return False
    if _expired(sub):
        return False
    selectors = sub.get("entities")
    if selectors:
        types = set(entity.get("type", []))
        if not any(
            sel["type"] in types
            and ("id" not in sel or sel["id"] == entity["id"])
            and ("idPattern" not in sel or re.fullmatch(sel["idPattern"], entity["id"]))
            for sel in selectors
        ):
            return False
    watched = sub.get("watchedAttributes")
    if watched and not changed.intersection(watched):
        return False
    if "q" in sub:
        names = sub.get("qNames", {})
        expr = query.expand(query.parse(sub["q"]), lambda n: names.get(n, n))
        if not query.matches(expr, entity):
            return False
    if "geoQ" in sub:
        geo = sub["geoQ"]
        gq = geoquery.parse(
            str(geo["georel"]), geo.get("geometry"), geo.get("coordinates"), geo.get("geoproperty")
        )
        values = [i.get("value") for i in instances(entity.get(gq.geoproperty))]
        if not any(geoquery.matches(gq, v) for v in values):
            return False
    return True


_ACTIVE = select(ngsild_subscriptions).where(ngsild_subscriptions.c.tenant == bindparam("b_tenant"))
# conn.info key: the subscriptions a group-commit round has read, by tenant (see commits)
ROUND_ROWS = "ngsild_round_subscriptions"


def active_rows(conn: Connection, tenant: str) -> list[Any]:
    """Return the subscriptions of a tenant (read once per batch of writes, or per round).

    In a group-commit round the rows read for its first unit serve the others: the round
    holds the writer's lock from before its first unit, a write that queues a notification
    drops them (it moved last_notification), and so does a unit that rolls back.
    """
    cache: dict[str, list[Any]] | None = conn.info.get(ROUND_ROWS)
    if cache is None:
        return list(conn.execute(_ACTIVE, {"b_tenant": tenant}))
    rows = cache.get(tenant)
    if rows is None:
        rows = cache[tenant] = list(conn.execute(_ACTIVE, {"b_tenant": tenant}))
    return rows


def _stamp() -> str:
    return _now().isoformat(timespec="milliseconds").replace("+00:00", "Z")


def deleted_form(instance: dict[str, Any]) -> dict[str, Any]:
    """A deleted attribute instance as a notification shows it: its Null, the old content."""
    kind = str(instance.get("type", "Property"))
    member, null, previous = NULL_FORMS.get(kind, ("value", NGSI_NULL, "previousValue"))
    out: dict[str, Any] = {"type": kind, member: null, "deletedAt": _stamp()}
    if member in instance:
        out[previous] = instance[member]
    if "datasetId" in instance:
        out["datasetId"] = instance["datasetId"]
    return out


def enqueue(
    conn: Connection,
    tenant: str,
    entity: dict[str, Any],
    rows: list[Any] | None = None,
    *,
    new: bool = False,
    deleted: dict[str, list[dict[str, Any]]] | None = None,
    previous: dict[str, Any] | None = None,
) -> int:
    """Queue a notification for every subscription this write concerns (same transaction).

    new: the write created the entity; deleted: the attribute instances it removed;
    previous: the attributes before the write, whose content the updated instances carry
    as previousValue, previousObject... (shown to subscriptions with showChanges).
    """
    moment = entity.get("modifiedAt")
    fired: set[str] = set()
    changed: set[str] = set()
    for name, attr in entity.items():
        if name in ENTITY_MEMBERS:
            continue
        written = [i for i in instances(attr) if i.get("modifiedAt") == moment]
        if written:
            changed.add(name)
            created = any(i.get("createdAt") == moment for i in written)
            fired.add("attributeCreated" if created else "attributeUpdated")
    deleted = {k: v for k, v in (deleted or {}).items() if v}
    if deleted:
        fired.add("attributeDeleted")
        changed |= set(deleted)
    if not changed and not new:
        return 0
    if rows is None:
        rows = active_rows(conn, tenant)
    if not rows:
        return 0  # no subscription in the tenant: nothing to build the notification for
    fired = {"entityCreated"} if new else fired | {"entityUpdated"}
    shown = dict(entity)
    before = previous or {}
    for name in changed & before.keys():
        shown[name] = _with_previous(instances(entity.get(name)), instances(before[name]), moment)
    for name, removed in deleted.items():
        kept = instances(entity.get(name))
        forms = kept + [deleted_form(i) for i in removed]
        shown[name] = forms[0] if len(forms) == 1 else forms
    return _queue_matching(conn, tenant, entity, shown, changed, fired, rows)


def _with_previous(now: list[dict[str, Any]], before: list[dict[str, Any]], moment: Any) -> Any:
    """The written instances with the content they replaced (previousValue and the like)."""
    old = {i.get("datasetId"): i for i in before}
    out = []
    for instance in now:
        was = old.get(instance.get("datasetId"))
        if was is not None and instance.get("modifiedAt") == moment:
            kind = str(was.get("type", "Property"))
            member, _, previous = NULL_FORMS.get(kind, ("value", NGSI_NULL, "previousValue"))
            if member in was:
                instance = {**instance, previous: was[member]}
        out.append(instance)
    return out[0] if len(out) == 1 else out


def enqueue_deleted(conn: Connection, tenant: str, entity: dict[str, Any]) -> int:
    """Queue the notifications of an entity's deletion (trigger entityDeleted).

    Each attribute goes in its deleted form (its Null and the content it had), which only
    subscriptions with showChanges receive (clause 4.5.23, showChanges).
    """
    shown: dict[str, Any] = {
        "id": entity["id"],
        "type": entity.get("type", []),
        "deletedAt": _stamp(),
        # shown with notification.sysAttrs
        **{k: entity[k] for k in ("createdAt", "modifiedAt") if k in entity},
    }
    for name, attr in entity.items():
        if name not in ENTITY_MEMBERS:
            forms = [deleted_form(i) for i in instances(attr)]
            shown[name] = forms[0] if len(forms) == 1 else forms
    changed = {n for n in entity if n not in ENTITY_MEMBERS}
    return _queue_matching(conn, tenant, entity, shown, changed, {"entityDeleted"}, None)


def _queue_matching(
    conn: Connection,
    tenant: str,
    entity: dict[str, Any],
    shown: dict[str, Any],
    changed: set[str],
    fired: set[str],
    rows: list[Any] | None,
) -> int:
    """Queue `shown` to every subscription a change of `entity` fires (see enqueue)."""
    if rows is None:
        rows = active_rows(conn, tenant)
    now = _now()
    queued = 0
    for row in rows:
        sub = row.subscription
        triggers = set(sub.get("notificationTrigger") or DEFAULT_TRIGGERS)
        if "timeInterval" in sub or not fired & triggers:
            continue
        check = sub if "entityDeleted" not in fired else {**sub, "watchedAttributes": None}
        if not matches(check, entity, changed):
            continue
        throttle = sub.get("throttling")
        last = _aware(row.last_notification)
        if throttle and last and now - last < timedelta(seconds=throttle):
            continue
        conn.execute(
            insert(ngsild_outbox).values(
                tenant=tenant,
                subscription_id=row.id,
                endpoint=sub["notification"]["endpoint"],
                payload={
                    "entity": shown,
                    "notifiedAt": now.isoformat().replace("+00:00", "Z"),
                    "trigger": sorted(fired & triggers)[0],
                },
                attempts=0,
                next_attempt_at=now,
            )
        )
        conn.execute(
            update(ngsild_subscriptions)
            .where(ngsild_subscriptions.c.tenant == tenant, ngsild_subscriptions.c.id == row.id)
            .values(last_notification=now)
        )
        queued += 1
    if queued:
        conn.info.get(ROUND_ROWS, {}).pop(tenant, None)  # their last_notification moved
    return queued


def pending(*, engine: Engine, limit: int = 100) -> list[Any]:
    """Return outbox rows due for delivery."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(ngsild_outbox)
                .where(
                    ngsild_outbox.c.delivered_at.is_(None),
                    ngsild_outbox.c.next_attempt_at <= _now(),
                )
                .order_by(ngsild_outbox.c.seq)
                .limit(limit)
            )
        )


def mark(*, engine: Engine, row: Any, error: str | None) -> None:
    """Record a delivery attempt: delivered, or retried later with backoff."""
    now = _now()
    with engine.begin() as conn:
        if error is None:
            conn.execute(
                update(ngsild_outbox)
                .where(ngsild_outbox.c.seq == row.seq)
                .values(delivered_at=now, attempts=row.attempts + 1)
            )
            conn.execute(
                update(ngsild_subscriptions)
                .where(
                    ngsild_subscriptions.c.tenant == row.tenant,
                    ngsild_subscriptions.c.id == row.subscription_id,
                )
                .values(last_success=now, times_sent=ngsild_subscriptions.c.times_sent + 1)
            )
        else:
            delay = min(300.0, 0.5 * 2 ** min(row.attempts, 10))
            conn.execute(
                update(ngsild_outbox)
                .where(ngsild_outbox.c.seq == row.seq)
                .values(
                    attempts=row.attempts + 1,
                    last_error=error[:500],
                    next_attempt_at=now + timedelta(seconds=delay),
                )
            )
            conn.execute(
                update(ngsild_subscriptions)
                .where(
                    ngsild_subscriptions.c.tenant == row.tenant,
                    ngsild_subscriptions.c.id == row.subscription_id,
                )
                .values(last_failure=now, times_failed=ngsild_subscriptions.c.times_failed + 1)
            )


def postpone(*, engine: Engine, rows: list[Any], until: datetime) -> None:
    """Put queued notifications off until a time, without counting an attempt.

    Their endpoint failed a moment ago: their subscriptions show a failure (lastFailure, the
    failed status) though this one was not tried.
    """
    if not rows:
        return
    now = _now()
    with engine.begin() as conn:
        conn.execute(
            update(ngsild_outbox)
            .where(
                ngsild_outbox.c.seq.in_([r.seq for r in rows]),
                ngsild_outbox.c.next_attempt_at < until,
            )
            .values(next_attempt_at=until)
        )
        for tenant, sub_id in {(r.tenant, r.subscription_id) for r in rows}:
            conn.execute(
                update(ngsild_subscriptions)
                .where(ngsild_subscriptions.c.tenant == tenant, ngsild_subscriptions.c.id == sub_id)
                .values(last_failure=now)
            )


def queue_one(
    conn: Connection,
    tenant: str,
    sub_id: str,
    sub: dict[str, Any],
    entity: dict[str, Any],
    now: datetime,
) -> None:
    """Queue one notification about one entity."""
    conn.execute(
        insert(ngsild_outbox).values(
            tenant=tenant,
            subscription_id=sub_id,
            endpoint=sub["notification"]["endpoint"],
            payload={
                "entity": entity,
                "notifiedAt": now.isoformat().replace("+00:00", "Z"),
                "trigger": "timeInterval",
            },
            attempts=0,
            next_attempt_at=now,
        )
    )


def touch(conn: Connection, tenant: str, sub_id: str, now: datetime) -> None:
    """Record that a subscription was just notified."""
    conn.execute(
        update(ngsild_subscriptions)
        .where(ngsild_subscriptions.c.tenant == tenant, ngsild_subscriptions.c.id == sub_id)
        .values(last_notification=now)
    )
