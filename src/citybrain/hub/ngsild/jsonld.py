"""JSON-LD @context handling for NGSI-LD: core contexts shipped offline, user contexts cached."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from citybrain.core.errors import BadInput
from citybrain.hub.ngsild.errors import LdContextNotAvailable

CORE_BASE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context"
CORE_URL = f"{CORE_BASE}-v1.8.jsonld"
CORE_VERSIONS = {"1.6": f"{CORE_BASE}-v1.6.jsonld", "1.8": CORE_URL}
DEFAULT_VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
LINK_REL = "http://www.w3.org/ns/json-ld#context"
MAX_DEPTH = 10
_LINK = re.compile(r"^\s*<([^>]+)>\s*(.*)$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]+$")
_ATTR_NAME_FORBIDDEN = set("<>\"'=;()&?/# ")
ContextValue = str | dict[str, Any] | list[Any]


def _load_core(version: str) -> dict[str, Any]:
    text = (
        resources.files("citybrain.hub.ngsild")
        .joinpath("contexts", f"ngsi-ld-core-context-v{version}.jsonld")
        .read_text(encoding="utf-8")
    )
    document: dict[str, Any] = json.loads(text)
    return document


def core_url_for(url: str) -> str | None:
    """Map any core context URL (versioned or not) to a shipped one, or None if not core."""
    if not url.startswith(CORE_BASE):
        return None
    if url == f"{CORE_BASE}.jsonld":
        return CORE_URL  # the unversioned name of the newest
    match = re.fullmatch(re.escape(CORE_BASE) + r"-v(\d+)\.(\d+)(?:\.\d+)?\.jsonld", url)
    if match is None:
        return None  # not a core context after all: fetched like any other (and failing)
    minor = int(match.group(2))
    # a version we do not ship resolves to the nearest shipped one: the terms are compatible
    return CORE_VERSIONS["1.6"] if minor <= 6 else CORE_URL


@dataclass
class TermMap:
    """The flattened result of a list of contexts: term to IRI, and IRI back to term."""

    terms: dict[str, str] = field(default_factory=dict)
    vocab: str = DEFAULT_VOCAB
    reverse: dict[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()
    # attribute names already checked and expanded with this map (filled by entities)
    checked: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def expand(self, name: str) -> str:
        """Expand a short name to its IRI."""
        hit = self.terms.get(name)
        if hit is not None:
            return hit
        if is_iri(name):
            prefix, _, rest = name.partition(":")
            base = self.terms.get(prefix)
            if base is not None and not rest.startswith("//"):
                return base + rest
            return name
        return self.vocab + name

    def compact(self, iri: str) -> str:
        """Compact an IRI to the shortest name the context gives it."""
        hit = self.reverse.get(iri)
        if hit is not None:
            return hit
        if iri.startswith(self.vocab):
            return iri[len(self.vocab) :]
        return iri


def is_iri(value: str) -> bool:
    """Return whether a string is an absolute IRI (scheme, colon, no spaces)."""
    return bool(_URI.match(value))


def validate_entity_id(value: Any) -> str:
    """Refuse an entity id that is not an absolute URI."""
    if not isinstance(value, str) or not is_iri(value):
        raise BadInput(f"the entity id {value!r} is not a URI")
    if value.isascii():
        # in ASCII only control characters are refused below (the URI pattern has no spaces)
        if not value.isprintable():
            raise BadInput(f"the entity id {value!r} holds control, format or space characters")
        return value
    # invisible and control characters make ids that look alike but differ (RFC 3987 excludes them)
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Zs") for ch in value):
        raise BadInput(f"the entity id {value!r} holds control, format or space characters")
    if any(_invisible(ch) for ch in value):
        raise BadInput(f"the entity id {value!r} holds invisible or non-characters")
    return value


# characters that render as nothing: Hangul fillers and the blank Braille pattern
_BLANKS = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}


def _invisible(ch: str) -> bool:
    """Variation selectors, Unicode noncharacters and blank-looking letters (RFC 3987 2.2)."""
    code = ord(ch)
    return (
        ch in _BLANKS
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0xE0100 <= code <= 0xE01EF  # variation selectors supplement
        or 0xFDD0 <= code <= 0xFDEF  # noncharacters
        or (code & 0xFFFE) == 0xFFFE  # U+FFFE and U+FFFF of every plane
    )


def validate_attribute_name(name: str) -> str:
    """Refuse attribute names with characters NGSI-LD forbids."""
    if not name or any(ch in _ATTR_NAME_FORBIDDEN for ch in name) and not is_iri(name):
        raise BadInput(f"{name!r} is not a valid attribute name")
    return name


class ContextStore:
    """Resolves @context values; fetches user contexts by URL with a timeout and caches them."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        folder: Path | None = None,
    ) -> None:
        self.timeout = timeout
        self.transport = transport
        self.cached: dict[str, dict[str, Any]] = {}
        # hosted contexts are kept as files in `folder` (when given), so a restart keeps them
        # and every worker process of a node serves the same ones
        self.folder = folder
        self._hosted: dict[str, dict[str, Any]] = {}
        self._folder_mark: int | None = None
        self._maps: dict[str, TermMap] = {}
        self._core_map: TermMap | None = None  # the map of the core context alone
        self._lock = threading.Lock()
        self.core = {url: _load_core(v) for v, url in CORE_VERSIONS.items()}

    # ---- hosted contexts -----------------------------------------------------------------
    @property
    def hosted(self) -> dict[str, dict[str, Any]]:
        """The contexts this node hosts, by URL (read it; change it with host and forget)."""
        self._sync()
        return self._hosted

    def host(self, url: str, document: dict[str, Any]) -> None:
        """Host a context document under a URL of this node."""
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self._file(url)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"url": url, "document": document}))
            os.replace(tmp, path)  # whole or absent for the other workers
        with self._lock:
            self._hosted[url] = document

    def _file(self, url: str) -> Path:
        assert self.folder is not None
        return self.folder / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".json")

    def _sync(self) -> None:
        """Reload the hosted contexts when another process changed the folder."""
        if self.folder is None:
            return
        try:
            mark = self.folder.stat().st_mtime_ns
        except FileNotFoundError:
            mark = 0
        if mark == self._folder_mark:
            return
        loaded: dict[str, dict[str, Any]] = {}
        for path in sorted(self.folder.glob("*.json")) if mark else []:
            try:
                record = json.loads(path.read_text())
                loaded[str(record["url"])] = dict(record["document"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # removed meanwhile, or not ours
        with self._lock:
            self._hosted = loaded
            self._maps.clear()  # a map may include a context that is gone
            self._folder_mark = mark

    # ---- documents -----------------------------------------------------------------------
    def document(self, url: str) -> dict[str, Any]:
        """Return the JSON-LD document at a URL: core and hosted ones locally, others fetched."""
        core = core_url_for(url)
        if core is not None:
            return self.core[core]
        if url in self.hosted:
            return self.hosted[url]
        with self._lock:
            if url in self.cached:
                return self.cached[url]
        document = self._fetch(url)
        with self._lock:
            self.cached[url] = document
        return document

    def _fetch(self, url: str) -> dict[str, Any]:
        if not url.startswith(("http://", "https://")):
            raise LdContextNotAvailable(f"the @context {url!r} is not an http(s) URL")
        try:
            with httpx.Client(timeout=self.timeout, transport=self.transport) as client:
                response = client.get(
                    url, headers={"Accept": "application/ld+json, application/json"}
                )
        except httpx.HTTPError as exc:
            raise LdContextNotAvailable(f"the @context {url} cannot be fetched: {exc}") from None
        if response.status_code != 200:
            raise LdContextNotAvailable(
                f"the @context {url} cannot be fetched: HTTP {response.status_code}"
            )
        # clause 5.5.4: a document that was had but is no JSON-LD context is bad input, while
        # one that cannot be had is LdContextNotAvailable
        try:
            document = response.json()
        except ValueError:
            raise BadInput(f"the @context {url} is not JSON") from None
        if not isinstance(document, dict) or "@context" not in document:
            raise BadInput(f"the document at {url} has no @context member")
        return document

    def refresh(self, url: str) -> None:
        """Fetch a cached context again."""
        document = self._fetch(url)
        with self._lock:
            self.cached[url] = document
            self._maps.clear()

    def forget(self, url: str) -> bool:
        """Drop a hosted or cached context; return whether there was one."""
        hosted = url in self.hosted
        if hosted and self.folder is not None:
            self._file(url).unlink(missing_ok=True)
        with self._lock:
            found = (
                self._hosted.pop(url, None) is not None or self.cached.pop(url, None) is not None
            )
            self._maps.clear()
        return found or hosted

    # ---- term maps -----------------------------------------------------------------------
    def term_map(self, context: ContextValue | None) -> TermMap:
        """Flatten a @context (URL, object or list) with the core context into a TermMap."""
        if context is None and self._core_map is not None:
            # the core context alone: shipped, so no hosted or cached context changes its map
            return self._core_map
        items = [] if context is None else (context if isinstance(context, list) else [context])
        key = json.dumps(items, sort_keys=True, default=str)
        self._sync()
        with self._lock:
            cached = self._maps.get(key)
        if cached is not None:
            return cached
        terms: dict[str, Any] = {}
        user_vocab: list[str] = []
        self._collect(self.core[CORE_URL]["@context"], terms, [], 0)
        core_terms = dict(terms)
        for item in items:
            self._collect(item, terms, user_vocab, 0)
        # core terms cannot be redefined by a user context (the core context is protected)
        terms.update({k: v for k, v in core_terms.items() if k in ("id", "type")})
        resolved = {k: self._resolve(v, terms) for k, v in terms.items()}
        resolved = {k: v for k, v in resolved.items() if v and not k.startswith("@")}
        vocab = user_vocab[-1] if user_vocab else DEFAULT_VOCAB
        reverse: dict[str, str] = {}
        for term, iri in resolved.items():
            if iri.startswith("@") or ":" in term:
                continue
            best = reverse.get(iri)
            if best is None or len(term) < len(best):
                reverse[iri] = term
        urls = tuple(i for i in items if isinstance(i, str))
        result = TermMap(terms=resolved, vocab=vocab, reverse=reverse, urls=urls)
        with self._lock:
            self._maps[key] = result
        if context is None:
            self._core_map = result
        return result

    def _collect(self, item: Any, terms: dict[str, Any], vocab: list[str], depth: int) -> None:
        if depth > MAX_DEPTH:
            raise BadInput("the @context nests or refers to itself too deeply")
        if isinstance(item, str):
            document = self.document(item)
            self._collect(document.get("@context"), terms, vocab, depth + 1)
        elif isinstance(item, list):
            for sub in item:
                self._collect(sub, terms, vocab, depth + 1)
        elif isinstance(item, dict):
            for key, value in item.items():
                if key == "@vocab" and isinstance(value, str):
                    vocab.append(value)
                elif key == "@import" and isinstance(value, str):
                    self._collect(value, terms, vocab, depth + 1)
                elif not key.startswith("@"):
                    terms[key] = value
        elif item is not None:
            raise BadInput("a @context must be a URL, an object or a list of them")

    @staticmethod
    def _resolve(value: Any, terms: dict[str, Any]) -> str:
        target = value.get("@id") if isinstance(value, dict) else value
        if not isinstance(target, str):
            return ""
        for _ in range(3):  # prefixes may refer to prefixes
            prefix, sep, rest = target.partition(":")
            if sep and not rest.startswith("//") and prefix in terms:
                base = terms[prefix]
                base = base.get("@id") if isinstance(base, dict) else base
                if isinstance(base, str):
                    target = base + rest
                    continue
            break
        return target


def parse_link_header(value: str | None) -> str | None:
    """Return the @context URL of a Link header with the JSON-LD context relation."""
    if not value:
        return None
    found: list[str] = []
    for part in value.split(","):
        match = _LINK.match(part)
        if match and LINK_REL in match.group(2):
            found.append(match.group(1).strip())
    if len(found) > 1:
        raise BadInput("more than one JSON-LD @context Link header")
    return found[0] if found else None


def context_from_request(
    *, link: str | None, content_type: str | None, body: Any = None
) -> ContextValue | None:
    """Apply NGSI-LD's rules for where a request's @context comes from."""
    media = (content_type or "").split(";")[0].strip().lower()
    link_url = parse_link_header(link)
    body_context = body.get("@context") if isinstance(body, dict) else None
    if media == "application/ld+json":
        if link_url:
            raise BadInput("application/ld+json requests carry @context in the body, not a Link")
        if body is not None and body_context is None and not isinstance(body, list):
            raise BadInput("an application/ld+json body must contain @context")
        context: ContextValue | None = body_context
        return context
    if body_context is not None:
        raise BadInput("@context in the body needs Content-Type application/ld+json")
    return link_url


def link_header_for(url: str) -> str:
    """Return a Link header naming a @context."""
    return f'<{url}>; rel="{LINK_REL}"; type="application/ld+json"'
