"""The NGSI-LD context store: the only code that reads and writes entities."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError

from citybrain.core.db import json_dumps
from citybrain.core.errors import BadInput, Conflict, NotFound
from citybrain.core.prepared import Prepared
from citybrain.hub.ngsild import (
    gated,
    geoquery,
    prefilter,
    query,
    scope_history,
    subscriptions,
    transient,
)
from citybrain.hub.ngsild.entities import (
    ATTRIBUTE_MEMBERS,
    ENTITY_MEMBERS,
    NGSI_NULL,
    clone,
    drop_null_keys,
    expand_attributes,
    instances,
    is_delete,
    iso,
    live,
    now_iso,
    stamp,
)
from citybrain.hub.ngsild.errors import NonexistentTenant
from citybrain.hub.ngsild.jsonld import TermMap
from citybrain.hub.ngsild.models import (
    ngsild_entities,
    ngsild_entity_types,
    ngsild_history,
    ngsild_tenants,
)
from citybrain.hub.ngsild.scope_history import SCOPE

DEFAULT_TENANT = ""
_TENANT = re.compile(r"^[A-Za-z0-9_\-]{0,128}$")


def check_tenant(tenant: str | None) -> str:
    """Return a valid tenant name ('' for the default tenant)."""
    name = tenant or DEFAULT_TENANT
    if not _TENANT.match(name):
        raise BadInput("NGSILD-Tenant may hold letters, digits, '-' and '_' (at most 128)")
    return name


def _ensure_tenant(conn: Connection, tenant: str) -> None:
    """Create a tenant on first write (NGSI-LD tenants come into being when first used)."""
    if tenant == DEFAULT_TENANT:
        return
    exists = conn.execute(
        select(ngsild_tenants.c.name).where(ngsild_tenants.c.name == tenant)
    ).first()
    if exists is None:
        conn.execute(insert(ngsild_tenants).values(name=tenant, created_at=datetime.now(UTC)))


def require_tenant(engine: Engine, tenant: str) -> None:
    """Refuse a read from a tenant that was never written to."""
    if tenant == DEFAULT_TENANT:
        return
    with engine.connect() as conn:
        require_tenant_in(conn, tenant)


def require_tenant_in(conn: Connection, tenant: str) -> None:
    """Refuse a tenant that was never written to, on the caller's connection."""
    if tenant == DEFAULT_TENANT:
        return
    if (
        conn.execute(select(ngsild_tenants.c.name).where(ngsild_tenants.c.name == tenant)).first()
        is None
    ):
        raise NonexistentTenant(f"tenant {tenant!r} does not exist")


def _load(conn: Connection, tenant: str, entity_id: str) -> dict[str, Any] | None:
    row = _LOAD_ENTITY.first(conn, {"b_tenant": tenant, "b_id": entity_id})
    return None if row is None else dict(row[0])


# prepared once, as _UPDATE_ENTITY below: a single-entity write reads its entity first
_LOAD_ENTITY = Prepared(
    select(ngsild_entities.c.entity).where(
        ngsild_entities.c.tenant == bindparam("b_tenant"),
        ngsild_entities.c.id == bindparam("b_id"),
    )
)


def _save(
    conn: Connection,
    tenant: str,
    entity: dict[str, Any],
    *,
    new: bool,
    history: bool = True,
    deleted: dict[str, list[dict[str, Any]]] | None = None,
    types_changed: bool = True,
    previous: dict[str, Any] | None = None,
) -> None:
    """Write an entity, its types, its history and the notifications it triggers.

    deleted: the attribute instances this change removed (notified as attributeDeleted);
    types_changed: False when the change kept the stored types (their rows stay as they are);
    previous: the attributes as they were before an update (notified with showChanges).
    """
    gated.check_write(entity.get("type") or [])
    moment = datetime.now(UTC)
    geo = prefilter.geo_columns(entity)
    if new:
        conn.execute(
            insert(ngsild_entities).values(
                tenant=tenant,
                id=entity["id"],
                entity=entity,
                created_at=moment,
                modified_at=moment,
                **geo,
            )
        )
    else:
        # a statement prepared once: building one per write costs more than running it
        _UPDATE_ENTITY.execute(
            conn,
            {"b_tenant": tenant, "b_id": entity["id"], "entity": entity, "modified_at": moment}
            | geo,
        )
        if types_changed:
            conn.execute(_DELETE_TYPES, {"b_tenant": tenant, "b_id": entity["id"]})
    if new or types_changed:
        conn.execute(
            insert(ngsild_entity_types),
            [
                {"tenant": tenant, "id": entity["id"], "type": t}
                for t in dict.fromkeys(entity["type"])
            ],
        )
    if history:
        record_history(conn, tenant, entity)
        if deleted:
            _record_deletions(conn, tenant, entity, deleted)
        if new and "scope" in entity:
            note_scope(conn, tenant, entity, None)
    transient.note_expiry(conn, tenant, entity)
    # notifications are queued in the same transaction as the change: never lost, never early
    subscriptions.enqueue(conn, tenant, entity, new=new, deleted=deleted, previous=previous)


_UPDATE_ENTITY = Prepared(
    update(ngsild_entities)
    .where(
        ngsild_entities.c.tenant == bindparam("b_tenant"),
        ngsild_entities.c.id == bindparam("b_id"),
    )
    .values(
        entity=bindparam("entity"),
        modified_at=bindparam("modified_at"),
        **{name: bindparam(name) for name in prefilter.GEO_COLUMNS},
    )
)
_DELETE_TYPES = delete(ngsild_entity_types).where(
    ngsild_entity_types.c.tenant == bindparam("b_tenant"),
    ngsild_entity_types.c.id == bindparam("b_id"),
)


def record_history(conn: Connection, tenant: str, entity: dict[str, Any]) -> None:
    """Append to the temporal history every attribute instance written in this change."""
    # only instances written by this change carry the entity's new modifiedAt
    rows = _history_rows(tenant, entity)
    if rows:
        _INSERT_HISTORY.executemany(conn, rows)


_HISTORY_COLUMNS = ("tenant", "entity_id", "attribute", "dataset_id", "at", "number", "instance")
_INSERT_HISTORY = Prepared(insert(ngsild_history), keys=_HISTORY_COLUMNS)


