"""Where pulled records go: a departmental table (upsert by key) or NGSI-LD entities.

Both sinks are idempotent: a table load upserts by primary key, and the entity sink upserts by
id, so a batch applied twice (a crash between the write and its checkpoint) leaves no duplicate.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from citybrain.core.errors import BadInput, CityBrainError
from citybrain.hub.connectors import checkpoints
from citybrain.hub.ngsild import service as ngsild
from citybrain.hub.ngsild.entities import expand_entity
from citybrain.hub.ngsild.jsonld import ContextStore
from citybrain.hub.tables import service as tables
from citybrain.hub.tables.files import FileFormat

CONNECTOR = "entity-sink"
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class Counters:
    """What a pull connector has done since it started."""

    batches: int = 0
    applied: int = 0
    rejected: int = 0
    duplicates: int = 0
    failures: int = 0
    reasons: list[str] = field(default_factory=list)

    def note(self, reason: str) -> None:
        """Keep the latest reasons (bounded) so a status line can show them."""
        self.reasons = (self.reasons + [reason])[-20:]


def jsonable(value: Any) -> Any:
    """Turn a database or JSON value into something a JSON Lines load accepts."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raise BadInput("binary values cannot be loaded; cast them to text in the source query")
    return value


def split_table(qualified: str) -> tuple[str, str]:
    """Split department/name, or refuse with a clear message."""
    department, _, name = qualified.partition("/")
    if not department or not name or "/" in name:
        raise BadInput(f"name a table as department/name, not {qualified!r}")
    return department, name


class TableSink:
    """Upsert records into a registered departmental table as one new version per batch."""

    def __init__(self, *, engine: Engine, data_dir: Path, table: str) -> None:
        self.engine, self.data_dir = engine, data_dir
        self.department, self.name = split_table(table)
        # fails early, with the tables service's message, when the table is not registered
        described = tables.describe_table(
            engine=engine, data_dir=data_dir, department=self.department, name=self.name
        )
        self.columns = [c.name for c in described.columns]
        self.primary_key = list(described.primary_key)

    def apply(self, records: list[dict[str, Any]], *, source: str, counters: Counters) -> None:
        """Load the records; rows the table refuses are counted with their reasons."""
        if not records:
            return
        lines = [json.dumps({k: jsonable(v) for k, v in r.items()}) for r in records]
        result = tables.load_file(
            engine=self.engine,
            data_dir=self.data_dir,
            department=self.department,
            name=self.name,
            data=("\n".join(lines) + "\n").encode(),
            fmt=FileFormat.jsonl,
            source=source,
        )
        counters.applied += result.accepted
        counters.rejected += result.rejected
        for rejection in result.rejections[:5]:
            counters.note(f"record {rejection.row}: {rejection.reason}")


class EntitySink:
    """Upsert records as NGSI-LD entities: one entity per record, fields as Properties."""

    def __init__(self, *, entity_type: str, id_template: str, observed_field: str | None) -> None:
        if not _FIELD.search(id_template):
            raise BadInput("the id template needs a {field} placeholder, e.g. urn:ngsi-ld:T:{id}")
        self.entity_type, self.id_template = entity_type, id_template
        self.observed_field = observed_field
        self.fields = set(_FIELD.findall(id_template))
        self.terms = ContextStore().term_map(None)

    def to_entity(self, record: dict[str, Any]) -> dict[str, Any]:
        """Build an expanded entity from one record, or raise BadInput."""
        missing = [f for f in self.fields if record.get(f) in (None, "")]
        if missing:
            raise BadInput(f"the record has no {', '.join(sorted(missing))} for the entity id")
        entity_id = self.id_template.format(**{f: record[f] for f in self.fields})
        fragment: dict[str, Any] = {"id": entity_id, "type": self.entity_type}
        observed = record.get(self.observed_field) if self.observed_field else None
        for name, value in record.items():
            if name in self.fields or name == self.observed_field or value is None:
                continue
            if name in ("id", "type", "@context"):
                continue
            attribute: dict[str, Any]
            if name == "location" and isinstance(value, dict) and "type" in value:
                attribute = {"type": "GeoProperty", "value": value}
            elif isinstance(value, dict | list):
                attribute = {"type": "Property", "value": value}
            else:
                attribute = {"type": "Property", "value": jsonable(value)}
            if observed is not None:
                attribute["observedAt"] = self.observed(record).replace("+00:00", "Z")
            fragment[name] = attribute
        return expand_entity(fragment, self.terms)

    def observed(self, record: dict[str, Any]) -> str:
        """Return the record's observation time in UTC ISO form ('' without one)."""
        if not self.observed_field or record.get(self.observed_field) in (None, ""):
            return ""
        raw = record[self.observed_field]
        try:
            moment = (
                raw
                if isinstance(raw, datetime)
                else datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
            )
        except ValueError:
            raise BadInput(f"{self.observed_field} {raw!r} is not a date-time") from None
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat()

    def apply_in(
        self, conn: Connection, records: list[dict[str, Any]], *, counters: Counters
    ) -> None:
        """Upsert in the caller's transaction (so the checkpoint commits with the data)."""
        entities: list[dict[str, Any]] = []
        stamps: dict[str, str] = {}
        for position, record in enumerate(records, start=1):
            try:
                entity = self.to_entity(record)
                stamp = self.observed(record)
            except CityBrainError as exc:
                counters.rejected += 1
                counters.note(f"record {position}: {exc.message}")
                continue
            if stamp:
                # an observation already applied for this entity is a redelivery
                last = checkpoints.read(conn, CONNECTOR, entity["id"])
                if last is not None and stamp <= last:
                    counters.duplicates += 1
                    continue
                stamps[entity["id"]] = stamp
            entities.append(entity)
        if not entities:
            return
        _created, _updated, refused = ngsild.upsert_many_in(
            conn, tenant="", entities=entities, mode="upsert"
        )
        for entity_id, stamp in stamps.items():
            if entity_id not in refused:
                checkpoints.write(conn, CONNECTOR, entity_id, stamp)
        counters.applied += len(entities) - len(refused)
        counters.rejected += len(refused)
        for entity_id, reason in list(refused.items())[:5]:
            counters.note(f"{entity_id}: {reason}")
