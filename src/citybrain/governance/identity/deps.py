"""FastAPI dependencies: the principal of a request, and role checks.

They are async though they await nothing: FastAPI runs a plain function dependency in its
thread pool, a thread hop on every request for an attribute lookup.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from citybrain.core.errors import Forbidden, Unauthorized
from citybrain.governance.principal import Principal, Role


def principal_of(request: Request) -> Principal:
    """Return the principal the auth middleware attached to this request, or raise 401."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise Unauthorized("this endpoint needs a bearer token")
    return principal


async def current_principal(request: Request) -> Principal:
    """Return the principal the auth middleware attached to this request."""
    return principal_of(request)


def require_role(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """Build a dependency that admits only principals holding one of the roles."""
    allowed = frozenset(roles)

    async def dependency(request: Request) -> Principal:
        principal = principal_of(request)
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise Forbidden(f"this needs the role {names}; the token has {principal.role.value}")
        return principal

    return dependency
