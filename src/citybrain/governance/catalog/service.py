"""Catalog entries: register, update, read, search; built-in entries for the node's tables."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, Text, and_, cast, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from citybrain.core.datalevel import DataLevel
from citybrain.core.errors import BadInput, Conflict, Forbidden, NotFound, Unprocessable
from citybrain.governance.catalog.models import (
    DATASET_ID,
    CatalogEntry,
    CatalogEntryCreate,
    CatalogPage,
    EntryKind,
    FieldSpec,
    Mask,
    Personal,
    SharingType,
    Theme,
    catalog_entries,
)
from citybrain.governance.principal import SYSTEM, Principal, Role
from citybrain.hub.tables.models import table_datasets

GENERAL_LEVELS = frozenset(
    {DataLevel.general_1, DataLevel.general_2, DataLevel.general_3, DataLevel.general_4}
)
BUILTIN = "builtin"
MANUAL = "manual"
ENTITY_TYPE_OWNER = "city_management"
_DATASET_ID = re.compile(DATASET_ID)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _entry(row: Any) -> CatalogEntry:
    return CatalogEntry(
        id=row.id,
        kind=EntryKind(row.kind),
        title_zh=row.title_zh,
        title_en=row.title_en,
        description=row.description,
        owner_department=row.owner_department,
        theme=row.theme,
        update_frequency=row.update_frequency,
        fields=[FieldSpec.model_validate(f) for f in row.fields],
        data_level=DataLevel(row.data_level),
        sharing_type=row.sharing_type,
        open_data=bool(row.open_data),
        subject_field=row.subject_field,
        scope_fields=list(row.scope_fields),
        keywords=list(row.keywords),
        origin=row.origin,
        updated_by=row.updated_by,
        created_at=_aware(row.created_at) or _now(),
        updated_at=_aware(row.updated_at) or _now(),
        last_updated=_aware(row.last_updated),
    )


def may_write(principal: Principal, owner_department: str) -> bool:
    """Return whether the principal may register or change entries of this owner."""
    if principal.role is Role.bureau_admin:
        return True
    return principal.role is Role.steward and principal.org == owner_department


def _table_columns(conn: Connection, dataset_id: str) -> list[dict[str, Any]] | None:
    department, _, name = dataset_id.partition("/")
    row = conn.execute(
        select(table_datasets.c.columns).where(
            table_datasets.c.department == department, table_datasets.c.name == name
        )
    ).first()
    return None if row is None else list(row.columns)


def _check_rules(
    entry: CatalogEntryCreate, columns: list[dict[str, Any]] | None
) -> list[FieldSpec]:
    """Refuse an entry that breaks a catalog rule; return its fields with types filled in."""
    fields = [f.model_copy() for f in entry.fields]
    if columns is not None:
        declared = {c["name"]: str(c["type"]) for c in columns}
        names = [f.name for f in fields]
        missing = [c for c in declared if c not in names]
        extra = [n for n in names if n not in declared]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"columns not described: {', '.join(missing)}")
            if extra:
                parts.append(f"fields that are not columns: {', '.join(extra)}")
            raise Unprocessable(
                f"the fields of {entry.id} do not match the table's columns ({'; '.join(parts)})"
            )
        for f in fields:
            if f.type is None:
                f.type = declared[f.name]
            elif f.type != declared[f.name]:
                raise Unprocessable(
                    f"field {f.name} is declared {f.type} but the column is {declared[f.name]}"
                )
    known = {f.name for f in fields}
    if entry.subject_field and entry.subject_field not in known:
        raise Unprocessable(f"the subject field {entry.subject_field} is not among the fields")
    stray = [s for s in entry.scope_fields if s not in known]
    if stray:
        raise Unprocessable(f"scope field(s) {', '.join(stray)} are not among the fields")
    if entry.open_data:
        if entry.data_level not in GENERAL_LEVELS:
            raise Unprocessable(
                f"open data must be of a general level; {entry.id} is {entry.data_level.value}"
            )
        personal = [f.name for f in fields if f.personal is not Personal.none]
        if personal:
            raise Unprocessable(
                f"open data may not hold personal fields; {entry.id} has {', '.join(personal)}"
            )
        if entry.sharing_type is not SharingType.unconditional:
            raise Unprocessable("open data must be shared unconditionally")
    return fields


def _values(
    entry: CatalogEntryCreate, fields: list[FieldSpec], principal: Principal
) -> dict[str, Any]:
    return {
        "kind": entry.kind.value,
        "title_zh": entry.title_zh,
        "title_en": entry.title_en,
        "description": entry.description,
        "owner_department": entry.owner_department,
        "theme": entry.theme.value,
        "update_frequency": entry.update_frequency.value,
        "fields": [f.model_dump(mode="json") for f in fields],
        "data_level": entry.data_level.value,
        "sharing_type": entry.sharing_type.value,
        "open_data": entry.open_data,
        "subject_field": entry.subject_field,
        "scope_fields": list(entry.scope_fields),
        "keywords": list(entry.keywords),
        "updated_by": principal.label(),
    }


def _get_row(conn: Connection, dataset_id: str) -> Any:
    return conn.execute(select(catalog_entries).where(catalog_entries.c.id == dataset_id)).first()


def register_entry(
    *, engine: Engine, entry: CatalogEntryCreate, principal: Principal, origin: str = MANUAL
) -> CatalogEntry:
    """Register a new catalog entry; only the owner's steward or the bureau may."""
    if not may_write(principal, entry.owner_department):
        raise Forbidden(
            f"only a steward of {entry.owner_department} or the bureau may register {entry.id}"
        )
    stamp = _now()
    with engine.begin() as conn:
        if _get_row(conn, entry.id) is not None:
            raise Conflict(f"{entry.id} has a catalog entry already; update it instead")
        columns = _table_columns(conn, entry.id) if entry.kind is EntryKind.table else None
        fields = _check_rules(entry, columns)
        conn.execute(
            insert(catalog_entries).values(
                id=entry.id,
                origin=origin,
                created_at=stamp,
                updated_at=stamp,
                last_updated=None,
                **_values(entry, fields, principal),
            )
        )
        row = _get_row(conn, entry.id)
    return _entry(row)


