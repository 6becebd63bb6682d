"""Administrative units: province, city, county (real), street, community, grid (synthetic)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Level(StrEnum):
    """Administrative level of a unit."""

    province = "province"
    city = "city"
    county = "county"
    street = "street"  # 街道/乡镇, synthetic
    community = "community"  # 社区/村, synthetic
    grid = "grid"  # 网格, synthetic


class AdminUnit(BaseModel):
    """One administrative unit with its code, names and shape summary."""

    model_config = ConfigDict(frozen=True)

    code: str  # GB/T 2260 (6 digits) for real units; 9/12/15 digits below the county
    name_zh: str
    name_en: str
    level: Level
    parent: str | None
    centroid_lon: float
    centroid_lat: float
    area_km2: float
