"""Identity: organisations, users, service accounts, API keys, sign-in, one-time codes.

Secrets are never stored in clear. Passwords are chosen by people, so they are hashed with
scrypt (memory-hard, random salt, parameters kept in the hash string); client secrets and API
keys are 256-bit random strings, for which one SHA-256 is enough. Phone numbers and one-time
codes are hashed with a key derived from the node key, because both have so few possible
values that a plain hash would be reversed by trying them all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from citybrain.core.errors import (
    BadInput,
    Conflict,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
)
from citybrain.governance.audit import service as audit
from citybrain.governance.identity.models import (
    MOBILE,
    ApiKeyCreate,
    ApiKeyIssued,
    ApiKeyRead,
    OrgCreate,
    OrgKind,
    OrgRead,
    OtpSent,
    ServiceAccountCreate,
    ServiceAccountIssued,
    ServiceAccountRead,
    TokenResponse,
    UserCreate,
    UserRead,
    identity_api_keys,
    identity_orgs,
    identity_otp_codes,
    identity_service_accounts,
    identity_signin_failures,
    identity_users,
)
from citybrain.governance.identity.tokens import DEFAULT_TTL, issue_token
from citybrain.governance.keys import node_key
from citybrain.governance.principal import BUREAU_ORG, Principal, Role

CITIZENS_ORG = "citizens"
CITIZEN_TTL = 1800
SERVICE_TTL = DEFAULT_TTL
USER_TTL = DEFAULT_TTL
OTP_LIFETIME = timedelta(minutes=5)
MAX_FAILURES = 5
WINDOW = timedelta(minutes=15)
API_KEY_PREFIX = "cbk"
# a revoked key stops working at once in the process that revoked it, in others within this
API_KEY_CACHE_SECONDS = 10.0
_API_KEY_CACHE_MAX = 10_000

# scrypt: N=2^14, r=8 costs 16 MiB and about 50 ms per guess (OWASP's minimum for scrypt)
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_DKLEN = 32
_SCRYPT_MAXMEM = 128 * 1024 * 1024

USER_ROLES = frozenset({Role.bureau_admin, Role.steward, Role.operator, Role.auditor})
SERVICE_ROLES = frozenset({Role.service, Role.node})
API_KEY_ROLES = frozenset(set(Role) - {Role.citizen})

_MOBILE = re.compile(MOBILE)
_CODE = re.compile(r"^\d{6}$")
otp_log = logging.getLogger("citybrain.otp")


def _system_clock() -> datetime:
    return datetime.now(UTC)


# the time every expiry and throttling decision uses; tests replace it instead of sleeping
clock: Callable[[], datetime] = _system_clock

DEFAULT_ORGS: tuple[tuple[str, str, str, OrgKind], ...] = (
    (BUREAU_ORG, "大数据局", "Big Data Bureau", OrgKind.bureau),
    ("education", "教育局", "Education Bureau", OrgKind.department),
    ("public_security", "公安局", "Public Security Bureau", OrgKind.department),
    ("natural_resources", "自然资源局", "Natural Resources Bureau", OrgKind.department),
    (
        "housing",
        "住房和城乡建设局",
        "Housing and Urban-Rural Development Bureau",
        OrgKind.department,
    ),
    (
        "human_resources",
        "人力资源和社会保障局",
        "Human Resources and Social Security Bureau",
        OrgKind.department,
    ),
    ("medical_security", "医疗保障局", "Medical Security Bureau", OrgKind.department),
    ("civil_affairs", "民政局", "Civil Affairs Bureau", OrgKind.department),
    ("health", "卫生健康委员会", "Health Commission", OrgKind.department),
    ("city_management", "城市管理局", "City Management Bureau", OrgKind.department),
    ("transport", "交通运输局", "Transport Bureau", OrgKind.department),
    ("ecology_environment", "生态环境局", "Ecology and Environment Bureau", OrgKind.department),
    ("emergency_management", "应急管理局", "Emergency Management Bureau", OrgKind.department),
    ("market_regulation", "市场监督管理局", "Market Regulation Bureau", OrgKind.department),
    ("agriculture", "农业农村局", "Agriculture and Rural Affairs Bureau", OrgKind.department),
)


# --- small helpers -------------------------------------------------------------------------


def _now(now: datetime | None) -> datetime:
    return _aware(now if now is not None else clock())


def _aware(value: datetime) -> datetime:
    """Return a UTC-aware datetime; SQLite hands back naive ones for UTC columns."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _maybe_aware(value: datetime | None) -> datetime | None:
    return _aware(value) if value is not None else None


