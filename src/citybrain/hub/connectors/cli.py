"""`citybrain connectors`: run a connector against a node's data folder."""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console
from sqlalchemy import Engine

from citybrain.core.config import load_settings
from citybrain.core.db import check_connection, create_engine_for, upgrade
from citybrain.core.errors import BadInput, CityBrainError
from citybrain.hub.connectors.db_pull import DbPull, source_engine
from citybrain.hub.connectors.folder_watch import FolderWatch
from citybrain.hub.connectors.http_pull import HttpPull
from citybrain.hub.connectors.mqtt_telemetry import (
    DEFAULT_ID,
    DEFAULT_PATTERN,
    Mapping,
    TelemetryConnector,
)
from citybrain.hub.connectors.sinks import Counters, EntitySink, TableSink

app = typer.Typer(no_args_is_help=True)
DATA = typer.Option(..., "--data", help="the node's data folder")
EVERY = typer.Option(0.0, "--every", help="repeat every this many seconds (0: run once)")


def _open(data: Path) -> tuple[Engine, Path]:
    settings = load_settings(data_dir=data)
    data.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(settings.effective_database_url)
    check_connection(engine)
    upgrade(engine)
    return engine, settings.data_dir


def _stop_event() -> threading.Event:
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stop


def _sink(
    engine: Engine,
    data_dir: Path,
    table: str | None,
    entity_type: str | None,
    id_template: str | None,
    observed: str | None,
) -> TableSink | EntitySink:
    if (table is None) == (entity_type is None):
        raise BadInput("give either --table department/name or --entity-type with --id-template")
    if table is not None:
        return TableSink(engine=engine, data_dir=data_dir, table=table)
    if not id_template:
        raise BadInput("--entity-type needs --id-template, e.g. urn:ngsi-ld:Sensor:{code}")
    return EntitySink(
        entity_type=str(entity_type), id_template=id_template, observed_field=observed
    )


def _schedule(run: Callable[[], str], every: float) -> None:
    """Run once, or on a schedule until Ctrl-C; a failed run is reported and retried."""
    console = Console()
    stop = _stop_event() if every > 0 else threading.Event()
    while True:
        try:
            console.print(run())
        except CityBrainError as exc:
            if every <= 0:
                raise
            console.print(f"[red]run failed, retrying in {every:g} s:[/red] {exc.message}")
        if every <= 0 or stop.wait(every):
            return


def _summary(c: Counters) -> str:
    line = (
        f"batches {c.batches}, applied {c.applied}, rejected {c.rejected}, "
        f"duplicates {c.duplicates}"
    )
    return line + "".join(f"\n  {reason}" for reason in c.reasons[-5:])


def _name(*parts: str | None) -> str:
    return hashlib.sha256("|".join(p or "" for p in parts).encode()).hexdigest()[:16]


@app.command("folder")
def folder_watch(
    folder: Path = typer.Argument(..., help="the folder to watch"),
    data: Path = DATA,
    table: str | None = typer.Option(
        None, help="load every file into department/name (default: FOLDER/department/name/file)"
    ),
    every: float = typer.Option(2.0, help="seconds between polls"),
    once: bool = typer.Option(False, help="load what is there now and stop"),
) -> None:
    """Load CSV, JSON Lines and Parquet files into tables as they land in a folder."""
    engine, data_dir = _open(data)
    watch = FolderWatch(engine=engine, data_dir=data_dir, folder=folder, table=table)
    console = Console()
    if once:
        watch.poll(settle=False)
    else:
        stop = _stop_event()
        with console.status("watching") as status:
            while not stop.wait(every):
                watch.poll()
                c = watch.counters
                status.update(f"files {c.files}  rows {c.rows}  failed files {c.failed_files}")
    c = watch.counters
    console.print(
        f"files {c.files} (unchanged {c.unchanged}), rows {c.rows}, "
        f"rejected rows {c.rejected_rows}, failed files {c.failed_files}"
    )
    for reason in c.reasons[-5:]:
        console.print(f"  {reason}")


