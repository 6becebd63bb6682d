"""The formula language: what a formula's SQL may read, the units it answers for, its periods.

A formula is one DuckDB query. It reads

- the node's departmental tables as `department.name` (the Delta snapshots, read the way
  `citybrain.hub.tables.service.evaluate` reads them: a system computation that returns
  aggregates only);
- `unit_map(county_code, unit_code)`: every county of the node's territory paired with each
  unit it counts towards at this node (a province node: the county's city and the province;
  a city node: the county itself and the city; a county node: the county), so
  `join unit_map m on m.county_code = t.county ... group by m.unit_code` gives the node's unit
  and each child unit from the same raw rows (ratios of sums, never means of ratios);
- `node(unit_code)`, one row: the node's own unit;
- `period(period, period_start, period_end)`, one row: the period computed (end exclusive
  is `period_end + 1 day`; `period_end` is its last day);
- the sources an item names in its inputs as `source:NAME` (see SOURCES).

It returns rows `(unit_code, value)`; rows for other units are ignored, a unit without a row
(or with a null value) has no data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from citybrain.core.errors import BadInput
from citybrain.geo import service as geo

_TABLE = re.compile(r"^([a-z][a-z0-9_]{0,63})/([a-z][a-z0-9_]{0,63})$")
_PERIOD = re.compile(r"^(\d{4})(?:-(?:(0[1-9]|1[0-2])(?:-(0[1-9]|[12]\d|3[01]))?|Q([1-4])))?$")


@dataclass(frozen=True)
class Source:
    """A view a formula may read besides departmental tables, and where it comes from."""

    name: str
    columns: dict[str, str]  # column -> DuckDB type, the contract its provider keeps
    lineage: str  # the lineage node recorded as the input
    provider: str  # who fills it, for "no data" reasons and the docs


SOURCES: dict[str, Source] = {
    "sensor_observations": Source(
        "sensor_observations",
        {"device_key": "VARCHAR", "last_at": "TIMESTAMPTZ"},
        "ngsi-ld:Device",
        "NGSI-LD temporal history: entities with an observation in the 24 hours before the "
        "computation (device_key is the last ':' segment of the entity id)",
    ),
    "quality_scores": Source(
        "quality_scores",
        {
            "department": "VARCHAR",
            "datasets": "BIGINT",
            "overall": "DOUBLE",
            "completeness": "DOUBLE",
            "validity": "DOUBLE",
            "uniqueness": "DOUBLE",
            "timeliness": "DOUBLE",
        },
        "quality:scorecards",
        "citybrain.governance.quality.service.department_scorecard (latest scorecards)",
    ),
    "event_cases": Source(
        "event_cases",
        {
            "county_code": "VARCHAR",
            "closed": "BOOLEAN",
            "on_time": "BOOLEAN",
            "handling_hours": "DOUBLE",
            "satisfaction": "DOUBLE",
        },
        "url:citybrain:events",
        "citybrain.events.service.indicator_facts(engine=, start=, end=) of the event centre",
    ),
}


def parse_input(name: str) -> tuple[str, str]:
    """Return ("table", "dept/name") or ("source", NAME) for an input, BadInput otherwise."""
    if name.startswith("source:"):
        source = name.removeprefix("source:")
        if source not in SOURCES:
            raise BadInput(f"unknown source {source!r}; sources: {', '.join(sorted(SOURCES))}")
        return "source", source
    if _TABLE.match(name):
        return "table", name
    raise BadInput(f"formula input {name!r} is neither DEPARTMENT/NAME nor source:NAME")


def lineage_inputs(inputs: list[str]) -> list[str]:
    """Return the lineage node ids of a formula's inputs."""
    out: list[str] = []
    for name in inputs:
        kind, value = parse_input(name)
        out.append(value if kind == "table" else SOURCES[value].lineage)
    return out


def current_period(at: datetime) -> str:
    """Return the month (YYYY-MM) an instant falls in, in UTC."""
    return at.astimezone(UTC).strftime("%Y-%m")


def period_bounds(period: str) -> tuple[date, date]:
    """Return the first and last day of YYYY, YYYY-MM, YYYY-MM-DD or YYYY-Qn; BadInput else."""
    match = _PERIOD.match(period)
    if match is None:
        raise BadInput(f"period {period!r} is not YYYY, YYYY-MM, YYYY-MM-DD or YYYY-Qn")
    year = int(match.group(1))
    month, day, quarter = match.group(2), match.group(3), match.group(4)
    try:
        if day is not None:
            start = date(year, int(month), int(day))
            return start, start
        if month is not None:
            start = date(year, int(month), 1)
            months = 1
        elif quarter is not None:
            start = date(year, 3 * int(quarter) - 2, 1)
            months = 3
        else:
            return date(year, 1, 1), date(year, 12, 31)
    except ValueError:
        raise BadInput(f"period {period!r} is not a real date") from None
    shifted = start.month + months - 1
    nxt = date(start.year + shifted // 12, shifted % 12 + 1, 1)
    return start, nxt - timedelta(days=1)


def unit_scope(code: str, level: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Return the units a node computes (its own first, then its children) and its unit_map."""
    unit = geo.get_unit(code)
    if level == "province":
        cities = [u.code for u in geo.list_units("city", code)]
        pairs: list[tuple[str, str]] = []
        for city in cities:
            for county in geo.list_units("county", city):
                pairs += [(county.code, city), (county.code, code)]
        return [code, *cities], pairs
    if level == "city":
        counties = [u.code for u in geo.list_units("county", code)]
        pairs = [(c, c) for c in counties] + [(c, code) for c in counties]
        return [code, *counties], pairs
    if level == "county":
        return [unit.code], [(unit.code, unit.code)]
    raise BadInput(f"a node serves a province, city or county, not a {level}")


def wrap(sql: str) -> str:
    """Make a formula a subquery, so its own WITH clauses and the views compose."""
    body = sql.strip().rstrip(";").strip()
    if ";" in body:
        raise BadInput("a formula is one query (no ';')")
    return f"select * from ({body}) as formula"


def read_rows(rows: list[tuple[Any, ...]], units: list[str]) -> dict[str, float | None]:
    """Check a formula's answer is (unit_code, number) rows; keep the node's units only."""
    wanted = set(units)
    out: dict[str, float | None] = {}
    for row in rows:
        if len(row) != 2:
            raise ValueError(f"a formula returns (unit_code, value) rows, not {len(row)} columns")
        unit, value = row
        if value is not None and not isinstance(value, int | float):
            try:
                value = float(value)  # DuckDB decimals
            except (TypeError, ValueError):
                raise ValueError(f"the value for {unit} is not a number: {value!r}") from None
        if str(unit) in wanted:
            out[str(unit)] = None if value is None else float(value)
    return out
