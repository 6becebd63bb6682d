"""Alerts' storage: read indicator values and sensor history, fire cases without storms.

`evaluate_once` runs every rule; each hit (rule x unit or entity) has a deduplication key
`rule:subject`. A hit opens an event-centre case (source "alarm") unless the key's last case
is still open or fired within the rule's suppression window; suppressed hits are counted.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, desc, insert, or_, select, update

from citybrain.core.config import Settings
from citybrain.core.errors import CityBrainError, NotFound
from citybrain.decisions.alerts import rules as rulebook
from citybrain.decisions.alerts.models import (
    AlertRead,
    EvaluationReport,
    Hit,
    alert_firings,
    alert_state,
)
from citybrain.decisions.alerts.rules import (
    AnyRule,
    IndicatorChange,
    IndicatorThreshold,
    SensorAnomaly,
    SensorRate,
    SensorSeasonal,
    SensorThreshold,
)
from citybrain.decisions.indicators import service as indicators
from citybrain.events import service as events
from citybrain.events.models import CaseCreate
from citybrain.geo import service as geo
from citybrain.governance.audit import service as audit
from citybrain.governance.principal import SYSTEM, Principal
from citybrain.hub.ngsild.models import ngsild_entities, ngsild_entity_types, ngsild_history

log = logging.getLogger("citybrain.alerts")
INTERVAL_SECONDS = 60.0
ALARM_SOURCE = "alarm"
ALARM = Principal(subject="alerts", org=SYSTEM.org, role=SYSTEM.role, issuer="local")


def _now(now: datetime | None) -> datetime:
    return _utc(now or datetime.now(UTC))


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def rules_path(data_dir: Path) -> Path:
    """Return the rules file of a node: DATA_DIR/alerts/rules.yaml if present, else shipped."""
    own = data_dir / "alerts" / "rules.yaml"
    return own if own.exists() else rulebook.SHIPPED


def node_rules(data_dir: Path) -> list[AnyRule]:
    """Load and validate the rules this node evaluates."""
    path = rules_path(data_dir)
    return list(rulebook.shipped_rules()) if path == rulebook.SHIPPED else rulebook.load_rules(path)


# ---------------------------------------------------------------------------------------------
# indicators


def _indicator_hits(engine: Engine, rule: IndicatorThreshold | IndicatorChange) -> list[Hit]:
    rows = indicators.values(engine=engine, tree=rule.tree, item=rule.item, limit=100_000)
    per_unit: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for r in rows:
        value = r.value if rule.field == "value" else r.score
        if r.status == "ok" and value is not None:
            per_unit[r.unit].append((r.period, value))
    hits = []
    for unit, series in sorted(per_unit.items()):
        series.sort()
        period, latest = series[-1]
        if isinstance(rule, IndicatorThreshold):
            if rulebook.crosses(rule.op, latest, rule.threshold):
                hits.append(
                    Hit(
                        rule_id=rule.id,
                        subject=unit,
                        value=latest,
                        message=f"{rule.item} {rule.field} {latest:g} {rule.op} "
                        f"{rule.threshold:g} in {unit} ({period})",
                        detail={"period": period, rule.field: latest},
                    )
                )
            continue
        if len(series) < 2:
            continue
        before_period, before = series[-2]
        change = latest - before
        if rule.relative:
            if before == 0:
                continue  # a relative change from zero has no meaning
            change /= abs(before)
        if rulebook.crosses(rule.op, change, rule.threshold):
            hits.append(
                Hit(
                    rule_id=rule.id,
                    subject=unit,
                    value=change,
                    message=f"{rule.item} {rule.field} changed by {change:+.3g} from "
                    f"{before_period} to {period} in {unit}",
                    detail={
                        "period": period,
                        "previous_period": before_period,
                        "previous": before,
                        "latest": latest,
                        "change": change,
                    },
                )
            )
    return hits


# ---------------------------------------------------------------------------------------------
# sensor streams


def _short(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1].rsplit("#", 1)[-1]


def _entities_of_type(engine: Engine, tenant: str, entity_type: str) -> list[str]:
    t = ngsild_entity_types.c.type
    with engine.connect() as conn:
        ids = conn.execute(
            select(ngsild_entity_types.c.id)
            .where(
                ngsild_entity_types.c.tenant == tenant,
                or_(t == entity_type, t.like(f"%/{entity_type}"), t.like(f"%#{entity_type}")),
            )
            .distinct()
        ).scalars()
        return sorted(ids)


def _series(
    engine: Engine, tenant: str, ids: list[str], attribute: str, start: datetime, end: datetime
) -> dict[str, list[tuple[datetime, float]]]:
    out: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    if not ids:
        return out
    h = ngsild_history.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(h.entity_id, h.attribute, h.at, h.number)
            .where(
                h.tenant == tenant,
                h.entity_id.in_(ids),
                h.number.is_not(None),
                h.at >= start,
                h.at <= end,
                or_(
                    h.attribute == attribute,
                    h.attribute.like(f"%/{attribute}"),
                    h.attribute.like(f"%#{attribute}"),
                ),
            )
            .order_by(h.entity_id, h.at)
        ).fetchall()
    for r in rows:
        if _short(r.attribute) == attribute:
            out[r.entity_id].append((_utc(r.at), float(r.number)))
    return out


def _entity_point(engine: Engine, tenant: str, entity_id: str) -> tuple[float, float] | None:
    with engine.connect() as conn:
        entity = conn.execute(
            select(ngsild_entities.c.entity).where(
                ngsild_entities.c.tenant == tenant, ngsild_entities.c.id == entity_id
            )
        ).scalar()
    if not isinstance(entity, dict):
        return None
    for key, attr in entity.items():
        if _short(key) != "location":
            continue
        first = attr[0] if isinstance(attr, list) and attr else attr
        value = first.get("value") if isinstance(first, dict) else None
        if isinstance(value, dict) and value.get("type") == "Point":
            coords = value.get("coordinates") or []
            if len(coords) >= 2:
                return float(coords[0]), float(coords[1])
    return None


def _sensor_hits(
    engine: Engine,
    rule: SensorThreshold | SensorRate | SensorAnomaly | SensorSeasonal,
    now: datetime,
) -> list[Hit]:
    if isinstance(rule, SensorSeasonal):
        span = timedelta(days=rule.days, minutes=rule.tolerance_minutes)
    else:
        span = timedelta(minutes=rule.window_minutes)
    ids = _entities_of_type(engine, rule.tenant, rule.entity_type)
    series = _series(engine, rule.tenant, ids, rule.attribute, now - span, now)
    hits = []
    for entity_id, points in sorted(series.items()):
        at, latest = points[-1]
        base = {
            "entity": entity_id,
            "attribute": rule.attribute,
            "at": at.isoformat(),
            "latest": latest,
        }
        what = f"{rule.attribute} of {entity_id}"
        value: float | None = None
        message = ""
        if isinstance(rule, SensorThreshold):
            if rulebook.crosses(rule.op, latest, rule.threshold):
                value, message = latest, f"{what} is {latest:g} ({rule.op} {rule.threshold:g})"
        elif isinstance(rule, SensorRate):
            rate = rulebook.rate_per_hour(points)
            if rate is not None and rulebook.crosses(rule.op, rate, rule.threshold):
                value, message = rate, f"{what} changes by {rate:+.3g} per hour"
                base["rate_per_hour"] = rate
        elif isinstance(rule, SensorAnomaly):
            reference = [v for _, v in points[:-1]]
            if len(reference) >= rule.min_points:
                z = rulebook.robust_z(latest, reference)
                if abs(z) >= rule.z:
                    value, message = z, f"{what} is {latest:g}, robust z-score {z:.3g}"
                    base.update(z=z, reference_points=len(reference))
        else:
            reference = rulebook.seasonal_reference(
                points[:-1],
                at=at,
                days=rule.days,
                tolerance=timedelta(minutes=rule.tolerance_minutes),
            )
            if len(reference) >= rule.min_points:
                z = rulebook.robust_z(latest, reference)
                if abs(z) >= rule.z:
                    value = z
                    message = f"{what} is {latest:g}, {z:.3g} robust z from the same hour"
                    base.update(z=z, reference_days=len(reference))
        if message:
            hits.append(
                Hit(
                    rule_id=rule.id,
                    subject=entity_id,
                    value=value,
                    message=message,
                    detail=base,
                    point=_entity_point(engine, rule.tenant, entity_id),
                )
            )
    return hits


def hits_of(*, engine: Engine, rule: AnyRule, now: datetime | None = None) -> list[Hit]:
    """Return where a rule's condition holds now (no case opened)."""
    if isinstance(rule, IndicatorThreshold | IndicatorChange):
        return _indicator_hits(engine, rule)
    return _sensor_hits(engine, rule, _now(now))


