"""Authentication at the edge: every request except public paths carries a valid credential."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from citybrain.core.errors import BadInput, CityBrainError, Unauthorized
from citybrain.core.problems import problem
from citybrain.governance.identity.tokens import cached_principal, verify_token
from citybrain.governance.principal import Principal, Role

# Paths anyone may call: liveness, versions, the public pages and their assets, the OpenAPI
# description, the DCAT catalog (metadata only), and the sign-in endpoints themselves.
PUBLIC_EXACT = frozenset(
    {
        "/",
        "/health",
        "/version",
        "/ngsi-ld/v1/version",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/catalog/dcat",
        "/auth/token",
        "/auth/otp/request",
        "/auth/otp/verify",
        "/auth/grid/verify",
        # the dashboard's node summary and children: codes, names, counts, no personal data
        "/api/node",
        "/api/nodes",
        "/favicon.ico",
    }
)
PUBLIC_PREFIXES = ("/static/", "/geo/", "/open311/v2/services", "/m/")

ApiKeyResolver = Callable[[str], Principal]
# returns the principal of a token another node signed for this one, None for a token this
# node issued itself (verified as before), or raises Unauthorized
PeerResolver = Callable[[str], Principal | None]


def is_public(path: str) -> bool:
    """Return True for a path that needs no credential."""
    return path in PUBLIC_EXACT or path.startswith(PUBLIC_PREFIXES)


def anonymous_role_of(value: str) -> Role:
    """Return the role CITYBRAIN_ANONYMOUS_ROLE names, or raise BadInput listing the roles."""
    try:
        return Role(value.strip())
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise BadInput(
            f"CITYBRAIN_ANONYMOUS_ROLE is {value!r}, which is not a role; roles are {roles}"
        ) from None


class AuthMiddleware:
    """Verify the bearer token or API key and put the principal in request.state.principal."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        data_dir: Path,
        issuer: str,
        anonymous_role: str | None = None,
        api_key_resolver: ApiKeyResolver | None = None,
        peer_resolver: PeerResolver | None = None,
    ) -> None:
        self.app = app
        self.data_dir = data_dir
        self.issuer = issuer
        self.anonymous = (
            Principal(
                subject="anonymous",
                org="anonymous",
                role=anonymous_role_of(anonymous_role),
                issuer=issuer,
                anonymous=True,
            )
            if anonymous_role
            else None
        )
        self.api_key_resolver = api_key_resolver
        self.peer_resolver = peer_resolver

    def _principal(self, scope: Scope) -> Principal | None:
        authorization = api_key = None
        for name, value in scope.get("headers") or []:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-api-key":
                api_key = value.decode("latin-1")
        if authorization:
            scheme, _, credential = authorization.partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                known = cached_principal(
                    data_dir=self.data_dir, issuer=self.issuer, token=credential.strip()
                )
                if known is not None:
                    return known  # verified before and not expired: skip the peer decode
                if self.peer_resolver is not None:
                    peer = self.peer_resolver(credential.strip())
                    if peer is not None:
                        return peer
                return verify_token(
                    data_dir=self.data_dir, issuer=self.issuer, token=credential.strip()
                )
            if scheme.lower() == "apikey" and credential.strip():
                api_key = credential.strip()
            else:
                raise Unauthorized("use 'Authorization: Bearer TOKEN' (or an API key)")
        if api_key:
            if self.api_key_resolver is None:
                raise Unauthorized("this node does not accept API keys")
            return self.api_key_resolver(api_key)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate, then pass the request on; refuse with 401 problem details."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        try:
            principal = self._principal(scope)
        except CityBrainError as exc:
            if is_public(path):
                principal = None
            else:
                await _refuse(exc, scope, receive, send)
                return
        if principal is None:
            principal = self.anonymous
        if principal is None and not is_public(path):
            await _refuse(Unauthorized("this endpoint needs a bearer token"), scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


async def _refuse(exc: CityBrainError, scope: Scope, receive: Receive, send: Send) -> None:
    response = problem(exc.status, exc.kind, exc.message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="citybrain"'
    await response(scope, receive, send)
