"""Catalog: descriptions of the node's datasets (tables and entity types) and the API models."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import JSON, Boolean, Column, DateTime, Index, String, Table, Text

from citybrain.core.datalevel import DataLevel
from citybrain.core.db import metadata

TABLE_ID = r"^[a-z][a-z0-9_]{0,63}/[a-z][a-z0-9_]{0,63}$"
ENTITY_TYPE_ID = r"^ngsi-ld:[A-Za-z][A-Za-z0-9_]{0,99}$"
DATASET_ID = rf"({TABLE_ID})|({ENTITY_TYPE_ID})"
FIELD_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"

catalog_entries = Table(
    "catalog_entries",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("title_zh", String(200)),
    Column("title_en", String(200)),
    Column("description", Text, nullable=False),
    Column("owner_department", String(64), nullable=False),
    Column("theme", String(32), nullable=False),
    Column("update_frequency", String(16), nullable=False),
    Column("fields", JSON, nullable=False),
    Column("data_level", String(16), nullable=False),
    Column("sharing_type", String(16), nullable=False),
    Column("open_data", Boolean, nullable=False),
    Column("subject_field", String(64)),
    Column("scope_fields", JSON, nullable=False),
    Column("keywords", JSON, nullable=False),
    # builtin: written by ensure_builtin_entries and never touched by a person since
    Column("origin", String(16), nullable=False),
    Column("updated_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("last_updated", DateTime(timezone=True)),
    Index("ix_catalog_entries_owner", "owner_department"),
)


class EntryKind(StrEnum):
    """What a catalog entry describes."""

    table = "table"
    entity_type = "entity_type"


class Theme(StrEnum):
    """Themes of the node's catalog; each maps to an EU data theme in the DCAT export."""

    population = "population"
    education = "education"
    health = "health"
    social_security = "social_security"
    housing = "housing"
    transport = "transport"
    environment = "environment"
    public_safety = "public_safety"
    economy = "economy"
    urban_management = "urban_management"
    other = "other"


class Frequency(StrEnum):
    """How often the owner updates a dataset."""

    realtime = "realtime"
    daily = "daily"
    weekly = "weekly"
    monthly = "monthly"
    quarterly = "quarterly"
    yearly = "yearly"
    irregular = "irregular"


class SharingType(StrEnum):
    """Sharing type of the government data-sharing rules."""

    unconditional = "unconditional"
    conditional = "conditional"
    not_shared = "not_shared"


class Personal(StrEnum):
    """Whether a field holds personal information (PIPL), and sensitive personal information."""

    none = "none"
    personal = "personal"
    sensitive = "sensitive"


class Mask(StrEnum):
    """How the gate masks a field for readers other than its owner."""

    none = "none"
    id_number = "id_number"
    phone = "phone"
    name = "name"
    address = "address"
    pseudonym = "pseudonym"


class FieldSpec(BaseModel):
    """One field of a dataset with its personal-information flag and mask."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=FIELD_NAME)
    type: str | None = Field(None, max_length=32, description="column type; from the table")
    description: str = Field("", max_length=2000)
    personal: Personal = Personal.none
    mask: Mask = Mask.none


class CatalogEntryCreate(BaseModel):
    """What registering (or replacing) a catalog entry declares."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=DATASET_ID, max_length=200, description="DEPT/NAME or ngsi-ld:TYPE")
    title_zh: str | None = Field(None, min_length=1, max_length=200)
    title_en: str | None = Field(None, min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)
    owner_department: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    theme: Theme = Theme.other
    update_frequency: Frequency = Frequency.irregular
    fields: list[FieldSpec] = Field(default_factory=list, max_length=500)
    data_level: DataLevel
    sharing_type: SharingType
    open_data: bool = False
    subject_field: str | None = Field(None, pattern=FIELD_NAME)
    scope_fields: list[str] = Field(default_factory=list, max_length=20)
    keywords: list[str] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _has_title(self) -> CatalogEntryCreate:
        if not self.title_zh and not self.title_en:
            raise ValueError("an entry needs a title in Chinese (title_zh) or English (title_en)")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError("field names must be unique")
        return self

    @property
    def kind(self) -> EntryKind:
        """Return whether the entry describes a table or an entity type."""
        return EntryKind.entity_type if self.id.startswith("ngsi-ld:") else EntryKind.table


class CatalogEntry(BaseModel):
    """A catalog entry as stored, with its times."""

    id: str
    kind: EntryKind
    title_zh: str | None
    title_en: str | None
    description: str
    owner_department: str
    theme: Theme
    update_frequency: Frequency
    fields: list[FieldSpec]
    data_level: DataLevel
    sharing_type: SharingType
    open_data: bool
    subject_field: str | None
    scope_fields: list[str]
    keywords: list[str]
    origin: str  # builtin (never edited by a person) or manual
    updated_by: str
    created_at: datetime
    updated_at: datetime
    last_updated: datetime | None  # time of the data's newest version

    def field(self, name: str) -> FieldSpec | None:
        """Return the field with this name, if the entry declares it."""
        return next((f for f in self.fields if f.name == name), None)

    @property
    def personal_fields(self) -> list[str]:
        """Return the names of personal and sensitive fields."""
        return [f.name for f in self.fields if f.personal is not Personal.none]


class CatalogPage(BaseModel):
    """A page of search results with the total number of matches."""

    entries: list[CatalogEntry]
    total: int
    limit: int
    offset: int
