"""The fast lane of a sensor's partial update: PATCH /entities/{id}/attrs/{attr} (5.6.4).

Sensors update one attribute at a time at thousands a second, and FastAPI's layers (route
matching across every router, dependency resolution, the request and response objects) cost
more CPU than the update itself. The lane (core/fast_lane.py) answers the common case, a
JSON fragment in the default tenant with the core @context and no query, with the same
checks and the same service function as the route in api.py; anything else (a Link header,
a tenant, ld+json, a datasetId, a query, a body that is not a JSON object) it declines, and
the route answers as before.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import orjson
from starlette.types import Scope

from citybrain.core.fast_lane import Answer
from citybrain.governance.principal import Principal
from citybrain.hub.ngsild import commits, gated, service
from citybrain.hub.ngsild.jsonld import ContextStore, validate_entity_id

PATH = re.compile(r"/ngsi-ld/v1/entities/([^/]+)/attrs/([^/]+)")
# headers that take a request out of the common case (tenant, @context, streamed body)
_DECLINE = frozenset((b"link", b"ngsild-tenant", b"transfer-encoding"))


def _common_case(scope: Scope) -> bool:
    """True for a JSON body with no tenant, Link or chunked encoding and no query."""
    if scope.get("query_string") or scope.get("root_path"):
        return False
    content_type = None
    for name, value in scope.get("headers") or ():
        if name in _DECLINE:
            return False
        if name == b"content-type":
            content_type = value
    return content_type == b"application/json"


async def partial_update(app: Any, scope: Scope, raw: bytes, principal: Principal) -> Answer | None:
    """Partially update one attribute of an entity, or decline (None) to the FastAPI route."""
    found = PATH.fullmatch(scope["path"])
    if found is None or not _common_case(scope):
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None  # the route words the error
    if not isinstance(body, dict) or "@context" in body or "datasetId" in body:
        return None
    entity_id, attr = found.group(1), found.group(2)
    validate_entity_id(entity_id)
    store: ContextStore | None = getattr(app.state, "ngsild_contexts", None)
    if store is None:
        store = app.state.ngsild_contexts = ContextStore()
    engine = app.state.engine
    # as the router's bind_writer does: the store checks the writer's entity-type ownership
    gated.writer.set((principal, engine))
    work = partial(
        service.partial_update_in,
        tenant=service.DEFAULT_TENANT,
        entity_id=entity_id,
        attr=attr,
        fragment=body,
        terms=store.term_map(None),
    )
    await commits.committer(app.state, engine).run(work)
    return 204, [], b""
