"""Entities in NGSI-LD normalized form: validation, expansion on the way in, rendering out."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

from citybrain.core.errors import BadInput
from citybrain.hub.ngsild.jsonld import TermMap, is_iri, validate_attribute_name, validate_entity_id

ATTRIBUTE_TYPES = {
    "Property",
    "Relationship",
    "GeoProperty",
    "LanguageProperty",
    "ListProperty",
    "ListRelationship",
    "VocabProperty",
    "JsonProperty",
}
ENTITY_MEMBERS = {
    "id",
    "type",
    "scope",
    "createdAt",
    "modifiedAt",
    "deletedAt",
    "expiresAt",
    "@context",
}
ATTRIBUTE_MEMBERS = {
    "type",
    "value",
    "object",
    "objectList",
    "objectType",
    "languageMap",
    "valueList",
    "vocab",
    "json",
    "observedAt",
    "unitCode",
    "datasetId",
    "createdAt",
    "modifiedAt",
    "instanceId",
    "lang",
    "expiresAt",
}
# members only a broker writes (clause 4.5.x): refused on input, rendered on output
OUTPUT_MEMBERS = {
    "previousValue",
    "previousObject",
    "previousObjectList",
    "previousLanguageMap",
    "previousValueList",
    "previousVocab",
    "previousJson",
    "deletedAt",
}
SYSTEM = ("createdAt", "modifiedAt")
# clause 4.5.0: the NGSI-LD Null; in an update it deletes, anywhere else it is refused
NGSI_NULL = "urn:ngsi-ld:null"
# marks an attribute instance that an update deletes (never stored)
DELETE_MARK = "@delete"
_CONTENT = ("value", "object", "objectList", "languageMap", "valueList", "vocab", "json")
_NUMBER = (int, float)
GEOJSON = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"}


def now_iso() -> str:
    """Return the current time as NGSI-LD writes it (UTC, milliseconds, Z)."""
    return iso(datetime.now(UTC))


# clause 4.6.2: a short name starts with a letter and goes on with letters, digits and '_'
_SHORT_NAME = re.compile(r"[^\W\d_]\w*")


def _type_list(value: Any) -> list[str]:
    types = value if isinstance(value, list) else [value]
    if not types or not all(isinstance(t, str) and t for t in types):
        raise BadInput("an entity type must be a non-empty string or a list of them")
    for t in types:
        if t in _VALID_TYPES:
            continue
        if not is_iri(t) and not _SHORT_NAME.fullmatch(t):
            raise BadInput(f"{t!r} is not a valid entity type name")
        if len(_VALID_TYPES) < 10_000:  # a node has few types: check each once
            _VALID_TYPES.add(t)
    return types


_VALID_TYPES: set[str] = set()


def _check_type_iri(short: str, expanded: str) -> str:
    if expanded.startswith("@"):
        # a JSON-LD keyword ("type" maps to @type): no entity can be of that type
        raise BadInput(f"{short!r} is a JSON-LD keyword, not an entity type")
    return expanded


def check_scope(scopes: list[Any]) -> None:
    """Refuse scopes that are not '/' and non-empty levels (clause 4.18)."""
    for scope in scopes:
        if not isinstance(scope, str) or not scope.startswith("/"):
            raise BadInput("scope must be a string or list of strings starting with '/'")
        if scope != "/" and not all(scope[1:].split("/")):
            raise BadInput(f"scope {scope!r} has an empty level")


# GeoProperties by definition (clause 4.7): they cannot be given as anything else
_GEO_ATTRIBUTES = (
    "https://uri.etsi.org/ngsi-ld/location",
    "https://uri.etsi.org/ngsi-ld/observationSpace",
    "https://uri.etsi.org/ngsi-ld/operationSpace",
)
_LANG_STRING = {"rdf:langString", "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString"}


def _check_language_map(name: str, raw: dict[str, Any], language_map: Any) -> None:
    """Clause 4.5.18, table 5.2.32-1: non-empty tags; strings or lists of strings."""
    if not isinstance(language_map, dict):
        raise BadInput(f"LanguageProperty {name!r} needs a languageMap object")
    for tag, text in language_map.items():
        if not tag:
            raise BadInput(f"LanguageProperty {name!r} has an empty language tag")
        texts = text if isinstance(text, list) else [text]
        if not all(isinstance(t, str) for t in texts):
            raise BadInput(f"LanguageProperty {name!r} holds a value that is not a string")
    if "valueType" in raw and raw["valueType"] not in _LANG_STRING:
        raise BadInput(f"the valueType of LanguageProperty {name!r} can only be rdf:langString")


# clause 4.5: the content members each attribute type has (the others are refused)
_KIND_CONTENT = {
    "Property": {"value"},
    "GeoProperty": {"value"},
    "Relationship": {"object", "objectType"},
    "ListRelationship": {"objectList", "objectType"},
    "LanguageProperty": {"languageMap"},
    "ListProperty": {"valueList"},
    "VocabProperty": {"vocab"},
    "JsonProperty": {"json"},
}
_ALL_CONTENT = set().union(*_KIND_CONTENT.values())


def _check_members(name: str, kind: str, out: dict[str, Any]) -> None:
    """Refuse members another attribute type carries; normalise a Relationship list."""
    foreign = sorted((set(out) & _ALL_CONTENT) - _KIND_CONTENT.get(kind, set()))
    if foreign:
        raise BadInput(f"a {kind} ({name!r}) cannot carry {', '.join(foreign)}")
    if "unitCode" in out and kind not in ("Property", "ListProperty"):
        raise BadInput(f"a {kind} ({name!r}) cannot carry unitCode")
    if kind == "JsonProperty" and not isinstance(out.get("json"), dict | list):
        raise BadInput(f"the json of {name!r} must be a JSON object or array")
    if kind == "ListProperty" and not isinstance(out.get("valueList"), list):
        raise BadInput(f"the valueList of {name!r} must be an array")
    if kind == "ListRelationship":
        entries = out.get("objectList")
        if not isinstance(entries, list):
            raise BadInput(f"the objectList of {name!r} must be an array")
        normal = []
        for entry in entries:
            target = entry.get("object") if isinstance(entry, dict) else entry
            if not isinstance(target, str) or not is_iri(target):
                raise BadInput(f"every objectList entry of {name!r} must name a URI")
            normal.append({"object": target})
        out["objectList"] = normal


def _has_null(value: Any) -> bool:
    """Whether the NGSI-LD Null occurs anywhere in a JSON value."""
    if isinstance(value, str):
        return value == NGSI_NULL
    if isinstance(value, dict):
        return any(_has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_null(v) for v in value)
    return False


def _is_null_instance(out: dict[str, Any]) -> bool:
    """Whether an instance is the NGSI-LD Null of its type (clause 4.5.0, table 4.5.0-1)."""
    kind = out.get("type")
    if kind == "LanguageProperty":
        return out.get("languageMap") in ({"@none": NGSI_NULL}, NGSI_NULL)
    member = {
        "Relationship": "object",
        "ListRelationship": "objectList",
        "ListProperty": "valueList",
        "VocabProperty": "vocab",
        "JsonProperty": "json",
    }.get(str(kind), "value")
    return out.get(member) in (NGSI_NULL, [NGSI_NULL])


def is_delete(instance: Any) -> bool:
    """Whether an expanded instance is an update's request to delete it."""
    return isinstance(instance, dict) and instance.get(DELETE_MARK) is True


