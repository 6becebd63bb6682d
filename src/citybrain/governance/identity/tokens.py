"""Bearer tokens: JWTs signed with the node's Ed25519 key (EdDSA), verified without storage."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import jwt

from citybrain.core.errors import BadInput, Unauthorized
from citybrain.governance.keys import node_key
from citybrain.governance.principal import Principal, Role

DEFAULT_TTL = 3600
MAX_TTL = 366 * 24 * 3600
# clocks of nodes in one province drift a little; a few seconds of leeway, not more
LEEWAY_SECONDS = 5
# Tokens this node verified, until they expire: a signature check is most of what a request's
# authentication costs, and a token never changes (nothing revokes a token before its expiry).
VERIFIED_CACHE_SIZE = 10_000
_verified: OrderedDict[tuple[str, str, str], tuple[Principal, float]] = OrderedDict()
_verified_lock = threading.Lock()
_clock = time.time


def issue_token(
    *,
    data_dir: Path,
    issuer: str,
    subject: str,
    org: str,
    role: Role | str,
    ttl: int = DEFAULT_TTL,
    phone: str | None = None,
    now: float | None = None,
) -> str:
    """Sign a bearer token for a subject of an organisation with a role, valid for ttl seconds."""
    try:
        role = Role(role)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise BadInput(f"unknown role {role!r}; roles are {roles}") from None
    if not 1 <= ttl <= MAX_TTL:
        raise BadInput(f"ttl must be between 1 and {MAX_TTL} seconds")
    if not org or not subject:
        raise BadInput("a token needs an organisation and a subject")
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "org": org,
        "role": role.value,
        "iat": issued,
        "exp": issued + ttl,
        "jti": uuid.uuid4().hex,
    }
    if phone is not None:
        claims["phone"] = phone
    return jwt.encode(claims, node_key(data_dir), algorithm="EdDSA")


def verify_token(*, data_dir: Path, issuer: str, token: str) -> Principal:
    """Check a token's signature, issuer and expiry and return its principal, or raise 401."""
    hit = cached_principal(data_dir=data_dir, issuer=issuer, token=token)
    if hit is not None:
        return hit
    key = (str(data_dir), issuer, token)
    principal, expires = _verify(data_dir=data_dir, issuer=issuer, token=token)
    with _verified_lock:
        _verified[key] = (principal, expires)
        if len(_verified) > VERIFIED_CACHE_SIZE:
            _verified.popitem(last=False)
    return principal


def cached_principal(*, data_dir: Path, issuer: str, token: str) -> Principal | None:
    """Return the principal of a token this node verified before and that is still valid."""
    key = (str(data_dir), issuer, token)
    with _verified_lock:
        hit = _verified.get(key)
        if hit is None or _clock() >= hit[1]:
            return None
        _verified.move_to_end(key)
        return hit[0]


def forget_verified() -> None:
    """Drop the verified-token cache (tests, or after the node key changed)."""
    with _verified_lock:
        _verified.clear()


def _verify(*, data_dir: Path, issuer: str, token: str) -> tuple[Principal, float]:
    try:
        claims = jwt.decode(
            token,
            node_key(data_dir).public_key(),
            algorithms=["EdDSA"],
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "iss", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired; ask for a new one") from None
    except jwt.InvalidIssuerError:
        raise Unauthorized("the token was issued by another node") from None
    except jwt.PyJWTError:
        raise Unauthorized("the token is not valid (bad signature or format)") from None
    try:
        role = Role(str(claims.get("role")))
    except ValueError:
        raise Unauthorized("the token carries an unknown role") from None
    org = claims.get("org")
    if not isinstance(org, str) or not org:
        raise Unauthorized("the token names no organisation")
    phone = claims.get("phone")
    principal = Principal(
        subject=str(claims["sub"]),
        org=org,
        role=role,
        issuer=str(claims["iss"]),
        token_id=str(claims.get("jti")) if claims.get("jti") else None,
        phone=phone if isinstance(phone, str) else None,
    )
    return principal, float(claims["exp"]) + LEEWAY_SECONDS
