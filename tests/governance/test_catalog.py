"""Catalog: entry rules, who may write, search, built-in entries, DCAT-AP, CLI, PostgreSQL."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from rdflib import Graph, Literal, Namespace, URIRef
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from citybrain.app import create_app
from citybrain.cli import app as cli_app
from citybrain.core.config import load_settings
from citybrain.core.db import create_engine_for, upgrade
from citybrain.core.errors import BadInput, Forbidden, NotFound, Unprocessable
from citybrain.governance.catalog import service
from citybrain.governance.catalog.models import CatalogEntryCreate
from citybrain.governance.principal import Principal, Role
from citybrain.hub.tables import service as tables
from citybrain.hub.tables.files import FileFormat
from citybrain.hub.tables.models import TableSpec
from conftest import bearer, fresh_schema

# plain namespaces: pytest's collection probes module attributes, which rdflib's closed
# namespaces warn about
DCAT = Namespace("http://www.w3.org/ns/dcat#")
DCTERMS = Namespace("http://purl.org/dc/terms/")
FOAF = Namespace("http://xmlns.com/foaf/0.1/")
RDF = Namespace("http://www.w3.org/1999/02/22-rdf-syntax-ns#")
EU_THEME = Namespace("http://publications.europa.eu/resource/authority/data-theme/")
EU_FREQ = Namespace("http://publications.europa.eu/resource/authority/frequency/")
EU_ACCESS = Namespace("http://publications.europa.eu/resource/authority/access-right/")

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
            {"name": "hukou_county", "type": "string"},
            {"name": "residence_county", "type": "string"},
            {"name": "birth_date", "type": "date"},
        ],
    }
)
SCHOOLS = TableSpec.model_validate(
    {
        "department": "education",
        "name": "schools",
        "primary_key": ["school_id"],
        "columns": [
            {"name": "school_id", "type": "string"},
            {"name": "name", "type": "string"},
            {"name": "county_code", "type": "string"},
            {"name": "entry_capacity", "type": "int64"},
        ],
    }
)
UNKNOWN = TableSpec.model_validate(
    {
        "department": "civil_affairs",
        "name": "marriages",
        "primary_key": ["record_id"],
        "columns": [
            {"name": "record_id", "type": "string"},
            {"name": "husband_id_number", "type": "string"},
            {"name": "wife_name", "type": "string"},
            {"name": "contact_phone", "type": "string"},
            {"name": "registered_on", "type": "date"},
        ],
    }
)


def _entry(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "education/teachers",
        "title_zh": "教师信息",
        "title_en": "Teachers",
        "description": "在编教师：学校、学科、职称。",
        "owner_department": "education",
        "theme": "education",
        "update_frequency": "monthly",
        "data_level": "general-3",
        "sharing_type": "conditional",
        "fields": [
            {"name": "teacher_id", "type": "string"},
            {"name": "name", "type": "string", "personal": "personal", "mask": "name"},
            {"name": "school_county", "type": "string"},
        ],
        "scope_fields": ["school_county"],
        "keywords": ["教师", "teachers"],
    }
    body.update(overrides)
    return body


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    """A province node with a residents and a schools table, the bureau's token by default."""
    app = create_app(load_settings(data_dir=tmp_path))
    with TestClient(app, headers=bearer(tmp_path)) as client:
        engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
        tables.register_table(engine=engine, data_dir=tmp_path, spec=RESIDENTS)
        tables.register_table(engine=engine, data_dir=tmp_path, spec=SCHOOLS)
        tables.load_file(
            engine=engine,
            data_dir=tmp_path,
            department="education",
            name="schools",
            data=b"school_id,name,county_code,entry_capacity\ns1,Lixia No. 1,370102,90\n",
            fmt=FileFormat.csv,
            source="schools.csv",
        )
        yield client, tmp_path


