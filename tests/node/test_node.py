"""A node: its API on SQLite and PostgreSQL, `serve` as a real process, and bad input."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.core.db import create_engine_for, upgrade
from citybrain.federation import trust
from citybrain.federation.models import Relation
from conftest import bearer, free_port


def _client(data: Path, **kw: object) -> TestClient:
    settings = load_settings(data_dir=data, **kw)
    return TestClient(create_app(settings), headers=bearer(data, issuer=settings.code))


def _trust(data: Path, own: str, peer_dir: Path, peer: str, relation: Relation, url: str) -> None:
    """Record a peer's key in a node's store, as `citybrain nodes add-child/set-parent` does."""
    data.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(load_settings(data_dir=data).effective_database_url)
    upgrade(engine)
    trust.add_peer(
        engine=engine,
        own_code=own,
        code=peer,
        relation=relation,
        url=url,
        public_key=trust.own_public_key(peer_dir),
    )
    engine.dispose()


def _city_headers(tmp_path: Path, code: str = "370100") -> dict[str, str]:
    token = trust.peer_token(data_dir=tmp_path / "city", caller=code, audience="370000")
    return {"Authorization": f"Bearer {token}"}


def _write_table(data: Path) -> None:
    folder = data / "public_security"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"person_id": ["a", "b", "c"]}), folder / "residents.parquet")


def test_node_api(tmp_path: Path) -> None:
    _write_table(tmp_path)
    with _client(tmp_path, code="370000", level="province") as client:
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["code"] == "370000"
        # the large tables load after start; /health says when they are in
        for _ in range(100):
            if client.get("/health").json()["tables"] == "ready":
                break
            time.sleep(0.05)
        assert client.get("/health").json()["tables"] == "ready"
        assert client.get("/version").json()["citybrain"]
        assert "/api/node" in client.get("/openapi.json").json()["paths"]
        node = client.get("/api/node").json()
        assert node["name_zh"] == "山东省"
        assert node["datasets"][0] == {
            **node["datasets"][0],
            "department": "public_security",
            "name": "residents",
            "rows": 3,
        }
        assert client.get("/scenes/overview").json()["departments"]["public_security"]["rows"] == 3
        child = {"code": "370100", "level": "city", "url": "http://127.0.0.1:9", "version": "0.1.0"}
        # only a child whose key the province registered, with its own signed token
        assert client.post("/api/nodes/register", json=child).status_code == 403
        _trust(tmp_path, "370000", tmp_path / "city", "370100", Relation.child, child["url"])
        city = _city_headers(tmp_path)
        assert client.post("/api/nodes/register", json=child, headers=city).status_code == 200
        # idempotent
        assert client.post("/api/nodes/register", json=child, headers=city).status_code == 200
        assert [c["code"] for c in client.get("/api/nodes").json()] == ["370100"]
        page = client.get("/")
        assert page.status_code == 200 and "CityBrain" in page.text


@pytest.mark.parametrize(
    ("body", "status"),
    [
        # the token is 370100's: registering as anyone else is refused
        ({"code": "370102", "level": "county", "url": "http://x:1", "version": "1"}, 403),
        ({"code": "999999", "level": "city", "url": "http://x:1", "version": "1"}, 403),
        ({"code": "370100", "level": "county", "url": "http://x:1", "version": "1"}, 422),
        ({"code": "3701", "level": "city", "url": "http://x:1", "version": "1"}, 400),
        ({"code": "370100", "level": "city", "url": "not a url", "version": "1"}, 400),
        ("{not json", 400),
    ],
)
def test_registration_refusals(tmp_path: Path, body: object, status: int) -> None:
    _trust(tmp_path, "370000", tmp_path / "city", "370100", Relation.child, "http://x:1")
    city = {**_city_headers(tmp_path), "content-type": "application/json"}
    with _client(tmp_path, code="370000", level="province") as client:
        if isinstance(body, str):
            response = client.post("/api/nodes/register", content=body, headers=city)
        else:
            response = client.post("/api/nodes/register", json=body, headers=city)
        assert response.status_code == status
        assert response.json()["type"].startswith("https://uri.etsi.org/ngsi-ld/errors/")
        assert client.get("/api/nodes").json() == []


def test_oversized_body_is_413(tmp_path: Path) -> None:
    with _client(tmp_path, code="370000", level="province") as client:
        response = client.post(
            "/api/nodes/register",
            content=b"x" * (10 * 1024 * 1024 + 1),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 413


def test_node_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    with _client(tmp_path, code="370100", level="city", database_url=postgres_url) as client:
        assert client.get("/health").json()["database"] == "ok"
        assert client.get("/api/node").json()["code"] == "370100"


def _serve(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "citybrain", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kw,  # type: ignore[call-overload]
    )


def test_serve_bad_input(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = str(taken.getsockname()[1])
    cases = [
        (["--level", "city", "--code", "999999", "--data", data], "no administrative unit 999999"),
        (["--level", "city", "--code", "370102", "--data", data], "is a county, not a city"),
        (["--level", "planet", "--code", "370100", "--data", data], "planet"),
        (["--level", "city", "--code", "370100", "--data", data, "--port", port], "is taken"),
        (
            [
                "--level",
                "city",
                "--code",
                "370100",
                "--data",
                data,
                "--port",
                str(free_port()),
                "--database-url",
                "postgresql+psycopg://nobody@127.0.0.1:1/x",
            ],
            "cannot reach the database",
        ),
    ]
    try:
        for args, message in cases:
            proc = _serve(args)
            assert proc.returncode != 0, args
            assert message in proc.stderr, (args, proc.stderr)
            assert "Traceback" not in proc.stderr
    finally:
        taken.close()


def _wait_for(url: str, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=1)
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_serve_registers_child_and_stops_cleanly(tmp_path: Path) -> None:
    p_port, c_port = free_port(), free_port()
    p_url, c_url = f"http://127.0.0.1:{p_port}", f"http://127.0.0.1:{c_port}"
    _trust(tmp_path / "p", "370000", tmp_path / "c", "370100", Relation.child, c_url)
    _trust(tmp_path / "c", "370100", tmp_path / "p", "370000", Relation.parent, p_url)
    parent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "citybrain",
            "serve",
            "--level",
            "province",
            "--code",
            "370000",
            "--data",
            str(tmp_path / "p"),
            "--port",
            str(p_port),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    _write_table(tmp_path / "c")
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "citybrain",
            "serve",
            "--level",
            "city",
            "--code",
            "370100",
            "--data",
            str(tmp_path / "c"),
            "--port",
            str(c_port),
            "--parent",
            f"http://127.0.0.1:{p_port}",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _wait_for(f"http://127.0.0.1:{p_port}/health").status_code == 200
        assert _wait_for(f"http://127.0.0.1:{c_port}/health").status_code == 200
        deadline = time.monotonic() + 30
        children: list[dict[str, object]] = []
        while time.monotonic() < deadline and not children:
            children = httpx.get(f"http://127.0.0.1:{p_port}/api/nodes").json()
            time.sleep(0.1)
        assert children and children[0]["code"] == "370100"
        assert children[0]["last_summary"]["datasets"][0]["rows"] == 3  # type: ignore[index]
    finally:
        for proc in (child, parent):
            proc.send_signal(signal.SIGTERM)
        for proc in (child, parent):
            # uvicorn finishes its requests, then re-raises SIGTERM as the conventional status
            assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    err = parent.stderr.read() if parent.stderr else ""
    assert '"node stopped"' in err and "Traceback" not in err


def test_dataset_profile_with_duckdb(tmp_path: Path) -> None:
    folder = tmp_path / "education"
    folder.mkdir(parents=True)
    pq.write_table(
        pa.table({"school_id": ["s1", "s2", "s2", None], "capacity": [45, 90, 90, 45]}),
        folder / "schools.parquet",
    )
    with _client(tmp_path, code="370100", level="city") as client:
        profile = client.get("/api/datasets/education/schools").json()
        assert profile["rows"] == 4
        school = next(c for c in profile["columns"] if c["name"] == "school_id")
        assert school["non_null"] == 3 and school["distinct_approx"] == 2
        assert client.get("/api/datasets/education/nothing").status_code == 404
        assert client.get("/api/datasets/Education;drop/x").status_code == 400
