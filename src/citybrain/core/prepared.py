"""Statements compiled once and run on SQLite's own cursor, past SQLAlchemy's execution layer.

A single-entity write runs a few one-row statements, and SQLAlchemy's work around each (the
execution context, parameter and result processing) took about 30 µs, against 5 to 7 µs for
SQLite's own. A Prepared statement is compiled once per database with the bind and result
processors of its columns, so values are converted exactly as SQLAlchemy converts them (JSON
with the engine's serializer, time stamps in SQLite's text form), then go to the driver in
the caller's transaction. Driver errors come back as SQLAlchemy's exceptions
(IntegrityError, OperationalError ...). On any other database, and for statements whose
columns have defaults computed in Python, it runs through `conn.execute` as before.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Plan:
    """A statement as the driver takes it: SQL text, bind names in order and converters."""

    sql: str
    names: tuple[str, ...]
    binds: tuple[Processor, ...]
    results: tuple[Processor, ...]


_NO_PLAN: Any = object()  # a statement that must go through SQLAlchemy on this database


class Prepared:
    """One statement, compiled once per database, run on the SQLite driver directly."""

    def __init__(self, statement: Any, keys: Sequence[str] | None = None) -> None:
        """keys: the columns an insert gives values for (the others take their defaults)."""
        self.statement = statement
        self.keys = list(keys) if keys is not None else None
        self._plans: weakref.WeakKeyDictionary[Dialect, Any] = weakref.WeakKeyDictionary()

    def _plan(self, dialect: Dialect) -> Any:
        plan = self._plans.get(dialect)
        if plan is None:
            plan = self._plans[dialect] = _compile(self.statement, dialect, self.keys)
        return plan

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run the statement once in the caller's transaction; return the rows it changed."""
        plan = self._plan(conn.dialect)
        if plan is _NO_PLAN:
            return int(conn.execute(self.statement, dict(params)).rowcount)
        values = _values(plan, params)
        return int(_run(conn, plan, values).rowcount)

    def executemany(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement for each row, in one driver call."""
        if not rows:
            return
        plan = self._plan(conn.dialect)
        if plan is _NO_PLAN:
            conn.execute(self.statement, [dict(r) for r in rows])
            return
        if len(rows) == 1:  # the driver's executemany costs more than execute for one row
            _run(conn, plan, _values(plan, rows[0]))
        else:
            _run(conn, plan, [_values(plan, r) for r in rows], many=True)

    def first(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Run a query and return its first row (converted as SQLAlchemy would), or None."""
        plan = self._plan(conn.dialect)
        if plan is _NO_PLAN:
            row = conn.execute(self.statement, dict(params)).first()
            return None if row is None else tuple(row)
        found = _run(conn, plan, _values(plan, params)).fetchone()
        if found is None:
            return None
        return tuple(
            value if convert is None or value is None else convert(value)
            for value, convert in zip(found, plan.results, strict=True)
        )


def _compile(statement: Any, dialect: Dialect, keys: list[str] | None) -> Any:
    if dialect.name != "sqlite":
        return _NO_PLAN
    compiled: Any = statement.compile(dialect=dialect, column_keys=keys)
    if compiled.insert_prefetch or compiled.update_prefetch or not compiled.positional:
        return _NO_PLAN  # defaults SQLAlchemy computes per row: leave them to it
    names = tuple(compiled.positiontup or ())
    binds = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    columns = getattr(statement, "selected_columns", ())
    results = tuple(
        column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
    )
    return _Plan(str(compiled), names, binds, results)


def _values(plan: _Plan, params: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(
        params[name] if convert is None else convert(params[name])
        for name, convert in zip(plan.names, plan.binds, strict=True)
    )


def _run(conn: Connection, plan: _Plan, values: Any, many: bool = False) -> Any:
    """Execute on the driver's connection inside SQLAlchemy's transaction."""
    if not conn.in_transaction():
        # as SQLAlchemy's own execute would: the caller's commit then commits this statement
        conn.begin()
    driver: Any = conn.connection.driver_connection
    try:
        return driver.executemany(plan.sql, values) if many else driver.execute(plan.sql, values)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(
            plan.sql, values, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
        ) from exc
