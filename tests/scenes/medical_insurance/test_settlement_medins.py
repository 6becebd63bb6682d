"""Settlement with the check before payment: paid, blocked, idempotent, bad input, vouchers."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, func, select
from test_voucher_node import (  # noqa: F401 - fixtures
    City,
    city_fixture,
    prepared_root_fixture,
    synth_root_fixture,
)

from citybrain.scenes.medical_insurance.settlement import CST
from citybrain.scenes.medical_insurance.tables import findings, settlements, voucher_uses

DRUG = "XD00001"  # 甲, 0.86 a capsule, at most 28 per visit
CONSULTATION = "FW00000"  # 甲, 10.00


def _now() -> datetime:
    return datetime.now(CST).replace(tzinfo=None, microsecond=0)


def body(
    token: str,
    txn: str,
    *,
    kind: str = "outpatient",
    items: list[dict[str, Any]] | None = None,
    start: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A settlement of a consultation and a week of capsules, at standard prices."""
    begin = start or _now() - timedelta(minutes=40)
    day = begin.date().isoformat()
    lines = items or [
        {
            "code": CONSULTATION,
            "kind": "service",
            "quantity": 1,
            "unit_price": 10.0,
            "amount": 10.0,
            "service_date": day,
        },
        {
            "code": DRUG,
            "kind": "drug",
            "quantity": 14,
            "unit_price": 0.86,
            "amount": 12.04,
            "service_date": day,
        },
    ]
    return {
        "txn_id": txn,
        "voucher": token,
        "kind": kind,
        "diagnosis": "J06.9",
        "start": begin.isoformat(),
        "end": (begin + timedelta(minutes=30)).isoformat(),
        "items": lines,
        **extra,
    }


def _drug_line(day: datetime) -> dict[str, Any]:
    """Fourteen capsules of the test drug at its standard price, served on that day."""
    return {
        "code": DRUG,
        "kind": "drug",
        "quantity": 14,
        "unit_price": 0.86,
        "amount": 12.04,
        "service_date": day.date().isoformat(),
    }


def _count(city: City, table: Any) -> int:
    engine = city.client.app.state.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _ready(city: City, n: int = 0) -> tuple[Any, str, dict[str, str]]:
    person = city.people[n]
    city.activate(person)
    institution = city.hospital()
    return person, institution, city.terminal(institution)


