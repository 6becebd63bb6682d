"""Shared set-up of the enrollment service tests: a synthetic Jinan node, its grants, families.

Imported by the other enrollment service, API, eligibility and page tests; it holds no tests.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.geo import service as geo
from citybrain.scenes.enrollment import season as seasons
from citybrain.scenes.enrollment import sources
from citybrain.scenes.enrollment.household import PREFILL_FIELDS
from conftest import bearer

CITY = "370100"
YEAR = 2027
COUNTIES = [u.code for u in geo.children(CITY)]
VERIFICATION = {
    "public_security/residents": ["hukou_at_address", "hukou_in_county"],
    "natural_resources/property_registry": ["owns_property_in_communities"],
    "human_resources/social_insurance": ["social_insurance_months"],
    "public_security/residence_permits": ["residence_permit_valid"],
}
SCOPE = {
    "public_security/residents": "residence_county",
    "human_resources/social_insurance": "county_code",
    "public_security/residence_permits": "residence_county",
}
FIELDS = {
    "public_security/residents": ["id_number", "hukou_county"],
    "natural_resources/property_registry": ["owner_id_number"],
    "human_resources/social_insurance": ["id_number", "months_contributed"],
    "public_security/residence_permits": ["id_number", "valid_until"],
}


_PREPARED: dict[str, Path] = {}


@pytest.fixture(scope="session")
def synth_jinan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generate Jinan once at a tiny scale (deterministic, seed 11) and start it once.

    The first start imports the tables into the hub; each test copies the prepared folder.
    Every module binds this fixture under its own name, so the folder is kept here once.
    """
    if "jinan" in _PREPARED:
        return _PREPARED["jinan"]
    out = tmp_path_factory.mktemp("enrollment-synth")
    subprocess.run(
        [sys.executable, "-m", "citybrain", "synth", "--scale", "0.0005", "--seed", "11"]
        + ["--out", str(out / "s"), "--cities", CITY, "--workers", "1"],
        check=True,
        capture_output=True,
    )
    data = out / "s" / CITY
    with TestClient(create_app(load_settings(data_dir=data, code=CITY, level="city"))):
        pass
    sources.forget(data)
    seasons.forget_plans(data)
    _PREPARED["jinan"] = data
    return data


@dataclass
class Family:
    """A parent with a phone and a child of entry age, as the register holds them."""

    phone: str
    parent_id: str
    child_id: str
    level: str
    county: str
    community: str


class Scene:
    """A Jinan node under test, with helpers to act as staff, owners and parents."""

    def __init__(self, client: TestClient, data: Path) -> None:
        self.client = client
        self.data = data

    def h(self, org: str, role: str = "steward", **kw: Any) -> dict[str, str]:
        return bearer(self.data, org=org, role=role, issuer=CITY, **kw)

    def parent(self, phone: str) -> dict[str, str]:
        return bearer(
            self.data,
            org="citizens",
            role="citizen",
            issuer=CITY,
            phone=phone,
            subject=f"citizen:{phone}",
        )

    def post(self, path: str, body: Any, headers: dict[str, str]) -> Any:
        return self.client.post(path, json=body, headers=headers)

    def get(self, path: str, headers: dict[str, str], **params: Any) -> Any:
        return self.client.get(path, headers=headers, params=params)

    def _approve(self, request: dict[str, Any]) -> None:
        rid = request["id"]
        owner = self.post(
            f"/api/sharing/requests/{rid}/approve", {"reason": "ok"}, self.h(request["owner_org"])
        )
        assert owner.status_code == 200, owner.text
        if owner.json()["status"] == "pending_bureau":
            bureau = self.post(
                f"/api/sharing/requests/{rid}/approve",
                {"reason": "ok"},
                self.h("bureau", "bureau_admin"),
            )
            assert bureau.json()["status"] == "approved", bureau.text

    def request(self, body: dict[str, Any]) -> None:
        made = self.post("/api/sharing/requests", body, self.h("education"))
        assert made.status_code == 201, made.text
        if made.json()["status"] != "approved":
            self._approve(made.json())

    def grant_prefill(self) -> None:
        """The Education Bureau's records grant on residents for the prefill."""
        self.request(
            {
                "dataset_id": "public_security/residents",
                "fields": list(PREFILL_FIELDS),
                "row_scope": {"residence_county": COUNTIES},
                "purpose": "compulsory-education enrollment: prefill a parent's children",
                "legal_basis": "Compulsory Education Law, art. 12",
                "duration_days": 120,
            }
        )

    def grant_verification(self, skip: str | None = None) -> None:
        """The Education Bureau's verification grants (all but `skip`)."""
        for dataset, questions in VERIFICATION.items():
            if dataset == skip:
                continue
            scope = {SCOPE[dataset]: COUNTIES} if dataset in SCOPE else {}
            self.request(
                {
                    "kind": "verification",
                    "dataset_id": dataset,
                    "fields": FIELDS[dataset],
                    "row_scope": scope,
                    "purpose": "compulsory-education enrollment eligibility",
                    "legal_basis": "Compulsory Education Law, art. 12",
                    "duration_days": 120,
                    "questions": questions,
                }
            )

    def open_season(self, **body: Any) -> Any:
        return self.post("/api/enrollment/seasons", {"year": YEAR, **body}, self.h("education"))

    def families(self, level: str = "primary") -> list[Family]:
        """Parents with a phone and a child entering `level` in YEAR (ground truth: files)."""
        age = 6 if level == "primary" else 12
        lo, hi = date(YEAR - age - 1, 9, 1), date(YEAR - age, 8, 31)
        residents = self.data / "public_security" / "residents.parquet"
        rows = duckdb.sql(
            f"""
            select p.phone, p.id_number as parent_id, c.id_number as child_id,
                   p.residence_county, p.community_code
            from '{residents}' c join '{residents}' p
              on p.household_id = c.household_id
            where c.relation_to_head = '子女' and p.relation_to_head in ('户主', '配偶')
              and p.phone is not null and c.birth_date between ? and ?
            order by c.id_number, p.relation_to_head
            """,
            params=[lo, hi],
        ).fetchall()
        seen: set[str] = set()
        out = []
        for phone, parent_id, child_id, county, community in rows:
            if child_id in seen:
                continue
            seen.add(child_id)
            out.append(Family(phone, parent_id, child_id, level, county, community))
        return out


@pytest.fixture
def scene(synth_jinan: Path, tmp_path: Path) -> Iterator[Scene]:
    """A fresh Jinan node on the synthetic files, served in process."""
    data = tmp_path / CITY
    shutil.copytree(synth_jinan, data)
    app = create_app(load_settings(data_dir=data, code=CITY, level="city"))
    with TestClient(app) as client:
        yield Scene(client, data)
    sources.forget(data)
    seasons.forget_plans(data)


@pytest.fixture
def opened(scene: Scene) -> Scene:
    """The scene with every grant and the 2027 season open."""
    scene.grant_prefill()
    scene.grant_verification()
    opened = scene.open_season(deadline="2027-06-20T23:59:59+08:00")
    assert opened.status_code == 201, opened.text
    return scene
