"""Alert rules: their YAML form, validation with clear errors, and the pure detectors.

Rule kinds: `indicator_threshold` and `indicator_change` read the indicator engine's stored
values per unit; `sensor_threshold`, `sensor_rate`, `sensor_anomaly` (median/MAD robust
z-score over the recent window) and `sensor_seasonal` (robust z-score against the same hour
of previous days) read the NGSI-LD history of an attribute of every entity of a type.
"""

from __future__ import annotations

import math
import operator
import statistics
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from citybrain.core.errors import CityBrainError, Unprocessable
from citybrain.decisions.indicators import scoring
from citybrain.events import catalogue

SHIPPED = Path(__file__).with_name("rules.yaml")
# the consistency constant of the MAD: 0.6745 * (x - median) / MAD is a z-score for normal data
MAD_SCALE = 0.6745
Z_CAP = 1e6  # a flat history and a different value: an infinite score, stored capped
Op = Literal[">", ">=", "<", "<="]
OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_\-]{1,63}$")
    description: str = ""
    event_type: str
    urgency: Literal["normal", "urgent", "critical"] = "normal"
    suppress_minutes: int = Field(60, ge=0, le=60 * 24 * 30)


class IndicatorThreshold(_Rule):
    """The latest value (or score) of an indicator in a unit crosses a threshold."""

    kind: Literal["indicator_threshold"]
    tree: str
    item: str
    field: Literal["value", "score"] = "value"
    op: Op
    threshold: float


class IndicatorChange(_Rule):
    """An indicator changes between a unit's last two periods by more than a threshold."""

    kind: Literal["indicator_change"]
    tree: str
    item: str
    field: Literal["value", "score"] = "value"
    relative: bool = False  # True: the change is a fraction of the previous value
    op: Op
    threshold: float


class _Sensor(_Rule):
    entity_type: str = Field(min_length=1, max_length=256)
    attribute: str = Field(min_length=1, max_length=256)
    tenant: str = ""


class SensorThreshold(_Sensor):
    """The latest reading of an attribute (within the window) crosses a threshold."""

    kind: Literal["sensor_threshold"]
    op: Op
    threshold: float
    window_minutes: int = Field(60, ge=1, le=60 * 24 * 7)


class SensorRate(_Sensor):
    """The attribute changes faster than a threshold per hour over the window."""

    kind: Literal["sensor_rate"]
    op: Op
    threshold: float  # units per hour; negative thresholds with < catch falls
    window_minutes: int = Field(60, ge=1, le=60 * 24 * 7)


class SensorAnomaly(_Sensor):
    """The latest reading is far from the window's median in MAD units (robust z-score)."""

    kind: Literal["sensor_anomaly"]
    window_minutes: int = Field(24 * 60, ge=5, le=60 * 24 * 30)
    z: float = Field(3.5, gt=0)
    min_points: int = Field(10, ge=3)


class SensorSeasonal(_Sensor):
    """The latest reading is far from the readings at the same hour of previous days."""

    kind: Literal["sensor_seasonal"]
    days: int = Field(7, ge=2, le=60)
    tolerance_minutes: int = Field(30, ge=1, le=180)
    z: float = Field(3.5, gt=0)
    min_points: int = Field(3, ge=2)


Rule = Annotated[
    IndicatorThreshold
    | IndicatorChange
    | SensorThreshold
    | SensorRate
    | SensorAnomaly
    | SensorSeasonal,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[Rule] = TypeAdapter(Rule)
KINDS = (
    "indicator_threshold",
    "indicator_change",
    "sensor_threshold",
    "sensor_rate",
    "sensor_anomaly",
    "sensor_seasonal",
)
AnyRule = (
    IndicatorThreshold
    | IndicatorChange
    | SensorThreshold
    | SensorRate
    | SensorAnomaly
    | SensorSeasonal
)


def _explain(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if p not in KINDS)
    return f"{where}: {first['msg']}" if where else first["msg"]


def parse_rules(raw: Any, *, source: str = "rules") -> list[AnyRule]:
    """Validate a parsed YAML document of rules; 422 naming the rule and field at fault."""
    if not isinstance(raw, dict) or not isinstance(raw.get("rules"), list):
        raise Unprocessable(f"{source}: the document needs a list under 'rules'")
    rules: list[AnyRule] = []
    seen: set[str] = set()
    for n, item in enumerate(raw["rules"], start=1):
        label = f"{source} rule {n}"
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            label += f" ({item['id']})"
        if not isinstance(item, dict):
            raise Unprocessable(f"{label}: a rule is a mapping of fields")
        if item.get("kind") not in KINDS:
            raise Unprocessable(
                f"{label}: kind {item.get('kind')!r} is not one of {', '.join(KINDS)}"
            )
        try:
            rule: AnyRule = _ADAPTER.validate_python(item)
        except ValidationError as exc:
            raise Unprocessable(f"{label}: {_explain(exc)}") from None
        if rule.id in seen:
            raise Unprocessable(f"{label}: the id {rule.id} appears twice")
        seen.add(rule.id)
        try:
            catalogue.event_type(rule.event_type)
            if isinstance(rule, IndicatorThreshold | IndicatorChange):
                nodes = scoring.validate_tree(scoring.get_tree(rule.tree))
                if rule.item not in nodes and rule.item != "*":
                    raise Unprocessable(f"tree {rule.tree} has no item {rule.item!r}")
        except CityBrainError as exc:
            raise Unprocessable(f"{label}: {exc.message}") from None
        rules.append(rule)
    return rules


def load_rules(path: Path | None = None) -> list[AnyRule]:
    """Read and validate a rules file (default: the shipped rules.yaml)."""
    path = path or SHIPPED
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Unprocessable(f"cannot read the alert rules {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise Unprocessable(f"{path.name} is not valid YAML: {exc}") from None
    return parse_rules(raw, source=path.name)


@cache
def shipped_rules() -> tuple[AnyRule, ...]:
    """Return the rules shipped with CityBrain, validated once."""
    return tuple(load_rules(SHIPPED))


# ---------------------------------------------------------------------------------------------
# detectors (pure)


def crosses(op: str, value: float, threshold: float) -> bool:
    """Return True when `value op threshold` holds."""
    return OPS[op](value, threshold)


def robust_z(value: float, reference: Sequence[float]) -> float:
    """Return the robust z-score of value against a reference: 0.6745 (x - median) / MAD."""
    median = statistics.median(reference)
    mad = statistics.median(abs(x - median) for x in reference)
    if mad == 0:
        # a flat reference: any different value is infinitely unusual (capped to store it)
        return 0.0 if value == median else math.copysign(Z_CAP, value - median)
    return MAD_SCALE * (value - median) / mad


def rate_per_hour(points: Sequence[tuple[datetime, float]]) -> float | None:
    """Return (last - first) per hour over time-ordered points, None below two points."""
    if len(points) < 2:
        return None
    (t0, v0), (t1, v1) = points[0], points[-1]
    hours = (t1 - t0).total_seconds() / 3600
    return None if hours <= 0 else (v1 - v0) / hours


def seasonal_reference(
    points: Sequence[tuple[datetime, float]], *, at: datetime, days: int, tolerance: timedelta
) -> list[float]:
    """Return, for each of the previous days, the reading nearest the same clock time."""
    out: list[float] = []
    for d in range(1, days + 1):
        moment = at - timedelta(days=d)
        near = [(abs((t - moment).total_seconds()), v) for t, v in points]
        near = [p for p in near if p[0] <= tolerance.total_seconds()]
        if near:
            out.append(min(near)[1])
    return out
