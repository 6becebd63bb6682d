"""A synthetic Jinan node for the scene's service tests, and tests of the voucher over HTTP.

Other test modules of the scene import the fixtures from here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from citybrain.app import create_app, prepare_node
from citybrain.core.config import load_settings
from citybrain.scenes.medical_insurance import service as scene_service
from conftest import bearer

CITY = "370100"
PROVINCE = "370000"


@pytest.fixture(scope="session", name="synth_root")
def synth_root_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generate Jinan and the province's catalogues once at a tiny scale (seed 7)."""
    out = tmp_path_factory.mktemp("medins") / "s"
    subprocess.run(
        [sys.executable, "-m", "citybrain", "synth", "--scale", "0.0003", "--seed", "7"]
        + ["--out", str(out), "--cities", CITY, "--workers", "1"],
        check=True,
        capture_output=True,
    )
    folder = out / PROVINCE / "medical_security"
    if not (folder / "consumable_catalogue.parquet").exists():
        # older synthetic data has no consumables: an empty catalogue of the same columns
        pq.write_table(
            pa.table(
                {
                    "code": pa.array([], pa.string()),
                    "name": pa.array([], pa.string()),
                    "standard_price": pa.array([], pa.float64()),
                    "category": pa.array([], pa.string()),
                }
            ),
            folder / "consumable_catalogue.parquet",
        )
    return out


