"""One writer at a time on a SQLite file, across the worker processes of a node.

SQLite lets one connection write at a time and makes the others sleep and retry (1, 2, 5 ...
100 ms between tries): two workers whose group commits met on the file waited on each
other's sleeps, and served fewer writes than one. The group commits (NGSI-LD's and the
settlements') first take an exclusive `flock` on `<database>.writer-lock`, which wakes the
next writer the moment the last one has committed. Closing the descriptor releases it, as
does the death of the process. Other writers (imports, the notifier) still meet SQLite's
own lock and its busy timeout.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine


def writer_lock_path(engine: Engine) -> str | None:
    """The lock file of an engine's SQLite file, or None (PostgreSQL, in-memory SQLite)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database + ".writer-lock"


def try_writer_lock(path: str | None) -> int | None | bool:
    """Take the lock if it is free: its descriptor, None if there is none, else False."""
    if path is None:
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    return fd


def wait_writer_lock(path: str | None) -> int | None:
    """Wait for the lock (in a thread, never on an event loop); its descriptor, or None."""
    if path is None:
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def release_writer_lock(fd: int | None | bool) -> None:
    """Release a lock taken by try_writer_lock or wait_writer_lock (None, False: nothing)."""
    if isinstance(fd, int) and not isinstance(fd, bool):
        os.close(fd)


@contextmanager
def writer_lock(engine: Engine) -> Iterator[None]:
    """Hold an engine's writer lock for the block (in a thread)."""
    fd = wait_writer_lock(writer_lock_path(engine))
    try:
        yield
    finally:
        release_writer_lock(fd)
