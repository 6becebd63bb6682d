"""Trust between nodes: only registered keys, the right audience, the right relation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.core.errors import BadInput, NotFound, Unauthorized, Unprocessable
from citybrain.federation import outbox, trust
from citybrain.federation.models import Relation
from citybrain.governance.keys import public_key_pem

PROVINCE, CITY = "370000", "370100"
REGISTRATION = {"code": CITY, "level": "city", "url": "http://127.0.0.1:9", "version": "1"}


async def _idle(**_kw: object) -> None:
    return None


@pytest.fixture
def province(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setattr(outbox, "run", _idle)
    with TestClient(create_app(load_settings(data_dir=tmp_path / "p"))) as client:
        yield client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _city_token(tmp_path: Path, **kw: object) -> str:
    return trust.peer_token(
        data_dir=tmp_path / "c",
        caller=str(kw.pop("caller", CITY)),
        audience=str(kw.pop("audience", PROVINCE)),
        **kw,  # type: ignore[arg-type]
    )


def _trust_city(province: TestClient, tmp_path: Path) -> None:
    trust.add_peer(
        engine=province.app.state.engine,  # type: ignore[attr-defined]
        own_code=PROVINCE,
        code=CITY,
        relation=Relation.child,
        url="http://127.0.0.1:9",
        public_key=trust.own_public_key(tmp_path / "c"),
    )


def test_unknown_child_is_refused(province: TestClient, tmp_path: Path) -> None:
    response = province.post(
        "/api/nodes/register", json=REGISTRATION, headers=_auth(_city_token(tmp_path))
    )
    assert response.status_code == 401
    assert "has not registered" in response.text
    # without any token the registration is no longer public
    assert province.post("/api/nodes/register", json=REGISTRATION).status_code == 401
    assert province.get("/api/nodes").json() == []


def test_registration_with_a_registered_key_works(province: TestClient, tmp_path: Path) -> None:
    _trust_city(province, tmp_path)
    headers = _auth(_city_token(tmp_path))
    body = {**REGISTRATION, "public_key": trust.own_public_key(tmp_path / "c")}
    response = province.post("/api/nodes/register", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["CityBrain-Version"]
    assert [c["code"] for c in province.get("/api/nodes").json()] == [CITY]
    who = province.get("/auth/whoami", headers=headers).json()
    assert who["subject"] == "node:370100" and who["org"] == "node-370100"
    assert who["role"] == "node" and who["issuer"] == CITY


def test_forged_expired_and_misaddressed_tokens_are_401(
    province: TestClient, tmp_path: Path
) -> None:
    _trust_city(province, tmp_path)
    now = int(time.time())
    claims = {
        "iss": CITY,
        "aud": PROVINCE,
        "sub": "node:370100",
        "org": "node-370100",
        "role": "node",
        "iat": now,
        "exp": now + 300,
    }
    cases = {
        "forged": jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA"),
        "wrong audience": _city_token(tmp_path, audience="370200"),
        "expired": _city_token(tmp_path, now=time.time() - 1000),
        "none": jwt.encode(claims, None, algorithm="none"),
        "no audience": jwt.encode(
            {k: v for k, v in claims.items() if k != "aud"},
            trust.node_key(tmp_path / "c"),
            algorithm="EdDSA",
        ),
        "another subject": jwt.encode(
            {**claims, "sub": "admin"}, trust.node_key(tmp_path / "c"), algorithm="EdDSA"
        ),
        "garbage": "not.a.token",
    }
    for name, token in cases.items():
        response = province.post("/api/nodes/register", json=REGISTRATION, headers=_auth(token))
        assert response.status_code == 401, name
    assert province.get("/api/nodes").json() == []


def test_peers_outside_the_relation_are_403(province: TestClient, tmp_path: Path) -> None:
    _trust_city(province, tmp_path)
    headers = _auth(_city_token(tmp_path))
    # tasks come only from the parent; a child posting one is refused
    task = {
        "message_id": "a" * 32,
        "id": "b" * 32,
        "kind": "inspection",
        "title": "t",
        "created_by": "x",
        "created_at": "2026-12-01T00:00:00Z",
    }
    assert province.post("/api/federation/inbox/tasks", json=task, headers=headers).status_code == (
        403
    )
    # a child registering under another code
    other = {**REGISTRATION, "code": "370200"}
    assert province.post("/api/nodes/register", json=other, headers=headers).status_code == 403
    # a key other than the registered one
    wrong_key = {**REGISTRATION, "public_key": public_key_pem(Ed25519PrivateKey.generate())}
    assert province.post("/api/nodes/register", json=wrong_key, headers=headers).status_code == 403
    # the node's own staff cannot call the inbox, nor register a child by hand
    from conftest import bearer

    staff = bearer(tmp_path / "p")
    assert province.post("/api/nodes/register", json=REGISTRATION, headers=staff).status_code == 403
    escalation = {
        "message_id": "c" * 32,
        "id": "d" * 32,
        "event_id": "e",
        "reason": "r",
        "created_by": "x",
        "created_at": "2026-12-01T00:00:00Z",
    }
    assert (
        province.post("/api/federation/inbox/escalations", json=escalation, headers=staff)
    ).status_code == 403
    # a peer token does not open the node's own routes
    assert province.get("/api/federation/tasks", headers=headers).status_code == 403


def test_administrative_codes_decide_who_may_be_parent_or_child(tmp_path: Path) -> None:
    from citybrain.core.db import create_engine_for, upgrade

    engine = create_engine_for(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade(engine)
    key = trust.own_public_key(tmp_path / "k")
    # Qingdao (370200) cannot take Jinan's county Lixia (370102) as its child ...
    with pytest.raises(Unprocessable, match="not a child of 370200"):
        trust.add_peer(
            engine=engine,
            own_code="370200",
            code="370102",
            relation=Relation.child,
            url="http://x:1",
            public_key=key,
        )
    # ... nor can Lixia take Qingdao as its parent
    with pytest.raises(Unprocessable, match="not the parent of 370102"):
        trust.add_peer(
            engine=engine,
            own_code="370102",
            code="370200",
            relation=Relation.parent,
            url="http://x:1",
            public_key=key,
        )
    # Jinan is Lixia's parent
    peer = trust.add_peer(
        engine=engine,
        own_code="370102",
        code="370100",
        relation=Relation.parent,
        url="http://x:1/",
        public_key=key,
    )
    assert peer["url"] == "http://x:1" and peer["level"] == "city"
    # registering again replaces the URL and key, keeping one parent
    again = trust.add_peer(
        engine=engine,
        own_code="370102",
        code="370100",
        relation=Relation.parent,
        url="http://y:2",
        public_key=trust.own_public_key(tmp_path / "k2"),
    )
    assert again["url"] == "http://y:2" and len(trust.list_peers(engine=engine)) == 1
    with pytest.raises(Unprocessable):
        trust.add_peer(
            engine=engine,
            own_code="370000",
            code="370000",
            relation=Relation.child,
            url="http://x:1",
            public_key=key,
        )
    with pytest.raises(NotFound):
        trust.add_peer(
            engine=engine,
            own_code="370000",
            code="999999",
            relation=Relation.child,
            url="http://x:1",
            public_key=key,
        )
    with pytest.raises(BadInput, match="Ed25519"):
        trust.add_peer(
            engine=engine,
            own_code="370000",
            code="370100",
            relation=Relation.child,
            url="http://x:1",
            public_key="not a key",
        )
    with pytest.raises(BadInput, match="http"):
        trust.add_peer(
            engine=engine,
            own_code="370000",
            code="370100",
            relation=Relation.child,
            url="ftp://x",
            public_key=key,
        )


def test_resolver_leaves_own_tokens_to_the_node(tmp_path: Path) -> None:
    from citybrain.core.db import create_engine_for, upgrade

    engine = create_engine_for(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade(engine)
    own = trust.peer_token(data_dir=tmp_path, caller=PROVINCE, audience=PROVINCE)
    assert trust.resolve_peer_token(engine=engine, code=PROVINCE, token=own) is None
    with pytest.raises(Unauthorized):
        trust.resolve_peer_token(engine=engine, code=PROVINCE, token="x.y.z")
