"""Grid workers on their phones: sign-in with a one-time code, report, follow their own cases."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings
from conftest import CHROMIUM_ARGS, bearer

CITY = "370100"


@pytest.fixture(scope="module")
def city_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic Jinan with its grids and grid workers."""
    root = tmp_path_factory.mktemp("grid")
    subprocess.run(
        [sys.executable, "-m", "citybrain", "synth", "--scale", "0.0002", "--seed", "2"]
        + ["--out", str(root), "--cities", CITY],
        check=True,
        capture_output=True,
    )
    return root / CITY


@pytest.fixture
def client(city_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    data = tmp_path / "node"
    subprocess.run(["cp", "-r", str(city_dir), str(data)], check=True)
    settings = load_settings(data_dir=data, code=CITY, level="city")
    with TestClient(create_app(settings)) as c:
        yield c


def _worker(data: Path) -> dict[str, str]:
    rows = pq.read_table(data / "city_management" / "grid_workers.parquet").slice(0, 1)
    return dict(rows.to_pylist()[0])


def _code(data: Path, phone: str) -> str:
    lines = (data / "otp_outbox.log").read_text(encoding="utf-8").strip().splitlines()
    masked = f"{phone[:3]}****{phone[-4:]}"
    return next(line for line in reversed(lines) if masked in line).rsplit(" ", 1)[-1]


def _sign_in(client: TestClient, data: Path, phone: str) -> dict[str, str]:
    assert client.post("/auth/otp/request", json={"phone": phone}).status_code == 202
    answer = client.post("/auth/grid/verify", json={"phone": phone, "code": _code(data, phone)})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def test_grid_worker_signs_in_reports_and_follows_own_cases(client: TestClient) -> None:
    data = client.app.state.settings.data_dir  # type: ignore[attr-defined]
    worker = _worker(data)
    headers = _sign_in(client, data, worker["phone"])
    me = client.get("/api/events/grid/me", headers=headers).json()
    assert me["worker_id"] == worker["worker_id"] and me["grid_code"] == worker["grid_code"]
    assert me["centroid_lon"] is not None
    body = {
        "event_type": "manhole_cover",
        "description": "井盖缺失，有行人跌落风险",
        "lon": me["centroid_lon"],
        "lat": me["centroid_lat"],
        "urgency": "urgent",
    }
    created = client.post("/api/events/cases", json=body, headers=headers)
    assert created.status_code == 201, created.text
    case = created.json()
    assert case["source"] == "grid" and case["reporter"] == f"grid:{worker['worker_id']}"
    # another worker's report is not in this worker's list, nor can they open it
    ops = bearer(data, org="bureau", role="operator", issuer=CITY)
    other = client.post("/api/events/cases", json=body, headers=ops).json()
    mine = client.get("/api/events/cases", headers=headers).json()
    assert [c["id"] for c in mine] == [case["id"]]
    assert client.get(f"/api/events/cases/{other['id']}", headers=headers).status_code == 404
    steps = client.get(f"/api/events/cases/{case['id']}/transitions", headers=headers)
    assert steps.status_code == 200 and steps.json()[0]["to_state"] == "captured"
    # a grid worker reads no departmental records
    records = client.get("/api/tables/city_management/grid_workers/records", headers=headers)
    assert records.status_code == 403


def test_grid_sign_in_refuses_bad_codes_and_strangers(client: TestClient) -> None:
    data = client.app.state.settings.data_dir  # type: ignore[attr-defined]
    worker = _worker(data)
    client.post("/auth/otp/request", json={"phone": worker["phone"]})
    wrong = client.post("/auth/grid/verify", json={"phone": worker["phone"], "code": "000000"})
    assert wrong.status_code == 401
    assert client.post("/auth/grid/verify", json={"phone": "12", "code": "1"}).status_code == 400
    extra = client.post("/auth/grid/verify", json={"phone": worker["phone"], "x": 1})
    assert extra.status_code in (400, 422)
    stranger = "13900000001"
    client.post("/auth/otp/request", json={"phone": stranger})
    code = _code(data, stranger)
    refused = client.post("/auth/grid/verify", json={"phone": stranger, "code": code})
    assert refused.status_code == 403 and "grid worker" in refused.json()["title"]
    # a citizen's token is not a grid worker's
    citizen = bearer(data, org="citizens", role="citizen", issuer=CITY, phone=stranger)
    assert client.get("/api/events/grid/me", headers=citizen).status_code == 403
    assert client.get("/api/events/grid/me").status_code == 401
    # a report outside the node's territory is refused and nothing is stored
    headers = _sign_in(client, data, worker["phone"])
    far = {"event_type": "manhole_cover", "description": "x", "lon": 121.4, "lat": 31.2}
    assert client.post("/api/events/cases", json=far, headers=headers).status_code in (400, 422)
    assert client.get("/api/events/cases", headers=headers).json() == []


@pytest.mark.browser
def test_grid_page_on_a_phone(city_dir: Path, tmp_path: Path, chromium_path: str) -> None:
    import threading
    import time

    import uvicorn

    from conftest import free_port

    executable = chromium_path
    data = tmp_path / "node"
    subprocess.run(["cp", "-r", str(city_dir), str(data)], check=True)
    app = create_app(load_settings(data_dir=data, code=CITY, level="city"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    from playwright.sync_api import sync_playwright

    worker = _worker(data)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"http://127.0.0.1:{port}/m/grid")
            page.fill("#phone", worker["phone"])
            page.click("#code-form button[type=submit]")
            page.wait_for_selector("#signin-form:not([hidden])")
            page.fill("#code", _code(data, worker["phone"]))
            page.click("#signin-form button[type=submit]")
            page.wait_for_selector("#report-section:not([hidden])")
            page.wait_for_function("document.querySelectorAll('#event-type option').length > 5")
            page.select_option("#event-type", "street_lamp")
            page.fill("#description", "路灯不亮 street lamp out")
            page.click("#report-form button[type=submit]")
            page.wait_for_selector("#cases li[data-id]")
            assert "路灯不亮" in page.inner_text("#cases")
            page.click("#cases li[data-id]")
            page.wait_for_selector("#timeline-steps li")
            page.screenshot(path=str(tmp_path / "grid.png"))
            browser.close()
        assert not errors, errors
    finally:
        server.should_exit = True
        thread.join(timeout=10)
