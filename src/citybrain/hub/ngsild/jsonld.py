"""JSON-LD @context handling for NGSI-LD (ETSI GS CIM 009 v1.6 to v1.8), without a JSON-LD processor.

The core @context documents are shipped in ``contexts/`` and never fetched. User @contexts are
resolved into a flat :class:`TermMap` that expands and compacts NGSI-LD names in microseconds;
the /jsonldContexts store keeps hosted, cached and implicitly created @contexts.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import os
import re
import threading
import time
import unicodedata
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol, overload

import httpx

from citybrain.core.errors import BadInput, Conflict, NotFound
from citybrain.hub.ngsild import errors as ngsild_errors

__all__ = [
    "CORE_URL",
    "CORE_URL_UNVERSIONED",
    "CORE_VERSIONS",
    "DEFAULT_VOCAB",
    "LINK_REL",
    "MAX_DEPTH",
    "ContextKind",
    "ContextResolver",
    "ContextStorage",
    "ContextStore",
    "ContextValue",
    "InvalidJsonLd",
    "LdContextNotAvailable",
    "LocalContextStore",
    "StoredContext",
    "TermDefinition",
    "TermMap",
    "compact_entity",
    "compact_name",
    "context_from_request",
    "contexts_for_batch",
    "core_document",
    "core_url_for",
    "expand_entity",
    "expand_name",
    "is_iri",
    "link_header_for",
    "parse_link_header",
    "validate_attribute_name",
    "validate_entity_id",
    "validate_uri",
]

log = logging.getLogger(__name__)

ContextValue = str | dict[str, Any] | list[Any]
LINK_REL = "http://www.w3.org/ns/json-ld#context"
DEFAULT_VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
MAX_DEPTH = 10
ID_PREFIX = "urn:ngsi-ld:jsonldContext:"


# ---- errors -----------------------------------------------------------------------------------


class LdContextNotAvailable(ngsild_errors.LdContextNotAvailable):
    """A remote @context cannot be retrieved, so expansion or compaction cannot be performed."""

    # The base class, shared with the API layer, carries status 503 and kind
    # "LdContextNotAvailable"; subclassing it keeps one mapping to problem details.
    # ETSI moved this error to 504 in v1.8.1; change the base class when the node targets it.


class InvalidJsonLd(BadInput):
    """A @context or the way a request carries it breaks the JSON-LD or NGSI-LD rules."""

    # GS CIM 009 clauses 5.5.4, 5.5.7 and 6.3.5 name BadRequestData for all of these cases.
    status = 400
    kind = "BadRequestData"


# ---- shipped core contexts --------------------------------------------------------------------


def _read_package_file(name: str) -> bytes:
    return resources.files("citybrain.hub.ngsild").joinpath("contexts", name).read_bytes()


def _load_index() -> dict[str, Any]:
    index: dict[str, Any] = json.loads(_read_package_file("index.json"))
    return index


_INDEX = _load_index()
CORE_VERSIONS: dict[str, str] = {d["version"]: d["url"] for d in _INDEX["documents"]}
CORE_URL: str = CORE_VERSIONS[_INDEX["default"]]
CORE_URL_UNVERSIONED: str = _INDEX["unversioned"]
_CORE_FILES: dict[str, str] = {d["url"]: d["file"] for d in _INDEX["documents"]}
_SHIPPED_MINORS = sorted(int(v.split(".")[1]) for v in CORE_VERSIONS)
_CORE_EXACT: dict[str, str] = {url: url for url in CORE_VERSIONS.values()}
for _scheme in ("https://", "http://"):
    _CORE_EXACT[_scheme + CORE_URL_UNVERSIONED.split("://", 1)[1]] = CORE_URL
    for _url in CORE_VERSIONS.values():
        _CORE_EXACT.setdefault(_scheme + _url.split("://", 1)[1], _url)
_CORE_VERSIONED = re.compile(
    r"^https?://uri\.etsi\.org/ngsi-ld/v1/ngsi-ld-core-context-v(\d+)\.(\d+)(?:\.\d+)?\.jsonld$"
)
_aliases_logged: set[str] = set()


@cache
def core_document(url: str) -> dict[str, Any]:
    """Return the shipped core @context document for a core URL (any alias), parsed."""
    shipped = core_url_for(url)
    if shipped is None:
        raise ValueError(f"{url} is not an NGSI-LD core @context URL")
    document: dict[str, Any] = json.loads(_read_package_file(_CORE_FILES[shipped]))
    return document


def core_url_for(url: str) -> str | None:
    """Map a core @context URL, versioned or not, to the shipped one; None for other URLs."""
    hit = _CORE_EXACT.get(url)
    if hit is not None:
        return hit
    match = _CORE_VERSIONED.match(url)
    if match is None:
        return None
    major, minor = int(match.group(1)), int(match.group(2))
    if major != 1:
        chosen = CORE_URL
    else:
        # the nearest shipped minor version; on a tie the newer one, whose terms are a superset
        best = min(_SHIPPED_MINORS, key=lambda m: (abs(m - minor), -m))
        chosen = CORE_VERSIONS[f"1.{best}"]
    if url not in _aliases_logged and len(_aliases_logged) < 100:
        _aliases_logged.add(url)
        log.info("core @context %s is not shipped; using %s", url, chosen)
    return chosen


# ---- names and URIs ---------------------------------------------------------------------------

_IRI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]+$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_URI_BAD = re.compile(r"[\s<>\"{}|\\^`\x00-\x1f\x7f]")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_URN = re.compile(r"^urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:\S+$", re.IGNORECASE)
# GS CIM 009 forbids these in names; the rest clash with URLs, attrs= lists or the q language.
_NAME_FORBIDDEN = frozenset("<>\"'=;()")
_SHORT_NAME_FORBIDDEN = _NAME_FORBIDDEN | frozenset("&?/#,|[]{}\\^`")
_GEN_DELIMS = frozenset(":/?#[]@")


def is_iri(value: str) -> bool:
    """Return whether a string is an absolute IRI: a scheme, a colon, and no spaces."""
    return bool(_IRI.match(value))


def validate_uri(value: object, *, what: str = "id") -> str:
    """Return value if it is an absolute URI (an entity id or type); raise BadInput if not."""
    if not isinstance(value, str) or not value:
        raise BadInput(f"the {what} must be a URI, not {value!r}")
    bad = _URI_BAD.search(value)
    if bad is not None:
        char = "a space" if bad.group().isspace() else repr(bad.group())
        raise BadInput(f"the {what} {value!r} is not a URI: it contains {char}")
    if not _SCHEME.match(value) or value.endswith(":"):
        raise BadInput(
            f"the {what} {value!r} is not a URI: it needs a scheme, as in urn:ngsi-ld:Type:id"
        )
    if _BAD_PERCENT.search(value):
        raise BadInput(f"the {what} {value!r} is not a URI: a % must start an escape such as %20")
    if value[:4].lower() == "urn:" and not _URN.match(value):
        raise BadInput(f"the {what} {value!r} is not a URN: it needs urn:<namespace>:<name>")
    return value


# The name the API layer imports: an entity id is validated as any other URI.
validate_entity_id = validate_uri


def _is_name(text: str) -> bool:
    # GS CIM 009 clause 4.6.2: name = unicodeLetter *(unicodeLetter / unicodeNumber / "_")
    if not text or not unicodedata.category(text[0]).startswith("L"):
        return False
    return all(
        ch == "_" or unicodedata.category(ch)[0] in ("L", "N") for ch in text[1:]
    )


def validate_attribute_name(name: str, *, strict: bool = False) -> str:
    """Return name if NGSI-LD accepts it as an attribute or type name; raise BadInput if not."""
    if not isinstance(name, str) or not name:
        raise BadInput(f"{name!r} is not a valid attribute name")
    if any(ch in _NAME_FORBIDDEN or ch.isspace() or not ch.isprintable() for ch in name):
        raise BadInput(
            f"{name!r} is not a valid attribute name: spaces, control characters and "
            "< > \" ' = ; ( ) are not allowed"
        )
    prefix, sep, rest = name.partition(":")
    if sep and (rest.startswith("//") or not _is_name(prefix) or not _is_name(rest)):
        # a full IRI (an expanded name) or a scheme-prefixed name such as urn:...
        if not is_iri(name):
            raise BadInput(f"{name!r} is not a valid attribute name or IRI")
        return name
    if strict:
        if not (_is_name(prefix) and (not sep or _is_name(rest))):
            raise BadInput(
                f"{name!r} is not a valid NGSI-LD name: it must start with a letter and hold "
                "only letters, digits and _ (clause 4.6.2), optionally as prefix:name"
            )
        return name
    if name.startswith("@") or any(ch in _SHORT_NAME_FORBIDDEN for ch in name):
        raise BadInput(
            f"{name!r} is not a valid attribute name: it must not start with @ nor contain "
            "& ? / # , | [ ] { } \\ ^ `"
        )
    return name


# ---- term maps --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TermDefinition:
    """One resolved term: its IRI, and the @type and @container coercions the context gives."""

    iri: str
    type: str | None = None
    container: tuple[str, ...] = ()
    prefix: bool = False
    protected: bool = False


# Entity members NGSI-LD defines itself: kept as they are, never expanded.
ENTITY_MEMBERS = frozenset({"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt"})
# Core GeoProperties: attributes whose names stay short (their sub-attributes are still expanded).
CORE_ATTRIBUTES = frozenset({"location", "observationSpace", "operationSpace"})
# Members of an attribute instance (normalized, concise and temporal forms).
ATTRIBUTE_MEMBERS = frozenset(
    {
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
        "deletedAt",
        "instanceId",
        "lang",
        "entity",
        "previousValue",
        "previousObject",
        "previousObjectList",
        "previousLanguageMap",
        "previousValueList",
        "previousVocab",
        "previousJson",
        "values",
        "objects",
        "objectsLists",
        "languageMaps",
        "valueLists",
        "vocabs",
        "jsons",
    }
)
# Members whose values are terms (@type: @vocab in the core context) and so are expanded too.
_VOCAB_MEMBERS = frozenset({"vocab", "previousVocab", "objectType"})
_GEOJSON_TYPES = frozenset(
    {
        "Point",
        "MultiPoint",
        "LineString",
        "MultiLineString",
        "Polygon",
        "MultiPolygon",
        "GeometryCollection",
    }
)
_CORE_NAMES = ENTITY_MEMBERS | CORE_ATTRIBUTES | ATTRIBUTE_MEMBERS
_MEMO_LIMIT = 10_000


class TermMap:
    """A resolved @context: term to IRI for expansion, IRI to shortest term for compaction."""

    __slots__ = (
        "_compacted",
        "_core_by_iri",
        "_expanded",
        "_prefix_items",
        "_stored",
        "core_url",
        "definitions",
        "prefixes",
        "reverse",
        "terms",
        "urls",
        "vocab",
    )

    def __init__(
        self,
        definitions: dict[str, TermDefinition],
        *,
        vocab: str = DEFAULT_VOCAB,
        urls: tuple[str, ...] = (),
        core_url: str = CORE_URL,
    ) -> None:
        self.definitions = definitions
        self.vocab = vocab
        self.urls = urls
        self.core_url = core_url
        self.terms = {term: d.iri for term, d in definitions.items()}
        self.prefixes = {term: d.iri for term, d in definitions.items() if d.prefix}
        self._prefix_items = sorted(self.prefixes.items())
        reverse: dict[str, str] = {}
        for term, iri in self.terms.items():
            if iri.startswith("@") or ":" in term:
                continue
            best = reverse.get(iri)
            # JSON-LD picks the shortest term, then the lexicographically least
            if best is None or (len(term), term) < (len(best), best):
                reverse[iri] = term
        self.reverse = reverse
        self._core_by_iri = {
            self.terms[n]: n for n in _CORE_NAMES if n in self.terms and ":" in self.terms[n]
        }
        self._expanded: dict[str, str] = dict(self.terms)
        self._compacted: dict[str, str] = dict(reverse)
        self._stored: dict[str, str] = {}

    def expand(self, name: str) -> str:
        """Expand a term, compact IRI or IRI to an absolute IRI, as JSON-LD does for keys."""
        hit = self._expanded.get(name)
        if hit is not None:
            return hit
        iri = self._expand_uncached(name)
        if len(self._expanded) < _MEMO_LIMIT:
            self._expanded[name] = iri
        return iri

    def _expand_uncached(self, name: str) -> str:
        if name.startswith("@"):
            return name
        prefix, sep, suffix = name.partition(":")
        if sep:
            if suffix.startswith("//") or prefix == "_":
                return name
            base = self.prefixes.get(prefix)
            # a prefix the context does not define is a scheme: urn:..., ex:thing stays as is
            return name if base is None else base + suffix
        return self.vocab + name

    def compact(self, iri: str) -> str:
        """Compact an IRI to the shortest term, vocab-relative name or prefix:name for it."""
        hit = self._compacted.get(iri)
        if hit is not None:
            return hit
        name = self._compact_uncached(iri)
        if len(self._compacted) < _MEMO_LIMIT:
            self._compacted[iri] = name
        return name

    def _compact_uncached(self, iri: str) -> str:
        vocab = self.vocab
        if iri.startswith(vocab) and len(iri) > len(vocab):
            suffix = iri[len(vocab) :]
            if suffix not in self.terms and self._expand_uncached(suffix) == iri:
                return suffix
        best: str | None = None
        for prefix, base in self._prefix_items:
            if iri.startswith(base) and len(iri) > len(base):
                candidate = f"{prefix}:{iri[len(base) :]}"
                if candidate in self.terms or self._expand_uncached(candidate) != iri:
                    continue
                if best is None or (len(candidate), candidate) < (len(best), best):
                    best = candidate
        # with no term, vocab or prefix for it, the Fully Qualified Name is shown (clause 5.5.7)
        return iri if best is None else best

    def expand_attribute(self, name: str) -> str:
        """Return the stored key of an attribute name: core names short, the rest as IRIs."""
        hit = self._stored.get(name)
        if hit is not None:
            return hit
        if name in _CORE_NAMES:
            key = name
        else:
            iri = self.expand(name)
            key = self._core_by_iri.get(iri, iri)
        if len(self._stored) < _MEMO_LIMIT:
            self._stored[name] = key
        return key


def expand_name(name: str, terms: TermMap) -> str:
    """Expand an attribute or type name from a query (attrs=, type=, q) as entities store it."""
    return terms.expand_attribute(name)


def compact_name(iri: str, terms: TermMap) -> str:
    """Compact a stored attribute or type name for output (/types, /attributes, responses)."""
    return terms.compact(iri)


def _expand_types(value: Any, terms: TermMap) -> Any:
    if isinstance(value, str):
        return terms.expand(value)
    if isinstance(value, list):
        return [terms.expand(t) if isinstance(t, str) else t for t in value]
    return value


def _compact_types(value: Any, terms: TermMap) -> Any:
    if isinstance(value, str):
        return terms.compact(value)
    if isinstance(value, list):
        return [terms.compact(t) if isinstance(t, str) else t for t in value]
    return value


def _map_vocabs(value: Any, convert: Callable[[str], str]) -> Any:
    # temporal "vocabs" are [term, time] pairs; only the term is a name
    if isinstance(value, list):
        return [
            [convert(pair[0]), *pair[1:]]
            if isinstance(pair, list) and pair and isinstance(pair[0], str)
            else pair
            for pair in value
        ]
    return value


def _expand_value(value: Any, terms: TermMap) -> Any:
    if type(value) is dict:
        return _expand_instance(value, terms)
    if type(value) is list and value and all(type(v) is dict for v in value):
        return [_expand_instance(v, terms) for v in value]
    return value


def _expand_instance(instance: dict[str, Any], terms: TermMap) -> dict[str, Any]:
    if instance.get("type") in _GEOJSON_TYPES and "coordinates" in instance:
        return instance  # a concise GeoProperty: its members are GeoJSON, not names
    out: dict[str, Any] = {}
    for key, value in instance.items():
        if key not in ATTRIBUTE_MEMBERS:
            key = terms.expand_attribute(key)
            if key not in ATTRIBUTE_MEMBERS:
                out[key] = _expand_value(value, terms)
                continue
        if key in _VOCAB_MEMBERS:
            value = _expand_types(value, terms)
        elif key == "vocabs":
            value = _map_vocabs(value, terms.expand)
        out[key] = value
    return out


def expand_entity(entity: dict[str, Any], terms: TermMap) -> dict[str, Any]:
    """Expand an entity's type, attribute and sub-attribute names and vocab values to IRIs."""
    out: dict[str, Any] = {}
    for key, value in entity.items():
        if key in ENTITY_MEMBERS:
            out[key] = _expand_types(value, terms) if key == "type" else value
        elif key == "@context":
            continue  # applied by the expansion itself
        elif key == "@id":
            out["id"] = value
        elif key == "@type":
            out["type"] = _expand_types(value, terms)
        else:
            name = terms.expand_attribute(key)
            out[name] = value if name in ENTITY_MEMBERS else _expand_value(value, terms)
    return out


