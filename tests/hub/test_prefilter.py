"""The SQL pre-filters never drop an entity that the exact q and geo evaluation would keep."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest
from sqlalchemy import Engine

from citybrain.core.db import create_engine_for, upgrade
from citybrain.hub.ngsild import geoquery, query, service
from citybrain.hub.ngsild.entities import expand_entity
from citybrain.hub.ngsild.jsonld import ContextStore
from citybrain.hub.ngsild.prefilter import LOCATION, cell_of, geo_columns

TERMS = ContextStore().term_map(None)
VALUES: list[Any] = [0, 1, 2.5, 7, -3, 300, "7", "a", "b", True, [1, 7], {"k": 7}]


def _entity(i: int, rng: random.Random) -> dict[str, Any]:
    e: dict[str, Any] = {"id": f"urn:ngsi-ld:Thing:{i:05d}", "type": rng.choice(["Thing", "Other"])}
    for name in ("a", "b"):
        roll = rng.random()
        if roll < 0.15:
            continue  # attribute absent
        if roll < 0.25:
            e[name] = {"type": "Relationship", "object": "urn:ngsi-ld:X:1"}
        elif roll < 0.35:
            e[name] = [
                {"type": "Property", "value": rng.choice(VALUES[:5]), "datasetId": "urn:d:1"},
                {"type": "Property", "value": rng.choice(VALUES[:5])},
            ]
        else:
            e[name] = {"type": "Property", "value": rng.choice(VALUES)}
    if rng.random() < 0.8:
        x, y = 117 + rng.random() * 0.2, 36 + rng.random() * 0.2
        if rng.random() < 0.2:
            ring = [[x, y], [x + 0.05, y], [x + 0.05, y + 0.05], [x, y + 0.05], [x, y]]
            e["location"] = {
                "type": "GeoProperty",
                "value": {"type": "Polygon", "coordinates": [ring]},
            }
        else:
            e["location"] = {
                "type": "GeoProperty",
                "value": {"type": "Point", "coordinates": [x, y]},
            }
    return expand_entity(e, TERMS)


QUERIES = [
    "a==7",
    "a!=7",
    "a>2",
    "a<=2.5",
    "a==1..7",
    "a==0,7,300",
    'a=="7"',
    'a=="a","b"',
    "a",
    "a>1;b<5",
    "a>100|b==0",
    "(a==7|b==7);a!=300",
    "a==urn:ngsi-ld:X:1",
    "a.k==7",
    "a[k]==7",
    "!b",
    "a~=^7",
]


def _store(engine: Engine, n: int = 400) -> list[dict[str, Any]]:
    upgrade(engine)
    rng = random.Random(5)
    entities = [_entity(i, rng) for i in range(n)]
    service.upsert_many(engine=engine, tenant="", entities=entities, mode="upsert")
    return entities


def _check(engine: Engine) -> None:
    entities = _store(engine)
    pattern = None
    for text in QUERIES:
        try:
            expr = query.expand(query.parse(text), TERMS.expand)
        except Exception:
            continue  # a syntax this parser refuses is covered by the q parser tests
        spec = service.EntityQuery(types=[TERMS.expand("Thing")], q=expr)
        page, total = service.query_entities(
            engine=engine, tenant="", spec=spec, limit=1000, offset=0
        )
        expected = sorted(
            e["id"]
            for e in entities
            if TERMS.expand("Thing") in e["type"] and service.matches(e, spec, pattern)
        )
        assert [e["id"] for e in page] == expected, text
        assert total == len(expected)
    for georel, geometry, coords in [
        ("near;maxDistance==3000", "Point", "[117.1,36.1]"),
        ("near;maxDistance==30000", "Point", "[117.1,36.1]"),
        ("near;minDistance==5000", "Point", "[117.1,36.1]"),
        ("within", "Polygon", "[[[117,36],[117.1,36],[117.1,36.1],[117,36.1],[117,36]]]"),
        ("intersects", "Polygon", "[[[117,36],[117.03,36],[117.03,36.03],[117,36.03],[117,36]]]"),
        ("contains", "Point", "[117.12,36.12]"),
        ("disjoint", "Point", "[117.12,36.12]"),
    ]:
        geo = geoquery.parse(georel, geometry, coords, LOCATION)
        spec = service.EntityQuery(geo=geo)
        page, _ = service.query_entities(engine=engine, tenant="", spec=spec, limit=1000, offset=0)
        expected = sorted(e["id"] for e in entities if service.matches(e, spec, pattern))
        assert [e["id"] for e in page] == expected, georel
        assert expected or georel.startswith("contains")


def test_prefilters_keep_every_match_sqlite(tmp_path: Any) -> None:
    _check(create_engine_for(f"sqlite:///{tmp_path / 'x.db'}"))


def test_prefilters_keep_every_match_postgres(postgres_url: str) -> None:
    engine = create_engine_for(postgres_url)
    upgrade(engine)
    with engine.begin() as conn:
        from citybrain.hub.ngsild.models import ngsild_entities, ngsild_entity_types

        conn.execute(ngsild_entity_types.delete().where(ngsild_entity_types.c.tenant == "pf"))
        conn.execute(ngsild_entities.delete().where(ngsild_entities.c.tenant == "pf"))
    _check_tenant(engine, "pf")


def _check_tenant(engine: Engine, tenant: str) -> None:
    rng = random.Random(9)
    entities = [_entity(i, rng) for i in range(300)]
    service.upsert_many(engine=engine, tenant=tenant, entities=entities, mode="upsert")
    for text in QUERIES:
        try:
            expr = query.expand(query.parse(text), TERMS.expand)
        except Exception:
            continue
        spec = service.EntityQuery(q=expr)
        page, _ = service.query_entities(
            engine=engine, tenant=tenant, spec=spec, limit=1000, offset=0
        )
        expected = sorted(e["id"] for e in entities if service.matches(e, spec, None))
        assert [e["id"] for e in page] == expected, text
    geo = geoquery.parse("near;maxDistance==3000", "Point", "[117.1,36.1]", LOCATION)
    spec = service.EntityQuery(geo=geo)
    page, _ = service.query_entities(engine=engine, tenant=tenant, spec=spec, limit=1000, offset=0)
    assert [e["id"] for e in page] == sorted(
        e["id"] for e in entities if service.matches(e, spec, None)
    )


def test_page_without_count_stops_early(tmp_path: Any) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'x.db'}")
    _store(engine)
    spec = service.EntityQuery()
    page, total = service.query_entities(
        engine=engine, tenant="", spec=spec, limit=5, offset=10, count=False
    )
    assert total == -1 and len(page) == 5
    assert re.fullmatch(r"urn:ngsi-ld:Thing:0001[0-4]", page[0]["id"])


def test_geo_columns() -> None:
    point = expand_entity(
        {"id": "urn:x:1", "type": "T", "location": {"type": "Point", "coordinates": [117.0, 36.5]}},
        TERMS,
    )
    cols = geo_columns(point)
    assert cols["loc_minx"] == cols["loc_maxx"] == 117.0
    assert cols["loc_cell"] == cell_of(117.0, 36.5)
    assert geo_columns({"id": "urn:x:2", "type": ["T"]})["loc_cell"] is None


@pytest.mark.parametrize(
    "bad", ["near;maxDistance==abc", "near", "within;x==1", "near;maxDistance==inf"]
)
def test_bad_geo_syntax_is_refused(bad: str) -> None:
    with pytest.raises(Exception, match="georel|maxDistance|modifiers"):
        geoquery.parse(bad, "Point", "[117,36]", None)
