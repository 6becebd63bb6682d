"""Trust between nodes: the peer table, and the short-lived tokens nodes call each other with.

A node accepts a call from another node only when its administrator registered that node's
public key beforehand (`citybrain nodes add-child` / `set-parent`) and the administrative
codes make it this node's child or parent. Tokens are EdDSA JWTs signed with the calling
node's key: iss = caller, aud = receiver, sub = "node:<caller>", role "node".
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from sqlalchemy import Connection, Engine, insert, select, update

from citybrain.core.errors import BadInput, Forbidden, NotFound, Unauthorized, Unprocessable
from citybrain.federation.models import Relation, peers
from citybrain.geo import service as geo
from citybrain.governance.keys import load_public_key, node_key, public_key_pem
from citybrain.governance.principal import Principal, Role

PEER_TOKEN_TTL = 300
LEEWAY_SECONDS = 5


def _system_clock() -> datetime:
    return datetime.now(UTC)


clock: Callable[[], datetime] = _system_clock
"""The module's clock; tests replace it (or pass `now=`) to move time without sleeping."""


def utc(moment: datetime | None = None) -> datetime:
    """Return moment (or the clock's now) as an aware UTC datetime."""
    value = moment if moment is not None else clock()
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def check_relation(*, own_code: str, code: str, relation: Relation) -> str:
    """Refuse a peer the administrative codes do not make our child or parent; return its level."""
    own = geo.get_unit(own_code)
    unit = geo.get_unit(code)
    if relation is Relation.child:
        if unit.parent != own_code or unit.level.value not in ("city", "county"):
            raise Unprocessable(
                f"{code} ({unit.name_en}) is not a child of {own_code} ({own.name_en}); "
                f"its parent is {unit.parent}"
            )
    elif own.parent != code:
        raise Unprocessable(
            f"{code} ({unit.name_en}) is not the parent of {own_code} ({own.name_en}); "
            f"its parent is {own.parent}"
        )
    return unit.level.value


def parse_public_key(pem: str) -> str:
    """Check that pem is an Ed25519 public key and return it normalised."""
    try:
        return public_key_pem(load_public_key(pem.strip() + "\n"))
    except ValueError as exc:
        raise BadInput(f"not an Ed25519 public key in PEM form: {exc}") from None


def own_public_key(data_dir: Path) -> str:
    """Return the PEM public key of the node whose data folder this is (creating the key)."""
    return public_key_pem(node_key(data_dir))


