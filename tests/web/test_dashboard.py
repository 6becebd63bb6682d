"""The one screen in a browser: sign-in, the map of 16 cities, drill-down, the live event feed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from citybrain.web.pages import vendor_available
from conftest import CHROMIUM_ARGS, free_port

pytestmark = pytest.mark.slow

LIXIA = (117.05, 36.67)


@dataclass
class Served:
    """A province node served as a process over a tiny synthetic Shandong."""

    url: str
    data: Path
    token: str

    @property
    def headers(self) -> dict[str, str]:
        """Return the operator's Authorization header."""
        return {"Authorization": f"Bearer {self.token}"}


def _token(data: Path, role: str = "operator", subject: str = "ops") -> str:
    from citybrain.governance.identity.tokens import issue_token

    return issue_token(
        data_dir=data, issuer="370000", subject=subject, org="bureau", role=role, ttl=3600
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Generate the synthetic province, serve it on a free port, stop it afterwards."""
    if not vendor_available():
        pytest.skip("ECharts is not built into the package (make assets)")
    root = tmp_path_factory.mktemp("dash")
    subprocess.run(
        [sys.executable, "-m", "citybrain", "synth", "--scale", "0.0002", "--seed", "2"]
        + ["--out", str(root / "synth"), "--cities", "370100"],
        check=True,
        capture_output=True,
    )
    data = root / "synth" / "370000"
    port = free_port()
    log = (root / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "citybrain", "serve", "--data", str(data), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError((root / "serve.log").read_text())
        node = Served(url=url, data=data, token=_token(data))
        # indicators computed once, so the panel shows scores (or their absence) for the cities
        computed = httpx.post(
            f"{url}/api/indicators/compute", json={"tree": "u4ssc"}, headers=node.headers
        )
        assert computed.status_code == 200, computed.text
        yield node
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    """Start Debian's chromium under Playwright for the module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _page(browser: Any, errors: list[str]) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page


def _artifacts() -> Path:
    out = Path(os.environ.get("CITYBRAIN_TEST_ARTIFACTS", "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _map_codes(page: Any) -> list[str]:
    return page.evaluate(  # type: ignore[no-any-return]
        "() => window.__chart.getOption().series[0].data.map(d => d.name)"
    )


def test_dashboard_map_drill_down_and_live_feed(served: Served, browser: Any) -> None:
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(f"{served.url}/#token={served.token}")
    page.wait_for_selector("body[data-live=true]", timeout=30000)
    # the token left the address bar and lives in the tab's session storage
    assert "token" not in page.url
    assert page.evaluate("() => sessionStorage.getItem('citybrain.token')") == served.token
    # the province map: its 16 cities, and the indicator panel lists them with the province
    cities = _map_codes(page)
    assert len(cities) == 16 and "370100" in cities and "371700" in cities
    assert page.locator("#indicators tbody tr").count() == 17
    assert "济南市" in page.locator("#indicators").inner_text()
    assert page.locator("#tree option").count() >= 3
    assert not page.locator("#signin-section").is_visible()

    # an event posted through the API shows in the feed within 2 s
    posted = httpx.post(
        f"{served.url}/api/events/cases",
        json={
            "event_type": "manhole_cover",
            "description": "泉城路井盖丢了",
            "lon": LIXIA[0],
            "lat": LIXIA[1],
        },
        headers=served.headers,
    )
    assert posted.status_code == 201, posted.text
    case_id = posted.json()["id"]
    start = time.monotonic()
    page.wait_for_selector(f"#feed tbody tr[data-id={case_id}]", timeout=2000)
    assert time.monotonic() - start < 2.0
    first = page.locator("#feed tbody tr").first
    assert first.get_attribute("data-id") == case_id  # newest first
    assert "井盖" in first.inner_text()
    # the scene plugins' panels: the data overview lists this node's departments
    page.wait_for_selector("#panel-overview[data-state=ok] td", timeout=10000)
    assert "medical_security" in page.locator("#panel-overview").inner_text()
    page.screenshot(path=str(_artifacts() / "dashboard-province.png"), full_page=True)

    # clicking Jinan opens its counties on the map and their scores in the panel
    _click_unit(page, "370100")
    page.wait_for_selector("body[data-map-level=county]", timeout=10000)
    counties = _map_codes(page)
    assert len(counties) >= 10 and all(c.startswith("3701") for c in counties)
    page.wait_for_function(
        "() => document.querySelector('#indicator-area').textContent.includes('济南')",
        timeout=10000,
    )
    assert page.locator("#indicators tbody tr").count() == len(counties) + 1
    assert page.locator("#map-up").is_visible()
    page.screenshot(path=str(_artifacts() / "dashboard-jinan.png"), full_page=True)
    page.locator("#map-up").click()
    page.wait_for_selector("body[data-map-level=city]", timeout=10000)
    page.close()
    assert errors == []


def _click_unit(page: Any, code: str) -> None:
    """Click the map where ECharts draws the unit's centre, as a person would."""
    point = page.evaluate(
        """(code) => {
            const chart = window.__chart;
            const f = chart.getOption().series[0].data.find(d => d.name === code);
            const geo = chart.getModel().getSeriesByIndex(0).coordinateSystem;
            const region = geo.getRegion(code);
            return f && region ? chart.convertToPixel({seriesIndex: 0}, region.getCenter()) : null;
        }""",
        code,
    )
    assert point is not None
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + point[0], box["y"] + point[1])


def test_token_less_visit_shows_the_sign_in_form(served: Served, browser: Any) -> None:
    httpx.post(
        f"{served.url}/api/users",
        json={"username": "duty", "org": "bureau", "role": "operator", "password": "s3cret-pass"},
        headers={"Authorization": f"Bearer {_token(served.data, role='bureau_admin')}"},
    ).raise_for_status()
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(f"{served.url}/")
    page.wait_for_selector("body[data-ready=true][data-signin=true]", timeout=30000)
    assert page.locator("#signin-section").is_visible()
    assert not page.locator("#feed-section").is_visible()
    # the public parts still show: the map of the cities and the node table
    assert len(_map_codes(page)) == 16
    assert page.locator("#nodes tbody tr").count() >= 1
    page.screenshot(path=str(_artifacts() / "dashboard-signin.png"), full_page=True)
    assert errors == []  # no protected call made without a token

    # a wrong password is named on the form; the right one opens the live screen
    page.fill("#signin input[name=username]", "duty")
    page.fill("#signin input[name=password]", "wrong-password")
    page.click("#signin button[type=submit]")
    page.wait_for_function(
        "() => document.querySelector('#signin-error').textContent.length > 0", timeout=5000
    )
    page.fill("#signin input[name=password]", "s3cret-pass")
    page.click("#signin button[type=submit]")
    page.wait_for_selector("body[data-live=true]", timeout=15000)
    assert page.locator("#feed-section").is_visible()
    assert not page.locator("#signin-section").is_visible()
    page.close()
