"""The NGSI-LD query language (q): a parser to a small tree, and its evaluation on entities."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from citybrain.core.errors import BadInput

META = {"observedAt", "createdAt", "modifiedAt", "unitCode", "datasetId"}
_OPS = ("!~=", "~=", "==", "!=", ">=", "<=", ">", "<")
_NAME = re.compile(r"[A-Za-z0-9_@:/#\-]+")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][+-]?\d+)?$")
_TERM = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_URI_VALUE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s\"<>]+$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")


@dataclass(frozen=True)
class Path:
    """An attribute, optional sub-attribute or meta field, and optional keys into its value."""

    attribute: str
    sub: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Comparison:
    """`path op value`; op None means the attribute merely exists."""

    path: Path
    op: str | None
    values: tuple[Any, ...] = ()
    low: Any = None
    high: Any = None


@dataclass(frozen=True)
class And:
    """All parts hold."""

    parts: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    """At least one part holds."""

    parts: tuple[Expr, ...]


Expr = Comparison | And | Or


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, expected: str) -> BadInput:
        return BadInput(f"invalid q at position {self.pos}: expected {expected} in {self.text!r}")

    def peek(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def parse(self) -> Expr:
        if not self.text.strip():
            raise BadInput("q must not be empty")
        expr = self.or_expr()
        if self.pos != len(self.text):
            raise self.fail("';', '|' or the end")
        return expr

    def or_expr(self) -> Expr:
        parts = [self.and_expr()]
        while self.peek("|"):
            self.pos += 1
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def and_expr(self) -> Expr:
        parts = [self.term()]
        while self.peek(";"):
            self.pos += 1
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def term(self) -> Expr:
        if self.peek("("):
            self.pos += 1
            inner = self.or_expr()
            if not self.peek(")"):
                raise self.fail("')'")
            self.pos += 1
            return inner
        if self.peek("!") and not self.peek("!=") and not self.peek("!~="):
            # clause 4.9: !attr holds when the attribute does not exist
            self.pos += 1
            return Comparison(self.path(), "!")
        path = self.path()
        for op in _OPS:
            if self.peek(op):
                self.pos += len(op)
                return self.value(path, op)
        return Comparison(path, None)

    def name(self) -> str:
        match = _NAME.match(self.text, self.pos)
        if not match:
            raise self.fail("an attribute name")
        self.pos = match.end()
        return match.group(0)

    def path(self) -> Path:
        attribute = self.name()
        sub: list[str] = []
        while self.peek("."):
            self.pos += 1
            sub.append(self.name())
        keys: list[str] = []
        if self.peek("["):
            end = self.text.find("]", self.pos)
            if end < 0:
                raise self.fail("']'")
            inner = self.text[self.pos + 1 : end]
            # [*] is any language of a LanguageProperty
            if not inner or not all(_NAME.fullmatch(k) or k == "*" for k in inner.split(".")):
                raise self.fail("a key path inside [ ]")
            keys = inner.split(".")
            self.pos = end + 1
        return Path(attribute, tuple(sub), tuple(keys))

    def scalar(self) -> Any:
        if self.peek('"'):
            end = self.pos + 1
            while end < len(self.text) and self.text[end] != '"':
                end += 2 if self.text[end] == "\\" else 1
            if end >= len(self.text):
                raise self.fail('a closing "')
            raw = self.text[self.pos + 1 : end].replace('\\"', '"')
            self.pos = end + 1
            return raw
        match = re.compile(r"[^;|()\",]+").match(self.text, self.pos)
        if not match:
            raise self.fail("a value")
        raw = match.group(0)
        # a range splits on '..'; give the low end back to the range parser
        if ".." in raw:
            raw = raw.split("..", 1)[0]
        self.pos += len(raw)
        if raw in ("true", "false"):
            return raw == "true"
        if _NUMBER.match(raw):
            return float(raw) if any(c in raw for c in ".eE") else int(raw)
        if _DATETIME.match(raw):
            return _parse_datetime(raw)
        if _URI_VALUE.match(raw) or _TERM.fullmatch(raw):
            # a bare term (category==commercial) compares as text, or expanded by expandValues
            return raw
        raise self.fail("a number, true, false, a date-time, a URI, a term or a quoted string")

    def value(self, path: Path, op: str) -> Comparison:
        first = self.scalar()
        if op in ("~=", "!~="):
            if not isinstance(first, str):
                raise self.fail("a quoted pattern")
            try:
                re.compile(first)
            except re.error as exc:
                raise BadInput(f"invalid pattern {first!r} in q: {exc}") from None
            return Comparison(path, op, (first,))
        if self.peek(".."):
            if op not in ("==", "!="):
                raise self.fail("== or != before a range")
            self.pos += 2
            high = self.scalar()
            return Comparison(path, op, (), first, high)
        values = [first]
        while self.peek(","):
            if op not in ("==", "!="):
                raise self.fail("== or != before a list")
            self.pos += 1
            values.append(self.scalar())
        return Comparison(path, op, tuple(values))


def _parse_datetime(raw: str) -> datetime:
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{raw!r} is not a valid date or time in q") from None


def parse(text: str) -> Expr:
    """Parse a q expression; any syntax error is BadInput with its position."""
    return _Parser(text).parse()


def parse_path(text: str) -> Path:
    """Parse an attribute path alone (`a`, `a.b`, `a.observedAt`, `a[k.j]`), as orderBy names it."""
    parser = _Parser(text)
    path = parser.path()
    if parser.pos != len(text):
        raise parser.fail("the end of the attribute path")
    return path


def values(entity: dict[str, Any], path: Path) -> list[Any]:
    """Return the values a path (with expanded names) reaches in an entity, flattened."""
    return _values(entity, path)


def names(expr: Expr) -> Iterator[str]:
    """Yield the attribute names an expression refers to."""
    if isinstance(expr, Comparison):
        yield expr.path.attribute
    else:
        for part in expr.parts:
            yield from names(part)


def expand(expr: Expr, fn: Callable[[str], str]) -> Expr:
    """Return the expression with attribute and sub-attribute names expanded by fn."""
    if isinstance(expr, Comparison):
        p = expr.path
        sub = tuple(s if s in META else fn(s) for s in p.sub)
        return Comparison(
            Path(fn(p.attribute), sub, p.keys), expr.op, expr.values, expr.low, expr.high
        )
    parts = tuple(expand(part, fn) for part in expr.parts)
    return And(parts) if isinstance(expr, And) else Or(parts)


def expand_values(expr: Expr, attributes: set[str], fn: Callable[[str], str]) -> Expr:
    """Expand the text values compared with the given attributes (expandValues, clause 4.9)."""
    if isinstance(expr, Comparison):
        if expr.path.attribute not in attributes:
            return expr
        values = tuple(fn(v) if isinstance(v, str) else v for v in expr.values)
        return Comparison(expr.path, expr.op, values, expr.low, expr.high)
    parts = tuple(expand_values(part, attributes, fn) for part in expr.parts)
    return And(parts) if isinstance(expr, And) else Or(parts)


def _instances(entity: dict[str, Any], name: str) -> list[dict[str, Any]]:
    attr = entity.get(name)
    if attr is None:
        return []
    return [a for a in (attr if isinstance(attr, list) else [attr]) if isinstance(a, dict)]


def _leaf(instance: dict[str, Any]) -> Any:
    kind = instance.get("type")
    if kind in ("Relationship", "ListRelationship"):
        return instance.get("object", instance.get("objectList"))
    if kind == "LanguageProperty":
        return list((instance.get("languageMap") or {}).values())
    if kind == "VocabProperty":
        return instance.get("vocab")
    if kind == "JsonProperty":
        return instance.get("json")
    return instance.get("value", instance.get("valueList"))


def _values(entity: dict[str, Any], path: Path, *, relationships: bool = True) -> list[Any]:
    out: list[Any] = []
    for instance in _instances(entity, path.attribute):
        kind = instance.get("type")
        if not relationships and kind in ("Relationship", "ListRelationship"):
            continue
        if kind == "LanguageProperty" and path.keys and not path.sub:
            # attr[tag] is the value in that language, attr[*] any of them
            languages = instance.get("languageMap") or {}
            tag = path.keys[0]
            found = list(languages.values()) if tag == "*" else [languages.get(tag)]
            out.extend(v for v in found if v is not None)
            continue
        targets: list[Any] = [instance]
        for sub in path.sub:
            nxt: list[Any] = []
            for t in targets:
                if not isinstance(t, dict):
                    continue
                if sub in META:
                    if sub in t:
                        nxt.append({"__meta__": t[sub]})
                else:
                    nxt.extend(_instances(t, sub))
            targets = nxt
        for t in targets:
            value = t["__meta__"] if "__meta__" in t else _leaf(t)
            for key in path.keys:
                value = value.get(key) if isinstance(value, dict) else None
            if value is None:
                continue
            out.extend(value if isinstance(value, list) else [value])
    return out


def _coerce(actual: Any, literal: Any) -> tuple[Any, Any] | None:
    """Bring an attribute value and a literal to comparable types, or None if they differ."""
    if isinstance(literal, bool) or isinstance(actual, bool):
        return (actual, literal) if isinstance(actual, bool) and isinstance(literal, bool) else None
    if isinstance(literal, (int, float)):
        return (actual, literal) if isinstance(actual, (int, float)) else None
    if isinstance(literal, datetime):
        if not isinstance(actual, str) or not _DATETIME.match(actual):
            return None
        value = datetime.fromisoformat(actual.replace("Z", "+00:00"))
        if (value.tzinfo is None) != (literal.tzinfo is None):
            return None
        return value, literal
    if isinstance(literal, str):
        return (actual, literal) if isinstance(actual, str) else None
    return None


def _compare(actual: Any, op: str, literal: Any) -> bool:
    pair = _coerce(actual, literal)
    if pair is None:
        return False
    a, b = pair
    try:
        return bool(
            {"==": a == b, "!=": a != b, ">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]
        )
    except TypeError:
        return False


def matches(expr: Expr, entity: dict[str, Any]) -> bool:
    """Evaluate an expression (with expanded names) on an entity in normalized form."""
    if isinstance(expr, And):
        return all(matches(p, entity) for p in expr.parts)
    if isinstance(expr, Or):
        return any(matches(p, entity) for p in expr.parts)
    # clause 4.9: a Relationship compared by an ordering operator never matches
    values = _values(entity, expr.path, relationships=expr.op not in (">", "<", ">=", "<="))
    if expr.op is None:
        return bool(values)
    if expr.op == "!":
        return not values
    if expr.op in ("~=", "!~="):
        pattern = re.compile(expr.values[0])
        found = any(isinstance(v, str) and pattern.search(v) for v in values)
        return found if expr.op == "~=" else (bool(values) and not found)
    if expr.low is not None:
        inside = any(_compare(v, ">=", expr.low) and _compare(v, "<=", expr.high) for v in values)
        return inside if expr.op == "==" else (bool(values) and not inside)
    if expr.op == "==":
        return any(_compare(v, "==", lit) for v in values for lit in expr.values)
    if expr.op == "!=":
        return bool(values) and not any(
            _compare(v, "==", lit) for v in values for lit in expr.values
        )
    return any(_compare(v, expr.op, lit) for v in values for lit in expr.values)


def parse_dnf(text: str, what: str) -> list[list[str]]:
    """Parse `a;b|(c|d);e` (';' and, '|' or ',' or, parentheses) into OR-ed AND-groups.

    The form of scopeQ and of a type selector (clauses 4.17, 4.19): each group is a list of
    terms that must all hold, and one group holding is enough.
    """
    pos = 0

    def fail(expected: str) -> BadInput:
        return BadInput(f"invalid {what} at position {pos}: expected {expected} in {text!r}")

    def disjunction() -> list[list[str]]:
        nonlocal pos
        groups = conjunction()
        while pos < len(text) and text[pos] in "|,":
            pos += 1
            groups = groups + conjunction()
        return groups

    def conjunction() -> list[list[str]]:
        nonlocal pos
        groups = operand()
        while pos < len(text) and text[pos] == ";":
            pos += 1
            right = operand()
            groups = [a + b for a in groups for b in right]
            if len(groups) > 256:
                raise BadInput(f"{what} expands to too many alternatives")
        return groups

    def operand() -> list[list[str]]:
        nonlocal pos
        if pos < len(text) and text[pos] == "(":
            pos += 1
            inner = disjunction()
            if pos >= len(text) or text[pos] != ")":
                raise fail("')'")
            pos += 1
            return inner
        end = pos
        while end < len(text) and text[end] not in ";|,()":
            end += 1
        term = text[pos:end].strip()
        if not term:
            raise fail("a term")
        pos = end
        return [[term]]

    groups = disjunction()
    if pos != len(text):
        raise fail("';', '|' or the end")
    return groups
