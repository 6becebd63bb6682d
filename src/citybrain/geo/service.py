"""Administrative units of Shandong: the only module that reads the geography data."""

from __future__ import annotations

import gzip
import json
import re
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import shapely
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.strtree import STRtree

from citybrain.core.errors import BadInput, NotFound
from citybrain.geo import synthetic
from citybrain.geo.models import AdminUnit, Level

PROVINCE_CODE = "370000"
_CODE = re.compile(r"^\d{6}(\d{3}){0,3}$")
_REAL_LEVELS = (Level.province, Level.city, Level.county)
_CODE_LENGTH = {Level.street: 9, Level.community: 12, Level.grid: 15}


@cache
def _real() -> tuple[dict[str, AdminUnit], dict[str, BaseGeometry]]:
    """Load the packaged province, cities and counties once."""
    raw = resources.files("citybrain.geo").joinpath("data", "shandong.json.gz").read_bytes()
    units: dict[str, AdminUnit] = {}
    shapes: dict[str, BaseGeometry] = {}
    for item in json.loads(gzip.decompress(raw))["units"]:
        geometry = item.pop("geometry")
        unit = AdminUnit(**item)
        units[unit.code] = unit
        shapes[unit.code] = shape(geometry)
    for geom in shapes.values():
        shapely.prepare(geom)
    return units, shapes


def _level_of_code(code: str) -> Level:
    """Infer the level from the shape of a code."""
    if not _CODE.match(code):
        raise BadInput(
            f"{code!r} is not an administrative code (6 digits, or 9, 12, 15 below a county)"
        )
    if len(code) > 6:
        return {9: Level.street, 12: Level.community, 15: Level.grid}[len(code)]
    if code.endswith("0000"):
        return Level.province
    if code.endswith("00"):
        return Level.city
    return Level.county


def get_unit(code: str) -> AdminUnit:
    """Return the unit with this code, real or synthetic."""
    level = _level_of_code(code)
    units, _ = _real()
    if level in _REAL_LEVELS:
        if code not in units:
            raise NotFound(f"no administrative unit {code} in Shandong")
        return units[code]
    county = code[:6]
    if county not in units or units[county].level != Level.county:
        raise NotFound(f"no administrative unit {code}: {county} is not a county of Shandong")
    found = synthetic.units_of_county(
        units[county], shapes_of(county), grids=level == Level.grid
    ).get(code)
    if found is None:
        raise NotFound(f"no administrative unit {code} in county {county}")
    return found[0]


def shapes_of(code: str) -> BaseGeometry:
    """Return the boundary of a real unit (province, city or county)."""
    _, shapes = _real()
    if code not in shapes:
        raise NotFound(f"no boundary for {code}")
    return shapes[code]


def geometry(code: str) -> BaseGeometry:
    """Return the boundary of any unit as a shapely geometry."""
    level = _level_of_code(code)
    if level in _REAL_LEVELS:
        get_unit(code)
        return shapes_of(code)
    get_unit(code)
    units, _ = _real()
    county = units[code[:6]]
    subunits = synthetic.units_of_county(county, shapes_of(county.code), grids=level == Level.grid)
    return subunits[code][1]


def list_units(level: Level | str, parent: str | None = None) -> list[AdminUnit]:
    """List the units of a level, optionally only those under a parent, sorted by code."""
    try:
        lvl = Level(level)
    except ValueError:
        choices = ", ".join(v.value for v in Level)
        raise BadInput(f"unknown level {level!r}; choose one of {choices}") from None
    units, _ = _real()
    if parent is not None:
        parent_unit = get_unit(parent)
        order = list(Level)
        if order.index(parent_unit.level) >= order.index(lvl):
            raise BadInput(
                f"{parent} is a {parent_unit.level.value}; it has no {lvl.value} units under it"
            )
    if lvl in _REAL_LEVELS:
        found = [u for u in units.values() if u.level == lvl]
        if parent is not None:
            found = [u for u in found if _is_under(u.code, parent)]
        return sorted(found, key=lambda u: u.code)
    if parent is None:
        raise BadInput(f"listing {lvl.value} units needs --parent (a county or a unit below one)")
    counties = (
        [parent]
        if len(parent) >= 6 and _level_of_code(parent[:6]) == Level.county
        else [
            u.code for u in units.values() if u.level == Level.county and _is_under(u.code, parent)
        ]
    )
    result: list[AdminUnit] = []
    for county in counties:
        subunits = synthetic.units_of_county(
            units[county[:6]], shapes_of(county[:6]), grids=lvl == Level.grid
        )
        result.extend(
            u for u, _ in subunits.values() if u.level == lvl and _is_under(u.code, parent)
        )
    return sorted(result, key=lambda u: u.code)


