"""The parents' phone page in a real browser: sign in with a code, apply, see the reason."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import test_service_setup as setup
from fastapi.testclient import TestClient
from test_service_setup import CITY, Family, Scene

from citybrain.app import create_app
from citybrain.core.config import load_settings
from conftest import CHROMIUM_ARGS, free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]
synth_jinan = setup.synth_jinan


@dataclass
class Served:
    """A Jinan node with its season open, served as a process."""

    url: str
    data: Path
    family: Family


@pytest.fixture(scope="module")
def served(synth_jinan: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Grant, open the season in process, then serve the folder with `citybrain serve`."""
    data = tmp_path_factory.mktemp("pages") / CITY
    shutil.copytree(synth_jinan, data)
    with TestClient(create_app(load_settings(data_dir=data, code=CITY, level="city"))) as c:
        scene = Scene(c, data)
        scene.grant_prefill()
        scene.grant_verification()
        opened = scene.open_season(deadline="2027-06-20T23:59:59+08:00")
        assert opened.status_code == 201, opened.text
        family = scene.families()[0]
    port = free_port()
    log = (data.parent / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "citybrain", "serve", "--data", str(data), "--port", str(port)]
        + ["--level", "city", "--code", CITY],
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
            raise AssertionError((data.parent / "serve.log").read_text())
        yield Served(url, data, family)
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


def _code(data: Path, phone: str) -> str:
    masked = phone[:3] + "****" + phone[-4:]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        outbox = data / "otp_outbox.log"
        if outbox.exists():
            found = re.findall(rf"code for {re.escape(masked)}: (\d{{6}})", outbox.read_text())
            if found:
                return found[-1]
        time.sleep(0.2)
    raise AssertionError("no code in the outbox")


def test_parent_signs_in_applies_and_sees_the_class(served: Served, browser: Any) -> None:
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{served.url}/m/enrollment")
    assert page.locator("#signin").is_visible()
    family = served.family
    page.fill("#phone", family.phone)
    page.click("#send")
    page.wait_for_selector("#message:has-text('验证码已发送')", timeout=10000)
    page.fill("#code", _code(served.data, family.phone))
    page.click("#verify")
    page.wait_for_selector("#apply:not([hidden])", timeout=15000)
    # the children come prefilled, masked, from the household register
    masked = family.child_id[:6] + "********" + family.child_id[-4:]
    assert masked in page.locator("#children").inner_text()
    assert page.locator("#ranking li").count() >= 1
    # a wrong ID number is refused with the reason, and nothing is stored
    page.fill("#child-id", family.child_id[:17] + ("0" if family.child_id[17] != "0" else "1"))
    page.click("#submit")
    page.wait_for_selector("#message.bad", timeout=10000)
    assert "check digit" in page.locator("#message").inner_text()
    assert "尚未报名" in page.locator("#applications").inner_text()
    page.fill("#child-id", family.child_id)
    page.click("#submit")
    page.wait_for_selector("#applications .app", timeout=15000)
    text = page.locator("#applications").inner_text()
    assert "小学一年级" in text
    assert "报名已提交" in page.locator("#notices").inner_text()
    # a second submission for the same child is refused
    page.click("#submit")
    page.wait_for_selector("#message:has-text('already')", timeout=10000)
    assert page.locator("#applications .app").count() == 1
    # the page survives a reload with the token kept in the tab
    page.reload()
    page.wait_for_selector("#applications .app", timeout=15000)
    assert not errors, errors
