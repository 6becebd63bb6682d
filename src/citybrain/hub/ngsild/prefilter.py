"""Pre-filters that let the database discard most non-matching entities before Python looks.

Each pre-filter is a necessary condition: it may keep an entity that the exact evaluation in
`query.matches` / `geoquery.matches` later refuses, but never drops one that would match. So
the exact semantics stay in one place and the database only makes queries fast.

- `q` comparisons of a plain attribute's value with numbers (==, !=, <, <=, >, >=, ranges, lists)
  and strings (==) compile to JSON expressions; anything else compiles to TRUE.
- Geo-queries on `location` use the entity's bounding box and a grid cell (0.01 degrees, about
  1 km) kept in columns of the entity row: a query lists the cells its box covers.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, true
from sqlalchemy import cast as sa_cast
from sqlalchemy.types import Float, String

from citybrain.hub.ngsild import geoquery, query
from citybrain.hub.ngsild.models import ngsild_entities

LOCATION = "https://uri.etsi.org/ngsi-ld/location"
CELL = 0.01  # degrees per grid cell
SPANNING = -1  # the cell of a geometry larger than one cell
MAX_QUERY_CELLS = 2500  # beyond this, the box columns alone narrow the search
_NUMERIC_OPS = ("==", "!=", "<", "<=", ">", ">=")
GEO_COLUMNS = ("loc_minx", "loc_miny", "loc_maxx", "loc_maxy", "loc_cell")


def cell_of(x: float, y: float) -> int:
    """Return the grid cell holding a point."""
    return (math.floor(y / CELL) + 9_000) * 40_000 + (math.floor(x / CELL) + 18_000)


def _flatten(coordinates: Any, out: list[tuple[float, float]]) -> None:
    if (
        isinstance(coordinates, list)
        and len(coordinates) >= 2
        and all(isinstance(c, int | float) for c in coordinates[:2])
    ):
        out.append((float(coordinates[0]), float(coordinates[1])))
        return
    if isinstance(coordinates, list):
        for part in coordinates:
            _flatten(part, out)


def geo_columns(entity: dict[str, Any]) -> dict[str, Any]:
    """Return the box and cell columns for an entity's first `location` value."""
    empty: dict[str, Any] = {
        "loc_minx": None,
        "loc_miny": None,
        "loc_maxx": None,
        "loc_maxy": None,
        "loc_cell": None,
    }
    attr = entity.get(LOCATION)
    first = attr[0] if isinstance(attr, list) and attr else attr
    value = first.get("value") if isinstance(first, dict) else None
    if not isinstance(value, dict):
        return empty
    point = value.get("coordinates")
    if (
        value.get("type") == "Point"
        and type(point) is list
        and len(point) == 2
        and type(point[0]) in (int, float)
        and type(point[1]) in (int, float)
    ):
        # most locations are one point: its box is the point, its cell is one cell
        x, y = float(point[0]), float(point[1])
        return {
            "loc_minx": x,
            "loc_miny": y,
            "loc_maxx": x,
            "loc_maxy": y,
            "loc_cell": cell_of(x, y),
        }
    points: list[tuple[float, float]] = []
    _flatten(value.get("coordinates"), points)
    if not points:
        return empty
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    box = (min(xs), min(ys), max(xs), max(ys))
    low, high = cell_of(box[0], box[1]), cell_of(box[2], box[3])
    return {
        "loc_minx": box[0],
        "loc_miny": box[1],
        "loc_maxx": box[2],
        "loc_maxy": box[3],
        # a geometry spanning several cells is found through its box
        "loc_cell": low if low == high else SPANNING,
    }


def _json_path(dialect: str, name: str) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """Return (json type, value as text) of `entity[name].value` for the dialect."""
    column = ngsild_entities.c.entity
    if dialect == "postgresql":
        node = column.op("->")(literal(name, String)).op("->")(literal("value", String))
        return func.json_typeof(node), column.op("->")(literal(name, String)).op("->>")(
            literal("value", String)
        )
    path = '$."' + name.replace('"', '\\"') + '".value'
    return func.json_type(column, path), func.json_extract(column, path)


