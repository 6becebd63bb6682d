"""Quality scorecards: exact scores on a tiny table with known defects, consistency, roles, CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from citybrain.app import create_app
from citybrain.cli import app as cli_app
from citybrain.core.config import load_settings
from citybrain.core.errors import BadInput, Forbidden, NotFound
from citybrain.governance.catalog import service as catalog
from citybrain.governance.lineage.service import lineage_graph
from citybrain.governance.principal import SYSTEM, Principal, Role
from citybrain.governance.quality import service
from citybrain.hub.tables import service as tables
from citybrain.hub.tables.files import FileFormat
from citybrain.hub.tables.models import TableSpec
from citybrain.synth.idcard import check_digit
from conftest import bearer

RESIDENTS = TableSpec.model_validate(
    {
        "department": "public_security",
        "name": "residents",
        "primary_key": ["person_id"],
        "columns": [
            {"name": "person_id", "type": "string"},
            {"name": "id_number", "type": "string"},
            {"name": "name", "type": "string"},
            {"name": "phone", "type": "string"},
            {"name": "birth_date", "type": "date"},
            {"name": "residence_county", "type": "string"},
        ],
    }
)
INSURED = TableSpec.model_validate(
    {
        "department": "medical_security",
        "name": "insured_persons",
        "primary_key": ["person_id"],
        "columns": [
            {"name": "person_id", "type": "string"},
            {"name": "id_number", "type": "string"},
            {"name": "insured_county", "type": "string"},
            {"name": "enrolled_on", "type": "date"},
        ],
    }
)


def _id(body: str) -> str:
    return body + check_digit(body)


ID1 = _id("37010219900101123")
ID2 = _id("37010219850505222")
ID3 = _id("37010220000202345")
ID4 = _id("37010320010101456")
BAD_ID = ID2[:17] + ("0" if ID2[17] != "0" else "1")  # wrong check digit
OUTSIDER = _id("37010319700303111")

# six rows after the duplicate below; the defects, by design:
#   p2: ID number with a wrong check digit, phone "12345"
#   p3: no name, no phone (optional by meaning), born in 2999, county 999999 (no such unit)
#   p5: no ID number
#   p1 again: a duplicate key written around the upsert
RESIDENTS_CSV = (
    "person_id,id_number,name,phone,birth_date,residence_county\n"
    f"p1,{ID1},张三,13812345678,1990-01-01,370102\n"
    f"p2,{BAD_ID},李四,12345,1985-05-05,370102\n"
    f"p3,{ID3},,,2999-01-01,999999\n"
    f"p4,{ID4},王五,13912345678,2001-01-01,370103\n"
    "p5,,赵六,15012345678,2001-01-01,370102\n"
)
INSURED_CSV = (
    "person_id,id_number,insured_county,enrolled_on\n"
    f"p1,{ID1},370102,2020-01-01\n"
    f"p3,{ID3},370102,2020-01-01\n"
    f"p4,{ID4},370103,2021-03-01\n"
    f"p9,{OUTSIDER},370103,2022-05-01\n"
    "p10,,370103,2023-07-01\n"
)


def _load(engine: Engine, data: Path, spec: TableSpec, body: str) -> None:
    result = tables.load_file(
        engine=engine,
        data_dir=data,
        department=spec.department,
        name=spec.name,
        data=body.encode(),
        fmt=FileFormat.csv,
        source="t.csv",
    )
    assert result.status == "applied", result.rejections


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[TestClient, Engine, Path]]:
    """A node with a defective residents table and an insured persons table."""
    app = create_app(load_settings(data_dir=tmp_path))
    with TestClient(app, headers=bearer(tmp_path)) as client:
        engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
        tables.register_table(engine=engine, data_dir=tmp_path, spec=RESIDENTS)
        _load(engine, tmp_path, RESIDENTS, RESIDENTS_CSV)
        duplicate = pa.table(
            {
                "person_id": ["p1"],
                "id_number": [ID1],
                "name": ["张三"],
                "phone": ["13812345678"],
                "birth_date": pa.array([0], pa.int32()).cast(pa.date32()),
                "residence_county": ["370102"],
            }
        )
        # a second copy of p1, as an engine that does not merge by key would leave it
        write_deltalake(
            str(tables.table_path(tmp_path, "public_security", "residents")),
            duplicate,
            mode="append",
        )
        tables.register_table(engine=engine, data_dir=tmp_path, spec=INSURED)
        _load(engine, tmp_path, INSURED, INSURED_CSV)
        yield client, engine, tmp_path


def _newest(engine: Engine, data: Path, dataset: str) -> object:
    department, name = dataset.split("/")
    return tables.list_versions(engine=engine, data_dir=data, department=department, name=name)[
        0
    ].timestamp


def test_scores_of_a_table_with_known_defects(node: tuple[TestClient, Engine, Path]) -> None:
    _, engine, data = node
    newest = _newest(engine, data, "public_security/residents")
    card = service.score_dataset(
        engine=engine,
        data_dir=data,
        dataset_id="public_security/residents",
        now=newest + timedelta(hours=48),  # type: ignore[operator]
    )
    assert card.rows == 6 and card.version == 2
    # 5 counted fields (phone is optional by meaning) x 6 rows = 30 cells, 2 empty
    assert card.completeness == 93.33
    assert card.detail["completeness"]["missing"] == {"id_number": 1, "name": 1}
    # id_number 5 checked 1 bad, phone 5/1, birth_date 6/1, residence_county 6/1: 18 of 22
    assert card.validity == 81.82
    assert card.detail["validity"] == {
        "id_number": {"rule": "id_number", "checked": 5, "invalid": 1},
        "phone": {"rule": "phone", "checked": 5, "invalid": 1},
        "birth_date": {"rule": "date", "checked": 6, "invalid": 1},
        "residence_county": {"rule": "admin_code", "checked": 6, "invalid": 1},
    }
    assert card.uniqueness == 83.33  # 5 distinct keys in 6 rows
    # residents are updated daily (built-in classification); 48 h old: halfway to 0 at 72 h
    assert card.timeliness == 50.0
    assert card.consistency is None  # no rule checks residents against another table
    expected = round((0.25 * 93.33 + 0.25 * 81.82 + 0.2 * 83.33 + 0.15 * 50.0) / 0.85, 2)
    assert card.overall == expected == 79.95
    assert "张三" not in json.dumps(card.model_dump(mode="json"), ensure_ascii=False)

    fresh = service.score_dataset(
        engine=engine, data_dir=data, dataset_id="public_security/residents", now=newest
    )
    assert fresh.timeliness == 100.0
    stale = service.score_dataset(
        engine=engine,
        data_dir=data,
        dataset_id="public_security/residents",
        now=newest + timedelta(days=5),  # type: ignore[operator]
    )
    assert stale.timeliness == 0.0
    # kept as a time series, newest first
    cards = service.history(engine=engine, dataset_id="public_security/residents")
    assert [c.id for c in cards] == [stale.id, card.id, fresh.id]
    assert service.latest(engine=engine, dataset_id="public_security/residents").id == stale.id


def test_cross_department_consistency_and_lineage(node: tuple[TestClient, Engine, Path]) -> None:
    _, engine, data = node
    newest = _newest(engine, data, "medical_security/insured_persons")
    cards = service.run_quality(
        engine=engine,
        data_dir=data,
        principal=SYSTEM,
        dataset_id="medical_security/insured_persons",
        now=newest,  # type: ignore[arg-type]
    )
    card = cards[0]
    # 4 non-empty ID numbers; ID1, ID3, ID4 are in residents, the outsider is not
    assert card.consistency == 75.0
    rule = card.detail["consistency"][0]
    assert (rule["id"], rule["checked"], rule["consistent"]) == (
        "insured_persons_are_residents",
        4,
        3,
    )
    assert card.completeness == 95.0  # 19 of 20 cells
    assert card.validity == 100.0 and card.uniqueness == 100.0 and card.timeliness == 100.0
    assert card.overall == 0.25 * 95 + 0.25 * 100 + 0.2 * 100 + 0.15 * 100 + 0.15 * 75 == 95.0
    graph = lineage_graph(engine=engine, dataset_id="quality:medical_security/insured_persons")
    # the tables themselves came from loaded files, which the graph also shows
    assert [u for u in graph.upstream if not u.startswith("file:")] == [
        "medical_security/insured_persons",
        "public_security/residents",
    ]
    assert {(e.source, e.activity) for e in graph.edges if e.activity == "quality.run"} == {
        ("medical_security/insured_persons", "quality.run"),
        ("public_security/residents", "quality.run"),
    }
    down = lineage_graph(engine=engine, dataset_id="public_security/residents")
    assert down.downstream == ["quality:medical_security/insured_persons"]
    log = [
        json.loads(line)
        for line in (data / "audit" / "log.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    runs = [r for r in log if r["action"] == "quality.run"]
    assert runs[-1]["resource"] == "medical_security/insured_persons"
    assert runs[-1]["result"] == "ok" and runs[-1]["rows"] is None


def test_rule_skipped_without_reference(tmp_path: Path) -> None:
    from citybrain.core.db import create_engine_for, upgrade

    engine = create_engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    tables.register_table(engine=engine, data_dir=tmp_path, spec=INSURED)
    _load(engine, tmp_path, INSURED, INSURED_CSV)
    card = service.score_dataset(
        engine=engine, data_dir=tmp_path, dataset_id="medical_security/insured_persons"
    )
    assert card.consistency is None
    assert card.detail["consistency"][0]["skipped"] == "the reference table is not on this node"
    with pytest.raises(NotFound):
        service.score_dataset(engine=engine, data_dir=tmp_path, dataset_id="education/none")
    with pytest.raises(BadInput):
        service.score_dataset(engine=engine, data_dir=tmp_path, dataset_id="ngsi-ld:Device")
    with pytest.raises(BadInput):
        service.run_quality(engine=engine, data_dir=tmp_path, principal=SYSTEM)
    steward = Principal(subject="s", org="education", role=Role.steward, issuer="370000")
    with pytest.raises(Forbidden):
        service.run_quality(
            engine=engine,
            data_dir=tmp_path,
            principal=steward,
            dataset_id="medical_security/insured_persons",
        )
    assert (
        service.run_quality(engine=engine, data_dir=tmp_path, principal=steward, all_tables=True)
        == []
    )
    engine.dispose()


def test_api_roles_and_departments(node: tuple[TestClient, Engine, Path]) -> None:
    client, engine, data = node
    other = bearer(data, org="education", role="steward")
    denied = client.post(
        "/api/quality/run", json={"dataset_id": "public_security/residents"}, headers=other
    )
    assert denied.status_code == 403
    operator = bearer(data, org="public_security", role="operator")
    assert (
        client.post(
            "/api/quality/run", json={"dataset_id": "public_security/residents"}, headers=operator
        ).status_code
        == 403
    )
    owner = bearer(data, org="public_security", role="steward")
    ran = client.post(
        "/api/quality/run", json={"dataset_id": "public_security/residents"}, headers=owner
    )
    assert ran.status_code == 200, ran.text
    assert [c["dataset_id"] for c in ran.json()] == ["public_security/residents"]
    # a steward's "all" is their own department's tables; the bureau's is every table
    mine = client.post("/api/quality/run", json={"all": True}, headers=owner).json()
    assert [c["dataset_id"] for c in mine] == ["public_security/residents"]
    every = client.post("/api/quality/run", json={"all": True}).json()
    assert [c["dataset_id"] for c in every] == [
        "medical_security/insured_persons",
        "public_security/residents",
    ]
    assert client.post("/api/quality/run", json={}).status_code == 400
    assert (
        client.post(
            "/api/quality/run", json={"dataset_id": "public_security/residents", "all": True}
        ).status_code
        == 400
    )
    assert client.post("/api/quality/run", json={"dataset_id": "x/none"}).status_code == 404
    assert client.post("/api/quality/run", json={"dataset_id": "../x"}).status_code == 400

    reader = bearer(data, org="health", role="operator")
    shown = client.get("/api/quality/datasets/public_security/residents", headers=reader)
    assert shown.status_code == 200
    body = shown.json()
    assert body["latest"]["id"] == every[1]["id"] and len(body["history"]) == 3
    assert client.get("/api/quality/datasets/education/none").status_code == 404
    assert client.get("/api/quality/datasets/a/b%00").status_code == 400
    departments = client.get("/api/quality/departments", headers=reader).json()
    assert [d["department"] for d in departments] == ["medical_security", "public_security"]
    assert departments[1]["datasets"] == 1
    assert departments[1]["overall"] == every[1]["overall"]
    citizen = bearer(data, org="citizens", role="citizen", phone="13812345678")
    assert client.get("/api/quality/departments", headers=citizen).status_code == 403
    log = [
        json.loads(line)
        for line in (data / "audit" / "log.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    results = [(r["resource"], r["result"]) for r in log if r["action"] == "quality.run"]
    assert results[0] == ("public_security/residents", "denied")
    assert results.count(("public_security/residents", "ok")) == 3
    # the timeliness of the catalog entry follows the data's newest version
    entry = catalog.find_entry(engine=engine, dataset_id="public_security/residents")
    assert entry is not None and entry.last_updated == _newest(
        engine, data, "public_security/residents"
    )


def test_cli(node: tuple[TestClient, Engine, Path]) -> None:
    _, _, data = node
    runner = CliRunner(env={"COLUMNS": "200"})
    ran = runner.invoke(cli_app, ["quality", "run", "--all", "--data", str(data)])
    assert ran.exit_code == 0, ran.output
    assert "public_security/residents" in ran.output and "insured_persons" in ran.output
    one = runner.invoke(
        cli_app, ["quality", "run", "--dataset", "public_security/residents", "--data", str(data)]
    )
    assert one.exit_code == 0 and "93.3" in one.output
    shown = runner.invoke(
        cli_app, ["quality", "show", "public_security/residents", "--data", str(data)]
    )
    assert shown.exit_code == 0 and '"completeness": 93.33' in shown.output
    departments = runner.invoke(cli_app, ["quality", "departments", "--data", str(data)])
    assert departments.exit_code == 0 and "medical_security" in departments.output
    missing = runner.invoke(cli_app, ["quality", "show", "education/none", "--data", str(data)])
    assert isinstance(missing.exception, NotFound)
