"""The manifest every plugin ships beside its module, validated when the plugin loads."""

from __future__ import annotations

import json
import re
from enum import StrEnum
from importlib import resources
from types import ModuleType

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from citybrain.core.datalevel import DataLevel
from citybrain.core.errors import Unprocessable

_DATASET = re.compile(r"^[a-z][a-z0-9_]*/[a-z][a-z0-9_]*$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+([.-][0-9A-Za-z.]+)?$")


class PluginKind(StrEnum):
    """What a plugin adds to a node."""

    scene = "scene"
    connector = "connector"


class Manifest(BaseModel):
    """Declared identity and data needs of a plugin (manifest.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="equals the entry-point name")
    name: str = Field(min_length=1)
    version: str
    kind: PluginKind
    owner_department: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    datasets: list[str] = Field(default_factory=list, description="department/table it reads")
    max_data_level: DataLevel = Field(description="highest GB/T 43697 level it may touch")
    description: str = ""

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not _VERSION.match(value):
            raise ValueError(f"version {value!r} is not of the form MAJOR.MINOR.PATCH")
        return value

    @field_validator("datasets")
    @classmethod
    def _dataset_names(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _DATASET.match(item):
                raise ValueError(f"dataset {item!r} is not of the form department/table")
        return value


def load_manifest(module: ModuleType, expected_domain: str) -> Manifest:
    """Read and validate manifest.json beside a plugin module."""
    package = module.__name__ if hasattr(module, "__path__") else module.__name__.rpartition(".")[0]
    try:
        raw = resources.files(package).joinpath("manifest.json").read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise Unprocessable(f"plugin {expected_domain!r} has no manifest.json") from exc
    try:
        manifest = Manifest.model_validate(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise Unprocessable(
            f"plugin {expected_domain!r}: manifest.json is not JSON ({exc})"
        ) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise Unprocessable(
            f"plugin {expected_domain!r}: manifest field {where}: {first['msg']}"
        ) from exc
    if manifest.domain != expected_domain:
        raise Unprocessable(
            f"plugin {expected_domain!r}: manifest domain {manifest.domain!r} "
            "differs from the entry-point name"
        )
    return manifest
