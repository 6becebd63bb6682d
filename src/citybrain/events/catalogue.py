"""The event-type catalogue (部件 and 事件) and the responsibility matrix, from catalogue.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from citybrain.core.errors import Unprocessable

URGENCIES = ("normal", "urgent", "critical")


@dataclass(frozen=True, slots=True)
class EventType:
    """A leaf of the catalogue: what can be reported, who handles it, how fast."""

    code: str
    name_zh: str
    name_en: str
    category: str
    category_zh: str
    group: str
    group_zh: str
    department: str
    deadlines: dict[str, int]
    aliases: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The tree as loaded, the leaves by code, and the responsibility matrix."""

    tree: list[dict[str, Any]]
    types: dict[str, EventType]
    aliases: dict[str, str]
    responsibility: tuple[tuple[str, str, str], ...]


@cache
def load() -> Catalogue:
    """Load and check catalogue.yaml once."""
    text = resources.files("citybrain.events").joinpath("catalogue.yaml").read_text("utf-8")
    raw = yaml.safe_load(text)
    types: dict[str, EventType] = {}
    aliases: dict[str, str] = {}
    for category in raw["categories"]:
        for group in category["groups"]:
            for item in group["types"]:
                deadlines = {u: int(item["deadlines"][u]) for u in URGENCIES}
                leaf = EventType(
                    code=item["code"],
                    name_zh=item["name_zh"],
                    name_en=item["name_en"],
                    category=category["code"],
                    category_zh=category["name_zh"],
                    group=group["code"],
                    group_zh=group["name_zh"],
                    department=item["department"],
                    deadlines=deadlines,
                    aliases=tuple(item.get("aliases", [])),
                )
                if leaf.code in types:
                    raise ValueError(f"catalogue.yaml names {leaf.code} twice")
                types[leaf.code] = leaf
                for alias in leaf.aliases:
                    aliases[alias.lower()] = leaf.code
    rows = tuple(
        (str(r["type"]), str(r["area"]), str(r["department"])) for r in raw["responsibility"]
    )
    for type_code, _, _ in rows:
        if type_code not in types:
            raise ValueError(f"the responsibility matrix names unknown type {type_code}")
    return Catalogue(raw["categories"], types, aliases, rows)


def event_type(code: str) -> EventType:
    """Return the leaf type with this code, or 422 when the catalogue has none."""
    found = load().types.get(code)
    if found is None:
        raise Unprocessable(
            f"unknown event type {code!r}; the catalogue has {len(load().types)} types "
            "(GET /api/events/catalogue)"
        )
    return found


def resolve_alias(name: str) -> str | None:
    """Return the type code a code or an alarm-system alias names, or None."""
    if name in load().types:
        return name
    return load().aliases.get(name.lower())


def department_for(type_code: str, area_code: str | None) -> str:
    """Return the department responsible for a type in an area (longest area prefix wins)."""
    best: tuple[int, str] | None = None
    for row_type, area, department in load().responsibility:
        if row_type == type_code and area_code and area_code.startswith(area):
            if best is None or len(area) > best[0]:
                best = (len(area), department)
    return best[1] if best else event_type(type_code).department


def deadline_days(type_code: str, urgency: str) -> int:
    """Return the working days a department has for a type at an urgency."""
    return event_type(type_code).deadlines[urgency]