def add_peer(
    *,
    engine: Engine,
    own_code: str,
    code: str,
    relation: Relation,
    url: str,
    public_key: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Trust a child or the parent: record its code, URL and public key (replacing any before)."""
    if not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
        raise BadInput(f"the URL of node {code} must be http:// or https://, not {url!r}")
    if code == own_code:
        raise Unprocessable("a node cannot be its own peer")
    level = check_relation(own_code=own_code, code=code, relation=relation)
    pem = parse_public_key(public_key)
    stamp = utc(now)
    with engine.begin() as conn:
        if relation is Relation.parent:
            other = conn.execute(
                select(peers.c.code).where(
                    peers.c.relation == Relation.parent.value, peers.c.code != code
                )
            ).first()
            if other is not None:
                raise Unprocessable(f"this node already has the parent {other.code}")
        exists = conn.execute(select(peers.c.code).where(peers.c.code == code)).first()
        values = {
            "level": level,
            "relation": relation.value,
            "url": url.rstrip("/"),
            "public_key": pem,
        }
        if exists:
            # a new key or URL from the administrator; contact starts afresh
            conn.execute(
                update(peers)
                .where(peers.c.code == code)
                .values(status="registered", last_error=None, **values)
            )
        else:
            conn.execute(
                insert(peers).values(code=code, registered_at=stamp, status="registered", **values)
            )
    return get_peer(engine=engine, code=code)


def get_peer(*, engine: Engine | Connection, code: str) -> dict[str, Any]:
    """Return one peer's row as a dict, or raise NotFound."""
    if isinstance(engine, Engine):
        with engine.connect() as conn:
            return get_peer(engine=conn, code=code)
    row = engine.execute(select(peers).where(peers.c.code == code)).mappings().first()
    if row is None:
        raise NotFound(f"node {code} is not a registered peer of this node")
    return dict(row)


def parent_peer(*, engine: Engine) -> dict[str, Any] | None:
    """Return the registered parent, if any."""
    with engine.connect() as conn:
        row = (
            conn.execute(select(peers).where(peers.c.relation == Relation.parent.value))
            .mappings()
            .first()
        )
    return dict(row) if row else None


def list_peers(*, engine: Engine, relation: Relation | None = None) -> list[dict[str, Any]]:
    """Return the registered peers (parent first, then children by code)."""
    query = select(peers).order_by(peers.c.relation.desc(), peers.c.code)
    if relation is not None:
        query = query.where(peers.c.relation == relation.value)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def touch_peer(
    *,
    engine: Engine | Connection,
    code: str,
    ok: bool = True,
    error: str | None = None,
    version: str | None = None,
    url: str | None = None,
    now: datetime | None = None,
) -> None:
    """Record a contact with a peer (or a failed attempt to reach it)."""
    values: dict[str, Any]
    if ok:
        values = {"last_contact_at": utc(now), "status": "ok", "last_error": None}
        if version is not None:
            values["version"] = version
        if url is not None:
            values["url"] = url.rstrip("/")
    else:
        values = {"status": "unreachable", "last_error": (error or "")[:1000]}
    statement = update(peers).where(peers.c.code == code).values(**values)
    if isinstance(engine, Engine):
        with engine.begin() as conn:
            conn.execute(statement)
    else:
        engine.execute(statement)


def peer_token(
    *,
    data_dir: Path,
    caller: str,
    audience: str,
    ttl: int = PEER_TOKEN_TTL,
    now: float | None = None,
) -> str:
    """Sign a token with this node's key for a call from node `caller` to node `audience`."""
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": caller,
        "aud": audience,
        "sub": f"node:{caller}",
        "org": f"node-{caller}",
        "role": Role.node.value,
        "iat": issued,
        "exp": issued + ttl,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, node_key(data_dir), algorithm="EdDSA")


def resolve_peer_token(*, engine: Engine, code: str, token: str) -> Principal | None:
    """Verify a token another node signed for this one; None when this node issued it itself."""
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise Unauthorized("the token is not valid (bad signature or format)") from None
    issuer = unverified.get("iss")
    if not isinstance(issuer, str) or issuer == code:
        return None
    try:
        peer = get_peer(engine=engine, code=issuer)
    except NotFound:
        raise Unauthorized(
            f"the token was issued by node {issuer}, whose key this node has not registered"
        ) from None
    try:
        claims = jwt.decode(
            token,
            load_public_key(peer["public_key"]),
            algorithms=["EdDSA"],
            issuer=issuer,
            audience=code,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "iss", "sub", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the node token has expired") from None
    except jwt.InvalidAudienceError:
        raise Unauthorized(f"the node token is meant for another node, not {code}") from None
    except (jwt.PyJWTError, ValueError):
        raise Unauthorized(
            f"the node token does not carry a valid signature of node {issuer}"
        ) from None
    if claims.get("sub") != f"node:{issuer}" or claims.get("role") != Role.node.value:
        raise Unauthorized("a node token names its node as subject and carries the role node")
    jti = claims.get("jti")
    return Principal(
        subject=f"node:{issuer}",
        org=f"node-{issuer}",
        role=Role.node,
        issuer=issuer,
        token_id=str(jti) if jti else None,
    )


def require_peer_relation(
    *, engine: Engine, own_code: str, principal: Principal, relation: Relation
) -> dict[str, Any]:
    """Return the calling peer when it is our `relation`; 403 for anyone else."""
    if (
        principal.role is not Role.node
        or principal.issuer == own_code
        or principal.subject != f"node:{principal.issuer}"
    ):
        raise Forbidden("this endpoint accepts only calls signed by a registered peer node")
    try:
        peer = get_peer(engine=engine, code=principal.issuer)
    except NotFound:
        raise Forbidden(f"node {principal.issuer} is not a registered peer") from None
    if peer["relation"] != relation.value:
        raise Forbidden(
            f"node {principal.issuer} is registered as this node's {peer['relation']}, "
            f"and only a {relation.value} may call this"
        )
    return peer