@app.command("db")
def db_pull(
    url: str = typer.Argument(..., help="source SQLAlchemy URL, e.g. postgresql+psycopg://..."),
    data: Path = DATA,
    cursor: str = typer.Option(..., help="column that grows with every change (updated_at, id)"),
    source_table: str | None = typer.Option(None, help="source table ([schema.]name)"),
    query: str | None = typer.Option(None, help="source SELECT, instead of a table"),
    table: str | None = typer.Option(None, help="target table department/name"),
    entity_type: str | None = typer.Option(None, help="target NGSI-LD entity type"),
    id_template: str | None = typer.Option(None, help="entity id from fields: urn:ngsi-ld:T:{f}"),
    observed: str | None = typer.Option(None, help="field giving observedAt of entity attributes"),
    key: list[str] = typer.Option([], help="tie-break columns (default: the target's key)"),
    batch: int = typer.Option(5000, help="rows per batch"),
    name: str | None = typer.Option(None, help="checkpoint name (default: from the arguments)"),
    every: float = EVERY,
) -> None:
    """Pull new and changed rows from a database, incrementally by a column."""
    engine, data_dir = _open(data)
    sink = _sink(engine, data_dir, table, entity_type, id_template, observed)
    pull = DbPull(
        engine=engine,
        source=source_engine(url),
        name=name or _name(url, source_table, query, table, entity_type),
        cursor=cursor,
        sink=sink,
        table=source_table,
        query=query,
        keys=key or None,
        batch=batch,
    )
    _schedule(lambda: _summary(pull.run_once()), every)


@app.command("http")
def http_pull(
    url: str = typer.Argument(..., help="the JSON API to pull"),
    data: Path = DATA,
    records: str = typer.Option("", help="dotted path to the list of records ('' = the body)"),
    cursor_field: str | None = typer.Option(None, help="record field that grows with changes"),
    since_param: str | None = typer.Option(None, help="query parameter carrying the checkpoint"),
    next_field: str | None = typer.Option(None, help="dotted path to the next page's URL"),
    header: list[str] = typer.Option([], help="extra request header 'Name: value'"),
    table: str | None = typer.Option(None, help="target table department/name"),
    entity_type: str | None = typer.Option(None, help="target NGSI-LD entity type"),
    id_template: str | None = typer.Option(None, help="entity id from fields: urn:ngsi-ld:T:{f}"),
    observed: str | None = typer.Option(None, help="field giving observedAt of entity attributes"),
    timeout: float = typer.Option(10.0, help="seconds to wait for the source"),
    name: str | None = typer.Option(None, help="checkpoint name (default: from the arguments)"),
    every: float = EVERY,
) -> None:
    """Pull JSON records from an HTTP API, page by page, on a schedule."""
    headers: dict[str, str] = {}
    for raw in header:
        field, sep, value = raw.partition(":")
        if not sep or not field.strip():
            raise BadInput(f"a header is 'Name: value', not {raw!r}")
        headers[field.strip()] = value.strip()
    engine, data_dir = _open(data)
    sink = _sink(engine, data_dir, table, entity_type, id_template, observed)
    pull = HttpPull(
        engine=engine,
        url=url,
        name=name or _name(url, records, table, entity_type),
        sink=sink,
        records_path=records,
        cursor_field=cursor_field,
        since_param=since_param,
        next_field=next_field,
        headers=headers,
        timeout=timeout,
    )
    try:
        _schedule(lambda: _summary(pull.run_once()), every)
    finally:
        pull.close()


@app.command("mqtt")
def mqtt_telemetry(
    data: Path = typer.Option(..., "--data", help="the node's data folder"),
    broker: str = typer.Option("mqtt://127.0.0.1:1883", help="mqtt://host:port"),
    pattern: str = typer.Option(DEFAULT_PATTERN, help="topic pattern with {type} and {device}"),
    id_template: str = typer.Option(DEFAULT_ID, help="entity id template"),
    name: str = typer.Option("citybrain-telemetry", help="client id: the broker keeps its session"),
    seconds: float = typer.Option(0, help="stop after this many seconds (0: until Ctrl-C)"),
) -> None:
    """Ingest device telemetry from an MQTT broker into NGSI-LD entities with history."""
    settings = load_settings(data_dir=data)
    data.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(settings.effective_database_url)
    check_connection(engine)
    upgrade(engine)
    connector = TelemetryConnector(
        engine=engine, broker=broker, mapping=Mapping(pattern, id_template), client_id=name
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    console = Console()
    connector.start()
    began = time.monotonic()
    try:
        with console.status("") as status:
            while not stop.is_set() and (seconds <= 0 or time.monotonic() - began < seconds):
                c = connector.counters
                status.update(
                    f"applied {c.applied}  duplicates {c.duplicates}  rejected {c.rejected}"
                )
                stop.wait(0.5)
    finally:
        connector.stop()
    c = connector.counters
    console.print(f"applied {c.applied}, duplicates {c.duplicates}, rejected {c.rejected}")
