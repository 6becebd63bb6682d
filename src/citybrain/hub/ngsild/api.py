"""The NGSI-LD API (ETSI GS CIM 009) at /ngsi-ld/v1: entities, batch operations, types, contexts."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import orjson
from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, Engine

from citybrain.core.errors import BadInput, CityBrainError, Conflict, NotFound
from citybrain.core.routing import APIRouter
from citybrain.federation import distributed
from citybrain.governance.principal import Principal
from citybrain.hub.ngsild import (
    commits,
    gated,
    geoquery,
    linked,
    ordering,
    query,
    scope_history,
    service,
    subscriptions,
    temporal,
)
from citybrain.hub.ngsild.entities import (
    ENTITY_MEMBERS,
    NGSI_NULL,
    apply_lang,
    check_datetime,
    check_scope,
    expand_attributes,
    expand_entity,
    now_iso,
    render,
    render_instance,
    select_datasets,
)
from citybrain.hub.ngsild.errors import LengthRequired, NotAcceptable, OperationNotSupported
from citybrain.hub.ngsild.jsonld import (
    CORE_URL,
    ContextStore,
    TermMap,
    context_from_request,
    link_header_for,
    validate_attribute_name,
    validate_entity_id,
)
from citybrain.hub.ngsild.projection import Join, Projection, parse_join, projection_of

PREFIX = "/ngsi-ld/v1"
T = TypeVar("T")
STARTED = time.monotonic()
_ACCEPTABLE = {
    "*/*",
    "application/*",
    "application/json",
    "application/ld+json",
    "application/geo+json",
    "application/merge-patch+json",
}


# GeoJSON is offered by the entity query and retrieval only (clause 6.3.15)
_GEOJSON_ROUTE = re.compile(r"^/ngsi-ld/v1/entities(/[^/]+)?/?$")
_NOT_GEOJSON = _ACCEPTABLE - {"application/geo+json"}


# every query parameter of the NGSI-LD API (GS CIM 009 v1.8, clause 6); others are refused
KNOWN_PARAMETERS = frozenset(
    """type id idPattern attrs pick omit q scopeQ georel geometry coordinates geoproperty
    geometryProperty options format count limit offset lang csf datasetId deleteAll timerel
    timeAt endTimeAt timeproperty lastN aggrMethods aggrPeriodDuration local via join
    joinLevel containedBy entityMap details orderBy orderFrom collation expandValues collect
    observedAt doNotCompact kind jsonldContext contextSourceAlias keep drop""".split()
)


async def check_headers(request: Request) -> None:
    """Refuse unknown parameters, an Accept no endpoint can meet, a body without a length.

    Async though it awaits nothing: FastAPI runs a plain function dependency in its thread
    pool, a thread hop on every NGSI-LD request for a few dictionary lookups.
    """
    unknown = sorted(set(request.query_params) - KNOWN_PARAMETERS)
    if unknown:
        raise _invalid(f"unknown query parameter(s): {', '.join(unknown)}")
    accept = request.headers.get("accept")
    if request.method == "GET" and accept:
        ranges = [part.split(";")[0].strip().lower() for part in accept.split(",")]
        acceptable = _ACCEPTABLE if _GEOJSON_ROUTE.match(request.url.path) else _NOT_GEOJSON
        if not any(r in acceptable for r in ranges if r):
            raise NotAcceptable(
                f"cannot answer in {accept!r}: use application/json or application/ld+json"
            )
    if (
        request.method in ("POST", "PATCH", "PUT")
        and "content-length" not in request.headers
        and "chunked" in (request.headers.get("transfer-encoding") or "").lower()
    ):
        raise LengthRequired("send the body with a Content-Length header")


async def bind_writer(request: Request) -> None:
    """Name the principal whose changes the store checks against entity-type ownership.

    Async, so the context variable is set in the request's own task, where the route runs.
    """
    principal = getattr(request.state, "principal", None)
    if isinstance(principal, Principal):
        gated.writer.set((principal, request.app.state.engine))


router = APIRouter(
    prefix=PREFIX,
    tags=["ngsi-ld"],
    dependencies=[Depends(check_headers), Depends(bind_writer)],
)
MAX_LIMIT = 1000
# how many matching entities a query with orderBy may sort
MAX_ORDERED = 100_000
JSON_TYPES = ("application/json", "application/ld+json", "application/merge-patch+json")


def contexts(request: Request) -> ContextStore:
    """Return the node's @context store, created on first use."""
    store: ContextStore | None = getattr(request.app.state, "ngsild_contexts", None)
    if store is None:
        store = ContextStore()
        request.app.state.ngsild_contexts = store
    return store


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _tenant(request: Request) -> str:
    return service.check_tenant(request.headers.get("NGSILD-Tenant"))


async def _write(request: Request, work: Callable[[Connection], T], weight: int = 1) -> T:
    """Run a store write in this node's next group commit (see commits); weight: entities."""
    return await commits.committer(request.app.state, _engine(request)).run(work, weight)


class _Unsupported(CityBrainError):
    status = 415
    kind = "UnsupportedMediaType"


class _Invalid(CityBrainError):
    status = 400
    kind = "InvalidRequest"


def _only_parameters(request: Request, allowed: set[str]) -> None:
    """Refuse the query parameters an endpoint does not define (clause 6.3.20)."""
    undefined = sorted(set(request.query_params) - allowed)
    if undefined:
        raise _invalid(f"this endpoint takes no {', '.join(undefined)}")


def _unsupported(media: str) -> CityBrainError:
    return _Unsupported(
        f"Content-Type {media or 'none'!r} is not application/json or application/ld+json"
    )


def _invalid(message: str) -> CityBrainError:
    return _Invalid(message)


async def _read(request: Request) -> tuple[Any, TermMap]:
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media not in JSON_TYPES:
        raise _unsupported(media)
    body = await _body_json(request)
    ctx = context_from_request(link=request.headers.get("link"), content_type=media, body=body)
    return body, contexts(request).term_map(ctx)


async def _body_json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise _invalid("the request body is empty")
    try:
        # orjson: a third of the time of json for a batch, and it refuses NaN, Infinity and
        # lone surrogates, which are not JSON and could not be stored
        return orjson.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _invalid(f"the body is not valid JSON: {exc}") from None


def _terms_for_read(request: Request) -> TermMap:
    ctx = context_from_request(link=request.headers.get("link"), content_type=None, body=None)
    return contexts(request).term_map(ctx)


# what a read can answer in, in the order of clause 6.3.4 (which settles ties)
_OFFERED = ("application/json", "application/ld+json", "application/geo+json")


def _negotiate(request: Request, geojson: bool = True) -> str:
    """The representation an Accept header asks for (RFC 9110 5.3.2 weights, 6.3.4 ties).

    Only the representations the endpoint offers compete (GeoJSON only where `geojson`).
    """
    accept = request.headers.get("accept")
    if not accept:
        return "application/json"
    weights: dict[str, tuple[int, float]] = {}  # media range: (specificity, weight)
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        media = media.lower()
        weight = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 1.0  # a weight that does not parse decides nothing
        if media:
            specificity = 2 if media in _OFFERED else 1 if media == "application/*" else 0
            if media in _OFFERED or media in ("*/*", "application/*"):
                weights[media] = (specificity, weight)
    best, best_weight = "application/json", -1.0
    for media in _OFFERED if geojson else _OFFERED[:2]:
        ranges = [weights[r] for r in (media, "application/*", "*/*") if r in weights]
        if not ranges:
            continue
        weight = max(ranges)[1]  # the most specific range that names it decides
        if weight > best_weight and weight > 0:
            best, best_weight = media, weight
    return best


def _wants_ld(request: Request, geojson: bool = False) -> bool:
    return _negotiate(request, geojson) == "application/ld+json"


def _wants_geojson(request: Request) -> bool:
    return _negotiate(request) == "application/geo+json"


def _geometry_property_needs_geojson(request: Request) -> None:
    """Clause 5.7.1.4, 5.7.2.4: geometryProperty only makes sense for a GeoJSON answer."""
    if "geometryProperty" in request.query_params and not _wants_geojson(request):
        raise BadInput("geometryProperty needs Accept: application/geo+json")


def _feature(entity: dict[str, Any], geometry_property: str) -> dict[str, Any]:
    """Turn a rendered entity into a GeoJSON Feature (clause 6.3.15)."""
    geo = entity.get(geometry_property)
    value = geo.get("value") if isinstance(geo, dict) and "value" in geo else geo
    geometry = value if isinstance(value, dict) and "coordinates" in value else None
    properties = {k: v for k, v in entity.items() if k not in ("id", "@context")}
    return {
        "id": entity.get("id"),
        "type": "Feature",
        "geometry": geometry,
        "properties": properties,
    }


def _respond(
    request: Request,
    payload: Any,
    terms: TermMap,
    status: int = 200,
    headers: dict[str, str] | None = None,
    geojson: bool = False,
    page: tuple[int, int, int] | None = None,
) -> JSONResponse:
    """Answer in the representation asked for; page (offset, limit, total or -1) adds the
    Link headers of the previous and next pages (clause 5.5.9). geojson marks the entity
    routes, whose payload a Prefer: ngsi-ld=<version> also reshapes (clause 4.3.6.8)."""
    context_url = terms.urls[0] if terms.urls else CORE_URL
    extra = dict(headers or {})
    links = _page_links(request, page, _negotiate(request, geojson)) if page else []
    version = _preferred_version(request)
    if version is not None:
        extra["Preference-Applied"] = f"ngsi-ld={version}"
        if geojson and _older_than(version, (1, 8)):
            # clause 4.3.6.8: entities as a client of that version understands them
            payload, changed = _as_before_1_8(payload)
            if changed and status == 200:
                status = 203
    if geojson and _wants_geojson(request):
        prop = request.query_params.get("geometryProperty", "location")
        body: dict[str, Any] = (
            {"type": "FeatureCollection", "features": [_feature(e, prop) for e in payload]}
            if isinstance(payload, list)
            else _feature(payload, prop)
        )
        if "body=json" in (request.headers.get("prefer") or ""):
            extra["Link"] = link_header_for(context_url)
        else:
            body["@context"] = list(terms.urls) or CORE_URL
        if links:
            extra["Link"] = ", ".join([*filter(None, [extra.get("Link")]), *links])
        return JSONResponse(
            body, status_code=status, media_type="application/geo+json", headers=extra
        )
    if _wants_ld(request, geojson):
        # one context as a string, several as a list (as the request gave them)
        ld_context: Any = terms.urls[0] if len(terms.urls) == 1 else list(terms.urls) or CORE_URL
        if isinstance(payload, dict):
            payload = {**payload, "@context": ld_context}
        elif isinstance(payload, list):
            payload = [{**p, "@context": ld_context} for p in payload]
        if links:
            extra["Link"] = ", ".join(links)
        return JSONResponse(
            payload, status_code=status, media_type="application/ld+json", headers=extra
        )
    extra["Link"] = ", ".join([link_header_for(context_url), *links])
    return JSONResponse(payload, status_code=status, headers=extra)