def test_register_read_update_and_search(node: tuple[TestClient, Path]) -> None:
    client, data = node
    steward = bearer(data, org="education", role="steward")
    created = client.post("/api/catalog", json=_entry(), headers=steward)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["kind"] == "table" and body["origin"] == "manual"
    assert body["fields"][1] == {
        "name": "name",
        "type": "string",
        "description": "",
        "personal": "personal",
        "mask": "name",
    }
    assert client.post("/api/catalog", json=_entry(), headers=steward).status_code == 409
    operator = bearer(data, org="health", role="operator")
    got = client.get("/api/catalog/education/teachers", headers=operator)
    assert got.status_code == 200 and got.json()["title_zh"] == "教师信息"
    assert client.get("/api/catalog/education/nothing", headers=operator).status_code == 404

    changed = client.put(
        "/api/catalog/education/teachers",
        json=_entry(data_level="general-4", title_en="Teachers of public schools"),
        headers=steward,
    )
    assert changed.status_code == 200 and changed.json()["data_level"] == "general-4"
    assert changed.json()["updated_at"] >= body["updated_at"]
    mismatch = client.put("/api/catalog/education/other", json=_entry(), headers=steward)
    assert mismatch.status_code == 422

    found = client.get("/api/catalog", params={"q": "教师"}, headers=operator).json()
    assert [e["id"] for e in found["entries"]] == ["education/teachers"]
    by_words = client.get("/api/catalog", params={"q": "public teachers"}).json()
    assert by_words["total"] == 1
    # built-in entries of the node's tables and device types are there as well
    schools = client.get("/api/catalog", params={"owner": "education"}).json()
    assert {e["id"] for e in schools["entries"]} == {"education/schools", "education/teachers"}
    important = client.get("/api/catalog", params={"level": "important"}).json()
    assert [e["id"] for e in important["entries"]] == ["public_security/residents"]
    open_data = client.get("/api/catalog", params={"open_data": "true", "limit": 3}).json()
    assert open_data["total"] == 10 and len(open_data["entries"]) == 3
    assert all(e["open_data"] for e in open_data["entries"])
    health = client.get("/api/catalog", params={"theme": "environment"}).json()
    assert {e["id"] for e in health["entries"]} == {
        "ngsi-ld:AirQualityObserved",
        "ngsi-ld:NoiseLevelObserved",
        "ngsi-ld:WeatherObserved",
    }
    shared = client.get("/api/catalog", params={"sharing_type": "conditional"}).json()
    assert {e["id"] for e in shared["entries"]} == {
        "education/teachers",
        "public_security/residents",
    }
    # a LIKE wildcard in the words is literal text
    assert client.get("/api/catalog", params={"q": "%"}).json()["total"] == 0
    assert client.get("/api/catalog", params={"level": "secret"}).status_code == 400
    assert client.get("/api/catalog", params={"limit": 0}).status_code == 400
    assert client.get("/api/catalog", params={"q": "a\x00"}).status_code == 400
    assert client.get("/api/catalog/a/b%00").status_code == 404


def test_entry_validation(node: tuple[TestClient, Path]) -> None:
    client, _ = node
    # unknown level, unknown theme, no title, bad id: malformed entries, refused by the model
    unknown_level = client.post("/api/catalog", json=_entry(data_level="level-9"))
    assert unknown_level.status_code == 400 and "data_level" in unknown_level.json()["title"]
    assert client.post("/api/catalog", json=_entry(theme="sports")).status_code == 400
    assert client.post("/api/catalog", json=_entry(title_zh=None, title_en=None)).status_code == 400
    assert client.post("/api/catalog", json=_entry(id="Education/x y")).status_code == 400
    assert client.post("/api/catalog", json=_entry(colour="red")).status_code == 400
    # open data with personal fields, or above the general levels, or conditional
    personal = client.post(
        "/api/catalog",
        json=_entry(open_data=True, sharing_type="unconditional", data_level="general-1"),
    )
    assert personal.status_code == 422 and "personal" in personal.json()["title"]
    clean_fields = [{"name": "teacher_id"}, {"name": "school_county"}]
    assert (
        client.post(
            "/api/catalog",
            json=_entry(
                open_data=True,
                sharing_type="unconditional",
                data_level="important",
                fields=clean_fields,
            ),
        ).status_code
        == 422
    )
    assert (
        client.post(
            "/api/catalog",
            json=_entry(open_data=True, data_level="general-1", fields=clean_fields),
        ).status_code
        == 422
    )
    # subject and scope fields must be fields
    assert client.post("/api/catalog", json=_entry(subject_field="phone")).status_code == 422
    assert client.post("/api/catalog", json=_entry(scope_fields=["county"])).status_code == 422
    # fields of an existing table must be its columns, with their types
    residents = client.get("/api/catalog/public_security/residents").json()
    body = {k: residents[k] for k in _entry() if k in residents}
    missing = dict(body, fields=body["fields"][:-1])
    wrong = client.put("/api/catalog/public_security/residents", json=missing)
    assert wrong.status_code == 422 and "birth_date" in wrong.json()["title"]
    extra = dict(body, fields=[*body["fields"], {"name": "email"}])
    assert client.put("/api/catalog/public_security/residents", json=extra).status_code == 422
    typed = [dict(f, type="int64") if f["name"] == "phone" else f for f in body["fields"]]
    retyped = client.put("/api/catalog/public_security/residents", json=dict(body, fields=typed))
    assert retyped.status_code == 422
    untyped = [{k: v for k, v in f.items() if k != "type"} for f in body["fields"]]
    ok = client.put("/api/catalog/public_security/residents", json=dict(body, fields=untyped))
    assert ok.status_code == 200
    assert ok.json()["fields"][-1]["type"] == "date" and ok.json()["origin"] == "manual"


