"""The NGSI-LD write paths: the batch fast path, group commit, and durability under kill -9."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, delete, event, insert, select

from citybrain.core.db import create_engine_for, upgrade
from citybrain.core.errors import BadInput, NotFound
from citybrain.core.writer_lock import writer_lock_path
from citybrain.hub.ngsild import commits, entities, service, subscriptions
from citybrain.hub.ngsild.entities import NGSI_NULL, expand_entity
from citybrain.hub.ngsild.jsonld import ContextStore, validate_entity_id
from citybrain.hub.ngsild.models import (
    ngsild_entities,
    ngsild_entity_types,
    ngsild_history,
    ngsild_outbox,
    ngsild_tenants,
)
from conftest import free_port, serve_node, wait_healthy

SYSTEM = {"createdAt", "modifiedAt"}


TENANTS = ("wbatch", "wsingle", "wcommit")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The store on SQLite and on the session's PostgreSQL (its test tenants removed after)."""
    if request.param == "sqlite":
        made = create_engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        made = create_engine_for(request.getfixturevalue("postgres_url"))
    upgrade(made)
    yield made
    with made.begin() as conn:
        for table in (ngsild_history, ngsild_entity_types, ngsild_entities, ngsild_tenants):
            column = table.c.name if table is ngsild_tenants else table.c.tenant
            conn.execute(delete(table).where(column.in_(TENANTS)))
    made.dispose()


def _general(name: str, raw: Any, **flags: Any) -> Any:
    """The general expansion walk alone (the plain-attribute shortcut switched off)."""
    saved = entities._plain_attribute
    entities._plain_attribute = lambda _name, _raw: None  # type: ignore[assignment]
    try:
        return _outcome(name, raw, **flags)
    finally:
        entities._plain_attribute = saved


def _outcome(name: str, raw: Any, **flags: Any) -> Any:
    terms = ContextStore().term_map(None)
    try:
        return entities._attribute(name, raw, terms, **flags)
    except BadInput as exc:
        return ("refused", exc.message)


_values = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.sampled_from(["text", NGSI_NULL, "urn:ngsi-ld:Device:1", "not a uri", ""]),
    st.just({"type": "Point", "coordinates": [117.0, 36.6]}),
    st.just({"type": "Point", "coordinates": [200.0, 36.6]}),
    st.just({"type": "Point", "coordinates": [True, 36.6]}),
    st.just({"type": "Point", "coordinates": [117.0, 36.6], "bbox": [1, 2, 3, 4]}),
    st.just({"a": NGSI_NULL}),
    st.lists(st.integers(), max_size=2),
)
_attributes = st.fixed_dictionaries(
    {"type": st.sampled_from(["Property", "GeoProperty", "Relationship", "JsonProperty", "X"])},
    optional={
        "value": _values,
        "object": _values,
        "unitCode": st.sampled_from(["GQ", "CEL"]),
        "observedAt": st.sampled_from(["2026-11-24T10:00:00Z", "2026-11-24T10:00:00", "x", 5]),
        "datasetId": st.sampled_from(["urn:ngsi-ld:Dataset:a", NGSI_NULL]),
        "createdAt": st.just("2020-01-01T00:00:00Z"),
        "accuracy": st.just({"type": "Property", "value": 0.5}),
    },
)


@settings(max_examples=400, deadline=None)
@given(raw=_attributes, nulls=st.booleans(), history=st.booleans())
def test_the_plain_attribute_shortcut_expands_as_the_general_walk(
    raw: dict[str, Any], nulls: bool, history: bool
) -> None:
    # every input, accepted or refused, comes out the same either way
    flags = {"nulls": nulls, "history": history}
    assert _outcome("pm25", raw, **flags) == _general("pm25", raw, **flags)


def test_entity_ids_with_control_characters_are_refused_in_ascii_too() -> None:
    assert validate_entity_id("urn:ngsi-ld:Sensor:1") == "urn:ngsi-ld:Sensor:1"
    for bad in ("urn:ngsi-ld:Sensor:\x01", "urn:ngsi-ld:Sensor:\x7f", "urn:ngsi-ld:Sensor:\x00x"):
        with pytest.raises(BadInput, match="control, format or space"):
            validate_entity_id(bad)
    with pytest.raises(BadInput, match="not a URI"):
        validate_entity_id("urn:ngsi-ld:Sensor: 1")