def mask_phone(phone: str) -> str:
    """Return a phone number with its middle digits hidden: 138****1234."""
    if len(phone) < 8:
        return "****"
    return phone[:3] + "****" + phone[-4:]


def validate_phone(phone: str) -> str:
    """Return the phone number if it is a mainland mobile number, else raise BadInput."""
    phone = phone.strip()
    if not _MOBILE.fullmatch(phone):
        raise BadInput("the phone must be a mainland mobile number of 11 digits, like 13812341234")
    return phone


def _role(value: Role | str, allowed: Iterable[Role], what: str) -> Role:
    try:
        role = Role(value)
    except ValueError:
        names = ", ".join(r.value for r in Role)
        raise BadInput(f"unknown role {value!r}; roles are {names}") from None
    allowed = frozenset(allowed)
    if role not in allowed:
        names = ", ".join(sorted(r.value for r in allowed))
        raise Unprocessable(f"{what} may hold the roles {names}, not {role.value}")
    return role


def _check_org(conn: Connection, org: str, role: Role) -> None:
    if conn.execute(select(identity_orgs.c.id).where(identity_orgs.c.id == org)).first() is None:
        raise Unprocessable(f"no organisation {org!r} on this node; add it first")
    if role is Role.bureau_admin and org != BUREAU_ORG:
        raise Unprocessable(f"only the organisation {BUREAU_ORG!r} may hold the role bureau_admin")


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _pepper(data_dir: Path) -> bytes:
    """Return the node's key for hashing phones and codes, derived from the node key."""
    raw = node_key(data_dir).private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return hashlib.sha256(b"citybrain identity: phones and one-time codes\0" + raw).digest()


def _keyed(pepper: bytes, value: str) -> str:
    return hmac.new(pepper, value.encode(), hashlib.sha256).hexdigest()