def test_who_may_write(node: tuple[TestClient, Path]) -> None:
    client, data = node
    other = bearer(data, org="health", role="steward")
    assert client.post("/api/catalog", json=_entry(), headers=other).status_code == 403
    operator = bearer(data, org="education", role="operator")
    assert client.post("/api/catalog", json=_entry(), headers=operator).status_code == 403
    citizen = bearer(data, org="citizens", role="citizen", phone="13812345678")
    assert client.get("/api/catalog", headers=citizen).status_code == 403
    assert client.get("/api/catalog", headers={"Authorization": ""}).status_code == 401
    auditor = bearer(data, org="audit", role="auditor")
    assert client.get("/api/catalog/education/schools", headers=auditor).status_code == 403
    assert client.post("/api/catalog", json=_entry()).status_code == 201  # the bureau
    steward = bearer(data, org="education", role="steward")
    # the owner's steward may change it, but not give it to another department
    moved = client.put(
        "/api/catalog/education/teachers", json=_entry(owner_department="health"), headers=steward
    )
    assert moved.status_code == 403
    assert (
        client.put("/api/catalog/education/teachers", json=_entry(), headers=other).status_code
        == 403
    )
    assert (
        client.put("/api/catalog/education/teachers", json=_entry(), headers=steward).status_code
        == 200
    )
    audit_log = (data / "audit" / "log.jsonl").read_text(encoding="utf-8").splitlines()
    actions = [json.loads(line)["action"] for line in audit_log]
    assert actions.count("catalog.register") == 1 and actions.count("catalog.update") == 1


