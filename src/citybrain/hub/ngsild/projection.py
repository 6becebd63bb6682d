"""What a read returns of each entity: attrs, or pick/omit with selections of linked entities.

Clause 4.21: `pick` and `omit` name entity members; a Relationship's name followed by a
braced list (`locatedAt{id,name}`) selects members of the entity that the Relationship
links to, which only Linked Entity retrieval (`join`, clause 4.5.23) returns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from citybrain.core.errors import BadInput
from citybrain.hub.ngsild.jsonld import TermMap

CORE_MEMBERS = frozenset({"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt"})
# a member name in pick/omit: anything but the grammar's separators, braces and operators
_MEMBER = re.compile(r"[^\s,|{}();=<>!~\"'&?\[\]]+")

Members = list[tuple[str, Any]]


def _members_at(text: str, i: int, what: str) -> tuple[Members, int]:
    """Parse names separated by ',' or '|', each optionally followed by a nested {list}."""
    members: Members = []
    while True:
        m = _MEMBER.match(text, i)
        if m is None:
            raise BadInput(f"{what}: an attribute or entity member name is expected at {i}")
        name, i = m.group(), m.end()
        nested = None
        if i < len(text) and text[i] == "{":
            nested, i = _members_at(text, i + 1, what)
            if i >= len(text) or text[i] != "}":
                raise BadInput(f"{what}: the brace opened before {i} is not closed")
            i += 1
        members.append((name, nested))
        if i < len(text) and text[i] in ",|":
            i += 1
            continue
        return members, i


def parse_members(text: str, what: str) -> Members:
    """Parse a pick or omit value into (name, nested members or None) pairs."""
    members, end = _members_at(text, 0, what)
    if end != len(text):
        raise BadInput(f"{what}: unexpected {text[end]!r} at {end}")
    return members


def _depth(members: Members | None) -> int:
    """How many Relationships deep a selection reaches (0: the entity itself)."""
    if not members:
        return 0
    return max((1 + _depth(nested) if nested is not None else 0) for _, nested in members)


@dataclass(frozen=True)
class Projection:
    """attrs (a filter on stored names) or pick/omit (on rendered names), and linked ones."""

    attrs: set[str] | None = None
    pick: frozenset[str] | None = None
    omit: frozenset[str] = frozenset()
    # rendered Relationship name -> what to return of the entities it links to
    linked: Mapping[str, Projection] = field(default_factory=dict)

    def apply(self, rendered: dict[str, Any]) -> dict[str, Any]:
        """Keep the picked members (id and type included), drop the omitted ones."""
        if self.pick is None and not self.omit:
            return rendered
        return {
            k: v
            for k, v in rendered.items()
            if (self.pick is None or k in self.pick) and k not in self.omit
        }

    def of_linked(self, relationship: str) -> Projection:
        """Return what to keep of an entity reached through a Relationship of this name."""
        return self.linked.get(relationship, WHOLE)


WHOLE = Projection()


def _names(members: Members, terms: TermMap) -> dict[str, Members | None]:
    # rendered members are compacted with the reader's context: compare in that form
    return {
        (n if n in CORE_MEMBERS else terms.compact(terms.expand(n))): nested
        for n, nested in members
    }


def _build(terms: TermMap, pick: Members | None, omit: Members | None) -> Projection:
    picked = _names(pick, terms) if pick is not None else None
    # an omitted name with a nested list omits inside the linked entity, not the Relationship
    omitted = _names(omit, terms) if omit is not None else {}
    dropped = frozenset(n for n, nested in omitted.items() if nested is None)
    if picked is not None and set(picked) & dropped:
        raise BadInput(f"{sorted(set(picked) & dropped)} cannot be both picked and omitted")
    linked: dict[str, Projection] = {}
    for name in set(picked or {}) | set(omitted):
        inner_pick = (picked or {}).get(name)
        inner_omit = omitted.get(name)
        if inner_pick is not None or inner_omit is not None:
            linked[name] = _build(terms, inner_pick, inner_omit)
    return Projection(
        pick=frozenset(picked) if picked is not None else None, omit=dropped, linked=linked
    )


# how many hops a read may follow; a deeper join or selection is refused
MAX_JOIN_LEVEL = 10


@dataclass(frozen=True)
class Join:
    """How to return linked entities: inline or flat, and how many hops to follow."""

    mode: str
    level: int


def parse_join(params: Mapping[str, Any]) -> Join | None:
    """Read `join` and `joinLevel`; None when no linked entities are asked for."""
    mode = params.get("join")
    level_text = params.get("joinLevel")
    level = 1
    if level_text is not None:
        try:
            if isinstance(level_text, bool | float):
                raise ValueError(level_text)
            level = int(level_text)
        except ValueError:
            raise BadInput(f"joinLevel must be a positive integer, not {level_text!r}") from None
        if not 1 <= level <= MAX_JOIN_LEVEL:
            raise BadInput(f"joinLevel must be between 1 and {MAX_JOIN_LEVEL}, not {level}")
    if mode is None or mode == "@none":
        return None
    if mode not in ("inline", "flat"):
        raise BadInput(f"join must be inline, flat or @none, not {mode!r}")
    return Join(mode, level)


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def projection_of(
    terms: TermMap, params: Mapping[str, str], join_level: int | None = None
) -> Projection:
    """Read attrs, pick and omit of a request; join_level is None when no join was asked."""
    attrs = _split(params.get("attrs"))
    pick_text = params.get("pick")
    omit_text = params.get("omit")
    if attrs is not None and (pick_text is not None or omit_text is not None):
        raise BadInput("attrs cannot be combined with pick or omit")
    if pick_text is None and omit_text is None:
        return Projection(attrs={terms.expand(a) for a in attrs} if attrs else None)
    pick = parse_members(pick_text, "pick") if pick_text is not None else None
    omit = parse_members(omit_text, "omit") if omit_text is not None else None
    depth = max(_depth(pick), _depth(omit))
    if depth and join_level is None:
        # clause 5.7.2.4: a selection of linked entities has no meaning without join
        raise BadInput("pick/omit select members of linked entities: this needs join")
    if join_level is not None and depth > join_level:
        raise BadInput(
            f"pick/omit reach {depth} linked entities deep, more than joinLevel {join_level}"
        )
    return _build(terms, pick, omit)
