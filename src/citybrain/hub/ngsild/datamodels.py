"""Smart Data Models, offline: validate an entity against its model's published attributes.

The model metadata comes from the `pysmartdatamodels` package's bundled assets
(`model-assets/smartdatamodels.json.gz`: one record per attribute of every model, with its JSON
type, NGSI-LD kind, format and enum; `datamodels_metadata.json`: each model's required
attributes). The package's functions that download schemas are never called.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from citybrain.core.errors import BadInput, NotFound

# where a model name exists in several subjects, the one smart-city data uses
PREFERRED_SUBJECT = {"Building": "dataModel.Building", "Device": "dataModel.Device"}
CORE_MEMBERS = {"id", "type", "@context", "scope", "createdAt", "modifiedAt"}
GEOJSON = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"}


@dataclass(frozen=True)
class Attribute:
    """What a model says about one of its attributes."""

    name: str
    json_type: str | None
    ngsi_type: str | None
    format: str | None
    enum: tuple[Any, ...] | None
    description: str


@dataclass(frozen=True)
class Model:
    """A Smart Data Model: its subject, attributes and required attributes."""

    name: str
    subject: str
    version: str
    attributes: dict[str, Attribute]
    required: tuple[str, ...]


@dataclass(frozen=True)
class Issue:
    """One finding of a validation: an error breaks the model, a warning does not."""

    attribute: str
    severity: str
    message: str


def _asset(name: str) -> Any:
    path = resources.files("pysmartdatamodels").joinpath("model-assets", name)
    raw = path.read_bytes()
    return json.loads(gzip.decompress(raw) if name.endswith(".gz") else raw)


@cache
def _models() -> dict[str, Model]:
    records = _asset("smartdatamodels.json.gz")
    required: dict[tuple[str, str], tuple[str, ...]] = {}
    for meta in _asset("datamodels_metadata.json"):
        key = (str(meta.get("subject", "")), str(meta.get("dataModel", "")))
        required[key] = tuple(r for r in meta.get("required") or [] if isinstance(r, str))
    by_model: dict[str, dict[str, dict[str, Attribute]]] = {}
    versions: dict[tuple[str, str], str] = {}
    for r in records:
        if r.get("parentId"):
            continue  # a member of a structured attribute, not an attribute of the entity
        model, subject = str(r.get("dataModel")), str(r.get("repoName"))
        enum = r.get("enum")
        by_model.setdefault(model, {}).setdefault(subject, {})[str(r["property"])] = Attribute(
            name=str(r["property"]),
            json_type=r.get("type"),
            ngsi_type=r.get("typeNGSI"),
            format=r.get("format"),
            enum=tuple(enum) if isinstance(enum, list) else None,
            description=str(r.get("description") or ""),
        )
        versions[(subject, model)] = str(r.get("schemaVersion") or "")
    out: dict[str, Model] = {}
    for model, subjects in by_model.items():
        subject = PREFERRED_SUBJECT.get(model, sorted(subjects)[0])
        if subject not in subjects:
            subject = sorted(subjects)[0]
        out[model] = Model(
            name=model,
            subject=subject,
            version=versions.get((subject, model), ""),
            attributes=subjects[subject],
            required=required.get((subject, model), ("id", "type")),
        )
    return out


def model_names() -> list[str]:
    """Return the names of every model the bundled metadata knows."""
    return sorted(_models())


def get_model(name: str) -> Model:
    """Return one model, or NotFound naming close matches."""
    models = _models()
    if name not in models:
        near = [m for m in models if m.lower().startswith(name.lower()[:4])][:5]
        hint = f"; similar: {', '.join(near)}" if near else ""
        raise NotFound(f"no Smart Data Model named {name!r}{hint}")
    return models[name]


def _value(raw: Any) -> tuple[str | None, Any]:
    """Return (NGSI-LD kind or None for keyValues, value) of a normalized or key-value member."""
    if isinstance(raw, dict) and raw.get("type") in ("Property", "GeoProperty", "Relationship"):
        kind = str(raw["type"])
        return kind, raw.get("object") if kind == "Relationship" else raw.get("value")
    return None, raw


def _type_ok(json_type: str | None, value: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    checks = {
        "number": number,
        "integer": number and float(value).is_integer(),
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }
    return checks.get(json_type or "", True)


def _is_datetime(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def validate(entity: Any, model: str | None = None) -> list[Issue]:
    """Check an entity (normalized or keyValues, short names) against its Smart Data Model."""
    if not isinstance(entity, dict):
        raise BadInput("an entity to validate must be a JSON object")
    kind = entity.get("type")
    if model is None and not isinstance(kind, str):
        raise BadInput("the entity has no type naming its model; give the model explicitly")
    spec = get_model(model or str(kind))
    issues: list[Issue] = []
    for name in spec.required:
        if name not in CORE_MEMBERS and name not in entity:
            issues.append(Issue(name, "error", f"{spec.name} requires {name}"))
    for name, raw in entity.items():
        if name in CORE_MEMBERS:
            continue
        attribute = spec.attributes.get(name)
        if attribute is None:
            issues.append(Issue(name, "warning", f"{name} is not an attribute of {spec.name}"))
            continue
        ngsi, value = _value(raw)
        issues.extend(_check(attribute, ngsi, value))
    return issues


def _check(attribute: Attribute, ngsi: str | None, value: Any) -> list[Issue]:
    name = attribute.name
    if attribute.ngsi_type == "GeoProperty" or name == "location":
        ok = isinstance(value, dict) and value.get("type") in GEOJSON and "coordinates" in value
        return [] if ok else [Issue(name, "error", f"{name} must be a GeoJSON geometry")]
    if attribute.ngsi_type == "Relationship":
        targets = value if isinstance(value, list) else [value]
        if ngsi not in (None, "Relationship") or not all(
            isinstance(t, str) and ":" in t for t in targets
        ):
            return [Issue(name, "error", f"{name} must be a Relationship to a URI")]
        return []
    if not _type_ok(attribute.json_type, value):
        return [Issue(name, "error", f"{name} must be of type {attribute.json_type}")]
    if attribute.format == "date-time" and not _is_datetime(value):
        return [Issue(name, "error", f"{name} must be an ISO 8601 date-time")]
    if attribute.enum and value not in attribute.enum:
        allowed = ", ".join(map(str, attribute.enum[:12]))
        return [Issue(name, "error", f"{name} must be one of: {allowed}")]
    return []