def test_a_clean_settlement_is_paid_and_committed(city: City) -> None:
    person, institution, terminal = _ready(city)
    response = city.client.post(
        "/api/medins/settlements", json=body(city.qr(person), "T-0001"), headers=terminal
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["outcome"] == "pass" and answer["paid"] is True
    assert answer["total"] == 22.04
    # 甲 items are fully eligible; an outpatient visit pays half (40 % for 居民医保)
    assert answer["fund_amount"] in (11.02, 8.82)
    assert answer["personal_amount"] == round(22.04 - answer["fund_amount"], 2)
    assert _count(city, settlements) == 1 and _count(city, voucher_uses) == 1
    stored = city.client.get(
        f"/api/medins/settlements/{answer['settlement_id']}", headers=city.h()
    ).json()
    assert stored["record"]["person_id"] == person.person_id
    assert stored["record"]["institution_id"] == institution


def test_the_same_transaction_is_answered_again_and_a_different_body_is_409(city: City) -> None:
    person, _, terminal = _ready(city)
    first_body = body(city.qr(person), "T-0002")
    first = city.client.post("/api/medins/settlements", json=first_body, headers=terminal)
    again = city.client.post("/api/medins/settlements", json=first_body, headers=terminal)
    assert again.status_code == 200
    assert again.json()["settlement_id"] == first.json()["settlement_id"]
    assert again.json()["replayed"] is True
    changed = dict(first_body, diagnosis="K29.7")
    conflict = city.client.post("/api/medins/settlements", json=changed, headers=terminal)
    assert conflict.status_code == 409
    assert _count(city, settlements) == 1


def test_an_item_above_its_standard_price_is_blocked_and_not_paid(city: City) -> None:
    person, _, terminal = _ready(city)
    day = (_now() - timedelta(minutes=40)).date().isoformat()
    items = [
        {
            "code": CONSULTATION,
            "kind": "service",
            "quantity": 1,
            "unit_price": 25.0,
            "amount": 25.0,
            "service_date": day,
        },
    ]
    response = city.client.post(
        "/api/medins/settlements",
        json=body(city.qr(person), "T-0003", items=items),
        headers=terminal,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["outcome"] == "block" and answer["paid"] is False
    assert answer["fund_amount"] == 0 and answer["personal_amount"] == 25.0
    assert [f["rule_id"] for f in answer["findings"]] == ["MI02_over_price"]
    assert "standard price" in answer["findings"][0]["reason"]
    listed = city.client.get(
        "/api/medins/findings", params={"source": "before_payment"}, headers=city.h()
    ).json()
    assert [f["rule_id"] for f in listed] == ["MI02_over_price"]
    fund = city.client.get("/api/medins/panel", headers=city.h()).json()["fund"]
    assert fund["blocked_settlements"] == 1 and fund["fund_paid"] == 0


def test_the_same_drug_again_within_days_warns_and_is_still_paid(city: City) -> None:
    person = city.people[0]
    city.activate(person)
    terminal = city.terminal(city.pharmacy())
    earlier = _now() - timedelta(days=2)
    drug = [_drug_line(earlier)]
    first = city.client.post(
        "/api/medins/settlements",
        json=body(city.qr(person), "P-1", kind="pharmacy", items=drug, start=earlier),
        headers=terminal,
    )
    assert first.json()["outcome"] == "pass", first.text
    today = _now() - timedelta(minutes=40)
    again = [dict(drug[0], service_date=today.date().isoformat())]
    second = city.client.post(
        "/api/medins/settlements",
        json=body(city.qr(person), "P-2", kind="pharmacy", items=again, start=today),
        headers=terminal,
    )
    answer = second.json()
    assert answer["outcome"] == "warn" and answer["paid"] is True, second.text
    assert "MI06_repeated_dispensing" in {f["rule_id"] for f in answer["findings"]}


def test_bad_settlements_are_422_with_reasons_and_nothing_is_stored(city: City) -> None:
    person, _, terminal = _ready(city)
    token = city.qr(person)
    day = (_now() - timedelta(minutes=40)).date().isoformat()
    future = _now() + timedelta(days=2)
    cases = {
        "negative": [
            {
                "code": DRUG,
                "kind": "drug",
                "quantity": 1,
                "unit_price": -0.86,
                "amount": -0.86,
                "service_date": day,
            }
        ],
        "unknown": [
            {
                "code": "XX99999",
                "kind": "drug",
                "quantity": 1,
                "unit_price": 1.0,
                "amount": 1.0,
                "service_date": day,
            }
        ],
        "mismatch": [
            {
                "code": DRUG,
                "kind": "drug",
                "quantity": 2,
                "unit_price": 0.86,
                "amount": 9.0,
                "service_date": day,
            }
        ],
    }
    expected = {
        "negative": "must not be negative",
        "unknown": "is not in the catalogues",
        "mismatch": "is not quantity x unit_price",
    }
    for name, items in cases.items():
        response = city.client.post(
            "/api/medins/settlements",
            json=body(token, f"B-{name}", items=items),
            headers=terminal,
        )
        assert response.status_code == 422, (name, response.text)
        assert any(expected[name] in r for r in response.json()["detail"]["reasons"]), name
    later = body(token, "B-future", start=future)
    response = city.client.post("/api/medins/settlements", json=later, headers=terminal)
    assert response.status_code == 422
    assert "start: is in the future" in response.json()["detail"]["reasons"]
    malformed = city.client.post(
        "/api/medins/settlements", json={"txn_id": "B-m", "voucher": token}, headers=terminal
    )
    assert malformed.status_code == 422
    assert any(r.startswith("kind") for r in malformed.json()["detail"]["reasons"])
    not_json = city.client.post(
        "/api/medins/settlements",
        content=b"{",
        headers={**terminal, "Content-Type": "application/json"},
    )
    assert not_json.status_code == 400
    assert _count(city, settlements) == 0 and _count(city, voucher_uses) == 0
    # the token was never used: it still settles
    ok = city.client.post("/api/medins/settlements", json=body(token, "B-ok"), headers=terminal)
    assert ok.status_code == 200 and ok.json()["paid"] is True


def test_voucher_refusals_at_settlement(city: City) -> None:
    person, _, terminal = _ready(city)
    other = city.people[1]
    token = city.qr(person)
    wrong_person = city.client.post(
        "/api/medins/settlements",
        json=body(token, "V-1", person_id=other.person_id),
        headers=terminal,
    )
    assert wrong_person.status_code == 403
    assert wrong_person.json()["detail"]["voucher"] == "other_person"
    first = city.client.post("/api/medins/settlements", json=body(token, "V-2"), headers=terminal)
    assert first.status_code == 200
    reused = city.client.post("/api/medins/settlements", json=body(token, "V-3"), headers=terminal)
    assert reused.status_code == 409 and reused.json()["detail"]["voucher"] == "replayed"
    citizen = city.client.post(
        "/api/medins/settlements", json=body(city.qr(person), "V-4"), headers=city.citizen(person)
    )
    assert citizen.status_code == 403
    assert _count(city, settlements) == 1


def test_a_scanned_voucher_settles_at_the_same_institution_only(city: City) -> None:
    person, _, terminal = _ready(city)
    elsewhere = city.terminal(city.pharmacy())
    token = city.qr(person)
    scanned = city.client.post(
        "/api/medins/vouchers/scan",
        json={"token": token, "transaction": "outpatient"},
        headers=terminal,
    )
    assert scanned.status_code == 200
    other = city.client.post(
        "/api/medins/settlements", json=body(token, "S-x", kind="pharmacy"), headers=elsewhere
    )
    assert other.status_code == 409
    here = city.client.post("/api/medins/settlements", json=body(token, "S-1"), headers=terminal)
    assert here.status_code == 200, here.text
    engine = city.client.app.state.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        use = conn.execute(select(voucher_uses)).one()
    assert use.settlement_id == here.json()["settlement_id"]
    twice = city.client.post("/api/medins/settlements", json=body(token, "S-2"), headers=terminal)
    assert twice.status_code == 409
    assert _count(city, findings) == 0


def test_concurrent_submissions_pay_once(city: City) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from citybrain.core.errors import CityBrainError
    from citybrain.governance.principal import Principal, Role
    from citybrain.scenes.medical_insurance import service as scene_service
    from citybrain.scenes.medical_insurance import settlement

    person, institution, _ = _ready(city)
    scene = scene_service.scene_for(
        engine=city.client.app.state.engine,  # type: ignore[attr-defined]
        data_dir=city.data,
        code="370100",
    )
    terminal = Principal(
        subject="t", org="inst-" + institution.lower(), role=Role.service, issuer="370100"
    )
    same = body(city.qr(person), "R-1")

    def submit(b: dict[str, Any]) -> str:
        try:
            return settlement.submit(
                scene, principal=terminal, institution_id=institution, body=b
            ).settlement_id
        except CityBrainError as exc:
            return f"refused {exc.status}"

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(submit, [same] * 8))
    assert len(set(answers)) == 1 and not answers[0].startswith("refused"), answers
    token = city.qr(person)
    with ThreadPoolExecutor(8) as pool:
        others = list(pool.map(submit, [body(token, f"R-{i + 2}") for i in range(8)]))
    assert sum(not a.startswith("refused") for a in others) == 1, others
    assert sorted(a for a in others if a.startswith("refused"))[0] == "refused 409"
    assert _count(city, settlements) == 2


def test_without_the_feed_another_worker_catches_up_from_the_store(city: City) -> None:
    """With several workers and no sibling feed, the history before payment is read again."""
    import dataclasses

    from citybrain.scenes.medical_insurance import settlement

    person, pharmacy, mine, terminal, drug, consultation = _worker_setup(city)
    earlier = _now() - timedelta(days=2)
    # the other worker: the same node and store, its own memory, no feed from this one
    other = dataclasses.replace(mine, extra={"paid_feed_failed": True}, shared=True)
    # the other worker has looked at this person's history already
    first = settlement.submit(
        other,
        principal=terminal,
        institution_id=pharmacy,
        body=body(city.qr(person), "W-1", kind="pharmacy", items=[consultation], start=earlier),
    )
    assert first.paid
    # this worker pays the drug
    paid = city.client.post(
        "/api/medins/settlements",
        json=body(city.qr(person), "W-2", kind="pharmacy", items=[drug], start=earlier),
        headers=city.terminal(pharmacy),
    )
    assert paid.json()["outcome"] == "pass", paid.text
    # the same drug again at the other worker: it must know of the payment
    assert _repeat_is_flagged(city, other, terminal, pharmacy, person, drug, "W-3")


def _repeat_is_flagged(
    city: City, scene: Any, terminal: Any, pharmacy: str, person: Any, drug: Any, txn: str
) -> bool:
    """Settle the drug again today at this scene (worker): is it flagged as dispensed again?"""
    from citybrain.scenes.medical_insurance import settlement

    today = _now() - timedelta(minutes=40)
    again = dict(drug, service_date=today.date().isoformat())
    answer = settlement.submit(
        scene,
        principal=terminal,
        institution_id=pharmacy,
        body=body(city.qr(person), txn, kind="pharmacy", items=[again], start=today),
    )
    return "MI06_repeated_dispensing" in {f.rule_id for f in answer.findings}


def _worker_setup(city: City) -> tuple[Any, str, Any, Any, dict[str, Any], dict[str, Any]]:
    """An activated person, a pharmacy, the node's scene, its terminal, a drug, a consultation."""
    from citybrain.governance.principal import Principal, Role
    from citybrain.scenes.medical_insurance import service as scene_service

    person = city.people[0]
    city.activate(person)
    pharmacy = city.pharmacy()
    scene = scene_service.scene_for(
        engine=city.client.app.state.engine,  # type: ignore[attr-defined]
        data_dir=city.data,
        code="370100",
    )
    org = "inst-" + pharmacy.lower()
    terminal = Principal(subject="t", org=org, role=Role.service, issuer="370100")
    drug = _drug_line(_now() - timedelta(days=2))
    consultation = dict(drug, code=CONSULTATION, kind="service", quantity=1, unit_price=10.0)
    consultation["amount"] = 10.0
    return person, pharmacy, scene, terminal, drug, consultation


def test_sibling_workers_hear_of_each_others_payments(city: City) -> None:
    """Two workers of one node (Scene.shared): a payment at one is in the other's next check."""
    import dataclasses

    from citybrain.node.siblings import SiblingFeed
    from citybrain.scenes.medical_insurance import settlement

    person, pharmacy, base, terminal, drug, consultation = _worker_setup(city)
    earlier = _now() - timedelta(days=2)
    feeds = [SiblingFeed(city.data, "medins-paid", name=n) for n in (1, 2)]
    one, two = (dataclasses.replace(base, extra={"paid_feed": f}, shared=True) for f in feeds)
    try:
        # both workers know the person already (a consultation each, days apart)
        for n, worker in enumerate((one, two)):
            day = earlier - timedelta(days=3 + 3 * n)
            seen = dict(consultation, service_date=day.date().isoformat())
            first = settlement.submit(
                worker,
                principal=terminal,
                institution_id=pharmacy,
                body=body(city.qr(person), f"F-{n}", kind="pharmacy", items=[seen], start=day),
            )
            assert first.paid, first.findings
        paid = settlement.submit(
            one,
            principal=terminal,
            institution_id=pharmacy,
            body=body(city.qr(person), "F-drug", kind="pharmacy", items=[drug], start=earlier),
        )
        assert paid.outcome.value == "pass"
        person_id = person_of(two, paid)
        # the second worker asks the store nothing: the payment came on the feed
        asked: list[str] = []
        engine = two.engine

        def count(*args: Any, **kwargs: Any) -> None:
            asked.append(str(args[2]))

        event.listen(engine, "before_cursor_execute", count)
        try:
            history = settlement.history_of(two, person_id, _now())
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert not [q for q in asked if "medins_settlements" in q], asked
        assert paid.settlement_id in {s.settlement_id for s in history}
        assert _repeat_is_flagged(city, two, terminal, pharmacy, person, drug, "F-again")
        # the first worker stops: the second forgets and reads the store again, nothing missed
        feeds[0].close()
        assert paid.settlement_id in {
            s.settlement_id for s in settlement.history_of(two, person_id, _now())
        }
        assert person_id in settlement.memory(two).history  # read again from the store
    finally:
        for f in feeds:
            f.close()


def person_of(scene: Any, answer: Any) -> str:
    from citybrain.scenes.medical_insurance import settlement

    return settlement.get_settlement(scene, settlement_id=answer.settlement_id)["record"][
        "person_id"
    ]


def test_a_served_node_loads_what_a_check_needs_as_it_starts(
    prepared_root: Any, tmp_path: Any
) -> None:
    import time

    from fastapi.testclient import TestClient
    from test_voucher_node import CITY, fresh_nodes

    from citybrain.app import create_app
    from citybrain.core.config import load_settings
    from citybrain.scenes.medical_insurance import service as scene_service

    data = fresh_nodes(prepared_root, tmp_path)
    scene_service.forget_scenes()
    app = create_app(load_settings(data_dir=data, code=CITY, level="city"), warm=True)
    try:
        with TestClient(app) as client:
            assert client.get("/health").status_code == 200  # answering while it loads
            scene = scene_service.scene_for(engine=app.state.engine, data_dir=data, code=CITY)
            deadline = time.monotonic() + 60
            while not (scene.institutions and {"rulebase", "replay"} <= set(scene.extra)):
                assert time.monotonic() < deadline, "the scene did not warm"
                time.sleep(0.1)
    finally:
        scene_service.forget_scenes()
