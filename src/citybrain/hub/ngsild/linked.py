"""Linked Entity retrieval (clause 4.5.23): `join=inline|flat` with `joinLevel`.

A read that asks for it follows the Relationships of the entities it returns to the entities
they name, up to `joinLevel` hops. `inline` puts each linked entity inside the Relationship
(`entity`, or `entityList` for a ListRelationship; in keyValues the entity replaces the
object), `flat` returns the linked entities after the others, each once. Linked entities are
read through the same governance gate as the entities asked for, so an entity the reader may
not see is not followed, and a Relationship to an entity that does not exist is left as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from citybrain.hub.ngsild import gated, service
from citybrain.hub.ngsild.entities import ENTITY_MEMBERS, instances
from citybrain.hub.ngsild.jsonld import TermMap
from citybrain.hub.ngsild.projection import Join, Projection

_RELATIONSHIPS = ("Relationship", "ListRelationship")


def _targets(instance: dict[str, Any]) -> list[str]:
    """The entity ids one Relationship or ListRelationship instance names."""
    found = instance.get("object", instance.get("objectList"))
    items = found if isinstance(found, list) else [found]
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict) and isinstance(item.get("object"), str):
            out.append(item["object"])  # an objectList item in its expanded form
    return out


def relationships(stored: dict[str, Any], terms: TermMap) -> dict[str, list[str]]:
    """Return the rendered name of each Relationship of a stored entity and its targets."""
    out: dict[str, list[str]] = {}
    for name, attr in stored.items():
        if name in ENTITY_MEMBERS:
            continue
        targets = [
            t for i in instances(attr) if i.get("type") in _RELATIONSHIPS for t in _targets(i)
        ]
        if targets:
            out[terms.compact(name)] = targets
    return out


Render = Callable[[dict[str, Any], Projection], dict[str, Any]]


class Joiner:
    """Follows the Relationships of rendered entities, reading linked ones through the gate."""

    def __init__(
        self,
        *,
        engine: Engine,
        tenant: str,
        reader: gated.Reader | None,
        terms: TermMap,
        fmt: str,
        render: Render,
        join: Join,
    ) -> None:
        self.engine = engine
        self.tenant = tenant
        self.reader = reader
        self.terms = terms
        self.fmt = fmt
        self.render = render
        self.join = join
        self._cache: dict[str, dict[str, Any] | None] = {}

    def _load(self, ids: list[str]) -> None:
        """Read the entities not read yet in one query, as the reader may see them."""
        wanted = [i for i in dict.fromkeys(ids) if i not in self._cache]
        if not wanted:
            return
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            page, _ = service.query_entities(
                engine=self.engine,
                tenant=self.tenant,
                spec=service.EntityQuery(ids=chunk),
                limit=len(chunk),
                offset=0,
                count=False,
            )
            for entity in page:
                # a subscription of a local process has no reader: it sees every entity
                self._cache[entity["id"]] = (
                    self.reader.entity(entity) if self.reader is not None else entity
                )
            for entity_id in chunk:
                self._cache.setdefault(entity_id, None)

    def expand(
        self, pairs: list[tuple[dict[str, Any], dict[str, Any]]], projection: Projection
    ) -> list[dict[str, Any]]:
        """Join linked entities into the rendered ones; return the flat extras (in order)."""
        flat: list[dict[str, Any]] = []
        seen = {rendered.get("id") for _, rendered in pairs}
        self._walk(pairs, [projection] * len(pairs), self.join.level, flat, seen)
        return flat

    def _walk(
        self,
        pairs: list[tuple[dict[str, Any], dict[str, Any]]],
        projections: list[Projection],
        level: int,
        flat: list[dict[str, Any]],
        seen: set[Any],
    ) -> None:
        if level <= 0 or not pairs:
            return
        links: list[tuple[dict[str, Any], str, list[str], Projection]] = []
        for (stored, rendered), projection in zip(pairs, projections, strict=True):
            for name, targets in relationships(stored, self.terms).items():
                if name in rendered:  # a Relationship the projection left out is not followed
                    links.append((rendered, name, targets, projection.of_linked(name)))
        self._load([t for _, _, targets, _ in links for t in targets])
        following: list[tuple[dict[str, Any], dict[str, Any]]] = []
        following_projections: list[Projection] = []
        for rendered, name, targets, inner in links:
            joined = []
            for target in targets:
                found = self._cache.get(target)
                if found is None:
                    continue
                shown = self.render(found, inner)
                joined.append((target, shown))
                if self.join.mode == "inline" or target not in seen:
                    seen.add(target)
                    following.append((found, shown))
                    following_projections.append(inner)
                    if self.join.mode == "flat":
                        flat.append(shown)
            if self.join.mode == "inline" and joined:
                self._inline(rendered, name, joined)
        self._walk(following, following_projections, level - 1, flat, seen)

    def _inline(
        self, rendered: dict[str, Any], name: str, joined: list[tuple[str, dict[str, Any]]]
    ) -> None:
        """Put the linked entities into the rendered Relationship."""
        by_id = dict(joined)
        value = rendered[name]
        if self.fmt == "keyValues":
            if isinstance(value, list):
                rendered[name] = [by_id.get(v, v) if isinstance(v, str) else v for v in value]
            elif isinstance(value, str) and value in by_id:
                rendered[name] = by_id[value]
            return
        for instance in value if isinstance(value, list) else [value]:
            if not isinstance(instance, dict):
                continue
            target = instance.get("object")
            if isinstance(target, str) and target in by_id:
                instance["entity"] = by_id[target]
            elif "objectList" in instance:
                items = instance["objectList"]
                ids = [
                    i if isinstance(i, str) else i.get("object")
                    for i in (items if isinstance(items, list) else [items])
                    if isinstance(i, str | dict)
                ]
                instance["entityList"] = [by_id[i] for i in ids if i in by_id]
