"""Serve one node from several worker processes on one port.

The parent prepares the node once (migrations, table imports) and starts the workers; each
worker listens on the node's port (SO_REUSEPORT) and serves requests with its own engine.
Background work (the notifier, the outbox, schedules, the import of the large tables) runs in
exactly one worker: the one holding the node's primary lock (`claim_primary`), taken again by
whichever
worker starts next if it dies. What the workers share is on disk or in the operational store:
the audit chain (appended under a file lock), the replay store, hosted @contexts, the queued
notifications; caches are per worker and time-bounded.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import signal
import socket
import time
from pathlib import Path
from typing import IO, Any

from citybrain.core.config import Settings, load_settings
from citybrain.core.logging import configure_logging
from citybrain.core.runtime import tune_gc

PRIMARY_LOCK = ".primary.lock"
_log = logging.getLogger("citybrain.node")
# the primary lock's file stays open while the worker serves (closing it releases the lock)
_held: dict[Path, IO[str]] = {}


def claim_primary(data_dir: Path) -> bool:
    """Take the node's primary lock if no other worker holds it; True when this one does."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / PRIMARY_LOCK, "a")  # noqa: SIM115 - held open while serving
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return False
    _held[data_dir.resolve()] = handle
    return True


def release_primary(data_dir: Path) -> None:
    """Let another worker take the primary lock (when this worker's app shuts down)."""
    handle = _held.pop(data_dir.resolve(), None)
    if handle is not None:
        handle.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket of its own for one worker on the node's port (SO_REUSEPORT).

    The kernel spreads new connections over the workers' sockets; with one shared socket,
    whichever worker wakes first accepts most keep-alive connections and the others idle.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _worker(overrides: dict[str, Any], index: int) -> None:
    """One worker: its own engine, app and socket on the node's port."""
    import uvicorn

    from citybrain.app import create_app
    from citybrain.core.db import create_engine_for

    settings = load_settings(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    engine = create_engine_for(settings.effective_database_url)
    app = create_app(settings, engine=engine, elect_primary=True, warm=True)
    tune_gc()
    config = uvicorn.Config(app, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    sock = listening_socket(settings.host, settings.port)
    _log.info("worker started", extra={"worker": index, "pid": os.getpid()})
    server.run(sockets=[sock])


def serve_workers(settings: Settings, overrides: dict[str, Any], workers: int) -> None:
    """Run `workers` processes on the node's port until SIGINT or SIGTERM; restart any that dies."""
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start(index: int) -> multiprocessing.process.BaseProcess:
        proc = context.Process(target=_worker, args=(overrides, index), daemon=False)
        proc.start()
        return proc

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    procs = [start(i) for i in range(workers)]
    try:
        while not stopping:
            for i, proc in enumerate(procs):
                if not proc.is_alive() and not stopping:
                    _log.warning("worker stopped; starting another", extra={"worker": i})
                    procs[i] = start(i)
            time.sleep(0.5)
    finally:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)  # each finishes its requests, then stops
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
        for s, handler in previous.items():
            signal.signal(s, handler)