# --- passwords -----------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """Hash a password with scrypt and a random salt: "scrypt$n$r$p$salt$hash"."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        dklen=SCRYPT_DKLEN,
        maxmem=_SCRYPT_MAXMEM,
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Return True if the password matches the stored scrypt hash (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=_SCRYPT_MAXMEM,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


_dummy_hash: list[str] = []


def _burn_password_check(password: str) -> None:
    """Spend the time of one password check, so an unknown username answers as slowly."""
    if not _dummy_hash:
        _dummy_hash.append(hash_password(secrets.token_urlsafe(16)))
    verify_password(password, _dummy_hash[0])


# --- throttling ----------------------------------------------------------------------------


def _retry_message(what: str, until: datetime, now: datetime) -> TooManyRequests:
    seconds = max(1, int((until - now).total_seconds() + 0.999))
    minutes = (seconds + 59) // 60
    return TooManyRequests(
        f"too many failed attempts for {what}; try again after "
        f"{until.strftime('%H:%M:%S')} UTC (in about {minutes} minute{'s' * (minutes != 1)})",
        detail={"retry_after": seconds},
    )


def _check_throttle(conn: Connection, key: str, what: str, now: datetime) -> None:
    """Refuse with 429 while the key is locked, whatever the credential."""
    row = conn.execute(
        select(identity_signin_failures.c.locked_until).where(identity_signin_failures.c.key == key)
    ).first()
    if row is not None and row.locked_until is not None:
        until = _aware(row.locked_until)
        if until > now:
            raise _retry_message(what, until, now)


def _record_failure(conn: Connection, key: str, now: datetime) -> bool:
    """Count one failure for the key; return True when this failure locks it."""
    table = identity_signin_failures
    row = conn.execute(
        select(table.c.failures, table.c.window_start).where(table.c.key == key).with_for_update()
    ).first()
    if row is None or _aware(row.window_start) + WINDOW <= now:
        failures, start = 1, now
    else:
        failures, start = int(row.failures) + 1, _aware(row.window_start)
    # the lock runs a whole window from the failure that tripped it
    locked = now + WINDOW if failures >= MAX_FAILURES else None
    values: dict[str, Any] = {"failures": failures, "window_start": start, "locked_until": locked}
    if row is None:
        try:
            with conn.begin_nested():
                conn.execute(insert(table).values(key=key, **values))
        except IntegrityError:
            # another request inserted the row at the same moment: count on top of it
            conn.execute(
                update(table)
                .where(table.c.key == key)
                .values(failures=table.c.failures + 1, locked_until=locked)
            )
    else:
        conn.execute(update(table).where(table.c.key == key).values(**values))
    return locked is not None


def _clear_failures(conn: Connection, key: str) -> None:
    conn.execute(delete(identity_signin_failures).where(identity_signin_failures.c.key == key))


@contextmanager
def _unique(message: str) -> Iterator[None]:
    """Turn a unique-constraint race (another request won) into a 409 after the rollback."""
    try:
        yield
    except IntegrityError:
        raise Conflict(message) from None


# --- organisations -------------------------------------------------------------------------


def _org_read(row: Any) -> OrgRead:
    return OrgRead(
        id=row.id,
        name_zh=row.name_zh,
        name_en=row.name_en,
        kind=OrgKind(row.kind),
        created_at=_aware(row.created_at),
    )


def seed_default_orgs(*, engine: Engine) -> int:
    """Create the bureau and the standard departments of a node if missing; return how many."""
    created = 0
    with engine.begin() as conn:
        existing = set(conn.execute(select(identity_orgs.c.id)).scalars())
        now = _now(None)
        for org_id, name_zh, name_en, kind in DEFAULT_ORGS:
            if org_id in existing:
                continue
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(identity_orgs).values(
                            id=org_id,
                            name_zh=name_zh,
                            name_en=name_en,
                            kind=kind.value,
                            created_at=now,
                        )
                    )
                created += 1
            except IntegrityError:
                pass  # another process of the node seeded it at the same moment
    return created


def create_org(*, engine: Engine, data_dir: Path, actor: Principal, org: OrgCreate) -> OrgRead:
    """Add an organisation (a department, the bureau, or another node)."""
    now = _now(None)
    with _unique(f"the organisation {org.id!r} exists already"), engine.begin() as conn:
        if conn.execute(select(identity_orgs.c.id).where(identity_orgs.c.id == org.id)).first():
            raise Conflict(f"the organisation {org.id!r} exists already")
        conn.execute(
            insert(identity_orgs).values(
                id=org.id,
                name_zh=org.name_zh,
                name_en=org.name_en,
                kind=org.kind.value,
                created_at=now,
            )
        )
        audit.append(
            data_dir=data_dir,
            principal=actor,
            action="identity.org.create",
            resource=f"org:{org.id}",
            result="ok",
            detail={"kind": org.kind.value},
        )
    return OrgRead(
        id=org.id, name_zh=org.name_zh, name_en=org.name_en, kind=org.kind, created_at=now
    )


def list_orgs(*, engine: Engine) -> list[OrgRead]:
    """Return the organisations of the node, by id."""
    with engine.connect() as conn:
        rows = conn.execute(select(identity_orgs).order_by(identity_orgs.c.id)).all()
    return [_org_read(r) for r in rows]


# --- users ---------------------------------------------------------------------------------


def _user_read(row: Any) -> UserRead:
    return UserRead(
        id=row.id,
        username=row.username,
        org=row.org,
        role=Role(row.role),
        phone=row.phone,
        active=bool(row.active),
        created_at=_aware(row.created_at),
    )


