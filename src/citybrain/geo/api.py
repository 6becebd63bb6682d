"""HTTP routes of the geography domain."""

from __future__ import annotations

from typing import Any

from fastapi import Path, Query

from citybrain.core.routing import APIRouter
from citybrain.geo import service
from citybrain.geo.models import AdminUnit, Level

router = APIRouter(prefix="/geo", tags=["geo"])

_CODE = Path(pattern=r"^\d{6}(\d{3}){0,3}$", description="administrative code")


@router.get("/units")
def list_units(
    level: Level = Query(Level.city), parent: str | None = Query(None, pattern=r"^\d{6,15}$")
) -> list[AdminUnit]:
    """List units of a level, optionally under a parent."""
    return service.list_units(level, parent)


@router.get("/units/{code}")
def get_unit(code: str = _CODE) -> AdminUnit:
    """Return one unit."""
    return service.get_unit(code)


@router.get("/units/{code}/geometry")
def get_geometry(code: str = _CODE) -> dict[str, Any]:
    """Return one unit as a GeoJSON Feature."""
    return service.feature(code)


@router.get("/features")
def features(
    level: Level = Query(Level.city), parent: str | None = Query(None, pattern=r"^\d{6,15}$")
) -> dict[str, Any]:
    """Return the units of a level as a GeoJSON FeatureCollection."""
    return service.feature_collection(level, parent)