def _record_deletions(
    conn: Connection, tenant: str, entity: dict[str, Any], deleted: dict[str, list[dict[str, Any]]]
) -> None:
    """Record each deleted attribute instance as the NGSI-LD Null with deletedAt (4.5.x)."""
    at = entity["modifiedAt"]
    rows = []
    for name, gone in deleted.items():
        for inst in gone:
            kind = str(inst.get("type", "Property"))
            member, null, _ = subscriptions.NULL_FORMS.get(kind, ("value", NGSI_NULL, ""))
            mark: dict[str, Any] = {"type": kind, member: null, "deletedAt": at}
            if inst.get("datasetId") is not None:
                mark["datasetId"] = inst["datasetId"]
            rows.append(history_row(tenant, entity["id"], name, mark))
    if rows:
        _INSERT_HISTORY.executemany(conn, rows)


def note_scope(
    conn: Connection, tenant: str, entity: dict[str, Any], before: list[str] | None
) -> None:
    """Record a change of the entity's scope in its history (set, replaced or deleted)."""
    now = entity.get("scope")
    if now == before:
        return
    at = entity["modifiedAt"]
    inst = scope_history.set_instance(now, at) if now else scope_history.deleted_instance(at)
    _INSERT_HISTORY.executemany(conn, [history_row(tenant, entity["id"], SCOPE, inst)])


def history_row(tenant: str, entity_id: str, name: str, inst: dict[str, Any]) -> dict[str, Any]:
    """Build one history row; the time axis is observedAt, else the write time."""
    raw = (
        inst.get("observedAt")
        or inst.get("modifiedAt")
        or inst.get("createdAt")
        or inst.get("deletedAt")
    )
    at = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    value = inst.get("value")
    number = (
        float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    )
    return {
        "tenant": tenant,
        "entity_id": entity_id,
        "attribute": name,
        "dataset_id": inst.get("datasetId"),
        "at": at,
        "number": number,
        "instance": inst,
    }


def create_entity(*, engine: Engine, tenant: str, entity: dict[str, Any]) -> None:
    """Create an entity; 409 if its id exists."""
    with engine.begin() as conn:
        create_entity_in(conn, tenant=tenant, entity=entity)


def create_entity_in(conn: Connection, *, tenant: str, entity: dict[str, Any]) -> None:
    """Create an entity in the caller's transaction; 409 if its id exists."""
    _ensure_tenant(conn, tenant)
    existing = _load(conn, tenant, entity["id"])
    if existing is not None and not transient.clear_if_expired(
        conn, tenant, existing, datetime.now(UTC)
    ):
        raise Conflict(f"entity {entity['id']} exists already")
    _save(conn, tenant, stamp(clone(entity)), new=True)


def get_entity(*, engine: Engine, tenant: str, entity_id: str) -> dict[str, Any]:
    """Return one entity in expanded form."""
    require_tenant(engine, tenant)
    with engine.connect() as conn:
        found = _load(conn, tenant, entity_id)
    # an expired transient entity is gone for readers before the reaper removes it
    found = live(found, datetime.now(UTC)) if found is not None else None
    if found is None:
        raise NotFound(f"entity {entity_id} not found")
    return found


def delete_entity(*, engine: Engine, tenant: str, entity_id: str) -> None:
    """Delete an entity."""
    with engine.begin() as conn:
        delete_entity_in(conn, tenant=tenant, entity_id=entity_id)


def delete_entity_in(conn: Connection, *, tenant: str, entity_id: str) -> None:
    """Delete an entity in the caller's transaction."""
    require_tenant_in(conn, tenant)
    current = _load(conn, tenant, entity_id)
    if current is None:
        raise NotFound(f"entity {entity_id} not found")
    gated.check_write(current.get("type") or [])
    conn.execute(
        delete(ngsild_entities).where(
            ngsild_entities.c.tenant == tenant, ngsild_entities.c.id == entity_id
        )
    )
    conn.execute(
        delete(ngsild_entity_types).where(
            ngsild_entity_types.c.tenant == tenant, ngsild_entity_types.c.id == entity_id
        )
    )
    subscriptions.enqueue_deleted(conn, tenant, current)


def replace_entity(*, engine: Engine, tenant: str, entity: dict[str, Any]) -> None:
    """Replace an entity whole, keeping its creation time."""
    with engine.begin() as conn:
        current = _load(conn, tenant, entity["id"])
        if current is None:
            raise NotFound(f"entity {entity['id']} not found")
        replaced = stamp(clone(entity), created=current.get("createdAt"))
        _save(conn, tenant, replaced, new=False)
        note_scope(conn, tenant, replaced, current.get("scope"))


@dataclass
class UpdateResult:
    """Which attributes an update changed and which it could not."""

    updated: list[str] = field(default_factory=list)
    not_updated: list[dict[str, str]] = field(default_factory=list)


def _merge_instances(existing: Any, incoming: Any, *, keep_existing: bool) -> Any:
    """Combine attribute instances by datasetId: incoming replaces unless keep_existing."""
    merged = {i.get("datasetId"): i for i in instances(existing)}
    for inst in instances(incoming):
        key = inst.get("datasetId")
        if key in merged and keep_existing:
            continue
        previous = merged.get(key)
        if previous is not None and "createdAt" in previous:
            inst = {**inst, "createdAt": previous["createdAt"]}
        merged[key] = inst
    values = list(merged.values())
    return values[0] if len(values) == 1 else values


def change_attributes(
    *,
    engine: Engine,
    tenant: str,
    entity_id: str,
    attrs: dict[str, Any],
    mode: str,
    new_types: list[str] | None = None,
    scope: list[str] | None = None,
) -> UpdateResult:
    """Apply attributes: 'append' (add or overwrite), 'append-keep' (noOverwrite: add only new
    attributes and instances), 'update' (overwrite, appending what is not there yet),
    'merge' (deep merge of sub-attributes and values)."""
    with engine.begin() as conn:
        return change_attributes_in(
            conn,
            tenant=tenant,
            entity_id=entity_id,
            attrs=attrs,
            mode=mode,
            new_types=new_types,
            scope=scope,
        )