def _mixed(i: int) -> dict[str, Any]:
    """An entity of every kind the batch path meets: plain attributes and others."""
    entity: dict[str, Any] = {
        "id": f"urn:ngsi-ld:AirQualityObserved:{i:04d}",
        "type": ["AirQualityObserved", "Device"] if i % 3 == 0 else "AirQualityObserved",
        "pm25": {"type": "Property", "value": i % 7, "unitCode": "GQ"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [117, 36]}},
        "refDevice": {"type": "Relationship", "object": f"urn:ngsi-ld:Device:{i}"},
        "name": {"type": "Property", "value": f"station {i}"},
    }
    if i % 2:
        entity["no2"] = [
            {"type": "Property", "value": 1.5, "datasetId": "urn:ngsi-ld:Dataset:a"},
            {"type": "Property", "value": 2.5, "observedAt": "2026-11-24T10:00:00Z"},
        ]
        entity["address"] = {"type": "Property", "value": {"county": "370102"}}
        entity["pm25"]["observedAt"] = "2026-11-24T09:00:00Z"
        entity["pm25"]["accuracy"] = {"type": "Property", "value": 0.1}
        entity["location"] = {
            "type": "GeoProperty",
            "value": {
                "type": "Polygon",
                "coordinates": [[[117, 36], [118, 36], [118, 37], [117, 36]]],
            },
        }
    return entity


def _without_stamps(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_stamps(v) for k, v in value.items() if k not in SYSTEM}
    if isinstance(value, list):
        return [_without_stamps(v) for v in value]
    return value


def _stored(conn: Connection, tenant: str) -> tuple[list[Any], list[Any], list[Any]]:
    e, t, h = ngsild_entities.c, ngsild_entity_types.c, ngsild_history.c
    rows = conn.execute(
        select(e.id, e.entity, e.loc_minx, e.loc_miny, e.loc_maxx, e.loc_maxy, e.loc_cell)
        .where(e.tenant == tenant)
        .order_by(e.id)
    )
    found = [(r[0], _without_stamps(r[1]), *r[2:]) for r in rows]
    types = list(
        conn.execute(select(t.id, t.type).where(t.tenant == tenant).order_by(t.id, t.type))
    )
    history = [
        (r.entity_id, r.attribute, r.dataset_id, r.number, _without_stamps(r.instance))
        for r in conn.execute(
            select(h).where(h.tenant == tenant).order_by(h.entity_id, h.attribute, h.dataset_id)
        )
    ]
    observed = [
        (r.entity_id, r.attribute, r.at.replace(tzinfo=None))
        for r in conn.execute(select(h).where(h.tenant == tenant).order_by(h.seq))
        if "observedAt" in r.instance
    ]
    return found, types, sorted(history, key=repr) + sorted(observed)


def test_a_batch_writes_the_rows_one_create_at_a_time_writes(store: Engine) -> None:
    engine = store
    terms = ContextStore().term_map(None)
    batch = [expand_entity(_mixed(i), terms) for i in range(12)]
    created, updated, refused = service.upsert_many(
        engine=engine, tenant="wbatch", entities=batch, mode="create"
    )
    assert len(created) == 12 and not updated and not refused
    for i in range(12):
        service.create_entity(
            engine=engine, tenant="wsingle", entity=expand_entity(_mixed(i), terms)
        )
    with engine.connect() as conn:
        assert _stored(conn, "wbatch") == _stored(conn, "wsingle")
        stamps = {
            r.entity["modifiedAt"]
            for r in conn.execute(
                select(ngsild_entities.c.entity).where(ngsild_entities.c.tenant == "wbatch")
            )
        }
    assert len(stamps) == 1  # one write, one time stamp