def drop_null_keys(value: Any) -> Any:
    """Remove the keys a merge sets to the NGSI-LD Null from a JSON object, at any depth."""
    if isinstance(value, dict):
        return {k: drop_null_keys(v) for k, v in value.items() if v != NGSI_NULL}
    return value


def _attribute(
    name: str,
    raw: Any,
    terms: TermMap,
    nulls: bool = False,
    nested_nulls: bool = False,
    history: bool = False,
) -> dict[str, Any]:
    """Validate one attribute instance and expand the names inside it.

    With nulls (an update), an instance that is the NGSI-LD Null comes back as a deletion
    mark; with nested_nulls (a merge), the Null may also stand for keys of a JSON value;
    with history (a temporal instance) it is kept, recording a deletion.
    Anywhere else the Null is BadRequestData.
    """
    if raw == NGSI_NULL:
        if not nulls:
            raise BadInput(f"attribute {name!r} is the NGSI-LD Null, which only an update takes")
        raw = {"type": "Property", "value": NGSI_NULL}
    if not isinstance(raw, dict):
        # concise form: a bare value is a Property
        return {"type": "Property", "value": raw}
    if raw.get("type") in GEOJSON and "coordinates" in raw:
        return {"type": "GeoProperty", "value": raw}
    fast = _plain_attribute(name, raw)
    if fast is not None:
        return fast
    kind = raw.get("type")
    if kind is None:
        # concise form: infer the attribute type from its members
        if "object" in raw:
            kind = "Relationship"
        elif "languageMap" in raw:
            kind = "LanguageProperty"
        elif "vocab" in raw:
            kind = "VocabProperty"
        elif "json" in raw:
            kind = "JsonProperty"
        elif "value" in raw:
            value = raw["value"]
            kind = (
                "GeoProperty"
                if isinstance(value, dict) and value.get("type") in GEOJSON
                else "Property"
            )
        else:
            raise BadInput(f"attribute {name!r} has no type and no value")
    if kind not in ATTRIBUTE_TYPES:
        raise BadInput(f"attribute {name!r} has an unknown type {kind!r}")
    out: dict[str, Any] = {"type": kind}
    for key, value in raw.items():
        if key == "type":
            continue
        if key in ATTRIBUTE_MEMBERS:
            out[key] = value
        elif key in OUTPUT_MEMBERS:
            raise BadInput(f"{key} of {name!r} is written by the broker, not by a client")
        else:
            validate_attribute_name(key)
            subs = value if isinstance(value, list) else [value]
            expanded = [_attribute(key, s, terms, nulls, nested_nulls) for s in subs]
            out[terms.expand(key)] = expanded[0] if len(expanded) == 1 else expanded
    if out.get("datasetId") == NGSI_NULL:
        raise BadInput(f"the datasetId of {name!r} cannot be deleted with the NGSI-LD Null")
    if _is_null_instance(out):
        if history:
            # clause 5.6.11.4: a temporal instance may record that the attribute was deleted
            return {k: v for k, v in out.items() if k not in SYSTEM}
        if not nulls:
            raise BadInput(f"attribute {name!r} is the NGSI-LD Null, which only an update takes")
        mark: dict[str, Any] = {"type": kind, DELETE_MARK: True}
        if "datasetId" in out:
            mark["datasetId"] = out["datasetId"]
        return mark
    _check_members(name, str(kind), out)
    for member in _CONTENT:
        if member in out and _has_null(out[member]):
            if not (nested_nulls and member in ("value", "json") and isinstance(out[member], dict)):
                raise BadInput(f"the {member} of {name!r} holds the NGSI-LD Null")
    if kind == "Property" and ("value" not in out or out["value"] is None):
        raise BadInput(f"Property {name!r} needs a value")
    if kind == "Relationship":
        target = out.get("object")
        targets = target if isinstance(target, list) else [target]
        if not targets or not all(isinstance(t, str) and is_iri(t) for t in targets):
            raise BadInput(f"Relationship {name!r} needs an object that is a URI")
    if kind == "GeoProperty":
        value = out.get("value")
        if (
            not isinstance(value, dict)
            or value.get("type") not in GEOJSON
            or "coordinates" not in value
        ):
            raise BadInput(f"GeoProperty {name!r} needs a GeoJSON geometry as value")
        if not _plain_point(value):
            from citybrain.hub.ngsild.geoquery import parse_geojson

            parse_geojson(value["type"], value["coordinates"])
    if kind == "LanguageProperty":
        _check_language_map(name, raw, out.get("languageMap"))
    if "datasetId" in out and not (isinstance(out["datasetId"], str) and is_iri(out["datasetId"])):
        raise BadInput(f"the datasetId of {name!r} must be a URI")
    if "observedAt" in out:
        check_datetime(out["observedAt"], f"observedAt of {name!r}")
    if "expiresAt" in out:
        # clause 4.22: a transient attribute instance, gone once the time has passed
        check_datetime(out["expiresAt"], f"expiresAt of {name!r}")
    if kind == "VocabProperty":
        vocab = out.get("vocab")
        values = vocab if isinstance(vocab, list) else [vocab]
        if not all(isinstance(v, str) for v in values):
            raise BadInput(f"VocabProperty {name!r} needs vocab strings")
        expanded_vocab = [terms.expand(str(v)) for v in values]
        out["vocab"] = expanded_vocab if isinstance(vocab, list) else expanded_vocab[0]
    for member in SYSTEM:
        out.pop(member, None)  # system members are set by the broker, never by a client
    return out


