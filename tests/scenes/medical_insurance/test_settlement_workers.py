"""Settlements at a node served by two worker processes: what one paid, the other checks."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from typing import Any

import httpx
from test_settlement_medins import CONSULTATION, _drug_line, _now, body
from test_voucher_node import (  # noqa: F401 - fixtures
    City,
    city_fixture,
    prepared_root_fixture,
    synth_root_fixture,
)

from conftest import free_port, serve_node, stop_process, wait_workers


def test_each_worker_checks_against_what_the_other_paid(city: City) -> None:
    person = city.people[0]
    city.activate(person)
    pharmacy = city.pharmacy()
    headers = city.terminal(pharmacy)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve_node(city.data, port, "--workers", "2", stderr=subprocess.PIPE)

    def settle(txn: str, items: list[dict[str, Any]], start: Any) -> dict[str, Any]:
        # a new connection each time: the kernel spreads them over the two workers' sockets
        with httpx.Client(base_url=base, timeout=30) as client:
            answer = client.post(
                "/api/medins/settlements",
                json=body(city.qr(person), txn, kind="pharmacy", items=items, start=start),
                headers=headers,
            )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    try:
        wait_workers(base, proc, workers=2)
        drug = _drug_line(_now() - timedelta(days=2))
        consultation = dict(drug, code=CONSULTATION, kind="service", quantity=1, unit_price=10.0)
        consultation["amount"] = 10.0
        # both workers come to know the person: consultations on days far apart
        for n in range(8):
            day = _now() - timedelta(days=20 + 3 * n)
            seen = dict(consultation, service_date=day.date().isoformat())
            assert settle(f"K-{n}", [seen], day)["paid"]
        earlier = _now() - timedelta(days=2)
        assert settle("K-drug", [drug], earlier)["outcome"] == "pass"
        # the same drug again, at whichever worker: each must know of that payment
        for n in range(8):
            today = _now() - timedelta(minutes=40 - n)
            again = dict(drug, service_date=today.date().isoformat())
            rules = {f["rule_id"] for f in settle(f"K-again-{n}", [again], today)["findings"]}
            assert "MI06_repeated_dispensing" in rules, (n, rules)
    finally:
        stop_process(proc)
    assert proc.returncode == 0
