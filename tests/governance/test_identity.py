"""Identity: organisations, users, grants at /auth/token, throttling, one-time codes, admin."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.core.db import check_connection, create_engine_for, upgrade
from citybrain.core.errors import BadInput, TooManyRequests, Unauthorized
from citybrain.governance.identity import service
from citybrain.governance.identity.models import (
    ServiceAccountCreate,
    UserCreate,
    identity_otp_codes,
    identity_users,
)
from citybrain.governance.identity.tokens import verify_token
from citybrain.governance.principal import SYSTEM, Role
from conftest import bearer

ISSUER = "370000"
PASSWORD = "correct horse battery staple"
PHONE = "13812341234"
FORM = {"content-type": "application/x-www-form-urlencoded"}


class Clock:
    """A settable clock for the identity service."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Inbox:
    """An OTP channel that keeps the codes it was given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def deliver(self, *, phone: str, code: str, expires_at: datetime) -> None:
        self.sent.append((phone, code))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(service, "clock", fake)
    return fake


@pytest.fixture
def client(tmp_path: Path, clock: Clock) -> Iterator[TestClient]:
    """A province node with the standard organisations, a steward user and an inbox."""
    application = create_app(load_settings(data_dir=tmp_path))
    with TestClient(application) as c:
        engine = application.state.engine
        service.seed_default_orgs(engine=engine)
        service.create_user(
            engine=engine,
            data_dir=tmp_path,
            actor=SYSTEM,
            user=UserCreate(
                username="alice", org="education", role=Role.steward, password=PASSWORD
            ),
        )
        application.state.otp_channel = Inbox()
        yield c


@pytest.fixture
def app(client: TestClient) -> FastAPI:
    application = client.app
    assert isinstance(application, FastAPI)
    return application


def _password(
    client: TestClient, username: str = "alice", password: str = PASSWORD
) -> httpx.Response:
    return client.post(
        "/auth/token",
        content=f"grant_type=password&username={username}&password={password}",
        headers=FORM,
    )


def _audit(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / "audit" / "log.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


# --- organisations and passwords -----------------------------------------------------------


def test_seed_default_orgs_is_idempotent(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    assert service.seed_default_orgs(engine=engine) == 15
    assert service.seed_default_orgs(engine=engine) == 0
    orgs = {o.id: o for o in service.list_orgs(engine=engine)}
    assert orgs["bureau"].name_zh == "大数据局" and orgs["bureau"].kind == "bureau"
    for dept in (
        "education",
        "public_security",
        "natural_resources",
        "housing",
        "human_resources",
        "medical_security",
        "civil_affairs",
        "health",
        "city_management",
        "transport",
        "ecology_environment",
        "emergency_management",
        "market_regulation",
        "agriculture",
    ):
        assert orgs[dept].kind == "department" and orgs[dept].name_zh and orgs[dept].name_en
    assert orgs["medical_security"].name_zh == "医疗保障局"


def test_password_hash_is_scrypt_with_salt_and_parameters() -> None:
    first, second = service.hash_password(PASSWORD), service.hash_password(PASSWORD)
    scheme, n, r, p, salt, digest = first.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert first != second  # a random salt each time
    assert PASSWORD not in first
    assert service.verify_password(PASSWORD, first) and service.verify_password(PASSWORD, second)
    assert not service.verify_password(PASSWORD + "x", first)
    assert not service.verify_password(PASSWORD, "scrypt$x$y")
    assert not service.verify_password(PASSWORD, "md5$1$1$1$AA==$AA==")


# --- password grant and throttling ---------------------------------------------------------


def test_password_grant_issues_a_token(client: TestClient, tmp_path: Path) -> None:
    response = _password(client)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    assert response.headers["cache-control"] == "no-store"
    principal = verify_token(data_dir=tmp_path, issuer=ISSUER, token=body["access_token"])
    assert (principal.subject, principal.org, principal.role) == (
        "user:alice",
        "education",
        Role.steward,
    )
    who = client.get("/auth/whoami", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert who.json()["subject"] == "user:alice"
    records = [r for r in _audit(tmp_path) if r["action"] == "signin"]
    assert records[-1]["result"] == "ok" and records[-1]["resource"] == "user:alice"


def test_wrong_password_and_unknown_user_are_401(client: TestClient, tmp_path: Path) -> None:
    wrong = _password(client, password="not-the-password")
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_grant" and wrong.json()["status"] == 401
    unknown = _password(client, username="mallory")
    assert unknown.status_code == 401 and unknown.json()["title"] == wrong.json()["title"]
    refused = [r for r in _audit(tmp_path) if r["result"] == "refused"]
    assert len(refused) == 2
    # an unknown name may be a mistyped password: the log keeps only a hash of it
    assert "mallory" not in str(refused[1]) and refused[1]["resource"].startswith("user:unknown-")


def test_throttled_after_five_failures_even_with_the_right_password(
    client: TestClient, clock: Clock, tmp_path: Path
) -> None:
    for _ in range(5):
        assert _password(client, password="guess-guess").status_code == 401
    locked = _password(client)
    assert locked.status_code == 429
    body = locked.json()
    assert body["error"] == "slow_down" and "try again after" in body["error_description"]
    assert int(locked.headers["retry-after"]) == 15 * 60
    clock.advance(minutes=14)
    assert _password(client).status_code == 429
    clock.advance(minutes=1, seconds=1)
    assert _password(client).status_code == 200
    # success clears the count: four new failures do not lock
    for _ in range(4):
        assert _password(client, password="guess-guess").status_code == 401
    assert _password(client).status_code == 200
    refused = [r for r in _audit(tmp_path) if r["action"] == "signin" and r["result"] == "refused"]
    assert any(r["detail"].get("reason") == "throttled" for r in refused)


def test_failures_spread_beyond_the_window_do_not_lock(client: TestClient, clock: Clock) -> None:
    for _ in range(4):
        assert _password(client, password="guess-guess").status_code == 401
    clock.advance(minutes=16)
    for _ in range(4):
        assert _password(client, password="guess-guess").status_code == 401
    assert _password(client).status_code == 200


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        ("grant_type=authorization_code&code=x", FORM["content-type"], "unsupported_grant_type"),
        ("grant_type=password&username=alice", FORM["content-type"], "invalid_request"),
        ("username=alice&password=x", FORM["content-type"], "invalid_request"),
        ("grant_type=client_credentials&client_id=x", FORM["content-type"], "invalid_request"),
        ("grant_type=password&grant_type=password", FORM["content-type"], "invalid_request"),
        ("", FORM["content-type"], "invalid_request"),
        ('{"grant_type": "password"}', "application/json", "invalid_request"),
        ("grant_type=password&username=%ff&password=x", FORM["content-type"], "invalid_request"),
    ],
)
def test_token_endpoint_bad_requests_are_400(
    client: TestClient, body: str, content_type: str, error: str
) -> None:
    response = client.post("/auth/token", content=body, headers={"content-type": content_type})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error and response.json()["error_description"]


# --- client credentials --------------------------------------------------------------------


def test_client_credentials_in_form_and_basic(client: TestClient, tmp_path: Path) -> None:
    admin = bearer(tmp_path)
    created = client.post(
        "/api/service-accounts",
        json={"org": "transport", "label": "bus feed", "client_id": "transport-bus"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    secret = created.json()["client_secret"]
    form = client.post(
        "/auth/token",
        content=f"grant_type=client_credentials&client_id=transport-bus&client_secret={secret}",
        headers=FORM,
    )
    assert form.status_code == 200, form.text
    principal = verify_token(data_dir=tmp_path, issuer=ISSUER, token=form.json()["access_token"])
    assert (principal.subject, principal.org, principal.role) == (
        "service:transport-bus",
        "transport",
        Role.service,
    )
    basic = base64.b64encode(f"transport-bus:{secret}".encode()).decode()
    via_basic = client.post(
        "/auth/token",
        content="grant_type=client_credentials",
        headers={**FORM, "Authorization": f"Basic {basic}"},
    )
    assert via_basic.status_code == 200, via_basic.text
    wrong = client.post(
        "/auth/token",
        content="grant_type=client_credentials&client_id=transport-bus&client_secret=nope",
        headers=FORM,
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    listed = client.get("/api/service-accounts", headers=admin).json()
    assert [a["client_id"] for a in listed] == ["transport-bus"] and "client_secret" not in listed[
        0
    ]
    revoked = client.post("/api/service-accounts/transport-bus/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    after = client.post(
        "/auth/token",
        content="grant_type=client_credentials",
        headers={**FORM, "Authorization": f"Basic {basic}"},
    )
    assert after.status_code == 401
    assert client.post("/api/service-accounts/nope/revoke", headers=admin).status_code == 404
    duplicate = client.post(
        "/api/service-accounts",
        json={"org": "transport", "client_id": "transport-bus"},
        headers=admin,
    )
    assert duplicate.status_code == 409


def test_client_credentials_throttled(client: TestClient, app: FastAPI, tmp_path: Path) -> None:
    account = service.create_service_account(
        engine=app.state.engine,
        data_dir=tmp_path,
        actor=SYSTEM,
        account=ServiceAccountCreate(org="health"),
    )
    for _ in range(5):
        with pytest.raises(Unauthorized):
            service.client_credentials_grant(
                engine=app.state.engine,
                data_dir=tmp_path,
                issuer=ISSUER,
                client_id=account.client_id,
                client_secret="wrong",
            )
    with pytest.raises(TooManyRequests, match="try again after"):
        service.client_credentials_grant(
            engine=app.state.engine,
            data_dir=tmp_path,
            issuer=ISSUER,
            client_id=account.client_id,
            client_secret=account.client_secret,
        )


def test_bad_basic_header_is_400(client: TestClient) -> None:
    response = client.post(
        "/auth/token",
        content="grant_type=client_credentials",
        headers={**FORM, "Authorization": "Basic !!!"},
    )
    assert response.status_code == 400


# --- citizens: one-time codes --------------------------------------------------------------


def _request_code(client: TestClient, app: FastAPI, phone: str = PHONE) -> str:
    response = client.post("/auth/otp/request", json={"phone": phone})
    assert response.status_code == 202, response.text
    inbox: Inbox = app.state.otp_channel
    code = inbox.sent[-1][1]
    assert code not in response.text
    assert response.json()["phone"] == phone[:3] + "****" + phone[-4:]
    return code


def test_otp_sign_in_once(client: TestClient, app: FastAPI, tmp_path: Path) -> None:
    code = _request_code(client, app)
    assert len(code) == 6 and code.isdigit()
    verified = client.post("/auth/otp/verify", json={"phone": PHONE, "code": code})
    assert verified.status_code == 200, verified.text
    token = verified.json()["access_token"]
    who = client.get("/auth/whoami", headers={"Authorization": f"Bearer {token}"}).json()
    assert who == {
        "subject": f"citizen:{PHONE}",
        "org": "citizens",
        "role": "citizen",
        "issuer": ISSUER,
        "token_id": who["token_id"],
        "phone": PHONE,
        "anonymous": False,
    }
    replay = client.post("/auth/otp/verify", json={"phone": PHONE, "code": code})
    assert replay.status_code == 401 and "used already" in replay.json()["title"]
    # the store keeps neither the phone nor the code in clear; the audit masks the phone
    with app.state.engine.connect() as conn:
        rows = conn.execute(select(identity_otp_codes)).all()
    assert rows and all(PHONE not in str(tuple(r)) and code not in r.code_hash for r in rows)
    log = (tmp_path / "audit" / "log.jsonl").read_text()
    assert PHONE not in log and "138****1234" in log


def test_otp_expired_code_is_refused(client: TestClient, app: FastAPI, clock: Clock) -> None:
    code = _request_code(client, app)
    clock.advance(minutes=5, seconds=1)
    expired = client.post("/auth/otp/verify", json={"phone": PHONE, "code": code})
    assert expired.status_code == 401 and "expired" in expired.json()["title"]


def test_otp_brute_force_is_throttled(client: TestClient, app: FastAPI, clock: Clock) -> None:
    code = _request_code(client, app)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        response = client.post("/auth/otp/verify", json={"phone": PHONE, "code": wrong})
        assert response.status_code == 401 and response.json()["title"] == "the code is wrong"
    locked = client.post("/auth/otp/verify", json={"phone": PHONE, "code": code})
    assert locked.status_code == 429 and "try again after" in locked.json()["title"]
    # a locked phone gets no new codes either
    assert client.post("/auth/otp/request", json={"phone": PHONE}).status_code == 429
    with app.state.engine.connect() as conn:
        attempts = conn.execute(select(identity_otp_codes.c.attempts)).scalar_one()
    assert attempts == 5
    clock.advance(minutes=15, seconds=1)
    fresh = _request_code(client, app)
    assert client.post("/auth/otp/verify", json={"phone": PHONE, "code": fresh}).status_code == 200


def test_otp_requests_are_limited_per_phone(client: TestClient, app: FastAPI) -> None:
    for _ in range(5):
        _request_code(client, app, "13912345678")
    sixth = client.post("/auth/otp/request", json={"phone": "13912345678"})
    assert sixth.status_code == 429
    assert client.post("/auth/otp/request", json={"phone": "13712345678"}).status_code == 202


@pytest.mark.parametrize(
    "phone", ["12812341234", "1381234123", "138123412345", "+8613812341234", "abc"]
)
def test_otp_refuses_non_mainland_mobile_numbers(client: TestClient, phone: str) -> None:
    assert client.post("/auth/otp/request", json={"phone": phone}).status_code == 400
    verify = client.post("/auth/otp/verify", json={"phone": phone, "code": "123456"})
    assert verify.status_code == 400


@pytest.mark.parametrize("code", ["12345", "abcdef", "1234567", ""])
def test_otp_refuses_malformed_codes(client: TestClient, code: str) -> None:
    response = client.post("/auth/otp/verify", json={"phone": PHONE, "code": code})
    assert response.status_code == 400


def test_otp_missing_fields_are_400(client: TestClient) -> None:
    assert client.post("/auth/otp/request", json={}).status_code == 400
    assert client.post("/auth/otp/verify", json={"phone": PHONE}).status_code == 400


def test_default_channel_logs_and_writes_the_outbox(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    with caplog.at_level(logging.INFO, logger="citybrain.otp"):
        sent = service.request_otp(engine=engine, data_dir=tmp_path, phone=PHONE)
    assert sent.expires_in == 300
    line = (tmp_path / "otp_outbox.log").read_text().strip()
    assert "code for 138****1234: " in line and PHONE not in line
    code = line.rsplit(": ", 1)[1]
    assert f"code for 138****1234: {code}" in caplog.text and PHONE not in caplog.text
    answer = service.verify_otp(
        engine=engine, data_dir=tmp_path, issuer=ISSUER, phone=PHONE, code=code
    )
    assert verify_token(data_dir=tmp_path, issuer=ISSUER, token=answer.access_token).phone == PHONE
    with pytest.raises(BadInput):
        service.request_otp(engine=engine, data_dir=tmp_path, phone="02012345678")


# --- administration ------------------------------------------------------------------------

ADMIN_CALLS = [
    ("get", "/api/orgs", None),
    ("post", "/api/orgs", {"id": "tourism", "name_zh": "文化和旅游局", "name_en": "Tourism"}),
    ("get", "/api/users", None),
    (
        "post",
        "/api/users",
        {"username": "bob", "org": "health", "role": "operator", "password": "long enough pw"},
    ),
    ("get", "/api/service-accounts", None),
    ("post", "/api/service-accounts", {"org": "health"}),
    ("get", "/api/api-keys", None),
    ("post", "/api/api-keys", {"org": "health"}),
    ("post", "/api/api-keys/x/revoke", None),
    ("post", "/api/service-accounts/x/revoke", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
def test_admin_routes_need_bureau_admin(
    client: TestClient, tmp_path: Path, method: str, path: str, body: object
) -> None:
    steward = bearer(tmp_path, org="education", role="steward")
    response = client.request(method, path, json=body, headers=steward)
    assert response.status_code == 403, response.text
    assert client.request(method, path, json=body).status_code == 401


def test_admin_creates_orgs_and_users(client: TestClient, tmp_path: Path) -> None:
    admin = bearer(tmp_path)
    org = {"id": "tourism", "name_zh": "文化和旅游局", "name_en": "Culture and Tourism Bureau"}
    assert client.post("/api/orgs", json=org, headers=admin).status_code == 201
    assert client.post("/api/orgs", json=org, headers=admin).status_code == 409
    bad_org = client.post("/api/orgs", json={**org, "id": "Tourism!"}, headers=admin)
    assert bad_org.status_code == 400
    assert "tourism" in [o["id"] for o in client.get("/api/orgs", headers=admin).json()]
    user = {"username": "carol", "org": "tourism", "role": "operator", "password": "s3cret-pass"}
    created = client.post("/api/users", json=user, headers=admin)
    assert created.status_code == 201, created.text
    assert "password" not in created.text and "s3cret-pass" not in created.text
    assert client.post("/api/users", json=user, headers=admin).status_code == 409
    cases = [
        ({**user, "username": "dan", "org": "nowhere"}, 422),
        ({**user, "username": "dan", "role": "citizen"}, 422),
        ({**user, "username": "dan", "role": "bureau_admin"}, 422),
        ({**user, "username": "dan", "role": "king"}, 400),
        ({**user, "username": "dan", "password": "short"}, 400),
        ({**user, "username": "dan", "phone": "12345"}, 400),
        ({**user, "username": "Dan Smith"}, 400),
    ]
    for body, status in cases:
        assert client.post("/api/users", json=body, headers=admin).status_code == status, body
    listed = client.get("/api/users", params={"org": "tourism"}, headers=admin).json()
    assert [u["username"] for u in listed] == ["carol"] and "password_hash" not in listed[0]
    token = _password(client, "carol", "s3cret-pass")
    assert token.status_code == 200
    bureau = {"username": "root", "org": "bureau", "role": "bureau_admin", "password": "x" * 12}
    assert client.post("/api/users", json=bureau, headers=admin).status_code == 201
    records = [r["action"] for r in _audit(tmp_path)]
    assert "identity.org.create" in records and "identity.user.create" in records


def test_api_key_roles_and_orgs_are_checked(client: TestClient, tmp_path: Path) -> None:
    admin = bearer(tmp_path)
    assert client.post("/api/api-keys", json={"org": "x-y"}, headers=admin).status_code == 422
    citizen = client.post("/api/api-keys", json={"org": "health", "role": "citizen"}, headers=admin)
    assert citizen.status_code == 422
    revoke_twice = client.post("/api/api-keys", json={"org": "health"}, headers=admin).json()["id"]
    first = client.post(f"/api/api-keys/{revoke_twice}/revoke", headers=admin).json()
    second = client.post(f"/api/api-keys/{revoke_twice}/revoke", headers=admin).json()
    assert first["revoked_at"] == second["revoked_at"]


def test_passwords_never_reach_logs_or_the_store(
    client: TestClient, app: FastAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Pa55word-that-must-not-leak"
    admin = bearer(tmp_path)
    with caplog.at_level(logging.DEBUG):
        user = {"username": "erin", "org": "health", "role": "auditor", "password": secret}
        assert client.post("/api/users", json=user, headers=admin).status_code == 201
        assert _password(client, "erin", secret).status_code == 200
        assert _password(client, "erin", secret + "-wrong").status_code == 401
        # a password typed in the username field stays out of the audit log
        assert _password(client, secret, secret).status_code == 401
        bad = {**user, "username": "frank", "org": "nowhere"}
        assert client.post("/api/users", json=bad, headers=admin).status_code == 422
    assert secret not in caplog.text
    assert secret not in (tmp_path / "audit" / "log.jsonl").read_text()
    with app.state.engine.connect() as conn:
        stored = conn.execute(
            select(identity_users.c.password_hash).where(identity_users.c.username == "erin")
        ).scalar_one()
    assert stored.startswith("scrypt$") and secret not in stored
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_postgres_seed_user_and_password_grant(postgres_url: str, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, database_url=postgres_url)
    engine = create_engine_for(settings.effective_database_url)
    check_connection(engine)
    upgrade(engine)
    service.seed_default_orgs(engine=engine)
    assert service.seed_default_orgs(engine=engine) == 0
    username = f"pg-{tmp_path.name[-12:].lower().replace('_', '-')}"
    service.create_user(
        engine=engine,
        data_dir=tmp_path,
        actor=SYSTEM,
        user=UserCreate(username=username, org="health", role=Role.operator, password=PASSWORD),
    )
    answer = service.password_grant(
        engine=engine, data_dir=tmp_path, issuer=ISSUER, username=username, password=PASSWORD
    )
    assert verify_token(data_dir=tmp_path, issuer=ISSUER, token=answer.access_token).org == "health"
    now = datetime.now(UTC)
    for _ in range(5):
        with pytest.raises(Unauthorized):
            service.password_grant(
                engine=engine,
                data_dir=tmp_path,
                issuer=ISSUER,
                username=username,
                password="nope-nope",
                now=now,
            )
    with pytest.raises(TooManyRequests):
        service.password_grant(
            engine=engine,
            data_dir=tmp_path,
            issuer=ISSUER,
            username=username,
            password=PASSWORD,
            now=now,
        )
    later = now + timedelta(minutes=16)
    service.password_grant(
        engine=engine,
        data_dir=tmp_path,
        issuer=ISSUER,
        username=username,
        password=PASSWORD,
        now=later,
    )
    engine.dispose()
