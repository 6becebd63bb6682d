"""NGSI-LD temporal answers longer than the node's limit: cut along time, 206 and Content-Range."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from citybrain.app import create_app
from citybrain.core.config import load_settings

B = "/ngsi-ld/v1"
CAR = "urn:ngsi-ld:Vehicle:jan"
LATER = "urn:ngsi-ld:Vehicle:sep"
LIMIT = 15


def _points(day: str, minutes: range, start: int) -> list[dict[str, object]]:
    return [
        {"type": "Property", "value": start + m, "observedAt": f"{day}T01:{m:02d}:00Z"}
        for m in minutes
    ]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings(
        data_dir=tmp_path, anonymous_role="bureau_admin", ngsild_temporal_limit=LIMIT
    )
    with TestClient(create_app(settings)) as c:
        # ten speeds from 01:01, ten fuel levels from 01:03: twenty instances, over the limit
        car = {
            "id": CAR,
            "type": "Vehicle",
            "speed": _points("2020-01-01", range(1, 11), 100),
            "fuelLevel": _points("2020-01-01", range(3, 13), 200),
        }
        later = {
            "id": LATER,
            "type": "Vehicle",
            "speed": _points("2020-09-01", range(1, 3), 300),
            "fuelLevel": _points("2020-09-01", range(1, 3), 400),
        }
        for body in (car, later):
            assert c.post(f"{B}/temporal/entities", json=body).status_code == 201
        yield c


def _times(body: dict[str, object], name: str) -> list[str]:
    return [str(i["observedAt"]) for i in body[name]]  # type: ignore[attr-defined, index]


def test_a_history_within_the_limit_is_answered_whole(client: TestClient) -> None:
    answer = client.get(f"{B}/temporal/entities/{LATER}")
    assert answer.status_code == 200
    assert "content-range" not in answer.headers


def test_a_long_history_is_cut_oldest_first_with_its_time_range(client: TestClient) -> None:
    answer = client.get(f"{B}/temporal/entities/{CAR}")
    assert answer.status_code == 206
    body = answer.json()
    kept = sorted(_times(body, "speed") + _times(body, "fuelLevel"))
    # the same cut in time for both attributes: nothing inside the range is left out, and
    # the two instances of 01:09 (the 15th and 16th) go to the next range together
    assert len(kept) == 14
    assert answer.headers["content-range"] == f"date-time {kept[0]}-{kept[-1]}/*"
    assert kept[-1] == "2020-01-01T01:08:00Z"
    assert _times(body, "speed") == [f"2020-01-01T01:{m:02d}:00Z" for m in range(1, 9)]
    assert _times(body, "fuelLevel") == [f"2020-01-01T01:{m:02d}:00Z" for m in range(3, 9)]
    # the next range starts where this one ends
    rest = client.get(
        f"{B}/temporal/entities/{CAR}", params={"timerel": "after", "timeAt": kept[-1]}
    )
    assert rest.status_code == 200
    assert _times(rest.json(), "fuelLevel")[-1] == "2020-01-01T01:12:00Z"


def test_after_a_time_the_range_starts_at_that_time(client: TestClient) -> None:
    answer = client.get(
        f"{B}/temporal/entities/{CAR}",
        params={"timerel": "after", "timeAt": "2019-01-01T00:00:00Z"},
    )
    assert answer.status_code == 206
    assert answer.headers["content-range"] == (
        "date-time 2019-01-01T00:00:00Z-2020-01-01T01:08:00Z/*"
    )


def test_with_last_n_the_newest_are_kept_and_the_size_is_last_n(client: TestClient) -> None:
    answer = client.get(
        f"{B}/temporal/entities/{CAR}",
        params={"lastN": 10, "timerel": "before", "timeAt": "2021-01-01T00:00:00Z"},
    )
    assert answer.status_code == 206
    body = answer.json()
    assert _times(body, "fuelLevel") == [f"2020-01-01T01:{m:02d}:00Z" for m in range(5, 13)]
    assert _times(body, "speed") == [f"2020-01-01T01:{m:02d}:00Z" for m in range(5, 11)]
    assert answer.headers["content-range"] == (
        "date-time 2021-01-01T00:00:00Z-2020-01-01T01:05:00Z/10"
    )


def test_a_query_cuts_all_entities_at_one_time_and_keeps_them(client: TestClient) -> None:
    answer = client.get(
        f"{B}/temporal/entities",
        params={"type": "Vehicle", "options": "temporalValues"},
    )
    assert answer.status_code == 206
    by_id = {e["id"]: e for e in answer.json()}
    # the September car lies after the cut: listed, with no values in this range
    assert by_id[LATER]["speed"] == {"type": "Property", "values": []}
    assert len(by_id[CAR]["speed"]["values"]) == 8
    assert answer.headers["content-range"].endswith("-2020-01-01T01:08:00Z/*")
    # newest first: the September car is kept whole, January's is cut at 01:07
    newest = client.get(f"{B}/temporal/entities", params={"type": "Vehicle", "lastN": 8})
    assert newest.status_code == 206
    by_id = {e["id"]: e for e in newest.json()}
    assert len(by_id[LATER]["speed"]) == 2
    assert _times(by_id[CAR], "speed")[0] == "2020-01-01T01:07:00Z"
    assert newest.headers["content-range"].endswith("-2020-01-01T01:07:00Z/8")
    small = client.get(f"{B}/temporal/entities", params={"type": "Vehicle", "lastN": 3})
    assert small.status_code == 200


def test_aggregates_cover_the_whole_history(client: TestClient) -> None:
    answer = client.get(
        f"{B}/temporal/entities/{CAR}",
        params={"options": "aggregatedValues", "aggrMethods": "totalCount"},
    )
    assert answer.status_code == 200
    assert answer.json()["speed"]["totalCount"][0][0] == 10


def test_the_limit_must_be_a_positive_number(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        load_settings(data_dir=tmp_path, ngsild_temporal_limit=0)