def _numeric(dialect: str, name: str, op: str, numbers: list[float]) -> ColumnElement[bool]:
    kind, raw = _json_path(dialect, name)
    value = sa_cast(raw, Float)
    if op == "==":
        test: ColumnElement[bool] = value.in_(numbers)
    elif op == "!=":
        test = value.not_in(numbers)
    else:
        test = {
            "<": value < numbers[0],
            "<=": value <= numbers[0],
            ">": value > numbers[0],
            ">=": value >= numbers[0],
        }[op]
    number_kinds = ["number"] if dialect == "postgresql" else ["integer", "real"]
    # only a value known to be a number can be refused; anything else goes to the exact check
    return case((kind.in_(number_kinds), test), else_=true())


def _text(dialect: str, name: str, strings: list[str]) -> ColumnElement[bool]:
    kind, raw = _json_path(dialect, name)
    text_kind = "string" if dialect == "postgresql" else "text"
    return case((kind == text_kind, raw.in_(strings)), else_=true())


def compile_q(expr: query.Expr, dialect: str) -> ColumnElement[bool]:
    """Compile a q expression (expanded names) to a necessary SQL condition."""
    if isinstance(expr, query.And):
        return and_(*(compile_q(p, dialect) for p in expr.parts))
    if isinstance(expr, query.Or):
        return or_(*(compile_q(p, dialect) for p in expr.parts))
    path = expr.path
    if path.sub or path.keys:
        return true()
    if expr.op is None:
        return _exists(dialect, path.attribute)
    values = list(expr.values)
    if expr.low is not None or expr.high is not None:
        if _all_numbers([expr.low, expr.high]) and expr.op == "==":
            return and_(
                _numeric(dialect, path.attribute, ">=", [float(expr.low)]),
                _numeric(dialect, path.attribute, "<=", [float(expr.high)]),
            )
        return true()
    if values and _all_numbers(values) and expr.op in _NUMERIC_OPS:
        if expr.op not in ("==", "!=") and len(values) != 1:
            return true()
        return and_(
            _exists(dialect, path.attribute),
            _numeric(dialect, path.attribute, expr.op, [float(v) for v in values]),
        )
    if values and expr.op == "==" and all(isinstance(v, str) for v in values):
        return and_(_exists(dialect, path.attribute), _text(dialect, path.attribute, values))
    return true()


def _all_numbers(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _exists(dialect: str, name: str) -> ColumnElement[bool]:
    column = ngsild_entities.c.entity
    if dialect == "postgresql":
        return column.op("->")(literal(name, String)).is_not(None)
    path = '$."' + name.replace('"', '\\"') + '"'
    return func.json_type(column, path).is_not(None)


def compile_geo(geo: geoquery.GeoQuery) -> tuple[ColumnElement[bool], bool]:
    """Compile a geo-query on `location` to a box-and-cell condition (TRUE when not usable).

    The flag says whether the condition names grid cells, i.e. is selective enough that the
    database should find the rows by cell and then sort them, rather than walk ids in order.
    """
    if geo.geoproperty != LOCATION or geo.relation == "disjoint":
        return true(), False
    if geo.relation == "near" and geo.max_distance is None:
        return true(), False  # minDistance: almost everything qualifies
    minx, miny, maxx, maxy = geo.geometry.bounds
    if geo.relation == "near":
        reach = float(geo.max_distance or 0.0)
        dy = reach / 111_320.0
        lat = max(abs(miny), abs(maxy))
        dx = reach / (111_320.0 * max(math.cos(math.radians(min(lat + dy, 89.9))), 1e-6))
        minx, miny, maxx, maxy = minx - dx, miny - dy, maxx + dx, maxy + dy
    t = ngsild_entities.c
    box = and_(t.loc_maxx >= minx, t.loc_minx <= maxx, t.loc_maxy >= miny, t.loc_miny <= maxy)
    x0, x1 = math.floor(minx / CELL), math.floor(maxx / CELL)
    y0, y1 = math.floor(miny / CELL), math.floor(maxy / CELL)
    if (x1 - x0 + 1) * (y1 - y0 + 1) > MAX_QUERY_CELLS:
        return box, False
    cells = [
        (y + 9_000) * 40_000 + (x + 18_000) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)
    ]
    return and_(t.loc_cell.in_([*cells, SPANNING]), box), True
