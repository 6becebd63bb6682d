"""HTTP routes of governance/identity; thin callers of its service."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from citybrain.core.errors import BadInput, CityBrainError, TooManyRequests, Unauthorized
from citybrain.core.problems import ERROR_BASE, MEDIA_TYPE
from citybrain.core.routing import APIRouter
from citybrain.governance.identity import service
from citybrain.governance.identity.deps import current_principal, require_role
from citybrain.governance.identity.models import (
    ApiKeyCreate,
    ApiKeyIssued,
    ApiKeyRead,
    OrgCreate,
    OrgRead,
    OtpRequest,
    OtpSent,
    OtpVerify,
    PrincipalRead,
    ServiceAccountCreate,
    ServiceAccountIssued,
    ServiceAccountRead,
    TokenResponse,
    UserCreate,
    UserRead,
)
from citybrain.governance.principal import Principal, Role

router = APIRouter()
admin = require_role(Role.bureau_admin)
# RFC 6749 section 5.1: token responses must not be cached anywhere
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_FORM_BYTES = 16 * 1024
GRANTS = frozenset({"password", "client_credentials"})

_TOKEN_FORM: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {
                            "type": "string",
                            "enum": ["password", "client_credentials"],
                        },
                        "username": {"type": "string"},
                        "password": {"type": "string", "format": "password"},
                        "client_id": {"type": "string"},
                        "client_secret": {"type": "string", "format": "password"},
                        "scope": {"type": "string"},
                    },
                }
            }
        },
    },
    "responses": {
        "200": {
            "description": "a bearer token",
            "content": {"application/json": {"schema": TokenResponse.model_json_schema()}},
        },
        "400": {"description": "unsupported grant type or missing fields"},
        "401": {"description": "wrong credentials"},
        "429": {"description": "too many failed attempts; retry later"},
    },
}


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _data_dir(request: Request) -> Path:
    data_dir: Path = request.app.state.settings.data_dir
    return data_dir


def _issuer(request: Request) -> str:
    code: str = request.app.state.settings.code
    return code


def _oauth_error(exc: CityBrainError, error: str) -> JSONResponse:
    """Answer an RFC 6749 error: its error fields plus the problem-details keys."""
    body: dict[str, Any] = {
        "error": error,
        "error_description": exc.message,
        "type": ERROR_BASE + exc.kind,
        "title": exc.message,
        "status": exc.status,
    }
    headers = dict(NO_STORE)
    if isinstance(exc, TooManyRequests):
        retry = exc.detail.get("retry_after")
        if isinstance(retry, int):
            body["retry_after"] = retry
            headers["Retry-After"] = str(retry)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Basic realm="citybrain"'
    return JSONResponse(body, status_code=exc.status, headers=headers, media_type=MEDIA_TYPE)


def _form(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("the form is not UTF-8") from None
    try:
        fields = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise BadInput("the body is not a valid application/x-www-form-urlencoded form") from None
    repeated = sorted(name for name, values in fields.items() if len(values) > 1)
    if repeated:
        # RFC 6749 section 3.2: parameters must not be included more than once
        raise BadInput(f"the form repeats {', '.join(repeated)}")
    return {name: values[0] for name, values in fields.items()}


def _basic(header: str | None) -> tuple[str, str] | None:
    """Return the client id and secret of an HTTP Basic header (RFC 6749 section 2.3.1)."""
    if not header:
        return None
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credential.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise BadInput("the Basic credentials are not valid base64 of client_id:secret") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise BadInput("the Basic credentials are not client_id:secret")
    # the client id and secret are form-encoded before Basic encoding
    return unquote_plus(client_id), unquote_plus(secret)


def _grant(request: Request, form: dict[str, str]) -> TokenResponse:
    """Run the grant the form asks for (in a worker thread: scrypt takes tens of ms)."""
    grant = form.get("grant_type", "")
    if grant == "password":
        username, password = form.get("username", ""), form.get("password", "")
        if not username or not password:
            raise BadInput("the password grant needs username and password")
        return service.password_grant(
            engine=_engine(request),
            data_dir=_data_dir(request),
            issuer=_issuer(request),
            username=username,
            password=password,
        )
    basic = _basic(request.headers.get("authorization"))
    if basic is not None and ("client_id" in form or "client_secret" in form):
        raise BadInput("send client credentials either in the form or as Basic, not both")
    client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
    if not client_id or not secret:
        raise BadInput("the client_credentials grant needs client_id and client_secret")
    return service.client_credentials_grant(
        engine=_engine(request),
        data_dir=_data_dir(request),
        issuer=_issuer(request),
        client_id=client_id,
        client_secret=secret,
    )


@router.post(
    "/auth/token",
    tags=["identity"],
    summary="OAuth 2.0 token endpoint: password and client_credentials grants",
    response_model=TokenResponse,
    openapi_extra=_TOKEN_FORM,
)
async def token(request: Request) -> JSONResponse:
    """Exchange a username and password, or client credentials, for a bearer token."""
    grant = ""
    try:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/x-www-form-urlencoded":
            raise BadInput("send the token request as application/x-www-form-urlencoded")
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise BadInput("the token request is too large")
        form = _form(body)
        grant = form.get("grant_type", "")
        if not grant:
            raise BadInput("grant_type is missing")
        if grant not in GRANTS:
            return _oauth_error(
                BadInput(
                    f"unsupported grant_type {grant[:40]!r}; use password or client_credentials"
                ),
                "unsupported_grant_type",
            )
        answer = await run_in_threadpool(_grant, request, form)
    except BadInput as exc:
        return _oauth_error(exc, "invalid_request")
    except Unauthorized as exc:
        error = "invalid_client" if grant == "client_credentials" else "invalid_grant"
        return _oauth_error(exc, error)
    except TooManyRequests as exc:
        return _oauth_error(exc, "slow_down")
    return JSONResponse(answer.model_dump(), headers=NO_STORE)


@router.post("/auth/otp/request", tags=["identity"], status_code=202, response_model=OtpSent)
def otp_request(body: OtpRequest, request: Request) -> OtpSent:
    """Send a citizen a one-time code (the answer never contains it)."""
    channel = getattr(request.app.state, "otp_channel", None)
    return service.request_otp(
        engine=_engine(request), data_dir=_data_dir(request), phone=body.phone, channel=channel
    )


@router.post("/auth/otp/verify", tags=["identity"], response_model=TokenResponse)
def otp_verify(body: OtpVerify, request: Request) -> JSONResponse:
    """Sign a citizen in with the code received; a code works once."""
    answer = service.verify_otp(
        engine=_engine(request),
        data_dir=_data_dir(request),
        issuer=_issuer(request),
        phone=body.phone,
        code=body.code,
    )
    return JSONResponse(answer.model_dump(), headers=NO_STORE)


@router.get("/auth/whoami", tags=["identity"], response_model=PrincipalRead)
def whoami(principal: Principal = Depends(current_principal)) -> PrincipalRead:
    """Return the principal the request acts as."""
    return PrincipalRead(
        subject=principal.subject,
        org=principal.org,
        role=principal.role,
        issuer=principal.issuer,
        token_id=principal.token_id,
        phone=principal.phone,
        anonymous=principal.anonymous,
    )


@router.get("/api/orgs", tags=["identity"], response_model=list[OrgRead])
def orgs_list(request: Request, _admin: Principal = Depends(admin)) -> list[OrgRead]:
    """List the organisations of the node."""
    return service.list_orgs(engine=_engine(request))


@router.post("/api/orgs", tags=["identity"], status_code=201, response_model=OrgRead)
def orgs_create(body: OrgCreate, request: Request, actor: Principal = Depends(admin)) -> OrgRead:
    """Add an organisation."""
    return service.create_org(
        engine=_engine(request), data_dir=_data_dir(request), actor=actor, org=body
    )


@router.get("/api/users", tags=["identity"], response_model=list[UserRead])
def users_list(
    request: Request,
    org: str | None = Query(None, max_length=64),
    _admin: Principal = Depends(admin),
) -> list[UserRead]:
    """List the users of the node, or of one organisation."""
    return service.list_users(engine=_engine(request), org=org)


@router.post("/api/users", tags=["identity"], status_code=201, response_model=UserRead)
def users_create(body: UserCreate, request: Request, actor: Principal = Depends(admin)) -> UserRead:
    """Add a user who signs in with a password."""
    return service.create_user(
        engine=_engine(request), data_dir=_data_dir(request), actor=actor, user=body
    )


@router.post(
    "/api/service-accounts",
    tags=["identity"],
    status_code=201,
    response_model=ServiceAccountIssued,
)
def service_accounts_create(
    body: ServiceAccountCreate, request: Request, actor: Principal = Depends(admin)
) -> ServiceAccountIssued:
    """Add a service account; the answer shows its secret this once."""
    return service.create_service_account(
        engine=_engine(request), data_dir=_data_dir(request), actor=actor, account=body
    )


@router.post(
    "/api/service-accounts/{client_id}/revoke",
    tags=["identity"],
    response_model=ServiceAccountRead,
)
def service_accounts_revoke(
    client_id: str, request: Request, actor: Principal = Depends(admin)
) -> ServiceAccountRead:
    """Revoke a service account."""
    return service.revoke_service_account(
        engine=_engine(request), data_dir=_data_dir(request), actor=actor, client_id=client_id
    )


@router.post("/api/api-keys", tags=["identity"], status_code=201, response_model=ApiKeyIssued)
def api_keys_issue(
    body: ApiKeyCreate, request: Request, actor: Principal = Depends(admin)
) -> ApiKeyIssued:
    """Issue an API key; the answer shows it this once."""
    return service.issue_api_key(
        engine=_engine(request), data_dir=_data_dir(request), actor=actor, spec=body
    )


@router.post("/api/api-keys/{key_id}/revoke", tags=["identity"], response_model=ApiKeyRead)
def api_keys_revoke(key_id: str, request: Request, actor: Principal = Depends(admin)) -> ApiKeyRead:
    """Revoke an API key."""
    return service.revoke_api_key(
        engine=_engine(request), data_dir=_data_dir(request), actor=actor, key_id=key_id
    )


@router.get("/api/service-accounts", tags=["identity"], response_model=list[ServiceAccountRead])
def service_accounts_list(
    request: Request, _admin: Principal = Depends(admin)
) -> list[ServiceAccountRead]:
    """List the service accounts (never their secrets)."""
    return service.list_service_accounts(engine=_engine(request))


@router.get("/api/api-keys", tags=["identity"], response_model=list[ApiKeyRead])
def api_keys_list(request: Request, _admin: Principal = Depends(admin)) -> list[ApiKeyRead]:
    """List the API keys (never the keys themselves)."""
    return service.list_api_keys(engine=_engine(request))
