"""The q language's rarer parts (clause 4.9): languages, negated existence, terms, Relationships."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from citybrain.app import create_app
from citybrain.core.config import load_settings

BASE = "/ngsi-ld/v1"
A, B = "urn:ngsi-ld:Shop:a", "urn:ngsi-ld:Shop:b"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings(data_dir=tmp_path, anonymous_role="bureau_admin")
    with TestClient(create_app(settings)) as c:
        shops = [
            {
                "id": A,
                "type": "Shop",
                "color": {"type": "LanguageProperty", "languageMap": {"en": "red", "fr": "rouge"}},
                "category": {"type": "VocabProperty", "vocab": "commercial"},
                "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:z"},
            },
            {"id": B, "type": "Shop", "label": {"type": "Property", "value": "commercial"}},
        ]
        for shop in shops:
            assert c.post(f"{BASE}/entities", json=shop).status_code == 201
        yield c


def _matched(client: TestClient, q: str, **params: str) -> list[str]:
    r = client.get(f"{BASE}/entities", params={"type": "Shop", "q": q, **params})
    assert r.status_code == 200, (q, r.text)
    return [e["id"] for e in r.json()]


def test_language_keys_address_one_language_or_any(client: TestClient) -> None:
    assert _matched(client, 'color[en]=="red"') == [A]
    assert _matched(client, 'color[en]=="rouge"') == []
    assert _matched(client, 'color[*]=="rouge"') == [A]
    assert _matched(client, 'color[*]!="red"') == []
    assert _matched(client, "color[de]") == []


def test_negated_existence(client: TestClient) -> None:
    assert _matched(client, "!color") == [B]
    assert _matched(client, "!color;label") == [B]
    assert _matched(client, "!nothing") == [A, B]


def test_bare_terms_compare_as_text_or_expand_with_expand_values(client: TestClient) -> None:
    assert _matched(client, "label==commercial") == [B]
    # a vocab is stored expanded: the bare term matches only once expanded as well
    assert _matched(client, "category==commercial") == []
    assert _matched(client, "category==commercial", expandValues="category") == [A]


def test_an_ordering_operator_never_matches_a_relationship(client: TestClient) -> None:
    assert _matched(client, 'owner>"urn:a"') == []
    assert _matched(client, 'owner=="urn:ngsi-ld:Person:z"') == [A]


@pytest.mark.parametrize("q", ["!", "!!color", "color[*", "label==comm ercial", "!color==1"])
def test_bad_q_is_bad_request_data(client: TestClient, q: str) -> None:
    r = client.get(f"{BASE}/entities", params={"type": "Shop", "q": q})
    assert r.status_code == 400, (q, r.text)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"id": f"{A},{B}"},
        {"attrs": "createdAt"},
        {"attrs": "id,type"},
        {"q": 'modifiedAt>"2020-01-01T00:00:00Z"'},
        {"idPattern": ".*"},
    ],
)
def test_a_query_that_selects_everything_is_too_wide(
    client: TestClient, params: dict[str, str]
) -> None:
    """Clause 5.7.2.4: a type, a non-system attribute in attrs or q, a geo-query or local."""
    for path in ("/entities", "/temporal/entities"):
        r = client.get(f"{BASE}{path}", params=params)
        assert r.status_code == 400, (path, params, r.text)
        assert "too wide" in r.json()["title"]


def test_narrow_enough_queries_and_the_type_wildcard(client: TestClient) -> None:
    r = client.get(f"{BASE}/entities", params={"attrs": "label"})
    assert [e["id"] for e in r.json()] == [B]
    assert client.get(f"{BASE}/entities", params={"q": "label"}).status_code == 200
    assert client.get(f"{BASE}/entities", params={"local": "true"}).status_code == 200
    everything = client.get(f"{BASE}/entities", params={"type": "*"}).json()
    assert [e["id"] for e in everything] == [A, B]
    r = client.get(f"{BASE}/entities", params={"type": "*", "local": "false"})
    assert r.status_code == 400


def test_batch_query_selectors(client: TestClient) -> None:
    """Table 5.2.33-1: type is mandatory; id a URI or a list; id before idPattern."""

    def ids(*selectors: dict[str, object]) -> list[str]:
        body = {"type": "Query", "entities": list(selectors)}
        r = client.post(f"{BASE}/entityOperations/query", json=body)
        assert r.status_code == 200, r.text
        return [e["id"] for e in r.json()]

    assert ids({"type": "Shop", "id": [A, B]}) == [A, B]
    assert ids({"type": "Shop", "id": A, "idPattern": f"^{B}$"}) == [A]
    assert ids({"type": "Shop", "idPattern": f"^{B}$"}) == [B]
    # a pattern is found in the id, as regexec finds it; ^ and $ anchor it
    assert ids({"type": "Shop", "idPattern": "Shop:b"}) == [B]
    assert ids({"type": "Shop", "idPattern": "^Shop:b"}) == []
    for bad in ({"id": A}, {"type": "Shop", "id": "not a uri"}, {"type": "Shop", "id": [A, 5]}):
        body = {"type": "Query", "entities": [bad]}
        assert client.post(f"{BASE}/entityOperations/query", json=body).status_code == 400, bad


@pytest.mark.parametrize(
    "path",
    [
        "/types?limit=5",
        "/types/Shop?details=true",
        "/attributes?q=x",
        "/attributes/label?count=true",
    ],
)
def test_discovery_endpoints_refuse_parameters_they_do_not_define(
    client: TestClient, path: str
) -> None:
    """Clause 6.3.20: an undefined query parameter is InvalidRequest."""
    r = client.get(f"{BASE}{path}")
    assert r.status_code == 400 and r.json()["type"].endswith("InvalidRequest"), r.text
    assert client.get(f"{BASE}{path.split('?')[0]}").status_code == 200


def test_simplified_representation_per_attribute_type(client: TestClient) -> None:
    """Clause 4.5.4: single-key objects for languageMap, json and vocab; bare lists; datasets."""
    vehicle = {
        "id": "urn:ngsi-ld:Vehicle:kv",
        "type": "Vehicle",
        "speed": [
            {"type": "Property", "value": 55},
            {"type": "Property", "value": 11, "datasetId": "urn:ngsi-ld:Dataset:gps"},
        ],
        "street": {"type": "JsonProperty", "json": {"a": 1}},
        "category": {"type": "VocabProperty", "vocab": "non-commercial"},
        "depths": {"type": "ListProperty", "valueList": [1.2, 3.4]},
        "route": {"type": "ListRelationship", "objectList": ["urn:r:1", "urn:r:2"]},
    }
    assert client.post(f"{BASE}/entities", json=vehicle).status_code == 201
    kv = client.get(f"{BASE}/entities/urn:ngsi-ld:Vehicle:kv", params={"options": "keyValues"})
    body = kv.json()
    assert body["speed"] == {"dataset": {"@none": 55, "urn:ngsi-ld:Dataset:gps": 11}}
    assert body["street"] == {"json": {"a": 1}}
    assert body["category"] == {"vocab": "non-commercial"}
    assert body["depths"] == [1.2, 3.4] and body["route"] == ["urn:r:1", "urn:r:2"]


def test_geometry_property_needs_a_geojson_answer(client: TestClient) -> None:
    for path, params in ((f"/entities/{A}", {}), ("/entities", {"type": "Shop"})):
        params = {**params, "geometryProperty": "location"}
        r = client.get(f"{BASE}{path}", params=params)
        assert r.status_code == 400, path
        geo = client.get(f"{BASE}{path}", params=params, headers={"Accept": "application/geo+json"})
        assert geo.status_code == 200, (path, geo.text)


@pytest.mark.parametrize(
    "entity",
    [
        {"id": "urn:ngsi-ld:T:1", "type": "9Vehicle"},
        {"id": "urn:ngsi-ld:T:1", "type": "type"},  # the JSON-LD keyword @type
        {"id": "urn:ngsi-ld:T:1", "type": "T", "scope": "/a//b"},
        {"id": "urn:ngsi-ld:T:1", "type": "T", "scope": "/a/"},
        {"id": "urn:ngsi-ld:T:1", "type": "T", "location": {"type": "Property", "value": 7}},
        *(
            {"id": "urn:ngsi-ld:T:1", "type": "T", "p": {"type": "LanguageProperty", **lang}}
            for lang in (
                {"languageMap": {"en": 5}},
                {"languageMap": {"en": ["a", 5]}},
                {"languageMap": {"": "x"}},
                {"languageMap": {"en": "x"}, "valueType": "xsd:string"},
            )
        ),
    ],
)
def test_entities_the_grammar_refuses(client: TestClient, entity: dict[str, object]) -> None:
    """Clauses 4.6.2 (names), 4.18 (scopes), 4.7 (location), 4.5.18 (language maps)."""
    r = client.post(f"{BASE}/entities", json=entity)
    assert r.status_code == 400 and r.json()["type"].endswith("BadRequestData"), r.text


def test_what_a_create_or_a_batch_request_must_be(client: TestClient) -> None:
    r = client.post(f"{BASE}/entities", json=[])
    assert r.status_code == 400 and r.json()["type"].endswith("InvalidRequest")
    r = client.post(
        f"{BASE}/entityOperations/create",
        content=b'[{"id": "urn:ngsi-ld:T:2", "type": "T"}]',
        headers={
            "Content-Type": "application/ld+json",
            "Link": '<http://x/c.jsonld>; rel="http://www.w3.org/ns/json-ld#context"',
        },
    )
    assert r.status_code == 400, r.text
    ok = {"id": "urn:ngsi-ld:T:3", "type": "Tëst_1", "scope": ["/", "/a/b"]}
    assert client.post(f"{BASE}/entities", json=ok).status_code == 201


def test_pages_link_to_the_previous_and_the_next_page(client: TestClient) -> None:
    """Clause 5.5.9: Link headers rel="prev" and rel="next" with the same query."""

    def links(**params: str) -> list[str]:
        r = client.get(f"{BASE}/entities", params={"type": "Shop", "count": "true", **params})
        assert r.status_code == 200
        return [p.strip() for p in r.headers["link"].split(", ") if "json-ld#context" not in p]

    path = "/ngsi-ld/v1/entities?count=true"
    assert links(limit="1") == [
        f'<{path}&limit=1&offset=1&type=Shop>; rel="next"; type="application/json"'
    ]
    assert links(limit="1", offset="1") == [
        f'<{path}&limit=1&offset=0&type=Shop>; rel="prev"; type="application/json"'
    ]
    assert links(limit="2") == []
    assert links(limit="0") == []


@pytest.mark.parametrize(
    "prefer", ["ngsi-ld=1.5", "NGSI-LD=1.5", 'ngsi-ld="1.5"', "respond-async, ngsi-ld=1.5;q=1"]
)
def test_a_preferred_earlier_version_reshapes_the_entity(client: TestClient, prefer: str) -> None:
    """Clause 4.3.6.8: Preference-Applied, and 203 with 1.8 types as Properties."""
    r = client.get(f"{BASE}/entities/{A}", headers={"Prefer": prefer})
    assert r.status_code == 203 and r.headers["preference-applied"] == "ngsi-ld=1.5"
    assert r.json()["category"] == {"type": "Property", "value": "commercial"}
    native = client.get(f"{BASE}/entities/{A}", headers={"Prefer": "ngsi-ld=1.9"})
    assert native.status_code == 200 and native.json()["category"]["type"] == "VocabProperty"
    plain = client.get(f"{BASE}/entities/{A}", headers={"Prefer": "respond-async"})
    assert "preference-applied" not in plain.headers


def test_scope_in_attribute_operations(client: TestClient) -> None:
    """Clauses 5.6.2-5.6.5: append replaces or joins the scope, update replaces an existing
    one, delete removes it; scope cannot be partially updated or replaced as an attribute."""

    def scope() -> object:
        return client.get(f"{BASE}/entities/{B}").json().get("scope")

    attrs = f"{BASE}/entities/{B}/attrs"
    assert client.patch(attrs, json={"scope": "/x"}).status_code == 207  # B has no scope
    assert client.post(attrs, json={"scope": "/a"}).status_code == 204
    assert scope() == "/a"
    assert (
        client.post(attrs, params={"options": "noOverwrite"}, json={"scope": "/b"}).status_code
        == 204
    )
    assert scope() == ["/a", "/b"]
    assert client.patch(attrs, json={"scope": ["/c"]}).status_code == 204
    assert scope() == "/c"
    assert client.post(attrs, json={"scope": "/c//d"}).status_code == 400
    for method in ("PATCH", "PUT"):
        r = client.request(method, f"{attrs}/scope", json={"type": "Property", "value": "/z"})
        assert r.status_code == 400, method
    assert client.delete(f"{attrs}/scope").status_code == 204
    assert scope() is None
    assert client.delete(f"{attrs}/scope").status_code == 404


def test_fragments_add_types_and_an_upsert_lists_only_what_it_created(
    client: TestClient,
) -> None:
    attrs = f"{BASE}/entities/{B}/attrs"
    assert client.patch(attrs, json={"type": "Kiosk"}).status_code == 204
    assert client.post(attrs, json={"type": ["Market", "Shop"]}).status_code == 204
    assert client.get(f"{BASE}/entities/{B}").json()["type"] == ["Shop", "Kiosk", "Market"]
    assert client.patch(attrs, json={"type": "9x"}).status_code == 400
    batch = [{"id": A, "type": "Shop"}, {"id": "urn:ngsi-ld:Shop:c", "type": "Shop"}]
    r = client.post(f"{BASE}/entityOperations/upsert", params={"options": "replace"}, json=batch)
    assert r.status_code == 201 and r.json() == ["urn:ngsi-ld:Shop:c"]


def test_geojson_is_offered_by_entity_reads_only(client: TestClient) -> None:
    geo = {"Accept": "application/geo+json"}
    assert client.get(f"{BASE}/entities/{A}", headers=geo).status_code == 200
    assert client.get(f"{BASE}/entities", params={"type": "Shop"}, headers=geo).status_code == 200
    for path in ("/subscriptions", "/types", f"/temporal/entities/{A}"):
        assert client.get(f"{BASE}{path}", headers=geo).status_code == 406, path


def test_small_checks_of_reads(client: TestClient) -> None:
    """attrs naming nothing the entity has is 404; csf is checked; timeAt is a date-time."""
    assert client.get(f"{BASE}/entities/{A}", params={"attrs": "nothing"}).status_code == 404
    assert client.get(f"{BASE}/entities/{A}", params={"attrs": "color,nothing"}).status_code == 200
    r = client.get(f"{BASE}/temporal/entities/{A}", params={"attrs": "nothing"})
    assert r.status_code == 404
    r = client.get(f"{BASE}/entities", params={"type": "Shop", "csf": "))bad(("})
    assert r.status_code == 400
    params = {"type": "Shop", "timerel": "after", "timeAt": "2020-08-01"}
    assert client.get(f"{BASE}/temporal/entities", params=params).status_code == 400


def test_scope_q_and_type_selectors_combine_with_and_or(client: TestClient) -> None:
    """Clauses 4.17 and 4.19: ';' is and, '|' (and ',') or, parentheses group."""
    for n, types, scopes in (
        ("x", ["Kiosk", "Cafe"], ["/a/b", "/c"]),
        ("y", ["Kiosk"], ["/a/b"]),
        ("z", ["Cafe"], ["/c"]),
    ):
        body = {"id": f"urn:ngsi-ld:Place:{n}", "type": types, "scope": scopes}
        assert client.post(f"{BASE}/entities", json=body).status_code == 201

    def found(**params: str) -> list[str]:
        r = client.get(f"{BASE}/entities", params=params)
        assert r.status_code == 200, (params, r.text)
        return [e["id"].rsplit(":", 1)[1] for e in r.json()]

    assert found(type="(Kiosk;Cafe)") == ["x"]
    assert found(type="Kiosk|Cafe") == ["x", "y", "z"]
    assert found(type="Kiosk;Cafe|Shop") == ["x", "a", "b"]
    assert found(type="Kiosk,Cafe", scopeQ="/a/b;/c") == ["x"]
    assert found(type="Kiosk,Cafe", scopeQ="(/a/#;/c)|/c") == ["x", "z"]
    assert found(type="Kiosk,Cafe", scopeQ="/a/b|/c") == ["x", "y", "z"]
    for bad in ({"type": "(Kiosk;Cafe"}, {"type": "Kiosk", "scopeQ": "/a;;/b"}):
        assert client.get(f"{BASE}/entities", params=bad).status_code == 400, bad


def test_no_overwrite_keeps_what_is_there_and_adds_new_instances(client: TestClient) -> None:
    attrs = f"{BASE}/entities/{B}/attrs"
    gps = {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:Dataset:gps"}
    r = client.post(attrs, params={"options": "noOverwrite"}, json={"label": gps})
    assert r.status_code == 204, r.text
    label = client.get(f"{BASE}/entities/{B}").json()["label"]
    assert [i["value"] for i in label] == ["commercial", 2]
    batch = [{"id": B, "type": "Shop", "label": {"type": "Property", "value": "x"}}]
    r = client.post(
        f"{BASE}/entityOperations/update", params={"options": "noOverwrite"}, json=batch
    )
    assert r.status_code == 204, r.text


def test_paths_without_an_entity_id_or_with_a_keyword_are_bad_request_data(
    client: TestClient,
) -> None:
    for method in ("PATCH", "PUT"):
        r = client.request(method, f"{BASE}/entities/", json={"id": A, "type": "Shop"})
        assert r.status_code == 400 and r.json()["type"].endswith("BadRequestData"), method
    r = client.put(f"{BASE}/entities/{A}/attrs/@invalid", json={"type": "Property", "value": 1})
    assert r.status_code == 400
