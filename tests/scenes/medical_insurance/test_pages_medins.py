"""The phone and terminal pages, served by the node without a CDN, and the dashboard panel."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_voucher_node import (  # noqa: F401 - fixtures
    CITY,
    City,
    city_fixture,
    fresh_nodes,
    people_of,
    prepared_root_fixture,
    synth_root_fixture,
)

from conftest import CHROMIUM_ARGS, bearer, free_port


def test_the_pages_and_their_assets_are_served_locally(city: City) -> None:
    for path in ("/m/medins/voucher", "/m/medins/terminal"):
        page = city.client.get(path)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets and all(a.startswith("/m/medins/static/") for a in assets), assets
        for asset in assets:
            assert city.client.get(asset).status_code == 200, asset
    script = city.client.get("/m/medins/static/voucher.js").text
    assert "/api/medins/voucher/qr" in script and "http" not in script.replace("https", "")
    assert city.client.get("/m/medins/static/..%2F..%2Fapi.py").status_code == 404
    assert city.client.get("/m/medins/static/nothing.js").status_code == 404


def test_the_dashboard_lists_the_panel_in_its_form(city: City) -> None:
    panels = city.client.get("/api/dashboard/panels", headers=city.h()).json()
    mine = next(p for p in panels if p["id"] == "medical_insurance")
    data = city.client.get(mine["data_url"], headers=city.h())
    assert data.status_code == 200, data.text
    form = data.json()
    labels = {c["label_en"] for c in form["cards"]}
    assert {"Settlements", "Fund paid", "Blocked", "Findings", "Open cases"} <= labels
    assert form["table"]["columns"][0]["key"] == "rule"
    citizen = city.client.get(mine["data_url"], headers=city.h("citizens", "citizen"))
    assert citizen.status_code == 403
    assert city.client.get(mine["data_url"]).status_code == 401


def _code(data: Path, phone: str) -> str:
    lines = (data / "otp_outbox.log").read_text(encoding="utf-8").strip().splitlines()
    masked = f"{phone[:3]}****{phone[-4:]}"
    return next(line for line in reversed(lines) if masked in line).rsplit(" ", 1)[-1]


@pytest.mark.browser
def test_the_phone_shows_a_payload_that_a_terminal_scans(
    prepared_root: Path, tmp_path: Path, chromium_path: str
) -> None:
    from playwright.sync_api import sync_playwright

    data = fresh_nodes(prepared_root, tmp_path)
    person = people_of(data)[0]
    import pyarrow.parquet as pq

    hospital = next(
        r["institution_id"]
        for r in pq.read_table(
            data / "medical_security" / "designated_institutions.parquet"
        ).to_pylist()
        if r["kind"] == "hospital"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "citybrain",
            "serve",
            "--level",
            "city",
            "--code",
            CITY,
            "--data",
            str(data),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "CITYBRAIN_LOG_LEVEL": "WARNING"},
    )
    errors: list[str] = []
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/m/medins/voucher")
            page.fill("#phone", person.phone)
            page.click("#send")
            page.wait_for_function("document.getElementById('message').textContent.length > 0")
            page.fill("#code", _code(data, person.phone))
            page.click("#verify")
            page.wait_for_selector("#activate:not([hidden])")
            page.fill("#idnumber", person.id_number)
            page.click("#activate-btn")
            page.wait_for_function(
                "document.getElementById('payload').textContent.startsWith('CBV1.')"
            )
            payload = page.inner_text("#payload").strip()
            holder = page.inner_text("#holder")
            browser.close()
        assert person.id_number not in holder and person.id_number[-4:] in holder
        admin = bearer(data, issuer=CITY)
        terminal = bearer(data, issuer=CITY, org="inst-" + hospital.lower(), role="service")
        with httpx.Client(base_url=url, timeout=10) as http:
            http.post("/api/medins/terminals", json={"institution_id": hospital}, headers=admin)
            scanned = http.post(
                "/api/medins/vouchers/scan",
                json={"token": payload, "transaction": "registration"},
                headers=terminal,
            )
        assert scanned.status_code == 200, scanned.text
        assert scanned.json()["person"]["gender"] == person.gender
        assert errors == []
    finally:
        node.terminate()
        node.wait(timeout=20)
