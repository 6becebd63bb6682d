"""`citybrain connectors`: run a connector against a node's data folder."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console

from citybrain.core.config import load_settings
from citybrain.core.db import check_connection, create_engine_for, upgrade
from citybrain.hub.connectors.mqtt_telemetry import (
    DEFAULT_ID,
    DEFAULT_PATTERN,
    Mapping,
    TelemetryConnector,
)

app = typer.Typer(no_args_is_help=True)


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
