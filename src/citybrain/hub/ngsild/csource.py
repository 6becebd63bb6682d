"""NGSI-LD context source registrations (ETSI GS CIM 009 clauses 5.2.9, 5.9, 6.8 and 6.9).

A registration says that a context source (another broker: in CityBrain, a child node)
holds entities of some types, and where to ask it. Queries at this node then fan out to the
matching sources (`citybrain.federation.distributed`). Registrations are kept expanded (types
and attribute names as IRIs) and compacted with the reader's @context on the way out.

`origin` says who maintains a registration: "manual" (created through the API) or
"node:<code>" (kept by this node for a trusted child, refreshed from the child's /types).
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, Request, Response
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    Index,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)

from citybrain.core.db import metadata
from citybrain.core.errors import BadInput, Conflict, NotFound, Unprocessable
from citybrain.core.routing import APIRouter
from citybrain.governance.identity.deps import require_role
from citybrain.governance.principal import GOVERNMENT_ROLES, Principal, Role
from citybrain.hub.ngsild.jsonld import TermMap, is_iri, validate_entity_id

ngsild_csource_registrations = Table(
    "ngsild_csource_registrations",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("id", String(512), primary_key=True),
    Column("registration", JSON, nullable=False),
    Column("origin", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("modified_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Index("ix_ngsild_csource_registrations_origin", "origin"),
)

REGISTRATION_TYPE = "ContextSourceRegistration"
ID_PREFIX = "urn:ngsi-ld:ContextSourceRegistration:"
MODES = ("inclusive", "exclusive", "redirect", "auxiliary")
# members of table 5.2.9-1 this node keeps as given (it does not act on them)
_KEPT = (
    "registrationName",
    "description",
    "tenant",
    "observationInterval",
    "managementInterval",
    "location",
    "observationSpace",
    "operationSpace",
    "contextSourceInfo",
    "scope",
    "operations",
    "refreshRate",
)
# members the broker sets (clause 5.2.9): a client cannot write them
_READ_ONLY = (
    "status",
    "timesSent",
    "timesFailed",
    "lastSuccess",
    "lastFailure",
    "createdAt",
    "modifiedAt",
)
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")
CACHE_SECONDS = 2.0


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    value = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse_time(value: Any, name: str) -> datetime:
    if not isinstance(value, str) or not _DATETIME.match(value):
        raise BadInput(f"{name} must be a DateTime such as 2026-12-31T00:00:00Z")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{name} is not a valid DateTime: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _names(value: Any, name: str, terms: TermMap) -> list[str]:
    if not isinstance(value, list) or not value:
        raise BadInput(f"{name} must be a non-empty array of attribute names")
    if not all(isinstance(v, str) and v for v in value):
        raise BadInput(f"{name} must hold names (strings)")
    return [terms.expand(v) for v in value]


def _entity_info(value: Any, terms: TermMap) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadInput("information[].entities[] must be objects with a type")
    unknown = set(value) - {"id", "idPattern", "type"}
    if unknown:
        raise BadInput(f"unknown members of an EntityInfo: {sorted(unknown)}")
    raw = value.get("type")
    types = raw if isinstance(raw, list) else [raw]
    if not types or not all(isinstance(t, str) and t for t in types):
        raise BadInput("every EntityInfo needs a type (a name or a list of names)")
    info: dict[str, Any] = {"type": [terms.expand(str(t)) for t in types]}
    if "id" in value:
        info["id"] = validate_entity_id(value["id"])
    if "idPattern" in value:
        pattern = value["idPattern"]
        if not isinstance(pattern, str):
            raise BadInput("idPattern must be a regular expression (a string)")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise BadInput(f"idPattern is not a regular expression: {exc}") from None
        info["idPattern"] = pattern
    return info


def _information(value: Any, terms: TermMap) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise BadInput("information must be a non-empty array of RegistrationInfo")
    out: list[dict[str, Any]] = []
    for item in value:
        if not isinstance(item, dict):
            raise BadInput("information[] must be objects")
        unknown = set(item) - {"entities", "propertyNames", "relationshipNames"}
        if unknown:
            raise BadInput(f"unknown members of a RegistrationInfo: {sorted(unknown)}")
        if not item:
            raise BadInput("a RegistrationInfo needs entities, propertyNames or relationshipNames")
        info: dict[str, Any] = {}
        if "entities" in item:
            entities = item["entities"]
            if not isinstance(entities, list) or not entities:
                raise BadInput("information[].entities must be a non-empty array")
            info["entities"] = [_entity_info(e, terms) for e in entities]
        for key in ("propertyNames", "relationshipNames"):
            if key in item:
                info[key] = _names(item[key], f"information[].{key}", terms)
        out.append(info)
    return out


def _management(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadInput("management must be an object (localOnly, cacheDuration, timeout, cooldown)")
    unknown = set(value) - {"localOnly", "cacheDuration", "timeout", "cooldown"}
    if unknown:
        raise BadInput(f"unknown members of management: {sorted(unknown)}")
    if "localOnly" in value and not isinstance(value["localOnly"], bool):
        raise BadInput("management.localOnly must be true or false")
    for key in ("cacheDuration", "timeout", "cooldown"):
        number = value.get(key)
        if key in value and (
            isinstance(number, bool) or not isinstance(number, int | float) or number <= 0
        ):
            raise BadInput(f"management.{key} must be a positive number")
    return dict(value)


def validate(body: Any, terms: TermMap, *, now: datetime | None = None) -> dict[str, Any]:
    """Check a registration (table 5.2.9-1) and return it expanded; 400 on anything wrong."""
    if not isinstance(body, dict):
        raise BadInput("a context source registration is a JSON object")
    if body.get("type") != REGISTRATION_TYPE:
        raise BadInput(f'a context source registration has "type": "{REGISTRATION_TYPE}"')
    written = sorted(k for k in _READ_ONLY if k in body)
    if written:
        raise BadInput(f"the broker sets {', '.join(written)}; leave them out")
    reg_id = validate_entity_id(body["id"]) if "id" in body else f"{ID_PREFIX}{uuid.uuid4()}"
    endpoint = body.get("endpoint")
    if (
        not isinstance(endpoint, str)
        or not endpoint.startswith(("http://", "https://"))
        or any(c.isspace() for c in endpoint)
    ):
        raise BadInput("endpoint must be the http:// or https:// URL of the context source")
    out: dict[str, Any] = {
        "id": reg_id,
        "type": REGISTRATION_TYPE,
        "endpoint": endpoint.rstrip("/"),
        "information": _information(body.get("information"), terms),
    }
    mode = body.get("mode", "inclusive")
    if mode not in MODES:
        raise BadInput(f"mode must be one of {', '.join(MODES)}")
    if mode != "inclusive":
        raise Unprocessable(f"this node forwards to inclusive context sources only, not {mode}")
    out["mode"] = mode
    if "expiresAt" in body:
        expires = _parse_time(body["expiresAt"], "expiresAt")
        if expires <= (now or _now()):
            raise BadInput("expiresAt is in the past")
        out["expiresAt"] = _iso(expires)
    if "management" in body:
        out["management"] = _management(body["management"])
    for key in ("registrationName", "description", "tenant"):
        if key in body and not isinstance(body[key], str):
            raise BadInput(f"{key} must be a string")
    if "operations" in body and (
        not isinstance(body["operations"], list)
        or not all(isinstance(o, str) for o in body["operations"])
    ):
        raise BadInput("operations must be an array of operation names")
    for key in _KEPT:
        if key in body:
            out[key] = body[key]
    unknown = set(body) - set(out) - {"@context"}
    if unknown:
        raise BadInput(f"unknown members of a context source registration: {sorted(unknown)}")
    return out


def render(row: dict[str, Any], terms: TermMap) -> dict[str, Any]:
    """Return a stored registration compacted with the reader's @context."""
    reg = dict(row["registration"])
    information = []
    for info in reg.get("information", []):
        shown: dict[str, Any] = {}
        if "entities" in info:
            shown["entities"] = []
            for entity in info["entities"]:
                types = [terms.compact(t) for t in entity["type"]]
                item: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
                item.update({k: entity[k] for k in ("id", "idPattern") if k in entity})
                shown["entities"].append(item)
        for key in ("propertyNames", "relationshipNames"):
            if key in info:
                shown[key] = [terms.compact(n) for n in info[key]]
        information.append(shown)
    reg["information"] = information
    reg["createdAt"] = _iso(row["created_at"])
    reg["modifiedAt"] = _iso(row["modified_at"])
    if row["origin"] != "manual":
        reg.setdefault("contextSourceInfo", [])
    return reg