# the shapes most sensor writes take, with the members each may carry besides its content
_PLAIN_MEMBERS = {
    "Property": frozenset({"type", "value", "unitCode", "observedAt"}),
    "GeoProperty": frozenset({"type", "value", "observedAt"}),
    "Relationship": frozenset({"type", "object", "observedAt"}),
}
_SCALARS = (int, float, str, bool)


def _plain_attribute(name: str, raw: dict[str, Any]) -> dict[str, Any] | None:
    """Expand a Property with a scalar value, a GeoProperty Point or a Relationship to one URI.

    These carry no sub-attributes and no NGSI-LD Null, so none of _attribute's other rules
    apply to them: a batch of sensor entities skips the general walk. Anything else is None
    and goes the general way, so both ways give the same result for every input.
    """
    kind = raw.get("type")
    allowed = _PLAIN_MEMBERS.get(kind) if type(kind) is str else None
    if allowed is None or not allowed.issuperset(raw):
        return None
    if kind == "Property":
        value = raw.get("value")
        if type(value) not in _SCALARS or value == NGSI_NULL:
            return None
    elif kind == "GeoProperty":
        value = raw.get("value")
        if type(value) is not dict or len(value) != 2 or not _plain_point(value):
            return None
    else:
        target = raw.get("object")
        if type(target) is not str or target == NGSI_NULL or not is_iri(target):
            return None
    if "observedAt" in raw:
        check_datetime(raw["observedAt"], f"observedAt of {name!r}")
    out: dict[str, Any] = {"type": kind}
    for key, member in raw.items():
        if key != "type":
            out[key] = member
    return out