def change_attributes_in(
    conn: Connection,
    *,
    tenant: str,
    entity_id: str,
    attrs: dict[str, Any],
    mode: str,
    new_types: list[str] | None = None,
    scope: list[str] | None = None,
    expires_at: str | None = None,
    current: dict[str, Any] | None = None,
) -> UpdateResult:
    """Apply attributes as change_attributes does, in the caller's transaction.

    scope: the fragment's scope, which replaces the entity's (append, merge; update only
    when the entity has one) or joins it (noOverwrite, clause 5.6.3);
    current: the entity as this transaction already loaded it (it is changed in place).
    """
    result = UpdateResult()
    removed: dict[str, list[dict[str, Any]]] = {}
    entity = current if current is not None else _load(conn, tenant, entity_id)
    if entity is None:
        raise NotFound(f"entity {entity_id} not found")
    # the attributes as they were (replaced below, never changed in place): for showChanges
    previous = {name: entity[name] for name in attrs if name in entity}
    scope_before = entity.get("scope")
    for name, incoming in attrs.items():
        exists = name in entity
        deletes = [i for i in instances(incoming) if is_delete(i)]
        if deletes:
            # clause 5.5.8 (4.5.0): an instance given as the NGSI-LD Null is deleted
            if not exists:
                if mode == "update":
                    result.not_updated.append(
                        {"attributeName": name, "reason": "attribute does not exist"}
                    )
                continue
            gone = {i.get("datasetId") for i in deletes}
            kept = [i for i in instances(entity[name]) if i.get("datasetId") not in gone]
            removed[name] = [i for i in instances(entity[name]) if i.get("datasetId") in gone]
            if kept:
                entity[name] = kept[0] if len(kept) == 1 else kept
            else:
                del entity[name]
            result.updated.append(name)
            incoming = [i for i in instances(incoming) if not is_delete(i)]
            if not incoming:
                continue
            exists = name in entity
            incoming = incoming[0] if len(incoming) == 1 else incoming
        # clause 5.6.2 as the conformance suite reads it: an update appends what is not there
        if mode == "append-keep" and exists:
            # noOverwrite keeps every existing instance; a new datasetId is still appended
            present = {i.get("datasetId") for i in instances(entity[name])}
            fresh = [i for i in instances(incoming) if i.get("datasetId") not in present]
            if not fresh:
                result.not_updated.append({"attributeName": name, "reason": "attribute exists"})
                continue
            incoming = fresh[0] if len(fresh) == 1 else fresh
        if mode == "merge" and exists:
            incoming = _deep_merge_attribute(entity[name], incoming)
        entity[name] = _without_nulls(
            _merge_instances(entity[name], incoming, keep_existing=False) if exists else incoming
        )
        if name not in result.updated:
            result.updated.append(name)
    if new_types:
        entity["type"] = list(dict.fromkeys(entity["type"] + new_types))
    if scope is not None:
        if mode == "append-keep":
            entity["scope"] = list(dict.fromkeys(entity.get("scope", []) + scope))
        elif mode == "update" and "scope" not in entity:
            result.not_updated.append({"attributeName": "scope", "reason": "no scope to update"})
            scope = None
        else:
            entity["scope"] = scope
    if expires_at == NGSI_NULL:
        entity.pop("expiresAt", None)  # the NGSI-LD Null makes a transient entity durable
    elif expires_at is not None:
        entity["expiresAt"] = expires_at  # clause 4.22: a merge may make an entity transient
    if result.updated or new_types or scope is not None or expires_at is not None:
        _save(
            conn,
            tenant,
            stamp(entity),
            new=False,
            deleted=removed,
            types_changed=bool(new_types),
            previous=previous,
        )
        note_scope(conn, tenant, entity, scope_before)
    return result


def _without_nulls(attr: Any) -> Any:
    """Drop what an update deleted with the NGSI-LD Null: sub-attributes, JSON value keys."""
    out = []
    for inst in instances(attr):
        clean = {}
        for key, value in inst.items():
            if key in ("value", "json"):
                clean[key] = drop_null_keys(value)
            elif isinstance(value, dict | list) and key not in ATTRIBUTE_MEMBERS:
                subs = [_without_nulls(s) for s in instances(value) if not is_delete(s)]
                if subs:
                    clean[key] = subs[0] if len(subs) == 1 else subs
            else:
                clean[key] = value
        out.append(clean)
    return out[0] if len(out) == 1 else out


def _deep_merge_attribute(existing: Any, incoming: Any) -> Any:
    """Merge an incoming instance into the existing one with the same datasetId."""
    by_id = {i.get("datasetId"): i for i in instances(existing)}
    out = []
    for inst in instances(incoming):
        base = by_id.get(inst.get("datasetId"))
        if base is None:
            out.append(inst)
            continue
        merged = dict(base)
        for key, value in inst.items():
            if key == "value" and isinstance(value, dict) and isinstance(base.get("value"), dict):
                merged["value"] = {**base["value"], **value}
            else:
                merged[key] = value
        out.append(merged)
    return out[0] if len(out) == 1 else out


def delete_attribute(
    *,
    engine: Engine,
    tenant: str,
    entity_id: str,
    name: str,
    dataset_id: str | None,
    delete_all: bool,
) -> None:
    """Delete one attribute (one datasetId instance, or all of them)."""
    with engine.begin() as conn:
        delete_attribute_in(
            conn,
            tenant=tenant,
            entity_id=entity_id,
            name=name,
            dataset_id=dataset_id,
            delete_all=delete_all,
        )


def delete_attribute_in(
    conn: Connection,
    *,
    tenant: str,
    entity_id: str,
    name: str,
    dataset_id: str | None,
    delete_all: bool,
) -> None:
    """Delete one attribute in the caller's transaction (name "scope": the entity's scope)."""
    entity = _load(conn, tenant, entity_id)
    if entity is None:
        raise NotFound(f"entity {entity_id} not found")
    if name == "scope" and "scope" in entity:
        # clause 5.6.5: the scope is deleted as an attribute is
        before = entity.pop("scope")
        _save(conn, tenant, stamp(entity), new=False, types_changed=False)
        note_scope(conn, tenant, entity, before)
        return
    if name not in entity or name in ENTITY_MEMBERS:
        raise NotFound(f"entity {entity_id} has no attribute {name}")
    before = instances(entity[name])
    if delete_all:
        del entity[name]
        gone = before
    else:
        remaining = [i for i in before if i.get("datasetId") != dataset_id]
        gone = [i for i in before if i.get("datasetId") == dataset_id]
        if not gone:
            raise NotFound(f"attribute {name} has no instance with datasetId {dataset_id}")
        if remaining:
            entity[name] = remaining[0] if len(remaining) == 1 else remaining
        else:
            del entity[name]
    _save(conn, tenant, stamp(entity), new=False, deleted={name: gone}, types_changed=False)


