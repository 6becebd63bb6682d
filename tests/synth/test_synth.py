"""The synthetic province: determinism, validity and consistency across departments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from citybrain.cli import app
from citybrain.geo import service as geo
from citybrain.synth import service
from citybrain.synth.idcard import check_digit, is_valid_id_number

CITY = "370500"  # Dongying: the smallest city keeps the tests fast
SCALE = 0.002


@pytest.fixture(scope="module")
def province(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "out"
    service.generate(scale=SCALE, seed=11, out=out, cities=[CITY], workers=1)
    return out


def _sql(out: Path, query: str) -> list[tuple[object, ...]]:
    con = duckdb.connect()
    return con.sql(query.replace("$", str(out / CITY))).fetchall()


def test_same_seed_same_bytes(province: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    service.generate(scale=SCALE, seed=11, out=again, cities=[CITY], workers=2)
    assert (province / "synth.json").read_bytes() == (again / "synth.json").read_bytes()
    for path in province.rglob("*.parquet"):
        assert path.read_bytes() == (again / path.relative_to(province)).read_bytes()
    other = tmp_path / "other"
    service.generate(scale=SCALE, seed=12, out=other, cities=[CITY], workers=1)
    assert (province / "synth.json").read_bytes() != (other / "synth.json").read_bytes()


def test_layout_and_manifest(province: Path) -> None:
    manifest = json.loads((province / "synth.json").read_text())
    assert manifest["seed"] == 11 and manifest["scale"] == SCALE
    paths = {f["path"] for f in manifest["files"]}
    for table in (
        "public_security/residents",
        "public_security/households",
        "public_security/addresses",
        "public_security/residence_permits",
        "natural_resources/property_registry",
        "human_resources/social_insurance",
        "education/schools",
        "education/catchment_zones",
        "medical_security/insured_persons",
        "medical_security/designated_institutions",
        "civil_affairs/communities",
        "civil_affairs/elderly_alone",
        "city_management/grids",
        "city_management/grid_workers",
        "city_management/iot_devices",
        "city_management/cameras",
    ):
        assert f"{CITY}/{table}.parquet" in paths
    assert "370000/medical_security/drug_catalogue.parquet" in paths
    expected = round(2_193_518 * SCALE)
    assert abs(manifest["residents"] - expected) <= len(geo.list_units("county", CITY))


def test_id_numbers_valid_and_unique(province: Path) -> None:
    rows = _sql(
        province,
        "select id_number, hukou_county, birth_date, sex "
        "from '$/public_security/residents.parquet'",
    )
    assert len({r[0] for r in rows}) == len(rows)
    for id_number, hukou, birth, sex in rows:
        assert is_valid_id_number(id_number)
        assert id_number[:6] == hukou
        assert id_number[6:14] == birth.strftime("%Y%m%d")  # type: ignore[attr-defined]
        assert int(id_number[16]) % 2 == (1 if sex == "男" else 0)


def test_households_are_consistent(province: Path) -> None:
    bad = _sql(
        province,
        """
        with members as (
          select household_id, count(*) n from '$/public_security/residents.parquet' group by 1)
        select h.household_id from '$/public_security/households.parquet' h
        left join members m using (household_id)
        left join '$/public_security/residents.parquet' r on r.person_id = h.head_person_id
        where m.n is null or m.n != h.size or r.relation_to_head != '户主'
        """,
    )
    assert bad == []


def test_cross_department_consistency(province: Path) -> None:
    for table, column in (
        ("natural_resources/property_registry", "owner_person_id"),
        ("medical_security/insured_persons", "person_id"),
        ("human_resources/social_insurance", "person_id"),
        ("public_security/residence_permits", "person_id"),
    ):
        orphans = _sql(
            province,
            f"select count(*) from '$/{table}.parquet' t anti join "
            f"'$/public_security/residents.parquet' r on r.person_id = t.{column}",
        )
        assert orphans == [(0,)], table


def test_addresses_inside_their_community(province: Path) -> None:
    rows = _sql(
        province,
        "select community_code, lon, lat from '$/public_security/addresses.parquet' "
        "using sample 200 rows (reservoir, 3)",
    )
    for community, lon, lat in rows:
        assert shapely.contains_xy(geo.geometry(str(community)), float(lon), float(lat))  # type: ignore[arg-type]


def test_age_structure_and_school_capacity(province: Path) -> None:
    ((children, elderly),) = _sql(
        province,
        "select avg((date_diff('year', birth_date, date '2026-09-01') < 15)::int), "
        "avg((date_diff('year', birth_date, date '2026-09-01') >= 65)::int) "
        "from '$/public_security/residents.parquet'",
    )
    assert 0.10 < float(children) < 0.28  # type: ignore[arg-type]
    assert 0.08 < float(elderly) < 0.25  # type: ignore[arg-type]
    ((capacity, cohort),) = _sql(
        province,
        "select (select sum(entry_capacity) from '$/education/schools.parquet' "
        "  where level='primary'),"
        " (select count(*) from '$/public_security/residents.parquet' "
        "  where date_diff('year', birth_date, date '2026-09-01') = 6)",
    )
    assert int(capacity) >= int(cohort)  # type: ignore[call-overload]


def test_catchment_zones_cover_every_community(province: Path) -> None:
    rows = _sql(
        province,
        "select c.community_code from '$/civil_affairs/communities.parquet' c anti join "
        "(select unnest(community_codes) code from '$/education/catchment_zones.parquet' "
        " where level = 'primary') z on z.code = c.community_code",
    )
    assert rows == []
    kinds = {
        r[0]
        for r in _sql(province, "select distinct kind from '$/education/catchment_zones.parquet'")
    }
    assert "single" in kinds


@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_check_digit_property(first17: str) -> None:
    digit = check_digit(first17)
    # changing any one digit changes the check character
    for i in range(17):
        changed = first17[:i] + str((int(first17[i]) + 1) % 10) + first17[i + 1 :]
        assert check_digit(changed) != digit


def test_known_id_number() -> None:
    # the example of GB 11643 Annex: 11010519491231002X
    assert is_valid_id_number("11010519491231002X")
    assert not is_valid_id_number("110105194912310021")
    assert not is_valid_id_number("110105194913310027")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scale", "0"], "--scale must be in (0, 1]"),
        (["--scale", "1.5"], "--scale must be in (0, 1]"),
        (["--scale", "-1"], "--scale must be in (0, 1]"),
        (["--scale", "0.001", "--cities", "999900"], "not the code of a Shandong city"),
    ],
)
def test_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "citybrain",
            "synth",
            "--seed",
            "1",
            "--out",
            str(tmp_path / "o"),
            *args,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_non_empty_and_unwritable_output(tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    runner = CliRunner()
    result = runner.invoke(
        app, ["synth", "--scale", "0.0001", "--seed", "1", "--out", str(full), "--cities", CITY]
    )
    assert result.exit_code != 0
    assert (full / "keep.txt").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "citybrain",
            "synth",
            "--scale",
            "0.0001",
            "--seed",
            "1",
            "--out",
            str(blocker / "sub"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "cannot write" in proc.stderr and "Traceback" not in proc.stderr
