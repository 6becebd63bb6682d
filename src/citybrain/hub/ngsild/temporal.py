"""Temporal history of NGSI-LD attributes: time queries, lastN, and aggregation by period."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Integer, and_, func, literal, or_, select
from sqlalchemy.sql.elements import ColumnElement

from citybrain.core.errors import BadInput
from citybrain.hub.ngsild import scope_history
from citybrain.hub.ngsild.jsonld import is_iri
from citybrain.hub.ngsild.models import ngsild_history
from citybrain.hub.ngsild.scope_history import SCOPE

TIME_PROPERTIES = ("observedAt", "createdAt", "modifiedAt", "deletedAt")
AGGREGATIONS = ("totalCount", "distinctCount", "sum", "avg", "min", "max", "stddev", "sumsq")
_DURATION = re.compile(
    r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)


@dataclass(frozen=True)
class TemporalQuery:
    """Which part of the history to return, and how."""

    timerel: str | None = None
    time_at: datetime | None = None
    end_time_at: datetime | None = None
    last_n: int | None = None
    aggregations: tuple[str, ...] = ()
    period: timedelta | None = None
    # the time axis: deletedAt shows the deletions (instances of the NGSI-LD Null) alone
    timeproperty: str = "observedAt"


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    if "T" not in value:
        # clause 4.6.3: a DateTime, not a Date
        raise BadInput(f"{name} must be a date-time (with a time of day), not {value!r}")
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{name} is not a valid date-time: {value!r}") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def parse_duration(value: str) -> timedelta:
    """Parse an ISO 8601 duration in weeks, days, hours, minutes and seconds."""
    match = _DURATION.match(value)
    if not match or value in ("P", "PT"):
        raise BadInput(f"aggrPeriodDuration {value!r} is not an ISO 8601 duration like PT1H or P1D")
    weeks, days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    period = timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    if period <= timedelta(0):
        raise BadInput("aggrPeriodDuration must be longer than zero")
    return period


def _zero_duration(value: str) -> bool:
    match = _DURATION.match(value)
    if match is None or value in ("P", "PT"):
        return False
    return not any(float(g) for g in match.groups() if g)


def parse_query(params: dict[str, str], *, aggregated: bool) -> TemporalQuery:
    """Validate the temporal parameters of a request."""
    timerel = params.get("timerel")
    time_at = _time(params.get("timeAt"), "timeAt")
    end = _time(params.get("endTimeAt"), "endTimeAt")
    if timerel is not None:
        if timerel not in ("before", "after", "between"):
            raise BadInput("timerel must be before, after or between")
        if time_at is None:
            raise BadInput("timerel needs timeAt")
        if timerel == "between" and (end is None or end <= time_at):
            raise BadInput("timerel=between needs an endTimeAt after timeAt")
    timeproperty = params.get("timeproperty")
    if timeproperty is not None and timeproperty not in TIME_PROPERTIES:
        raise BadInput(f"timeproperty must be one of {', '.join(TIME_PROPERTIES)}")
    last_n = None
    if "lastN" in params:
        try:
            last_n = int(params["lastN"])
        except ValueError:
            raise BadInput("lastN must be a positive integer") from None
        if last_n < 1:
            raise BadInput("lastN must be a positive integer")
    methods: tuple[str, ...] = ()
    period = None
    if aggregated:
        raw = params.get("aggrMethods")
        if not raw:
            raise BadInput("aggregated temporal queries need aggrMethods")
        methods = tuple(m.strip() for m in raw.split(",") if m.strip())
        unknown = [m for m in methods if m not in AGGREGATIONS]
        if unknown:
            raise BadInput(f"unknown aggrMethods {unknown}; use {', '.join(AGGREGATIONS)}")
        duration = params.get("aggrPeriodDuration")
        # a zero duration (PT0S, the default) is one period over the whole time range
        if duration and not _zero_duration(duration):
            period = parse_duration(duration)
    return TemporalQuery(
        timerel, time_at, end, last_n, methods, period, timeproperty or "observedAt"
    )


INSTANCE_PREFIX = "urn:ngsi-ld:citybrain:instance:"


def instance_id(seq: int) -> str:
    """The instanceId (clause 4.5.7) of a history row: a URI naming the row."""
    return f"{INSTANCE_PREFIX}{seq}"


def instance_seq(value: str) -> int | None:
    """The history row an instanceId names, or None when it names none of ours."""
    if not is_iri(value):
        raise BadInput(f"the instanceId {value!r} is not a URI")
    tail = value.removeprefix(INSTANCE_PREFIX)
    return int(tail) if tail != value and tail.isdigit() else None


def history(
    *,
    engine: Engine,
    tenant: str,
    entity_ids: list[str],
    attributes: list[str] | None,
    tq: TemporalQuery,
) -> dict[str, dict[str, list[tuple[datetime, dict[str, Any]]]]]:
    """Return, per entity and attribute, the instances in time order (lastN applied)."""
    if not entity_ids:
        return {}
    stmt = select(
        ngsild_history.c.seq,
        ngsild_history.c.entity_id,
        ngsild_history.c.attribute,
        ngsild_history.c.at,
        ngsild_history.c.instance,
    ).where(ngsild_history.c.tenant == tenant, ngsild_history.c.entity_id.in_(entity_ids))
    if attributes:
        stmt = stmt.where(ngsild_history.c.attribute.in_(attributes))
    at = ngsild_history.c.at
    window: ColumnElement[bool] | None = None
    if tq.timerel == "before":
        window = at < tq.time_at
    elif tq.timerel == "after":
        window = at >= tq.time_at
    elif tq.timerel == "between":
        window = and_(at >= tq.time_at, at < tq.end_time_at)
    if window is not None:
        # the scope valid when the window opens was set before it: read the whole (short)
        # history of the scope and keep what applies below
        stmt = stmt.where(or_(window, ngsild_history.c.attribute == SCOPE))
    stmt = stmt.order_by(
        ngsild_history.c.entity_id,
        ngsild_history.c.attribute,
        ngsild_history.c.at,
        ngsild_history.c.seq,
    )
    out: dict[str, dict[str, list[tuple[datetime, dict[str, Any]]]]] = {}
    deletions = tq.timeproperty == "deletedAt"
    with engine.connect() as conn:
        for row in conn.execute(stmt):
            if ("deletedAt" in row.instance) != deletions:
                continue  # a deletion is on the deletedAt axis only, and alone there
            stamp = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
            instance = {**row.instance, "instanceId": instance_id(row.seq)}
            out.setdefault(row.entity_id, {}).setdefault(row.attribute, []).append(
                (stamp, instance)
            )
    if window is not None:
        span = scope_history.window_of(tq.timerel, tq.time_at, tq.end_time_at)
        for attrs in out.values():
            if SCOPE in attrs:
                kept = scope_history.carried_in(attrs[SCOPE], span)
                if kept:
                    attrs[SCOPE] = kept
                else:
                    del attrs[SCOPE]
    if tq.last_n:
        for attrs in out.values():
            for name in attrs:
                attrs[name] = attrs[name][-tq.last_n :]
    return out


Series = dict[str, dict[str, list[tuple[datetime, dict[str, Any]]]]]


@dataclass(frozen=True)
class TimeRange:
    """The time range a cut temporal answer covers (clause 6.3.10), for its Content-Range."""

    start: datetime
    end: datetime
    size: str  # lastN when it was asked for, else "*"

    def header(self) -> str:
        """The Content-Range header: ``date-time <start>-<end>/<size>``."""
        return f"date-time {_bound(self.start)}-{_bound(self.end)}/{self.size}"


def cut(series: Series, tq: TemporalQuery, limit: int) -> TimeRange | None:
    """Keep at most `limit` instances over all entities and attributes; their range if cut.

    The cut runs along time, the same for every attribute, so the range the answer names
    holds all of its instances: oldest first, or newest first when lastN is asked for. An
    attribute with no instance left stays, empty. Instances sharing the time at the cut all
    go to the next range (all stay only when they alone are over the limit).
    """
    times = [at for attrs in series.values() for points in attrs.values() for at, _ in points]
    if len(times) <= limit:
        return None
    newest_first = tq.last_n is not None
    times.sort(reverse=newest_first)
    first_left_out = times[limit]
    inside = [at for at in times[:limit] if at != first_left_out]
    edge = inside[-1] if inside else first_left_out
    for attrs in series.values():
        for name, points in attrs.items():
            attrs[name] = [p for p in points if (p[0] >= edge if newest_first else p[0] <= edge)]
    kept = [at for attrs in series.values() for points in attrs.values() for at, _ in points]
    if newest_first:
        # from the end of the time asked for (or the newest instance) back to the cut
        if tq.timerel == "between" and tq.end_time_at is not None:
            start = tq.end_time_at
        elif tq.timerel == "before" and tq.time_at is not None:
            start = tq.time_at
        else:
            start = max(kept)
        return TimeRange(start, edge, str(tq.last_n))
    opened = tq.timerel in ("after", "between") and tq.time_at is not None
    return TimeRange(tq.time_at if opened and tq.time_at else min(kept), edge, "*")


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _bound(value: datetime) -> str:
    """A period's start or end: whole seconds as written in queries, else milliseconds."""
    if value.microsecond:
        return _iso(value)
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _measure(method: str, value: Any) -> Any:
    """Counts are integers; the other aggregations are numbers with a fraction (2.0, not 2)."""
    if method in ("totalCount", "distinctCount") or value is None or isinstance(value, bool):
        return value
    return float(value)


