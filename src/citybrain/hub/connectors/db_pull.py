"""Database pull: copy rows from any SQLAlchemy database, incrementally by a column.

Rows are read in keyset order (cursor column, then key columns) and the checkpoint is the last
(cursor, key) applied, so rows sharing a cursor value are never skipped at a batch boundary.
Table sinks upsert by key (a batch re-read after a crash changes nothing); entity sinks commit
the checkpoint in the same transaction as the entities.
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from citybrain.core.errors import BadInput
from citybrain.hub.connectors import checkpoints
from citybrain.hub.connectors.sinks import Counters, EntitySink, TableSink

log = logging.getLogger(__name__)
CONNECTOR = "db-pull"


def source_engine(url: str) -> Engine:
    """Open the source database, or refuse with a sentence saying why."""
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise BadInput(f"{url!r} is not a usable database URL: {exc}") from None
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        raise BadInput(f"cannot reach the source database: {_why(exc)}") from None
    return engine


def _why(exc: SQLAlchemyError) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]


def _encode(value: Any) -> list[Any]:
    # cursor values keep their type across restarts: a date-time is compared as a date-time
    if isinstance(value, datetime):
        return ["datetime", value.isoformat()]
    if isinstance(value, date):
        return ["date", value.isoformat()]
    if isinstance(value, Decimal):
        return ["decimal", str(value)]
    return ["plain", value]


def _decode(pair: list[Any]) -> Any:
    kind, value = pair
    if kind == "datetime":
        return datetime.fromisoformat(value)
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "decimal":
        return Decimal(value)
    return value


class DbPull:
    """Pull new and changed rows from a source table or query into a sink."""

    def __init__(
        self,
        *,
        engine: Engine,
        source: Engine,
        name: str,
        cursor: str,
        sink: TableSink | EntitySink,
        table: str | None = None,
        query: str | None = None,
        keys: list[str] | None = None,
        batch: int = 5000,
    ) -> None:
        if (table is None) == (query is None):
            raise BadInput("give either a source table or a source query")
        if batch < 1:
            raise BadInput("the batch size must be at least 1")
        self.engine, self.source, self.name, self.sink = engine, source, name, sink
        self.batch = batch
        quote = source.dialect.identifier_preparer.quote
        if table is not None:
            origin = ".".join(quote(part) for part in table.split("."))
        else:
            body = str(query).strip().rstrip(";")
            if not body.lower().startswith(("select", "with")):
                raise BadInput("the source query must be one SELECT")
            origin = f"({body})"
        default_keys = sink.primary_key if isinstance(sink, TableSink) else sorted(sink.fields)
        self.keys = keys or default_keys
        self.cursor = cursor
        columns = self._columns(origin)
        missing = [c for c in [cursor, *self.keys] if c not in columns]
        if missing:
            raise BadInput(
                f"the source has no column {', '.join(missing)} (it has {', '.join(columns)})"
            )
        order = [cursor, *self.keys]
        self._origin = origin
        self._order = ", ".join(f"src.{quote(c)}" for c in order)
        self._after = self._keyset([quote(c) for c in order])

    def _columns(self, origin: str) -> list[str]:
        try:
            with self.source.connect() as conn:
                result = conn.execute(text(f"SELECT * FROM {origin} AS src WHERE 1 = 0"))
                return list(result.keys())
        except SQLAlchemyError as exc:
            raise BadInput(f"the source cannot be read: {_why(exc)}") from None

    @staticmethod
    def _keyset(quoted: list[str]) -> str:
        # (c, k1, k2) > (:p0, :p1, :p2) spelled out, for databases without row comparison
        clauses = []
        for i, column in enumerate(quoted):
            equal = [f"src.{quoted[j]} = :p{j}" for j in range(i)]
            clauses.append("(" + " AND ".join([*equal, f"src.{column} > :p{i}"]) + ")")
        return " OR ".join(clauses)

    def checkpoint(self) -> list[Any] | None:
        """Return the last (cursor, keys...) applied, or None before the first run."""
        with self.engine.connect() as conn:
            raw = checkpoints.read(conn, CONNECTOR, self.name)
        return None if raw is None else [_decode(p) for p in json.loads(raw)]

    def _fetch(self, after: list[Any] | None) -> list[dict[str, Any]]:
        where = (
            f"WHERE src.{self.source.dialect.identifier_preparer.quote(self.cursor)} IS NOT NULL"
        )
        params: dict[str, Any] = {"limit": self.batch}
        if after is not None:
            where += f" AND ({self._after})"
            params.update({f"p{i}": v for i, v in enumerate(after)})
        sql = f"SELECT * FROM {self._origin} AS src {where} ORDER BY {self._order} LIMIT :limit"
        try:
            with self.source.connect() as conn:
                return [dict(r._mapping) for r in conn.execute(text(sql), params)]
        except SQLAlchemyError as exc:
            raise BadInput(f"the source cannot be read: {_why(exc)}") from None

    def run_once(self, counters: Counters | None = None) -> Counters:
        """Pull until the source has nothing newer than the checkpoint."""
        counters = counters or Counters()
        after = self.checkpoint()
        while True:
            rows = self._fetch(after)
            if not rows:
                return counters
            last = rows[-1]
            position = [last[self.cursor], *(last[k] for k in self.keys)]
            value = json.dumps([_encode(v) for v in position])
            if isinstance(self.sink, TableSink):
                self.sink.apply(rows, source=f"{CONNECTOR}:{self.name}", counters=counters)
                with self.engine.begin() as conn:
                    checkpoints.write(conn, CONNECTOR, self.name, value)
            else:
                with self.engine.begin() as conn:
                    self.sink.apply_in(conn, rows, counters=counters)
                    checkpoints.write(conn, CONNECTOR, self.name, value)
            counters.batches += 1
            log.info("rows pulled", extra={"connector": self.name, "rows": len(rows)})
            after = position
            if len(rows) < self.batch:
                return counters