def _compact_value(value: Any, terms: TermMap) -> Any:
    if type(value) is dict:
        return _compact_instance(value, terms)
    if type(value) is list and value and all(type(v) is dict for v in value):
        return [_compact_instance(v, terms) for v in value]
    return value


def _compact_instance(instance: dict[str, Any], terms: TermMap) -> dict[str, Any]:
    if instance.get("type") in _GEOJSON_TYPES and "coordinates" in instance:
        return instance
    out: dict[str, Any] = {}
    for key, value in instance.items():
        if key in ATTRIBUTE_MEMBERS:
            if key in _VOCAB_MEMBERS:
                value = _compact_types(value, terms)
            elif key == "vocabs":
                value = _map_vocabs(value, terms.compact)
            out[key] = value
        else:
            out[terms.compact(key)] = _compact_value(value, terms)
    return out


def compact_entity(entity: dict[str, Any], terms: TermMap) -> dict[str, Any]:
    """Compact an expanded entity's IRIs back to the shortest names the context gives them."""
    out: dict[str, Any] = {}
    for key, value in entity.items():
        if key in ENTITY_MEMBERS:
            out[key] = _compact_types(value, terms) if key == "type" else value
        else:
            out[terms.compact(key)] = _compact_value(value, terms)
    return out


# ---- resolving @context values ----------------------------------------------------------------


