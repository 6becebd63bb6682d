"""Bearer tokens and the auth middleware: forged, expired, tampered tokens; API keys."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.core.errors import BadInput, Unauthorized
from citybrain.governance.identity import service
from citybrain.governance.identity.middleware import AuthMiddleware, anonymous_role_of
from citybrain.governance.identity.models import ApiKeyCreate
from citybrain.governance.identity.tokens import issue_token, verify_token
from citybrain.governance.principal import SYSTEM, Role
from conftest import bearer

ISSUER = "370000"


def wire_api_keys(app: FastAPI) -> None:
    """Give the app's auth middleware the API-key resolver of the identity service."""
    for entry in app.user_middleware:
        if entry.cls is AuthMiddleware and entry.kwargs.get("api_key_resolver") is None:
            entry.kwargs["api_key_resolver"] = lambda key: service.resolve_api_key(
                engine=app.state.engine, issuer=ISSUER, key=key
            )


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[TestClient, FastAPI]]:
    """A province node with API keys wired and the standard organisations."""
    app = create_app(load_settings(data_dir=tmp_path))
    wire_api_keys(app)
    with TestClient(app) as client:
        service.seed_default_orgs(engine=app.state.engine)
        yield client, app


def test_issue_and_verify_round_trip(tmp_path: Path) -> None:
    token = issue_token(
        data_dir=tmp_path,
        issuer=ISSUER,
        subject="citizen:13812341234",
        org="citizens",
        role="citizen",
        phone="13812341234",
    )
    principal = verify_token(data_dir=tmp_path, issuer=ISSUER, token=token)
    assert (principal.subject, principal.org, principal.role) == (
        "citizen:13812341234",
        "citizens",
        Role.citizen,
    )
    assert principal.phone == "13812341234" and principal.token_id


def test_expired_token_is_refused(tmp_path: Path) -> None:
    token = issue_token(
        data_dir=tmp_path,
        issuer=ISSUER,
        subject="s",
        org="education",
        role="steward",
        ttl=60,
        now=time.time() - 3600,
    )
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(data_dir=tmp_path, issuer=ISSUER, token=token)


def test_token_of_another_node_key_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other"
    token = issue_token(data_dir=other, issuer=ISSUER, subject="s", org="bureau", role="steward")
    with pytest.raises(Unauthorized, match="not valid"):
        verify_token(data_dir=tmp_path / "self", issuer=ISSUER, token=token)


def test_wrong_issuer_is_refused(tmp_path: Path) -> None:
    token = issue_token(data_dir=tmp_path, issuer="370100", subject="s", org="x", role="steward")
    with pytest.raises(Unauthorized, match="another node"):
        verify_token(data_dir=tmp_path, issuer=ISSUER, token=token)


def test_tampered_payload_is_refused(tmp_path: Path) -> None:
    token = issue_token(data_dir=tmp_path, issuer=ISSUER, subject="s", org="x", role="steward")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "bureau_admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthorized):
        verify_token(data_dir=tmp_path, issuer=ISSUER, token=f"{header}.{forged}.{signature}")


def test_alg_none_is_refused(tmp_path: Path) -> None:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "s", "org": "bureau", "role": "bureau_admin"}
    unsigned = jwt.encode({**claims, "iat": now, "exp": now + 60}, None, algorithm="none")
    with pytest.raises(Unauthorized):
        verify_token(data_dir=tmp_path, issuer=ISSUER, token=unsigned)


def test_issue_refuses_unknown_role_and_bad_ttl(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="unknown role"):
        issue_token(data_dir=tmp_path, issuer=ISSUER, subject="s", org="x", role="king")
    with pytest.raises(BadInput, match="ttl"):
        issue_token(data_dir=tmp_path, issuer=ISSUER, subject="s", org="x", role="steward", ttl=0)


def test_no_token_is_401_with_www_authenticate(node: tuple[TestClient, FastAPI]) -> None:
    client, _ = node
    response = client.get("/auth/whoami")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwdw==", "Bearer", "Bearer not.a.jwt", "Token abc", "ApiKey "],
)
def test_malformed_authorization_is_401(node: tuple[TestClient, FastAPI], header: str) -> None:
    client, _ = node
    response = client.get("/auth/whoami", headers={"Authorization": header})
    assert response.status_code == 401, header
    assert "www-authenticate" in response.headers


def test_whoami_names_the_principal(node: tuple[TestClient, FastAPI], tmp_path: Path) -> None:
    client, _ = node
    body = client.get(
        "/auth/whoami", headers=bearer(tmp_path, org="education", role="steward", subject="u1")
    ).json()
    assert body["subject"] == "u1" and body["org"] == "education" and body["role"] == "steward"
    assert body["issuer"] == ISSUER and body["anonymous"] is False