def partial_update_in(
    conn: Connection,
    *,
    tenant: str,
    entity_id: str,
    attr: str,
    fragment: dict[str, Any],
    terms: TermMap,
) -> None:
    """Partially update one attribute instance (clause 5.6.4) in the caller's transaction.

    The fragment (compact names, as sent) goes over the stored instance of its datasetId;
    the entity is read once, in the transaction that writes it.
    """
    require_tenant_in(conn, tenant)
    if attr == "scope":
        raise BadInput("scope is not an attribute: it is changed with the entity's attributes")
    entity = _load(conn, tenant, entity_id)
    if entity is None:
        raise NotFound(f"entity {entity_id} not found")
    name = terms.expand(attr)
    if name not in entity:
        raise NotFound(f"entity {entity_id} has no attribute {attr}")
    existing = entity[name]
    base = next(
        (
            i
            for i in (existing if isinstance(existing, list) else [existing])
            if i.get("datasetId") == fragment.get("datasetId")
        ),
        None,
    )
    if base is None:
        raise NotFound(f"attribute {attr} has no instance with that datasetId")
    merged = {**base, **{k: v for k, v in fragment.items() if k != "@context"}}
    merged.pop("createdAt", None)
    merged.pop("modifiedAt", None)
    attrs = expand_attributes({attr: merged}, terms, nulls=True)
    change_attributes_in(
        conn, tenant=tenant, entity_id=entity_id, attrs=attrs, mode="update", current=entity
    )


@dataclass(frozen=True)
class EntityQuery:
    """What to select: types, ids, id pattern, q, scopeQ-free geo and attribute filters."""

    types: list[str] | None = None
    ids: list[str] | None = None
    id_pattern: str | None = None
    q: query.Expr | None = None
    geo: geoquery.GeoQuery | None = None
    attrs: list[str] | None = None
    # scopeQ as OR-ed AND-groups of scope patterns
    scope: list[list[str]] | None = None
    # a type selector with ';' (clause 4.17): OR-ed groups of types an entity has all of;
    # `types` then lists every type named, the necessary condition the store filters by
    type_groups: list[list[str]] | None = None


def _scope_fits(scopes: list[str], pattern: str) -> bool:
    for scope in scopes:
        if pattern == "/#" or scope == pattern:
            return True
        if pattern.endswith("/#") and (scope == pattern[:-2] or scope.startswith(pattern[:-1])):
            return True
        if "+" in pattern:
            regex = "^" + re.escape(pattern).replace(r"\+", "[^/]+") + "$"
            if re.match(regex, scope):
                return True
    return False


def scope_matches(entity: dict[str, Any], groups: list[list[str]]) -> bool:
    """True when the entity's scopes match scopeQ (OR-ed AND-groups of patterns)."""
    scopes = entity.get("scope", [])
    return any(all(_scope_fits(scopes, p) for p in group) for group in groups)


def _candidates(
    conn: Connection, tenant: str, spec: EntityQuery, batch: int = 1000
) -> Iterable[dict[str, Any]]:
    """Stream entities in id order that pass the SQL pre-filters, `batch` rows per fetch."""
    e = ngsild_entities.c
    stmt = select(e.entity).where(e.tenant == tenant)
    if spec.types:
        # correlated on the type table's key: no materialised list of every id of the type
        t = ngsild_entity_types.c
        stmt = stmt.where(
            select(t.id).where(t.tenant == e.tenant, t.id == e.id, t.type.in_(spec.types)).exists()
        )
    if spec.ids:
        stmt = stmt.where(e.id.in_(spec.ids))
    dialect = conn.dialect.name
    if spec.q is not None:
        stmt = stmt.where(prefilter.compile_q(spec.q, dialect))
    by_cell = False
    if spec.geo is not None:
        condition, by_cell = prefilter.compile_geo(spec.geo)
        stmt = stmt.where(condition)
    # ordering by an expression keeps SQLite from walking the id index past the few rows
    # the cell index finds; a few hundred rows are then sorted instead
    stmt = stmt.order_by(e.id.concat("") if by_cell else e.id)
    # rows are read as they are needed, so a page stops the scan early: a fetch larger than
    # the page would make the database look for matches nobody asked for
    result = conn.execution_options(stream_results=True, yield_per=batch).execute(stmt)
    for row in result:
        yield dict(row.entity)


def matches(entity: dict[str, Any], spec: EntityQuery, pattern: re.Pattern[str] | None) -> bool:
    """Return whether an entity satisfies every filter of a query."""
    # an idPattern is a regular expression found in the id (anchor it with ^ and $ to match
    # the whole id), as POSIX regexec and other brokers read it
    if pattern is not None and not pattern.search(entity["id"]):
        return False
    if spec.attrs and not any(a in entity for a in spec.attrs):
        return False
    if spec.q is not None and not query.matches(spec.q, entity):
        return False
    if spec.type_groups is not None:
        types = set(entity.get("type") or ())
        if not any(types.issuperset(group) for group in spec.type_groups):
            return False
    if spec.scope is not None and not scope_matches(entity, spec.scope):
        return False
    if spec.geo is not None:
        values = [i.get("value") for i in instances(entity.get(spec.geo.geoproperty))]
        if not any(geoquery.matches(spec.geo, v) for v in values):
            return False
    return True


def query_entities(
    *,
    engine: Engine,
    tenant: str,
    spec: EntityQuery,
    limit: int,
    offset: int,
    count: bool = True,
) -> tuple[list[dict[str, Any]], int]:
    """Return one page of matching entities (in id order) and the total count.

    Without `count` the scan stops once the page is full and the total is -1.
    """
    require_tenant(engine, tenant)
    try:
        pattern = re.compile(spec.id_pattern) if spec.id_pattern else None
    except re.error as exc:
        raise BadInput(f"idPattern is not a valid regular expression: {exc}") from None
    page: list[dict[str, Any]] = []
    total = 0
    now = datetime.now(UTC)
    with engine.connect() as conn:
        batch = 1000 if count else max(20, min(offset + limit, 1000))
        for stored in _candidates(conn, tenant, spec, batch):
            entity = live(stored, now)
            if entity is None or not matches(entity, spec, pattern):
                continue
            if offset <= total < offset + limit:
                page.append(entity)
            total += 1
            if not count and total >= offset + limit:
                return page, -1
    return page, total if count else -1


