"""Folder watch: files that land in a folder are loaded into departmental tables.

A file is taken once its size and modification time have stayed the same for one poll (so a
file still being copied is left alone); names starting with '.' or ending in .part/.tmp are
ignored. The checkpoint per file is its sha256, written after the load: a restart re-checks
every file and skips those whose bytes were applied, and the table load itself is idempotent
by sha256, so a crash between load and checkpoint cannot double anything.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from citybrain.core.errors import BadInput, CityBrainError
from citybrain.hub.connectors import checkpoints
from citybrain.hub.connectors.sinks import split_table
from citybrain.hub.tables import service as tables
from citybrain.hub.tables.files import guess_format

log = logging.getLogger(__name__)
CONNECTOR = "folder-watch"
SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")
IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload")


@dataclass
class FolderCounters:
    """What the folder watch has done since it started."""

    files: int = 0
    unchanged: int = 0
    rows: int = 0
    rejected_rows: int = 0
    failed_files: int = 0
    reasons: list[str] = field(default_factory=list)


class FolderWatch:
    """Load new and changed files from a folder into tables, one table version per file.

    With `table` set, every file goes to that table; otherwise files are laid out as
    FOLDER/<department>/<name>/<file>, naming their table by the path.
    """

    def __init__(
        self, *, engine: Engine, data_dir: Path, folder: Path, table: str | None = None
    ) -> None:
        if not folder.is_dir():
            raise BadInput(f"{folder} is not a folder")
        self.engine, self.data_dir, self.folder = engine, data_dir, folder.resolve()
        self.table = split_table(table) if table else None
        if self.table:
            tables.describe_table(
                engine=engine, data_dir=data_dir, department=self.table[0], name=self.table[1]
            )
        self.counters = FolderCounters()
        self._seen: dict[Path, tuple[int, int]] = {}

    def _target(self, path: Path) -> tuple[str, str] | None:
        if self.table:
            return self.table
        parts = path.relative_to(self.folder).parts
        return (parts[0], parts[1]) if len(parts) == 3 else None

    def _candidates(self) -> list[Path]:
        found = []
        root = self.folder.resolve()
        for path in sorted(self.folder.rglob("*")):
            name = path.name
            if not path.is_file() or name.startswith(".") or name.endswith(IGNORED_SUFFIXES):
                continue
            # a link dropped into the folder must not make the connector read files elsewhere
            if path.is_symlink() or not path.resolve().is_relative_to(root):
                log.warning("file skipped: it leaves the watched folder", extra={"file": name})
                continue
            if name.lower().endswith(SUFFIXES):
                found.append(path)
        return found

    def _settled(self, path: Path) -> bool:
        stat = path.stat()
        signature = (stat.st_size, stat.st_mtime_ns)
        previous = self._seen.get(path)
        self._seen[path] = signature
        return previous == signature

    def poll(self, *, settle: bool = True) -> int:
        """Load every settled new or changed file; return how many files were loaded."""
        loaded = 0
        for path in self._candidates():
            if settle and not self._settled(path):
                continue
            target = self._target(path)
            key = str(path.relative_to(self.folder))
            if target is None:
                continue
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            with self.engine.connect() as conn:
                done = checkpoints.read(conn, CONNECTOR, str(path))
            if done is not None and done.split(":")[-1] == digest:
                continue
            if self._load(path, key, target, data, digest):
                loaded += 1
        return loaded

    def _load(
        self, path: Path, key: str, target: tuple[str, str], data: bytes, digest: str
    ) -> bool:
        try:
            result = tables.load_file(
                engine=self.engine,
                data_dir=self.data_dir,
                department=target[0],
                name=target[1],
                data=data,
                fmt=guess_format(path.name),
                source=key,
            )
        except CityBrainError as exc:
            # a file the table cannot take is not retried until its bytes change
            self.counters.failed_files += 1
            self.counters.reasons = (self.counters.reasons + [f"{key}: {exc.message}"])[-20:]
            log.warning("file refused", extra={"file": key, "reason": exc.message})
            with self.engine.begin() as conn:
                checkpoints.write(conn, CONNECTOR, str(path), f"failed:{digest}")
            return False
        self.counters.files += 1
        if result.status == "unchanged":
            self.counters.unchanged += 1
        self.counters.rows += result.accepted
        self.counters.rejected_rows += result.rejected
        for rejection in result.rejections[:5]:
            self.counters.reasons.append(f"{key} row {rejection.row}: {rejection.reason}")
        self.counters.reasons = self.counters.reasons[-20:]
        log.info(
            "file loaded",
            extra={"file": key, "accepted": result.accepted, "rejected": result.rejected},
        )
        with self.engine.begin() as conn:
            checkpoints.write(conn, CONNECTOR, str(path), digest)
        return True
