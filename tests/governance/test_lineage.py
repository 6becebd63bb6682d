"""Lineage: edges recorded idempotently, graphs up- and downstream to a depth, the API."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from citybrain.app import create_app
from citybrain.core.config import load_settings
from citybrain.core.errors import BadInput
from citybrain.governance.lineage.service import lineage_graph, node_kind, record_lineage
from conftest import bearer


def _chain(engine: Engine) -> None:
    # file -> residents -> enrolment table -> indicator; insured persons -> indicator too
    record_lineage(
        engine=engine,
        output="public_security/residents",
        inputs=["file:residents-2026-09.parquet"],
        activity="tables.load",
        detail={"version": 1},
    )
    record_lineage(
        engine=engine,
        output="education/enrolment",
        inputs=["public_security/residents", "education/schools"],
        activity="derive",
    )
    record_lineage(
        engine=engine,
        output="indicator:enrolment_rate",
        inputs=["education/enrolment", "ngsi-ld:Building", "url:https://example.org/api?a=1"],
        activity="indicator",
    )


def test_graph_up_and_downstream(engine: Engine) -> None:
    _chain(engine)
    graph = lineage_graph(engine=engine, dataset_id="education/enrolment")
    assert graph.upstream == [
        "education/schools",
        "file:residents-2026-09.parquet",
        "public_security/residents",
    ]
    assert graph.downstream == ["indicator:enrolment_rate"]
    kinds = {n.id: n.kind for n in graph.nodes}
    assert kinds["file:residents-2026-09.parquet"] == "file"
    assert kinds["indicator:enrolment_rate"] == "indicator"
    assert kinds["education/enrolment"] == "table"
    # the indicator's other inputs are not up- or downstream of the enrolment table
    assert "ngsi-ld:Building" not in kinds
    assert {(e.source, e.target) for e in graph.edges} == {
        ("file:residents-2026-09.parquet", "public_security/residents"),
        ("public_security/residents", "education/enrolment"),
        ("education/schools", "education/enrolment"),
        ("education/enrolment", "indicator:enrolment_rate"),
    }
    shallow = lineage_graph(engine=engine, dataset_id="education/enrolment", depth=1)
    assert shallow.upstream == ["education/schools", "public_security/residents"]
    down = lineage_graph(engine=engine, dataset_id="file:residents-2026-09.parquet", depth=2)
    assert down.downstream == ["education/enrolment", "public_security/residents"]
    top = lineage_graph(engine=engine, dataset_id="indicator:enrolment_rate")
    assert {n.kind for n in top.nodes} >= {"entity_type", "url", "table", "file", "indicator"}
    alone = lineage_graph(engine=engine, dataset_id="health/nothing")
    assert (alone.nodes[0].id, alone.edges, alone.upstream) == ("health/nothing", [], [])


def test_repeated_runs_count_on_one_edge(engine: Engine) -> None:
    first = datetime(2026, 9, 1, tzinfo=UTC)
    later = datetime(2026, 9, 2, tzinfo=UTC)
    for at in (first, later):
        record_lineage(
            engine=engine,
            output="quality:public_security/residents",
            inputs=["public_security/residents", "public_security/residents"],
            activity="quality.run",
            detail={"at": at.isoformat()},
            at=at,
        )
    graph = lineage_graph(engine=engine, dataset_id="public_security/residents")
    (edge,) = graph.edges
    assert (edge.runs, edge.first_at, edge.at) == (2, first, later)
    assert edge.detail == {"at": later.isoformat()}


def test_bad_nodes(engine: Engine) -> None:
    for bad in ["", "residents", "file:", "Public/x", "a/b/c", "x" * 301, "file:a\nb"]:
        with pytest.raises(BadInput):
            node_kind(bad)
    with pytest.raises(BadInput):
        record_lineage(engine=engine, output="x", inputs=["a/b"], activity="load")
    with pytest.raises(BadInput):
        record_lineage(engine=engine, output="a/b", inputs=["nope"], activity="load")
    with pytest.raises(BadInput):
        record_lineage(engine=engine, output="a/b", inputs=["c/d"], activity="")
    with pytest.raises(BadInput):
        lineage_graph(engine=engine, dataset_id="a/b", depth=0)


def test_api(tmp_path: Path) -> None:
    with TestClient(create_app(load_settings(data_dir=tmp_path))) as client:
        _chain(client.app.state.engine)  # type: ignore[attr-defined]
        reader = bearer(tmp_path, org="health", role="operator")
        got = client.get("/api/lineage/education/enrolment", headers=reader)
        assert got.status_code == 200
        assert got.json()["downstream"] == ["indicator:enrolment_rate"]
        url = client.get(
            "/api/lineage/indicator:enrolment_rate", params={"depth": 1}, headers=reader
        ).json()
        assert "url:https://example.org/api?a=1" in url["upstream"]
        assert client.get("/api/lineage/nope", headers=reader).status_code == 400
        assert (
            client.get("/api/lineage/a/b", params={"depth": 99}, headers=reader).status_code == 400
        )
        assert client.get("/api/lineage/a/b").status_code == 401
        citizen = bearer(tmp_path, org="citizens", role="citizen", phone="13812345678")
        assert client.get("/api/lineage/a/b", headers=citizen).status_code == 403
