"""Ordering of query results (clause 4.23): orderBy, distance ordering and collation.

`orderBy` lists paths, each with `;asc` (the default), `;desc`, `;dist-asc` or `;dist-desc`:
an entity member (`id`, `type`, `createdAt`, `modifiedAt`), an attribute (its value or
object), a sub-attribute or meta field (`name.subProperty`, `name.createdAt`) or a member of a
compound value (`address[city]`). Values of different kinds rank numbers, then strings, then
booleans, then anything else; an entity without the value comes last in either direction.
Distance ordering measures from `orderFrom` (a GET parameter) or `coordinates` (in a query's
`ordering`) to the GeoProperty the path names. Strings compare by code point unless a
`collation` (a BCP 47 tag) is given: then by the root collation (letters first without their
accents and case, accents then case breaking ties), which is what CityBrain offers for every
tag; language-specific tailorings are not applied.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from citybrain.core.errors import BadInput
from citybrain.hub.ngsild import geoquery, query

DIRECTIONS = ("asc", "desc", "dist-asc", "dist-desc")
_MEMBERS = ("id", "type", "createdAt", "modifiedAt", "scope")
# BCP 47: a language (or "und") and subtags of letters and digits
_BCP47 = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")


@dataclass(frozen=True)
class OrderKey:
    """One path of orderBy and its direction."""

    member: str | None  # an entity member, or None for an attribute path
    path: query.Path | None
    direction: str


@dataclass(frozen=True)
class Ordering:
    """The keys, the reference geometry of distance keys and the collation of strings."""

    keys: tuple[OrderKey, ...]
    origin: BaseGeometry | None = None
    collation: str | None = None


def _key(text: str, expand: Callable[[str], str]) -> OrderKey:
    path_text, _, direction = text.strip().partition(";")
    direction = direction or "asc"
    if direction not in DIRECTIONS:
        raise BadInput(f"orderBy: the direction of {text!r} must be one of {', '.join(DIRECTIONS)}")
    if path_text in _MEMBERS:
        if direction.startswith("dist"):
            raise BadInput(f"orderBy: {path_text} has no distance")
        return OrderKey(path_text, None, direction)
    try:
        path = query.parse_path(path_text)
    except BadInput:
        raise BadInput(f"orderBy: {path_text!r} is not an attribute path") from None
    sub = tuple(s if s in query.META else expand(s) for s in path.sub)
    return OrderKey(None, query.Path(expand(path.attribute), sub, path.keys), direction)


def parse_ordering(
    order_by: str | None,
    *,
    expand: Callable[[str], str],
    order_from: str | None = None,
    collation: str | None = None,
) -> Ordering | None:
    """Check orderBy with its reference geometry and collation; None when nothing is ordered.

    order_from: JSON text, the coordinates of a Point or a GeoJSON geometry object.
    """
    if collation is not None and not _BCP47.fullmatch(collation):
        raise BadInput(f"collation must be a BCP 47 language tag, not {collation!r}")
    if not order_by:
        if order_from is not None:
            raise BadInput("orderFrom needs orderBy")
        return None
    keys = tuple(_key(k, expand) for k in order_by.split(",") if k.strip())
    if not keys:
        raise BadInput("orderBy names no path")
    origin = None
    if any(k.direction.startswith("dist") for k in keys):
        if order_from is None:
            raise BadInput("ordering by distance needs orderFrom, the coordinates to measure from")
        try:
            reference = json.loads(order_from)
        except json.JSONDecodeError:
            raise BadInput("orderFrom is not a JSON array of coordinates") from None
        if isinstance(reference, dict):
            origin = geoquery.parse_geojson(
                str(reference.get("type")), reference.get("coordinates")
            )
        elif isinstance(reference, list):
            origin = geoquery.parse_geojson("Point", reference)
        else:
            raise BadInput("orderFrom must be an array of coordinates")
    return Ordering(keys, origin, collation)


def _collation_key(text: str) -> tuple[str, str, str]:
    """Root collation, simplified: base letters without case, then accents, then case."""
    decomposed = unicodedata.normalize("NFD", text)
    base = "".join(c for c in decomposed if not unicodedata.combining(c))
    marks = "".join(c for c in decomposed if unicodedata.combining(c))
    # lower case sorts before upper case at the third level
    return base.casefold(), marks, base.swapcase()


def _rank(value: Any, collated: bool) -> tuple[int, Any]:
    """Numbers < strings < booleans < anything else (clause 4.23.2)."""
    if isinstance(value, bool):
        return 2, value
    if isinstance(value, int | float):
        return 0, value
    if isinstance(value, str):
        return 1, _collation_key(value) if collated else value
    return 3, json.dumps(value, sort_keys=True, default=str)


def _distance(value: Any, origin: BaseGeometry) -> float | None:
    try:
        return geoquery.metres(shape(value), origin)
    except (ValueError, TypeError, AttributeError, IndexError):
        return None


def _value(entity: dict[str, Any], key: OrderKey, ordering: Ordering) -> tuple[int, Any] | None:
    """The comparable value of one key in an entity, or None when it has none."""
    if key.member is not None:
        found = entity.get(key.member)
        if isinstance(found, list):
            found = found[0] if found else None
        return None if found is None else _rank(found, ordering.collation is not None)
    assert key.path is not None
    values = query.values(entity, key.path)
    if not values:
        return None
    if key.direction.startswith("dist"):
        assert ordering.origin is not None
        # a GeoJSON value is a dict: query.values keeps it whole
        distances = [d for v in values if (d := _distance(v, ordering.origin)) is not None]
        return (0, min(distances)) if distances else None
    return _rank(values[0], ordering.collation is not None)


def order(entities: list[dict[str, Any]], ordering: Ordering) -> list[dict[str, Any]]:
    """Sort entities (stored form) by the ordering; ties keep their order."""
    cached = [[_value(e, k, ordering) for k in ordering.keys] for e in entities]

    def compare(a: int, b: int) -> int:
        for i, key in enumerate(ordering.keys):
            va, vb = cached[a][i], cached[b][i]
            if va is None or vb is None:
                if va is vb:
                    continue
                return 1 if va is None else -1  # absent last, whatever the direction
            if va == vb:
                continue
            try:
                result = -1 if va < vb else 1
            except TypeError:
                result = -1 if str(va) < str(vb) else 1
            return -result if key.direction in ("desc", "dist-desc") else result
        return 0

    indexes = sorted(range(len(entities)), key=functools.cmp_to_key(compare))
    return [entities[i] for i in indexes]