@pytest.fixture(scope="session", name="prepared_root")
def prepared_root_fixture(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic folders with the city node started once (tables imported, migrated)."""
    root = tmp_path_factory.mktemp("medins-prepared") / "nodes"
    shutil.copytree(synth_root / CITY, root / CITY)
    shutil.copytree(synth_root / PROVINCE, root / PROVINCE)
    prepare_node(load_settings(data_dir=root / CITY, code=CITY, level="city")).dispose()
    return root


def fresh_nodes(prepared_root: Path, tmp_path: Path) -> Path:
    """Copy the prepared folders for one test; return the city's data folder."""
    root = tmp_path / "nodes"
    shutil.copytree(prepared_root, root)
    return root / CITY


@dataclass
class Person:
    """An insured resident of the synthetic city with a phone."""

    phone: str
    id_number: str
    person_id: str
    name: str
    gender: str


@dataclass
class City:
    """A running city node with helpers for citizens, terminals and supervisors."""

    client: TestClient
    data: Path
    people: list[Person]
    institutions: list[dict[str, Any]]
    drugs: list[dict[str, Any]]
    services: list[dict[str, Any]]

    def h(self, org: str = "bureau", role: str = "bureau_admin", **kw: Any) -> dict[str, str]:
        return bearer(self.data, org=org, role=role, issuer=CITY, **kw)

    def citizen(self, person: Person) -> dict[str, str]:
        return self.h("citizens", "citizen", subject=f"citizen:{person.phone}", phone=person.phone)

    def terminal(self, institution_id: str) -> dict[str, str]:
        """Register a terminal for the institution (once) and return its header."""
        org = "inst-" + institution_id.lower()
        response = self.client.post(
            "/api/medins/terminals", json={"institution_id": institution_id}, headers=self.h()
        )
        assert response.status_code in (201, 409), response.text
        return self.h(org, "service", subject="service:test-terminal")

    def activate(self, person: Person, device: str = "device-0001") -> dict[str, Any]:
        response = self.client.post(
            "/api/medins/voucher/activate",
            json={"id_number": person.id_number, "device_id": device},
            headers=self.citizen(person),
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def qr(self, person: Person, device: str = "device-0001") -> str:
        response = self.client.post(
            "/api/medins/voucher/qr", json={"device_id": device}, headers=self.citizen(person)
        )
        assert response.status_code == 200, response.text
        return str(response.json()["token"])

    def hospital(self, grade: str = "二级") -> str:
        return next(
            str(i["institution_id"])
            for i in self.institutions
            if i["kind"] == "hospital" and i["grade"] == grade
        )

    def pharmacy(self, n: int = 0) -> str:
        found = [str(i["institution_id"]) for i in self.institutions if i["kind"] == "pharmacy"]
        return found[n]


def people_of(data: Path) -> list[Person]:
    """Insured residents (enrolled, with a phone) of a synthetic city folder."""
    residents = pq.read_table(data / "public_security" / "residents.parquet").to_pylist()
    insured = {
        r["id_number"]: r
        for r in pq.read_table(data / "medical_security" / "insured_persons.parquet").to_pylist()
        if r["status"] == "参保缴费"
    }
    found = []
    for r in residents:
        if r.get("phone") and r["id_number"] in insured:
            found.append(
                Person(
                    phone=r["phone"],
                    id_number=r["id_number"],
                    person_id=insured[r["id_number"]]["person_id"],
                    name=r["name"],
                    gender="男" if int(r["id_number"][16]) % 2 else "女",
                )
            )
        if len(found) >= 20:
            break
    return found


@pytest.fixture(name="city")
def city_fixture(prepared_root: Path, tmp_path: Path) -> Iterator[City]:
    """A fresh Jinan node on SQLite with the province's catalogues beside it."""
    data = fresh_nodes(prepared_root, tmp_path)
    root = data.parent
    scene_service.forget_scenes()
    app = create_app(load_settings(data_dir=data, code=CITY, level="city"))
    catalogue = root / PROVINCE / "medical_security"
    with TestClient(app) as client:
        yield City(
            client=client,
            data=data,
            people=people_of(data),
            institutions=pq.read_table(
                data / "medical_security" / "designated_institutions.parquet"
            ).to_pylist(),
            drugs=pq.read_table(catalogue / "drug_catalogue.parquet").to_pylist(),
            services=pq.read_table(catalogue / "service_catalogue.parquet").to_pylist(),
        )
    scene_service.forget_scenes()


def audit_records(data: Path) -> list[dict[str, Any]]:
    """Every record of a node's audit log."""
    lines = (data / "audit" / "log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


# --- tests -----------------------------------------------------------------------------------


def test_activation_verifies_identity_and_masks_the_voucher(city: City) -> None:
    person = city.people[0]
    voucher = city.activate(person)
    assert voucher["id_number"].startswith(person.id_number[:6])
    assert person.id_number not in json.dumps(voucher)
    assert voucher["gender"] == person.gender
    assert voucher["status"] == "active"
    again = city.client.get("/api/medins/voucher", headers=city.citizen(person))
    assert again.json()["voucher_id"] == voucher["voucher_id"]


def test_activation_with_another_persons_id_number_is_refused(city: City) -> None:
    me, other = city.people[0], city.people[1]
    response = city.client.post(
        "/api/medins/voucher/activate",
        json={"id_number": other.id_number, "device_id": "device-0001"},
        headers=city.citizen(me),
    )
    assert response.status_code == 403
    assert "identity not verified" in response.json()["title"]
    bad = city.client.post(
        "/api/medins/voucher/activate",
        json={"id_number": "370102199001011234", "device_id": "device-0001"},
        headers=city.citizen(me),
    )
    assert bad.status_code == 400
    operator = city.client.post(
        "/api/medins/voucher/activate",
        json={"id_number": me.id_number, "device_id": "device-0001"},
        headers=city.h("medical_security", "operator"),
    )
    assert operator.status_code == 403


def test_a_scan_shows_the_masked_person_once(city: City) -> None:
    person = city.people[0]
    city.activate(person)
    terminal = city.terminal(city.hospital())
    token = city.qr(person)
    first = city.client.post(
        "/api/medins/vouchers/scan",
        json={"token": token, "transaction": "registration"},
        headers=terminal,
    )
    assert first.status_code == 200, first.text
    seen = first.json()["person"]
    assert seen["id_number"] != person.id_number and seen["id_number"][-4:] == person.id_number[-4:]
    assert seen["name"] != person.name and seen["name"][0] == person.name[0]
    again = city.client.post(
        "/api/medins/vouchers/scan",
        json={"token": token, "transaction": "registration"},
        headers=terminal,
    )
    assert again.status_code == 409
    assert again.json()["detail"]["voucher"] == "replayed"


def test_forged_expired_and_other_device_tokens_are_refused_logged_and_counted(
    city: City,
) -> None:
    person = city.people[0]
    city.activate(person)
    terminal = city.terminal(city.hospital())
    token = city.qr(person)

    def scan(t: str) -> Any:
        return city.client.post(
            "/api/medins/vouchers/scan",
            json={"token": t, "transaction": "outpatient"},
            headers=terminal,
        )

    body, _, sig = token.rpartition(".")
    forged = body + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
    assert scan(forged).status_code == 403
    assert scan("hello").status_code == 400
    short = city.client.post(
        "/api/medins/voucher/qr",
        json={"device_id": "device-0001", "ttl": 10},
        headers=city.citizen(person),
    ).json()["token"]
    from citybrain.scenes.medical_insurance import voucher

    scene = scene_service.scene_for(
        engine=city.client.app.state.engine,  # type: ignore[attr-defined]
        data_dir=city.data,
        code=CITY,
    )
    with pytest.raises(voucher.VoucherRefused) as expired:
        voucher.check(scene, short, now=datetime.now(UTC).timestamp() + 60)
    assert expired.value.reason is voucher.Refusal.expired
    # a new device replaces the old one: the old device's tokens stop working
    city.activate(person, device="device-0002")
    old = scan(token)
    assert old.status_code == 403 and old.json()["detail"]["voucher"] == "other_device"
    stats = city.client.get("/api/medins/panel", headers=city.h()).json()["vouchers"]["refused"]
    assert stats["forged"] == 1 and stats["malformed"] == 1 and stats["other_device"] == 1
    refusals = [
        r
        for r in audit_records(city.data)
        if r["action"] == "medins.voucher.scan" and r["result"] == "refused"
    ]
    assert {r["detail"]["reason"] for r in refusals} == {"forged", "malformed", "other_device"}


def test_a_token_past_its_window_is_refused_over_http(city: City) -> None:
    person = city.people[0]
    city.activate(person)
    terminal = city.terminal(city.hospital())
    from citybrain.scenes.medical_insurance import voucher

    scene = scene_service.scene_for(
        engine=city.client.app.state.engine,  # type: ignore[attr-defined]
        data_dir=city.data,
        code=CITY,
    )
    from citybrain.governance.principal import Principal, Role

    citizen = Principal(
        subject=f"citizen:{person.phone}",
        org="citizens",
        role=Role.citizen,
        issuer=CITY,
        phone=person.phone,
    )
    old = voucher.issue_token(
        scene,
        principal=citizen,
        device_id="device-0001",
        now=datetime.now(UTC) - timedelta(seconds=120),
    )
    response = city.client.post(
        "/api/medins/vouchers/scan",
        json={"token": old.token, "transaction": "outpatient"},
        headers=terminal,
    )
    assert response.status_code == 422
    assert response.json()["detail"]["voucher"] == "expired"


def test_only_registered_terminals_scan(city: City) -> None:
    person = city.people[0]
    city.activate(person)
    token = city.qr(person)
    response = city.client.post(
        "/api/medins/vouchers/scan",
        json={"token": token, "transaction": "outpatient"},
        headers=city.h("inst-unknown", "service"),
    )
    assert response.status_code == 403
    unknown_inst = city.client.post(
        "/api/medins/terminals", json={"institution_id": "M000000X00000"}, headers=city.h()
    )
    assert unknown_inst.status_code == 422


def test_the_replay_store_survives_a_restart(prepared_root: Path, tmp_path: Path) -> None:
    data = fresh_nodes(prepared_root, tmp_path)
    settings = load_settings(data_dir=data, code=CITY, level="city")
    person = people_of(data)[0]
    scene_service.forget_scenes()
    with TestClient(create_app(settings)) as client:
        node = City(client, data, [person], [], [], [])
        node.institutions = pq.read_table(
            data / "medical_security" / "designated_institutions.parquet"
        ).to_pylist()
        node.activate(person)
        terminal = node.terminal(node.hospital())
        token = node.qr(person)
        used = client.post(
            "/api/medins/vouchers/scan",
            json={"token": token, "transaction": "outpatient"},
            headers=terminal,
        )
        assert used.status_code == 200
    scene_service.forget_scenes()  # the process forgets: only the store remembers
    with TestClient(create_app(settings)) as client:
        again = client.post(
            "/api/medins/vouchers/scan",
            json={"token": token, "transaction": "outpatient"},
            headers=terminal,
        )
        assert again.status_code == 409, again.text
    scene_service.forget_scenes()


def test_a_voucher_changed_by_another_process_is_seen_at_the_next_poll(
    city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import update

    from citybrain.core.db import create_engine_for
    from citybrain.scenes.medical_insurance import voucher as vouchers
    from citybrain.scenes.medical_insurance.tables import vouchers as table

    voucher_id = city.activate(city.people[0])["voucher_id"]
    scene = scene_service.scene_for(
        engine=city.client.app.state.engine, data_dir=city.data, code=CITY
    )
    old_tag = vouchers.voucher_info(scene, voucher_id).device_tag
    new_tag = vouchers.voucher_token.device_tag("device-0002")
    # another worker of the node binds the voucher to a new device
    other = create_engine_for(str(city.client.app.state.engine.url))
    with other.begin() as conn:
        conn.execute(
            update(table)
            .where(table.c.voucher_id == voucher_id)
            .values(device_tag=new_tag, updated_at=datetime.now(UTC))
        )
    other.dispose()
    monkeypatch.setattr(vouchers, "POLL_SECONDS", 3600.0)
    assert vouchers.voucher_info(scene, voucher_id).device_tag == old_tag  # kept, not reread
    monkeypatch.setattr(vouchers, "POLL_SECONDS", 0.0)
    assert vouchers.voucher_info(scene, voucher_id).device_tag == new_tag
    # and a token of the old device is refused at once
    token = vouchers.voucher_token.sign(
        scene.key,
        issuer=CITY,
        voucher_id=voucher_id,
        device=old_tag,
        issued_at=int(datetime.now(UTC).timestamp()),
        ttl=60,
    )
    with pytest.raises(vouchers.VoucherRefused) as refused:
        vouchers.check(scene, token)
    assert refused.value.reason is vouchers.Refusal.other_device