def aggregate(
    series: list[tuple[datetime, dict[str, Any]]], tq: TemporalQuery
) -> dict[str, list[list[Any]]]:
    """Aggregate a series per period: each method gives [[value, startAt, endAt], ...]."""
    if not series:
        return {m: [] for m in tq.aggregations}
    start = tq.time_at if tq.timerel in ("after", "between") and tq.time_at else series[0][0]
    end = series[-1][0]
    period = tq.period or (end - start + timedelta(microseconds=1))
    buckets: dict[int, list[Any]] = {}
    for at, inst in series:
        index = math.floor((at - start) / period)
        buckets.setdefault(index, []).append(inst.get("value", inst.get("object")))
    result: dict[str, list[list[Any]]] = {m: [] for m in tq.aggregations}
    for index in sorted(buckets):
        values = buckets[index]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        lo = start + index * period
        hi = lo + period
        for method in tq.aggregations:
            if method == "totalCount":
                value: Any = len(values)
            elif method == "distinctCount":
                value = len({repr(v) for v in values})
            elif not numbers:
                continue
            elif method == "sum":
                value = sum(numbers)
            elif method == "avg":
                value = sum(numbers) / len(numbers)
            elif method == "min":
                value = min(numbers)
            elif method == "max":
                value = max(numbers)
            elif method == "sumsq":
                value = sum(n * n for n in numbers)
            else:
                mean = sum(numbers) / len(numbers)
                value = math.sqrt(sum((n - mean) ** 2 for n in numbers) / len(numbers))
            result[method].append([_measure(method, value), _bound(lo), _bound(hi)])
    return result


