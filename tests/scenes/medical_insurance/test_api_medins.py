"""The scene from its commands and as a served node: CLI walkthrough, bad input, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_settlement_medins import CONSULTATION, _now, body
from test_voucher_node import (  # noqa: F401 - fixtures
    CITY,
    fresh_nodes,
    people_of,
    prepared_root_fixture,
    synth_root_fixture,
)
from typer.testing import CliRunner

from citybrain.cli import app
from citybrain.scenes.medical_insurance import service as scene_service
from conftest import bearer, free_port, serve_node, wait_healthy

runner = CliRunner()


def cli(*args: str) -> Any:
    """Run a command in this process and return its JSON output."""
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_the_walkthrough_from_the_command_line(prepared_root: Path, tmp_path: Path) -> None:
    data = fresh_nodes(prepared_root, tmp_path)
    scene_service.forget_scenes()
    person = people_of(data)[0]
    import pyarrow.parquet as pq

    hospital = next(
        r["institution_id"]
        for r in pq.read_table(
            data / "medical_security" / "designated_institutions.parquet"
        ).to_pylist()
        if r["kind"] == "hospital"
    )
    issued = cli("medins", "terminals", "add", "--institution", hospital, "--data", str(data))
    assert issued["client_secret"] and issued["org"] == "inst-" + hospital.lower()
    voucher = cli(
        "medins",
        "voucher",
        "activate",
        "--phone",
        person.phone,
        "--id-number",
        person.id_number,
        "--device",
        "phone-0001",
        "--data",
        str(data),
    )
    assert voucher["status"] == "active"
    shown = cli(
        "medins",
        "voucher",
        "show",
        "--phone",
        person.phone,
        "--device",
        "phone-0001",
        "--data",
        str(data),
    )
    token = shown["token"]
    scanned = cli(
        "medins",
        "voucher",
        "scan",
        token,
        "--institution",
        hospital,
        "--transaction",
        "outpatient",
        "--data",
        str(data),
    )
    assert scanned["person"]["voucher_id"] == voucher["voucher_id"]
    day = _now().date().isoformat()
    over = [
        {
            "code": CONSULTATION,
            "kind": "service",
            "quantity": 1,
            "unit_price": 40.0,
            "amount": 40.0,
            "service_date": day,
        }
    ]
    file = tmp_path / "settlement.json"
    file.write_text(json.dumps(body(token, "CLI-1", items=over)))
    answer = cli("medins", "settle", str(file), "--institution", hospital, "--data", str(data))
    assert answer["outcome"] == "block" and answer["findings"][0]["rule_id"] == "MI02_over_price"
    sweep = tmp_path / "findings.jsonl"
    sweep.write_text(
        json.dumps(
            {
                "rule_id": "MI07_split_admission",
                "rule_version": 1,
                "grade": "warn",
                "settlement_id": "SW1",
                "person_id": person.person_id,
                "institution_id": hospital,
                "item_code": "",
                "reason": "readmitted",
            }
        )
        + "\n"
    )
    assert cli("medins", "findings", "import", str(sweep), "--data", str(data))["stored"] == 1
    opened = cli("medins", "cases", "open", "--data", str(data))
    assert opened["opened"] == 2
    listed = cli("medins", "cases", "list", "--data", str(data))
    assert {c["rule_id"] for c in listed} == {"MI02_over_price", "MI07_split_admission"}
    moved = cli(
        "medins",
        "cases",
        "act",
        listed[0]["id"],
        "--action",
        "advance",
        "--note",
        "ok",
        "--data",
        str(data),
    )
    assert moved["stage"] == "second_review"
    figures = cli("medins", "panel", "--data", str(data))
    assert figures["fund"]["blocked_settlements"] == 1
    assert figures["vouchers"]["uses"] == {"outpatient": 1}
    scene_service.forget_scenes()


def test_commands_refuse_bad_input_with_one_sentence(prepared_root: Path, tmp_path: Path) -> None:
    data = fresh_nodes(prepared_root, tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    env = {**os.environ, "CITYBRAIN_LOG_LEVEL": "WARNING"}
    cases = [
        (
            ["medins", "settle", str(broken), "--institution", "M1", "--data", str(data)],
            "is neither JSON nor JSON Lines",
        ),
        (
            [
                "medins",
                "voucher",
                "show",
                "--phone",
                "123",
                "--device",
                "phone-0001",
                "--data",
                str(data),
            ],
            "phone",
        ),
        (
            ["medins", "voucher", "scan", "CBV1.x.y", "--institution", "M1", "--data", str(data)],
            "registered terminal",
        ),
        (
            [
                "medins",
                "cases",
                "act",
                "MCnone",
                "--action",
                "advance",
                "--note",
                "x",
                "--data",
                str(data),
            ],
            "no supervision case",
        ),
    ]
    for args, words in cases:
        done = subprocess.run(
            [sys.executable, "-m", "citybrain", *args], capture_output=True, text=True, env=env
        )
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert words in done.stderr and "Traceback" not in done.stderr, done.stderr


def _serve(data: Path, port: int) -> subprocess.Popen[bytes]:
    return serve_node(data, port, code=CITY)


def _wait(url: str) -> None:
    wait_healthy(url, timeout=30)


@pytest.mark.slow
def test_an_acknowledged_settlement_survives_kill_9(prepared_root: Path, tmp_path: Path) -> None:
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
    node = _serve(data, port)
    try:
        _wait(url)
        admin = bearer(data, issuer=CITY)
        citizen = bearer(
            data,
            issuer=CITY,
            org="citizens",
            role="citizen",
            subject=f"citizen:{person.phone}",
            phone=person.phone,
        )
        terminal = bearer(data, issuer=CITY, org="inst-" + hospital.lower(), role="service")
        with httpx.Client(base_url=url, timeout=10) as http:
            assert (
                http.post(
                    "/api/medins/terminals", json={"institution_id": hospital}, headers=admin
                ).status_code
                == 201
            )
            assert (
                http.post(
                    "/api/medins/voucher/activate",
                    json={"id_number": person.id_number, "device_id": "phone-0001"},
                    headers=citizen,
                ).status_code
                == 200
            )
            token = http.post(
                "/api/medins/voucher/qr", json={"device_id": "phone-0001"}, headers=citizen
            ).json()["token"]
            sent = body(token, "K-1")
            first = http.post("/api/medins/settlements", json=sent, headers=terminal)
            assert first.status_code == 200, first.text
        node.send_signal(signal.SIGKILL)
        node.wait(timeout=10)
        node = _serve(data, port)
        _wait(url)
        with httpx.Client(base_url=url, timeout=10) as http:
            stored = http.get(
                f"/api/medins/settlements/{first.json()['settlement_id']}", headers=admin
            )
            assert stored.status_code == 200
            again = http.post("/api/medins/settlements", json=sent, headers=terminal)
            assert again.json()["settlement_id"] == first.json()["settlement_id"]
            assert again.json()["replayed"] is True
            reuse = http.post("/api/medins/settlements", json=body(token, "K-2"), headers=terminal)
            assert reuse.status_code == 409
    finally:
        node.kill()
        node.wait(timeout=10)


def test_findings_of_a_sweep_file_become_cases(prepared_root: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = fresh_nodes(prepared_root, tmp_path)
    scene_service.forget_scenes()
    rows = [
        {
            "rule_id": "MI09_time_conflict",
            "rule_version": 1,
            "grade": "block",
            "settlement_id": f"S{i}",
            "person_id": f"P{i}",
            "institution_id": "M370102H20000",
            "item_code": "",
            "reason": "MI09_time_conflict v1: two places at once",
        }
        for i in range(4)
    ]
    file = tmp_path / "findings.parquet"
    pq.write_table(pa.Table.from_pylist(rows), file)
    assert cli("medins", "findings", "import", str(file), "--data", str(data))["stored"] == 4
    assert cli("medins", "findings", "import", str(file), "--data", str(data))["skipped"] == 4
    opened = cli("medins", "cases", "open", "--source", "sweep", "--data", str(data))
    assert opened["opened"] == 4
    listed = cli("medins", "cases", "list", "--stage", "first_review", "--data", str(data))
    assert {c["rule_id"] for c in listed} == {"MI09_time_conflict"}
    assert all(c["event_case_id"] for c in listed)
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{"rule_id": "x"}]), bad)
    result = runner.invoke(app, ["medins", "findings", "import", str(bad), "--data", str(data)])
    assert result.exit_code != 0 and "finding" in str(result.exception)
    scene_service.forget_scenes()