class _Builder:
    """Process @context entries in order into term definitions, following JSON-LD 1.1."""

    def __init__(self, resolver: ContextResolver | None, *, core: bool = False) -> None:
        self.resolver = resolver
        self.core = core
        self.definitions: dict[str, TermDefinition] = {}
        self.vocab: str | None = None
        self.core_url: str | None = None
        self.urls: set[str] = set()
        self._local: dict[str, Any] = {}
        self._defined: dict[str, bool] = {}
        self._protected = False

    def process(self, item: Any, depth: int, chain: tuple[str, ...]) -> None:
        if depth > self._max_depth():
            raise InvalidJsonLd(
                f"the @context nests more than {self._max_depth()} levels: "
                + " -> ".join(chain or ("(inline)",))
            )
        if item is None:
            # JSON-LD: null resets the active context; the core context is re-applied last anyway
            self.definitions.clear()
            self.vocab = None
        elif isinstance(item, str):
            self._process_url(item, depth, chain)
        elif isinstance(item, list):
            for sub in item:
                self.process(sub, depth + 1 if isinstance(sub, list) else depth, chain)
        elif isinstance(item, dict):
            self._process_local(item, depth, chain)
        else:
            raise InvalidJsonLd(f"a @context entry must be a URL, an object or a list, not {item!r}")

    def _max_depth(self) -> int:
        return self.resolver.max_depth if self.resolver is not None else MAX_DEPTH

    def _process_url(self, url: str, depth: int, chain: tuple[str, ...]) -> None:
        core = core_url_for(url)
        if core is not None:
            # clause 4.4: the core @context counts as the last entry, wherever it is named
            self.core_url = core
            return
        if url in chain:
            raise InvalidJsonLd("the @context refers to itself: " + " -> ".join((*chain, url)))
        if not is_iri(url):
            raise InvalidJsonLd(f"a @context reference must be an absolute URL, not {url!r}")
        if self.resolver is None:
            raise InvalidJsonLd(f"the core @context cannot refer to {url}")
        document = self.resolver.document(url)
        self.urls.add(url)
        self.process(document.get("@context"), depth + 1, (*chain, url))

    def _process_local(self, local: dict[str, Any], depth: int, chain: tuple[str, ...]) -> None:
        if "@import" in local:
            local = self._imported(local, depth, chain)
        if "@vocab" in local:
            self.vocab = self._vocab(local["@vocab"], local)
        saved = self._local, self._defined, self._protected
        self._local, self._defined = local, {}
        self._protected = local.get("@protected") is True
        try:
            for term in local:
                if not term.startswith("@"):
                    self._define(term)
        finally:
            self._local, self._defined, self._protected = saved

    def _imported(self, local: dict[str, Any], depth: int, chain: tuple[str, ...]) -> dict[str, Any]:
        url = local["@import"]
        if not isinstance(url, str) or not is_iri(url) or self.resolver is None:
            raise InvalidJsonLd(f"@import must name an absolute URL, not {url!r}")
        if url in chain:
            raise InvalidJsonLd("the @context imports itself: " + " -> ".join((*chain, url)))
        if depth + 1 > self._max_depth():
            raise InvalidJsonLd(f"the @context nests more than {self._max_depth()} levels")
        imported = self.resolver.document(url).get("@context")
        self.urls.add(url)
        if not isinstance(imported, dict) or "@import" in imported:
            raise InvalidJsonLd(f"the @context imported from {url} must be one object")
        # JSON-LD 1.1: the importing context's own entries win over the imported ones
        return {**imported, **{k: v for k, v in local.items() if k != "@import"}}

    def _vocab(self, value: Any, local: dict[str, Any]) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidJsonLd(f"@vocab must be a string, not {value!r}")
        self._local, self._defined = local, {}
        iri = self._expand_iri(value, vocab=True)
        if iri is None or not (":" in iri or iri.startswith("_:")):
            raise InvalidJsonLd(f"@vocab {value!r} is not an absolute IRI")
        return iri

    def _expand_iri(self, value: str, *, vocab: bool) -> str | None:
        if value.startswith("@"):
            return value
        if value in self._local and self._defined.get(value) is not True:
            self._define(value)
        if vocab:
            known = self.definitions.get(value)
            if known is not None:
                return known.iri
        prefix, sep, suffix = value.partition(":")
        if sep:
            if prefix == "_" or suffix.startswith("//"):
                return value
            if prefix in self._local and self._defined.get(prefix) is not True:
                self._define(prefix)
            base = self.definitions.get(prefix)
            if base is not None and base.prefix:
                return base.iri + suffix
            return value
        if vocab and self.vocab is not None:
            return self.vocab + value
        return None

    def _define(self, term: str) -> None:
        state = self._defined.get(term)
        if state is True:
            return
        if state is False:
            raise InvalidJsonLd(f"the @context defines {term!r} through itself (cyclic IRI mapping)")
        self._defined[term] = False
        value = self._local[term]
        if value is None or (isinstance(value, dict) and "@id" in value and value["@id"] is None):
            # decoupled from @vocab in JSON-LD; dropping the data instead would lose attributes
            self.definitions.pop(term, None)
            self._defined[term] = True
            return
        simple = isinstance(value, str)
        spec: dict[str, Any] = {"@id": value} if simple else value
        if not isinstance(spec, dict):
            raise InvalidJsonLd(f"the @context entry {term!r} must be a string or an object")
        if "@context" in spec and not self.core:
            raise InvalidJsonLd(
                f"the @context entry {term!r} holds a scoped @context, which NGSI-LD forbids "
                "in user contexts (clause 5.5.7)"
            )
        if "@reverse" in spec:
            raise InvalidJsonLd(f"the @context entry {term!r} uses @reverse, which NGSI-LD lacks")
        iri = self._term_iri(term, spec.get("@id", term))
        datatype = spec.get("@type")
        if datatype is not None:
            if not isinstance(datatype, str):
                raise InvalidJsonLd(f"the @type of {term!r} must be a string")
            expanded_type = self._expand_iri(datatype, vocab=True)
            if expanded_type is None or not (":" in expanded_type or expanded_type.startswith("@")):
                raise InvalidJsonLd(f"the @type {datatype!r} of {term!r} is not an IRI")
            datatype = expanded_type
        container = spec.get("@container")
        containers = (
            (container,) if isinstance(container, str) else tuple(container or ())
        )
        explicit_prefix = spec.get("@prefix")
        prefix = (
            explicit_prefix is True
            if explicit_prefix is not None
            else simple and ":" not in term and "/" not in term and iri[-1:] in _GEN_DELIMS
        )
        protected = spec.get("@protected", self._protected) is True
        definition = TermDefinition(iri, datatype, containers, prefix, protected)
        previous = self.definitions.get(term)
        if (
            previous is not None
            and previous.protected
            and not self.core
            and (previous.iri, previous.type, previous.container) != (iri, datatype, containers)
        ):
            raise InvalidJsonLd(f"the @context redefines the protected term {term!r}")
        self.definitions[term] = definition
        self._defined[term] = True

    def _term_iri(self, term: str, raw: Any) -> str:
        if not isinstance(raw, str):
            raise InvalidJsonLd(f"the @id of {term!r} must be a string")
        if raw != term:
            iri = self._expand_iri(raw, vocab=True)
            if iri is None or not (iri.startswith("@") or ":" in iri):
                raise InvalidJsonLd(f"the @context maps {term!r} to {raw!r}, which is not an IRI")
            if iri == "@context":
                raise InvalidJsonLd(f"{term!r} cannot be an alias of @context")
            return iri
        if ":" in term:
            iri = self._expand_iri(term, vocab=False)
            if iri is not None:
                return iri
        if self.vocab is None:
            raise InvalidJsonLd(f"the @context gives {term!r} no IRI and has no @vocab")
        # JSON-LD 1.1: a term mapped to itself, as "attributeCount" in core v1.8, is vocab-relative
        return self.vocab + term