SQL_METHODS = {"totalCount", "sum", "avg", "min", "max", "sumsq", "stddev"}


def _bucket(engine: Engine, start: datetime, period: timedelta) -> ColumnElement[Any]:
    """SQL expression numbering the period each row's time falls in."""
    seconds = period.total_seconds()
    at = ngsild_history.c.at
    if engine.dialect.name == "postgresql":
        return func.floor(func.extract("epoch", at - literal(start)) / seconds)
    naive = start.astimezone(UTC).replace(tzinfo=None)
    # julianday differences carry float error; nudge by a millionth of a period before truncating
    days = func.julianday(at) - func.julianday(literal(naive.isoformat(sep=" ")))
    return func.cast(days * 86400.0 / seconds + 1e-6, Integer)


def aggregate_in_sql(
    *,
    engine: Engine,
    tenant: str,
    entity_id: str,
    attribute: str,
    tq: TemporalQuery,
    first: datetime,
) -> dict[str, list[list[Any]]] | None:
    """Aggregate numeric history in the database; None when Python must do it instead."""
    if not set(tq.aggregations) <= SQL_METHODS or tq.last_n:
        return None
    start = tq.time_at if tq.timerel in ("after", "between") and tq.time_at else first
    period = tq.period
    if period is None:
        return None
    h = ngsild_history.c
    bucket = _bucket(engine, start, period).label("bucket")
    stmt = select(
        bucket,
        func.count(),
        func.count(h.number),
        func.sum(h.number),
        func.avg(h.number),
        func.min(h.number),
        func.max(h.number),
        func.sum(h.number * h.number),
    ).where(h.tenant == tenant, h.entity_id == entity_id, h.attribute == attribute)
    if tq.timerel == "before":
        stmt = stmt.where(h.at < tq.time_at)
    elif tq.timerel == "after":
        stmt = stmt.where(h.at >= tq.time_at)
    elif tq.timerel == "between":
        stmt = stmt.where(h.at >= tq.time_at, h.at < tq.end_time_at)
    stmt = stmt.group_by(bucket).order_by(bucket)
    with engine.connect() as conn:
        rows = list(conn.execute(stmt))
    if any(r[1] != r[2] for r in rows):
        return None  # some values are not numbers: let Python decide per value
    out: dict[str, list[list[Any]]] = {m: [] for m in tq.aggregations}
    for index, total, _numeric, total_sum, mean, low, high, squares in rows:
        lo = start + int(index) * period
        span = [_bound(lo), _bound(lo + period)]
        values = {
            "totalCount": total,
            "sum": total_sum,
            "avg": mean,
            "min": low,
            "max": high,
            "sumsq": squares,
            "stddev": math.sqrt(max(0.0, squares / total - mean * mean)) if total else None,
        }
        for method in tq.aggregations:
            out[method].append([_measure(method, values[method]), *span])
    return out


def first_time(*, engine: Engine, tenant: str, entity_id: str, attribute: str) -> datetime | None:
    """Return the time of the earliest instance of an attribute."""
    h = ngsild_history.c
    with engine.connect() as conn:
        value = conn.execute(
            select(func.min(h.at)).where(
                h.tenant == tenant, h.entity_id == entity_id, h.attribute == attribute
            )
        ).scalar()
    if value is None:
        return None
    if isinstance(value, str):  # SQLite hands back text for an aggregate of a DateTime
        value = datetime.fromisoformat(value)
    stamp: datetime = value
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def attributes_of(*, engine: Engine, tenant: str, entity_id: str) -> list[str]:
    """Return the attributes an entity has history for."""
    h = ngsild_history.c
    with engine.connect() as conn:
        return [
            r[0]
            for r in conn.execute(
                select(h.attribute)
                .where(h.tenant == tenant, h.entity_id == entity_id, h.attribute != SCOPE)
                .distinct()
            )
        ]
