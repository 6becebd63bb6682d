"""Folder-watch, database-pull and HTTP-pull connectors: resumable, idempotent, clear refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy import Engine, create_engine, func, select, text

from citybrain.core.db import create_engine_for, upgrade
from citybrain.core.errors import BadInput, NotFound
from citybrain.governance.principal import Principal, Role
from citybrain.hub.connectors import db_pull as db_pull_module
from citybrain.hub.connectors.db_pull import DbPull, source_engine
from citybrain.hub.connectors.folder_watch import FolderWatch
from citybrain.hub.connectors.http_pull import HttpPull, PullFailed
from citybrain.hub.connectors.sinks import EntitySink, TableSink
from citybrain.hub.ngsild import service as ngsild
from citybrain.hub.ngsild.models import ngsild_history
from citybrain.hub.tables import service as tables
from citybrain.hub.tables.models import SqlJob, TableSpec

SPEC = {
    "department": "housing",
    "name": "properties",
    "primary_key": ["property_id"],
    "columns": [
        {"name": "property_id", "type": "string"},
        {"name": "owner", "type": "string"},
        {"name": "area", "type": "float64"},
        {"name": "updated_at", "type": "timestamp"},
    ],
}
TABLE = "housing/properties"


@pytest.fixture
def node(tmp_path: Path) -> tuple[Engine, Path]:
    """A node store with the properties table registered."""
    engine = create_engine_for(f"sqlite:///{tmp_path / 'node.db'}")
    upgrade(engine)
    tables.register_table(engine=engine, data_dir=tmp_path, spec=TableSpec.model_validate(SPEC))
    return engine, tmp_path


def _rows(node: tuple[Engine, Path]) -> dict[str, dict[str, Any]]:
    engine, data_dir = node
    page = tables.read_records(
        engine=engine,
        data_dir=data_dir,
        principal=Principal(subject="test", org="housing", role=Role.steward, issuer="370000"),
        department="housing",
        name="properties",
        limit=10_000,
    )
    return {r["property_id"]: r for r in page.records}


def _csv(rows: list[tuple[str, str, float]]) -> str:
    lines = ["property_id,owner,area,updated_at"]
    lines += [f"{p},{o},{a},2026-11-01T00:00:00Z" for p, o, a in rows]
    return "\n".join(lines) + "\n"


# --- folder watch -------------------------------------------------------------------------


def test_folder_watch_loads_settled_files_once(node: tuple[Engine, Path], tmp_path: Path) -> None:
    engine, data_dir = node
    inbox = tmp_path / "inbox"
    (inbox / "housing" / "properties").mkdir(parents=True)
    target = inbox / "housing" / "properties"
    (target / "a.csv").write_text(_csv([("h1", "A", 80.0), ("h2", "B", 95.5)]))
    (target / "b.csv.part").write_text("half a file")
    (target / ".hidden.csv").write_text("x")
    watch = FolderWatch(engine=engine, data_dir=data_dir, folder=inbox)
    assert watch.poll() == 0  # first sight: not settled yet
    assert watch.poll() == 1
    assert set(_rows(node)) == {"h1", "h2"}
    assert watch.poll() == 0  # nothing new
    # a changed file is loaded again, upserting by key
    (target / "a.csv").write_text(_csv([("h1", "A2", 81.0), ("h2", "B", 95.5)]))
    watch.poll()
    assert watch.poll() == 1
    assert _rows(node)["h1"]["owner"] == "A2"
    # a restart (new instance, same checkpoints) loads nothing twice
    again = FolderWatch(engine=engine, data_dir=data_dir, folder=inbox)
    assert again.poll(settle=False) == 0
    version = tables.describe_table(
        engine=engine, data_dir=data_dir, department="housing", name="properties"
    ).version
    assert again.poll(settle=False) == 0
    assert (
        tables.describe_table(
            engine=engine, data_dir=data_dir, department="housing", name="properties"
        ).version
        == version
    )


def test_folder_watch_reports_bad_rows_and_refused_files(
    node: tuple[Engine, Path], tmp_path: Path
) -> None:
    engine, data_dir = node
    inbox = tmp_path / "drop"
    inbox.mkdir()
    (inbox / "good.csv").write_text(_csv([("h1", "A", 80.0)]) + "h9,Z,not-a-number,\n")
    (inbox / "wrong.csv").write_text("id,name\n1,x\n")
    watch = FolderWatch(engine=engine, data_dir=data_dir, folder=inbox, table=TABLE)
    assert watch.poll(settle=False) == 1
    c = watch.counters
    assert (c.rows, c.rejected_rows, c.failed_files) == (1, 1, 1)
    assert any("area is not a valid float64" in r for r in c.reasons)
    assert any("missing column(s)" in r for r in c.reasons)
    # the refused file is not retried until it changes
    assert watch.poll(settle=False) == 0 and watch.counters.failed_files == 1
    assert set(_rows(node)) == {"h1"}


def test_folder_watch_refuses_bad_arguments(node: tuple[Engine, Path], tmp_path: Path) -> None:
    engine, data_dir = node
    with pytest.raises(BadInput, match="is not a folder"):
        FolderWatch(engine=engine, data_dir=data_dir, folder=tmp_path / "missing")
    with pytest.raises(BadInput, match="department/name"):
        FolderWatch(engine=engine, data_dir=data_dir, folder=tmp_path, table="properties")


def test_folder_cli_runs_once(tmp_path: Path) -> None:
    data = tmp_path / "node"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "x.csv").write_text(_csv([("h1", "A", 80.0), ("h2", "B", 70.0)]))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "citybrain", *args, "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert run("tables", "register", str(spec)).returncode == 0
    done = run("connectors", "folder", str(inbox), "--table", TABLE, "--once")
    assert done.returncode == 0, done.stderr
    assert "files 1" in done.stdout and "rows 2" in done.stdout
    bad = run("connectors", "folder", str(tmp_path / "nope"), "--once")
    assert bad.returncode == 2 and "is not a folder" in bad.stderr


# --- database pull (PostgreSQL) -----------------------------------------------------------


@pytest.fixture
def pg_source(postgres_url: str) -> Iterator[tuple[Engine, str]]:
    """A source table in PostgreSQL, dropped after the test."""
    engine = create_engine(postgres_url)
    name = f"src_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(
            text(
                f"CREATE TABLE {name} (property_id text PRIMARY KEY, owner text, "
                "area numeric(10,2), updated_at timestamptz NOT NULL)"
            )
        )
    yield engine, name
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
    engine.dispose()


def _insert(engine: Engine, table: str, rows: list[tuple[str, str, float, datetime]]) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO {table} VALUES (:p, :o, :a, :u) ON CONFLICT (property_id) "
                "DO UPDATE SET owner = :o, area = :a, updated_at = :u"
            ),
            [{"p": p, "o": o, "a": a, "u": u} for p, o, a, u in rows],
        )


T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def test_db_pull_is_incremental_and_never_skips_ties(
    node: tuple[Engine, Path], pg_source: tuple[Engine, str], postgres_url: str
) -> None:
    engine, data_dir = node
    source, name = pg_source
    # three rows share one timestamp and straddle the batch boundary (batch of 2)
    _insert(
        source,
        name,
        [
            ("h1", "A", 80.0, T0),
            ("h2", "B", 90.0, T0 + timedelta(minutes=1)),
            ("h3", "C", 70.0, T0 + timedelta(minutes=1)),
            ("h4", "D", 60.0, T0 + timedelta(minutes=1)),
            ("h5", "E", 50.0, T0 + timedelta(minutes=2)),
        ],
    )

    def pull() -> DbPull:
        return DbPull(
            engine=engine,
            source=source_engine(postgres_url),
            name="properties-from-pg",
            cursor="updated_at",
            sink=TableSink(engine=engine, data_dir=data_dir, table=TABLE),
            table=name,
            batch=2,
        )

    first = pull().run_once()
    assert (first.applied, first.rejected, first.batches) == (5, 0, 3)
    assert set(_rows(node)) == {"h1", "h2", "h3", "h4", "h5"}
    # a change and a new row; a restart resumes from the checkpoint
    _insert(
        source,
        name,
        [("h2", "B2", 91.0, T0 + timedelta(minutes=5)), ("h6", "F", 40.0, T0 + timedelta(hours=1))],
    )
    second = pull().run_once()
    assert second.applied == 2
    rows = _rows(node)
    assert len(rows) == 6 and rows["h2"]["owner"] == "B2" and rows["h2"]["area"] == 91.0
    assert pull().run_once().applied == 0


def test_db_pull_crash_before_checkpoint_leaves_no_duplicates(
    node: tuple[Engine, Path],
    pg_source: tuple[Engine, str],
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, data_dir = node
    source, name = pg_source
    _insert(source, name, [(f"h{i}", "X", 10.0 + i, T0 + timedelta(minutes=i)) for i in range(7)])
    pull = DbPull(
        engine=engine,
        source=source_engine(postgres_url),
        name="crashy",
        cursor="updated_at",
        sink=TableSink(engine=engine, data_dir=data_dir, table=TABLE),
        table=name,
        batch=3,
    )
    real_write = db_pull_module.checkpoints.write
    calls = {"n": 0}

    def failing_write(*args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the second batch is written, then the process "dies"
            raise RuntimeError("killed")
        real_write(*args)

    monkeypatch.setattr(db_pull_module.checkpoints, "write", failing_write)
    with pytest.raises(RuntimeError):
        pull.run_once()
    monkeypatch.setattr(db_pull_module.checkpoints, "write", real_write)
    pull.run_once()
    rows = _rows(node)
    assert len(rows) == 7 and rows["h6"]["area"] == 16.0
    engine_rows = tables.run_sql(
        engine=engine,
        data_dir=data_dir,
        principal=Principal(subject="test", org="housing", role=Role.steward, issuer="370000"),
        job=SqlJob(sql="SELECT count(*) AS n FROM housing.properties"),
    )
    assert engine_rows.rows == [[7]]


def test_db_pull_into_entities_records_history_once(
    tmp_path: Path, pg_source: tuple[Engine, str], postgres_url: str
) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'node.db'}")
    upgrade(engine)
    source, name = pg_source
    _insert(source, name, [("b1", "A", 100.0, T0), ("b2", "B", 120.0, T0)])

    def pull(name_suffix: str = "") -> DbPull:
        return DbPull(
            engine=engine,
            source=source_engine(postgres_url),
            name="buildings" + name_suffix,
            cursor="updated_at",
            sink=EntitySink(
                entity_type="Building",
                id_template="urn:ngsi-ld:Building:{property_id}",
                observed_field="updated_at",
            ),
            table=name,
        )

    assert pull().run_once().applied == 2
    entity = ngsild.get_entity(engine=engine, tenant="", entity_id="urn:ngsi-ld:Building:b1")
    assert any(k.endswith("area") for k in entity)
    # a second connector over the same rows (a replay) adds no history
    replay = pull("-replay").run_once()
    assert (replay.applied, replay.duplicates) == (0, 2)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(ngsild_history)).scalar_one()
    assert count == 4  # two entities x (owner, area)


def test_db_pull_refuses_bad_sources(
    node: tuple[Engine, Path], pg_source: tuple[Engine, str], postgres_url: str
) -> None:
    engine, data_dir = node
    _source, name = pg_source
    sink = TableSink(engine=engine, data_dir=data_dir, table=TABLE)
    with pytest.raises(BadInput, match="not a usable database URL"):
        source_engine("nosuchdb://x")
    with pytest.raises(BadInput, match="cannot reach the source database"):
        source_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    args: dict[str, Any] = {"engine": engine, "source": source_engine(postgres_url), "sink": sink}
    with pytest.raises(BadInput, match="has no column changed"):
        DbPull(name="x", cursor="changed", table=name, **args)
    with pytest.raises(BadInput, match="one SELECT"):
        DbPull(name="x", cursor="updated_at", query=f"DELETE FROM {name}", **args)
    with pytest.raises(BadInput, match="cannot be read"):
        DbPull(name="x", cursor="updated_at", table="no_such_table", **args)
    with pytest.raises(NotFound, match="no departmental table housing/none"):
        TableSink(engine=engine, data_dir=data_dir, table="housing/none")


def test_db_cli_pulls_from_postgres(
    pg_source: tuple[Engine, str], postgres_url: str, tmp_path: Path
) -> None:
    source, name = pg_source
    _insert(source, name, [("h1", "A", 80.0, T0), ("h2", "B", 81.0, T0)])
    data = tmp_path / "node"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    base = [sys.executable, "-m", "citybrain"]
    opts = ["--data", str(data)]
    reg = subprocess.run([*base, "tables", "register", str(spec), *opts], capture_output=True)
    assert reg.returncode == 0
    args = [*base, "connectors", "db", postgres_url, *opts, "--cursor", "updated_at"]
    done = subprocess.run(
        [*args, "--source-table", name, "--table", TABLE],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "applied 2" in done.stdout
    bad = subprocess.run([*args, "--source-table", name], capture_output=True, text=True)
    assert bad.returncode == 2 and "--table" in bad.stderr


# --- HTTP pull ----------------------------------------------------------------------------


class FeedServer:
    """A small JSON API: readings since a time, two per page, linked by a next URL."""

    def __init__(self) -> None:
        self.readings: list[dict[str, Any]] = []
        self.mode = "ok"
        self.requests: list[str] = []
        feed = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                feed.requests.append(self.path)
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if feed.mode == "error":
                    self._send(503, b"maintenance")
                    return
                if feed.mode == "garbage":
                    self._send(200, b"<html>not json</html>")
                    return
                since = query.get("since", [""])[0]
                page = int(query.get("page", ["0"])[0])
                chosen = sorted(
                    (r for r in feed.readings if r["observed"] >= since),
                    key=lambda r: r["observed"],
                )
                chunk = chosen[page * 2 : page * 2 + 2]
                more = len(chosen) > page * 2 + 2
                body: dict[str, Any] = {"data": {"items": chunk}}
                if url.path == "/linked" and more:
                    body["next"] = f"/linked?since={since}&page={page + 1}"
                self._send(
                    200,
                    json.dumps(body).encode(),
                    more and url.path == "/feed",
                    f"/feed?since={since}&page={page + 1}",
                )

            def _send(self, status: int, data: bytes, link: bool = False, nxt: str = "") -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if link:
                    self.send_header("Link", f'<{nxt}>; rel="next"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, station: str, minutes: int, pm25: float) -> None:
        """Publish one reading."""
        stamp = (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
        self.readings.append({"station": station, "observed": stamp, "pm25": pm25})


@pytest.fixture
def feed() -> Iterator[FeedServer]:
    server = FeedServer()
    yield server
    server.server.shutdown()


def test_http_pull_pages_resumes_and_keeps_history_once(tmp_path: Path, feed: FeedServer) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'node.db'}")
    upgrade(engine)
    for minute, (station, value) in enumerate([("s1", 10.0), ("s2", 20.0), ("s1", 11.0)]):
        feed.add(station, minute, value)

    def pull() -> HttpPull:
        return HttpPull(
            engine=engine,
            url=f"{feed.url}/feed",
            name="air",
            sink=EntitySink(
                entity_type="AirQualityObserved",
                id_template="urn:ngsi-ld:AirQualityObserved:{station}",
                observed_field="observed",
            ),
            records_path="data.items",
            cursor_field="observed",
            since_param="since",
        )

    first = pull().run_once()
    assert first.applied == 3 and first.batches == 2  # two pages via the Link header
    entity = ngsild.get_entity(
        engine=engine, tenant="", entity_id="urn:ngsi-ld:AirQualityObserved:s1"
    )
    pm25 = next(v for k, v in entity.items() if k.endswith("pm25"))
    assert pm25["value"] == 11.0
    feed.add("s2", 10, 25.0)
    feed.requests.clear()
    second = pull().run_once()
    # resumed from the checkpoint: the last reading again (absorbed) and the new one
    assert "since=2026-11-01T08%3A02%3A00Z" in feed.requests[0]
    assert (second.applied, second.duplicates) == (1, 1)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(ngsild_history)).scalar_one()
    assert count == 4


def test_http_pull_into_table_with_next_field(node: tuple[Engine, Path], feed: FeedServer) -> None:
    engine, data_dir = node
    spec = {
        "department": "environment",
        "name": "air",
        "primary_key": ["station", "observed"],
        "columns": [
            {"name": "station", "type": "string"},
            {"name": "observed", "type": "timestamp"},
            {"name": "pm25", "type": "float64"},
        ],
    }
    tables.register_table(engine=engine, data_dir=data_dir, spec=TableSpec.model_validate(spec))
    for minute in range(5):
        feed.add(f"s{minute % 2}", minute, 10.0 + minute)
    pull = HttpPull(
        engine=engine,
        url=f"{feed.url}/linked",
        name="air-table",
        sink=TableSink(engine=engine, data_dir=data_dir, table="environment/air"),
        records_path="data.items",
        next_field="next",
    )
    assert pull.run_once().applied == 5
    pull.run_once()  # no cursor: everything again, absorbed by the key
    described = tables.describe_table(
        engine=engine, data_dir=data_dir, department="environment", name="air"
    )
    assert described.rows == 5


def test_http_pull_refuses_what_it_cannot_use(tmp_path: Path, feed: FeedServer) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'node.db'}")
    upgrade(engine)
    sink = EntitySink(entity_type="T", id_template="urn:ngsi-ld:T:{station}", observed_field=None)
    with pytest.raises(BadInput, match="http:// or https://"):
        HttpPull(engine=engine, url="ftp://x", name="x", sink=sink)
    with pytest.raises(BadInput, match="needs --cursor-field"):
        HttpPull(engine=engine, url=feed.url, name="x", sink=sink, since_param="since")
    with pytest.raises(BadInput, match="placeholder"):
        EntitySink(entity_type="T", id_template="urn:ngsi-ld:T:fixed", observed_field=None)
    pull = HttpPull(engine=engine, url=f"{feed.url}/feed", name="x", sink=sink, timeout=2)
    with pytest.raises(PullFailed, match="no list of JSON objects as the response"):
        pull.run_once()
    feed.mode = "error"
    with pytest.raises(PullFailed, match="answered 503"):
        pull.run_once()
    feed.mode = "garbage"
    with pytest.raises(PullFailed, match="did not answer JSON"):
        pull.run_once()
    closed = HttpPull(engine=engine, url="http://127.0.0.1:1/x", name="y", sink=sink, timeout=2)
    with pytest.raises(PullFailed, match="cannot fetch"):
        closed.run_once()
    # a record without the id field is counted, not fatal
    feed.mode = "ok"
    feed.add("s1", 0, 1.0)
    feed.readings.append({"observed": "2026-11-01T09:00:00Z", "pm25": 3})
    ok = HttpPull(
        engine=engine, url=f"{feed.url}/feed", name="z", sink=sink, records_path="data.items"
    )
    counters = ok.run_once()
    assert counters.applied == 1 and counters.rejected == 1
    assert "no station" in counters.reasons[0]