# one cached lookup per engine and tenant: the query path reads the registrations from here
_cache: dict[tuple[str, str], tuple[float, list[dict[str, Any]]]] = {}


def engine_key(engine: Engine) -> str:
    """Name an engine for the in-process caches (the id alone may be reused after a dispose)."""
    return f"{id(engine)}:{engine.url}"


def forget_cache(engine: Engine | None = None) -> None:
    """Drop the cached registrations (of one engine, or all)."""
    for key in list(_cache):
        if engine is None or key[0] == engine_key(engine):
            _cache.pop(key, None)


def _expired(row: dict[str, Any], now: datetime) -> bool:
    expires = row.get("expires_at")
    if expires is None:
        return False
    value = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    return bool(value <= now)


def active(*, engine: Engine, tenant: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """Return the unexpired registrations of a tenant, from a cache refreshed every 2 s."""
    key = (engine_key(engine), tenant)
    hit = _cache.get(key)
    stamp = time.monotonic()
    if hit is None or stamp - hit[0] > CACHE_SECONDS:
        with engine.connect() as conn:
            rows = [
                dict(r)
                for r in conn.execute(
                    select(ngsild_csource_registrations)
                    .where(ngsild_csource_registrations.c.tenant == tenant)
                    .order_by(ngsild_csource_registrations.c.id)
                ).mappings()
            ]
        hit = (stamp, rows)
        _cache[key] = hit
    moment = now or _now()
    return [r for r in hit[1] if not _expired(r, moment)]


def create(
    *,
    engine: Engine,
    tenant: str,
    registration: dict[str, Any],
    origin: str = "manual",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Store a validated registration; 409 when its id exists."""
    stamp = now or _now()
    expires = registration.get("expiresAt")
    with engine.begin() as conn:
        exists = conn.execute(
            select(ngsild_csource_registrations.c.id).where(
                ngsild_csource_registrations.c.tenant == tenant,
                ngsild_csource_registrations.c.id == registration["id"],
            )
        ).first()
        if exists:
            raise Conflict(f"context source registration {registration['id']} already exists")
        conn.execute(
            insert(ngsild_csource_registrations).values(
                tenant=tenant,
                id=registration["id"],
                registration=registration,
                origin=origin,
                created_at=stamp,
                modified_at=stamp,
                expires_at=_parse_time(expires, "expiresAt") if expires else None,
            )
        )
    forget_cache(engine)
    return get(engine=engine, tenant=tenant, reg_id=registration["id"])


def get(*, engine: Engine, tenant: str, reg_id: str) -> dict[str, Any]:
    """Return one stored registration row; 404 when there is none."""
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(ngsild_csource_registrations).where(
                    ngsild_csource_registrations.c.tenant == tenant,
                    ngsild_csource_registrations.c.id == reg_id,
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(f"no context source registration {reg_id}")
    return dict(row)


def list_rows(*, engine: Engine, tenant: str, origin: str | None = None) -> list[dict[str, Any]]:
    """Return every registration of a tenant (expired ones too), by id."""
    query = (
        select(ngsild_csource_registrations)
        .where(ngsild_csource_registrations.c.tenant == tenant)
        .order_by(ngsild_csource_registrations.c.id)
    )
    if origin is not None:
        query = query.where(ngsild_csource_registrations.c.origin == origin)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def replace(
    *,
    engine: Engine,
    tenant: str,
    registration: dict[str, Any],
    origin: str | None = None,
    now: datetime | None = None,
) -> None:
    """Overwrite a stored registration with a validated one (same id)."""
    expires = registration.get("expiresAt")
    values: dict[str, Any] = {
        "registration": registration,
        "modified_at": now or _now(),
        "expires_at": _parse_time(expires, "expiresAt") if expires else None,
    }
    if origin is not None:
        values["origin"] = origin
    with engine.begin() as conn:
        done = conn.execute(
            update(ngsild_csource_registrations)
            .where(
                ngsild_csource_registrations.c.tenant == tenant,
                ngsild_csource_registrations.c.id == registration["id"],
            )
            .values(**values)
        )
    forget_cache(engine)
    if done.rowcount == 0:
        raise NotFound(f"no context source registration {registration['id']}")


def patch(
    *,
    engine: Engine,
    tenant: str,
    reg_id: str,
    fragment: Any,
    terms: TermMap,
    now: datetime | None = None,
) -> None:
    """Update the members a fragment names (clause 5.9.3); the result must stay valid."""
    if not isinstance(fragment, dict) or not fragment:
        raise BadInput("the update of a registration is a non-empty JSON object")
    if "id" in fragment and fragment["id"] != reg_id:
        raise BadInput("the id of a registration cannot be changed")
    if "type" in fragment and fragment["type"] != REGISTRATION_TYPE:
        raise BadInput(f'a registration keeps "type": "{REGISTRATION_TYPE}"')
    row = get(engine=engine, tenant=tenant, reg_id=reg_id)
    # the stored form is expanded; compacting with the same terms round-trips the names
    current = render(row, terms)
    for key in _READ_ONLY:
        current.pop(key, None)
    merged = {**current, **{k: v for k, v in fragment.items() if k != "@context"}}
    registration = validate(merged, terms, now=now)
    replace(engine=engine, tenant=tenant, registration=registration, now=now)


def remove(*, engine: Engine, tenant: str, reg_id: str) -> None:
    """Delete one registration; 404 when there is none."""
    with engine.begin() as conn:
        done = conn.execute(
            delete(ngsild_csource_registrations).where(
                ngsild_csource_registrations.c.tenant == tenant,
                ngsild_csource_registrations.c.id == reg_id,
            )
        )
    forget_cache(engine)
    if done.rowcount == 0:
        raise NotFound(f"no context source registration {reg_id}")


def _info_matches(
    info: dict[str, Any],
    *,
    types: list[str] | None,
    ids: list[str] | None,
    attrs: list[str] | None,
) -> bool:
    entities = info.get("entities")
    if entities is not None and types is not None:
        wanted = set(types)
        if not any(wanted & set(e["type"]) for e in entities):
            return False
    if entities is not None and ids is not None:
        fitting = False
        for entity in entities:
            if "id" in entity:
                fitting = fitting or entity["id"] in ids
            elif "idPattern" in entity:
                fitting = fitting or any(re.fullmatch(entity["idPattern"], i) for i in ids)
            else:
                fitting = True
        if not fitting:
            return False
    names = info.get("propertyNames", []) + info.get("relationshipNames", [])
    return not (attrs and names and not set(attrs) & set(names))


def matches(
    registration: dict[str, Any],
    *,
    types: list[str] | None,
    ids: list[str] | None = None,
    attrs: list[str] | None = None,
) -> bool:
    """Return whether a query (expanded types, ids, attrs) concerns a registration."""
    return any(
        _info_matches(info, types=types, ids=ids, attrs=attrs)
        for info in registration.get("information", [])
    )


# --- routes (clauses 6.8 and 6.9); included in the NGSI-LD router under /ngsi-ld/v1 ---

router = APIRouter()
_read_roles = require_role(*GOVERNMENT_ROLES)
_admin = require_role(Role.bureau_admin)


def _api() -> Any:
    # the NGSI-LD module holds the request helpers and includes this router at its end
    from citybrain.hub.ngsild import api

    return api


@router.post("/csourceRegistrations", status_code=201)
async def create_registration(request: Request, principal: Principal = Depends(_admin)) -> Response:
    """Create a context source registration."""
    api = _api()
    body, terms = await api._read(request)
    registration = validate(body, terms)
    create(engine=api._engine(request), tenant=api._tenant(request), registration=registration)
    return Response(
        status_code=201,
        headers={
            "Location": f"{api.PREFIX}/csourceRegistrations/{api._iri_path(registration['id'])}"
        },
    )


@router.get("/csourceRegistrations")
async def list_registrations(
    request: Request, principal: Principal = Depends(_read_roles)
) -> Response:
    """Query context source registrations by type, id and attrs."""
    api = _api()
    terms = api._terms_for_read(request)
    limit, offset, count = api._page_params(request)
    params = request.query_params
    types = api._split(params.get("type"))
    ids = api._split(params.get("id"))
    attrs = api._split(params.get("attrs"))
    rows = [
        r
        for r in list_rows(engine=api._engine(request), tenant=api._tenant(request))
        if (types is None and ids is None and attrs is None)
        or matches(
            r["registration"],
            types=[terms.expand(t) for t in types] if types else None,
            ids=ids,
            attrs=[terms.expand(a) for a in attrs] if attrs else None,
        )
    ]
    payload = [render(r, terms) for r in rows[offset : offset + limit]]
    headers = {"NGSILD-Results-Count": str(len(rows))} if count else None
    response: Response = api._respond(request, payload, terms, headers=headers)
    return response


@router.get("/csourceRegistrations/{reg_id:path}")
async def retrieve_registration(
    request: Request, reg_id: str, principal: Principal = Depends(_read_roles)
) -> Response:
    """Retrieve one context source registration."""
    api = _api()
    if not is_iri(reg_id):
        raise BadInput(f"{reg_id!r} is not a registration id (a URI)")
    terms = api._terms_for_read(request)
    row = get(engine=api._engine(request), tenant=api._tenant(request), reg_id=reg_id)
    response: Response = api._respond(request, render(row, terms), terms)
    return response


@router.patch("/csourceRegistrations/{reg_id:path}", status_code=204)
async def update_registration(
    request: Request, reg_id: str, principal: Principal = Depends(_admin)
) -> Response:
    """Update members of a context source registration."""
    api = _api()
    if not is_iri(reg_id):
        raise BadInput(f"{reg_id!r} is not a registration id (a URI)")
    fragment, terms = await api._read(request)
    patch(
        engine=api._engine(request),
        tenant=api._tenant(request),
        reg_id=reg_id,
        fragment=fragment,
        terms=terms,
    )
    return Response(status_code=204)


@router.delete("/csourceRegistrations/{reg_id:path}", status_code=204)
async def delete_registration(
    request: Request, reg_id: str, principal: Principal = Depends(_admin)
) -> Response:
    """Delete a context source registration."""
    api = _api()
    if not is_iri(reg_id):
        raise BadInput(f"{reg_id!r} is not a registration id (a URI)")
    remove(engine=api._engine(request), tenant=api._tenant(request), reg_id=reg_id)
    return Response(status_code=204)
