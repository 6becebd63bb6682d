"""One settings object for a node, read from CITYBRAIN_* variables and an optional TOML file."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class NodeLevel(StrEnum):
    """Administrative level a node serves."""

    province = "province"
    city = "city"
    county = "county"


def _config_file() -> Path | None:
    """Return the TOML file named by CITYBRAIN_CONFIG, if any."""
    raw = os.environ.get("CITYBRAIN_CONFIG")
    return Path(raw) if raw else None


class Settings(BaseSettings):
    """Every setting of a CityBrain node; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="CITYBRAIN_", extra="ignore")

    level: NodeLevel = Field(NodeLevel.province, description="level of this node")
    code: str = Field("370000", description="GB/T 2260 code of the unit this node serves")
    parent_url: str | None = Field(None, description="base URL of the parent node")
    data_dir: Path = Field(Path("data"), description="folder holding the node's data")
    host: str = Field("127.0.0.1", description="address the node listens on")
    port: int = Field(8000, ge=1, le=65535, description="port the node listens on")
    public_url: str | None = Field(
        None, description="URL other nodes use to reach this one (default http://host:port)"
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the operational store (default SQLite in data_dir)"
    )
    workers: int = Field(
        1,
        ge=1,
        le=32,
        description="worker processes serving the node's requests (background work runs in one)",
    )
    log_level: str = Field("INFO", description="logging level")
    log_format: str = Field("json", description="json or text")
    anonymous_role: str | None = Field(
        None, description="role given to requests without a token (off by default)"
    )
    federation_deadline_seconds: float = Field(
        3.0,
        gt=0,
        le=60,
        description="longest a distributed query waits for the context sources (child nodes)",
    )
    alarm_subscriptions: bool = Field(
        False,
        description="at start, subscribe the event centre to device alarms in the hub "
        "(overflowing bins, faulty street lamps, camera alarms)",
    )
    indicator_schedule_seconds: float = Field(
        3600.0,
        ge=0,
        description="seconds between the scheduled computations of the indicator trees, "
        "the first a minute after start (0: none)",
    )
    ngsild_temporal_limit: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="most attribute instances one NGSI-LD temporal answer holds; a longer "
        "history is answered in time ranges (206 with Content-Range)",
    )
    smtp_host: str = Field("127.0.0.1", description="SMTP server that sends e-mail notifications")
    smtp_port: int = Field(25, ge=1, le=65535, description="port of the SMTP server")
    smtp_from: str = Field(
        "citybrain@localhost", description="sender address of e-mail notifications"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: explicit arguments, environment, then the TOML file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def effective_database_url(self) -> str:
        """Return the operational store URL, defaulting to SQLite inside the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'citybrain.db').resolve()}"

    @property
    def effective_public_url(self) -> str:
        """Return the URL at which other nodes reach this node."""
        return self.public_url or f"http://{self.host}:{self.port}"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment, the TOML file and explicit overrides."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
