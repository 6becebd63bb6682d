"""NGSI-LD reads through the governance gate: each entity type is a dataset `ngsi-ld:TYPE`.

Types the catalog does not describe are the node's open context data, readable by every
government principal; a type under a grant shows only the granted attributes, masked as the
catalog says, and only entities inside the grant's row scope. Every read leaves one audit
record per type with the number of entities returned.
"""

from __future__ import annotations

import time
import weakref
from collections import Counter
from collections.abc import Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from fastapi import Request
from sqlalchemy import Engine

from citybrain.core.errors import Forbidden, Unauthorized
from citybrain.governance import gate
from citybrain.governance.gate import FieldView, ReadDecision
from citybrain.governance.masking import MaskKind
from citybrain.governance.principal import Principal, Role
from citybrain.hub.ngsild.entities import ENTITY_MEMBERS, instances


def short_name(iri: str) -> str:
    """Return the short name of an expanded type or attribute IRI."""
    for mark in ("#", "/", ":"):
        if mark in iri:
            iri = iri.rsplit(mark, 1)[-1]
    return iri


def dataset_of(type_iri: str) -> str:
    """Return the catalog id of an entity type."""
    return gate.ENTITY_PREFIX + short_name(type_iri)


class Reader:
    """The gate's decisions for one request, one per entity type, and what was returned."""

    def __init__(self, request: Request | None, action: str = "ngsild.read") -> None:
        if request is None:
            return  # see for_principal
        principal = getattr(request.state, "principal", None)
        if not isinstance(principal, Principal):
            raise Unauthorized("this endpoint needs a bearer token")
        self._start(principal, request.app.state.engine, request.app.state.settings.data_dir)
        self.action = action

    def _start(self, principal: Principal, engine: Engine, data_dir: Path) -> None:
        self.principal = principal
        self.engine = engine
        self.data_dir = data_dir
        self.decisions: dict[str, ReadDecision | Forbidden] = {}
        self.returned: Counter[str] = Counter()

    @classmethod
    def for_principal(
        cls, principal: Principal, *, engine: Engine, data_dir: Path, action: str
    ) -> Reader:
        """Build a reader outside a request (notifications of a subscription)."""
        reader = cls(None, action)
        reader._start(principal, engine, data_dir)
        reader.action = action
        return reader

    def decide(self, type_iri: str) -> ReadDecision | Forbidden:
        """Return the decision for an entity type (cached for the request)."""
        dataset_id = dataset_of(type_iri)
        if dataset_id not in self.decisions:
            try:
                self.decisions[dataset_id] = gate.authorize_read(
                    engine=self.engine,
                    data_dir=self.data_dir,
                    principal=self.principal,
                    dataset_id=dataset_id,
                    action=self.action,
                )
            except Forbidden as exc:
                self.decisions[dataset_id] = exc
        return self.decisions[dataset_id]

    def allowed_types(self, types: list[str] | None) -> list[str] | None:
        """Drop the types the principal may not read from a query's type list."""
        if types is None:
            return None
        return [t for t in types if isinstance(self.decide(t), ReadDecision)]

    def entity(self, entity: dict[str, Any]) -> dict[str, Any] | None:
        """Return the entity as the principal may see it, or None when it may not."""
        types = entity.get("type") or []
        if isinstance(types, str):
            types = [types]
        decisions = [self.decide(t) for t in types]
        usable = [d for d in decisions if isinstance(d, ReadDecision)]
        if not usable or len(usable) < len(decisions):
            # an entity with one refused type is refused: its other types do not launder it
            return None
        shown: dict[str, Any] | None = entity
        for decision in usable:
            shown = _apply(decision, shown) if shown is not None else None
        if shown is None:
            return None
        for decision in usable:
            self.returned[decision.dataset_id] += 1
        return shown

    def one(self, entity: dict[str, Any]) -> dict[str, Any]:
        """Return one entity as the principal may see it, or raise 403."""
        shown = self.entity(entity)
        if shown is None:
            refusals = [d for d in self.decisions.values() if isinstance(d, Forbidden)]
            raise (
                refusals[0]
                if refusals
                else Forbidden(f"entity {entity.get('id')} is outside what you may read")
            )
        return shown

    def many(self, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Return the entities the principal may see, each as it may see it."""
        out = []
        for entity in entities:
            shown = self.entity(entity)
            if shown is not None:
                out.append(shown)
        return out

    def readable_attributes(self, entity: dict[str, Any]) -> set[str] | None:
        """Return the attribute IRIs whose history may be shown (None: all of them)."""
        restricted = [
            d
            for d in self.decisions.values()
            if isinstance(d, ReadDecision) and d.fields is not None
        ]
        if not restricted:
            return None
        allowed: set[str] = set()
        for name in entity:
            if name in ENTITY_MEMBERS:
                continue
            views = [_view(d, name) for d in restricted]
            # history is shown only for granted attributes that are not masked
            if all(v is not None and v.mask is MaskKind.none for v in views):
                allowed.add(name)
        return allowed

    def finish(self) -> None:
        """Append one audit record per dataset read, with the entities returned."""
        for dataset_id, decision in self.decisions.items():
            if isinstance(decision, ReadDecision):
                gate.record_read(
                    data_dir=self.data_dir,
                    decision=decision,
                    rows=self.returned[dataset_id],
                    action=self.action,
                )


def _view(decision: ReadDecision, attribute_iri: str) -> FieldView | None:
    if decision.fields is None:
        return FieldView(short_name(attribute_iri))
    name = short_name(attribute_iri)
    return next((f for f in decision.fields if f.name == name), None)


def _value(attr: Any) -> Any:
    first = instances(attr)
    if not first:
        return None
    inst = first[0]
    return inst.get("value", inst.get("object"))


def _apply(decision: ReadDecision, entity: dict[str, Any]) -> dict[str, Any] | None:
    """Filter, project and mask one expanded entity under a decision."""
    if not decision.restricted:
        return entity
    flat = {short_name(k): _value(v) for k, v in entity.items() if k not in ENTITY_MEMBERS}
    if not decision.row_allowed(flat):
        return None
    if decision.fields is None:
        return entity
    out: dict[str, Any] = {k: v for k, v in entity.items() if k in ENTITY_MEMBERS}
    for name, attr in entity.items():
        if name in ENTITY_MEMBERS:
            continue
        view = _view(decision, name)
        if view is None:
            continue
        if view.mask is MaskKind.none and decision.pseudonym_key is None:
            out[name] = attr
            continue
        masked = []
        for inst in instances(attr):
            copy = dict(inst)
            if "value" in copy and isinstance(copy["value"], (str, int, float)):
                copy["value"] = decision.show_value(view, copy["value"])
            elif "value" in copy and view.mask is not MaskKind.none:
                copy["value"] = decision.show_value(FieldView(view.name, MaskKind.hidden), "x")
            masked.append(copy)
        out[name] = masked[0] if len(masked) == 1 else masked
    return out


# --- writes --------------------------------------------------------------------------------

# who writes in this request: set by the NGSI-LD router; None for local processes (connectors)
writer: ContextVar[tuple[Principal, Engine] | None] = ContextVar("ngsild_writer", default=None)
_OWNERS_TTL = 5.0
# per engine (rendering its URL for a key cost more than the lookup), by entity type IRI
_owners: weakref.WeakKeyDictionary[Engine, dict[str, tuple[float, str | None]]] = (
    weakref.WeakKeyDictionary()
)


def _owner_of(engine: Engine, type_iri: str) -> str | None:
    """Return the owner department of a catalogued entity type (cached briefly), or None."""
    from citybrain.governance.catalog import service as catalog

    known = _owners.get(engine)
    if known is None:
        known = _owners[engine] = {}
    now = time.monotonic()
    cached = known.get(type_iri)
    if cached is not None and cached[0] > now:
        return cached[1]
    entry = catalog.find_entry(engine=engine, dataset_id=dataset_of(type_iri))
    owner = str(entry.owner_department) if entry is not None else None
    if len(known) > 10_000:
        known.clear()
    known[type_iri] = (now + _OWNERS_TTL, owner)
    return owner


def write_refusal(types: Iterable[str]) -> str | None:
    """Return why the request's principal may not write entities of these types, or None."""
    bound = writer.get()
    if bound is None:
        return None
    principal, engine = bound
    if principal.role in (Role.citizen, Role.auditor):
        return f"the role {principal.role.value} may not change context data"
    for type_iri in types:
        owner = _owner_of(engine, type_iri)
        if owner is None or principal.role is Role.bureau_admin or principal.org == owner:
            continue
        return (
            f"entities of type {short_name(type_iri)} belong to {owner}; "
            f"{principal.org} may not change them"
        )
    return None


def check_write(types: Iterable[str]) -> None:
    """Refuse (403) a change to entities of types the request's principal may not write."""
    reason = write_refusal(types)
    if reason is not None:
        raise Forbidden(reason)


# --- subscriptions --------------------------------------------------------------------------


def reader_claims(request: Request) -> dict[str, Any] | None:
    """Return who a subscription reads as: its creator (or last editor), stored with it."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        return None
    return {
        "subject": principal.subject,
        "org": principal.org,
        "role": principal.role.value,
        "issuer": principal.issuer,
        "phone": principal.phone,
    }


def subscription_reader(
    sub: dict[str, Any], *, engine: Engine, data_dir: Path | None
) -> Reader | None:
    """Return the reader a subscription's notifications are read as; None: it sees everything.

    Subscriptions made by local processes have no reader. A stored reader the node cannot
    understand is refused (Forbidden): it receives nothing.
    """
    claims = sub.get("_reader")
    if not isinstance(claims, dict) or data_dir is None:
        return None
    try:
        principal = Principal(
            subject=str(claims["subject"]),
            org=str(claims["org"]),
            role=Role(str(claims["role"])),
            issuer=str(claims.get("issuer") or ""),
            phone=claims.get("phone"),
        )
    except (KeyError, ValueError):
        raise Forbidden("the subscription's reader is not understood") from None
    return Reader.for_principal(principal, engine=engine, data_dir=data_dir, action="ngsild.notify")


def notified_entities(
    sub: dict[str, Any], entities: list[dict[str, Any]], *, engine: Engine, data_dir: Path | None
) -> list[dict[str, Any]]:
    """Return the entities a subscription's reader may receive, as it may see them."""
    try:
        reader = subscription_reader(sub, engine=engine, data_dir=data_dir)
    except Forbidden:
        return []
    if reader is None:
        return entities
    shown = reader.many(entities)
    reader.finish()
    return shown
