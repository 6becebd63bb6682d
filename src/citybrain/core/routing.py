"""An APIRouter that lets a request pass by quickly when none of its routes could match it.

FastAPI tries the included routers in order and, in each, every route's pattern: a request to
the last router pays for matching all the others, on a node more than its own handler costs
(a settlement before payment, an NGSI-LD PATCH). This router first compares the request path
with the static beginnings of its routes' paths; only a path that starts with one of them is
matched the usual way, so what matches is what matched before.
"""

from __future__ import annotations

from typing import Any

import fastapi
from starlette.routing import Match
from starlette.types import Scope


def _route_paths(router: Any, prefix: str = "") -> list[str] | None:
    """Every route path of a router and of the routers it includes, or None if unknown."""
    out: list[str] = []
    for route in router.routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            nested = _route_paths(inner, prefix + route.include_context.prefix)
            if nested is None:
                return None
            out += nested
            continue
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            return None  # a route we cannot read: match it the usual way
        out.append(prefix + path)
    return out


def static_heads(paths: list[str]) -> tuple[str, ...] | None:
    """The static beginnings of the paths (up to the first parameter), None if one is empty."""
    heads = []
    for path in paths:
        head = path.split("{", 1)[0]
        if not head or (head == "/" and "{" in path):
            return None  # a parameter right at the start can match any path
        heads.append(head)
    return tuple(sorted(set(heads)))


# FastAPI (0.120 and later) asks an included router whether it matches, with the include's
# context in the scope; older versions never ask, and then the guard is simply not used
_included_router_of = getattr(fastapi.routing, "_get_scope_included_router", None)


class APIRouter(fastapi.APIRouter):
    """fastapi.APIRouter with a quick refusal of paths none of its routes starts like."""

    _heads_key: tuple[int, str] | None = None
    _heads: tuple[str, ...] | None = None

    def _static_heads(self, prefix: str) -> tuple[str, ...] | None:
        # routes may be added after the router is included: recompute when their number moves
        key = (len(self.routes), prefix)
        if key != self._heads_key:
            paths = _route_paths(self, prefix)
            self._heads = static_heads(paths) if paths else None
            self._heads_key = key
        return self._heads

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Refuse at once a path no route here could match; otherwise match as FastAPI does."""
        included = _included_router_of(scope) if _included_router_of is not None else None
        context = getattr(included, "include_context", None)
        if (
            context is not None
            and getattr(included, "original_router", None) is self
            and not scope.get("root_path")
        ):
            # the prefixes this router was included under (its own prefix is in its paths)
            heads = self._static_heads(str(getattr(context, "prefix", "")))
            if heads is not None and not scope.get("path", "").startswith(heads):
                return Match.NONE, {}
        return super().matches(scope)
