"""FastAPI dependencies: the principal of a request, and role checks."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

from citybrain.core.errors import Forbidden, Unauthorized
from citybrain.governance.principal import Principal, Role


def current_principal(request: Request) -> Principal:
    """Return the principal the auth middleware attached to this request."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise Unauthorized("this endpoint needs a bearer token")
    return principal


def require_role(*roles: Role) -> Callable[[Request], Principal]:
    """Build a dependency that admits only principals holding one of the roles."""
    allowed = frozenset(roles)

    def dependency(request: Request) -> Principal:
        principal = current_principal(request)
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise Forbidden(f"this needs the role {names}; the token has {principal.role.value}")
        return principal

    return dependency