# ---------------------------------------------------------------------------------------------
# firing, deduplication, suppression


def _point_in(
    node_code: str, unit: str | None, point: tuple[float, float] | None
) -> tuple[float, float]:
    """Return a point for the case: the entity's, else the unit's, else the node's."""
    if point is not None:
        try:
            events.check_territory(node_code=node_code, lon=point[0], lat=point[1])
            return point
        except CityBrainError:
            pass
    for code in (unit, node_code):
        if code is None:
            continue
        try:
            shape = geo.geometry(code)
            inside = shape.representative_point()
            events.check_territory(node_code=node_code, lon=inside.x, lat=inside.y)
            return float(inside.x), float(inside.y)
        except (CityBrainError, ValueError, KeyError):
            continue
    raise NotFound(f"no point inside {node_code} to place an alert")


def _suppressed(engine: Engine, key: str, rule: AnyRule, now: datetime) -> bool:
    with engine.connect() as conn:
        row = conn.execute(select(alert_state).where(alert_state.c.dedup_key == key)).first()
    if row is None:
        return False
    m = row._mapping
    if m["case_id"]:
        try:
            if events.get_case(engine=engine, case_id=m["case_id"], now=now).open:
                return True
        except NotFound:
            pass
    return now - _utc(m["last_fired_at"]) < timedelta(minutes=rule.suppress_minutes)