def create_user(*, engine: Engine, data_dir: Path, actor: Principal, user: UserCreate) -> UserRead:
    """Add a user of an organisation with a role; the password is kept only as a scrypt hash."""
    role = _role(user.role, USER_ROLES, "a user")
    password_hash = hash_password(user.password)
    now = _now(None)
    user_id = uuid.uuid4().hex
    with _unique(f"the username {user.username!r} is taken"), engine.begin() as conn:
        _check_org(conn, user.org, role)
        taken = conn.execute(
            select(identity_users.c.id).where(identity_users.c.username == user.username)
        ).first()
        if taken:
            raise Conflict(f"the username {user.username!r} is taken")
        conn.execute(
            insert(identity_users).values(
                id=user_id,
                username=user.username,
                org=user.org,
                role=role.value,
                password_hash=password_hash,
                phone=user.phone,
                active=True,
                created_at=now,
            )
        )
        audit.append(
            data_dir=data_dir,
            principal=actor,
            action="identity.user.create",
            resource=f"user:{user.username}",
            result="ok",
            detail={"org": user.org, "role": role.value},
        )
    return UserRead(
        id=user_id,
        username=user.username,
        org=user.org,
        role=role,
        phone=user.phone,
        active=True,
        created_at=now,
    )


def list_users(*, engine: Engine, org: str | None = None) -> list[UserRead]:
    """Return the users of the node (or of one organisation), by username."""
    query = select(identity_users).order_by(identity_users.c.username)
    if org is not None:
        query = query.where(identity_users.c.org == org)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [_user_read(r) for r in rows]


# --- service accounts ----------------------------------------------------------------------


def _account_read(row: Any) -> ServiceAccountRead:
    return ServiceAccountRead(
        client_id=row.client_id,
        org=row.org,
        role=Role(row.role),
        label=row.label,
        created_at=_aware(row.created_at),
        revoked_at=_maybe_aware(row.revoked_at),
    )


def create_service_account(
    *, engine: Engine, data_dir: Path, actor: Principal, account: ServiceAccountCreate
) -> ServiceAccountIssued:
    """Add a service account; its secret is returned this once and kept only as a hash."""
    role = _role(account.role, SERVICE_ROLES, "a service account")
    client_id = account.client_id or f"{account.org.replace('_', '-')}-{secrets.token_hex(4)}"
    secret = secrets.token_urlsafe(32)
    now = _now(None)
    with _unique(f"the client id {client_id!r} is taken"), engine.begin() as conn:
        _check_org(conn, account.org, role)
        table = identity_service_accounts
        if conn.execute(select(table.c.client_id).where(table.c.client_id == client_id)).first():
            raise Conflict(f"the client id {client_id!r} is taken")
        conn.execute(
            insert(table).values(
                client_id=client_id,
                org=account.org,
                role=role.value,
                label=account.label,
                secret_hash=_sha256(secret),
                created_at=now,
                revoked_at=None,
            )
        )
        audit.append(
            data_dir=data_dir,
            principal=actor,
            action="identity.service_account.create",
            resource=f"client:{client_id}",
            result="ok",
            detail={"org": account.org, "role": role.value},
        )
    return ServiceAccountIssued(
        client_id=client_id,
        org=account.org,
        role=role,
        label=account.label,
        created_at=now,
        revoked_at=None,
        client_secret=secret,
    )


def list_service_accounts(*, engine: Engine) -> list[ServiceAccountRead]:
    """Return the service accounts of the node, by client id."""
    table = identity_service_accounts
    with engine.connect() as conn:
        rows = conn.execute(select(table).order_by(table.c.client_id)).all()
    return [_account_read(r) for r in rows]