def test_api_key_works_and_a_revoked_one_is_refused(
    node: tuple[TestClient, FastAPI], tmp_path: Path
) -> None:
    client, app = node
    admin = bearer(tmp_path)
    issued = client.post(
        "/api/api-keys",
        json={"org": "education", "role": "operator", "label": "report job"},
        headers=admin,
    )
    assert issued.status_code == 201, issued.text
    key = issued.json()["key"]
    assert key.startswith("cbk_" + issued.json()["prefix"] + "_")
    for headers in ({"X-API-Key": key}, {"Authorization": f"ApiKey {key}"}):
        who = client.get("/auth/whoami", headers=headers)
        assert who.status_code == 200, who.text
        assert who.json()["org"] == "education" and who.json()["role"] == "operator"
    listed = client.get("/api/api-keys", headers=admin).json()
    assert listed[0]["last_used_at"] is not None and "key" not in listed[0]
    # a key that is not ours, or a well-formed one with a wrong secret, is refused
    assert client.get("/auth/whoami", headers={"X-API-Key": "nope"}).status_code == 401
    wrong = key[: key.rindex("_") + 1] + "x" * 20
    assert client.get("/auth/whoami", headers={"X-API-Key": wrong}).status_code == 401
    revoked = client.post(f"/api/api-keys/{issued.json()['id']}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    refused = client.get("/auth/whoami", headers={"X-API-Key": key})
    assert refused.status_code == 401 and "revoked" in refused.json()["title"]
    assert client.post("/api/api-keys/nope/revoke", headers=admin).status_code == 404


def test_resolve_api_key_without_the_cache_sees_revocation(tmp_path: Path) -> None:
    app = create_app(load_settings(data_dir=tmp_path))
    with TestClient(app):
        engine = app.state.engine
        service.seed_default_orgs(engine=engine)
        issued = service.issue_api_key(
            engine=engine, data_dir=tmp_path, actor=SYSTEM, spec=ApiKeyCreate(org="health")
        )
        principal = service.resolve_api_key(engine=engine, issuer=ISSUER, key=issued.key)
        assert principal.subject == f"apikey:{issued.id}" and principal.role is Role.service
        # a second process revokes: this one's cache would still admit the key for a while
        from sqlalchemy import update

        from citybrain.governance.identity.models import identity_api_keys

        with engine.begin() as conn:
            conn.execute(update(identity_api_keys).values(revoked_at=service.clock()))
        assert service.resolve_api_key(engine=engine, issuer=ISSUER, key=issued.key) == principal
        service._key_cache.clear()
        with pytest.raises(Unauthorized, match="revoked"):
            service.resolve_api_key(engine=engine, issuer=ISSUER, key=issued.key)


def test_unknown_anonymous_role_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="CITYBRAIN_ANONYMOUS_ROLE.*roles are bureau_admin"):
        anonymous_role_of("visitor")
    app = create_app(load_settings(data_dir=tmp_path, anonymous_role="visitor"))
    with pytest.raises(BadInput, match="not a role"):
        with TestClient(app):
            pass


def test_known_anonymous_role_stands_in_for_a_token(tmp_path: Path) -> None:
    app = create_app(load_settings(data_dir=tmp_path, anonymous_role="operator"))
    with TestClient(app) as client:
        body = client.get("/auth/whoami").json()
    assert body["anonymous"] is True and body["role"] == "operator"


def test_verified_tokens_are_cached_until_they_expire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from citybrain.governance.identity import tokens

    token = issue_token(
        data_dir=tmp_path, issuer="370000", subject="a", org="bureau", role="operator", ttl=60
    )
    first = verify_token(data_dir=tmp_path, issuer="370000", token=token)
    assert tokens.cached_principal(data_dir=tmp_path, issuer="370000", token=token) == first
    # another issuer or another folder does not share the entry
    assert tokens.cached_principal(data_dir=tmp_path, issuer="370100", token=token) is None
    with pytest.raises(Unauthorized):
        verify_token(data_dir=tmp_path, issuer="370100", token=token)
    # past its expiry (and the leeway) the cached token is refused as the signature check would
    later = time.time() + 60 + tokens.LEEWAY_SECONDS + 1
    monkeypatch.setattr(tokens, "_clock", lambda: later)
    assert tokens.cached_principal(data_dir=tmp_path, issuer="370000", token=token) is None
    # a token that expired is refused by the full check, and so never enters the cache
    old = issue_token(
        data_dir=tmp_path,
        issuer="370000",
        subject="a",
        org="bureau",
        role="operator",
        ttl=60,
        now=time.time() - 120,
    )
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(data_dir=tmp_path, issuer="370000", token=old)
    assert tokens.cached_principal(data_dir=tmp_path, issuer="370000", token=old) is None
