"""NGSI-LD geo-queries: georel, geometry and coordinates, evaluated with shapely."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from citybrain.core.errors import BadInput

RELATIONS = ("near", "within", "contains", "intersects", "disjoint", "equals", "overlaps")
GEOMETRIES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon")
_METRES_PER_DEGREE = 111_320.0
_DISTANCE = re.compile(r"^(maxDistance|minDistance)==(.*)$")


@dataclass(frozen=True)
class GeoQuery:
    """A parsed geo-query."""

    relation: str
    geometry: BaseGeometry
    geoproperty: str
    max_distance: float | None = None
    min_distance: float | None = None


def parse_geojson(kind: str, coordinates: Any) -> BaseGeometry:
    """Build and validate a geometry from a GeoJSON type and coordinates."""
    if kind not in GEOMETRIES:
        raise BadInput(f"geometry must be one of {', '.join(GEOMETRIES)}, not {kind!r}")
    if isinstance(coordinates, str):
        try:
            coordinates = json.loads(coordinates)
        except json.JSONDecodeError:
            raise BadInput(f"coordinates {coordinates!r} are not a JSON array") from None
    try:
        geom = shape({"type": kind, "coordinates": coordinates})
    except (ValueError, TypeError, IndexError, AttributeError, shapely.errors.GEOSException):
        raise BadInput(f"coordinates do not form a valid {kind}") from None
    if geom.is_empty:
        raise BadInput(f"the {kind} has no coordinates")
    xs, ys = zip(*shapely.get_coordinates(geom).tolist(), strict=True)
    if min(xs) < -180 or max(xs) > 180 or min(ys) < -90 or max(ys) > 90:
        raise BadInput("coordinates must be longitude in [-180, 180] and latitude in [-90, 90]")
    if kind in ("Polygon", "MultiPolygon"):
        polygons = [coordinates] if kind == "Polygon" else coordinates
        for ring in (r for polygon in polygons for r in polygon):
            # RFC 7946 section 3.1.6: a linear ring is closed and has four or more positions
            if len(ring) < 4 or list(ring[0]) != list(ring[-1]):
                raise BadInput(f"every ring of the {kind} must be closed, with 4 or more positions")
        if not geom.is_valid:
            # GeoJSON does not require simple rings (a ring may cross itself): compare with
            # the valid geometry covering the same area
            geom = shapely.make_valid(geom)
    return geom


def parse(georel: str, geometry: str | None, coordinates: Any, geoproperty: str | None) -> GeoQuery:
    """Parse the georel, geometry, coordinates and geoproperty parameters."""
    if geometry is None or coordinates is None:
        raise BadInput("a geo-query needs georel, geometry and coordinates together")
    parts = georel.split(";")
    relation = parts[0]
    if relation not in RELATIONS:
        raise BadInput(f"georel must start with one of {', '.join(RELATIONS)}, not {relation!r}")
    max_d = min_d = None
    if relation == "near":
        if len(parts) != 2 or not _DISTANCE.match(parts[1]):
            raise BadInput("georel near needs ;maxDistance==N or ;minDistance==N (metres)")
        which, raw = _DISTANCE.match(parts[1]).groups()  # type: ignore[union-attr]
        try:
            distance = float(raw)
        except ValueError:
            raise BadInput(f"{which} must be a number of metres, not {raw!r}") from None
        if not math.isfinite(distance) or distance <= 0:
            # clause 4.10: a PositiveNumber, zero excluded
            raise BadInput(f"{which} must be a finite, positive number of metres")
        max_d, min_d = (distance, None) if which == "maxDistance" else (None, distance)
    elif len(parts) != 1:
        raise BadInput(f"georel {relation} takes no modifiers")
    geom = parse_geojson(geometry, coordinates)
    return GeoQuery(relation, geom, geoproperty or "location", max_d, min_d)


def metres(a: BaseGeometry, b: BaseGeometry) -> float:
    """Distance in metres between geometries (equirectangular at their mean latitude)."""
    lat = (a.centroid.y + b.centroid.y) / 2
    factor = math.cos(math.radians(lat))
    scaled_a = shapely.transform(a, lambda c: c * [factor, 1.0])
    scaled_b = shapely.transform(b, lambda c: c * [factor, 1.0])
    return float(scaled_a.distance(scaled_b) * _METRES_PER_DEGREE)


def matches(query: GeoQuery, value: Any) -> bool:
    """Evaluate the query against a GeoJSON value of the entity."""
    if not isinstance(value, dict):
        return False
    try:
        geom = shape(value)
    except (ValueError, TypeError, AttributeError, IndexError):
        return False
    target = query.geometry
    if query.relation == "near":
        distance = metres(geom, target)
        if query.max_distance is not None:
            return distance <= query.max_distance
        return distance >= (query.min_distance or 0.0)
    relation = {
        "within": geom.within,
        "contains": geom.contains,
        "intersects": geom.intersects,
        "disjoint": geom.disjoint,
        "equals": geom.equals,
        "overlaps": geom.overlaps,
    }[query.relation]
    return bool(relation(target))