def entity_types(*, engine: Engine, tenant: str) -> list[str]:
    """Return the distinct entity types (expanded)."""
    require_tenant(engine, tenant)
    with engine.connect() as conn:
        rows = conn.execute(
            select(ngsild_entity_types.c.type)
            .where(ngsild_entity_types.c.tenant == tenant)
            .group_by(ngsild_entity_types.c.type)
            .order_by(ngsild_entity_types.c.type)
        )
        return [r.type for r in rows]


def type_details(*, engine: Engine, tenant: str, type_iri: str) -> dict[str, Any]:
    """Return how many entities have a type and which attributes they carry."""
    page, total = query_entities(
        engine=engine, tenant=tenant, spec=EntityQuery(types=[type_iri]), limit=10**9, offset=0
    )
    if total == 0:
        raise NotFound(f"no entity has type {type_iri}")
    attributes: dict[str, set[str]] = {}
    for entity in page:
        for name, attr in entity.items():
            if name not in ENTITY_MEMBERS:
                attributes.setdefault(name, set()).update(
                    str(i.get("type")) for i in instances(attr)
                )
    return {"count": total, "attributes": {k: sorted(v) for k, v in sorted(attributes.items())}}


def _every_entity(engine: Engine, tenant: str) -> Iterator[dict[str, Any]]:
    """Every entity of a tenant, as stored (the discovery endpoints summarise them)."""
    require_tenant(engine, tenant)
    with engine.connect() as conn:
        for row in conn.execute(
            select(ngsild_entities.c.entity).where(ngsild_entities.c.tenant == tenant)
        ):
            yield row.entity


def type_attributes(*, engine: Engine, tenant: str) -> dict[str, list[str]]:
    """Return each entity type with the attribute names its entities carry (first seen first)."""
    out: dict[str, dict[str, None]] = {}
    for entity in _every_entity(engine, tenant):
        names = [n for n in entity if n not in ENTITY_MEMBERS]
        for type_iri in entity.get("type", []):
            out.setdefault(type_iri, {}).update(dict.fromkeys(names))
    return {t: list(names) for t, names in out.items()}


def attribute_names(*, engine: Engine, tenant: str) -> dict[str, dict[str, Any]]:
    """Return every attribute name with its types and the entity types that use it."""
    out: dict[str, dict[str, Any]] = {}
    for entity in _every_entity(engine, tenant):
        for name, attr in entity.items():
            if name in ENTITY_MEMBERS:
                continue
            info = out.setdefault(name, {"count": 0, "attributeTypes": set(), "typeNames": set()})
            info["count"] += 1
            info["attributeTypes"].update(str(i.get("type")) for i in instances(attr))
            info["typeNames"].update(entity.get("type", []))
    return out


def upsert_entity(*, engine: Engine, tenant: str, entity: dict[str, Any], replace: bool) -> bool:
    """Create an entity or update it (replace it whole, or add/overwrite attributes);
    return whether it was created."""
    with engine.begin() as conn:
        _ensure_tenant(conn, tenant)
        current = _load(conn, tenant, entity["id"])
        if current is None:
            _save(conn, tenant, stamp(clone(entity)), new=True)
            return True
        if replace:
            _save(conn, tenant, stamp(clone(entity), created=current.get("createdAt")), new=False)
        else:
            for name, attr in entity.items():
                if name in ("id", "createdAt", "modifiedAt"):
                    continue
                if name == "type":
                    current["type"] = list(dict.fromkeys(current["type"] + attr))
                elif name in ("scope", "expiresAt"):
                    current[name] = attr
                else:
                    current[name] = _merge_instances(current.get(name), attr, keep_existing=False)
            _save(conn, tenant, stamp(current), new=False)
        return False


