"""NGSI-LD temporal history: every write is kept; timerel, lastN, temporalValues, aggregation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.core.errors import BadInput
from citybrain.hub.ngsild.temporal import parse_duration

B = "/ngsi-ld/v1"
EID = "urn:ngsi-ld:NoiseLevelObserved:1"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings(data_dir=tmp_path, anonymous_role="bureau_admin")
    with TestClient(create_app(settings)) as c:
        points = [
            {"type": "Property", "value": v, "observedAt": f"2026-11-01T{h:02d}:{m:02d}:00Z"}
            for h in range(3)
            for m, v in ((0, 10 + h), (30, 20 + h))
        ]
        body = {"id": EID, "type": "NoiseLevelObserved", "LAeq": points}
        assert c.post(f"{B}/temporal/entities", json=body).status_code == 201
        yield c


def test_latest_instance_is_current(client: TestClient) -> None:
    assert client.get(f"{B}/entities/{EID}").json()["LAeq"]["value"] == 22


def test_temporal_values_and_updates_are_recorded(client: TestClient) -> None:
    client.patch(
        f"{B}/entities/{EID}/attrs",
        json={"LAeq": {"type": "Property", "value": 99, "observedAt": "2026-11-01T05:00:00Z"}},
    )
    values = client.get(f"{B}/temporal/entities/{EID}", params={"options": "temporalValues"}).json()
    assert [v for v, _ in values["LAeq"]["values"]] == [10, 20, 11, 21, 12, 22, 99]
    last = client.get(f"{B}/temporal/entities/{EID}", params={"lastN": 2}).json()
    assert [i["value"] for i in last["LAeq"]] == [22, 99]


def test_timerel(client: TestClient) -> None:
    def values(**params: str) -> list[int]:
        body = client.get(
            f"{B}/temporal/entities/{EID}", params={"options": "temporalValues", **params}
        ).json()
        return [v for v, _ in body.get("LAeq", {}).get("values", [])]

    assert values(timerel="before", timeAt="2026-11-01T01:00:00Z") == [10, 20]
    assert values(timerel="after", timeAt="2026-11-01T02:00:00Z") == [12, 22]
    assert values(
        timerel="between", timeAt="2026-11-01T00:30:00Z", endTimeAt="2026-11-01T01:30:00Z"
    ) == [20, 11]


def test_a_query_leaves_out_entities_with_nothing_in_the_window(client: TestClient) -> None:
    later = {
        "id": "urn:ngsi-ld:NoiseLevelObserved:2",
        "type": "NoiseLevelObserved",
        "LAeq": [{"type": "Property", "value": 50, "observedAt": "2026-11-02T00:00:00Z"}],
    }
    assert client.post(f"{B}/temporal/entities", json=later).status_code == 201

    def ids(**params: str) -> list[str]:
        found = client.get(
            f"{B}/temporal/entities",
            params={"type": "NoiseLevelObserved", "count": "true", **params},
        )
        assert found.status_code == 200, found.text
        assert found.headers["NGSILD-Results-Count"] == str(len(found.json()))
        return sorted(e["id"] for e in found.json())

    assert ids(timerel="after", timeAt="2026-11-01T12:00:00Z") == [later["id"]]
    assert ids(timerel="before", timeAt="2026-11-01T12:00:00Z") == [EID]
    assert ids(timerel="after", timeAt="2026-11-03T00:00:00Z") == []
    assert ids() == sorted([EID, later["id"]])  # no window: every matching entity
    query = {"type": "Query", "entities": [{"type": "NoiseLevelObserved"}]}
    posted = client.post(
        f"{B}/temporal/entityOperations/query",
        json={**query, "temporalQ": {"timerel": "after", "timeAt": "2026-11-01T12:00:00Z"}},
    )
    assert [e["id"] for e in posted.json()] == [later["id"]]


def test_hourly_aggregation(client: TestClient) -> None:
    body = client.get(
        f"{B}/temporal/entities",
        params={
            "type": "NoiseLevelObserved",
            "options": "aggregatedValues",
            "aggrMethods": "totalCount,sum,avg,min,max",
            "aggrPeriodDuration": "PT1H",
        },
    ).json()[0]["LAeq"]
    assert [a[0] for a in body["avg"]] == [15.0, 16.0, 17.0]
    assert [a[0] for a in body["totalCount"]] == [2, 2, 2]
    assert [a[0] for a in body["sum"]] == [30, 32, 34]
    assert [a[0] for a in body["min"]] == [10, 11, 12] and [a[0] for a in body["max"]] == [
        20,
        21,
        22,
    ]
    assert body["avg"][0][1:] == ["2026-11-01T00:00:00Z", "2026-11-01T01:00:00Z"]
    # counts are integers, the other aggregations numbers with a fraction
    assert all(isinstance(a[0], float) for m in ("sum", "min", "max") for a in body[m])
    assert all(type(a[0]) is int for a in body["totalCount"])


@pytest.mark.parametrize(
    "params",
    [
        {"timerel": "during", "timeAt": "2026-11-01T00:00:00Z"},
        {"timerel": "before"},
        {
            "timerel": "between",
            "timeAt": "2026-11-01T02:00:00Z",
            "endTimeAt": "2026-11-01T01:00:00Z",
        },
        {"timerel": "after", "timeAt": "yesterday"},
        {"lastN": "0"},
        {"lastN": "many"},
        {"options": "aggregatedValues"},
        {"options": "aggregatedValues", "aggrMethods": "median"},
        {"options": "aggregatedValues", "aggrMethods": "avg", "aggrPeriodDuration": "P1M"},
        {"options": "bogus"},
    ],
)
def test_bad_temporal_parameters(client: TestClient, params: dict[str, str]) -> None:
    response = client.get(f"{B}/temporal/entities/{EID}", params=params)
    assert response.status_code == 400, response.text


def test_unknown_entity_is_404(client: TestClient) -> None:
    assert client.get(f"{B}/temporal/entities/urn:ngsi-ld:X:404").status_code == 404


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 3), st.integers(0, 48), st.integers(0, 59), st.integers(0, 59))
def test_durations(weeks: int, hours: int, minutes: int, seconds: int) -> None:
    text = "P" + (f"{weeks}W" if weeks else "") + f"T{hours}H{minutes}M{seconds}S"
    total = weeks * 604800 + hours * 3600 + minutes * 60 + seconds
    if total == 0:
        with pytest.raises(BadInput):
            parse_duration(text)
    else:
        assert parse_duration(text).total_seconds() == total


def _aggregations_agree(client: TestClient) -> None:
    params = {
        "options": "aggregatedValues",
        "aggrMethods": "totalCount,sum,avg,min,max,sumsq,stddev",
        "aggrPeriodDuration": "PT1H",
    }
    in_sql = client.get(f"{B}/temporal/entities/{EID}", params=params).json()["LAeq"]
    in_python = client.get(
        f"{B}/temporal/entities", params={"type": "NoiseLevelObserved", **params}
    ).json()[0]["LAeq"]
    for method in ("totalCount", "sum", "avg", "min", "max", "sumsq", "stddev"):
        assert [round(a[0], 6) for a in in_sql[method]] == [
            round(a[0], 6) for a in in_python[method]
        ]
        assert [a[1:] for a in in_sql[method]] == [a[1:] for a in in_python[method]]


def test_database_aggregation_matches_python(client: TestClient) -> None:
    _aggregations_agree(client)


def test_database_aggregation_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    # the session database belongs to node 370100 (see the other PostgreSQL tests)
    settings = load_settings(
        data_dir=tmp_path,
        code="370100",
        level="city",
        database_url=postgres_url,
        anonymous_role="bureau_admin",
    )
    with TestClient(create_app(settings)) as c:
        c.delete(f"{B}/entities/{EID}")
        points = [
            {"type": "Property", "value": v, "observedAt": f"2026-11-01T{h:02d}:{m:02d}:00Z"}
            for h in range(3)
            for m, v in ((0, 10 + h), (30, 20 + h))
        ]
        eid = f"urn:ngsi-ld:NoiseLevelObserved:{tmp_path.name[-6:]}"
        c.post(
            f"{B}/temporal/entities", json={"id": eid, "type": "NoiseLevelObserved", "LAeq": points}
        )
        params = {
            "options": "aggregatedValues",
            "aggrMethods": "avg,totalCount",
            "aggrPeriodDuration": "PT1H",
        }
        body = c.get(f"{B}/temporal/entities/{eid}", params=params).json()["LAeq"]
        assert [a[0] for a in body["avg"]] == [15.0, 16.0, 17.0]
        assert [a[0] for a in body["totalCount"]] == [2, 2, 2]


def test_simplified_pairs_carry_each_attribute_type_in_its_own_member(client: TestClient) -> None:
    """Clause 4.5.9: valueLists and objectLists bare; languageMaps, jsons, vocabs as one-key
    objects; GeoJSON as values."""
    at = "2026-11-02T00:00:00Z"
    entity = {
        "id": "urn:ngsi-ld:Vehicle:t1",
        "type": "Vehicle",
        "depths": {"type": "ListProperty", "valueList": [1.2, 3.4], "observedAt": at},
        "route": {
            "type": "ListRelationship",
            "objectList": ["urn:r:1", "urn:r:2"],
            "observedAt": at,
        },
        "street": {"type": "LanguageProperty", "languageMap": {"en": "Main"}, "observedAt": at},
        "extra": {"type": "JsonProperty", "json": {"k": 1}, "observedAt": at},
        "kind": {"type": "VocabProperty", "vocab": "bus", "observedAt": at},
        "location": {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [1.0, 2.0]},
            "observedAt": at,
        },
    }
    assert client.post(f"{B}/temporal/entities", json=entity).status_code == 201
    got = client.get(
        f"{B}/temporal/entities/urn:ngsi-ld:Vehicle:t1", params={"options": "temporalValues"}
    ).json()
    assert got["depths"] == {"type": "ListProperty", "valueLists": [[[1.2, 3.4], at]]}
    assert got["route"]["objectLists"] == [[["urn:r:1", "urn:r:2"], at]]
    assert got["street"]["languageMaps"] == [[{"languageMap": {"en": "Main"}}, at]]
    assert got["extra"]["jsons"] == [[{"json": {"k": 1}}, at]]
    assert got["kind"]["vocabs"] == [[{"vocab": "bus"}, at]]
    assert got["location"]["values"][0][0] == {"type": "Point", "coordinates": [1.0, 2.0]}


def test_aggr_params_of_a_query_by_post(client: TestClient) -> None:
    """Clause 5.2.44: aggrParams carries the methods and the period; PT0S is one period."""
    query: dict[str, object] = {
        "type": "Query",
        "entities": [{"type": "NoiseLevelObserved"}],
        "temporalQ": {"timerel": "after", "timeAt": "2026-11-01T00:00:00Z"},
        "aggrParams": {"aggrMethods": ["avg"], "aggrPeriodDuration": "PT0S"},
    }
    r = client.post(f"{B}/temporal/entityOperations/query", json=query)
    assert r.status_code == 200, r.text
    assert [a[0] for a in r.json()[0]["LAeq"]["avg"]] == [16.0]
    for aggr in ({"aggrMethods": ["bogus"]}, {"aggrMethods": ["avg"], "aggrPeriodDuration": "x"}):
        r = client.post(f"{B}/temporal/entityOperations/query", json={**query, "aggrParams": aggr})
        assert r.status_code == 400, aggr


def test_datasets_keep_their_own_series_and_can_be_chosen(client: TestClient) -> None:
    """Clause 4.5.9 and datasetId: one object per datasetId; "@none" is the default instance."""
    at = ["2026-11-03T00:00:00Z", "2026-11-03T01:00:00Z"]
    body = {
        "id": "urn:ngsi-ld:Vehicle:d1",
        "type": "Vehicle",
        "speed": [
            {"type": "Property", "value": 1, "observedAt": at[0]},
            {"type": "Property", "value": 2, "observedAt": at[1], "datasetId": "urn:ds:gps"},
        ],
    }
    assert client.post(f"{B}/temporal/entities", json=body).status_code == 201
    url = f"{B}/temporal/entities/urn:ngsi-ld:Vehicle:d1"
    both = client.get(url, params={"options": "temporalValues"}).json()["speed"]
    assert both == [
        {"type": "Property", "values": [[1, at[0]]]},
        {"type": "Property", "datasetId": "urn:ds:gps", "values": [[2, at[1]]]},
    ]
    gps = client.get(url, params={"options": "temporalValues", "datasetId": "urn:ds:gps"})
    assert gps.json()["speed"]["values"] == [[2, at[1]]]
    default = client.get(url, params={"datasetId": "@none"}).json()["speed"]
    assert [i["value"] for i in default] == [1]
    listed = client.get(
        f"{B}/temporal/entities",
        params={"type": "Vehicle", "datasetId": "urn:ds:none", "timerel": "after", "timeAt": at[0]},
    )
    assert listed.json() == []