def _preferred_version(request: Request) -> str | None:
    """The NGSI-LD version a Prefer header asks for (RFC 7240: ngsi-ld=1.5), or None."""
    for member in (request.headers.get("prefer") or "").split(","):
        name, _, value = member.split(";")[0].partition("=")
        if name.strip().lower() == "ngsi-ld" and value.strip().strip('"'):
            return value.strip().strip('"')
    return None


def _older_than(version: str, than: tuple[int, int]) -> bool:
    try:
        parts = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return False
    return parts < than


# attribute types that came with NGSI-LD 1.8, and what a client of an earlier version reads
_SINCE_1_8 = {
    "VocabProperty": ("Property", "vocab", "value"),
    "JsonProperty": ("Property", "json", "value"),
    "ListProperty": ("Property", "valueList", "value"),
    "ListRelationship": ("Relationship", "objectList", "object"),
}


def _as_before_1_8(payload: Any) -> tuple[Any, bool]:
    """Rewrite the attribute types of 1.8 as the Property or Relationship they were before."""
    changed = False

    def instance(value: Any) -> Any:
        nonlocal changed
        if isinstance(value, list):
            return [instance(v) for v in value]
        if not isinstance(value, dict) or value.get("type") not in _SINCE_1_8:
            return value
        kind, member, becomes = _SINCE_1_8[value["type"]]
        changed = True
        out = {k: v for k, v in value.items() if k not in ("type", member)}
        return {"type": kind, becomes: value.get(member), **out}

    def entity(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {k: v if k in ENTITY_MEMBERS else instance(v) for k, v in value.items()}

    result = [entity(e) for e in payload] if isinstance(payload, list) else entity(payload)
    return result, changed


def _page_links(request: Request, page: tuple[int, int, int], media: str) -> list[str]:
    """Links to the previous and the next page of a listing, as its own query with offset."""
    offset, limit, total = page
    if limit <= 0:
        return []
    params = dict(request.query_params)

    def link(to: int, rel: str) -> str:
        query = sorted({**params, "limit": str(limit), "offset": str(to)}.items())
        text = "&".join(f"{k}={quote(v, safe=_QUERY_SAFE)}" for k, v in query)
        return f'<{request.url.path}?{text}>; rel="{rel}"; type="{media}"'

    out = []
    if offset > 0:
        out.append(link(max(0, offset - limit), "prev"))
    # without a count, a full page may have a next one
    if (total >= 0 and offset + limit < total) or (total < 0 and _page_full(request)):
        out.append(link(offset + limit, "next"))
    return out


def _page_full(request: Request) -> bool:
    """Set by a listing whose total is unknown when its page came back full."""
    return bool(getattr(request.state, "page_full", False))


# what stays as it is in the query of a page link (':' and '*' of ids and patterns)
_QUERY_SAFE = ":/*,;@!$'()"


def _options(request: Request) -> tuple[str, bool]:
    raw = request.query_params.get("options", "")
    fmt = request.query_params.get("format")
    opts = {o.strip() for o in raw.split(",") if o.strip()}
    unknown = opts - {"keyValues", "concise", "normalized", "sysAttrs", "noOverwrite"}
    if unknown:
        raise _invalid(f"unknown options {sorted(unknown)}")
    chosen = fmt or (
        "keyValues" if "keyValues" in opts else "concise" if "concise" in opts else "normalized"
    )
    if chosen not in ("keyValues", "concise", "normalized", "simplified"):
        raise _invalid(f"unknown format {chosen!r}")
    return ("keyValues" if chosen == "simplified" else chosen), "sysAttrs" in opts


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def _type_selector(request: Request, terms: TermMap, entity_id: str) -> None:
    """Refuse an operation on an entity that is not of the ?type the request names.

    Clauses 5.6.2-5.6.6, 5.7.1: a type selector that the target entity does not match is
    ResourceNotFound (and nothing is written).
    """
    wanted = _split(request.query_params.get("type"))
    if not wanted:
        return
    entity = service.get_entity(
        engine=_engine(request), tenant=_tenant(request), entity_id=entity_id
    )
    if not {terms.expand(t) for t in wanted} & set(entity.get("type", [])):
        raise NotFound(f"entity {entity_id} is not of type {', '.join(wanted)}")


@router.post("/entities", status_code=201)
async def create_entity(request: Request) -> Response:
    """Create an entity."""
    body, terms = await _read(request)
    if not isinstance(body, dict):
        # an array or a bare value is no entity at all: the request itself is wrong
        raise _invalid("the body of a create is one entity, a JSON object")
    entity = expand_entity(body, terms)
    await _write(request, partial(service.create_entity_in, tenant=_tenant(request), entity=entity))
    return Response(
        status_code=201, headers={"Location": f"{PREFIX}/entities/{_iri_path(entity['id'])}"}
    )


def _page_params(request: Request) -> tuple[int, int, bool]:
    try:
        limit = int(request.query_params.get("limit", "20"))
        offset = int(request.query_params.get("offset", "0"))
    except ValueError:
        raise BadInput("limit and offset must be integers") from None
    if limit < 0 or offset < 0:
        raise BadInput("limit and offset must not be negative")
    if limit > MAX_LIMIT:
        raise _TooManyResults(f"limit {limit} is above the maximum of {MAX_LIMIT}")
    count = request.query_params.get("count", "false").lower() == "true"
    return limit, offset, count


class _TooManyResults(CityBrainError):
    status = 403
    kind = "TooManyResults"


_NOT_ATTRIBUTES = {"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt", "observedAt"}


def _require_narrow(params: Mapping[str, str], what: str) -> None:
    """Refuse a query that selects everything (clauses 5.7.2.4, 5.6.21.4): it must name a
    type, an attribute in attrs or q (system members do not count), a geo-query, or local."""
    attrs = _split(params.get("attrs")) or []
    q_names = query.names(query.parse(params["q"])) if params.get("q") else []
    if not (
        params.get("type")
        or any(a not in _NOT_ATTRIBUTES for a in attrs)
        or any(n.split(".")[0] not in _NOT_ATTRIBUTES for n in q_names)
        or "georel" in params
        or params.get("local", "").lower() == "true"
    ):
        raise BadInput(
            f"{what} is too wide: give a type, a non-system attribute in attrs or q, "
            "a geo-query, or local=true"
        )


def _spec_from(params: dict[str, Any], terms: TermMap) -> service.EntityQuery:
    if params.get("type") == "*":
        # clause 4.17: every entity type; with local=false it would ask the federation too
        if params.get("local", "").lower() == "false":
            raise BadInput("type=* cannot be used with local=false")
        params = {k: v for k, v in params.items() if k != "type"}
    type_text = str(params.get("type") or "")
    type_groups = None
    if any(c in type_text for c in ";|()"):
        # clause 4.17: a type selector with and (;), or (| ,) and parentheses
        type_groups = [
            [terms.expand(t) for t in group] for group in query.parse_dnf(type_text, "type")
        ]
    types = _split(params.get("type")) if type_groups is None else None
    ids = _split(params.get("id"))
    for entity_id in ids or []:
        validate_entity_id(entity_id)
    if params.get("csf"):
        query.parse(params["csf"])  # a context source filter is written in the q language
    q_text = params.get("q")
    q_expr = query.expand(query.parse(q_text), terms.expand) if q_text else None
    expand_values = _split(params.get("expandValues"))
    if q_expr is not None and expand_values:
        q_expr = query.expand_values(q_expr, {terms.expand(a) for a in expand_values}, terms.expand)
    geo = None
    if params.get("georel") or params.get("geometry") or params.get("coordinates"):
        if not params.get("georel"):
            raise BadInput("a geo-query needs georel")
        geo = geoquery.parse(
            params["georel"],
            params.get("geometry"),
            params.get("coordinates"),
            params.get("geoproperty"),
        )
        geo = geoquery.GeoQuery(
            geo.relation,
            geo.geometry,
            terms.expand(geo.geoproperty),
            geo.max_distance,
            geo.min_distance,
        )
    scope_text = str(params.get("scopeQ") or "")
    scope = query.parse_dnf(scope_text, "scopeQ") if scope_text else None
    attrs = _split(params.get("attrs"))
    return service.EntityQuery(
        types=[terms.expand(t) for t in types]
        if types
        else list(dict.fromkeys(t for g in type_groups for t in g))
        if type_groups
        else None,
        type_groups=type_groups,
        ids=ids,
        id_pattern=params.get("idPattern"),
        q=q_expr,
        geo=geo,
        attrs=[terms.expand(a) for a in attrs] if attrs else None,
        scope=scope,
    )


def _gated_spec(reader: gated.Reader, spec: service.EntityQuery) -> service.EntityQuery:
    """Leave out of a query the entity types the principal may not read."""
    if spec.types is None:
        return spec
    allowed = reader.allowed_types(spec.types)
    # no readable type left: a type no entity has keeps the query's shape and finds nothing
    return dataclasses.replace(spec, types=allowed or ["urn:ngsi-ld:citybrain:no-such-type"])


def _gated_attrs(
    reader: gated.Reader, entities: list[dict[str, Any]], attrs: list[str] | None
) -> list[str] | None:
    """Limit a temporal read to the attributes whose history the principal may see."""
    readable: set[str] | None = None
    for entity in entities:
        allowed = reader.readable_attributes(entity)
        if allowed is not None:
            readable = allowed if readable is None else readable & allowed
    if readable is None:
        return attrs
    chosen = [a for a in (attrs or sorted(readable)) if a in readable]
    return chosen or ["urn:ngsi-ld:citybrain:no-such-attribute"]


def _sources(request: Request, spec: service.EntityQuery) -> list[distributed.Source]:
    """Return the context sources a query concerns (a cached lookup; [] for most nodes)."""
    return distributed.sources_for(
        request, tenant=_tenant(request), types=spec.types, ids=spec.ids, attrs=spec.attrs
    )


async def _distribute(
    request: Request,
    sources: list[distributed.Source],
    params: Mapping[str, str],
    spec: service.EntityQuery,
    terms: TermMap,
    local: list[dict[str, Any]],
    total: int,
    reader: gated.Reader,
    offset: int,
    limit: int,
    count: bool,
    sys_attrs: bool,
) -> tuple[list[dict[str, Any]], int, dict[str, str]]:
    """Merge the answers of the context sources with the local page; cut the page after."""
    forwarded = distributed.forwarded_params(dict(params), types=spec.types, count=count)
    result = await distributed.fan_out(
        request, sources, path="/entities", params=forwarded, terms=terms, want=offset + limit
    )
    merged, duplicates = distributed.merge(
        local, result, reader=reader, terms=terms, sys_attrs=sys_attrs
    )
    if count:
        total += sum(
            a.count if a.count is not None else len(a.items)
            for a in result.answers
            if a.error is None
        )
        total -= duplicates
    page = merged[offset : offset + limit]
    distributed.record(request, result, resource="ngsi-ld:entities", rows=len(page))
    return page, total, result.headers()


def _ordering_of(params: Mapping[str, str], terms: TermMap) -> ordering.Ordering | None:
    return ordering.parse_ordering(
        params.get("orderBy"),
        expand=terms.expand,
        order_from=params.get("orderFrom"),
        collation=params.get("collation"),
    )


def _matches(
    request: Request,
    spec: service.EntityQuery,
    order: ordering.Ordering | None,
    *,
    limit: int,
    offset: int,
    count: bool,
) -> tuple[list[dict[str, Any]], int]:
    """One page of the entities a query matches, in id order or in the order asked for."""
    engine, tenant = _engine(request), _tenant(request)
    if order is None:
        return service.query_entities(
            engine=engine, tenant=tenant, spec=spec, limit=limit, offset=offset, count=count
        )
    # an ordered page needs every match first: their number is bounded
    everything, total = service.query_entities(
        engine=engine, tenant=tenant, spec=spec, limit=MAX_ORDERED + 1, offset=0, count=count
    )
    if len(everything) > MAX_ORDERED:
        raise _TooManyResults(
            f"orderBy sorts at most {MAX_ORDERED} matching entities: narrow the query"
        )
    return ordering.order(everything, order)[offset : offset + limit], total


@router.get("/entities")
async def query_entities(request: Request) -> Response:
    """Query entities by type, id, idPattern, attrs, q, scopeQ and geo-query."""
    terms = _terms_for_read(request)
    params = dict(request.query_params)
    if params.get("type") == "None":
        # a probe some clients send: no entity can have that type
        params["type"] = "urn:ngsi-ld:citybrain:no-such-type"
    limit, offset, count = _page_params(request)
    _require_narrow(params, "the query")
    _geometry_property_needs_geojson(request)
    spec = _spec_from(params, terms)
    fmt, sys_attrs = _options(request)
    join = parse_join(request.query_params)
    projection = projection_of(terms, request.query_params, join.level if join else None)
    reader = gated.Reader(request)
    spec = _gated_spec(reader, spec)
    sources = _sources(request, spec)
    page, total = _matches(
        request,
        spec,
        _ordering_of(params, terms),
        # with context sources the page is cut after the merge
        limit=offset + limit if sources else limit,
        offset=0 if sources else offset,
        count=count,
    )
    shown = reader.many(page)
    total -= len(page) - len(shown)
    payload = _page(request, reader, terms, (fmt, sys_attrs), shown, projection, join)
    reader.finish()
    partial: dict[str, str] = {}
    if sources:
        payload, total, partial = await _distribute(
            request,
            sources,
            params,
            spec,
            terms,
            payload,
            total,
            reader,
            offset,
            limit,
            count,
            sys_attrs,
        )
    headers = {"NGSILD-Results-Count": str(total)} if count else {}
    request.state.page_full = len(page) >= limit
    return _respond(
        request,
        payload,
        terms,
        headers=headers | partial,
        geojson=True,
        page=(offset, limit, total if count else -1),
    )


@router.get("/entities/{entity_id}")
async def retrieve_entity(request: Request, entity_id: str) -> Response:
    """Retrieve one entity."""
    validate_entity_id(entity_id)
    _geometry_property_needs_geojson(request)
    terms = _terms_for_read(request)
    fmt, sys_attrs = _options(request)
    join = parse_join(request.query_params)
    projection = projection_of(terms, request.query_params, join.level if join else None)
    entity = service.get_entity(
        engine=_engine(request), tenant=_tenant(request), entity_id=entity_id
    )
    wanted = _split(request.query_params.get("type"))
    if wanted and not {terms.expand(t) for t in wanted} & set(entity.get("type", [])):
        raise NotFound(f"entity {entity_id} is not of type {', '.join(wanted)}")
    reader = gated.Reader(request)
    entity = reader.one(entity)
    show = _shower(request, terms, fmt, sys_attrs)
    rendered = show(entity, projection)
    if not rendered or (projection.attrs and not projection.attrs & entity.keys()):
        # clause 5.7.1.4: nothing of the entity is left to return
        raise NotFound(f"entity {entity_id} has none of the attributes or members asked for")
    extras: list[dict[str, Any]] = []
    if join is not None:
        extras = _joiner(request, reader, terms, fmt, show, join).expand(
            [(entity, rendered)], projection
        )
    reader.finish()
    # flat: the entity and the entities it links to, as a list (the entity alone if none)
    payload: Any = [rendered, *extras] if extras else rendered
    return _respond(request, payload, terms, geojson=True)


def _shower(
    request: Request, terms: TermMap, fmt: str, sys_attrs: bool
) -> Callable[[dict[str, Any], Projection], dict[str, Any]]:
    """Return how this read renders a stored entity under a projection."""
    lang = request.query_params.get("lang")
    datasets = _split(request.query_params.get("datasetId"))

    def show(entity: dict[str, Any], projection: Projection) -> dict[str, Any]:
        return projection.apply(
            render(
                apply_lang(select_datasets(entity, datasets), lang),
                terms,
                fmt=fmt,
                sys_attrs=sys_attrs,
                attrs=projection.attrs,
            )
        )

    return show


def _page(
    request: Request,
    reader: gated.Reader,
    terms: TermMap,
    form: tuple[str, bool],
    shown: list[dict[str, Any]],
    projection: Projection,
    join: Join | None,
) -> list[dict[str, Any]]:
    """Render a page of entities (flat: the linked ones after them)."""
    fmt, sys_attrs = form
    show = _shower(request, terms, fmt, sys_attrs)
    # an entity the projection empties is left out
    pairs = [(e, r) for e, r in ((e, show(e, projection)) for e in shown) if r]
    payload = [r for _, r in pairs]
    if join is not None:
        payload += _joiner(request, reader, terms, fmt, show, join).expand(pairs, projection)
    return payload


def _joiner(
    request: Request,
    reader: gated.Reader,
    terms: TermMap,
    fmt: str,
    show: Callable[[dict[str, Any], Projection], dict[str, Any]],
    join: Join,
) -> linked.Joiner:
    return linked.Joiner(
        engine=_engine(request),
        tenant=_tenant(request),
        reader=reader,
        terms=terms,
        fmt=fmt,
        render=show,
        join=join,
    )


@router.get("/info/sourceIdentity")
async def source_identity(request: Request) -> Response:
    """Identify this node as a context source (alias per tenant, uptime, current time)."""
    tenant = _tenant(request)
    code = request.app.state.settings.code
    alias = f"urn:citybrain:node:{code}" + (f":tenant:{tenant}" if tenant else "")
    payload = {
        "id": f"urn:ngsi-ld:ContextSourceIdentity:{code}" + (f":{tenant}" if tenant else ""),
        "type": "ContextSourceIdentity",
        "contextSourceAlias": alias,
        "contextSourceUptime": f"PT{int(time.monotonic() - STARTED)}S",
        "contextSourceTimeAt": now_iso(),
        "contextSourceExtras": {"level": request.app.state.settings.level.value},
    }
    return _respond(request, payload, _terms_for_read(request))


@router.patch("/entities", include_in_schema=False)
@router.put("/entities", include_in_schema=False)
async def missing_entity_id(request: Request) -> Response:
    """A merge or replace names the entity in its path: without an id it is BadRequestData."""
    raise BadInput(f"{request.method} needs the id of an entity: /entities/{{entityId}}")


@router.delete("/entities")
async def purge_entities(request: Request) -> Response:
    """Purge the entities a query selects, or only some of their attributes (clause 5.6.21).

    The query must be narrow enough (5.6.21.4): a type, attrs or q naming a non-system
    attribute, a geo-query, or local=true. drop removes the attributes named, keep all the
    others; without either the entities are deleted.
    """
    terms = _terms_for_read(request)
    params = dict(request.query_params)
    _require_narrow(params, "purge")
    keep, drop = _split(params.get("keep")), _split(params.get("drop"))
    if keep and drop:
        raise BadInput("keep and drop cannot be used together")
    spec = _spec_from(params, terms)
    engine, tenant = _engine(request), _tenant(request)
    page, _ = service.query_entities(
        engine=engine, tenant=tenant, spec=spec, limit=1_000_000, offset=0, count=False
    )
    kept = {terms.expand(k) for k in keep or []}
    dropped = {terms.expand(d) for d in drop or []}
    for entity in page:
        if not keep and not drop:
            service.delete_entity(engine=engine, tenant=tenant, entity_id=entity["id"])
            continue
        for name in entity:
            if name in ENTITY_MEMBERS or (name in kept if keep else name not in dropped):
                continue
            service.delete_attribute(
                engine=engine,
                tenant=tenant,
                entity_id=entity["id"],
                name=name,
                dataset_id=None,
                delete_all=True,
            )
    return Response(status_code=204)


@router.delete("/entities/{entity_id}", status_code=204)
async def delete_entity(request: Request, entity_id: str) -> Response:
    """Delete an entity."""
    validate_entity_id(entity_id)
    _type_selector(request, _terms_for_read(request), entity_id)
    await _write(
        request, partial(service.delete_entity_in, tenant=_tenant(request), entity_id=entity_id)
    )
    return Response(status_code=204)


@router.put("/entities/{entity_id}", status_code=204)
async def replace_entity(request: Request, entity_id: str) -> Response:
    """Replace an entity whole."""
    validate_entity_id(entity_id)
    body, terms = await _read(request)
    if not isinstance(body, dict):
        raise BadInput("the body must be an entity object")
    if body.get("id", entity_id) != entity_id:
        raise BadInput("the id in the body differs from the id in the path")
    entity = expand_entity({**body, "id": entity_id}, terms)
    service.replace_entity(engine=_engine(request), tenant=_tenant(request), entity=entity)
    return Response(status_code=204)


def _fragment(body: Any, entity_id: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object of attributes")
    if "id" in body and body["id"] != entity_id:
        raise BadInput("the id in the body differs from the id in the path")
    return body


def _fragment_types(fragment: Any, terms: TermMap) -> list[str] | None:
    """The types a fragment adds to its entity (clause 4.16: types are only ever added)."""
    if not isinstance(fragment, dict) or "type" not in fragment:
        return None
    checked = expand_entity({"id": "urn:ngsi-ld:T:x", "type": fragment["type"]}, terms)
    return list(checked["type"])


def _fragment_scope(fragment: dict[str, Any]) -> list[str] | None:
    """The scope a fragment of attributes carries (clause 4.18), checked; None without one."""
    if "scope" not in fragment:
        return None
    scope = fragment["scope"]
    scopes = scope if isinstance(scope, list) else [scope]
    check_scope(scopes)
    return scopes


def _update_response(result: service.UpdateResult, terms: TermMap) -> Response:
    if not result.not_updated:
        return Response(status_code=204)
    payload = {
        "updated": [terms.compact(n) for n in result.updated],
        "notUpdated": [
            {"attributeName": terms.compact(n["attributeName"]), "reason": n["reason"]}
            for n in result.not_updated
        ],
    }
    return JSONResponse(payload, status_code=207)


@router.patch("/entities/{entity_id}")
async def merge_entity(request: Request, entity_id: str) -> Response:
    """Merge a fragment into an entity (PATCH merge)."""
    validate_entity_id(entity_id)
    body, terms = await _read(request)
    _type_selector(request, terms, entity_id)
    fragment = _fragment(body, entity_id)
    attrs = expand_attributes(fragment, terms, nulls=True, nested_nulls=True)
    expires_at = fragment.get("expiresAt")
    if expires_at is not None and expires_at != NGSI_NULL:  # the Null makes it durable again
        check_datetime(expires_at, "expiresAt")
    types = (
        [
            terms.expand(t)
            for t in (
                fragment["type"] if isinstance(fragment.get("type"), list) else [fragment["type"]]
            )
        ]
        if "type" in fragment
        else None
    )
    result = await _write(
        request,
        partial(
            service.change_attributes_in,
            tenant=_tenant(request),
            entity_id=entity_id,
            attrs=attrs,
            mode="merge",
            new_types=types,
            scope=_fragment_scope(fragment),
            expires_at=expires_at,
        ),
    )
    return _update_response(result, terms)


@router.post("/entities/{entity_id}/attrs")
async def append_attributes(request: Request, entity_id: str) -> Response:
    """Append attributes (overwriting unless options=noOverwrite)."""
    validate_entity_id(entity_id)
    body, terms = await _read(request)
    _type_selector(request, terms, entity_id)
    fragment = _fragment(body, entity_id)
    keep = "noOverwrite" in request.query_params.get("options", "")
    result = await _write(
        request,
        partial(
            service.change_attributes_in,
            tenant=_tenant(request),
            entity_id=entity_id,
            attrs=expand_attributes(fragment, terms, nulls=True),
            mode="append-keep" if keep else "append",
            new_types=_fragment_types(fragment, terms),
            scope=_fragment_scope(fragment),
        ),
    )
    return _update_response(result, terms)


@router.patch("/entities/{entity_id}/attrs")
async def update_attributes(request: Request, entity_id: str) -> Response:
    """Update existing attributes."""
    validate_entity_id(entity_id)
    body, terms = await _read(request)
    _type_selector(request, terms, entity_id)
    fragment = _fragment(body, entity_id)
    result = await _write(
        request,
        partial(
            service.change_attributes_in,
            tenant=_tenant(request),
            entity_id=entity_id,
            attrs=expand_attributes(fragment, terms, nulls=True),
            mode="update",
            new_types=_fragment_types(fragment, terms),
            scope=_fragment_scope(fragment),
        ),
    )
    return _update_response(result, terms)


@router.patch("/entities/{entity_id}/attrs/{attr}", status_code=204)
async def partial_update_attribute(request: Request, entity_id: str, attr: str) -> Response:
    """Partially update one attribute."""
    validate_entity_id(entity_id)
    body, terms = await _read(request)
    _type_selector(request, terms, entity_id)
    if not isinstance(body, dict):
        raise BadInput("the body must be an attribute fragment")
    if body.get("datasetId") == NGSI_NULL:
        raise BadInput("a datasetId cannot be deleted with the NGSI-LD Null")
    await _write(
        request,
        partial(
            service.partial_update_in,
            tenant=_tenant(request),
            entity_id=entity_id,
            attr=attr,
            fragment=body,
            terms=terms,
        ),
    )
    return Response(status_code=204)


@router.put("/entities/{entity_id}/attrs/{attr}", status_code=204)
async def replace_attribute(request: Request, entity_id: str, attr: str) -> Response:
    """Replace one existing attribute (clause 5.6.19)."""
    validate_entity_id(entity_id)
    if attr == "scope":
        raise BadInput("scope is not an attribute: it is replaced with the entity's attributes")
    if attr.startswith("@"):
        raise BadInput(f"{attr!r} is a JSON-LD keyword, not an attribute name")
    body, terms = await _read(request)
    _type_selector(request, terms, entity_id)
    if not isinstance(body, dict):
        raise BadInput("the body must be an attribute fragment")
    name = terms.expand(attr)
    current = service.get_entity(
        engine=_engine(request), tenant=_tenant(request), entity_id=entity_id
    )
    if name not in current:
        raise NotFound(f"entity {entity_id} has no attribute {attr}")
    fragment = {k: v for k, v in body.items() if k != "@context"}
    attrs = expand_attributes({attr: fragment}, terms)
    service.change_attributes(
        engine=_engine(request),
        tenant=_tenant(request),
        entity_id=entity_id,
        attrs=attrs,
        mode="update",
    )
    return Response(status_code=204)


@router.delete("/entities/{entity_id}/attrs/{attr}", status_code=204)
async def delete_attribute(request: Request, entity_id: str, attr: str) -> Response:
    """Delete one attribute (a datasetId instance, or all with deleteAll=true)."""
    validate_entity_id(entity_id)
    terms = _terms_for_read(request)
    _type_selector(request, terms, entity_id)
    await _write(
        request,
        partial(
            service.delete_attribute_in,
            tenant=_tenant(request),
            entity_id=entity_id,
            name="scope" if attr == "scope" else terms.expand(attr),
            dataset_id=request.query_params.get("datasetId"),
            delete_all=request.query_params.get("deleteAll", "false").lower() == "true",
        ),
    )
    return Response(status_code=204)


def _batch_error(entity_id: Any, exc: CityBrainError) -> dict[str, Any]:
    return {
        "entityId": entity_id if isinstance(entity_id, str) else str(entity_id),
        "error": {
            "type": f"https://uri.etsi.org/ngsi-ld/errors/{exc.kind}",
            "title": exc.message,
            "status": exc.status,
        },
    }


async def _batch_items(request: Request) -> tuple[list[Any], TermMap, ContextStore]:
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media not in JSON_TYPES:
        raise _unsupported(media)
    body = await _body_json(request)
    if not isinstance(body, list):
        raise BadInput("a batch operation takes a JSON array")
    if not body:
        raise BadInput("a batch operation needs at least one item")
    if any(item is None for item in body):
        # clause 5.6.7.4: a null item makes the whole request invalid, nothing is applied
        raise BadInput("a batch item cannot be null")
    if media == "application/ld+json" and request.headers.get("link"):
        # clause 6.3.5: JSON-LD carries its @context in the body, never in a Link header
        raise BadInput("a JSON-LD body takes no Link header: put the @context in the items")
    link_ctx = context_from_request(
        link=request.headers.get("link"), content_type="application/json", body=None
    )
    return body, contexts(request).term_map(link_ctx), contexts(request)


def _item_terms(item: Any, media: str, default: TermMap, store: ContextStore) -> TermMap:
    if isinstance(item, dict) and "@context" in item:
        if media != "application/ld+json":
            raise BadInput("@context in the body needs Content-Type application/ld+json")
        return store.term_map(item["@context"])
    if media == "application/ld+json" and isinstance(item, dict):
        raise BadInput("each item of an application/ld+json batch must contain @context")
    return default


@router.post("/entityOperations/{operation}")
async def batch(request: Request, operation: str) -> Response:
    """Batch create, upsert, update, delete, merge, or query entities."""
    if operation == "query":
        return await _batch_query(request)
    if operation not in ("create", "upsert", "update", "delete", "merge"):
        raise NotFound(f"no batch operation {operation!r}")
    items, terms, store = await _batch_items(request)
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    engine, tenant = _engine(request), _tenant(request)
    success: list[str] = []
    created: list[str] = []
    errors: list[dict[str, Any]] = []
    replace = request.query_params.get("options", "") == "replace"
    if operation in ("create", "upsert") and not replace:
        return await _batch_write(request, items, media, terms, store, operation, engine, tenant)
    for item in items:
        entity_id = str(item.get("id")) if isinstance(item, dict) else str(item)
        try:
            if operation == "delete":
                validate_entity_id(item)
                service.delete_entity(engine=engine, tenant=tenant, entity_id=item)
            else:
                item_terms = _item_terms(item, media, terms, store)
                if operation in ("create", "upsert"):
                    entity = expand_entity(item, item_terms)
                    if operation == "create":
                        service.create_entity(engine=engine, tenant=tenant, entity=entity)
                        created.append(entity_id)
                    elif service.upsert_entity(
                        engine=engine, tenant=tenant, entity=entity, replace=replace
                    ):
                        created.append(entity_id)
                else:
                    if not isinstance(item, dict):
                        raise BadInput("each item must be an entity object")
                    validate_entity_id(entity_id)
                    attrs = expand_attributes(
                        item, item_terms, nulls=True, nested_nulls=operation == "merge"
                    )
                    keep = "noOverwrite" in request.query_params.get("options", "")
                    result = service.change_attributes(
                        engine=engine,
                        tenant=tenant,
                        entity_id=entity_id,
                        attrs=attrs,
                        mode="merge"
                        if operation == "merge"
                        else ("append-keep" if keep else "append"),
                        new_types=_fragment_types(item, item_terms),
                    )
                    kept = [n for n in result.not_updated if n["reason"] == "attribute exists"]
                    # noOverwrite keeping what is there is what was asked, not a failure
                    if len(result.not_updated) > len(kept) and not result.updated:
                        raise BadInput("no attribute was updated")
            success.append(entity_id)
        except CityBrainError as exc:
            errors.append(_batch_error(entity_id, exc))
    if errors:
        return JSONResponse({"success": success, "errors": errors}, status_code=207)
    if operation == "create":
        return JSONResponse(success, status_code=201)
    if operation == "upsert" and created:
        # clause 5.6.8: the ids of the entities created, not of those updated
        return JSONResponse(created, status_code=201)
    return Response(status_code=204)


# entities a batch expands between two turns of the event loop (about 1 ms of work)
EXPAND_SLICE = 100


async def _batch_write(
    request: Request,
    items: list[Any],
    media: str,
    terms: TermMap,
    store: ContextStore,
    operation: str,
    engine: Engine,
    tenant: str,
) -> Response:
    """Create or upsert a batch in one transaction, refusing bad items one by one."""
    errors: list[dict[str, Any]] = []
    valid: list[dict[str, Any]] = []
    for k, item in enumerate(items, 1):
        entity_id = str(item.get("id")) if isinstance(item, dict) else str(item)
        try:
            valid.append(expand_entity(item, _item_terms(item, media, terms, store)))
        except CityBrainError as exc:
            errors.append(_batch_error(entity_id, exc))
        if k % EXPAND_SLICE == 0:
            # let the loop run between slices: a round whose writer lock has come waits for
            # the loop, and the other workers wait for that lock
            await asyncio.sleep(0)
    # stamped and made into rows here, so the round (one writer at a time) only writes them
    prepared = service.prepare_batch(engine.dialect, tenant, valid)
    created, updated, refused = await _write(
        request, partial(service.write_batch_in, prepared=prepared, mode=operation), len(valid)
    )
    if created and engine.dialect.name == "postgresql":
        await asyncio.to_thread(service.keep_statistics, engine, len(created))
    for entity_id, reason in refused.items():
        kind = Conflict if "exists" in reason else BadInput
        errors.append(_batch_error(entity_id, kind(reason)))
    success = created + updated
    if errors:
        return JSONResponse({"success": success, "errors": errors}, status_code=207)
    if operation == "create" or created:
        # an upsert's 201 lists the entities it created, not those it updated (clause 6.15.3.1)
        return JSONResponse(created if operation == "upsert" else success, status_code=201)
    return Response(status_code=204)


def _iri_path(entity_id: str) -> str:
    """Percent-encode what an HTTP header cannot carry (non-ASCII IRIs stay addressable)."""
    return quote(entity_id, safe=":/#@!$&'()*+,;=-._~")


def _text(value: Any, name: str) -> str:
    """Return a member that must be a string, or refuse the request."""
    if not isinstance(value, str):
        raise BadInput(f"{name} must be a string")
    return value


def _query_body(body: Any, *, temporal: bool) -> tuple[dict[str, str], dict[str, str]]:
    """The query parameters a Query body stands for (table 5.2.23-1), and its pick/omit."""
    if not isinstance(body, dict) or body.get("type") != "Query":
        raise BadInput('the body of a batch query is an object with "type": "Query"')
    params: dict[str, Any] = {}
    entities = body.get("entities", [])
    if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
        raise BadInput("entities of a batch query must be a list of objects")
    # table 5.2.23-1: no empty arrays, temporalQ only in a temporal query, joinLevel >= 1
    if "entities" in body and not entities:
        raise BadInput("entities of a batch query cannot be an empty array")
    if "temporalQ" in body and not temporal:
        raise BadInput("temporalQ belongs to the temporal batch query only")
    if temporal:
        params.update(_temporal_q(body.get("temporalQ", {})))
        params.update(_aggr_params(body.get("aggrParams")))
    level = body.get("joinLevel")
    if "joinLevel" in body and (type(level) is not int or level < 1):
        raise BadInput("joinLevel must be a positive integer")
    if "join" in body:
        params["join"] = _text(body["join"], "join")
        if "joinLevel" in body:
            params["joinLevel"] = str(level)
    if entities:
        # table 5.2.33-1: type is mandatory, id a URI or a list of them, taking precedence
        # over idPattern
        if not all(isinstance(e.get("type"), str) and e["type"] for e in entities):
            raise BadInput("every entities[] selector of a batch query needs a type")
        params["type"] = ",".join(e["type"] for e in entities)
        ids: list[str] = []
        for e in entities:
            found = e.get("id", [])
            for entity_id in found if isinstance(found, list) else [found]:
                ids.append(_text(entity_id, "entities[].id"))
                validate_entity_id(entity_id)
        if ids:
            params["id"] = ",".join(ids)
        patterns = [_text(e["idPattern"], "idPattern") for e in entities if "idPattern" in e]
        if patterns and not ids:
            params["idPattern"] = patterns[0]
    for key in ("q", "scopeQ"):
        if key in body:
            params[key] = _text(body[key], key)
    if "attrs" in body:
        attrs = body["attrs"]
        if not isinstance(attrs, list):
            raise BadInput("attrs of a batch query must be a list of names")
        if not attrs:
            raise BadInput("attrs of a batch query cannot be an empty array")
        params["attrs"] = ",".join(_text(a, "attrs[]") for a in attrs)
    members: dict[str, str] = {}
    for key in ("pick", "omit"):
        value = body.get(key)
        if key in body:
            items = value if isinstance(value, list) else [value]
            if not items:
                raise BadInput(f"{key} of a batch query cannot be an empty array")
            members[key] = ",".join(_text(m, f"{key}[]") for m in items)
    params.update(_ordering_params(body.get("ordering")))
    geo = body.get("geoQ")
    if geo is not None and not isinstance(geo, dict):
        raise BadInput("geoQ must be an object with georel, geometry and coordinates")
    if isinstance(geo, dict):
        params.update(
            {
                "georel": _text(geo.get("georel"), "geoQ.georel"),
                "geometry": _text(geo.get("geometry"), "geoQ.geometry"),
                "coordinates": json.dumps(geo.get("coordinates")),
                "geoproperty": _text(geo.get("geoproperty", "location"), "geoQ.geoproperty"),
            }
        )
    return params, members


def _ordering_params(ordering: Any) -> dict[str, str]:
    """The query parameters a Query's ordering member stands for (table 5.2.43-1)."""
    if ordering is None:
        return {}
    if not isinstance(ordering, dict):
        raise BadInput("ordering must be an object with orderBy")
    order_by = ordering.get("orderBy")
    if not isinstance(order_by, list) or not all(isinstance(k, str) for k in order_by):
        raise BadInput("ordering.orderBy must be a list of attribute paths")
    params = {"orderBy": ",".join(order_by)}
    coordinates, geometry = ordering.get("coordinates"), ordering.get("geometry", "Point")
    if not isinstance(geometry, str):
        raise BadInput("ordering.geometry must be a GeoJSON geometry type")
    if coordinates is not None:
        if not isinstance(coordinates, list):
            raise BadInput("ordering.coordinates must be an array")
        params["orderFrom"] = json.dumps({"type": geometry, "coordinates": coordinates})
    if "collation" in ordering:
        params["collation"] = _text(ordering["collation"], "ordering.collation")
    return params


def _aggr_params(aggr: Any) -> dict[str, str]:
    """The aggregation parameters of an aggrParams member (clause 5.2.44)."""
    if aggr is None:
        return {}
    if not isinstance(aggr, dict):
        raise BadInput("aggrParams must be an object with aggrMethods")
    methods = aggr.get("aggrMethods")
    if not isinstance(methods, list) or not methods:
        raise BadInput("aggrParams.aggrMethods must be a non-empty list of methods")
    out = {"aggrMethods": ",".join(_text(m, "aggrParams.aggrMethods[]") for m in methods)}
    if "aggrPeriodDuration" in aggr:
        out["aggrPeriodDuration"] = _text(
            aggr["aggrPeriodDuration"], "aggrParams.aggrPeriodDuration"
        )
    return out


def _temporal_q(temporal_q: Any) -> dict[str, str]:
    """The temporal query parameters of a temporalQ member (clause 5.2.21)."""
    if not isinstance(temporal_q, dict):
        raise BadInput("temporalQ must be an object")
    out: dict[str, str] = {}
    for key in ("timerel", "timeAt", "endTimeAt", "timeproperty", "aggrPeriodDuration"):
        if key in temporal_q:
            out[key] = _text(temporal_q[key], f"temporalQ.{key}")
    if "lastN" in temporal_q:
        last_n = temporal_q["lastN"]
        if type(last_n) is not int:
            raise BadInput("temporalQ.lastN must be a positive integer")
        out["lastN"] = str(last_n)
    if "aggrMethods" in temporal_q:
        methods = temporal_q["aggrMethods"]
        items = methods if isinstance(methods, list) else [methods]
        out["aggrMethods"] = ",".join(_text(m, "temporalQ.aggrMethods[]") for m in items)
    return out


async def _batch_query(request: Request) -> Response:
    body, terms = await _read(request)
    params, members = _query_body(body, temporal=False)
    limit, offset, count = _page_params(request)
    _require_narrow({**request.query_params, **params}, "the query")
    spec = _spec_from(params, terms)
    fmt, sys_attrs = _options(request)
    join = parse_join(params)
    projection = projection_of(
        terms,
        {k: v for k, v in params.items() if k == "attrs"} | members,
        join.level if join else None,
    )
    reader = gated.Reader(request)
    spec = _gated_spec(reader, spec)
    sources = _sources(request, spec)
    page, total = _matches(
        request,
        spec,
        _ordering_of(params, terms),
        limit=offset + limit if sources else limit,
        offset=0 if sources else offset,
        count=count,
    )
    shown = reader.many(page)
    total -= len(page) - len(shown)
    payload = _page(request, reader, terms, (fmt, sys_attrs), shown, projection, join)
    reader.finish()
    partial: dict[str, str] = {}
    if sources:
        forwarded = {**dict(request.query_params), **params, **members}
        payload, total, partial = await _distribute(
            request,
            sources,
            forwarded,
            spec,
            terms,
            payload,
            total,
            reader,
            offset,
            limit,
            count,
            sys_attrs,
        )
    headers = {"NGSILD-Results-Count": str(total)} if count else {}
    return _respond(request, payload, terms, headers=headers | partial)


@router.get("/types")
async def types(request: Request) -> Response:
    """List entity types."""
    _only_parameters(request, {"details", "local", "count"})
    terms = _terms_for_read(request)
    names = [
        terms.compact(t)
        for t in service.entity_types(engine=_engine(request), tenant=_tenant(request))
    ]
    partial: dict[str, str] = {}
    sources = distributed.sources_for(
        request, tenant=_tenant(request), types=None, ids=None, attrs=None
    )
    if sources:
        names, partial = await _remote_types(request, sources, terms, names)
    if request.query_params.get("details", "false").lower() == "true":
        # clause 5.2.25: the id is the type's IRI, with the names of its entities' attributes
        known = service.type_attributes(engine=_engine(request), tenant=_tenant(request))
        payload: Any = []
        for name in names:
            iri = terms.expand(name)
            payload.append(
                {
                    "id": iri,
                    "type": "EntityType",
                    "typeName": name,
                    "attributeNames": [terms.compact(a) for a in known.get(iri, [])],
                }
            )
    else:
        payload = {
            "id": f"urn:ngsi-ld:EntityTypeList:{uuid.uuid4()}",
            "type": "EntityTypeList",
            "typeList": names,
        }
    return _respond(request, payload, terms, headers=partial)


async def _remote_types(
    request: Request, sources: list[distributed.Source], terms: TermMap, names: list[str]
) -> tuple[list[str], dict[str, str]]:
    """Add the entity types the context sources report to the local ones."""
    result = await distributed.fan_out(
        request, sources, path="/types", params={}, terms=terms, want=None
    )
    found = set(names)
    for answer in result.answers:
        for item in answer.items:
            listed = item.get("typeList") if isinstance(item, dict) else None
            if isinstance(listed, list):
                found.update(str(t) for t in listed)
    merged = sorted(found)
    distributed.record(request, result, resource="ngsi-ld:types", rows=len(merged))
    return merged, result.headers()


# :path: an expanded name arrives percent-encoded, its slashes decoded into the path
@router.get("/types/{type_name:path}")
async def type_info(request: Request, type_name: str) -> Response:
    """Describe one entity type: how many entities and which attributes."""
    _only_parameters(request, {"local"})
    terms = _terms_for_read(request)
    details = service.type_details(
        engine=_engine(request), tenant=_tenant(request), type_iri=terms.expand(type_name)
    )
    payload = {
        "id": terms.expand(type_name),
        "type": "EntityTypeInfo",
        "typeName": terms.compact(terms.expand(type_name)),
        "entityCount": details["count"],
        "attributeDetails": [
            {
                "id": name,
                "type": "Attribute",
                "attributeName": terms.compact(name),
                "attributeTypes": kinds,
            }
            for name, kinds in details["attributes"].items()
        ],
    }
    return _respond(request, payload, terms)


@router.get("/attributes")
async def attributes(request: Request) -> Response:
    """List attribute names."""
    _only_parameters(request, {"details", "local", "count"})
    terms = _terms_for_read(request)
    info = service.attribute_names(engine=_engine(request), tenant=_tenant(request))
    names = [terms.compact(n) for n in sorted(info)]
    if request.query_params.get("details", "false").lower() == "true":
        payload: Any = [
            {
                "id": n,
                "type": "Attribute",
                "attributeName": terms.compact(n),
                "typeNames": [terms.compact(t) for t in sorted(v["typeNames"])],
            }
            for n, v in sorted(info.items())
        ]
    else:
        payload = {
            "id": f"urn:ngsi-ld:AttributeList:{uuid.uuid4()}",
            "type": "AttributeList",
            "attributeList": names,
        }
    return _respond(request, payload, terms)


@router.get("/attributes/{attr:path}")
async def attribute_info(request: Request, attr: str) -> Response:
    """Describe one attribute."""
    _only_parameters(request, {"local"})
    terms = _terms_for_read(request)
    info = service.attribute_names(engine=_engine(request), tenant=_tenant(request))
    name = terms.expand(attr)
    if name not in info:
        raise NotFound(f"no entity has attribute {attr}")
    v = info[name]
    payload = {
        "id": name,
        "type": "Attribute",
        "attributeName": terms.compact(name),
        "attributeCount": v["count"],
        "attributeTypes": sorted(v["attributeTypes"]),
        "typeNames": [terms.compact(t) for t in sorted(v["typeNames"])],
    }
    return _respond(request, payload, terms)


@router.get("/jsonldContexts")
async def list_contexts(request: Request) -> Response:
    """List the @contexts this node holds: the core ones, hosted and cached."""
    store = contexts(request)
    urls = list(store.core) + list(store.hosted) + list(store.cached)
    if request.query_params.get("details", "false").lower() == "true":
        kinds = {**{u: "Cached" for u in store.cached}, **{u: "Hosted" for u in store.hosted}}
        return JSONResponse(
            [{"URL": u, "kind": kinds.get(u, "Cached"), "localId": u} for u in urls]
        )
    return JSONResponse(urls)


@router.post("/jsonldContexts", status_code=201)
async def add_context(request: Request) -> Response:
    """Host a @context document on this node."""
    body = await _body_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("@context"), (dict, list, str)):
        raise BadInput("a hosted context is a JSON object with @context")
    local_id = uuid.uuid4().hex
    url = str(request.url_for("serve_context", context_id=local_id))
    store = contexts(request)
    store.host(url, body)
    store.term_map(body["@context"])  # refuse a context that does not resolve now, not later
    return Response(status_code=201, headers={"Location": url})


@router.get("/jsonldContexts/{context_id}", name="serve_context")
async def serve_context(request: Request, context_id: str) -> Response:
    """Serve a hosted (or core) @context document."""
    store = contexts(request)
    for url, document in list(store.hosted.items()) + list(store.core.items()):
        if url.rstrip("/").endswith("/" + context_id) or url == context_id:
            return JSONResponse(document, media_type="application/ld+json")
    raise NotFound(f"no @context {context_id}")


@router.delete("/jsonldContexts/{context_id}", status_code=204)
async def delete_context(request: Request, context_id: str) -> Response:
    """Remove a hosted or cached @context."""
    store = contexts(request)
    for url in list(store.hosted) + list(store.cached):
        if url.rstrip("/").endswith("/" + context_id) or url == context_id:
            store.forget(url)
            return Response(status_code=204)
    if any(context_id in url for url in store.core):
        raise BadInput("the core @context cannot be deleted")
    raise NotFound(f"no @context {context_id}")


def unsupported(_request: Request) -> None:
    """Refuse NGSI-LD operations this node does not offer yet."""
    raise OperationNotSupported("this NGSI-LD operation is not offered by this node")


# the simplified temporal representation (clause 4.5.9): (member of the pairs, stored member)
_SIMPLIFIED = {
    "Relationship": ("objects", "object"),
    "ListRelationship": ("objectLists", "objectList"),
    "ListProperty": ("valueLists", "valueList"),
    "LanguageProperty": ("languageMaps", "languageMap"),
    "JsonProperty": ("jsons", "json"),
    "VocabProperty": ("vocabs", "vocab"),
}


def _simplified_value(instance: dict[str, Any], member: str, terms: TermMap) -> Any:
    """The first element of a pair: bare for lists and values, a one-key object for the
    members whose value is itself an object or a term (clause 4.5.9)."""
    value = instance.get(member)
    if member in ("languageMap", "json", "vocab"):
        return {member: _bare_value(value, member, terms)}
    return _bare_value(value, member, terms)


def _bare_value(value: Any, member: str, terms: TermMap) -> Any:
    if member == "objectList" and isinstance(value, list):  # the bare ordered ids
        return [i.get("object") if isinstance(i, dict) else i for i in value]
    if member == "vocab":  # vocab terms are stored expanded and read compacted
        if isinstance(value, list):
            return [terms.compact(str(v)) for v in value]
        return terms.compact(str(value)) if value is not None else None
    return value


def _temporal_payload(
    entity: dict[str, Any],
    series: dict[str, list[tuple[Any, dict[str, Any]]]],
    terms: TermMap,
    *,
    mode: str,
    tq: temporal.TemporalQuery,
    sys_attrs: bool,
) -> dict[str, Any]:
    """Render one entity's history: instances, temporalValues, or aggregatedValues."""
    rendered = render(entity, terms, attrs=set())
    for name, points in series.items():
        current = entity.get(name)
        now = current.get("type", "Property") if isinstance(current, dict) else "Property"
        kind = points[-1][1].get("type", "Property") if points else now
        # the scope's history (scope_history) shows as a Property named scope
        short = name if name == scope_history.SCOPE else terms.compact(name)
        if mode == "aggregatedValues":
            if name != scope_history.SCOPE:  # scopes are not aggregated
                rendered[short] = {"type": kind, **temporal.aggregate(points, tq)}
        elif mode == "temporalValues":
            # clause 4.5.9: each attribute type has its own member and value in the pairs,
            # and each datasetId its own object
            key, member = _SIMPLIFIED.get(kind, ("values", "value"))
            by_dataset: dict[Any, list[Any]] = {}
            for at, inst in points:
                by_dataset.setdefault(inst.get("datasetId"), []).append(
                    [
                        _simplified_value(inst, member, terms),
                        inst.get("observedAt") or temporal._iso(at),
                    ]
                )
            forms = [
                {"type": kind, **({"datasetId": d} if d is not None else {}), key: values}
                for d, values in by_dataset.items()
            ] or [{"type": kind, key: []}]  # every instance fell outside a cut answer
            rendered[short] = forms[0] if len(forms) == 1 else forms
        else:
            rendered[short] = [_temporal_instance(inst, terms, sys_attrs) for _, inst in points]
    return rendered


def _temporal_instance(inst: dict[str, Any], terms: TermMap, sys_attrs: bool) -> Any:
    """One instance of a temporal answer; a deletion keeps its deletedAt (its time axis)."""
    shown = render_instance(inst, terms, sys_attrs=sys_attrs)
    if "deletedAt" in inst and isinstance(shown, dict):
        shown["deletedAt"] = inst["deletedAt"]
    return shown


def _series_of_datasets(
    series: dict[str, dict[str, list[tuple[Any, dict[str, Any]]]]], datasets: list[str] | None
) -> dict[str, dict[str, list[tuple[Any, dict[str, Any]]]]]:
    """Keep the instances of the datasetIds asked for ("@none": the default instance)."""
    if not datasets:
        return series
    wanted = {None if d == "@none" else d for d in datasets}
    out: dict[str, dict[str, list[tuple[Any, dict[str, Any]]]]] = {}
    for entity_id, attributes in series.items():
        out[entity_id] = {
            name: chosen
            for name, points in attributes.items()
            if (chosen := [p for p in points if p[1].get("datasetId") in wanted])
        }
    return out


def _temporal_mode(request: Request) -> tuple[str, bool]:
    opts = {o.strip() for o in request.query_params.get("options", "").split(",") if o.strip()}
    fmt = request.query_params.get("format")
    unknown = opts - {"temporalValues", "aggregatedValues", "sysAttrs", "normalized"}
    if unknown:
        raise _invalid(f"unknown options {sorted(unknown)}")
    mode = fmt or (
        "aggregatedValues"
        if "aggregatedValues" in opts
        else "temporalValues"
        if "temporalValues" in opts
        else "normalized"
    )
    if mode not in ("aggregatedValues", "temporalValues", "normalized"):
        raise _invalid(f"unknown temporal format {mode!r}")
    return mode, "sysAttrs" in opts


@router.get("/temporal/entities")
async def temporal_query(request: Request) -> Response:
    """Query the temporal history of entities (timerel, lastN, aggregation)."""
    terms = _terms_for_read(request)
    params = dict(request.query_params)
    mode, sys_attrs = _temporal_mode(request)
    return _temporal_entities(request, terms, params, mode, sys_attrs)


@router.post("/temporal/entityOperations/query")
async def temporal_batch_query(request: Request) -> Response:
    """Query the temporal history of entities with a Query body (clause 5.7.5)."""
    body, terms = await _read(request)
    params, members = _query_body(body, temporal=True)
    mode, sys_attrs = _temporal_mode(request)
    if "aggrMethods" in params and mode == "normalized":
        mode = "aggregatedValues"  # the methods ask for an aggregated representation
    return _temporal_entities(request, terms, params | members, mode, sys_attrs)


def _temporal_entities(
    request: Request, terms: TermMap, params: dict[str, str], mode: str, sys_attrs: bool
) -> Response:
    """Run a temporal query given as parameters (GET) or built from a Query body (POST)."""
    tq = temporal.parse_query(params, aggregated=mode == "aggregatedValues")
    projection = projection_of(terms, params)
    limit, offset, count = _page_params(request)
    _require_narrow({**request.query_params, **params}, "the temporal query")
    spec = _spec_from(params, terms)
    order = _ordering_of(params, terms)
    if order is not None and any(k.member != "id" for k in order.keys):
        # clause 5.7.4.4: temporal results are ordered by entity id only
        raise BadInput("a temporal query is ordered by id only (orderBy=id or id;desc)")
    engine, tenant = _engine(request), _tenant(request)
    reader = gated.Reader(request, action="ngsild.temporal")
    spec = _gated_spec(reader, spec)
    scoped = spec.scope
    if scoped is None:
        page, total = _matches(request, spec, order, limit=limit, offset=offset, count=count)
    else:
        # scopeQ asks which scope was valid in the time asked for, not the current one
        unscoped = dataclasses.replace(spec, scope=None)
        page, windows = _scoped_in_time(request, unscoped, order, tq, scoped)
        total = len(page)
        page = page[offset : offset + limit]
    shown = reader.many(page)
    total -= len(page) - len(shown)
    page = shown
    attrs = _gated_attrs(reader, page, sorted(projection.attrs) if projection.attrs else None)
    reader.finish()
    series = temporal.history(
        engine=engine, tenant=tenant, entity_ids=[e["id"] for e in page], attributes=attrs, tq=tq
    )
    if scoped is not None:
        series = _while_scoped(series, windows)
    series = _series_of_datasets(series, _split(params.get("datasetId")))
    if tq.timerel is not None:
        # an entity with no instance in the asked time window has no temporal evolution there
        kept = [e for e in page if any(series.get(e["id"], {}).values())]
        total -= len(page) - len(kept)
        page = kept
    ranged = _cut(request, series, tq, mode)
    rendered = (
        _temporal_payload(e, series.get(e["id"], {}), terms, mode=mode, tq=tq, sys_attrs=sys_attrs)
        for e in page
    )
    payload = [p for p in (projection.apply(r) for r in rendered) if p]
    headers = {"NGSILD-Results-Count": str(total)} if count else {}
    if ranged is not None:
        headers["Content-Range"] = ranged.header()
    return _respond(request, payload, terms, status=206 if ranged else 200, headers=headers)


def _scoped_in_time(
    request: Request,
    spec: service.EntityQuery,
    order: ordering.Ordering | None,
    tq: temporal.TemporalQuery,
    groups: list[list[str]],
) -> tuple[list[dict[str, Any]], dict[str, list[scope_history.Window]]]:
    """The entities whose scope matched scopeQ while valid in the query's time (4.18, 5.7.4.4),
    with the windows in which it did."""
    candidates, _ = _matches(request, spec, order, limit=MAX_ORDERED + 1, offset=0, count=False)
    if len(candidates) > MAX_ORDERED:
        raise _TooManyResults(
            f"a temporal scopeQ looks at most {MAX_ORDERED} matching entities: narrow the query"
        )
    histories = temporal.history(
        engine=_engine(request),
        tenant=_tenant(request),
        entity_ids=[e["id"] for e in candidates],
        attributes=[scope_history.SCOPE],
        tq=temporal.TemporalQuery(),
    )
    window = scope_history.window_of(tq.timerel, tq.time_at, tq.end_time_at)
    kept, windows = [], {}
    for entity in candidates:
        points = histories.get(entity["id"], {}).get(scope_history.SCOPE, [])
        found = scope_history.matching_windows(
            points, entity.get("scope", []), groups, window, _scopes_fit
        )
        if found:
            kept.append(entity)
            windows[entity["id"]] = found
    return kept, windows


def _scopes_fit(scopes: list[str], groups: list[list[str]]) -> bool:
    return service.scope_matches({"scope": scopes}, groups)


def _while_scoped(
    series: temporal.Series, windows: dict[str, list[scope_history.Window]]
) -> temporal.Series:
    """Keep the attribute instances observed while a matching scope was valid (C.5.16)."""
    out: temporal.Series = {}
    for entity_id, attributes in series.items():
        spans = windows.get(entity_id, [])
        out[entity_id] = {
            name: points
            if name == scope_history.SCOPE
            else [p for p in points if scope_history.within(p[0], spans)]
            for name, points in attributes.items()
        }
    return out


def _cut(
    request: Request, series: temporal.Series, tq: temporal.TemporalQuery, mode: str
) -> temporal.TimeRange | None:
    """Cut a long history to the node's temporal limit (aggregates cover all of it)."""
    if mode == "aggregatedValues":
        return None
    return temporal.cut(series, tq, request.app.state.settings.ngsild_temporal_limit)


@router.get("/temporal/entities/{entity_id}")
async def temporal_retrieve(request: Request, entity_id: str) -> Response:
    """Return the temporal history of one entity."""
    validate_entity_id(entity_id)
    terms = _terms_for_read(request)
    mode, sys_attrs = _temporal_mode(request)
    tq = temporal.parse_query(dict(request.query_params), aggregated=mode == "aggregatedValues")
    engine, tenant = _engine(request), _tenant(request)
    projection = projection_of(terms, request.query_params)
    entity = service.get_entity(engine=engine, tenant=tenant, entity_id=entity_id)
    reader = gated.Reader(request, action="ngsild.temporal")
    entity = reader.one(entity)
    if projection.attrs and not projection.attrs & entity.keys():
        raise NotFound(f"entity {entity_id} has none of the attributes asked for")
    attrs = _gated_attrs(reader, [entity], sorted(projection.attrs) if projection.attrs else None)
    reader.finish()
    if mode == "aggregatedValues":
        aggregated = _aggregate_in_sql(engine, tenant, entity, attrs, terms, tq)
        if aggregated is not None:
            return _respond(request, projection.apply(aggregated), terms)
    series = temporal.history(
        engine=engine, tenant=tenant, entity_ids=[entity_id], attributes=attrs, tq=tq
    )
    series = _series_of_datasets(series, _split(request.query_params.get("datasetId")))
    ranged = _cut(request, series, tq, mode)
    payload = _temporal_payload(
        entity, series.get(entity_id, {}), terms, mode=mode, tq=tq, sys_attrs=sys_attrs
    )
    shown = projection.apply(payload)
    if not shown:
        # clause 5.7.3.4, as for the current entity: nothing of it is left to return
        raise NotFound(f"entity {entity_id} has none of the members picked")
    if ranged is None:
        return _respond(request, shown, terms)
    return _respond(request, shown, terms, status=206, headers={"Content-Range": ranged.header()})


def _aggregate_in_sql(
    engine: Engine,
    tenant: str,
    entity: dict[str, Any],
    attrs: list[str] | None,
    terms: TermMap,
    tq: temporal.TemporalQuery,
) -> dict[str, Any] | None:
    """Aggregate numeric attributes in the database, so months of readings stay there."""
    payload = render(entity, terms, attrs=set())
    names = attrs or temporal.attributes_of(engine=engine, tenant=tenant, entity_id=entity["id"])
    for name in names:
        first = temporal.first_time(
            engine=engine, tenant=tenant, entity_id=entity["id"], attribute=name
        )
        if first is None:
            continue
        result = temporal.aggregate_in_sql(
            engine=engine, tenant=tenant, entity_id=entity["id"], attribute=name, tq=tq, first=first
        )
        if result is None:
            return None
        current = entity.get(name)
        kind = current.get("type", "Property") if isinstance(current, dict) else "Property"
        payload[terms.compact(name)] = {"type": kind, **result}
    return payload


@router.post("/temporal/entities")
async def temporal_upsert(request: Request) -> Response:
    """Create or extend a temporal entity: every instance given goes into the history."""
    body, terms = await _read(request)
    if not isinstance(body, dict):
        raise BadInput("a temporal entity must be a JSON object")
    # the scope of a temporal entity may be its history: Property instances (clause 4.18)
    scopes = scope_history.temporal_instances(body["scope"]) if "scope" in body else []
    entity = expand_entity({k: v for k, v in body.items() if k != "scope"}, terms, temporal=True)
    created = service.upsert_temporal(
        engine=_engine(request), tenant=_tenant(request), entity=entity, scopes=scopes
    )
    if created:
        return Response(
            status_code=201,
            headers={"Location": f"{PREFIX}/temporal/entities/{_iri_path(entity['id'])}"},
        )
    return Response(status_code=204)


@router.delete("/temporal/entities/{entity_id}", status_code=204)
async def temporal_delete(request: Request, entity_id: str) -> Response:
    """Delete the temporal representation of an entity (clause 5.6.16)."""
    validate_entity_id(entity_id)
    service.delete_temporal(engine=_engine(request), tenant=_tenant(request), entity_id=entity_id)
    return Response(status_code=204)


@router.post("/temporal/entities/{entity_id}/attrs", status_code=204)
async def temporal_add_attributes(request: Request, entity_id: str) -> Response:
    """Add attribute instances to a temporal representation (clause 5.6.12)."""
    validate_entity_id(entity_id)
    body, terms = await _read(request)
    fragment = _fragment(body, entity_id)
    entity = {"id": entity_id, **expand_attributes(fragment, terms, temporal=True)}
    service.upsert_temporal(
        engine=_engine(request), tenant=_tenant(request), entity=entity, must_exist=True
    )
    return Response(status_code=204)


@router.delete("/temporal/entities/{entity_id}/attrs/{attr}", status_code=204)
async def temporal_delete_attribute(request: Request, entity_id: str, attr: str) -> Response:
    """Delete an attribute from a temporal representation (clause 5.6.13)."""
    validate_entity_id(entity_id)
    validate_attribute_name(attr)
    terms = _terms_for_read(request)
    service.delete_temporal_attribute(
        engine=_engine(request),
        tenant=_tenant(request),
        entity_id=entity_id,
        name=terms.expand(attr),
        dataset_id=request.query_params.get("datasetId"),
        delete_all=request.query_params.get("deleteAll", "false").lower() == "true",
    )
    return Response(status_code=204)


@router.patch("/temporal/entities/{entity_id}/attrs/{attr}/{instance_id:path}", status_code=204)
async def temporal_modify_instance(
    request: Request, entity_id: str, attr: str, instance_id: str
) -> Response:
    """Modify one attribute instance of a temporal representation (clause 5.6.14)."""
    validate_entity_id(entity_id)
    validate_attribute_name(attr)
    seq = temporal.instance_seq(instance_id)
    body, terms = await _read(request)
    if not isinstance(body, dict):
        raise BadInput("the body must be an attribute instance")
    raw = body.get(attr, {k: v for k, v in body.items() if k != "@context"})
    if isinstance(raw, list) and len(raw) == 1:
        raw = raw[0]
    if not isinstance(raw, dict):
        raise BadInput("the body must be one attribute instance")
    expanded = expand_attributes({attr: raw}, terms, temporal=True)
    name = terms.expand(attr)
    service.change_instance(
        engine=_engine(request),
        tenant=_tenant(request),
        entity_id=entity_id,
        name=name,
        seq=seq,
        fragment=expanded[name],
    )
    return Response(status_code=204)


@router.delete("/temporal/entities/{entity_id}/attrs/{attr}/{instance_id:path}", status_code=204)
async def temporal_delete_instance(
    request: Request, entity_id: str, attr: str, instance_id: str
) -> Response:
    """Delete one attribute instance of a temporal representation (clause 5.6.15)."""
    validate_entity_id(entity_id)
    validate_attribute_name(attr)
    seq = temporal.instance_seq(instance_id)
    terms = _terms_for_read(request)
    service.change_instance(
        engine=_engine(request),
        tenant=_tenant(request),
        entity_id=entity_id,
        name=terms.expand(attr),
        seq=seq,
        fragment=None,
    )
    return Response(status_code=204)


def _public_subscription(sub: dict[str, Any], terms: TermMap) -> dict[str, Any]:
    """Compact a stored subscription for output."""
    out = {k: v for k, v in sub.items() if not k.startswith("_") and k != "qNames"}
    if "entities" in out:
        out["entities"] = [{**s, "type": terms.compact(s["type"])} for s in out["entities"]]
    if "watchedAttributes" in out:
        out["watchedAttributes"] = [terms.compact(w) for w in out["watchedAttributes"]]
    notification = dict(out.get("notification", {}))
    if "attributes" in notification:
        notification["attributes"] = [terms.compact(a) for a in notification["attributes"]]
    out["notification"] = notification
    if "geoQ" in out:
        out["geoQ"] = {**out["geoQ"], "geoproperty": terms.compact(out["geoQ"]["geoproperty"])}
    return out


@router.post("/subscriptions", status_code=201)
async def create_subscription(request: Request) -> Response:
    """Create a subscription."""
    body, terms = await _read(request)
    sub = subscriptions.validate(body, terms)
    if isinstance(sub.get("jsonldContext"), str):
        # the notifications will be compacted with it: one that cannot be had is refused now
        await asyncio.to_thread(contexts(request).term_map, sub["jsonldContext"])
    # notifications carry data: they are gated as reads of whoever made the subscription
    sub["_reader"] = gated.reader_claims(request)
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    context = context_from_request(link=request.headers.get("link"), content_type=media, body=body)
    sub_id = subscriptions.create(
        engine=_engine(request), tenant=_tenant(request), sub=sub, context=context
    )
    return Response(status_code=201, headers={"Location": f"{PREFIX}/subscriptions/{sub_id}"})


@router.get("/subscriptions")
async def list_subscriptions(request: Request) -> Response:
    """List subscriptions."""
    terms = _terms_for_read(request)
    limit, offset, count = _page_params(request)
    subs, total = subscriptions.list_all(
        engine=_engine(request), tenant=_tenant(request), limit=limit, offset=offset
    )
    headers = {"NGSILD-Results-Count": str(total)} if count else None
    return _respond(
        request,
        [_public_subscription(s, terms) for s in subs],
        terms,
        headers=headers,
        page=(offset, limit, total),
    )


@router.get("/subscriptions/{sub_id}")
async def retrieve_subscription(request: Request, sub_id: str) -> Response:
    """Retrieve a subscription with its delivery status."""
    validate_entity_id(sub_id)
    terms = _terms_for_read(request)
    sub = subscriptions.get(engine=_engine(request), tenant=_tenant(request), sub_id=sub_id)
    return _respond(request, _public_subscription(sub, terms), terms)


@router.patch("/subscriptions/{sub_id}", status_code=204)
async def update_subscription(request: Request, sub_id: str) -> Response:
    """Update members of a subscription."""
    validate_entity_id(sub_id)
    body, terms = await _read(request)
    fragment = subscriptions.validate(body, terms, partial=True)
    # whoever changes a subscription (its endpoint, say) is who it reads as from now on
    fragment["_reader"] = gated.reader_claims(request)
    subscriptions.patch(
        engine=_engine(request), tenant=_tenant(request), sub_id=sub_id, fragment=fragment
    )
    return Response(status_code=204)


@router.delete("/subscriptions/{sub_id}", status_code=204)
async def delete_subscription(request: Request, sub_id: str) -> Response:
    """Delete a subscription."""
    validate_entity_id(sub_id)
    subscriptions.remove(engine=_engine(request), tenant=_tenant(request), sub_id=sub_id)
    return Response(status_code=204)


# context source registrations share this router's prefix and request checks
from citybrain.hub.ngsild import csource  # noqa: E402

router.include_router(csource.router)
