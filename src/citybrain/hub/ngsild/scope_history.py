"""The scope's temporal evolution (clauses 4.18, 4.5.6, 5.7.4.4): scope as a temporal Property.

The history keeps the scope under the name SCOPE, as instances of a Property whose value is the
scope (a string or a list of them). A change of scope through the entity API is an instance
observed when it was made; a deletion is an instance with the value [] and `deletedAt`. A
scope is valid from the time it was set until the next instance replaces or deletes it, so a
temporal query with `scopeQ` selects the entities whose valid scope matched within the time
asked for, and of those the attribute instances observed while it did (annex C.5.16).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from citybrain.core.errors import BadInput
from citybrain.hub.ngsild.entities import check_scope

SCOPE = "scope"  # the history's name for it: never an attribute's (those are IRIs)
_EVER = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))
Window = tuple[datetime, datetime]
Points = list[tuple[datetime, dict[str, Any]]]


def set_instance(scopes: list[str], at: str) -> dict[str, Any]:
    """The instance of a scope set at `at` through the entity API (observedAt = modifiedAt)."""
    value: Any = scopes[0] if len(scopes) == 1 else list(scopes)
    return {"type": "Property", "value": value, "observedAt": at, "createdAt": at, "modifiedAt": at}


def deleted_instance(at: str) -> dict[str, Any]:
    """The instance of a deleted scope: no scope from `at` on."""
    return {"type": "Property", "value": [], "deletedAt": at}


def temporal_instances(raw: Any) -> list[dict[str, Any]]:
    """The scope of a temporal payload as instances: plain scopes, or Property instances."""
    items = raw if isinstance(raw, list) else [raw]
    if all(isinstance(i, str) for i in items):
        check_scope(items)
        return [{"type": "Property", "value": raw}]
    out = []
    for item in items:
        if not isinstance(item, dict) or item.get("type", "Property") != "Property":
            raise BadInput("a temporal scope is a list of Property instances (or of scopes)")
        if "value" not in item:
            raise BadInput("a temporal scope instance needs a value")
        check_scope(scopes_of(item))
        out.append({**item, "type": "Property"})
    return out


def scopes_of(instance: dict[str, Any]) -> list[str]:
    """The scopes an instance holds ([] for a deletion)."""
    value = instance.get("value")
    if "deletedAt" in instance or value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def latest_scopes(instances: list[dict[str, Any]]) -> list[str]:
    """The scope the most recently observed instance sets (the entity's current scope)."""
    ordered = sorted(instances, key=lambda i: str(i.get("observedAt", "")))
    return scopes_of(ordered[-1]) if ordered else []


def intervals(points: Points) -> list[tuple[datetime, datetime, list[str]]]:
    """When each scope was valid: from its instance until the next one (or for ever)."""
    ordered = sorted(points, key=lambda p: p[0])
    out = []
    for k, (at, inst) in enumerate(ordered):
        end = ordered[k + 1][0] if k + 1 < len(ordered) else _EVER[1]
        scopes = scopes_of(inst)
        if scopes and end > at:
            out.append((at, end, scopes))
    return out


def window_of(timerel: str | None, time_at: datetime | None, end: datetime | None) -> Window:
    """The time a temporal query asks for, as [start, end)."""
    if timerel == "before" and time_at is not None:
        return _EVER[0], time_at
    if timerel == "after" and time_at is not None:
        return time_at, _EVER[1]
    if timerel == "between" and time_at is not None and end is not None:
        return time_at, end
    return _EVER


def matching_windows(
    points: Points, current: list[str], groups: list[list[str]], window: Window, fits: Any
) -> list[Window]:
    """The parts of `window` in which the entity's valid scope matched `groups` (scopeQ).

    points: the scope's history; an entity without one has its current scope for all time.
    fits(scopes, groups) -> bool decides a match, as the entity query does.
    """
    spans = intervals(points) if points else ([(*_EVER, current)] if current else [])
    found = []
    for start, end, scopes in spans:
        lo, hi = max(start, window[0]), min(end, window[1])
        if lo < hi and fits(scopes, groups):
            found.append((lo, hi))
    return found


def within(at: datetime, windows: Iterable[Window]) -> bool:
    """True when a time falls in one of the windows."""
    return any(lo <= at < hi for lo, hi in windows)


def carried_in(points: Points, window: Window) -> Points:
    """The scope instances in the window, with the one still valid at its start (C.5.16)."""
    ordered = sorted(points, key=lambda p: p[0])
    before = [p for p in ordered if p[0] < window[0]]
    inside = [p for p in ordered if window[0] <= p[0] < window[1]]
    if before and scopes_of(before[-1][1]):
        return [before[-1], *inside]
    return inside