def test_service_rules_without_http(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    steward = Principal(subject="u1", org="education", role=Role.steward, issuer="370000")
    entry = CatalogEntryCreate.model_validate(_entry())
    with pytest.raises(Forbidden):
        service.register_entry(
            engine=engine,
            entry=entry,
            principal=Principal(subject="u2", org="health", role=Role.steward, issuer="370000"),
        )
    service.register_entry(engine=engine, entry=entry, principal=steward)
    assert service.find_entry(engine=engine, dataset_id="education/none") is None
    with pytest.raises(NotFound):
        service.get_entry(engine=engine, dataset_id="education/none")
    with pytest.raises(Unprocessable):
        service.update_entry(
            engine=engine,
            dataset_id="education/teachers",
            entry=CatalogEntryCreate.model_validate(_entry(subject_field="nope")),
            principal=steward,
        )
    engine.dispose()


def test_builtin_entries(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    for spec in (RESIDENTS, SCHOOLS, UNKNOWN):
        tables.register_table(engine=engine, data_dir=tmp_path, spec=spec)
    tables.load_file(
        engine=engine,
        data_dir=tmp_path,
        department="public_security",
        name="residents",
        data=b"person_id,id_number,name,phone,hukou_county,residence_county,birth_date\n"
        b"p1,370102199001011234,Zhang,13812345678,370102,370102,1990-01-01\n",
        fmt=FileFormat.csv,
        source="r.csv",
    )
    # registering a table makes its entry at once; a later call creates nothing more
    assert service.ensure_builtin_entries(engine=engine, data_dir=tmp_path) == []
    ids = {e.id for e in service.list_entries(engine=engine)}
    assert {"public_security/residents", "ngsi-ld:Building"} <= ids
    assert len(ids) == 3 + 9
    residents = service.get_entry(engine=engine, dataset_id="public_security/residents")
    assert (residents.data_level.value, residents.sharing_type.value) == (
        "important",
        "conditional",
    )
    assert residents.subject_field == "phone"
    assert residents.scope_fields == ["hukou_county", "residence_county"]
    flags = {f.name: (f.personal.value, f.mask.value) for f in residents.fields}
    assert flags["id_number"] == ("sensitive", "id_number")
    assert flags["name"] == ("personal", "name") and flags["phone"] == ("personal", "phone")
    assert flags["hukou_county"] == ("none", "none")
    versions = tables.list_versions(
        engine=engine, data_dir=tmp_path, department="public_security", name="residents"
    )
    assert residents.last_updated == versions[0].timestamp
    schools = service.get_entry(engine=engine, dataset_id="education/schools")
    assert schools.open_data and schools.data_level.value == "general-1"
    assert schools.personal_fields == []  # a school's name is not a person's
    unknown = service.get_entry(engine=engine, dataset_id="civil_affairs/marriages")
    assert (unknown.data_level.value, unknown.sharing_type.value, unknown.owner_department) == (
        "general-2",
        "conditional",
        "civil_affairs",
    )
    assert {f.name: f.mask.value for f in unknown.fields if f.personal.value != "none"} == {
        "husband_id_number": "id_number",
        "wife_name": "name",
        "contact_phone": "phone",
    }
    air = service.get_entry(engine=engine, dataset_id="ngsi-ld:AirQualityObserved")
    assert (air.kind.value, air.data_level.value, air.open_data) == (
        "entity_type",
        "general-1",
        True,
    )
    # idempotent; an entry a person edited keeps its content
    assert service.ensure_builtin_entries(engine=engine, data_dir=tmp_path) == []
    edited = CatalogEntryCreate.model_validate(
        {
            **schools.model_dump(
                mode="json",
                include=set(CatalogEntryCreate.model_fields),
            ),
            "title_zh": "学校名录",
        }
    )
    service.update_entry(
        engine=engine,
        dataset_id="education/schools",
        entry=edited,
        principal=Principal(subject="s", org="education", role=Role.steward, issuer="370000"),
    )
    # a built-in entry that drifted from the file comes back to it; an edited one does not
    with engine.begin() as conn:
        conn.execute(
            text("update catalog_entries set title_en = 'changed' where id = :i"),
            {"i": "civil_affairs/marriages"},
        )
    service.ensure_builtin_entries(engine=engine, data_dir=tmp_path)
    assert service.get_entry(engine=engine, dataset_id="education/schools").title_zh == "学校名录"
    assert service.get_entry(engine=engine, dataset_id="civil_affairs/marriages").title_en == (
        "Marriages"
    )
    engine.dispose()


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the DCAT export tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_dcat_export_round_trip(
    node: tuple[TestClient, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, data = node
    assert client.post("/api/catalog", json=_entry()).status_code == 201
    _no_network(monkeypatch)
    response = client.get("/catalog/dcat", headers={"Authorization": ""})  # public
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/ld+json")
    document = response.json()
    assert isinstance(document["@context"], dict)
    assert "records" not in response.text or "/records" in response.text  # links, never rows
    g = Graph().parse(data=response.text, format="json-ld")
    base = "http://127.0.0.1:8000"
    catalog = URIRef(f"{base}/catalog/dcat")
    assert (catalog, RDF.type, DCAT.Catalog) in g
    node_agent = g.value(catalog, DCTERMS.publisher)
    assert (node_agent, RDF.type, FOAF.Agent) in g
    datasets = set(g.objects(catalog, DCAT.dataset))
    assert len(datasets) == 2 + 1 + 9
    residents = URIRef(f"{base}/api/catalog/public_security/residents")
    assert residents in datasets
    assert (residents, DCTERMS.identifier, Literal("public_security/residents")) in g
    assert (residents, DCTERMS.title, Literal("人口基础信息", lang="zh")) in g
    assert (residents, DCTERMS.title, Literal("Resident population register", lang="en")) in g
    assert (residents, DCAT.theme, EU_THEME.SOCI) in g
    assert (residents, DCTERMS.accrualPeriodicity, EU_FREQ.DAILY) in g
    assert (residents, DCTERMS.accessRights, EU_ACCESS.RESTRICTED) in g
    assert g.value(residents, DCTERMS.modified) is not None
    owner = g.value(residents, DCTERMS.publisher)
    assert (owner, FOAF.name, Literal("public_security")) in g
    distribution = g.value(residents, DCAT.distribution)
    assert g.value(distribution, DCAT.accessURL) == URIRef(
        f"{base}/api/tables/public_security/residents/records"
    )
    schools = URIRef(f"{base}/api/catalog/education/schools")
    assert (schools, DCTERMS.accessRights, EU_ACCESS.PUBLIC) in g
    assert (schools, DCAT.theme, EU_THEME.EDUC) in g
    assert (schools, DCTERMS.accrualPeriodicity, EU_FREQ.ANNUAL) in g
    teachers = URIRef(f"{base}/api/catalog/education/teachers")
    assert (teachers, DCAT.keyword, Literal("教师")) in g
    air = URIRef(f"{base}/api/catalog/ngsi-ld:AirQualityObserved")
    air_dist = g.value(air, DCAT.distribution)
    assert g.value(air_dist, DCAT.accessURL) == URIRef(
        f"{base}/ngsi-ld/v1/entities?type=AirQualityObserved"
    )
    assert (air, DCTERMS.accrualPeriodicity, EU_FREQ.UPDATE_CONT) in g
    # no value of any record is in the export
    assert "Lixia No. 1" not in response.text

    turtle = client.get("/catalog/dcat", params={"format": "turtle"})
    assert turtle.status_code == 200 and turtle.headers["content-type"].startswith("text/turtle")
    g2 = Graph().parse(data=turtle.text, format="turtle")
    assert len(g2) == len(g)
    assert client.get("/catalog/dcat", params={"format": "xml"}).status_code == 400


def test_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner(env={"COLUMNS": "200"})
    data = tmp_path / "node"
    spec = tmp_path / "teachers.yaml"
    spec.write_text(yaml.safe_dump(_entry(), allow_unicode=True), encoding="utf-8")
    result = runner.invoke(cli_app, ["catalog", "register", str(spec), "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert "registered education/teachers" in result.output
    result = runner.invoke(cli_app, ["catalog", "register", str(spec), "--data", str(data)])
    assert result.exit_code == 0 and "updated education/teachers" in result.output
    listed = runner.invoke(
        cli_app,
        ["catalog", "list", "--data", str(data), "--format", "json", "--owner", "education"],
    )
    assert [e["id"] for e in json.loads(listed.output)] == ["education/teachers"]
    found = runner.invoke(cli_app, ["catalog", "search", "教师", "--data", str(data)])
    assert found.exit_code == 0 and "education/teachers" in found.output
    shown = runner.invoke(cli_app, ["catalog", "show", "education/teachers", "--data", str(data)])
    assert json.loads(shown.output)["title_en"] == "Teachers"
    _no_network(monkeypatch)
    out = tmp_path / "catalog.ttl"
    exported = runner.invoke(
        cli_app,
        ["catalog", "export-dcat", "--data", str(data), "--out", str(out), "--format", "turtle"],
    )
    assert exported.exit_code == 0, exported.output
    assert len(Graph().parse(out, format="turtle")) > 50
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_entry(data_level="top")), encoding="utf-8")
    refused = runner.invoke(cli_app, ["catalog", "register", str(bad), "--data", str(data)])
    assert refused.exit_code != 0 and "data_level" in str(refused.exception)
    missing = runner.invoke(cli_app, ["catalog", "show", "education/none", "--data", str(data)])
    assert isinstance(missing.exception, NotFound)


def test_catalog_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    engine = create_engine_for(fresh_schema(postgres_url, "catalog"))
    try:
        upgrade(engine)
        tables.register_table(engine=engine, data_dir=tmp_path, spec=RESIDENTS)
        service.ensure_builtin_entries(engine=engine, data_dir=tmp_path)
        assert service.find_entry(engine=engine, dataset_id="public_security/residents")
        bureau = Principal(subject="b", org="bureau", role=Role.bureau_admin, issuer="370000")
        service.register_entry(
            engine=engine, entry=CatalogEntryCreate.model_validate(_entry()), principal=bureau
        )
        page = service.search(engine=engine, text="教师")
        assert [e.id for e in page.entries] == ["education/teachers"]
        page = service.search(engine=engine, text="RESIDENTS", level="important")
        assert [e.id for e in page.entries] == ["public_security/residents"]
        assert service.search(engine=engine, open_data=True).total == 9
        entry = service.get_entry(engine=engine, dataset_id="public_security/residents")
        assert entry.created_at.tzinfo is not None and entry.fields[1].mask.value == "id_number"
        assert service.ensure_builtin_entries(engine=engine, data_dir=tmp_path) == []
        # PostgreSQL refuses NUL bytes: they never reach it
        assert service.find_entry(engine=engine, dataset_id="a/b\x00") is None
        with pytest.raises(BadInput):
            service.search(engine=engine, text="\x00")
    finally:
        engine.dispose()