def _is_under(code: str, parent: str) -> bool:
    """Return whether code lies under parent by the code hierarchy."""
    level = _level_of_code(parent)
    if level == Level.province:
        return code[:2] == parent[:2] and code != parent
    if level == Level.city:
        return code[:4] == parent[:4] and code != parent
    return code.startswith(parent) and code != parent


def children(code: str) -> list[AdminUnit]:
    """Return the units one level below this one."""
    unit = get_unit(code)
    order = list(Level)
    position = order.index(unit.level)
    if position == len(order) - 1:
        return []
    return list_units(order[position + 1], code)


def city_of(code: str) -> AdminUnit:
    """Return the city a unit belongs to."""
    get_unit(code)
    if _level_of_code(code) == Level.province:
        raise BadInput("the province belongs to no city")
    return get_unit(code[:4] + "00")


def county_of(code: str) -> AdminUnit:
    """Return the county a unit below the city level belongs to."""
    unit = get_unit(code)
    if unit.level in (Level.province, Level.city):
        raise BadInput(f"{code} is a {unit.level.value}, above any county")
    return get_unit(code[:6])


@cache
def _county_index() -> tuple[STRtree, list[str]]:
    units, shapes = _real()
    codes = sorted(c for c, u in units.items() if u.level == Level.county)
    return STRtree([shapes[c] for c in codes]), codes


def locate(lon: float, lat: float, level: Level | str = Level.county) -> AdminUnit | None:
    """Return the unit of the given level that contains a point, or None outside Shandong."""
    lvl = Level(level)
    tree, codes = _county_index()
    point = shapely.Point(lon, lat)
    hits = tree.query(point, predicate="intersects")
    if len(hits) == 0:
        return None
    county = codes[int(min(hits))]
    if lvl == Level.province:
        return get_unit(PROVINCE_CODE)
    if lvl == Level.city:
        return get_unit(county[:4] + "00")
    if lvl == Level.county:
        return get_unit(county)
    units, _ = _real()
    subunits = synthetic.units_of_county(units[county], shapes_of(county), grids=lvl == Level.grid)
    for unit, geom in subunits.values():
        if unit.level == lvl and geom.intersects(point):
            return unit
    return None


def sample_points(code: str, n: int, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """Draw n points uniformly inside a unit; returns an (n, 2) array of lon, lat."""
    if n < 0:
        raise BadInput("the number of points must not be negative")
    geom = geometry(code)
    shapely.prepare(geom)
    minx, miny, maxx, maxy = geom.bounds
    out = np.empty((n, 2), dtype=np.float64)
    filled = 0
    # the hit rate is area / bbox area; draw in batches sized by the running estimate
    rate = max(0.05, geom.area / max((maxx - minx) * (maxy - miny), 1e-12))
    while filled < n:
        batch = int((n - filled) / rate * 1.2) + 16
        xs = rng.uniform(minx, maxx, batch)
        ys = rng.uniform(miny, maxy, batch)
        inside = shapely.contains_xy(geom, xs, ys)
        take = min(int(inside.sum()), n - filled)
        out[filled : filled + take, 0] = xs[inside][:take]
        out[filled : filled + take, 1] = ys[inside][:take]
        filled += take
    return out


def feature_collection(level: Level | str, parent: str | None = None) -> dict[str, Any]:
    """Return the units of a level as a GeoJSON FeatureCollection (for the dashboard map)."""
    features = []
    for unit in list_units(level, parent):
        features.append(feature(unit.code))
    return {"type": "FeatureCollection", "features": features}


def feature(code: str) -> dict[str, Any]:
    """Return one unit as a GeoJSON Feature with its names as properties."""
    unit = get_unit(code)
    props = unit.model_dump(mode="json")
    return {"type": "Feature", "properties": props, "geometry": mapping(geometry(code))}