def test_a_batch_refuses_duplicates_and_existing_ids_and_notifies(engine: Engine) -> None:
    terms = ContextStore().term_map(None)
    service.create_entity(engine=engine, tenant="", entity=expand_entity(_mixed(1), terms))
    with engine.begin() as conn:
        from citybrain.hub.ngsild.models import ngsild_subscriptions

        conn.execute(
            insert(ngsild_subscriptions).values(
                tenant="",
                id="urn:ngsi-ld:Subscription:w",
                subscription={
                    "id": "urn:ngsi-ld:Subscription:w",
                    "type": "Subscription",
                    "entities": [
                        {"type": "https://uri.etsi.org/ngsi-ld/default-context/AirQualityObserved"}
                    ],
                    "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}},
                },
                context=[],
                created_at=service.datetime.now(service.UTC),
                times_sent=0,
                times_failed=0,
            )
        )
    batch = [expand_entity(_mixed(i), terms) for i in (1, 2, 2, 3)]
    created, _, refused = service.upsert_many(
        engine=engine, tenant="", entities=batch, mode="create"
    )
    assert created == [_mixed(2)["id"], _mixed(3)["id"]]
    assert "exists already" in refused[_mixed(1)["id"]]
    assert "twice" in refused[_mixed(2)["id"]]
    from citybrain.hub.ngsild.models import ngsild_outbox

    with engine.connect() as conn:
        queued = [r.payload["entity"]["id"] for r in conn.execute(select(ngsild_outbox))]
    assert sorted(queued) == [_mixed(2)["id"], _mixed(3)["id"]]


def _put(conn: Connection, entity_id: str, fail: bool = False, tenant: str = "") -> str:
    service.create_entity_in(
        conn,
        tenant=tenant,
        entity={"id": entity_id, "type": ["urn:x:T"], "urn:x:p": {"type": "Property", "value": 1}},
    )
    if fail:
        raise NotFound("refused after writing")  # its savepoint takes the write back
    return entity_id


def test_concurrent_writes_share_one_commit_and_a_failure_stays_its_own(store: Engine) -> None:
    engine = store
    state = type("State", (), {})()

    async def scenario() -> tuple[list[Any], int]:
        committer = commits.committer(state, engine)
        jobs = [
            committer.run(lambda conn, i=i: _put(conn, f"urn:x:{i}", i == 3, "wcommit"))
            for i in range(8)
        ]
        # the same id twice: the second is a 409 of its own, seeing the first's write
        jobs.append(committer.run(lambda conn: _put(conn, "urn:x:0", tenant="wcommit")))
        results = await asyncio.gather(*jobs, return_exceptions=True)
        return results, committer.rounds

    results, rounds = asyncio.run(scenario())
    assert rounds == 1  # queued together, committed together: one fsync for nine writes
    assert isinstance(results[3], NotFound)
    assert type(results[8]).__name__ == "Conflict"
    assert [r for i, r in enumerate(results) if i not in (3, 8)] == [
        f"urn:x:{i}" for i in range(8) if i != 3
    ]
    e = ngsild_entities.c
    with engine.connect() as conn:
        stored = set(conn.execute(select(e.id).where(e.tenant == "wcommit")).scalars())
    assert stored == {f"urn:x:{i}" for i in range(8) if i != 3}


def test_an_inline_round_commits_off_the_loop_while_the_loop_serves_on(engine: Engine) -> None:
    # the statements run on the loop's thread; the commit (SQLite's fsync) on the committer
    # thread, and the loop runs other tasks meanwhile
    state = type("State", (), {})()
    threads: dict[str, int] = {}
    ticks: list[float] = []
    slow_commit = threading.Event()

    def on_commit(_conn: Any) -> None:
        threads["commit"] = threading.get_ident()
        slow_commit.wait(0.5)  # a slow disk: the loop must keep turning

    event.listen(engine, "commit", on_commit)

    def work(conn: Connection) -> str:
        threads["statements"] = threading.get_ident()
        return _put(conn, "urn:x:inline")

    async def ticker() -> None:
        while not slow_commit.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def scenario() -> str:
        threads["loop"] = threading.get_ident()
        committer = commits.committer(state, engine)
        tick = asyncio.create_task(ticker())
        try:
            return await committer.run(work)
        finally:
            slow_commit.set()
            await tick

    try:
        assert asyncio.run(scenario()) == "urn:x:inline"
    finally:
        event.remove(engine, "commit", on_commit)
    assert threads["statements"] == threads["loop"] != threads["commit"]
    assert len(ticks) >= 5  # the loop turned during the 0.5 s commit (inline: 2 at most)
    with engine.connect() as conn:
        assert conn.execute(select(ngsild_entities.c.id)).scalars().all() == ["urn:x:inline"]