def _fire(
    *, engine: Engine, settings: Settings, rule: AnyRule, hit: Hit, now: datetime
) -> AlertRead:
    indicator_unit = hit.subject if isinstance(rule, IndicatorThreshold | IndicatorChange) else None
    lon, lat = _point_in(settings.code, indicator_unit, hit.point)
    description = f"[{rule.id}] {rule.description}: {hit.message}".strip()
    case = events.report_case(
        engine=engine,
        data_dir=settings.data_dir,
        node_code=settings.code,
        principal=ALARM,
        body=CaseCreate(
            event_type=rule.event_type,
            description=description[:4000],
            lon=lon,
            lat=lat,
            urgency=rule.urgency,
            reporter=f"alert:{rule.id}",
        ),
        source=ALARM_SOURCE,
        now=now,
    )
    key = f"{rule.id}:{hit.subject}"
    alert = AlertRead(
        id="AL" + uuid.uuid4().hex[:20].upper(),
        rule_id=rule.id,
        subject=hit.subject,
        case_id=case.id,
        value=hit.value,
        detail=hit.detail,
        fired_at=now,
    )
    with engine.begin() as conn:
        conn.execute(insert(alert_firings).values(**alert.model_dump()))
        changed = conn.execute(
            update(alert_state)
            .where(alert_state.c.dedup_key == key)
            .values(case_id=case.id, last_fired_at=now)
        )
        if changed.rowcount == 0:
            conn.execute(
                insert(alert_state).values(
                    dedup_key=key,
                    rule_id=rule.id,
                    subject=hit.subject,
                    case_id=case.id,
                    last_fired_at=now,
                    suppressed=0,
                )
            )
    audit.append(
        data_dir=settings.data_dir,
        principal=ALARM,
        action="alerts.fire",
        resource=f"alert/{alert.id}",
        result="ok",
        rows=1,
        detail={"rule": rule.id, "subject": hit.subject, "case": case.id},
    )
    return alert


def _count_suppressed(engine: Engine, key: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(alert_state)
            .where(alert_state.c.dedup_key == key)
            .values(suppressed=alert_state.c.suppressed + 1)
        )


def evaluate_once(
    *,
    engine: Engine,
    data_dir: Path,
    settings: Settings,
    now: datetime | None = None,
    rules: list[AnyRule] | None = None,
) -> EvaluationReport:
    """Evaluate every rule once; open a case per new hit, suppress repeats; report."""
    moment = _now(now)
    active = rules if rules is not None else node_rules(data_dir)
    report = EvaluationReport(rules=len(active))
    if data_dir != settings.data_dir:
        settings = settings.model_copy(update={"data_dir": data_dir})
    for rule in active:
        try:
            hits = hits_of(engine=engine, rule=rule, now=moment)
        except CityBrainError as exc:
            report.errors.append(f"{rule.id}: {exc.message}")
            continue
        for hit in hits:
            report.hits += 1
            key = f"{rule.id}:{hit.subject}"
            if _suppressed(engine, key, rule, moment):
                _count_suppressed(engine, key)
                report.suppressed += 1
                continue
            try:
                report.fired.append(
                    _fire(engine=engine, settings=settings, rule=rule, hit=hit, now=moment)
                )
            except CityBrainError as exc:
                report.errors.append(f"{rule.id} on {hit.subject}: {exc.message}")
    return report


def list_alerts(*, engine: Engine, rule_id: str | None = None, limit: int = 100) -> list[AlertRead]:
    """Return fired alerts, newest first."""
    query = select(alert_firings).order_by(desc(alert_firings.c.fired_at)).limit(limit)
    if rule_id:
        query = query.where(alert_firings.c.rule_id == rule_id)
    with engine.connect() as conn:
        rows = conn.execute(query).fetchall()
    return [AlertRead(**{**r._mapping, "fired_at": _utc(r._mapping["fired_at"])}) for r in rows]


def suppressed_counts(*, engine: Engine) -> dict[str, int]:
    """Return how many hits each deduplication key has suppressed."""
    with engine.connect() as conn:
        rows = conn.execute(select(alert_state.c.dedup_key, alert_state.c.suppressed)).fetchall()
    return {r.dedup_key: r.suppressed for r in rows}


async def run(*, engine: Engine, settings: Settings, interval: float = INTERVAL_SECONDS) -> None:
    """Evaluate the node's rules every interval seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            report = await asyncio.to_thread(
                evaluate_once, engine=engine, data_dir=settings.data_dir, settings=settings
            )
            if report.errors:
                log.warning("alert rules failed", extra={"errors": report.errors[:10]})
        except asyncio.CancelledError:
            raise
        except Exception:  # the loop must outlive one bad round
            log.exception("alert evaluation round failed")


def describe(rule: AnyRule) -> dict[str, Any]:
    """Return a rule as JSON-ready fields."""
    return rule.model_dump()
