"""The batch write path: prepared before its round, committed in the group commit, the loop
turning while a large batch expands; the node's garbage collector schedule."""

from __future__ import annotations

import asyncio
import copy
import gc
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, insert, select

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.core.db import create_engine_for, upgrade
from citybrain.core.runtime import YOUNG_THRESHOLD, tune_gc
from citybrain.hub.ngsild import api, commits, service
from citybrain.hub.ngsild.entities import expand_entity
from citybrain.hub.ngsild.jsonld import ContextStore
from citybrain.hub.ngsild.models import ngsild_entities, ngsild_entity_types, ngsild_history

BASE = "/ngsi-ld/v1"


def _entity(i: int, value: int = 1) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:AirQualityObserved:b{i:04d}",
        "type": "AirQualityObserved",
        "pm25": {"type": "Property", "value": value, "unitCode": "GQ"},
        "no2": [
            {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:Dataset:a"},
            {"type": "Property", "value": 3},
        ],
    }


def test_preparing_a_batch_leaves_its_entities_as_given(engine: Engine) -> None:
    terms = ContextStore().term_map(None)
    batch = [expand_entity(_entity(i), terms) for i in range(3)]
    given = copy.deepcopy(batch)
    prepared = service.prepare_batch(engine.dialect, "", batch)
    assert batch == given  # stamps went on copies: an existing entity merges from these
    assert len(prepared.entity_rows) == 3 and len(prepared.type_rows) == 3
    assert len(prepared.history_rows) == 9  # pm25 and both no2 instances, for each
    assert all(s["modifiedAt"] == prepared.stamped[0]["modifiedAt"] for s in prepared.stamped)


def test_an_upsert_writes_the_new_ones_from_rows_and_merges_the_existing(
    engine: Engine,
) -> None:
    terms = ContextStore().term_map(None)
    service.create_entity(engine=engine, tenant="", entity=expand_entity(_entity(1), terms))
    with engine.connect() as conn:
        before = conn.execute(select(ngsild_entities.c.entity)).scalar_one()
    batch = [expand_entity(_entity(i, value=7), terms) for i in (0, 1, 2)]
    created, updated, refused = service.upsert_many(
        engine=engine, tenant="", entities=batch, mode="upsert"
    )
    assert created == [_entity(0)["id"], _entity(2)["id"]]
    assert updated == [_entity(1)["id"]] and not refused
    pm25 = "https://uri.etsi.org/ngsi-ld/default-context/pm25"
    with engine.connect() as conn:
        rows = {r.id: r.entity for r in conn.execute(select(ngsild_entities))}
        history = conn.execute(
            select(ngsild_history.c.entity_id).where(ngsild_history.c.attribute == pm25)
        ).scalars()
        per_entity = sorted(history)
    assert len(rows) == 3 and all(e[pm25]["value"] == 7 for e in rows.values())
    # the existing entity kept its creation time; its prepared rows were not written twice
    assert rows[_entity(1)["id"]]["createdAt"] == before["createdAt"]
    assert per_entity.count(_entity(1)["id"]) == 2 and per_entity.count(_entity(0)["id"]) == 1


def test_a_round_takes_units_up_to_its_weight(engine: Engine) -> None:
    state = type("State", (), {})()
    weights = [1000, 1000, 3000, 1, 5000]

    async def scenario() -> list[int]:
        committer = commits.committer(state, engine)

        def unit(conn: Connection) -> int:
            return committer.rounds  # the same for every unit of one round

        return list(await asyncio.gather(*(committer.run(unit, w) for w in weights)))

    rounds = asyncio.run(scenario())
    # 1000 + 1000 (+3000 would pass 4096), then 3000 + 1, then 5000 alone
    assert rounds == [0, 0, 1, 1, 2]


def test_a_batch_upsert_over_http_is_one_round_of_the_group_commit(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, anonymous_role="bureau_admin")
    with TestClient(create_app(settings)) as client:
        answer = client.post(f"{BASE}/entityOperations/upsert", json=[_entity(i) for i in range(5)])
        assert answer.status_code == 201, answer.text
        assert len(answer.json()) == 5
        committers = list(client.app.state.ngsild_committers.values())  # type: ignore[attr-defined]
        assert [c.rounds for c in committers] == [1]
        again = client.post(f"{BASE}/entityOperations/upsert", json=[_entity(0, value=9)])
        assert again.status_code == 204
        got = client.get(f"{BASE}/entities/{_entity(0)['id']}", params={"options": "keyValues"})
        assert got.json()["pm25"] == 9