def update_entry(
    *, engine: Engine, dataset_id: str, entry: CatalogEntryCreate, principal: Principal
) -> CatalogEntry:
    """Replace an entry's description; the steward must own both the old and the new entry."""
    if entry.id != dataset_id:
        raise Unprocessable(f"the body describes {entry.id}, the path names {dataset_id}")
    with engine.begin() as conn:
        current = _get_row(conn, dataset_id)
        if current is None:
            raise NotFound(f"no catalog entry {dataset_id}")
        if not may_write(principal, current.owner_department) or not may_write(
            principal, entry.owner_department
        ):
            raise Forbidden(
                f"only a steward of {current.owner_department} or the bureau may change "
                f"{dataset_id}"
            )
        columns = _table_columns(conn, dataset_id) if entry.kind is EntryKind.table else None
        fields = _check_rules(entry, columns)
        conn.execute(
            update(catalog_entries)
            .where(catalog_entries.c.id == dataset_id)
            .values(origin=MANUAL, updated_at=_now(), **_values(entry, fields, principal))
        )
        row = _get_row(conn, dataset_id)
    return _entry(row)


def find_entry(*, engine: Engine, dataset_id: str) -> CatalogEntry | None:
    """Return the entry of a dataset, or None when it has none."""
    if not _DATASET_ID.fullmatch(dataset_id):
        return None  # no entry can have such an id; the store never sees it
    with engine.connect() as conn:
        row = _get_row(conn, dataset_id)
    return None if row is None else _entry(row)


def get_entry(*, engine: Engine, dataset_id: str) -> CatalogEntry:
    """Return the entry of a dataset; NotFound when it has none."""
    found = find_entry(engine=engine, dataset_id=dataset_id)
    if found is None:
        raise NotFound(f"no catalog entry {dataset_id}")
    return found


def list_entries(*, engine: Engine) -> list[CatalogEntry]:
    """Return every entry in id order."""
    with engine.connect() as conn:
        rows = list(conn.execute(select(catalog_entries).order_by(catalog_entries.c.id)))
    return [_entry(r) for r in rows]