def _cache_key(context: ContextValue | None) -> str:
    if context is None:
        return ""
    if isinstance(context, str):
        return "u" + context
    return "j" + json.dumps(context, sort_keys=True, separators=(",", ":"), default=str)


# ---- the /jsonldContexts store ----------------------------------------------------------------


class ContextKind(StrEnum):
    """The kinds of stored @context that GS CIM 009 clause 5.13.1 defines."""

    HOSTED = "Hosted"
    CACHED = "Cached"
    IMPLICITLY_CREATED = "ImplicitlyCreated"


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class StoredContext:
    """One stored @context with the metadata that List and Serve @context report."""

    local_id: str
    url: str
    kind: ContextKind
    document: dict[str, Any]
    created_at: datetime
    expires_at: datetime | None = None
    last_usage: datetime | None = None
    hits: int = 0

    def expired(self, now: datetime) -> bool:
        """Return whether a cached copy is past its expiry time."""
        return self.expires_at is not None and now >= self.expires_at

    def details(self) -> dict[str, Any]:
        """Return the metadata object of clause 5.13.3.5."""
        out: dict[str, Any] = {
            "URL": self.url,
            "localId": self.local_id,
            "kind": self.kind.value,
            "createdAt": _iso(self.created_at),
            "numberOfHits": self.hits,
        }
        if self.expires_at is not None:
            out["expiresAt"] = _iso(self.expires_at)
        if self.last_usage is not None:
            out["lastUsage"] = _iso(self.last_usage)
        return out

    def to_json(self) -> dict[str, Any]:
        """Return the entry as the JSON object written to disk."""
        return {
            "localId": self.local_id,
            "url": self.url,
            "kind": self.kind.value,
            "createdAt": _iso(self.created_at),
            "expiresAt": _iso(self.expires_at),
            "document": self.document,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredContext:
        """Read an entry back from its JSON object."""
        created = _parse_time(data["createdAt"])
        if created is None:
            raise ValueError("createdAt is missing")
        return cls(
            local_id=str(data["localId"]),
            url=str(data["url"]),
            kind=ContextKind(data["kind"]),
            document=dict(data["document"]),
            created_at=created,
            expires_at=_parse_time(data.get("expiresAt")),
        )


Fetcher = Callable[[str], tuple[dict[str, Any], datetime | None]]
Validator = Callable[[dict[str, Any]], None]
ChangeListener = Callable[[str], None]


class ContextStorage(Protocol):
    """Storage for /jsonldContexts; a database-backed store can take the local one's place."""

    def attach(self, *, fetch: Fetcher, validate: Validator, on_change: ChangeListener) -> None:
        """Receive the resolver's downloader, validator and change listener."""

    def add(
        self,
        document: dict[str, Any],
        *,
        kind: ContextKind = ContextKind.HOSTED,
        url: str | None = None,
    ) -> str:
        """Store a @context document and return its local id."""

    def cache(
        self, url: str, document: dict[str, Any], *, expires_at: datetime | None
    ) -> StoredContext:
        """Store or replace the cached copy of a remote @context."""

    @overload
    def list(
        self, kind: ContextKind | str | None = None, details: Literal[False] = False
    ) -> builtins.list[str]: ...

    @overload
    def list(
        self, kind: ContextKind | str | None = None, *, details: Literal[True]
    ) -> builtins.list[dict[str, Any]]: ...

    def list(
        self, kind: ContextKind | str | None = None, details: bool = False
    ) -> builtins.list[str] | builtins.list[dict[str, Any]]:
        """List stored @contexts as URLs, or as metadata objects with details."""

    def get(self, context_id: str) -> StoredContext:
        """Return a stored @context by local id or URL; raise NotFound."""

    def find(self, key: str, *, touch: bool = False) -> StoredContext | None:
        """Return a stored @context by local id or URL, or None."""

    def delete(self, context_id: str, reload: bool = False) -> None:
        """Delete a stored @context, or with reload replace a cached one by a fresh download."""


class LocalContextStore:
    """In-process /jsonldContexts store, optionally persisted as one JSON file per entry."""

    def __init__(self, folder: Path | str | None = None, *, base_url: str | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.base_url = base_url
        self._by_id: dict[str, StoredContext] = {}
        self._by_url: dict[str, str] = {}
        self._lock = threading.RLock()
        self._fetch: Fetcher | None = None
        self._validate: Validator | None = None
        self._listeners: builtins.list[ChangeListener] = []
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._load()

    def attach(self, *, fetch: Fetcher, validate: Validator, on_change: ChangeListener) -> None:
        """Receive the resolver's downloader, validator and change listener."""
        self._fetch = fetch
        self._validate = validate
        self._listeners.append(on_change)

    # -- persistence
    def _path(self, local_id: str) -> Path:
        assert self.folder is not None
        return self.folder / (hashlib.sha256(local_id.encode()).hexdigest()[:40] + ".json")

    def _load(self) -> None:
        assert self.folder is not None
        for path in sorted(self.folder.glob("*.json")):
            try:
                entry = StoredContext.from_json(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("skipping unreadable stored @context %s: %s", path.name, exc)
                continue
            self._by_id[entry.local_id] = entry
            self._by_url[entry.url] = entry.local_id

    def _write(self, entry: StoredContext) -> None:
        if self.folder is None:
            return
        path = self._path(entry.local_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entry.to_json(), ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)  # atomic, so a crash never leaves half a file

    def _unlink(self, entry: StoredContext) -> None:
        if self.folder is not None:
            self._path(entry.local_id).unlink(missing_ok=True)

    def _changed(self, url: str) -> None:
        for listener in builtins.list(self._listeners):
            listener(url)

    # -- operations
    def add(
        self,
        document: dict[str, Any],
        *,
        kind: ContextKind = ContextKind.HOSTED,
        url: str | None = None,
    ) -> str:
        """Store a @context document and return its local id (a URN)."""
        if not isinstance(document, dict) or not isinstance(
            document.get("@context"), (str, builtins.list, dict)
        ):
            raise InvalidJsonLd("a @context document is a JSON object with a @context member")
        # clause 5.13.2.3: whatever lies outside the @context member is discarded
        body = {"@context": document["@context"]}
        if self._validate is not None:
            self._validate(body)
        if kind is ContextKind.CACHED:
            if url is None:
                raise BadInput("a cached @context needs its original URL")
            return self.cache(url, body, expires_at=None).local_id
        if kind is ContextKind.IMPLICITLY_CREATED:
            # the same array always gets the same entry, so notifications reuse one URL
            digest = hashlib.sha256(_cache_key(body["@context"]).encode()).hexdigest()[:32]
            local_id = f"{ID_PREFIX}{digest}"
        else:
            local_id = f"{ID_PREFIX}{uuid.uuid4()}"
        if url is None:
            url = self.base_url + local_id if self.base_url else local_id
        with self._lock:
            existing = self._by_id.get(local_id)
            if existing is not None:
                return existing.local_id
            if url in self._by_url:
                raise Conflict(f"a @context is already stored for {url}")
            entry = StoredContext(local_id, url, kind, body, datetime.now(UTC))
            self._by_id[local_id] = entry
            self._by_url[url] = local_id
            self._write(entry)
        self._changed(url)
        return local_id

    def cache(
        self, url: str, document: dict[str, Any], *, expires_at: datetime | None
    ) -> StoredContext:
        """Store or replace the cached copy of a remote @context."""
        with self._lock:
            local_id = self._by_url.get(url)
            old = self._by_id.get(local_id) if local_id is not None else None
            if old is not None and old.kind is not ContextKind.CACHED:
                raise Conflict(f"{url} names a {old.kind.value} @context, not a cached one")
            entry = StoredContext(
                local_id=old.local_id if old is not None else f"{ID_PREFIX}{uuid.uuid4()}",
                url=url,
                kind=ContextKind.CACHED,
                document=document,
                created_at=datetime.now(UTC),
                expires_at=expires_at,
                hits=old.hits if old is not None else 0,
                last_usage=old.last_usage if old is not None else None,
            )
            self._by_id[entry.local_id] = entry
            self._by_url[url] = entry.local_id
            self._write(entry)
        if old is not None:
            self._changed(url)
        return entry

    @overload
    def list(
        self, kind: ContextKind | str | None = None, details: Literal[False] = False
    ) -> builtins.list[str]: ...

    @overload
    def list(
        self, kind: ContextKind | str | None = None, *, details: Literal[True]
    ) -> builtins.list[dict[str, Any]]: ...

    def list(
        self, kind: ContextKind | str | None = None, details: bool = False
    ) -> builtins.list[str] | builtins.list[dict[str, Any]]:
        """List stored @contexts as URLs, or as metadata objects with details."""
        wanted: ContextKind | None = None
        if kind is not None:
            try:
                wanted = ContextKind(kind)
            except ValueError:
                raise BadInput(
                    f"kind must be one of {', '.join(k.value for k in ContextKind)}, not {kind!r}"
                ) from None
        with self._lock:
            entries = sorted(self._by_id.values(), key=lambda e: (e.created_at, e.local_id))
        chosen = [e for e in entries if wanted is None or e.kind is wanted]
        if details:
            return [e.details() for e in chosen]
        return [e.url for e in chosen]

    def find(self, key: str, *, touch: bool = False) -> StoredContext | None:
        """Return a stored @context by local id or URL, or None."""
        with self._lock:
            entry = self._by_id.get(key)
            if entry is None:
                local_id = self._by_url.get(key)
                entry = self._by_id.get(local_id) if local_id is not None else None
            if entry is not None and touch:
                # usage counters live in memory only: writing a file per lookup is not worth it
                entry.hits += 1
                entry.last_usage = datetime.now(UTC)
            return entry

    def get(self, context_id: str) -> StoredContext:
        """Return a stored @context by local id or URL; raise NotFound."""
        entry = self.find(context_id)
        if entry is None:
            raise NotFound(f"no stored @context {context_id}")
        return entry

    def delete(self, context_id: str, reload: bool = False) -> None:
        """Delete a stored @context, or with reload replace a cached one by a fresh download."""
        if not context_id:
            raise BadInput("the @context identifier is missing")
        entry = self.get(context_id)
        if reload:
            self._reload(entry)
            return
        with self._lock:
            self._by_id.pop(entry.local_id, None)
            if self._by_url.get(entry.url) == entry.local_id:
                del self._by_url[entry.url]
            self._unlink(entry)
        self._changed(entry.url)

    def _reload(self, entry: StoredContext) -> None:
        # clause 5.13.5.4: on any failure the stored copy stays as it was
        if entry.kind is not ContextKind.CACHED:
            raise BadInput(f"only Cached @contexts can be reloaded; {entry.url} is {entry.kind}")
        if self._fetch is None:
            raise LdContextNotAvailable(f"cannot reload {entry.url}: no downloader is attached")
        document, expires_at = self._fetch(entry.url)
        if self._validate is not None:
            try:
                self._validate(document)
            except InvalidJsonLd as exc:
                raise LdContextNotAvailable(
                    f"the @context downloaded again from {entry.url} is invalid: {exc.message}"
                ) from None
        self.cache(entry.url, document, expires_at=expires_at)


class _KindView(MutableMapping[str, dict[str, Any]]):
    """URL to document view of one kind of stored @context, for callers that predate the store."""

    def __init__(self, store: ContextStorage, kind: ContextKind) -> None:
        self._store = store
        self._kind = kind

    def _entry(self, url: str) -> StoredContext:
        entry = self._store.find(url)
        if entry is None or entry.kind is not self._kind or entry.url != url:
            raise KeyError(url)
        return entry

    def __getitem__(self, url: str) -> dict[str, Any]:
        return self._entry(url).document

    def __setitem__(self, url: str, document: dict[str, Any]) -> None:
        if self._kind is ContextKind.CACHED:
            self._store.cache(url, {"@context": document.get("@context")}, expires_at=None)
        else:
            self._store.add(document, kind=self._kind, url=url)

    def __delitem__(self, url: str) -> None:
        self._store.delete(self._entry(url).local_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self._store.list(self._kind))

    def __len__(self) -> int:
        return len(self._store.list(self._kind))


# ---- the resolver -----------------------------------------------------------------------------

_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*(\d+)", re.IGNORECASE)
_MIN_TTL = 60.0


class ContextResolver:
    """Resolve @context values into cached TermMaps; fetch and cache user @contexts by URL."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        cache_dir: Path | str | None = None,
        store: ContextStorage | None = None,
        transport: httpx.BaseTransport | None = None,
        max_depth: int = MAX_DEPTH,
        cache_ttl: float = 24 * 3600.0,
        failure_ttl: float = 5.0,
        max_bytes: int = 8 * 1024 * 1024,
        max_maps: int = 256,
    ) -> None:
        self.timeout = timeout
        self.transport = transport
        self.max_depth = max_depth
        self.cache_ttl = cache_ttl
        self.failure_ttl = failure_ttl
        self.max_bytes = max_bytes
        self.max_maps = max_maps
        self.store: ContextStorage = store if store is not None else LocalContextStore(cache_dir)
        self.store.attach(fetch=self._download, validate=self._validate, on_change=self._changed)
        self._maps: OrderedDict[str, TermMap] = OrderedDict()
        self._deps: dict[str, set[str]] = {}
        self._core_maps: dict[str, TermMap] = {}
        self._failures: dict[str, tuple[float, str]] = {}
        self._url_locks: dict[str, threading.Lock] = {}
        self._lock = threading.RLock()

    # -- documents
    @property
    def core(self) -> dict[str, dict[str, Any]]:
        """Return the shipped core @context documents by URL."""
        return {url: core_document(url) for url in CORE_VERSIONS.values()}

    @property
    def hosted(self) -> MutableMapping[str, dict[str, Any]]:
        """Return the hosted @contexts as a URL to document mapping."""
        return _KindView(self.store, ContextKind.HOSTED)

    @property
    def cached(self) -> MutableMapping[str, dict[str, Any]]:
        """Return the cached remote @contexts as a URL to document mapping."""
        return _KindView(self.store, ContextKind.CACHED)

    def document(self, url: str) -> dict[str, Any]:
        """Return the @context document a URL names: core and stored ones locally, others fetched."""
        if core_url_for(url) is not None:
            return core_document(url)
        entry = self.store.find(url, touch=True)
        if entry is not None and not entry.expired(datetime.now(UTC)):
            return entry.document
        return self._fetch_into_store(url, stale=entry, force=False)

    def refresh(self, url: str) -> dict[str, Any]:
        """Fetch a user @context again now, replace the cached copy and drop maps built on it."""
        if core_url_for(url) is not None:
            return core_document(url)  # shipped, never fetched
        entry = self.store.find(url)
        if entry is not None and entry.kind is not ContextKind.CACHED:
            raise BadInput(f"{url} is a {entry.kind.value} @context stored here; it is not fetched")
        document = self._fetch_into_store(url, stale=None, force=True)
        self._changed(url)
        return document

    def forget(self, url: str) -> bool:
        """Drop a hosted or cached @context by URL or local id; return whether there was one."""
        entry = self.store.find(url)
        if entry is None:
            return False
        self.store.delete(entry.local_id)
        return True

    def _url_lock(self, url: str) -> threading.Lock:
        with self._lock:
            lock = self._url_locks.get(url)
            if lock is None:
                if len(self._url_locks) > 1024:
                    self._url_locks.clear()
                lock = self._url_locks[url] = threading.Lock()
            return lock

    def _fetch_into_store(
        self, url: str, *, stale: StoredContext | None, force: bool
    ) -> dict[str, Any]:
        # one download per URL at a time: concurrent requests wait for it instead of repeating it
        with self._url_lock(url):
            now = datetime.now(UTC)
            if not force:
                entry = self.store.find(url)
                if entry is not None and not entry.expired(now):
                    return entry.document
                failed = self._failures.get(url)
                if failed is not None and failed[0] > time.monotonic() and stale is None:
                    raise LdContextNotAvailable(failed[1])
            try:
                document, expires_at = self._download(url)
            except LdContextNotAvailable as exc:
                if stale is not None and not force:
                    log.warning("serving the expired copy of @context %s: %s", url, exc.message)
                    return stale.document
                # remember the failure briefly so that a dead server does not stall every request
                self._failures[url] = (time.monotonic() + self.failure_ttl, exc.message)
                raise
            self._failures.pop(url, None)
            self.store.cache(url, document, expires_at=expires_at)
            return document

    def _download(self, url: str) -> tuple[dict[str, Any], datetime | None]:
        if not url.lower().startswith(("http://", "https://")):
            raise LdContextNotAvailable(
                f"the @context {url} is neither stored here nor an http(s) URL to fetch"
            )
        deadline = time.monotonic() + self.timeout
        chunks: builtins.list[bytes] = []
        try:
            with httpx.Client(
                timeout=self.timeout, transport=self.transport, follow_redirects=True
            ) as client:
                headers = {"Accept": "application/ld+json, application/json;q=0.9, */*;q=0.1"}
                with client.stream("GET", url, headers=headers) as response:
                    if response.status_code != 200:
                        raise LdContextNotAvailable(
                            f"the @context {url} cannot be fetched: HTTP {response.status_code}"
                        )
                    size = 0
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise LdContextNotAvailable(
                                f"the @context {url} is larger than {self.max_bytes} bytes"
                            )
                        if time.monotonic() > deadline:
                            raise httpx.ReadTimeout("the whole download took too long")
                        chunks.append(chunk)
                    cache_control = response.headers.get("cache-control", "")
        except httpx.TimeoutException:
            raise LdContextNotAvailable(
                f"the @context {url} cannot be fetched: no answer within {self.timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise LdContextNotAvailable(
                f"the @context {url} cannot be fetched: {exc or type(exc).__name__}"
            ) from None
        # lenient on Content-Type: many context servers (the ETSI forge among them) say text/plain
        try:
            document = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError):
            raise LdContextNotAvailable(f"the document at {url} is not JSON") from None
        if not isinstance(document, dict) or "@context" not in document:
            raise LdContextNotAvailable(f"the document at {url} has no @context member")
        return {"@context": document["@context"]}, self._expiry(cache_control)

    def _expiry(self, cache_control: str) -> datetime:
        match = _MAX_AGE.search(cache_control)
        # honour max-age, but never below a minute: a zero max-age would refetch on every request
        seconds = max(float(match.group(1)), _MIN_TTL) if match else self.cache_ttl
        return datetime.now(UTC) + timedelta(seconds=seconds)

    # -- term maps
    def term_map(self, context: ContextValue | None) -> TermMap:
        """Resolve a @context (URL, object or list) with the core context last into a TermMap."""
        key = _cache_key(context)
        with self._lock:
            hit = self._maps.get(key)
            if hit is not None:
                self._maps.move_to_end(key)
                return hit
        built, deps = self._build(context)
        with self._lock:
            self._maps[key] = built
            for url in deps:
                self._deps.setdefault(url, set()).add(key)
            while len(self._maps) > self.max_maps:
                self._maps.popitem(last=False)
        return built

    resolve = term_map

    def _build(self, context: ContextValue | None) -> tuple[TermMap, set[str]]:
        items: builtins.list[Any] = (
            [] if context is None else context if isinstance(context, builtins.list) else [context]
        )
        builder = _Builder(self)
        builder.process(items, 0, ())
        core_url = builder.core_url or CORE_URL
        core = self._core_map(core_url)
        # clauses 4.4 and 5.5.7: the core context is processed last and always wins
        definitions = {**builder.definitions, **core.definitions}
        urls = tuple(i for i in items if isinstance(i, str) and core_url_for(i) is None)
        return TermMap(definitions, vocab=core.vocab, urls=urls, core_url=core_url), builder.urls

    def _core_map(self, core_url: str) -> TermMap:
        hit = self._core_maps.get(core_url)
        if hit is None:
            builder = _Builder(None, core=True)
            builder.process(core_document(core_url)["@context"], 0, ())
            hit = TermMap(
                builder.definitions, vocab=builder.vocab or DEFAULT_VOCAB, core_url=core_url
            )
            self._core_maps[core_url] = hit
        return hit

    def _validate(self, document: dict[str, Any]) -> None:
        context = document.get("@context")
        if not isinstance(context, (str, builtins.list, dict)):
            raise InvalidJsonLd("a @context document needs a @context member")
        self.term_map(context)

    def _changed(self, url: str) -> None:
        with self._lock:
            self._failures.pop(url, None)
            for key in self._deps.pop(url, set()):
                self._maps.pop(key, None)

    def url_for(self, context: ContextValue | None) -> str:
        """Return one URL standing for a @context, hosting an ImplicitlyCreated one if needed."""
        items = _effective_context(context)
        user, core = items[:-1], items[-1]
        if not user:
            return str(core)
        if len(user) == 1 and isinstance(user[0], str):
            return user[0]
        local_id = self.store.add({"@context": items}, kind=ContextKind.IMPLICITLY_CREATED)
        return self.store.get(local_id).url


# The name the API layer imports.
ContextStore = ContextResolver


# ---- requests and responses -------------------------------------------------------------------

_TOKEN_END = frozenset("=;,")


def parse_link_header(value: str) -> builtins.list[tuple[str, dict[str, str]]]:
    """Split an HTTP Link header (RFC 8288) into (target, parameters) pairs."""
    links: builtins.list[tuple[str, dict[str, str]]] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " \t,":
            i += 1
        if i >= n:
            break
        if value[i] != "<":
            raise InvalidJsonLd(f"malformed Link header near {value[i:i + 20]!r}")
        end = value.find(">", i)
        if end < 0:
            raise InvalidJsonLd("malformed Link header: a < has no >")
        target = value[i + 1 : end].strip()
        params: dict[str, str] = {}
        i = end + 1
        while i < n:
            while i < n and value[i] in " \t":
                i += 1
            if i >= n or value[i] == ",":
                break
            if value[i] != ";":
                raise InvalidJsonLd(f"malformed Link header near {value[i:i + 20]!r}")
            i += 1
            while i < n and value[i] in " \t":
                i += 1
            start = i
            while i < n and value[i] not in _TOKEN_END and not value[i].isspace():
                i += 1
            name = value[start:i].lower().rstrip("*")
            while i < n and value[i] in " \t":
                i += 1
            param = ""
            if i < n and value[i] == "=":
                i += 1
                while i < n and value[i] in " \t":
                    i += 1
                if i < n and value[i] == '"':
                    i += 1
                    chars: builtins.list[str] = []
                    while i < n and value[i] != '"':
                        if value[i] == "\\" and i + 1 < n:
                            i += 1
                        chars.append(value[i])
                        i += 1
                    if i >= n:
                        raise InvalidJsonLd("malformed Link header: an unclosed quoted string")
                    i += 1
                    param = "".join(chars)
                else:
                    start = i
                    while i < n and value[i] not in ";,":
                        i += 1
                    param = value[start:i].strip()
            if name:
                params.setdefault(name, param)  # RFC 8288: only the first rel counts
        links.append((target, params))
    return links


def _context_link(link_header: str | None) -> str | None:
    if not link_header:
        return None
    found = [
        target
        for target, params in parse_link_header(link_header)
        if LINK_REL.lower() in params.get("rel", "").lower().split()
    ]
    if len(found) > 1:
        raise InvalidJsonLd(
            f"a request may carry one JSON-LD @context Link header, not {len(found)}; "
            "host a @context that lists them all and link to it"
        )
    if found and not is_iri(found[0]):
        raise InvalidJsonLd(f"the JSON-LD Link header must give an absolute URL, not {found[0]!r}")
    return found[0] if found else None


def _media_type(content_type: str | None) -> str:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    # clause 6.3.4: merge-patch+json is read as application/json
    return "application/json" if media == "application/merge-patch+json" else media


def _checked_context(value: Any) -> ContextValue:
    items = value if isinstance(value, builtins.list) else [value]
    if not all(isinstance(i, (str, dict)) for i in items):
        raise InvalidJsonLd("@context must be a URL, an object, or a list of URLs and objects")
    checked: ContextValue = value
    return checked


def _body_has_context(body: object) -> bool:
    if isinstance(body, dict):
        return "@context" in body
    if isinstance(body, builtins.list):
        return any(isinstance(item, dict) and "@context" in item for item in body)
    return False


def _item_context(item: object) -> ContextValue:
    if not isinstance(item, dict) or item.get("@context") is None:
        raise InvalidJsonLd(
            "with Content-Type application/ld+json the body must carry @context"
            " (each item of an array, too)"
        )
    return _checked_context(item["@context"])


def _request_context(
    link_header: str | None, content_type: str | None, body: object, *, lists: bool
) -> ContextValue | None:
    media = _media_type(content_type)
    link_url = _context_link(link_header)
    if body is None:
        return link_url  # GET and DELETE: the Link header or the default @context
    if media == "application/ld+json":
        if link_url is not None:
            raise InvalidJsonLd(
                "with Content-Type application/ld+json the @context goes in the body; "
                "a JSON-LD Link header is not allowed (clause 6.3.5)"
            )
        if isinstance(body, builtins.list):
            if not lists:
                return None
            contexts = [_item_context(item) for item in body]
            if any(c != contexts[0] for c in contexts[1:]):
                raise InvalidJsonLd(
                    "the items carry different @context values; resolve them per item"
                )
            return contexts[0] if contexts else None
        return _item_context(body)
    if _body_has_context(body) and (lists or isinstance(body, dict)):
        raise InvalidJsonLd(
            "a body with @context needs Content-Type application/ld+json; with application/json "
            "the @context goes in a JSON-LD Link header (clause 6.3.5)"
        )
    return link_url


def _effective_context(context: ContextValue | None) -> builtins.list[str | dict[str, Any]]:
    items = [] if context is None else context if isinstance(context, builtins.list) else [context]
    core = CORE_URL
    user: builtins.list[str | dict[str, Any]] = []
    for item in items:
        shipped = core_url_for(item) if isinstance(item, str) else None
        if shipped is not None:
            core = shipped
        else:
            user.append(item)
    return [*user, core]


class _Legacy:
    pass


_LEGACY = _Legacy()


@overload
def context_from_request(
    link_header: str | None = None,
    content_type: str | None = None,
    body: object = None,
) -> builtins.list[str | dict[str, Any]]: ...


@overload
def context_from_request(
    *, link: str | None, content_type: str | None = None, body: object = None
) -> ContextValue | None: ...


def context_from_request(
    link_header: str | None = None,
    content_type: str | None = None,
    body: object = None,
    *,
    link: str | None | _Legacy = _LEGACY,
) -> builtins.list[str | dict[str, Any]] | ContextValue | None:
    """Apply clause 6.3.5: return the request's @context list, the core context last."""
    if not isinstance(link, _Legacy):
        # the keyword the API layer was written against returns the @context as the request
        # gave it (None when it gave none) and leaves array bodies to a check per item
        return _request_context(link, content_type, body, lists=False)
    return _effective_context(_request_context(link_header, content_type, body, lists=True))


def contexts_for_batch(
    link_header: str | None, content_type: str | None, body: builtins.list[Any]
) -> builtins.list[builtins.list[str | dict[str, Any]]]:
    """Return the @context list of each item of a batch body, applying clause 6.3.5 to each."""
    media = _media_type(content_type)
    link_url = _context_link(link_header)
    if media == "application/ld+json":
        if link_url is not None:
            raise InvalidJsonLd(
                "with Content-Type application/ld+json the @context goes in the body; "
                "a JSON-LD Link header is not allowed (clause 6.3.5)"
            )
        return [_effective_context(_item_context(item)) for item in body]
    if _body_has_context(body):
        raise InvalidJsonLd(
            "items with @context need Content-Type application/ld+json (clause 6.3.5)"
        )
    shared = _effective_context(link_url)
    return [builtins.list(shared) for _ in body]


def link_header_for(context_url: str) -> str:
    """Return the Link header that names a response's @context."""
    return f'<{context_url}>; rel="{LINK_REL}"; type="application/ld+json"'