def test_a_failed_commit_acknowledges_no_write_of_its_round(engine: Engine) -> None:
    state = type("State", (), {})()

    def poison(conn: Connection) -> None:
        # a deferred failure: the unit itself succeeds, the commit then cannot
        conn.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS p (x INTEGER PRIMARY KEY)")
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS c (x INTEGER REFERENCES p(x) DEFERRABLE INITIALLY DEFERRED)"
        )
        conn.exec_driver_sql("INSERT INTO c VALUES (42)")

    async def scenario() -> list[Any]:
        committer = commits.committer(state, engine)
        return await asyncio.gather(
            committer.run(lambda conn: _put(conn, "urn:x:a")),
            committer.run(poison),
            return_exceptions=True,
        )

    results = asyncio.run(scenario())
    assert all(isinstance(r, Exception) for r in results)
    with engine.connect() as conn:
        assert conn.execute(select(ngsild_entities.c.id)).first() is None


def _serve(data: Path, port: int) -> subprocess.Popen[bytes]:
    return serve_node(
        data,
        port,
        code="370000",
        level="province",
        env={"CITYBRAIN_ANONYMOUS_ROLE": "bureau_admin"},
    )


def test_acknowledged_patches_survive_kill_9(tmp_path: Path) -> None:
    port = free_port()
    node = _serve(tmp_path, port)
    base = f"http://127.0.0.1:{port}/ngsi-ld/v1"
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        batch = [
            {
                "id": f"urn:ngsi-ld:Sensor:{k}",
                "type": "Sensor",
                "level": {"type": "Property", "value": -1},
            }
            for k in range(4)
        ]
        r = httpx.post(f"{base}/entityOperations/upsert", json=batch, timeout=30)
        assert r.status_code == 201, r.text
        acked: list[tuple[int, int]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def patcher(k: int) -> None:
            # concurrent clients, so that rounds hold several writes
            with httpx.Client(timeout=10) as c:
                n = 0
                while not stop.is_set():
                    value = k * 1_000_000 + n
                    try:
                        answer = c.patch(
                            f"{base}/entities/urn:ngsi-ld:Sensor:{k}/attrs/level",
                            json={"value": value},
                        )
                    except httpx.HTTPError:
                        return
                    if answer.status_code == 204:
                        with lock:
                            acked.append((k, value))
                    n += 1

        threads = [threading.Thread(target=patcher, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        while len(acked) < 200 and time.monotonic() < deadline + 60:
            time.sleep(0.05)
        node.send_signal(signal.SIGKILL)
        node.wait()
        stop.set()
        for t in threads:
            t.join()
        with lock:
            acknowledged = list(acked)
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
    assert len(acknowledged) >= 50
    with sqlite3.connect(tmp_path / "citybrain.db") as db:
        kept = {
            (int(entity_id.rsplit(":", 1)[1]), int(json.loads(instance)["value"]))
            for entity_id, instance in db.execute(
                "select entity_id, instance from ngsild_history where attribute like '%level'"
            )
        }
        current = dict(db.execute("select id, entity from ngsild_entities"))
    # every acknowledged PATCH is in the history, and each entity holds its last one
    assert set(acknowledged) <= kept
    for k in range(4):
        last = max((v for kk, v in acknowledged if kk == k), default=-1)
        level = json.loads(current[f"urn:ngsi-ld:Sensor:{k}"])[
            "https://uri.etsi.org/ngsi-ld/default-context/level"
        ]
        assert level["value"] >= last


def test_a_lookup_by_id_takes_the_primary_key_before_statistics(postgres_url: str) -> None:
    """PostgreSQL: right after a bulk load (no ANALYZE yet), a batch's id lookup is by key."""
    engine = create_engine_for(postgres_url)
    upgrade(engine)
    terms = ContextStore().term_map(None)
    tenant = "wplan"
    service._loaded.clear()  # this process's count of entities since the last ANALYZE
    # no request's principal: the store writes as the node itself (a test before may have
    # left one bound in this thread)
    from citybrain.hub.ngsild import gated

    unbound = gated.writer.set(None)
    try:
        for lo in range(0, 4000, 1000):
            batch = [
                expand_entity(dict(_mixed(i), id=f"urn:ngsi-ld:Thing:plan{i}"), terms)
                for i in range(lo, lo + 1000)
            ]
            created, _, refused = service.upsert_many(
                engine=engine, tenant=tenant, entities=batch, mode="upsert"
            )
            assert len(created) == 1000, refused
        ids = [f"urn:ngsi-ld:Thing:plan{i}" for i in range(5000, 5500)]
        lookup = select(ngsild_entities.c.id, ngsild_entities.c.entity).where(
            ngsild_entities.c.tenant == tenant, ngsild_entities.c.id.in_(ids)
        )
        with engine.connect() as conn:
            sql = str(lookup.compile(engine, compile_kwargs={"literal_binds": True}))
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))
        assert "ix_ngsild_entities_cell" not in plan, plan
    finally:
        gated.writer.reset(unbound)
        with engine.begin() as conn:
            for table in (ngsild_history, ngsild_entity_types, ngsild_entities, ngsild_tenants):
                column = table.c.name if table is ngsild_tenants else table.c.tenant
                conn.execute(delete(table).where(column == tenant))
        engine.dispose()


def _statements(engine: Engine) -> list[str]:
    seen: list[str] = []
    event.listen(
        engine, "before_cursor_execute", lambda _c, _cur, sql, *_a: seen.append(sql.lower())
    )
    return seen


def _updates(
    engine: Engine, ids: list[str], value: int = 2, fail: str | None = None
) -> tuple[list[Any], int]:
    state = type("State", (), {})()
    terms = ContextStore().term_map(None)

    def patch(conn: Connection, entity_id: str) -> None:
        if entity_id == fail:
            raise NotFound("refused")
        service.partial_update_in(
            conn,
            tenant="",
            entity_id=entity_id,
            attr="urn:x:p",
            fragment={"value": value},
            terms=terms,
        )

    async def scenario() -> tuple[list[Any], int]:
        committer = commits.committer(state, engine)
        jobs = [committer.run(lambda conn, i=i: patch(conn, i)) for i in ids]
        return await asyncio.gather(*jobs, return_exceptions=True), committer.rounds

    return asyncio.run(scenario())


def test_a_round_that_fails_nothing_takes_no_savepoint_and_reads_subscriptions_once(
    engine: Engine,
) -> None:
    ids = [f"urn:x:{i}" for i in range(5)]
    with engine.begin() as conn:
        for entity_id in ids:
            _put(conn, entity_id)
    seen = _statements(engine)
    results, rounds = _updates(engine, ids)
    assert results == [None] * 5 and rounds == 1
    assert not [s for s in seen if "savepoint" in s]
    assert len([s for s in seen if "from ngsild_subscriptions" in s]) == 1
    seen.clear()
    # one unit fails: the round runs again, each unit in its savepoint, and keeps the others
    results, _ = _updates(engine, ids, value=3, fail="urn:x:2")
    assert isinstance(results[2], NotFound) and results[:2] + results[3:] == [None] * 4
    assert [s for s in seen if s.startswith("savepoint")]
    with engine.connect() as conn:
        stored = conn.execute(select(ngsild_entities.c.id, ngsild_entities.c.entity)).all()
    assert {k: v["urn:x:p"]["value"] for k, v in stored} == {
        i: 2 if i == "urn:x:2" else 3 for i in ids
    }


def test_a_round_keeps_to_a_subscriptions_throttling(engine: Engine) -> None:
    ids = [f"urn:x:{i}" for i in range(4)]
    with engine.begin() as conn:
        for entity_id in ids:
            _put(conn, entity_id)
    subscriptions.create(
        engine=engine,
        tenant="",
        sub={
            "entities": [{"type": "urn:x:T"}],
            "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}},
            "throttling": 3600,
        },
        context=None,
    )
    results, rounds = _updates(engine, ids)
    assert results == [None] * 4 and rounds == 1
    with engine.connect() as conn:
        # the first update notifies; the round's others fall inside the throttling
        assert len(list(conn.execute(select(ngsild_outbox.c.seq)))) == 1


def test_a_bulk_load_has_postgresql_count_the_store_again_in_a_new_database(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: ANALYZE follows what the catalog counted, not what this process loaded."""
    import psycopg

    from citybrain.hub.ngsild import gated

    monkeypatch.setattr(service, "FIRST_ANALYZE", 500)
    admin = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    name = admin.rsplit("/", 1)[1] + "_stats"
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    terms = ContextStore().term_map(None)
    unbound = gated.writer.set(None)  # the store writes as the node itself
    try:
        # the second load goes to the same database made again: what the first one counted
        # there is gone, and a count kept by this process would wait for 1,000 more entities
        for load in (1200, 600):
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{name}"')
            engine = create_engine_for(url)
            upgrade(engine)
            for lo in range(0, load, 100):
                batch = [expand_entity(_mixed(i), terms) for i in range(lo, lo + 100)]
                service.upsert_many(engine=engine, tenant="", entities=batch, mode="upsert")
            with engine.connect() as conn:
                counted = conn.exec_driver_sql(
                    "SELECT reltuples FROM pg_class WHERE oid = 'ngsild_entities'::regclass"
                ).scalar()
            engine.dispose()
            # analysed in this database, and what is loaded since is less than what was
            # counted or than the first threshold
            assert counted is not None and counted > 0, (load, counted)
            assert load - counted < max(500, counted), (load, counted)
    finally:
        gated.writer.reset(unbound)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _round_beside(engine: Engine, hold: Any, release: Any) -> tuple[list[Any], int]:
    """Run two writes while something else holds a lock; count the loop's ticks meanwhile."""
    state = type("State", (), {})()

    async def scenario() -> tuple[list[Any], int]:
        committer = commits.committer(state, engine)
        ticks = 0
        hold()
        jobs = asyncio.gather(
            committer.run(lambda conn: _put(conn, "urn:x:held1")),
            committer.run(lambda conn: _put(conn, "urn:x:held2")),
        )
        # the loop goes on while the round waits: ten ticks of 30 ms in well under a second
        deadline = time.monotonic() + 1.0
        for _ in range(10):
            await asyncio.sleep(0.03)
            ticks += time.monotonic() < deadline
        release()
        return await jobs, ticks

    return asyncio.run(scenario())


def test_a_round_waits_for_sqlites_write_lock_off_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    engine = create_engine_for(f"sqlite:///{path}")
    upgrade(engine)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    results, ticks = _round_beside(
        engine, lambda: other.execute("BEGIN IMMEDIATE"), lambda: other.execute("COMMIT")
    )
    other.close()
    assert results == ["urn:x:held1", "urn:x:held2"] and ticks == 10
    with engine.connect() as conn:
        assert len(conn.execute(select(ngsild_entities.c.id)).all()) == 2


def test_a_round_takes_the_writer_lock_of_the_workers(tmp_path: Path) -> None:
    import fcntl
    import os

    path = tmp_path / "store.db"
    engine = create_engine_for(f"sqlite:///{path}")
    upgrade(engine)
    lock_path = writer_lock_path(engine)
    assert lock_path == f"{path}.writer-lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    seen: list[int] = []

    def release() -> None:
        with engine.connect() as conn:  # nothing committed while another worker holds it
            seen.append(len(conn.execute(select(ngsild_entities.c.id)).all()))
        os.close(fd)

    results, ticks = _round_beside(engine, lambda: fcntl.flock(fd, fcntl.LOCK_EX), release)
    assert results == ["urn:x:held1", "urn:x:held2"] and ticks == 10 and seen == [0]