def search(
    *,
    engine: Engine,
    text: str | None = None,
    owner: str | None = None,
    theme: str | None = None,
    level: str | None = None,
    sharing_type: str | None = None,
    open_data: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> CatalogPage:
    """Search entries by words in id, titles, description and keywords, and by facets."""
    for value in (text, owner, theme, level, sharing_type):
        # PostgreSQL refuses NUL bytes in text; no other control character belongs in a query
        if value is not None and any(ord(ch) < 32 for ch in value):
            raise BadInput("search words and facets may not hold control characters")
    conditions = []
    if text:
        for word in text.split():
            # LIKE wildcards in the words are literal text, not patterns
            pattern = (
                "%"
                + word.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                + "%"
            )
            columns = [
                catalog_entries.c.id,
                catalog_entries.c.title_zh,
                catalog_entries.c.title_en,
                catalog_entries.c.description,
            ]
            conditions.append(
                or_(
                    *[func.lower(func.coalesce(c, "")).like(pattern, escape="\\") for c in columns],
                    func.lower(cast(catalog_entries.c.keywords, Text)).like(pattern, escape="\\"),
                )
            )
    if owner:
        conditions.append(catalog_entries.c.owner_department == owner)
    if theme:
        conditions.append(catalog_entries.c.theme == theme)
    if level:
        conditions.append(catalog_entries.c.data_level == level)
    if sharing_type:
        conditions.append(catalog_entries.c.sharing_type == sharing_type)
    if open_data is not None:
        conditions.append(catalog_entries.c.open_data == open_data)
    where = and_(*conditions) if conditions else None
    query = select(catalog_entries).order_by(catalog_entries.c.id).limit(limit).offset(offset)
    count = select(func.count()).select_from(catalog_entries)
    if where is not None:
        query = query.where(where)
        count = count.where(where)
    with engine.connect() as conn:
        rows = list(conn.execute(query))
        total = int(conn.execute(count).scalar_one())
    return CatalogPage(entries=[_entry(r) for r in rows], total=total, limit=limit, offset=offset)


def mark_updated(*, engine: Engine, dataset_id: str, at: datetime) -> None:
    """Record the time of a dataset's newest version (for timeliness), if it has an entry."""
    with engine.begin() as conn:
        conn.execute(
            update(catalog_entries)
            .where(catalog_entries.c.id == dataset_id)
            .values(last_updated=at)
        )


@cache
def builtin_classification() -> dict[str, Any]:
    """Return the built-in classification file, parsed."""
    raw = (
        resources.files("citybrain.governance.catalog")
        .joinpath("builtin.yaml")
        .read_text(encoding="utf-8")
    )
    parsed: dict[str, Any] = yaml.safe_load(raw)
    return parsed


def default_field(name: str, type_: str | None = None) -> FieldSpec:
    """Classify a column by its name alone: ID numbers, phones and names are personal."""
    if name == "id_number" or name.endswith("_id_number"):
        return FieldSpec(name=name, type=type_, personal=Personal.sensitive, mask=Mask.id_number)
    if name == "phone" or name.endswith("_phone"):
        return FieldSpec(name=name, type=type_, personal=Personal.personal, mask=Mask.phone)
    if name == "name" or name.endswith("_name"):
        return FieldSpec(name=name, type=type_, personal=Personal.personal, mask=Mask.name)
    return FieldSpec(name=name, type=type_)


def builtin_entry(
    dataset_id: str, columns: list[dict[str, Any]], description: str = ""
) -> CatalogEntryCreate:
    """Build the built-in entry of a table from the classification file or the default."""
    spec = builtin_classification()
    known: dict[str, Any] | None = spec["tables"].get(dataset_id)
    department, _, name = dataset_id.partition("/")
    if known is None:
        base = spec["default"]
        return CatalogEntryCreate(
            id=dataset_id,
            title_en=name.replace("_", " ").capitalize(),
            description=description,
            owner_department=department,
            theme=base["theme"],
            update_frequency=base["update_frequency"],
            data_level=base["data_level"],
            sharing_type=base["sharing_type"],
            fields=[default_field(c["name"], str(c["type"])) for c in columns],
            keywords=[department, name],
        )
    flags: dict[str, Any] = known.get("fields") or {}
    fields = []
    for column in columns:
        if column["name"] in flags:
            fields.append(
                FieldSpec(name=column["name"], type=str(column["type"]), **flags[column["name"]])
            )
        else:
            fields.append(default_field(column["name"], str(column["type"])))
    names = {f.name for f in fields}
    subject = known.get("subject_field")
    return CatalogEntryCreate(
        id=dataset_id,
        title_zh=known.get("title_zh"),
        title_en=known.get("title_en"),
        description=known.get("description", description),
        owner_department=known.get("owner", department),
        theme=known.get("theme", Theme.other),
        update_frequency=known.get("update_frequency", "irregular"),
        data_level=known["data_level"],
        sharing_type=known["sharing_type"],
        open_data=bool(known.get("open_data", False)),
        # a table of the same name may lack a column the file expects: keep what exists
        subject_field=subject if subject in names else None,
        scope_fields=[s for s in known.get("scope_fields", []) if s in names],
        keywords=list(known.get("keywords", [])),
        fields=fields,
    )


def builtin_entity_types() -> list[CatalogEntryCreate]:
    """Return the built-in entries of the NGSI-LD entity types of the synthetic devices."""
    out = []
    for type_name, item in builtin_classification()["entity_types"].items():
        out.append(
            CatalogEntryCreate(
                id=f"ngsi-ld:{type_name}",
                title_zh=item.get("title_zh"),
                title_en=item.get("title_en"),
                description=item.get("description", f"NGSI-LD entities of type {type_name}"),
                owner_department=item.get("owner", ENTITY_TYPE_OWNER),
                theme=item.get("theme", Theme.other),
                update_frequency=item.get("update_frequency", "realtime"),
                data_level=DataLevel.general_1,
                sharing_type=SharingType.unconditional,
                open_data=True,
                keywords=["NGSI-LD", type_name],
            )
        )
    return out


def _table_versions(data_dir: Path, dataset_id: str) -> datetime | None:
    """Return the time of a Delta table's newest version, or None when it cannot be read."""
    from citybrain.hub.tables import service as tables_service

    department, _, name = dataset_id.partition("/")
    try:
        history = tables_service._open(data_dir, department, name).history(1)
    except Exception:  # noqa: BLE001  a missing or broken table has no time to report
        return None
    if not history:
        return None
    return datetime.fromtimestamp(int(history[0].get("timestamp", 0)) / 1000, UTC)


def ensure_builtin_entries(*, engine: Engine, data_dir: Path) -> list[str]:
    """Register built-in entries for the node's tables and device types; return the new ids.

    Idempotent: an entry that exists keeps its content when a person has edited it; one still
    built-in follows the classification file. The data's newest version time is refreshed.
    """
    with engine.connect() as conn:
        tables = list(
            conn.execute(
                select(
                    table_datasets.c.department,
                    table_datasets.c.name,
                    table_datasets.c.columns,
                    table_datasets.c.description,
                ).order_by(table_datasets.c.department, table_datasets.c.name)
            )
        )
    wanted: list[tuple[CatalogEntryCreate, datetime | None]] = []
    for t in tables:
        dataset_id = f"{t.department}/{t.name}"
        wanted.append(
            (
                builtin_entry(dataset_id, list(t.columns), t.description),
                _table_versions(data_dir, dataset_id),
            )
        )
    wanted.extend((e, None) for e in builtin_entity_types())
    created: list[str] = []
    for entry, newest in wanted:
        with engine.begin() as conn:
            current = _get_row(conn, entry.id)
            columns = _table_columns(conn, entry.id) if entry.kind is EntryKind.table else None
            try:
                fields = _check_rules(entry, columns)
            except Unprocessable:
                continue  # a classification the table cannot satisfy is left for a person
            stamp = _now()
            if current is None:
                conn.execute(
                    insert(catalog_entries).values(
                        id=entry.id,
                        origin=BUILTIN,
                        created_at=stamp,
                        updated_at=stamp,
                        last_updated=newest,
                        **_values(entry, fields, SYSTEM),
                    )
                )
                created.append(entry.id)
                continue
            values: dict[str, Any] = {}
            if current.origin == BUILTIN:
                fresh = _values(entry, fields, SYSTEM)
                if any(getattr(current, k) != v for k, v in fresh.items()):
                    values.update(fresh, updated_at=stamp)
            if newest is not None and _aware(current.last_updated) != newest:
                values["last_updated"] = newest
            if values:
                conn.execute(
                    update(catalog_entries).where(catalog_entries.c.id == entry.id).values(values)
                )
    return created