def count_entities(*, engine: Engine, tenant: str) -> int:
    """Return how many entities a tenant holds."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(ngsild_entities)
                .where(ngsild_entities.c.tenant == tenant)
            ).scalar_one()
        )


def upsert_temporal(
    *,
    engine: Engine,
    tenant: str,
    entity: dict[str, Any],
    must_exist: bool = False,
    scopes: list[dict[str, Any]] | None = None,
) -> bool:
    """Record every given instance in the history; keep the latest as the current value.

    must_exist: adding attributes to a temporal representation (clause 5.6.12) needs it;
    scopes: the scope's instances (scope_history), the latest observed being the current scope.
    """
    series: dict[str, list[dict[str, Any]]] = {}
    latest: dict[str, Any] = {k: v for k, v in entity.items() if k in ENTITY_MEMBERS}
    if scopes:
        current_scope = scope_history.latest_scopes(scopes)
        if current_scope:
            latest["scope"] = current_scope
        if any("observedAt" in i for i in scopes):
            series[SCOPE] = scopes  # a history of the scope, not just its value
    for name, attr in entity.items():
        if name in ENTITY_MEMBERS:
            continue
        points = sorted(instances(attr), key=lambda i: str(i.get("observedAt", "")))
        series[name] = points
        by_dataset: dict[Any, dict[str, Any]] = {}
        for point in points:
            by_dataset[point.get("datasetId")] = point
        values = list(by_dataset.values())
        latest[name] = values[0] if len(values) == 1 else values
    moment = now_iso()
    with engine.begin() as conn:
        _ensure_tenant(conn, tenant)
        current = _load(conn, tenant, entity["id"])
        if current is None and must_exist:
            raise NotFound(f"entity {entity['id']} not found")
        if current is None:
            merged = stamp(clone(latest))
            _save(conn, tenant, merged, new=True, history=False)
        else:
            merged = current
            merged["type"] = list(dict.fromkeys(current["type"] + latest.get("type", [])))
            if "scope" in latest:
                merged["scope"] = latest["scope"]
            for name, value in latest.items():
                if name not in ENTITY_MEMBERS:
                    merged[name] = _merge_instances(current.get(name), value, keep_existing=False)
            _save(conn, tenant, stamp(merged), new=False, history=False)
        rows = []
        for name, points in series.items():
            for point in points:
                point = {**point, "createdAt": moment, "modifiedAt": moment}
                rows.append(history_row(tenant, entity["id"], name, point))
        if rows:
            conn.execute(insert(ngsild_history), rows)
    return current is None


def _history_of(tenant: str, entity_id: str) -> Any:
    h = ngsild_history.c
    return delete(ngsild_history).where(h.tenant == tenant, h.entity_id == entity_id)


def delete_temporal(*, engine: Engine, tenant: str, entity_id: str) -> None:
    """Delete the temporal representation of an entity (clause 5.6.16): history and entity."""
    require_tenant(engine, tenant)
    with engine.begin() as conn:
        removed = conn.execute(_history_of(tenant, entity_id)).rowcount
        for table in (ngsild_entities, ngsild_entity_types):
            removed += conn.execute(
                delete(table).where(table.c.tenant == tenant, table.c.id == entity_id)
            ).rowcount
    if not removed:
        raise NotFound(f"entity {entity_id} not found")


def _require_entity(conn: Connection, tenant: str, entity_id: str) -> None:
    found = conn.execute(
        select(ngsild_entities.c.id).where(
            ngsild_entities.c.tenant == tenant, ngsild_entities.c.id == entity_id
        )
    ).first()
    if found is None:
        raise NotFound(f"entity {entity_id} not found")


def delete_temporal_attribute(
    *,
    engine: Engine,
    tenant: str,
    entity_id: str,
    name: str,
    dataset_id: str | None,
    delete_all: bool,
) -> None:
    """Delete an attribute's history (clause 5.6.13): one datasetId, or every instance."""
    require_tenant(engine, tenant)
    h = ngsild_history.c
    stmt = _history_of(tenant, entity_id).where(h.attribute == name)
    if not delete_all:
        stmt = stmt.where(
            h.dataset_id.is_(None) if dataset_id is None else h.dataset_id == dataset_id
        )
    with engine.begin() as conn:
        _require_entity(conn, tenant, entity_id)
        if not conn.execute(stmt).rowcount:
            raise NotFound(f"entity {entity_id} has no history of attribute {name}")


def change_instance(
    *,
    engine: Engine,
    tenant: str,
    entity_id: str,
    name: str,
    seq: int | None,
    fragment: dict[str, Any] | None,
) -> None:
    """Modify (clauses 5.6.14) or, without a fragment, delete (5.6.15) one history instance."""
    require_tenant(engine, tenant)
    h = ngsild_history.c
    where = (h.tenant == tenant, h.entity_id == entity_id, h.attribute == name, h.seq == seq)
    with engine.begin() as conn:
        _require_entity(conn, tenant, entity_id)
        row = (
            conn.execute(select(h.instance, h.at).where(*where)).first()
            if seq is not None
            else None
        )
        if row is None:
            raise NotFound(f"attribute {name} of {entity_id} has no such instance")
        if fragment is None:
            conn.execute(delete(ngsild_history).where(*where))
            return
        instance = {**row.instance, **fragment, "modifiedAt": now_iso()}
        instance.pop("instanceId", None)
        values = history_row(tenant, entity_id, name, instance)
        if "observedAt" not in instance:
            values["at"] = row.at  # the time axis stays where the instance was
        conn.execute(
            update(ngsild_history)
            .where(*where)
            .values(
                at=values["at"],
                number=values["number"],
                instance=instance,
                dataset_id=values["dataset_id"],
            )
        )


def upsert_many(
    *, engine: Engine, tenant: str, entities: list[dict[str, Any]], mode: str
) -> tuple[list[str], list[str], dict[str, str]]:
    """Write a batch in one transaction; mode is 'create' (existing ids refused) or 'upsert'.

    Returns the ids created, the ids updated, and the ids refused with their reasons.
    """
    prepared = prepare_batch(engine.dialect, tenant, entities)
    with engine.begin() as conn:
        done = write_batch_in(conn, prepared, mode)
    if engine.dialect.name == "postgresql" and done[0]:
        keep_statistics(engine, len(done[0]))
    return done


# entities this process inserted since it last had PostgreSQL gather the store's statistics
# (per database URL)
_loaded: dict[str, int] = {}
_loaded_lock = threading.Lock()
# a table never analysed is taken as tiny: without statistics PostgreSQL guesses that a
# tenant holds 0.5 % of the rows and reads them all to find 500 ids (a second per batch at
# 30,000 entities); autovacuum looks only once a minute, slower than a bulk load grows
FIRST_ANALYZE = 5_000


def keep_statistics(engine: Engine, inserted: int) -> None:
    """ANALYZE the entity tables when a bulk load has doubled what PostgreSQL counted there.

    What PostgreSQL counted is read from the catalog (`reltuples`, -1 before any ANALYZE),
    not remembered here: the database may have been emptied or made again meanwhile, or
    analysed by autovacuum.
    """
    key = str(engine.url)
    with _loaded_lock:
        since = _loaded[key] = _loaded.get(key, 0) + inserted
    if since < FIRST_ANALYZE:
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        counted = conn.execute(
            text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"),
            {"t": ngsild_entities.name},
        ).scalar()
        if counted is not None and since < counted:
            return
        for table in (ngsild_entities, ngsild_entity_types, ngsild_history):
            conn.exec_driver_sql(f"ANALYZE {table.name}")
    with _loaded_lock:
        _loaded[key] = 0


def upsert_many_in(
    conn: Connection, *, tenant: str, entities: list[dict[str, Any]], mode: str
) -> tuple[list[str], list[str], dict[str, str]]:
    """Write a batch in the caller's transaction, so a connector commits its checkpoint too."""
    return write_batch_in(conn, prepare_batch(conn.dialect, tenant, entities), mode)