def _plain_point(value: dict[str, Any]) -> bool:
    """Whether a GeoJSON value is a well-formed Point (most sensors): no need for shapely."""
    c = value.get("coordinates")
    if value.get("type") != "Point" or type(c) is not list or len(c) != 2:
        return False
    x, y = c
    # type(...) in: exact int/float (bool is an int subclass and is no coordinate)
    return type(x) in _NUMBER and type(y) in _NUMBER and -180 <= x <= 180 and -90 <= y <= 90


def check_datetime(value: Any, what: str) -> None:
    """Refuse what is not a UTC date-time (clause 4.6.3)."""
    if not isinstance(value, str):
        raise BadInput(f"{what} must be a date-time string")
    # clause 4.6.3: a DateTime is UTC and always ends with Z
    if not value.endswith("Z"):
        raise BadInput(f"{what} must be a UTC date-time ending in Z, not {value!r}")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{what} is not a valid date-time: {value!r}") from None


def expand_attributes(
    body: dict[str, Any],
    terms: TermMap,
    *,
    temporal: bool = False,
    nulls: bool = False,
    nested_nulls: bool = False,
) -> dict[str, Any]:
    """Expand and validate the attributes of a fragment (everything but the core members).

    In a temporal entity an attribute lists instances over time, so datasetIds may repeat.
    nulls: an update, where an attribute that is the NGSI-LD Null deletes it (see
    _attribute); nested_nulls: a merge, where the Null also removes keys of a JSON value.
    """
    attrs: dict[str, Any] = {}
    for name, raw in body.items():
        if name in ENTITY_MEMBERS:
            continue
        iri = _attribute_iri(name, terms)
        if type(raw) is dict:
            # one instance, the usual case
            attrs[iri] = _attribute(name, raw, terms, nulls, nested_nulls, history=temporal)
            continue
        given = (
            raw
            if isinstance(raw, list) and raw and all(isinstance(r, dict) for r in raw)
            else [raw]
        )
        expanded = [
            _attribute(name, r, terms, nulls, nested_nulls, history=temporal) for r in given
        ]
        dataset_ids = [e.get("datasetId") for e in expanded]
        if not temporal and len(set(dataset_ids)) != len(dataset_ids):
            raise BadInput(f"attribute {name!r} repeats a datasetId")
        attrs[iri] = expanded[0] if len(expanded) == 1 else expanded
    for iri in _GEO_ATTRIBUTES:
        geo = attrs.get(iri)
        if geo is None or (type(geo) is dict and geo.get("type") == "GeoProperty"):
            continue  # the usual case, one GeoProperty
        written = [i for i in instances(geo) if not i.get(DELETE_MARK)]
        if any(i.get("type") != "GeoProperty" for i in written):
            raise BadInput(f"{iri.rsplit('/', 1)[-1]} can only be a GeoProperty")
    return attrs


