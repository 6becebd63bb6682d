"""The README's governance walkthrough, run as written against a node of its own."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
CITY = "370100"


def _block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Governance walkthrough", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```sh\n(.*?)```", section, re.S)
    assert found is not None
    return found.group(1)


@pytest.fixture
def jinan(tmp_path: Path) -> Path:
    """Synthesise Jinan at a tiny scale where the walkthrough expects it."""
    out = tmp_path / ".demo" / "synth"
    subprocess.run(
        [sys.executable, "-m", "citybrain", "synth", "--scale", "0.0003", "--seed", "1"]
        + ["--out", str(out), "--cities", CITY, "--workers", "1"],
        check=True,
        capture_output=True,
    )
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    return tmp_path


def test_walkthrough_runs_as_written(jinan: Path) -> None:
    port = free_port()
    data = jinan / ".demo" / "synth" / CITY
    node = subprocess.Popen(
        [sys.executable, "-m", "citybrain", "serve", "--level", "city", "--code", CITY]
        + ["--data", str(data), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        script = _block().replace("http://127.0.0.1:8001", f"http://127.0.0.1:{port}")
        assert shutil.which("bash")
        run = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=jinan,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=30)
    out = run.stdout
    assert run.returncode == 0, run.stderr + out
    assert re.search(r'"id_number":"\d{6}\*{8}\d{3}[\dX]"', out), out
    assert '"residence_county":"370103"' not in out
    assert out.count("/Forbidden") == 2, out
    assert re.search(r"ok: \d+ records", out), out
    assert "exit 1: the changed record is named" in out
    assert "broken at seq 1, line 1" in out
