"""Identity: organisations, users, service accounts, API keys, one-time codes, throttling."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
)

from citybrain.core.db import metadata
from citybrain.governance.principal import Role

ORG_ID = r"^[a-z][a-z0-9_-]{0,63}$"
USERNAME = r"^[a-z0-9][a-z0-9._-]{1,63}$"
CLIENT_ID = r"^[a-z0-9][a-z0-9._-]{2,63}$"
MOBILE = r"^1[3-9]\d{9}$"

identity_orgs = Table(
    "identity_orgs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name_zh", String(128), nullable=False),
    Column("name_en", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

identity_users = Table(
    "identity_users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("org", String(64), ForeignKey("identity_orgs.id"), nullable=False),
    Column("role", String(32), nullable=False),
    Column("password_hash", String(256), nullable=False),
    Column("phone", String(16)),
    Column("active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

identity_service_accounts = Table(
    "identity_service_accounts",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("org", String(64), ForeignKey("identity_orgs.id"), nullable=False),
    Column("role", String(32), nullable=False),
    Column("label", String(256), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

identity_api_keys = Table(
    "identity_api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),
    Column("org", String(64), ForeignKey("identity_orgs.id"), nullable=False),
    Column("role", String(32), nullable=False),
    Column("label", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
)

identity_otp_codes = Table(
    "identity_otp_codes",
    metadata,
    Column("id", String(32), primary_key=True),
    # keyed hashes: a phone number has too few possibilities for a plain hash to hide it
    Column("phone_hash", String(64), nullable=False),
    Column("code_hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False),
    Index("ix_identity_otp_codes_phone_hash", "phone_hash", "created_at"),
)

identity_signin_failures = Table(
    "identity_signin_failures",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("locked_until", DateTime(timezone=True)),
)


class OrgKind(StrEnum):
    """What an organisation is on a node."""

    bureau = "bureau"
    department = "department"
    node = "node"


class OrgCreate(BaseModel):
    """An organisation to add: an id slug and its Chinese and English names."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ORG_ID)
    name_zh: str = Field(min_length=1, max_length=128)
    name_en: str = Field(min_length=1, max_length=128)
    kind: OrgKind = OrgKind.department


class OrgRead(BaseModel):
    """An organisation of the node."""

    id: str
    name_zh: str
    name_en: str
    kind: OrgKind
    created_at: datetime


class UserCreate(BaseModel):
    """A person who signs in with a username and password."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=USERNAME)
    org: str = Field(pattern=ORG_ID)
    role: Role
    password: str = Field(min_length=8, max_length=1024, repr=False)
    phone: str | None = Field(None, pattern=MOBILE)


class UserRead(BaseModel):
    """A user as shown to administrators (never the password hash)."""

    id: str
    username: str
    org: str
    role: Role
    phone: str | None
    active: bool
    created_at: datetime


class ServiceAccountCreate(BaseModel):
    """A system of a department that signs in with client credentials."""

    model_config = ConfigDict(extra="forbid")

    org: str = Field(pattern=ORG_ID)
    role: Role = Role.service
    label: str = Field("", max_length=256)
    client_id: str | None = Field(None, pattern=CLIENT_ID)


class ServiceAccountRead(BaseModel):
    """A service account (its secret is never shown again)."""

    client_id: str
    org: str
    role: Role
    label: str
    created_at: datetime
    revoked_at: datetime | None


class ServiceAccountIssued(ServiceAccountRead):
    """A new service account with its secret, shown this once."""

    client_secret: str


class ApiKeyCreate(BaseModel):
    """An API key for a script or system that cannot do OAuth."""

    model_config = ConfigDict(extra="forbid")

    org: str = Field(pattern=ORG_ID)
    role: Role = Role.service
    label: str = Field("", max_length=256)


class ApiKeyRead(BaseModel):
    """An API key (its secret part is never shown again)."""

    id: str
    prefix: str
    org: str
    role: Role
    label: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyIssued(ApiKeyRead):
    """A new API key, shown this once."""

    key: str


class TokenResponse(BaseModel):
    """The answer of the OAuth 2.0 token endpoint (RFC 6749 section 5.1)."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int


class OtpRequest(BaseModel):
    """A citizen asks for a one-time code."""

    model_config = ConfigDict(extra="forbid")

    phone: str = Field(max_length=32)


class OtpVerify(BaseModel):
    """A citizen signs in with the code received."""

    model_config = ConfigDict(extra="forbid")

    phone: str = Field(max_length=32)
    code: str = Field(max_length=32)


class OtpSent(BaseModel):
    """A code is on its way (the answer never carries the code)."""

    phone: str  # masked: 138****1234
    expires_in: int


class PrincipalRead(BaseModel):
    """Who the caller is, as the node sees it."""

    subject: str
    org: str
    role: Role
    issuer: str
    token_id: str | None
    phone: str | None
    anonymous: bool
