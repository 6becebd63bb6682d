"""Shared fixtures: real services, skipped when absent unless CITYBRAIN_REQUIRE_SERVICES=1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

REQUIRE_SERVICES = os.environ.get("CITYBRAIN_REQUIRE_SERVICES") == "1"
PG_HOST = os.environ.get("CITYBRAIN_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CITYBRAIN_TEST_PG_PORT", "5432"))
PG_DB = os.environ.get("CITYBRAIN_TEST_PG_DB", "test")
MQTT_HOST = os.environ.get("CITYBRAIN_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("CITYBRAIN_TEST_MQTT_PORT", "1883"))
CHROMIUM = os.environ.get("CITYBRAIN_TEST_CHROMIUM", "/usr/bin/chromium")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def need_service(name: str, available: bool, how: str) -> None:
    """Skip (or fail under CITYBRAIN_REQUIRE_SERVICES=1) when a real service is missing."""
    if available:
        return
    message = f"{name} is not available: {how}"
    if REQUIRE_SERVICES:
        pytest.fail(f"CITYBRAIN_REQUIRE_SERVICES=1 and {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    """A migrated SQLite store in the test's folder."""
    from citybrain.core.db import create_engine_for, upgrade

    made = create_engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(made)
    return made


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Create a throw-away PostgreSQL database for this test session and drop it after."""
    need_service(
        "PostgreSQL", _port_open(PG_HOST, PG_PORT), f"nothing listens on {PG_HOST}:{PG_PORT}"
    )
    import psycopg

    name = f"citybrain_test_{uuid.uuid4().hex[:12]}"
    admin = (
        f"host={PG_HOST} port={PG_PORT} dbname={PG_DB} user={os.environ.get('PGUSER', 'postgres')}"
    )
    try:
        conn = psycopg.connect(admin, autocommit=True)
    except psycopg.OperationalError:
        admin = f"host={PG_HOST} port={PG_PORT} dbname={PG_DB}"
        conn = psycopg.connect(admin, autocommit=True)
    user = conn.info.user
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_schema(postgres_url: str, prefix: str = "t") -> str:
    """A new, empty schema in the session's database; the URL of a store that works in it."""
    from sqlalchemy import text

    from citybrain.core.db import create_engine_for

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine_for(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    return f"{postgres_url}?options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def mqtt_broker() -> tuple[str, int]:
    """Return the address of the real MQTT broker."""
    need_service(
        "Mosquitto", _port_open(MQTT_HOST, MQTT_PORT), f"nothing on {MQTT_HOST}:{MQTT_PORT}"
    )
    return MQTT_HOST, MQTT_PORT


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Return the path of Debian's chromium for Playwright."""
    found = Path(CHROMIUM).exists() or shutil.which("chromium") is not None
    need_service("chromium", found, f"{CHROMIUM} is missing (apt-get install -y chromium)")
    return CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    """Return a TCP port that is free right now on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_node(
    data: Path,
    port: int,
    *extra: str,
    code: str = "370100",
    level: str = "city",
    stderr: int | None = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `citybrain serve` for one node in its own process, logging warnings only."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "citybrain",
            "serve",
            "--level",
            level,
            "--code",
            code,
            "--data",
            str(data),
            "--port",
            str(port),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env={**os.environ, "CITYBRAIN_LOG_LEVEL": "WARNING", **(env or {})},
    )


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Ask a process to stop and wait a minute; kill it and fail if it does not."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def wait_healthy(base_url: str, timeout: float = 60.0) -> None:
    """Wait until a node answers /health with 200, or fail the test."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(base_url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the node at {base_url} did not start")


def listening_workers(proc: subprocess.Popen[bytes]) -> list[Any]:
    """The child processes of a node listening on a port (not multiprocessing's tracker)."""
    import psutil

    return [
        c
        for c in psutil.Process(proc.pid).children()
        if any(s.status == psutil.CONN_LISTEN for s in c.net_connections())
    ]


def wait_workers(base_url: str, proc: subprocess.Popen[bytes], workers: int) -> None:
    """Wait until a node answers /health and `workers` of its processes listen."""
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            healthy = httpx.get(f"{base_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            healthy = False
        if healthy and len(listening_workers(proc)) >= workers:
            return
        time.sleep(0.3)
    pytest.fail("the workers did not start")


def bearer(
    data_dir: Path,
    *,
    org: str = "bureau",
    role: str = "bureau_admin",
    issuer: str = "370000",
    subject: str = "test",
    ttl: int = 3600,
    phone: str | None = None,
) -> dict[str, str]:
    """Return an Authorization header with a token signed by the node of data_dir."""
    from citybrain.governance.identity.tokens import issue_token

    token = issue_token(
        data_dir=data_dir,
        issuer=issuer,
        subject=subject,
        org=org,
        role=role,
        ttl=ttl,
        phone=phone,
    )
    return {"Authorization": f"Bearer {token}"}