_NAMES_PER_CONTEXT = 10_000  # the memo of checked names stays small whatever clients send


def _attribute_iri(name: str, terms: TermMap) -> str:
    """Check an attribute name and expand it, once per name and @context."""
    iri = terms.checked.get(name)
    if iri is not None:
        return iri
    validate_attribute_name(name)
    if name in ATTRIBUTE_MEMBERS or name in OUTPUT_MEMBERS:
        # core terms that are not reified (datasetId, observedAt...) name no attribute
        raise BadInput(f"{name!r} is an NGSI-LD core member, not an attribute name")
    iri = terms.expand(name)
    if len(terms.checked) < _NAMES_PER_CONTEXT:
        terms.checked[name] = iri
    return iri


def expand_entity(
    body: Any, terms: TermMap, *, require_type: bool = True, temporal: bool = False
) -> dict[str, Any]:
    """Validate an entity payload and return it with expanded names."""
    if not isinstance(body, dict):
        raise BadInput("an entity must be a JSON object")
    entity_id = validate_entity_id(body.get("id"))
    if entity_id == NGSI_NULL:
        raise BadInput("the NGSI-LD Null cannot be an entity id")
    entity: dict[str, Any] = {"id": entity_id}
    if "type" in body:
        entity["type"] = [_check_type_iri(t, terms.expand(t)) for t in _type_list(body["type"])]
    elif require_type:
        raise BadInput("an entity needs a type")
    if "scope" in body:
        scope = body["scope"]
        scopes = scope if isinstance(scope, list) else [scope]
        check_scope(scopes)
        entity["scope"] = scopes
    if "expiresAt" in body:
        # clause 4.22: a transient entity, gone once the time has passed
        check_datetime(body["expiresAt"], "expiresAt")
        entity["expiresAt"] = body["expiresAt"]
    entity.update(expand_attributes(body, terms, temporal=temporal))
    return entity


