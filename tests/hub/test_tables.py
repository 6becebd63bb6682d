"""Departmental tables: Delta versions, upsert by key, rejected rows, records API, SQL jobs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.app import create_app
from citybrain.core.config import load_settings
from conftest import bearer

SPEC = {
    "department": "public_security",
    "name": "residents",
    "primary_key": ["person_id"],
    "columns": [
        {"name": "person_id", "type": "string"},
        {"name": "age", "type": "int64"},
        {"name": "born", "type": "date"},
        {"name": "county", "type": "string"},
        {"name": "insured", "type": "bool"},
    ],
}
GOOD_CSV = (
    "person_id,age,born,county,insured\n"
    "p1,30,1996-01-02,370102,true\n"
    "p2,40,1986-03-01,370103,false\n"
    "p3,7,2019-05-05,370102,\n"
)


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    """A province node with the residents table registered."""
    app = create_app(load_settings(data_dir=tmp_path, code="370000", level="province"))
    # the owner department's steward: it reads its own table in the clear
    with TestClient(app, headers=bearer(tmp_path, org="public_security", role="steward")) as c:
        assert c.post("/api/tables", json=SPEC).status_code == 201
        yield c  # type: ignore[misc]


def _load(client: TestClient, body: bytes | str, media: str = "text/csv") -> dict[str, object]:
    response = client.post(
        "/api/tables/public_security/residents/loads",
        content=body.encode() if isinstance(body, str) else body,
        headers={"content-type": media},
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_load_upsert_versions_and_time_travel(client: TestClient) -> None:
    first = _load(client, GOOD_CSV)
    assert (first["status"], first["accepted"], first["rejected"], first["version"]) == (
        "applied",
        3,
        0,
        1,
    )
    again = _load(client, GOOD_CSV)
    assert again["status"] == "unchanged" and again["version"] == 1
    update = _load(
        client,
        '{"person_id": "p1", "age": 31, "born": "1995-01-02", "county": "370102", '
        '"insured": true}\n',
        "application/x-ndjson",
    )
    assert update["version"] == 2 and update["accepted"] == 1
    table = client.get("/api/tables/public_security/residents").json()
    assert (table["version"], table["rows"]) == (2, 3)
    now = client.get(
        "/api/tables/public_security/residents/records", params={"filter": "person_id==p1"}
    ).json()
    before = client.get(
        "/api/tables/public_security/residents/records",
        params={"filter": "person_id==p1", "version": 1},
    ).json()
    assert now["records"][0]["age"] == 31 and before["records"][0]["age"] == 30
    ops = [
        v["operation"] for v in client.get("/api/tables/public_security/residents/versions").json()
    ]
    assert ops == ["MERGE", "MERGE", "WRITE"]


def test_bad_rows_are_reported_and_good_rows_applied(client: TestClient) -> None:
    body = (
        "person_id,age,born,county,insured\n"
        "p1,30,1996-01-02,370102,true\n"
        "p2,abc,1990-01-01,370102,true\n"
        "p3,40,1986-13-01,370103,false\n"
        ",5,2020-01-01,370102,true\n"
        "p1,31,1995-01-02,370102,true\n"
        "p4,1,2025-01-01\n"
        "p5,7,2019-05-05,370103,maybe\n"
        "p6,8,2018-05-05,370103,no\n"
    )
    result = _load(client, body)
    assert result["accepted"] == 2
    reasons = {r["row"]: r["reason"] for r in result["rejections"]}  # type: ignore[union-attr]
    assert reasons == {
        2: "age is not a valid int64",
        3: "born is not a valid date",
        4: "person_id is required",
        5: "duplicate key ['p1'] in this file",
        6: "expected 5 fields, found 3",
        7: "insured is not a valid bool",
    }


@pytest.mark.parametrize(
    ("body", "media", "status", "message"),
    [
        ("person_id,age\np1,3\n", "text/csv", 400, "missing column(s) born, county, insured"),
        ("person_id,age,born,county,insured,extra\n", "text/csv", 400, "unknown column(s) extra"),
        ("", "text/csv", 400, "empty"),
        (b"\xff\xfe", "text/csv", 400, "not UTF-8"),
        ("x", "application/vnd.apache.parquet", 400, "Parquet file cannot be read"),
        ("a,b", "text/plain", 400, "unsupported content type"),
    ],
)
def test_whole_file_refusals_change_nothing(
    client: TestClient, body: bytes | str, media: str, status: int, message: str
) -> None:
    _load(client, GOOD_CSV)
    response = client.post(
        "/api/tables/public_security/residents/loads",
        content=body.encode() if isinstance(body, str) else body,
        headers={"content-type": media},
    )
    assert response.status_code == status
    assert message in response.json()["title"]
    assert client.get("/api/tables/public_security/residents").json()["version"] == 1


def test_parquet_load_and_wrong_types(client: TestClient) -> None:
    buf = io.BytesIO()
    pq.write_table(
        pa.table(
            {
                "person_id": ["q1"],
                "age": pa.array([3], pa.int32()),
                "born": pa.array(["2023-01-01"]),
                "county": ["370102"],
                "insured": [True],
            }
        ),
        buf,
    )
    result = _load(client, buf.getvalue(), "application/vnd.apache.parquet")
    assert result["accepted"] == 1
    bad = io.BytesIO()
    pq.write_table(
        pa.table(
            {"person_id": ["q2"], "age": ["x"], "born": ["y"], "county": [1], "insured": [1.5]}
        ),
        bad,
    )
    response = client.post(
        "/api/tables/public_security/residents/loads",
        content=bad.getvalue(),
        headers={"content-type": "application/vnd.apache.parquet"},
    )
    assert response.status_code == 200
    assert response.json()["rejected"] == 1 or response.json()["status"] == "rejected"


def test_records_filters_projection_and_pages(client: TestClient) -> None:
    rows = "".join(f"p{i:03d},{i},2000-01-01,{370102 + i % 2},true\n" for i in range(25))
    _load(client, "person_id,age,born,county,insured\n" + rows)
    seen: list[str] = []
    after = None
    while True:
        params: dict[str, object] = {
            "limit": 10,
            "fields": "person_id",
            "filter": ["county==370102"],
        }
        if after:
            params["after"] = after
        page = client.get("/api/tables/public_security/residents/records", params=params).json()
        seen += [r["person_id"] for r in page["records"]]
        assert all(set(r) == {"person_id"} for r in page["records"])
        after = page["next_after"]
        if not after:
            break
    assert seen == [f"p{i:03d}" for i in range(0, 25, 2)]
    ranged = client.get(
        "/api/tables/public_security/residents/records",
        params={"filter": ["age>=5", "age<8", "person_id=^p00"]},
    ).json()
    assert [r["age"] for r in ranged["records"]] == [5, 6, 7]


@pytest.mark.parametrize(
    "params",
    [
        {"filter": "age==abc"},
        {"filter": "nosuch==1"},
        {"filter": "age;drop table x"},
        {"filter": "age=^1"},
        {"fields": "person_id,secret"},
        {"after": "!!notacursor"},
        {"limit": 0},
        {"version": 99},
    ],
)
def test_bad_record_queries(client: TestClient, params: dict[str, object]) -> None:
    _load(client, GOOD_CSV)
    response = client.get("/api/tables/public_security/residents/records", params=params)
    assert response.status_code in (400, 404), response.text
    assert response.json()["type"].startswith("https://uri.etsi.org/ngsi-ld/errors/")


def test_sql_jobs_read_only_and_bound(client: TestClient) -> None:
    _load(client, GOOD_CSV)
    ok = client.post(
        "/api/sql",
        json={
            "sql": "select county, count(*) n from public_security.residents "
            "where age > ? group by 1 order by 1",
            "params": [10],
        },
    ).json()
    assert ok["rows"] == [["370102", 1], ["370103", 1]]
    hostile = client.post(
        "/api/sql",
        json={
            "sql": "select count(*) from public_security.residents where county = ?",
            "params": ["x' or 1=1 --"],
        },
    ).json()
    assert hostile["rows"] == [[0]]
    for sql in (
        "drop table public_security.residents",
        "select 1; select 2",
        "select * from read_csv('/etc/passwd')",
        "copy (select 1) to '/tmp/out.csv'",
        "install httpfs",
        "set enable_external_access = true",
        "0",
        "selec * frm",
    ):
        response = client.post("/api/sql", json={"sql": sql})
        assert response.status_code == 400, sql
    assert client.get("/api/tables/public_security/residents").json()["rows"] == 3


def test_registration_refusals(client: TestClient) -> None:
    assert client.post("/api/tables", json=SPEC).status_code == 409
    bad = {**SPEC, "name": "other", "primary_key": ["nope"]}
    assert client.post("/api/tables", json=bad).status_code == 400
    assert client.post("/api/tables", json={**SPEC, "name": "../etc"}).status_code == 400
    assert client.get("/api/tables/public_security/nothing").status_code == 404


def test_tables_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    app = create_app(
        load_settings(data_dir=tmp_path, code="370100", level="city", database_url=postgres_url)
    )
    owner = bearer(tmp_path, org="public_security", role="steward", issuer="370100")
    with TestClient(app, headers=owner) as c:
        spec = {**SPEC, "name": f"residents_{tmp_path.name[-8:].lower().replace('-', '_')}"}
        if not spec["name"][-1].isalnum():
            spec["name"] += "x"
        assert c.post("/api/tables", json=spec).status_code == 201
        response = c.post(
            f"/api/tables/public_security/{spec['name']}/loads",
            content=GOOD_CSV,
            headers={"content-type": "text/csv"},
        )
        assert response.json()["accepted"] == 3


def test_cli_register_load_records(tmp_path: Path) -> None:
    data = tmp_path / "node"
    spec = tmp_path / "residents.yaml"
    spec.write_text(json.dumps(SPEC))
    csv = tmp_path / "residents.csv"
    csv.write_text(GOOD_CSV + "p4,x,2000-01-01,370102,true\n")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "citybrain", "tables", *args, "--data", str(data)],
            capture_output=True,
            text=True,
        )

    assert run("register", str(spec)).returncode == 0
    loaded = run("load", "public_security/residents", str(csv))
    assert loaded.returncode == 0 and "3 rows accepted, 1 refused" in loaded.stdout
    assert "line 4: age is not a valid int64" in loaded.stdout
    page = run("records", "public_security/residents", "--limit", "2")
    assert [json.loads(x)["person_id"] for x in page.stdout.splitlines()[:2]] == ["p1", "p2"]
    assert "# next: --after" in page.stdout
    bad = run("load", "public_security/residents", str(tmp_path / "missing.csv"))
    assert bad.returncode == 2 and "cannot read" in bad.stderr and "Traceback" not in bad.stderr
    wrong = run("load", "nodepartment", str(csv))
    assert wrong.returncode == 2 and "department/name" in wrong.stderr


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(-5, 120)), min_size=1, max_size=40))
def test_upserts_keep_the_last_value_per_key(
    tmp_path_factory: pytest.TempPathFactory, batches: list[tuple[int, int]]
) -> None:
    data = tmp_path_factory.mktemp("prop")
    app = create_app(load_settings(data_dir=data, code="370000", level="province"))
    expected: dict[str, int] = {}
    with TestClient(app, headers=bearer(data, org="public_security", role="steward")) as c:
        c.post("/api/tables", json=SPEC)
        # load in chunks of five; within a chunk a repeated key is refused, so skip repeats
        for start in range(0, len(batches), 5):
            chunk: dict[str, int] = {}
            for key, age in batches[start : start + 5]:
                chunk.setdefault(f"k{key}", age)
            body = "person_id,age,born,county,insured\n" + "".join(
                f"{k},{a},2000-01-01,370102,true\n" for k, a in chunk.items()
            )
            c.post(
                "/api/tables/public_security/residents/loads",
                content=body,
                headers={"content-type": "text/csv"},
            )
            expected.update(chunk)
        got = c.get("/api/tables/public_security/residents/records", params={"limit": 1000}).json()
    assert {r["person_id"]: r["age"] for r in got["records"]} == expected