@dataclass
class PreparedBatch:
    """A batch made ready before its transaction: each entity stamped as if it were new, and
    the rows that insert it, so the transaction (one writer at a time) only writes them."""

    tenant: str
    entities: list[dict[str, Any]]  # as given (unstamped): an existing one is merged from these
    refused: dict[str, str]
    moment: datetime
    stamped: list[dict[str, Any]]
    entity_rows: list[tuple[Any, ...]] = field(default_factory=list)
    type_rows: list[tuple[Any, ...]] = field(default_factory=list)
    history_rows: list[tuple[Any, ...]] = field(default_factory=list)
    # the stamped entities that carry an expiresAt (clause 4.22), found while building rows
    transient: list[dict[str, Any]] = field(default_factory=list)


def prepare_batch(dialect: Dialect, tenant: str, entities: list[dict[str, Any]]) -> PreparedBatch:
    """Check a batch's ids and write permissions and build its rows, outside any transaction."""
    refused: dict[str, str] = {}
    seen: set[str] = set()
    unique: list[dict[str, Any]] = []
    refusals: dict[tuple[str, ...], str | None] = {}  # a batch has few distinct type lists
    for entity in entities:
        if entity["id"] in seen:
            refused[entity["id"]] = "the id appears twice in this batch"
            continue
        types = tuple(entity.get("type") or ())
        not_allowed = refusals.get(types, "")
        if not_allowed == "":
            not_allowed = refusals[types] = gated.write_refusal(types)
        if not_allowed is not None:
            refused[entity["id"]] = not_allowed
            continue
        seen.add(entity["id"])
        unique.append(entity)
    moment = datetime.now(UTC)
    moment_iso = iso(moment)
    stamped = [stamp(_stampable_copy(entity), moment=moment_iso) for entity in unique]
    prepared = PreparedBatch(tenant, unique, refused, moment, stamped)
    _fresh_rows(dialect, prepared)
    return prepared


def _stampable_copy(entity: dict[str, Any]) -> dict[str, Any]:
    """A copy that stamp() may change without touching the entity: its dicts, one level."""
    copy: dict[str, Any] = {}
    for name, attr in entity.items():
        if type(attr) is dict:
            attr = dict(attr)
        elif type(attr) is list and name not in ENTITY_MEMBERS:
            attr = [dict(a) if type(a) is dict else a for a in attr]
        copy[name] = attr
    return copy


def write_batch_in(
    conn: Connection, prepared: PreparedBatch, mode: str
) -> tuple[list[str], list[str], dict[str, str]]:
    """Write a prepared batch in the caller's transaction: new entities from their rows,
    existing ones merged (upsert) or refused (create)."""
    tenant = prepared.tenant
    refused = dict(prepared.refused)
    _ensure_tenant(conn, tenant)
    if _insert_if_all_new(conn, prepared):
        for entity in prepared.transient:
            transient.note_expiry(conn, tenant, entity)
        _notify_new(conn, tenant, prepared.stamped)
        return [e["id"] for e in prepared.entities], [], refused
    created: list[str] = []
    updated: list[str] = []
    existing: dict[str, dict[str, Any]] = {}
    ids = [e["id"] for e in prepared.entities]
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for row in conn.execute(
            select(ngsild_entities.c.id, ngsild_entities.c.entity).where(
                ngsild_entities.c.tenant == tenant, ngsild_entities.c.id.in_(chunk)
            )
        ):
            existing[row.id] = dict(row.entity)
    fresh: list[dict[str, Any]] = []
    for entity, stamped in zip(prepared.entities, prepared.stamped, strict=True):
        current = existing.get(entity["id"])
        if current is None:
            fresh.append(stamped)
            created.append(entity["id"])
        elif mode == "create":
            refused[entity["id"]] = f"entity {entity['id']} exists already"
        else:
            scope_before = current.get("scope")
            for name, attr in entity.items():
                if name in ("id", "createdAt", "modifiedAt"):
                    continue
                if name == "type":
                    current["type"] = list(dict.fromkeys(current["type"] + attr))
                elif name == "scope":
                    current["scope"] = attr
                else:
                    current[name] = _merge_instances(current.get(name), attr, keep_existing=False)
            _save(conn, tenant, stamp(current), new=False)
            note_scope(conn, tenant, current, scope_before)
            updated.append(entity["id"])
    rows = [prepared.entity_rows, prepared.type_rows, prepared.history_rows]
    if existing:  # their prepared rows are not written: the rows of the new ones only
        rows = [[r for r in part if r[1] not in existing] for part in rows]
    insert_tuples(conn, ngsild_entities, _ENTITY_COLUMNS, rows[0])
    _insert_dependent_rows(conn, rows[1], rows[2])
    for entity in prepared.transient:
        if entity["id"] not in existing:
            transient.note_expiry(conn, tenant, entity)
    _notify_new(conn, tenant, fresh)
    return created, updated, refused


def _insert_if_all_new(conn: Connection, prepared: PreparedBatch) -> bool:
    """On SQLite, insert the batch's rows if none of its entities exists yet; else nothing.

    The entity rows go first, in a savepoint: an existing id stops them with a key conflict
    and the savepoint takes them back (write_batch_in then looks the ids up). A bulk load,
    whose ids are new, so skips the lookup of each id, which the insert makes anyway.
    """
    if conn.dialect.name != "sqlite" or not prepared.entity_rows:
        return False
    driver = conn.connection.dbapi_connection
    if driver is not None and not driver.in_transaction:
        # the driver opens no transaction before a SAVEPOINT, whose release would commit
        conn.exec_driver_sql("BEGIN")
    savepoint = conn.begin_nested()
    try:
        insert_tuples(conn, ngsild_entities, _ENTITY_COLUMNS, prepared.entity_rows)
    except IntegrityError:
        savepoint.rollback()
        return False
    savepoint.commit()
    _insert_dependent_rows(conn, prepared.type_rows, prepared.history_rows)
    return True


def _insert_dependent_rows(
    conn: Connection, type_rows: list[tuple[Any, ...]], history_rows: list[tuple[Any, ...]]
) -> None:
    """Insert a batch's type and history rows."""
    insert_tuples(conn, ngsild_entity_types, _TYPE_COLUMNS, type_rows)
    insert_tuples(conn, ngsild_history, _HISTORY_COLUMNS, history_rows)


def _notify_new(conn: Connection, tenant: str, fresh: list[dict[str, Any]]) -> None:
    subs = subscriptions.active_rows(conn, tenant)
    if subs:
        for entity in fresh:
            subscriptions.enqueue(conn, tenant, entity, subs, new=True)