def _moment(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def earliest_expiry(entity: dict[str, Any]) -> datetime | None:
    """Return when the entity or the first of its transient attribute instances expires."""
    found: list[datetime] = []
    if "expiresAt" in entity:
        found.append(_moment(entity["expiresAt"]) or datetime.max.replace(tzinfo=UTC))
    for name, attr in entity.items():
        if name in ENTITY_MEMBERS:
            continue
        for instance in attr if type(attr) is list else (attr,):
            if type(instance) is dict and "expiresAt" in instance:
                moment = _moment(instance["expiresAt"])
                if moment is not None:
                    found.append(moment)
    return min(found) if found else None


def live(entity: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    """Return the entity as it stands at `now`: None once it expired, without expired instances.

    Clause 4.22: an expired entity or attribute instance is no longer served, even before
    the store has removed it.
    """
    expiry = earliest_expiry(entity)
    if expiry is None or expiry > now:
        return entity
    if "expiresAt" in entity and (_moment(entity["expiresAt"]) or now) <= now:
        return None
    out: dict[str, Any] = {}
    for name, attr in entity.items():
        if name in ENTITY_MEMBERS:
            out[name] = attr
            continue
        kept = [
            i
            for i in (attr if type(attr) is list else [attr])
            if not (
                type(i) is dict and "expiresAt" in i and (_moment(i["expiresAt"]) or now) <= now
            )
        ]
        if kept:
            out[name] = kept[0] if len(kept) == 1 else kept
    return out


def iso(moment: datetime) -> str:
    """Return a UTC time as NGSI-LD writes it (milliseconds, Z)."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stamp(
    entity: dict[str, Any], *, created: str | None = None, moment: str | None = None
) -> dict[str, Any]:
    """Set system time stamps on an entity and on attributes that lack them.

    moment: the write's time (a batch stamps all its entities with one); now by default.
    """
    moment = moment or now_iso()
    entity.setdefault("createdAt", created or moment)
    entity["modifiedAt"] = moment
    for name, attr in entity.items():
        if name in ENTITY_MEMBERS:
            continue
        if type(attr) is dict:
            attr.setdefault("createdAt", moment)
            attr.setdefault("modifiedAt", moment)
            continue
        for instance in attr if isinstance(attr, list) else [attr]:
            if isinstance(instance, dict):
                instance.setdefault("createdAt", moment)
                instance.setdefault("modifiedAt", moment)
    return entity


def instances(attr: Any) -> list[dict[str, Any]]:
    """Return the instances of an attribute (one or several datasetIds)."""
    return [a for a in (attr if isinstance(attr, list) else [attr]) if isinstance(a, dict)]


def _render_attribute(instance: dict[str, Any], terms: TermMap, fmt: str, sys_attrs: bool) -> Any:
    kind = instance.get("type")
    if fmt == "keyValues":
        # clause 4.5.4: the simplified form of each attribute type
        if kind == "ListRelationship":
            items = instance.get("objectList")
            return [
                i.get("object") if isinstance(i, dict) else i
                for i in (items if isinstance(items, list) else [items])
            ]
        if kind == "Relationship":
            return instance.get("object")
        if kind == "LanguageProperty":
            return {"languageMap": instance.get("languageMap")}
        if kind == "VocabProperty":
            vocab = instance.get("vocab")
            return {
                "vocab": [terms.compact(v) for v in vocab]
                if isinstance(vocab, list)
                else terms.compact(str(vocab))
            }
        if kind == "JsonProperty":
            return {"json": instance.get("json")}
        return instance.get("value", instance.get("valueList"))
    out: dict[str, Any] = {}
    for key, value in instance.items():
        if (key in SYSTEM or key in ("expiresAt", "deletedAt")) and not sys_attrs:
            continue
        if key in ("vocab", "previousVocab"):
            out[key] = (
                [terms.compact(v) for v in value]
                if isinstance(value, list)
                else terms.compact(value)
            )
        elif key in ATTRIBUTE_MEMBERS or key in OUTPUT_MEMBERS:
            out[key] = value
        else:
            subs = [_render_attribute(s, terms, fmt, sys_attrs) for s in instances(value)]
            out[terms.compact(key)] = subs[0] if len(subs) == 1 else subs
    if fmt == "concise" and kind in ("Property", "GeoProperty") and set(out) <= {"type", "value"}:
        return out.get("value")
    if fmt == "concise":
        out.pop("type", None)
    return out


def render_instance(instance: dict[str, Any], terms: TermMap, *, sys_attrs: bool = False) -> Any:
    """Compact one attribute instance in normalized form."""
    return _render_attribute(instance, terms, "normalized", sys_attrs)


def render(
    entity: dict[str, Any],
    terms: TermMap,
    *,
    fmt: str = "normalized",
    sys_attrs: bool = False,
    attrs: set[str] | None = None,
) -> dict[str, Any]:
    """Compact an entity for output in normalized, concise or keyValues form."""
    out: dict[str, Any] = {"id": entity["id"]}
    types = [terms.compact(t) for t in entity.get("type", [])]
    out["type"] = types[0] if len(types) == 1 else types
    if "scope" in entity:
        scope = entity["scope"]
        out["scope"] = scope[0] if len(scope) == 1 else scope
    if sys_attrs and fmt != "keyValues":
        for member in (*SYSTEM, "expiresAt"):
            if member in entity:
                out[member] = entity[member]
    if "deletedAt" in entity:  # a deleted entity as a notification shows it
        out["deletedAt"] = entity["deletedAt"]
    for name, attr in entity.items():
        if name in ENTITY_MEMBERS:
            continue
        if attrs is not None and name not in attrs:
            continue
        found = instances(attr)
        rendered = [_render_attribute(i, terms, fmt, sys_attrs) for i in found]
        if fmt == "keyValues" and len(rendered) > 1:
            # clause 4.5.4: several instances become a map by datasetId, "@none" the default
            out[terms.compact(name)] = {
                "dataset": {
                    i.get("datasetId", "@none"): r for i, r in zip(found, rendered, strict=True)
                }
            }
            continue
        out[terms.compact(name)] = rendered[0] if len(rendered) == 1 else rendered
    return out


def clone(entity: dict[str, Any]) -> dict[str, Any]:
    """Deep-copy an entity so an update never edits a stored object in place."""
    return copy.deepcopy(entity)


def _language_ranges(header: str) -> list[str]:
    """The ranges of a lang value (clause 4.15, RFC 7231 syntax) in order of preference."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, *params = (p.strip() for p in part.split(";"))
        if not tag:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    raise BadInput(f"the lang quality {value!r} is not a number") from None
        if quality > 0:
            ranked.append((-quality, position, tag.lower()))
    return [tag for _, _, tag in sorted(ranked)]


def _pick_language(language_map: dict[str, Any], ranges: list[str]) -> str | None:
    """The key of a languageMap a lang value selects: best range first, RFC 4647 style."""
    tags = [t for t in language_map if t != "@none"]
    lowered = {t.lower(): t for t in tags}
    for wanted in ranges:
        if wanted == "*":
            return tags[0] if tags else None
        if wanted in lowered:
            return lowered[wanted]
        longer = [t for t in tags if t.lower().startswith(wanted + "-")]
        if longer:
            return longer[0]
        parts = wanted.split("-")
        while len(parts) > 1:  # a longer range falls back onto a shorter tag
            parts.pop()
            if "-".join(parts) in lowered:
                return lowered["-".join(parts)]
    return None


def apply_lang(entity: dict[str, Any], lang: str | None) -> dict[str, Any]:
    """Turn each LanguageProperty into a Property in the language lang asks for (4.15).

    The value is the string of the best matching language, reported in a lang member; with
    no match, any supported language (the @none entry first) stands in.
    """
    if not lang:
        return entity
    ranges = _language_ranges(lang)
    out = dict(entity)
    for name, attr in entity.items():
        if name in ENTITY_MEMBERS or not any(
            i.get("type") == "LanguageProperty" for i in instances(attr)
        ):
            continue
        converted = []
        for inst in instances(attr):
            language_map = inst.get("languageMap")
            if inst.get("type") != "LanguageProperty" or not isinstance(language_map, dict):
                converted.append(inst)
                continue
            key = _pick_language(language_map, ranges)
            if key is None:
                key = "@none" if "@none" in language_map else next(iter(language_map), None)
            new = {k: v for k, v in inst.items() if k != "languageMap"}
            new["type"] = "Property"
            new["value"] = language_map.get(key) if key is not None else None
            if key not in (None, "@none"):
                new["lang"] = key
            converted.append(new)
        out[name] = converted[0] if len(converted) == 1 else converted
    return out


def select_datasets(entity: dict[str, Any], dataset_ids: list[str] | None) -> dict[str, Any]:
    """Keep the attribute instances of the datasetIds asked for (clause 4.5.5; @none: default).

    Attributes left without an instance are dropped; the entity itself stays.
    """
    if not dataset_ids:
        return entity
    wanted = set(dataset_ids)
    out: dict[str, Any] = {}
    for name, attr in entity.items():
        if name in ENTITY_MEMBERS:
            out[name] = attr
            continue
        kept = [i for i in instances(attr) if i.get("datasetId", "@none") in wanted]
        if kept:
            out[name] = kept[0] if len(kept) == 1 else kept
    return out
