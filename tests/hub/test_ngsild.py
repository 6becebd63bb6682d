"""The NGSI-LD API: entities, attributes, queries, batch operations, contexts, errors."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.core.errors import BadInput
from citybrain.hub.ngsild import query
from citybrain.hub.ngsild.jsonld import core_url_for
from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
BASE = "/ngsi-ld/v1"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"


def sensor(n: int, pm25: float, lon: float = 117.0, lat: float = 36.65) -> dict[str, object]:
    return {
        "id": f"urn:ngsi-ld:AirQualityObserved:{n:03d}",
        "type": "AirQualityObserved",
        "pm25": {
            "type": "Property",
            "value": pm25,
            "unitCode": "GQ",
            "observedAt": "2026-11-24T10:00:00Z",
        },
        "name": {"type": "Property", "value": f"station {n}"},
        "address": {"type": "Property", "value": {"county": "370102", "street": "Jiefang Rd"}},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}},
        "refDevice": {"type": "Relationship", "object": f"urn:ngsi-ld:Device:{n:03d}"},
    }


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    # the node requires a token unless an anonymous role stands in for one
    settings = load_settings(data_dir=tmp_path, anonymous_role="bureau_admin")
    with TestClient(create_app(settings)) as c:
        yield c


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [e["id"][-3:] for e in response.json()]


def test_create_retrieve_delete(client: TestClient) -> None:
    r = client.post(f"{BASE}/entities", json=sensor(1, 35))
    assert r.status_code == 201 and r.headers["location"].endswith(":001")
    dup = client.post(f"{BASE}/entities", json=sensor(1, 35))
    assert dup.status_code == 409 and dup.json()["type"] == ERR + "AlreadyExists"
    got = client.get(f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:001")
    assert got.json()["pm25"]["value"] == 35
    assert "ngsi-ld-core-context-v1.8.jsonld" in got.headers["link"]
    sys_attrs = client.get(
        f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:001", params={"options": "sysAttrs"}
    ).json()
    assert sys_attrs["createdAt"].endswith("Z") and "modifiedAt" in sys_attrs["pm25"]
    kv = client.get(
        f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:001", params={"options": "keyValues"}
    ).json()
    assert kv["pm25"] == 35 and kv["refDevice"] == "urn:ngsi-ld:Device:001"
    ld = client.get(
        f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:001",
        headers={"Accept": "application/ld+json"},
    )
    assert ld.headers["content-type"].startswith("application/ld+json") and "@context" in ld.json()
    assert client.delete(f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:001").status_code == 204
    missing = client.get(f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:001")
    assert missing.status_code == 404 and missing.json()["type"] == ERR + "ResourceNotFound"


def test_attribute_operations(client: TestClient) -> None:
    client.post(f"{BASE}/entities", json=sensor(1, 35))
    eid = f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:001"
    assert (
        client.post(f"{eid}/attrs", json={"no2": {"type": "Property", "value": 12}}).status_code
        == 204
    )
    kept = client.post(
        f"{eid}/attrs",
        params={"options": "noOverwrite"},
        json={"no2": {"type": "Property", "value": 99}},
    )
    assert kept.status_code == 207 and kept.json()["notUpdated"][0]["attributeName"] == "no2"
    partial = client.patch(
        f"{eid}/attrs",
        json={
            "pm25": {"type": "Property", "value": 40, "unitCode": "GQ"},
            "nothere": {"type": "Property", "value": 1},
        },
    )
    # an update appends what the entity does not have yet (as the conformance suite reads 5.6.2)
    assert partial.status_code == 204
    assert client.get(eid).json()["nothere"]["value"] == 1
    assert client.patch(f"{eid}/attrs/pm25", json={"value": 41}).status_code == 204
    entity = client.get(eid).json()
    assert entity["pm25"]["value"] == 41 and entity["pm25"]["unitCode"] == "GQ"
    assert (
        client.patch(
            eid, json={"address": {"type": "Property", "value": {"street": "Quancheng Rd"}}}
        ).status_code
        == 204
    )
    assert client.get(eid).json()["address"]["value"] == {
        "county": "370102",
        "street": "Quancheng Rd",
    }
    assert client.delete(f"{eid}/attrs/no2").status_code == 204
    assert "no2" not in client.get(eid).json()
    assert client.delete(f"{eid}/attrs/no2").status_code == 404
    replaced = {"type": "AirQualityObserved", "pm25": {"type": "Property", "value": 1}}
    assert client.put(eid, json=replaced).status_code == 204
    assert set(client.get(eid).json()) == {"id", "type", "pm25"}


def test_query_language_and_geo(client: TestClient) -> None:
    for n, (pm, lon) in enumerate([(10, 117.0), (35, 117.01), (80, 117.3), (150, 120.38)]):
        client.post(f"{BASE}/entities", json=sensor(n, pm, lon=lon))
    q = lambda **p: client.get(f"{BASE}/entities", params={"type": "AirQualityObserved", **p})  # noqa: E731
    assert ids(q(q="pm25>30")) == ["001", "002", "003"]
    assert ids(q(q="pm25==30..90")) == ["001", "002"]
    assert ids(q(q="pm25<20|pm25>=150")) == ["000", "003"]
    assert ids(q(q="pm25>5;pm25<50")) == ["000", "001"]
    assert ids(q(q='name=="station 2","station 3"')) == ["002", "003"]
    assert ids(q(q='name~="station [01]"')) == ["000", "001"]
    assert ids(q(q='address[county]=="370102"')) == ["000", "001", "002", "003"]
    assert ids(q(q="pm25.observedAt>=2026-11-24T00:00:00Z")) == ["000", "001", "002", "003"]
    assert ids(q(q='refDevice=="urn:ngsi-ld:Device:002"')) == ["002"]
    assert ids(
        q(georel="near;maxDistance==2000", geometry="Point", coordinates="[117.0,36.65]")
    ) == ["000", "001"]
    assert ids(
        q(georel="near;minDistance==100000", geometry="Point", coordinates="[117.0,36.65]")
    ) == ["003"]
    polygon = "[[[116.9,36.6],[117.2,36.6],[117.2,36.7],[116.9,36.7],[116.9,36.6]]]"
    assert ids(q(georel="within", geometry="Polygon", coordinates=polygon)) == ["000", "001"]
    assert ids(q(georel="disjoint", geometry="Polygon", coordinates=polygon)) == ["002", "003"]
    assert ids(q(idPattern=".*:00[12]")) == ["001", "002"]
    assert ids(q(limit=2, offset=1)) == ["001", "002"]
    counted = q(limit=0, count="true")
    assert counted.json() == [] and counted.headers["ngsild-results-count"] == "4"
    picked = q(attrs="pm25", limit=1).json()[0]
    assert set(picked) == {"id", "type", "pm25"}
    assert client.get(f"{BASE}/types").json()["typeList"] == ["AirQualityObserved"]
    assert "pm25" in client.get(f"{BASE}/attributes").json()["attributeList"]
    assert client.get(f"{BASE}/types/AirQualityObserved").json()["entityCount"] == 4
    # an expanded name, percent-encoded (its slashes and # too), names the same type/attribute
    vocab = "https%3A%2F%2Furi.etsi.org%2Fngsi-ld%2Fdefault-context%2F"
    expanded = client.get(f"{BASE}/types/{vocab}AirQualityObserved")
    assert expanded.status_code == 200, expanded.text
    assert (expanded.json()["typeName"], expanded.json()["entityCount"]) == (
        "AirQualityObserved",
        4,
    )
    attribute = client.get(f"{BASE}/attributes/{vocab}pm25")
    assert attribute.status_code == 200, attribute.text
    assert attribute.json()["attributeName"] == "pm25"
    assert client.get(f"{BASE}/attributes/{vocab}nothing").status_code == 404
    [detail] = client.get(f"{BASE}/types", params={"details": "true"}).json()
    assert detail["id"] == "https://uri.etsi.org/ngsi-ld/default-context/AirQualityObserved"
    assert detail["typeName"] == "AirQualityObserved"
    assert "pm25" in detail["attributeNames"] and "location" in detail["attributeNames"]


@pytest.mark.parametrize(
    ("params", "status", "kind"),
    [
        ({"q": "pm25>>3"}, 400, "BadRequestData"),
        ({"q": "(pm25>3"}, 400, "BadRequestData"),
        ({"q": 'name~="(unclosed"'}, 400, "BadRequestData"),
        (
            {"georel": "near;maxDistance==abc", "geometry": "Point", "coordinates": "[117,36]"},
            400,
            "BadRequestData",
        ),
        (
            {"georel": "near;maxDistance==10", "geometry": "Point", "coordinates": "[500,36]"},
            400,
            "BadRequestData",
        ),
        (
            {"georel": "within", "geometry": "Polygon", "coordinates": "[[[0,0],[1,1]]]"},
            400,
            "BadRequestData",
        ),
        (
            {"georel": "inside", "geometry": "Point", "coordinates": "[117,36]"},
            400,
            "BadRequestData",
        ),
        ({"id": "not a uri"}, 400, "BadRequestData"),
        ({"idPattern": "(("}, 400, "BadRequestData"),
        ({"limit": "abc"}, 400, "BadRequestData"),
        ({"limit": "5000"}, 403, "TooManyResults"),
        ({"options": "fancy"}, 400, "InvalidRequest"),
    ],
)
def test_bad_queries(client: TestClient, params: dict[str, str], status: int, kind: str) -> None:
    response = client.get(f"{BASE}/entities", params={"type": "T", **params})
    assert response.status_code == status, response.text
    assert response.json()["type"] == ERR + kind


@pytest.mark.parametrize(
    ("body", "headers", "status", "kind"),
    [
        (b"{bad json", {"content-type": "application/json"}, 400, "InvalidRequest"),
        (b"", {"content-type": "application/json"}, 400, "InvalidRequest"),
        (
            b'{"id": "urn:x:1", "type": "T"}',
            {"content-type": "text/plain"},
            415,
            "UnsupportedMediaType",
        ),
        (
            b'{"id": "no uri", "type": "T"}',
            {"content-type": "application/json"},
            400,
            "BadRequestData",
        ),
        (b'{"id": "urn:x:1"}', {"content-type": "application/json"}, 400, "BadRequestData"),
        (
            b'{"id": "urn:x:1", "type": "T", "a": {"type": "Property"}}',
            {"content-type": "application/json"},
            400,
            "BadRequestData",
        ),
        (
            b'{"id": "urn:x:1", "type": "T", "r": {"type": "Relationship", "object": "x y"}}',
            {"content-type": "application/json"},
            400,
            "BadRequestData",
        ),
        (
            b'{"id": "urn:x:1", "type": "T", '
            b'"l": {"type": "GeoProperty", "value": {"type": "Point"}}}',
            {"content-type": "application/json"},
            400,
            "BadRequestData",
        ),
        (
            b'{"id": "urn:x:1", "type": "T", "@context": {}}',
            {"content-type": "application/json"},
            400,
            "BadRequestData",
        ),
        (
            b'{"id": "urn:x:1", "type": "T"}',
            {"content-type": "application/ld+json"},
            400,
            "BadRequestData",
        ),
        (
            b'{"id": "urn:x:1", "type": "T", '
            b'"a": {"type": "Property", "value": 1, "observedAt": "yesterday"}}',
            {"content-type": "application/json"},
            400,
            "BadRequestData",
        ),
        (
            b'{"id": "urn:x:1", "type": "T", "bad name": 1}',
            {"content-type": "application/json"},
            400,
            "BadRequestData",
        ),
        (
            b'{"id": "urn:x:1", "type": "T"}',
            {"content-type": "application/json", "NGSILD-Tenant": "bad tenant!"},
            400,
            "BadRequestData",
        ),
    ],
)
def test_bad_entities_are_refused_and_nothing_stored(
    client: TestClient, body: bytes, headers: dict[str, str], status: int, kind: str
) -> None:
    client.post(f"{BASE}/entities", json=sensor(1, 35))
    response = client.post(f"{BASE}/entities", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["type"] == ERR + kind
    assert [e["id"] for e in client.get(f"{BASE}/entities", params={"type": "T"}).json()] == []
    assert len(client.get(f"{BASE}/entities", params={"type": "AirQualityObserved"}).json()) == 1


def test_oversized_body_is_413(client: TestClient) -> None:
    big = {
        "id": "urn:x:1",
        "type": "T",
        "blob": {"type": "Property", "value": "x" * (11 * 1024 * 1024)},
    }
    assert client.post(f"{BASE}/entities", json=big).status_code == 413


def test_batch_operations(client: TestClient) -> None:
    batch = [sensor(n, n) for n in range(5)]
    created = client.post(f"{BASE}/entityOperations/create", json=batch)
    assert created.status_code == 201 and len(created.json()) == 5
    again = client.post(f"{BASE}/entityOperations/create", json=batch[:2] + [sensor(9, 9)])
    assert again.status_code == 207
    assert len(again.json()["errors"]) == 2 and again.json()["success"] == [sensor(9, 9)["id"]]
    up = client.post(f"{BASE}/entityOperations/upsert", json=[{**sensor(0, 100)}, sensor(10, 10)])
    assert up.status_code == 201 and up.json() == [sensor(10, 10)["id"]]  # created ones only
    assert client.get(f"{BASE}/entities/{sensor(0, 0)['id']}").json()["pm25"]["value"] == 100
    upd = client.post(
        f"{BASE}/entityOperations/update",
        json=[{"id": sensor(1, 0)["id"], "pm25": {"type": "Property", "value": 77}}],
    )
    assert upd.status_code == 204
    merged = client.post(
        f"{BASE}/entityOperations/merge",
        json=[
            {"id": sensor(2, 0)["id"], "address": {"type": "Property", "value": {"zip": "250000"}}}
        ],
    )
    assert merged.status_code == 204
    assert (
        client.get(f"{BASE}/entities/{sensor(2, 0)['id']}").json()["address"]["value"]["zip"]
        == "250000"
    )
    deleted = client.post(
        f"{BASE}/entityOperations/delete", json=[sensor(3, 0)["id"], "urn:ngsi-ld:nothing:1"]
    )
    assert deleted.status_code == 207 and deleted.json()["success"] == [sensor(3, 0)["id"]]
    found = client.post(
        f"{BASE}/entityOperations/query",
        json={"type": "Query", "entities": [{"type": "AirQualityObserved"}], "q": "pm25>50"},
    )
    assert [e["pm25"]["value"] for e in found.json()] == [100, 77]
    assert client.post(f"{BASE}/entityOperations/create", json={"not": "a list"}).status_code == 400
    assert client.post(f"{BASE}/entityOperations/explode", json=[]).status_code == 404


def test_tenants_are_separate(client: TestClient) -> None:
    client.post(f"{BASE}/entities", json=sensor(1, 1), headers={"NGSILD-Tenant": "jinan"})
    assert client.get(f"{BASE}/entities", params={"type": "AirQualityObserved"}).json() == []
    assert (
        len(
            client.get(
                f"{BASE}/entities",
                params={"type": "AirQualityObserved"},
                headers={"NGSILD-Tenant": "jinan"},
            ).json()
        )
        == 1
    )
    missing = client.get(
        f"{BASE}/entities", params={"type": "X"}, headers={"NGSILD-Tenant": "nowhere"}
    )
    assert missing.status_code == 404 and missing.json()["type"] == ERR + "NonexistentTenant"


class _ContextServer(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:  # noqa: N802
        type(self).hits += 1
        if self.path == "/slow.jsonld":
            time.sleep(3)
        body = json.dumps(
            {
                "@context": {
                    "pm25": "https://smartdatamodels.org/dataModel.Environment/pm25",
                    "AirQualityObserved": "https://smartdatamodels.org/dataModel.Environment/AirQualityObserved",
                }
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/ld+json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_user_context_by_link_is_fetched_cached_and_expands(client: TestClient) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ContextServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/ctx.jsonld"
    link = {
        "Link": f'<{url}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    }
    try:
        _ContextServer.hits = 0
        assert client.post(f"{BASE}/entities", json=sensor(1, 5), headers=link).status_code == 201
        assert client.post(f"{BASE}/entities", json=sensor(2, 6), headers=link).status_code == 201
        assert _ContextServer.hits == 1  # cached after the first use
        # without the context the names come back as full IRIs
        plain = client.get(f"{BASE}/entities/{sensor(1, 5)['id']}").json()
        assert (
            plain["type"] == "https://smartdatamodels.org/dataModel.Environment/AirQualityObserved"
        )
        assert "https://smartdatamodels.org/dataModel.Environment/pm25" in plain
        with_ctx = client.get(
            f"{BASE}/entities", params={"type": "AirQualityObserved", "q": "pm25>5"}, headers=link
        ).json()
        assert [e["pm25"]["value"] for e in with_ctx] == [6]
        ld_body = {**sensor(3, 7), "@context": [url]}
        assert (
            client.post(
                f"{BASE}/entities", json=ld_body, headers={"content-type": "application/ld+json"}
            ).status_code
            == 201
        )
        both = client.post(
            f"{BASE}/entities",
            json=ld_body,
            headers={"content-type": "application/ld+json", **link},
        )
        assert both.status_code == 400
        assert url in client.get(f"{BASE}/jsonldContexts").json()
    finally:
        server.shutdown()


def test_unreachable_context_is_ld_context_not_available(client: TestClient) -> None:
    dead = f"http://127.0.0.1:{free_port()}/gone.jsonld"
    link = {
        "Link": f'<{dead}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    }
    response = client.post(f"{BASE}/entities", json=sensor(1, 1), headers=link)
    assert response.status_code == 504 and response.json()["type"] == ERR + "LdContextNotAvailable"
    assert client.get(f"{BASE}/entities", params={"type": "AirQualityObserved"}).json() == []


def test_core_context_is_never_fetched(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the core context must not be fetched")

    monkeypatch.setattr(httpx.Client, "get", no_network)
    core = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.6.jsonld"
    body = {**sensor(1, 1), "@context": core}
    assert (
        client.post(
            f"{BASE}/entities", json=body, headers={"content-type": "application/ld+json"}
        ).status_code
        == 201
    )
    # a name under the core context's address that is no core context is not one of ours
    assert core_url_for("https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-x.jsonld") is None
    assert core_url_for("https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld")
    assert core_url_for("https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.7.jsonld")


def test_hosted_contexts(client: TestClient) -> None:
    created = client.post(
        f"{BASE}/jsonldContexts", json={"@context": {"speed": "https://example.org/speed"}}
    )
    assert created.status_code == 201
    local = created.headers["location"].rsplit("/", 1)[-1]
    assert (
        client.get(f"{BASE}/jsonldContexts/{local}").json()["@context"]["speed"]
        == "https://example.org/speed"
    )
    assert client.delete(f"{BASE}/jsonldContexts/{local}").status_code == 204
    assert client.get(f"{BASE}/jsonldContexts/{local}").status_code == 404
    assert client.post(f"{BASE}/jsonldContexts", json={"no": "context"}).status_code == 400


def test_trailing_slashes_are_accepted(client: TestClient) -> None:
    assert client.post(f"{BASE}/entities/", json=sensor(1, 1)).status_code == 201
    assert client.get(f"{BASE}/entities/", params={"type": "AirQualityObserved"}).status_code == 200


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_q_parser_only_raises_bad_input(text: str) -> None:
    try:
        query.parse(text)
    except BadInput:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-50, 50), min_size=1, max_size=12),
    st.integers(-50, 50),
    st.integers(-50, 50),
)
def test_q_ranges_agree_with_python(values: list[int], low: int, high: int) -> None:
    entities = [{"https://x/v": {"type": "Property", "value": v}} for v in values]
    expr = query.expand(query.parse(f"v=={low}..{high}"), lambda n: f"https://x/{n}")
    got = [query.matches(expr, e) for e in entities]
    assert got == [low <= v <= high for v in values]
    expr = query.expand(query.parse(f"v>{low};v<={high}|v=={high}"), lambda n: f"https://x/{n}")
    assert [query.matches(expr, e) for e in entities] == [
        (low < v <= high) or v == high for v in values
    ]


def test_ngsildclient_drives_the_hub(tmp_path: Path) -> None:
    python = ROOT / ".venv-clients" / "bin" / "python"
    if not python.exists():
        pytest.fail("the ngsildclient venv is missing: run `make test` (it builds .venv-clients)")
    port = free_port()
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "citybrain",
            "serve",
            "--level",
            "province",
            "--code",
            "370000",
            "--data",
            str(tmp_path / "node"),
            "--port",
            str(port),
        ],
        stderr=subprocess.DEVNULL,
        # the client sends no token
        env={**os.environ, "CITYBRAIN_ANONYMOUS_ROLE": "bureau_admin"},
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        run = subprocess.run(
            [
                str(python),
                str(Path(__file__).parent / "clients" / "ngsildclient_e2e.py"),
                "127.0.0.1",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert "ngsildclient ok" in run.stdout
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=30)


def test_shipped_core_contexts_are_the_etsi_documents() -> None:
    folder = ROOT / "src" / "citybrain" / "hub" / "ngsild" / "contexts"
    index = json.loads((folder / "index.json").read_text())
    import hashlib

    for doc in index["documents"]:
        data = (folder / doc["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == doc["sha256"], doc["file"]
        assert "@context" in json.loads(data)


def test_accept_length_identity_and_purge(client: TestClient) -> None:
    for n in range(3):
        assert client.post(f"{BASE}/entities", json=sensor(n, 10.0 * n)).status_code == 201
    refused = client.get(f"{BASE}/entities?type=AirQualityObserved", headers={"Accept": "text/csv"})
    assert refused.status_code == 406
    assert refused.json()["type"].endswith("/NotAcceptable")
    ok = client.get(
        f"{BASE}/entities?type=AirQualityObserved", headers={"Accept": "application/*;q=0.8"}
    )
    assert ok.status_code == 200

    def chunks() -> Iterator[bytes]:
        yield json.dumps(sensor(9, 1.0)).encode()

    unsized = client.post(
        f"{BASE}/entities", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert unsized.status_code == 411 and unsized.content == b""  # clause 6.3.4: no body
    identity = client.get(f"{BASE}/info/sourceIdentity").json()
    assert identity["type"] == "ContextSourceIdentity"
    assert identity["contextSourceUptime"].startswith("PT")
    assert identity["contextSourceTimeAt"].endswith("Z")
    other = client.get(f"{BASE}/info/sourceIdentity", headers={"NGSILD-Tenant": "t1"}).json()
    assert other["contextSourceAlias"] != identity["contextSourceAlias"]
    missing = client.get(f"{BASE}/entities?type=X", headers={"NGSILD-Tenant": "nobody"})
    assert missing.status_code == 404 and missing.headers["NGSILD-Tenant"] == "nobody"
    geo = client.get(
        f"{BASE}/entities?type=AirQualityObserved", headers={"Accept": "application/geo+json"}
    )
    assert geo.headers["content-type"].startswith("application/geo+json")
    collection = geo.json()
    assert collection["type"] == "FeatureCollection" and "@context" in collection
    assert collection["features"][0]["geometry"]["type"] == "Point"
    plain = client.get(
        f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:000",
        headers={"Accept": "application/geo+json", "Prefer": "body=json"},
    )
    assert plain.json()["type"] == "Feature" and "@context" not in plain.json()
    assert "Link" in plain.headers
    eid = "urn:ngsi-ld:AirQualityObserved:000"
    replaced = client.put(
        f"{BASE}/entities/{eid}/attrs/name", json={"type": "Property", "value": "renamed"}
    )
    assert replaced.status_code == 204
    assert client.get(f"{BASE}/entities/{eid}").json()["name"]["value"] == "renamed"
    absent = client.put(f"{BASE}/entities/{eid}/attrs/nothing", json={"value": 1})
    assert absent.status_code == 404
    offset = client.post(
        f"{BASE}/entities",
        json={**sensor(50, 1.0), "pm25": {"value": 1, "observedAt": "2026-11-24T10:00:00+08:00"}},
    )
    assert offset.status_code == 400 and "ending in Z" in offset.json()["title"]
    for bad_query in (
        {"type": "Query", "entities": [{"type": "Vehicle"}], "q": 42},
        {"type": "Query", "entities": [{"type": 7}]},
        {"type": "Query", "entities": "Vehicle"},
        {"type": "Query", "attrs": "pm25"},
        {"type": "Query", "attrs": [1]},
        {"type": "Query", "geoQ": {"georel": 5, "geometry": "Point", "coordinates": [1, 2]}},
        {"type": "Query", "geoQ": "near"},
    ):
        answer = client.post(f"{BASE}/entityOperations/query", json=bad_query)
        assert answer.status_code == 400, bad_query
    for sneaky in ("urn:ngsi-ld:Vehicle:A\u202eB", "urn:ngsi-ld:Vehicle:A\u200bB", "urn:x:a b"):
        assert client.post(f"{BASE}/entities", json={"id": sneaky, "type": "V"}).status_code == 400
    chinese = client.post(f"{BASE}/entities", json={"id": "urn:ngsi-ld:站点:济南", "type": "V"})
    assert chinese.status_code == 201 and "%E7%AB%99" in chinese.headers["Location"]
    assert client.delete(f"{BASE}/entities").status_code == 400
    odd = client.get(f"{BASE}/entities?type=AirQualityObserved&invalidParams=x")
    assert odd.status_code == 400 and odd.json()["type"].endswith("/InvalidRequest")
    assert client.delete(f"{BASE}/entities?type=AirQualityObserved&q=pm25>5").status_code == 204
    left = client.get(f"{BASE}/entities?type=AirQualityObserved").json()
    assert [e["pm25"]["value"] for e in left] == [0.0]


def test_ngsild_null_deletes_in_updates_and_is_refused_elsewhere(client: TestClient) -> None:
    """Clause 4.5.0 / 5.5.8: urn:ngsi-ld:null deletes an instance in an update, per datasetId."""
    eid = "urn:ngsi-ld:Building:null-1"
    entity = {
        "id": eid,
        "type": "Building",
        "name": [
            {"type": "Property", "value": "Eiffel Tower", "datasetId": "urn:ngsi-ld:Dataset:01"},
            {"type": "Property", "value": "Iron lady", "datasetId": "urn:ngsi-ld:Dataset:02"},
        ],
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2, 48]}},
        "street": {"type": "LanguageProperty", "languageMap": {"fr": "Rue", "en": "Street"}},
        "locatedAt": {"type": "Relationship", "object": "urn:ngsi-ld:City:Paris"},
        "address": {"type": "Property", "value": {"street": "Champ", "country": "FR"}},
    }
    assert client.post(f"{BASE}/entities", json=entity).status_code == 201
    one = {"type": "Property", "value": "urn:ngsi-ld:null", "datasetId": "urn:ngsi-ld:Dataset:01"}
    r = client.patch(f"{BASE}/entities/{eid}/attrs", json={"name": one})
    assert r.status_code == 204, r.text
    got = client.get(f"{BASE}/entities/{eid}").json()
    kept = {"type": "Property", "value": "Iron lady", "datasetId": "urn:ngsi-ld:Dataset:02"}
    assert got["name"] == kept
    geo = {"type": "GeoProperty", "value": "urn:ngsi-ld:null"}
    assert client.patch(f"{BASE}/entities/{eid}/attrs/location", json=geo).status_code == 204
    lang = {"street": {"type": "LanguageProperty", "languageMap": {"@none": "urn:ngsi-ld:null"}}}
    merge = {**lang, "address": {"type": "Property", "value": {"country": "urn:ngsi-ld:null"}}}
    assert client.patch(f"{BASE}/entities/{eid}", json=merge).status_code == 204
    rel = {"id": eid, "locatedAt": {"type": "Relationship", "object": "urn:ngsi-ld:null"}}
    assert client.post(f"{BASE}/entityOperations/update", json=[rel]).status_code == 204
    got = client.get(f"{BASE}/entities/{eid}").json()
    assert set(got) == {"id", "type", "name", "address"}
    assert got["address"]["value"] == {"street": "Champ"}
    assert "urn:ngsi-ld:null" not in json.dumps(got)
    # a nested Null outside a merge, a Null datasetId, or any Null on create is BadRequestData
    nested = {"value": {"country": "urn:ngsi-ld:null"}}
    r = client.patch(f"{BASE}/entities/{eid}/attrs/address", json=nested)
    assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData"
    r = client.patch(f"{BASE}/entities/{eid}/attrs/name", json={"datasetId": "urn:ngsi-ld:null"})
    assert r.status_code == 400
    for attr in (
        {"type": "Property", "value": "urn:ngsi-ld:null"},
        {"type": "Relationship", "object": "urn:ngsi-ld:null"},
        {"type": "Property", "value": 1, "sub": {"type": "Property", "value": "urn:ngsi-ld:null"}},
        {"type": "Property", "value": {"a": {"b": "urn:ngsi-ld:null"}}},
        "urn:ngsi-ld:null",
    ):
        new = {"id": "urn:ngsi-ld:Building:null-2", "type": "Building", "a": attr}
        r = client.post(f"{BASE}/entities", json=new)
        assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData", attr
    # a temporal instance may record a deletion
    temporal = {
        "id": "urn:ngsi-ld:Vehicle:null-3",
        "type": "Vehicle",
        "speed": [
            {"type": "Property", "value": 1, "observedAt": "2026-01-01T00:00:00Z"},
            {"type": "Property", "value": "urn:ngsi-ld:null", "observedAt": "2026-01-02T00:00:00Z"},
        ],
    }
    assert client.post(f"{BASE}/temporal/entities", json=temporal).status_code == 201


def test_batch_with_a_null_item_is_refused_whole(client: TestClient) -> None:
    """Clause 5.6.7.4: a null member fails the whole batch; the valid sibling is not created."""
    item = {"id": "urn:ngsi-ld:Vehicle:batch-null", "type": "Vehicle"}
    for op in ("create", "upsert", "merge"):
        r = client.post(f"{BASE}/entityOperations/{op}", json=[item, None])
        assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData", op
    assert client.get(f"{BASE}/entities/{item['id']}").status_code == 404


def test_pick_and_omit_project_entity_members(client: TestClient) -> None:
    """Clause 4.21: pick/omit select entity members (id and type too); bad use is a 400."""
    for e in (sensor(1, 35), {"id": "urn:ngsi-ld:Device:9", "type": "Device"}):
        assert client.post(f"{BASE}/entities", json=e).status_code == 201
    url = f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:001"
    assert client.get(url, params={"pick": "name"}).json() == {
        "name": {"type": "Property", "value": "station 1"}
    }
    assert set(client.get(url, params={"pick": "id|name"}).json()) == {"id", "name"}
    omitted = client.get(url, params={"omit": "type,name,pm25"}).json()
    assert set(omitted) == {"id", "address", "location", "refDevice"}
    # an entity left with nothing is not found; in a query it is left out
    r = client.get(url, params={"pick": "unknown"})
    assert r.status_code == 404 and r.json()["type"] == ERR + "ResourceNotFound"
    q = client.get(f"{BASE}/entities", params={"type": "AirQualityObserved,Device", "pick": "pm25"})
    assert [set(e) for e in q.json()] == [{"pm25"}]
    body = {"type": "Query", "entities": [{"type": "AirQualityObserved"}], "omit": ["pm25"]}
    batch = client.post(f"{BASE}/entityOperations/query", json=body).json()
    assert "pm25" not in batch[0] and "name" in batch[0]
    temporal = client.get(
        f"{BASE}/temporal/entities/urn:ngsi-ld:AirQualityObserved:001",
        params={"pick": "id,pm25", "timerel": "before", "timeAt": "2030-01-01T00:00:00Z"},
    ).json()
    assert set(temporal) == {"id", "pm25"}
    r = client.get(
        f"{BASE}/temporal/entities/urn:ngsi-ld:AirQualityObserved:001",
        params={"pick": "unknown", "timerel": "before", "timeAt": "2030-01-01T00:00:00Z"},
    )
    assert r.status_code == 404
    for params in (
        {"pick": "name", "omit": "name"},
        {"pick": "name", "attrs": "pm25"},
        {"omit": "name", "attrs": "pm25"},
        {"pick": "id;name"},
        {"pick": "id,refDevice{name"},
        {"pick": "id,refDevice{{name}"},
        {"pick": "id,,name"},
        {"pick": "id,refDevice{,name}"},
        {"pick": "id,refDevice{}"},
        {"pick": "refDevice{name}"},  # linked entities only with join
    ):
        temporal_url = f"{BASE}/temporal/entities/urn:ngsi-ld:AirQualityObserved:001"
        for path in (url, f"{BASE}/entities?type=Device", temporal_url):
            r = client.get(path, params=params)
            assert r.status_code == 400, (path, params)
            assert r.json()["type"] == ERR + "BadRequestData"
    for bad in ({"entities": []}, {"attrs": []}, {"joinLevel": 0}, {"temporalQ": {}}):
        query_body = {"type": "Query", "entities": [{"type": "Device"}], **bad}
        r = client.post(f"{BASE}/entityOperations/query", json=query_body)
        assert r.status_code == 400, bad


def test_temporal_representation_operations(client: TestClient) -> None:
    """Clauses 5.6.12-5.6.16: add, delete attribute, modify and delete instance, delete all."""
    eid = "urn:ngsi-ld:Vehicle:temporal-ops"
    url = f"{BASE}/temporal/entities/{eid}"
    when = {"timerel": "before", "timeAt": "2030-01-01T00:00:00Z"}
    speed = [
        {"type": "Property", "value": v, "observedAt": f"2020-08-01T12:0{i}:00Z"}
        for i, v in enumerate((10, 20))
    ]
    body = {"id": eid, "type": "Vehicle", "speed": speed}
    assert client.post(f"{BASE}/temporal/entities", json=body).status_code == 201
    got = client.get(url, params=when).json()["speed"]
    first, second = (i["instanceId"] for i in got)
    assert first.startswith("urn:") and first != second
    fuel = {"fuel": [{"type": "Property", "value": 5, "observedAt": "2020-08-01T12:00:00Z"}]}
    assert client.post(f"{url}/attrs", json=fuel).status_code == 204
    modify = {"type": "Property", "value": 11, "observedAt": "2020-08-01T12:00:00Z"}
    assert client.patch(f"{url}/attrs/speed/{first}", json=modify).status_code == 204
    assert client.delete(f"{url}/attrs/speed/{second}").status_code == 204
    got = client.get(url, params=when).json()
    assert [(i["value"], i["instanceId"]) for i in got["speed"]] == [(11, first)]
    assert client.delete(f"{url}/attrs/fuel").status_code == 204
    assert "fuel" not in client.get(url, params=when).json()
    for bad in ("invalidId", "urn:ngsi-ld:01234567890123456789"):
        r = client.delete(f"{url}/attrs/speed/{bad}")
        assert r.status_code == (400 if bad == "invalidId" else 404)
    assert client.delete(f"{url}/attrs/speed2").status_code == 404
    assert client.post(f"{BASE}/temporal/entities/urn:x:none/attrs", json=fuel).status_code == 404
    assert client.delete(f"{BASE}/temporal/entities/invalidId").status_code == 400
    assert client.delete(url).status_code == 204
    assert client.delete(url).status_code == 404
    # deleted with its history: the same id can be created again
    assert client.post(f"{BASE}/temporal/entities", json=body).status_code == 201


def test_self_crossing_polygon_is_accepted_and_queried(client: TestClient) -> None:
    """RFC 7946 asks rings to be closed, not simple: a ring crossing itself is still GeoJSON."""
    ring = [[13.2866, 52.5649], [13.2880, 52.5649], [13.2797, 52.4989], [13.4775, 52.4713]]
    ring += [[13.5049, 52.5373], [13.2866, 52.5649]]
    area = {
        "id": "urn:ngsi-ld:Building:crossing",
        "type": "Building",
        "location": {"type": "GeoProperty", "value": {"type": "Polygon", "coordinates": [ring]}},
    }
    assert client.post(f"{BASE}/entities", json=area).status_code == 201
    r = client.get(
        f"{BASE}/entities",
        params={
            "type": "Building",
            "georel": "intersects",
            "geometry": "Point",
            "coordinates": "[13.45,52.50]",
        },
    )
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Building:crossing"]
    open_ring = {**area, "id": "urn:ngsi-ld:Building:open"}
    open_ring["location"] = {
        "type": "GeoProperty",
        "value": {"type": "Polygon", "coordinates": [ring[:-1]]},
    }
    r = client.post(f"{BASE}/entities", json=open_ring)
    assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData"


def test_notification_triggers_for_deletions(client: TestClient) -> None:
    """Clause 5.2.12 notificationTrigger: entityDeleted and attributeDeleted, showChanges."""
    received: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = {"uri": f"http://127.0.0.1:{server.server_address[1]}/notify"}
    try:
        for sid, triggers, extra in (
            ("urn:ngsi-ld:Subscription:gone", ["entityDeleted"], {}),
            ("urn:ngsi-ld:Subscription:attr", ["attributeDeleted"], {"showChanges": True}),
        ):
            sub = {
                "id": sid,
                "type": "Subscription",
                "entities": [{"type": "AirQualityObserved"}],
                "notificationTrigger": triggers,
                "notification": {"endpoint": endpoint, **extra},
            }
            assert client.post(f"{BASE}/subscriptions", json=sub).status_code == 201
        bad = {**sub, "id": "urn:ngsi-ld:Subscription:bad", "notificationTrigger": ["x"]}
        assert client.post(f"{BASE}/subscriptions", json=bad).status_code == 400
        url = f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:001"
        assert client.post(f"{BASE}/entities", json=sensor(1, 35)).status_code == 201
        patch = {"pm25": {"type": "Property", "value": 40}}
        assert client.patch(f"{url}/attrs", json=patch).status_code == 204
        assert client.delete(f"{url}/attrs/name").status_code == 204
        assert client.delete(url).status_code == 204
        deadline = time.monotonic() + 10
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # nothing else comes: creation and update fire neither trigger
        by_sub = {n["subscriptionId"]: n["data"] for n in received}
        assert len(received) == 2, received
        (attr_note,) = by_sub["urn:ngsi-ld:Subscription:attr"]
        assert attr_note["name"] == {
            "type": "Property",
            "value": "urn:ngsi-ld:null",
            "previousValue": "station 1",
        }
        (gone,) = by_sub["urn:ngsi-ld:Subscription:gone"]
        assert set(gone) == {"id", "type", "deletedAt"}
    finally:
        server.shutdown()
        server.server_close()
    # previousValue is written by the broker only
    echo: dict[str, Any] = {"id": "urn:ngsi-ld:Device:echo", "type": "Device"}
    echo["a"] = {"type": "Property", "value": 1, "previousValue": 0}
    assert client.post(f"{BASE}/entities", json=echo).status_code == 400


def test_type_selector_gates_reads_and_writes(client: TestClient) -> None:
    """?type on an operation addressing one entity: a type it does not have is a 404."""
    assert client.post(f"{BASE}/entities", json=sensor(1, 35)).status_code == 201
    url = f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:001"
    wrong, right = {"type": "Vehicle"}, {"type": "AirQualityObserved"}
    value = {"type": "Property", "value": 7}
    calls = (
        ("GET", url, None),
        ("PATCH", f"{url}/attrs", {"pm25": value}),
        ("POST", f"{url}/attrs", {"extra": value}),
        ("PATCH", f"{url}/attrs/pm25", value),
        ("PUT", f"{url}/attrs/pm25", value),
        ("PATCH", url, {"pm25": value}),
        ("DELETE", f"{url}/attrs/extra", None),
        ("DELETE", url, None),
    )
    for method, path, body in calls:
        r = client.request(method, path, params=wrong, json=body)
        assert r.status_code == 404 and r.json()["type"] == ERR + "ResourceNotFound", (method, path)
        assert client.get(url).json()["pm25"]["value"] == 35  # nothing was written
    for method, path, body in calls:
        r = client.request(method, path, params=right, json=body)
        assert r.status_code in (200, 204), (method, path, r.text)


def test_bad_options_and_format_are_invalid_requests(client: TestClient) -> None:
    """An unknown options or format value makes the request invalid (InvalidRequest)."""
    assert client.post(f"{BASE}/entities", json=sensor(1, 35)).status_code == 201
    url = f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:001"
    for path in (url, f"{BASE}/entities", f"{BASE}/temporal/entities/{url.rsplit('/', 1)[1]}"):
        for params in ({"format": "invalid"}, {"options": "keyValues,invalid"}):
            r = client.get(path, params={"type": "AirQualityObserved", **params})
            assert r.status_code == 400 and r.json()["type"] == ERR + "InvalidRequest", path


def test_lang_turns_language_properties_into_properties(client: TestClient) -> None:
    """Clause 4.15: ?lang picks one language of a LanguageProperty, reported in lang."""
    street = {"type": "LanguageProperty", "languageMap": {"fr": "Grand Place", "nl": "Grote Markt"}}
    regional = {"type": "LanguageProperty", "languageMap": {"en-US": "Main Square"}}
    for n, attr in ((1, street), (2, regional)):
        body = {"id": f"urn:ngsi-ld:Building:lang{n}", "type": "Building", "street": attr}
        assert client.post(f"{BASE}/entities", json=body).status_code == 201
    url = f"{BASE}/entities/urn:ngsi-ld:Building:lang"
    for n, lang, tag, value in (
        (1, "fr", "fr", "Grand Place"),
        (1, "fr-CH,fr;q=0.9,en;q=0.8,*;q=0.5", "fr", "Grand Place"),
        (1, "fr;q=0.2,nl;q=0.9", "nl", "Grote Markt"),
        (1, "FR", "fr", "Grand Place"),
        (1, "nl-BE", "nl", "Grote Markt"),
        (1, "*", "fr", "Grand Place"),
        (2, "en", "en-US", "Main Square"),
    ):
        got = client.get(f"{url}{n}", params={"lang": lang}).json()["street"]
        assert got == {"type": "Property", "value": value, "lang": tag}, lang
    fallback = client.get(f"{url}1", params={"lang": "pt"}).json()["street"]
    assert fallback["type"] == "Property" and fallback["lang"] in ("fr", "nl")
    kv = client.get(f"{url}1", params={"lang": "nl", "options": "keyValues"}).json()
    assert kv["street"] == "Grote Markt"
    queried = client.get(f"{BASE}/entities", params={"type": "Building", "lang": "nl"}).json()
    assert queried[0]["street"]["value"] == "Grote Markt"


def test_accept_is_negotiated_by_weight_then_by_the_listed_order(client: TestClient) -> None:
    """RFC 9110 weights (q=0 excludes, the most specific range decides), then 6.3.4 order."""
    assert client.post(f"{BASE}/entities", json=sensor(1, 35)).status_code == 201
    url = f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:001"
    for accept, media in (
        ("application/ld+json, application/json", "application/json"),
        ("application/geo+json, application/json", "application/json"),
        ("application/json;q=0.1, application/ld+json;q=0.9", "application/ld+json"),
        ("application/json;q=0, application/ld+json", "application/ld+json"),
        ("application/json;q=0, */*", "application/ld+json"),
        ("*/*;q=0.9, application/ld+json;q=0.8", "application/json"),
        ("application/ld+json", "application/ld+json"),
        ("application/geo+json", "application/geo+json"),
        ("*/*", "application/json"),
        ("application/ld+json;q=notanumber", "application/ld+json"),
    ):
        r = client.get(url, headers={"Accept": accept})
        assert r.headers["content-type"].startswith(media), (accept, r.headers["content-type"])
    # where GeoJSON is not offered it does not compete, whatever its weight
    r = client.get(
        f"{BASE}/types", headers={"Accept": "application/geo+json;q=0.9, application/ld+json;q=0.1"}
    )
    assert r.headers["content-type"].startswith("application/ld+json")


def test_a_fetched_document_that_is_no_context_is_bad_request_data(client: TestClient) -> None:
    """A remote @context that answers with non-JSON or JSON without @context is a 400."""
    bodies = {"/plain.jsonld": b"not json", "/empty.jsonld": b'{"a": 1}'}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(bodies[self.path])

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for path in bodies:
            ctx = f"http://127.0.0.1:{server.server_address[1]}{path}"
            body = {**sensor(1, 35), "@context": ctx}
            r = client.post(
                f"{BASE}/entities", json=body, headers={"Content-Type": "application/ld+json"}
            )
            assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData", path
    finally:
        server.shutdown()
        server.server_close()


def test_temporal_query_by_post(client: TestClient) -> None:
    """Clause 5.7.5: POST /temporal/entityOperations/query with a temporalQ member."""
    speed = [
        {"type": "Property", "value": v, "observedAt": f"2020-08-01T12:0{i}:00Z"}
        for i, v in ((3, 10), (5, 20), (7, 30))
    ]
    body = {"id": "urn:ngsi-ld:Vehicle:post-q", "type": "Vehicle", "speed": speed}
    assert client.post(f"{BASE}/temporal/entities", json=body).status_code == 201
    url = f"{BASE}/temporal/entityOperations/query"
    window = {"timerel": "after", "timeAt": "2020-08-01T12:00:00Z"}

    def query(temporal_q: dict[str, Any]) -> httpx.Response:
        q = {"type": "Query", "entities": [{"type": "Vehicle"}], "temporalQ": temporal_q}
        return client.post(url, json=q)

    r = query({**window, "lastN": 1})
    assert r.status_code == 200, r.text
    assert [i["value"] for i in r.json()[0]["speed"]] == [30]
    for methods in (["avg"], "avg,max"):
        r = query({**window, "aggrMethods": methods, "aggrPeriodDuration": "P1D"})
        assert r.status_code == 200 and "avg" in r.json()[0]["speed"], r.text
        assert "instanceId" not in r.text
    for bad in (
        {**window, "lastN": 0},
        {**window, "lastN": 1.5},
        {"timerel": "during", "timeAt": "2020-08-01T12:00:00Z"},
        {"timerel": "between", "timeAt": "2020-08-01T12:00:00Z"},
        {**window, "timeproperty": "expiresAt"},
        {**window, "aggrMethods": ["avg"], "aggrPeriodDuration": "1 day"},
    ):
        r = query(bad)
        assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData", bad


def test_dataset_id_selects_attribute_instances(client: TestClient) -> None:
    """?datasetId keeps the instances of the datasetIds named (@none: the default instance)."""
    names = [
        {"type": "Property", "value": "Eiffel Tower"},
        {"type": "Property", "value": "Tour Eiffel", "datasetId": "urn:ngsi-ld:Dataset:fr"},
        {"type": "Property", "value": "Eiffelturm", "datasetId": "urn:ngsi-ld:Dataset:de"},
    ]
    body = {"id": "urn:ngsi-ld:Building:ds", "type": "Building", "name": names}
    assert client.post(f"{BASE}/entities", json=body).status_code == 201
    url = f"{BASE}/entities/urn:ngsi-ld:Building:ds"
    assert (
        client.get(url, params={"datasetId": "urn:ngsi-ld:Dataset:fr"}).json()["name"] == names[1]
    )
    assert client.get(url, params={"datasetId": "@none"}).json()["name"] == names[0]
    both = client.get(url, params={"datasetId": "@none,urn:ngsi-ld:Dataset:de"}).json()
    assert both["name"] == [names[0], names[2]]
    none = client.get(url, params={"datasetId": "urn:ngsi-ld:Dataset:es"}).json()
    assert none == {"id": "urn:ngsi-ld:Building:ds", "type": "Building"}
    queried = client.get(
        f"{BASE}/entities", params={"type": "Building", "datasetId": "urn:ngsi-ld:Dataset:de"}
    ).json()
    assert queried[0]["name"] == names[2]


def test_attribute_members_must_fit_the_attribute_type(client: TestClient) -> None:
    """Clause 4.5: each attribute type carries its own members; core terms name no attribute."""
    n = 0
    for attr in (
        {"type": "Property", "value": 1, "object": "urn:ngsi-ld:Road:1"},
        {"type": "Property", "languageMap": {"en": "x"}},
        {"type": "Property", "value": 1, "valueList": [1]},
        {"type": "Relationship", "object": "urn:ngsi-ld:Road:1", "unitCode": "MTR"},
        {"type": "Relationship", "object": "urn:ngsi-ld:Road:1", "value": 1},
        {"type": "JsonProperty", "json": {"a": 1}, "unitCode": "MTR"},
        {"type": "JsonProperty", "json": 5},
        {"type": "ListProperty", "valueList": [1], "value": 1},
        {"type": "ListRelationship", "objectList": ["not a uri"]},
    ):
        n += 1
        body = {"id": f"urn:ngsi-ld:Road:m{n}", "type": "Road", "a": attr}
        r = client.post(f"{BASE}/entities", json=body)
        assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData", attr
    for core in ("datasetId", "observedAt", "instanceId"):
        body = {
            "id": "urn:ngsi-ld:Road:core",
            "type": "Road",
            core: {"type": "Property", "value": 1},
        }
        assert client.post(f"{BASE}/entities", json=body).status_code == 400, core
    roads = {
        "type": "ListRelationship",
        "objectList": ["urn:ngsi-ld:Road:1", {"object": "urn:x:2"}],
    }
    body = {"id": "urn:ngsi-ld:Road:list", "type": "Road", "next": roads}
    assert client.post(f"{BASE}/entities", json=body).status_code == 201
    got = client.get(f"{BASE}/entities/urn:ngsi-ld:Road:list").json()["next"]
    assert got["objectList"] == [{"object": "urn:ngsi-ld:Road:1"}, {"object": "urn:x:2"}]


def test_entity_ids_with_invisible_characters_are_refused(client: TestClient) -> None:
    """Variation selectors, noncharacters and blank-looking letters make look-alike ids."""
    for ch in ("\ufe0f", "\U000e0100", "\ufdd0", "\U0001fffe", "\u115f", "\u3164", "\u2800"):
        body = {"id": f"urn:ngsi-ld:Road:a{ch}b", "type": "Road"}
        r = client.post(f"{BASE}/entities", json=body)
        assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData", repr(ch)


def test_purge_by_query_with_keep_and_drop(client: TestClient) -> None:
    """Clause 5.6.21: purge by q or local=true; drop or keep only some attributes."""
    for n in (1, 2, 3):
        assert client.post(f"{BASE}/entities", json=sensor(n, 10 * n)).status_code == 201
    url = f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:00"
    for params in ({"id": sensor(1, 0)["id"]}, {"attrs": "createdAt"}, {"q": "modifiedAt>1"}):
        assert client.delete(f"{BASE}/entities", params=params).status_code == 400, params
    r = client.delete(
        f"{BASE}/entities", params={"type": "AirQualityObserved", "keep": "a", "drop": "b"}
    )
    assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData"
    assert (
        client.delete(f"{BASE}/entities", params={"q": "pm25==10", "drop": "name"}).status_code
        == 204
    )
    assert "name" not in client.get(f"{url}1").json() and "pm25" in client.get(f"{url}1").json()
    r = client.delete(f"{BASE}/entities", params={"q": "pm25==20", "keep": "pm25"})
    assert r.status_code == 204
    assert set(client.get(f"{url}2").json()) == {"id", "type", "pm25"}
    assert client.delete(f"{BASE}/entities", params={"q": "pm25==30"}).status_code == 204
    assert client.get(f"{url}3").status_code == 404
    assert client.delete(f"{BASE}/entities", params={"local": "true"}).status_code == 204
    assert client.get(f"{url}1").status_code == 404