_ENTITY_COLUMNS = (
    "tenant",
    "id",
    "entity",
    "created_at",
    "modified_at",
    "loc_minx",
    "loc_miny",
    "loc_maxx",
    "loc_maxy",
    "loc_cell",
)
_TYPE_COLUMNS = ("tenant", "id", "type")


def _fresh_rows(dialect: Dialect, prepared: PreparedBatch) -> None:
    """Build the rows of the batch's stamped entities: entity, type and history rows.

    The same rows _save and record_history write one entity at a time, built in one pass;
    on SQLite the values are made ready for the driver here (JSON text, time stamps each
    converted once), which is most of what a batch costs beyond SQLite's own work. The
    entity's id is each row's second value (write_batch_in drops those of existing ones).
    """
    tenant = prepared.tenant
    # SQLite's executemany and PostgreSQL's COPY take JSON as text
    ready = dialect.name in ("sqlite", "postgresql")
    dump: Any = json_dumps if ready else _same
    when: Any = _time_binder(dialect) if dialect.name == "sqlite" else _same
    written_at = when(prepared.moment)
    entity_rows = prepared.entity_rows
    type_rows = prepared.type_rows
    history = prepared.history_rows
    times: dict[Any, Any] = {}  # a batch shares few time stamps: parse each once
    for entity in prepared.stamped:
        entity_id = entity["id"]
        geo = prefilter.geo_columns(entity)
        entity_rows.append(
            (
                tenant,
                entity_id,
                dump(entity),
                written_at,
                written_at,
                geo["loc_minx"],
                geo["loc_miny"],
                geo["loc_maxx"],
                geo["loc_maxy"],
                geo["loc_cell"],
            )
        )
        types = entity["type"]
        for t in dict.fromkeys(types) if len(types) > 1 else types:
            type_rows.append((tenant, entity_id, t))
        stamp_of_write = entity.get("modifiedAt")
        expiring = "expiresAt" in entity
        for name, attr in entity.items():
            if name in ENTITY_MEMBERS:
                continue
            for inst in (attr,) if type(attr) is dict else instances(attr):
                expiring = expiring or "expiresAt" in inst
                # only instances written by this change carry the entity's new modifiedAt
                if inst.get("modifiedAt") != stamp_of_write:
                    continue
                raw = inst.get("observedAt") or stamp_of_write or inst.get("createdAt")
                at = times.get(raw)
                if at is None:
                    at = times[raw] = when(_parse_time(raw))
                history.append(
                    (
                        tenant,
                        entity_id,
                        name,
                        inst.get("datasetId"),
                        at,
                        _number(inst.get("value")),
                        dump(inst),
                    )
                )
        if "scope" in entity:  # the scope's history starts with the entity (scope_history)
            inst = scope_history.set_instance(entity["scope"], str(stamp_of_write))
            at = times.get(stamp_of_write)
            if at is None:
                at = times[stamp_of_write] = when(_parse_time(stamp_of_write))
            history.append((tenant, entity_id, SCOPE, None, at, None, dump(inst)))
        if expiring:
            prepared.transient.append(entity)


def _same(value: Any) -> Any:
    return value


def _time_binder(dialect: Dialect) -> Any:
    """The SQLite driver's form of a time stamp column value (what SQLAlchemy would bind)."""
    proc = ngsild_history.c.at.type.dialect_impl(dialect).bind_processor(dialect)
    return proc if proc is not None else _same


def _number(value: Any) -> float | None:
    """The number column of a history row: a numeric value (not a boolean) as a float."""
    if type(value) in (int, float):
        return float(value)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _parse_time(raw: Any) -> datetime:
    return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))


def insert_tuples(
    conn: Connection, table: Table, names: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    """Insert rows given as tuples in the order of `names`.

    On SQLite and PostgreSQL the values must be ready for the driver (JSON as text, see
    _fresh_rows): SQLite's go straight to its executemany, PostgreSQL's through COPY in the
    same transaction (a tenth of what row-by-row inserts cost the server and the client).
    """
    if not rows:
        return
    dialect = conn.dialect
    quote = dialect.identifier_preparer.quote
    if dialect.name == "postgresql":
        columns = ", ".join(quote(n) for n in names)
        driver = conn.connection.driver_connection
        with driver.cursor() as cursor:  # type: ignore[union-attr]
            with cursor.copy(f"COPY {quote(table.name)} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        return
    if dialect.name != "sqlite":
        conn.execute(insert(table), [dict(zip(names, row, strict=True)) for row in rows])
        return
    sql = (
        f"INSERT INTO {table.name} ({', '.join(quote(n) for n in names)}) "
        f"VALUES ({', '.join('?' for _ in names)})"
    )
    conn.exec_driver_sql(sql, rows)


def bulk_insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows at once; on SQLite straight through the driver's executemany.

    SQLAlchemy's per-row parameter processing costs more than SQLite's insert itself for a
    batch of entities, so on SQLite the values are converted once per column type here.
    """
    if not rows:
        return
    dialect = conn.dialect
    if dialect.name != "sqlite":
        conn.execute(insert(table), rows)
        return
    names = list(rows[0])
    columns_sql = ", ".join(dialect.identifier_preparer.quote(n) for n in names)
    marks = ", ".join("?" for _ in names)
    columns: list[list[Any]] = []
    for name in names:
        values = [row[name] for row in rows]
        kind = table.c[name].type
        if isinstance(kind, JSON):
            values = [None if v is None else json_dumps(v) for v in values]
        else:
            proc = kind.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                # a batch shares few distinct time stamps: convert each once
                seen: dict[Any, Any] = {}
                values = [
                    None if v is None else seen[v] if v in seen else seen.setdefault(v, proc(v))
                    for v in values
                ]
        columns.append(values)
    params = list(zip(*columns, strict=True))
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({columns_sql}) VALUES ({marks})", params)


def _history_rows(tenant: str, entity: dict[str, Any]) -> list[dict[str, Any]]:
    moment = entity.get("modifiedAt")
    return [
        history_row(tenant, entity["id"], name, inst)
        for name, attr in entity.items()
        if name not in ENTITY_MEMBERS
        for inst in instances(attr)
        if inst.get("modifiedAt") == moment
    ]