def test_a_body_with_nan_is_refused_as_not_json(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, anonymous_role="bureau_admin")
    body = b'[{"id": "urn:ngsi-ld:T:1", "type": "T", "p": {"type": "Property", "value": NaN}}]'
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            f"{BASE}/entityOperations/upsert",
            content=body,
            headers={"content-type": "application/json"},
        )
    assert answer.status_code == 400
    assert answer.json()["type"].endswith("InvalidRequest")
    assert "not valid JSON" in answer.json()["title"] + answer.json().get("detail", "")


def test_a_large_batch_lets_the_loop_turn_while_it_expands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(data_dir=tmp_path, anonymous_role="bureau_admin")
    app = create_app(settings)
    ticks = [0]
    seen: list[int] = []
    real = expand_entity

    def expand(item: Any, terms: Any) -> Any:
        seen.append(ticks[0])
        return real(item, terms)

    monkeypatch.setattr(api, "expand_entity", expand)

    async def scenario() -> int:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://node") as c:
                done = False

                async def ticker() -> None:
                    while not done:
                        ticks[0] += 1
                        await asyncio.sleep(0)

                task = asyncio.create_task(ticker())
                body = [_entity(i) for i in range(3 * api.EXPAND_SLICE)]
                answer = await c.post(f"{BASE}/entityOperations/upsert", json=body)
                done = True
                await task
                return answer.status_code

    assert asyncio.run(scenario()) == 201
    assert len(seen) == 3 * api.EXPAND_SLICE
    # the loop turned between the slices, not within one
    assert len(set(seen)) == 3
    assert seen[0] == seen[api.EXPAND_SLICE - 1] != seen[api.EXPAND_SLICE]


def test_a_serving_node_collects_less_often_and_not_what_it_loaded() -> None:
    threshold = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_sqlite_clusters_the_type_rows_and_keeps_those_of_before(tmp_path: Path) -> None:
    from alembic import command

    from citybrain.core.db import _alembic_config

    engine = create_engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine, "0019")
    with engine.begin() as conn:
        conn.execute(insert(ngsild_entity_types).values(tenant="", id="urn:x:1", type="urn:T"))
    upgrade(engine)
    with engine.begin() as conn:
        ddl = dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master").all())
        assert ddl["ngsild_entity_types"].endswith("WITHOUT ROWID")
        assert "ix_ngsild_entity_types_type" in ddl
        assert "WITHOUT ROWID" not in ddl["ngsild_history"]
        assert conn.execute(select(ngsild_entity_types.c.type)).scalars().all() == ["urn:T"]
    command.downgrade(_alembic_config(engine), "0019")
    with engine.connect() as conn:
        ddl = dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master").all())
        assert "WITHOUT ROWID" not in ddl["ngsild_entity_types"]
        assert conn.execute(select(ngsild_entity_types.c.type)).scalars().all() == ["urn:T"]


def test_a_batch_of_new_entities_is_not_looked_up_and_stays_in_its_transaction(
    engine: Engine,
) -> None:
    from sqlalchemy import event

    terms = ContextStore().term_map(None)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    batch = [expand_entity(_entity(i), terms) for i in range(4)]
    with engine.connect() as conn:
        conn.begin()
        created, _, _ = service.upsert_many_in(conn, tenant="", entities=batch, mode="create")
        assert len(created) == 4
        conn.rollback()  # the savepoint's release committed nothing on its own
    event.remove(engine, "before_cursor_execute", seen)
    assert not any(
        s.lstrip().upper().startswith("SELECT") and "ngsild_entities" in s for s in statements
    )
    with engine.connect() as conn:
        assert conn.execute(select(ngsild_entities)).first() is None
        assert conn.execute(select(ngsild_history)).first() is None
    # now one of them exists: the savepoint takes the batch's rows back, the lookup decides
    service.create_entity(engine=engine, tenant="", entity=expand_entity(_entity(2), terms))
    again = [expand_entity(_entity(i), terms) for i in range(4)]
    created, _, refused = service.upsert_many(
        engine=engine, tenant="", entities=again, mode="create"
    )
    assert created == [_entity(i)["id"] for i in (0, 1, 3)]
    assert list(refused) == [_entity(2)["id"]]
    with engine.connect() as conn:
        assert len(conn.execute(select(ngsild_entities)).all()) == 4
        assert len(conn.execute(select(ngsild_history)).all()) == 4 * 3
