"""`citybrain demo up` serves the province and 16 city nodes, and the page lists them."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import CHROMIUM_ARGS, stop_process

# a test that serves several nodes runs after the others of its group, not beside them:
# two of them at once on two cores starve each other's health waits
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("many_nodes")]


def _free_block(size: int) -> int:
    rng = random.Random(os.getpid())
    for _ in range(50):
        # below the kernel's ephemeral range, where outgoing connections take their ports
        base = rng.randrange(20000, 32000)
        try:
            for port in range(base, base + size):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no block of free ports")


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _children(url: str) -> int:
    try:
        return len(httpx.get(f"{url}/api/nodes", timeout=2).json())
    except (httpx.HTTPError, ValueError):
        return -1


def test_demo_serves_17_nodes_and_page_lists_them(tmp_path: Path, chromium_path: str) -> None:
    port = _free_block(17)
    root = tmp_path / "demo"
    log = (tmp_path / "demo.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "citybrain",
            "demo",
            "up",
            "--scale",
            "0.0002",
            "--seed",
            "5",
            "--dir",
            str(root),
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    province = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _children(province) == 16 or proc.poll() is not None, 240, "16 cities")
        assert proc.poll() is None, (tmp_path / "demo.log").read_text()
        for offset in range(17):
            assert (
                httpx.get(f"http://127.0.0.1:{port + offset}/health", timeout=5).status_code == 200
            )

        from playwright.sync_api import sync_playwright

        errors: list[str] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(province + "/")
            page.wait_for_selector("body[data-ready=true]", timeout=30000)
            rows = page.locator("#nodes tbody tr")
            assert rows.count() == 17
            assert "济南市" in page.locator("#nodes").inner_text()
            out = Path(os.environ.get("CITYBRAIN_TEST_ARTIFACTS", "test-artifacts"))
            out.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out / "demo-province.png"), full_page=True)
            browser.close()
        assert errors == []
        # the province aggregates its live cities: the demo computes and rolls up at start
        demo_log = tmp_path / "demo.log"
        _wait(lambda: "Indicators:" in demo_log.read_text(), 240, "the indicator roll-up")
        assert "16 cities computed" in demo_log.read_text()
        assert "computations failed" not in demo_log.read_text()
        from citybrain.governance.identity.tokens import issue_token

        token = issue_token(
            data_dir=root / "synth" / "370000",
            issuer="370000",
            subject="t",
            org="bureau",
            role="operator",
        )
        compared = httpx.get(
            f"{province}/api/indicators/compare",
            params={"tree": "u4ssc", "units": "370000,370100,371700"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).json()
        total = next(r for r in compared["rows"] if r["kind"] == "tree")
        assert all(total["values"][u]["status"] == "ok" for u in ("370000", "370100", "371700"))
    finally:
        try:
            stop_process(proc, signal.SIGINT)
        finally:
            log.close()
    # every node process is gone once the demo stops
    for offset in range(17):
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port + offset}/health", timeout=1)