def revoke_service_account(
    *, engine: Engine, data_dir: Path, actor: Principal, client_id: str
) -> ServiceAccountRead:
    """Revoke a service account: it can no longer get tokens (issued ones run out)."""
    table = identity_service_accounts
    with engine.begin() as conn:
        row = conn.execute(select(table).where(table.c.client_id == client_id)).first()
        if row is None:
            raise NotFound(f"no service account {client_id!r}")
        if row.revoked_at is None:
            now = _now(None)
            conn.execute(
                update(table)
                .where(table.c.client_id == client_id, table.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            audit.append(
                data_dir=data_dir,
                principal=actor,
                action="identity.service_account.revoke",
                resource=f"client:{client_id}",
                result="ok",
            )
            row = conn.execute(select(table).where(table.c.client_id == client_id)).first()
    return _account_read(row)


# --- API keys ------------------------------------------------------------------------------

_key_cache: dict[tuple[str, str], tuple[float, Principal]] = {}
_key_cache_lock = threading.Lock()


def _key_read(row: Any) -> ApiKeyRead:
    return ApiKeyRead(
        id=row.id,
        prefix=row.prefix,
        org=row.org,
        role=Role(row.role),
        label=row.label,
        created_at=_aware(row.created_at),
        revoked_at=_maybe_aware(row.revoked_at),
        last_used_at=_maybe_aware(row.last_used_at),
    )


def issue_api_key(
    *, engine: Engine, data_dir: Path, actor: Principal, spec: ApiKeyCreate
) -> ApiKeyIssued:
    """Issue an API key "cbk_PREFIX_SECRET"; it is returned this once and kept only hashed."""
    role = _role(spec.role, API_KEY_ROLES, "an API key")
    key_id = uuid.uuid4().hex
    now = _now(None)
    with (
        _unique("an API key with this prefix was issued at the same moment; try again"),
        engine.begin() as conn,
    ):
        _check_org(conn, spec.org, role)
        for _attempt in range(5):
            prefix = secrets.token_hex(4)
            taken = select(identity_api_keys.c.id).where(identity_api_keys.c.prefix == prefix)
            if conn.execute(taken).first() is None:
                break  # the 32-bit prefix is free (a collision is rare; then draw again)
        else:
            raise ServiceUnavailable("could not draw a free API key prefix; try again")
        key = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        conn.execute(
            insert(identity_api_keys).values(
                id=key_id,
                prefix=prefix,
                key_hash=_sha256(key),
                org=spec.org,
                role=role.value,
                label=spec.label,
                created_at=now,
            )
        )
        audit.append(
            data_dir=data_dir,
            principal=actor,
            action="identity.api_key.issue",
            resource=f"apikey:{key_id}",
            result="ok",
            detail={"org": spec.org, "role": role.value, "prefix": prefix},
        )
    return ApiKeyIssued(
        id=key_id,
        prefix=prefix,
        org=spec.org,
        role=role,
        label=spec.label,
        created_at=now,
        revoked_at=None,
        last_used_at=None,
        key=key,
    )


def list_api_keys(*, engine: Engine) -> list[ApiKeyRead]:
    """Return the API keys of the node (without their secrets), newest first."""
    table = identity_api_keys
    with engine.connect() as conn:
        rows = conn.execute(select(table).order_by(table.c.created_at.desc(), table.c.id)).all()
    return [_key_read(r) for r in rows]


def revoke_api_key(*, engine: Engine, data_dir: Path, actor: Principal, key_id: str) -> ApiKeyRead:
    """Revoke an API key; requests carrying it are refused from now on."""
    table = identity_api_keys
    with engine.begin() as conn:
        row = conn.execute(select(table).where(table.c.id == key_id)).first()
        if row is None:
            raise NotFound(f"no API key {key_id!r}")
        if row.revoked_at is None:
            conn.execute(
                update(table)
                .where(table.c.id == key_id, table.c.revoked_at.is_(None))
                .values(revoked_at=_now(None))
            )
            audit.append(
                data_dir=data_dir,
                principal=actor,
                action="identity.api_key.revoke",
                resource=f"apikey:{key_id}",
                result="ok",
            )
            row = conn.execute(select(table).where(table.c.id == key_id)).first()
    with _key_cache_lock:
        for cache_key in [k for k, (_, p) in _key_cache.items() if p.subject == f"apikey:{key_id}"]:
            del _key_cache[cache_key]
    return _key_read(row)


def resolve_api_key(
    *, engine: Engine, issuer: str, key: str, now: datetime | None = None
) -> Principal:
    """Return the principal of an API key, or raise Unauthorized if unknown or revoked."""
    digest = _sha256(key)
    cache_key = (str(engine.url), digest)
    moment = time.monotonic()
    with _key_cache_lock:
        cached = _key_cache.get(cache_key)
    if cached is not None and cached[0] > moment:
        return cached[1]
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or len(parts[1]) > 16:
        raise Unauthorized("the API key is not valid")
    table = identity_api_keys
    with engine.begin() as conn:
        row = conn.execute(select(table).where(table.c.prefix == parts[1])).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            raise Unauthorized("the API key is not valid")
        if row.revoked_at is not None:
            raise Unauthorized("the API key has been revoked")
        # written on a cache miss only: at most once per key per process per cache period
        conn.execute(update(table).where(table.c.id == row.id).values(last_used_at=_now(now)))
    principal = Principal(
        subject=f"apikey:{row.id}", org=row.org, role=Role(row.role), issuer=issuer
    )
    with _key_cache_lock:
        if len(_key_cache) >= _API_KEY_CACHE_MAX:
            _key_cache.clear()
        _key_cache[cache_key] = (moment + API_KEY_CACHE_SECONDS, principal)
    return principal


# --- sign-in -------------------------------------------------------------------------------


def _signin_audit(
    data_dir: Path,
    principal: Principal | None,
    resource: str,
    result: str,
    detail: dict[str, Any],
) -> None:
    audit.append(
        data_dir=data_dir,
        principal=principal,
        action="signin",
        resource=resource,
        result=result,
        detail=detail,
    )


def _unknown(kind: str, name: str) -> str:
    """Name an unknown account in the log by a hash: it may be a secret typed in the wrong field."""
    return f"{kind}:unknown-{_sha256(name)[:12]}"


def _known_user(conn: Connection, username: str) -> bool:
    query = select(identity_users.c.id).where(identity_users.c.username == username)
    return conn.execute(query).first() is not None


def _token(data_dir: Path, principal: Principal, ttl: int) -> TokenResponse:
    token = issue_token(
        data_dir=data_dir,
        issuer=principal.issuer,
        subject=principal.subject,
        org=principal.org,
        role=principal.role,
        ttl=ttl,
        phone=principal.phone,
    )
    return TokenResponse(access_token=token, expires_in=ttl)


def password_grant(
    *,
    engine: Engine,
    data_dir: Path,
    issuer: str,
    username: str,
    password: str,
    now: datetime | None = None,
) -> TokenResponse:
    """Sign a user in with username and password and return a bearer token."""
    moment = _now(now)
    # hashed: what was typed as a username may be a password typed in the wrong field
    key = f"user:{_sha256(username)}"
    resource = f"user:{username}"
    with engine.begin() as conn:
        try:
            _check_throttle(conn, key, "this username", moment)
        except TooManyRequests:
            _signin_audit(
                data_dir,
                None,
                resource if _known_user(conn, username) else _unknown("user", username),
                "refused",
                {"grant": "password", "reason": "throttled"},
            )
            raise
        row = conn.execute(
            select(identity_users).where(identity_users.c.username == username)
        ).first()
        if row is None:
            _burn_password_check(password)
            ok = False
        else:
            ok = verify_password(password, row.password_hash) and bool(row.active)
        if not ok or row is None:
            locked = _record_failure(conn, key, moment)
            # an unknown username may be a password typed in the wrong field: log a hash
            if row is None:
                resource = _unknown("user", username)
            reason = "inactive" if row is not None and not row.active else "wrong credentials"
            _signin_audit(
                data_dir,
                None,
                resource,
                "refused",
                {"grant": "password", "reason": reason, "locked": locked},
            )
        else:
            _clear_failures(conn, key)
            principal = Principal(
                subject=f"user:{row.username}", org=row.org, role=Role(row.role), issuer=issuer
            )
            _signin_audit(data_dir, principal, resource, "ok", {"grant": "password"})
    if not ok:
        raise Unauthorized("the username or password is wrong")
    return _token(data_dir, principal, USER_TTL)


def client_credentials_grant(
    *,
    engine: Engine,
    data_dir: Path,
    issuer: str,
    client_id: str,
    client_secret: str,
    now: datetime | None = None,
) -> TokenResponse:
    """Sign a service account in with its client id and secret and return a bearer token."""
    moment = _now(now)
    key = f"client:{_sha256(client_id)}"
    resource = f"client:{client_id}"
    table = identity_service_accounts
    with engine.begin() as conn:
        try:
            _check_throttle(conn, key, "this client id", moment)
        except TooManyRequests:
            _signin_audit(
                data_dir,
                None,
                _unknown("client", client_id),
                "refused",
                {"grant": "client_credentials", "reason": "throttled"},
            )
            raise
        row = conn.execute(select(table).where(table.c.client_id == client_id)).first()
        ok = (
            row is not None
            and hmac.compare_digest(row.secret_hash, _sha256(client_secret))
            and row.revoked_at is None
        )
        if not ok or row is None:
            locked = _record_failure(conn, key, moment)
            reason = "revoked" if row is not None and row.revoked_at else "wrong credentials"
            _signin_audit(
                data_dir,
                None,
                resource if row is not None else _unknown("client", client_id),
                "refused",
                {"grant": "client_credentials", "reason": reason, "locked": locked},
            )
        else:
            _clear_failures(conn, key)
            principal = Principal(
                subject=f"service:{row.client_id}", org=row.org, role=Role(row.role), issuer=issuer
            )
            _signin_audit(data_dir, principal, resource, "ok", {"grant": "client_credentials"})
    if not ok:
        raise Unauthorized("the client id or secret is wrong, or the account is revoked")
    return _token(data_dir, principal, SERVICE_TTL)


# --- citizens: one-time codes --------------------------------------------------------------


class OtpChannel(Protocol):
    """Delivers a one-time code to a phone (SMS gateway, or the demo outbox)."""

    def deliver(self, *, phone: str, code: str, expires_at: datetime) -> None:
        """Send the code to the phone; raise a CityBrainError if it cannot be sent."""


class OutboxChannel:
    """Demo delivery: log the code and append it to DATA_DIR/otp_outbox.log."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "otp_outbox.log"

    def deliver(self, *, phone: str, code: str, expires_at: datetime) -> None:
        """Write "code for 138****1234: 123456" to the citybrain.otp logger and the outbox."""
        line = f"code for {mask_phone(phone)}: {code}"
        otp_log.info(line)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(f"{expires_at.isoformat()} {line}\n")
        except OSError as exc:
            raise ServiceUnavailable(f"cannot write the code outbox: {exc.strerror}") from None


def request_otp(
    *,
    engine: Engine,
    data_dir: Path,
    phone: str,
    channel: OtpChannel | None = None,
    now: datetime | None = None,
) -> OtpSent:
    """Store a hashed 6-digit code for a phone, valid 5 minutes, and hand it to the channel."""
    phone = validate_phone(phone)
    moment = _now(now)
    pepper = _pepper(data_dir)
    phone_hash = _keyed(pepper, phone)
    code = f"{secrets.randbelow(10**6):06d}"
    expires = moment + OTP_LIFETIME
    with engine.begin() as conn:
        try:
            _check_throttle(conn, f"phone:{phone_hash}", "this phone", moment)
            # sending is limited too: each code costs an SMS and bothers the phone's owner
            _check_throttle(conn, f"otp-send:{phone_hash}", "codes to this phone", moment)
        except TooManyRequests:
            audit.append(
                data_dir=data_dir,
                principal=None,
                action="otp_request",
                resource=f"citizen:{mask_phone(phone)}",
                result="refused",
                detail={"reason": "throttled"},
            )
            raise
        _record_failure(conn, f"otp-send:{phone_hash}", moment)
        conn.execute(
            insert(identity_otp_codes).values(
                id=uuid.uuid4().hex,
                phone_hash=phone_hash,
                code_hash=_keyed(pepper, f"{phone}:{code}"),
                created_at=moment,
                expires_at=expires,
                used_at=None,
                attempts=0,
            )
        )
        audit.append(
            data_dir=data_dir,
            principal=None,
            action="otp_request",
            resource=f"citizen:{mask_phone(phone)}",
            result="ok",
        )
    (channel or OutboxChannel(data_dir)).deliver(phone=phone, code=code, expires_at=expires)
    return OtpSent(phone=mask_phone(phone), expires_in=int(OTP_LIFETIME.total_seconds()))


def verify_otp(
    *,
    engine: Engine,
    data_dir: Path,
    issuer: str,
    phone: str,
    code: str,
    now: datetime | None = None,
) -> TokenResponse:
    """Sign a citizen in with a one-time code (usable once) and return a bearer token."""
    phone = consume_otp(engine=engine, data_dir=data_dir, phone=phone, code=code, now=now)
    principal = Principal(
        subject=f"citizen:{phone}",
        org=CITIZENS_ORG,
        role=Role.citizen,
        issuer=issuer,
        phone=phone,
    )
    _signin_audit(data_dir, principal, f"citizen:{mask_phone(phone)}", "ok", {"grant": "otp"})
    return _token(data_dir, principal, CITIZEN_TTL)


def consume_otp(
    *,
    engine: Engine,
    data_dir: Path,
    phone: str,
    code: str,
    now: datetime | None = None,
) -> str:
    """Check and use up a phone's one-time code; return the phone, or raise 401 (audited)."""
    phone = validate_phone(phone)
    code = code.strip()
    if not _CODE.fullmatch(code):
        raise BadInput("the code is the 6 digits sent to the phone")
    moment = _now(now)
    pepper = _pepper(data_dir)
    phone_hash = _keyed(pepper, phone)
    code_hash = _keyed(pepper, f"{phone}:{code}")
    key = f"phone:{phone_hash}"
    resource = f"citizen:{mask_phone(phone)}"
    table = identity_otp_codes
    failure: str | None = None
    with engine.begin() as conn:
        try:
            _check_throttle(conn, key, "this phone", moment)
        except TooManyRequests:
            _signin_audit(
                data_dir, None, resource, "refused", {"grant": "otp", "reason": "throttled"}
            )
            raise
        # codes of the last window only: older ones are expired anyway
        rows = conn.execute(
            select(table)
            .where(table.c.phone_hash == phone_hash, table.c.created_at >= moment - WINDOW)
            .order_by(table.c.created_at.desc())
        ).all()
        match = next((r for r in rows if hmac.compare_digest(r.code_hash, code_hash)), None)
        if match is None:
            failure = "wrong code"
            live = [r for r in rows if r.used_at is None]
            if live:
                conn.execute(
                    update(table)
                    .where(table.c.id == live[0].id)
                    .values(attempts=table.c.attempts + 1)
                )
        elif match.used_at is not None:
            failure = "code used already"
        elif _aware(match.expires_at) <= moment:
            failure = "code expired"
        else:
            used = conn.execute(
                update(table)
                .where(table.c.id == match.id, table.c.used_at.is_(None))
                .values(used_at=moment)
            )
            if used.rowcount != 1:
                failure = "code used already"  # a concurrent request took it first
        if failure is not None:
            locked = _record_failure(conn, key, moment)
            _signin_audit(
                data_dir,
                None,
                resource,
                "refused",
                {"grant": "otp", "reason": failure, "locked": locked},
            )
        else:
            _clear_failures(conn, key)
    if failure == "code expired":
        raise Unauthorized("the code has expired; ask for a new one")
    if failure == "code used already":
        raise Unauthorized("the code has been used already; ask for a new one")
    if failure is not None:
        raise Unauthorized("the code is wrong")
    return phone
