"""Bring the Parquet files `citybrain synth` writes for a node into governed Delta tables."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Engine, select

from citybrain.hub.tables import service
from citybrain.hub.tables.files import FileFormat
from citybrain.hub.tables.models import NAME, ColumnSpec, ColumnType, TableSpec, table_datasets
from citybrain.synth.medical import CARE_TABLES

log = logging.getLogger(__name__)

# primary keys of the synthetic departmental tables (docs/synth.md)
PRIMARY_KEYS: dict[str, list[str]] = {
    "public_security/residents": ["person_id"],
    "public_security/households": ["household_id"],
    "public_security/addresses": ["address_id"],
    "public_security/residence_permits": ["permit_id"],
    "natural_resources/property_registry": ["property_id"],
    "human_resources/social_insurance": ["person_id"],
    "education/schools": ["school_id"],
    "education/catchment_zones": ["zone_id"],
    "medical_security/insured_persons": ["person_id"],
    "medical_security/designated_institutions": ["institution_id"],
    "medical_security/drug_catalogue": ["code"],
    "medical_security/service_catalogue": ["code"],
    "medical_security/consumable_catalogue": ["code"],
    "medical_security/service_bundles": ["package_code", "component_code"],
    "medical_security/settlements": ["settlement_id"],
    "medical_security/visits": ["settlement_id"],
    "medical_security/admissions": ["settlement_id"],
    "medical_security/settlement_items": ["item_id"],
    "medical_security/prescriptions": ["item_id"],
    "medical_security/dispensing": ["item_id"],
    "civil_affairs/communities": ["community_code"],
    "civil_affairs/elderly_alone": ["person_id"],
    "city_management/grids": ["grid_code"],
    "city_management/grid_workers": ["worker_id"],
    "city_management/iot_devices": ["device_id"],
    "city_management/cameras": ["camera_id"],
}


def _column_type(arrow_type: pa.DataType) -> ColumnType:
    if pa.types.is_integer(arrow_type):
        return ColumnType.int64
    if pa.types.is_floating(arrow_type):
        return ColumnType.float64
    if pa.types.is_boolean(arrow_type):
        return ColumnType.bool
    if pa.types.is_date(arrow_type):
        return ColumnType.date
    if pa.types.is_timestamp(arrow_type):
        return ColumnType.timestamp
    return ColumnType.string


def _flatten(table: pa.Table) -> pa.Table:
    """Turn list columns (school ids of a zone) into comma-joined strings, the tables' form."""
    for i, field in enumerate(table.schema):
        if pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
            joined = pa.array(
                [",".join(v) if v is not None else None for v in table.column(i).to_pylist()],
                pa.string(),
            )
            table = table.set_column(i, field.name, joined)
        elif pa.types.is_integer(field.type) and field.type != pa.int64():
            table = table.set_column(i, field.name, pc.cast(table.column(i), pa.int64()))
    return table


# The year of care: the largest tables by far. A node imports them after it starts serving,
# so that sixteen city nodes starting on two cores answer their health checks in time.
DEFERRED = frozenset(f"medical_security/{name}" for name in CARE_TABLES)


def import_synth_tables(
    *, engine: Engine, data_dir: Path, deferred: bool | None = None
) -> list[str]:
    """Register and load every `<department>/<table>.parquet` not yet a table; return their ids.

    deferred=False leaves out the DEFERRED tables, deferred=True imports only them, None all.
    """
    with engine.connect() as conn:
        known = {f"{r.department}/{r.name}" for r in conn.execute(select(table_datasets))}
    imported: list[str] = []
    for path in sorted(data_dir.glob("*/*.parquet")):
        department, name = path.parent.name, path.stem
        dataset_id = f"{department}/{name}"
        if dataset_id in known or not (_valid(department) and _valid(name)):
            continue
        if deferred is not None and (dataset_id in DEFERRED) != deferred:
            continue
        table = _flatten(pq.read_table(path))
        key = PRIMARY_KEYS.get(dataset_id, [table.schema.names[0]])
        spec = TableSpec(
            department=department,
            name=name,
            description=f"imported from {path.name}",
            primary_key=key,
            columns=[
                ColumnSpec(name=f.name, type=_column_type(f.type), nullable=f.name not in key)
                for f in table.schema
            ],
        )
        service.register_table(engine=engine, data_dir=data_dir, spec=spec)
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        result = service.load_file(
            engine=engine,
            data_dir=data_dir,
            department=department,
            name=name,
            data=buffer.getvalue(),
            fmt=FileFormat.parquet,
            source=path.name,
        )
        log.info(
            "table imported",
            extra={"table": dataset_id, "rows": result.accepted, "refused": result.rejected},
        )
        imported.append(dataset_id)
    return imported


def _valid(part: str) -> bool:
    return re.fullmatch(NAME, part) is not None
