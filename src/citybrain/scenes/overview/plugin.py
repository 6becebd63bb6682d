"""The data overview scene: each department's tables on this node, with row counts."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from citybrain.core.routing import APIRouter
from citybrain.node import service as node_service
from citybrain.plugins.hookspecs import hookimpl

router = APIRouter(prefix="/scenes/overview", tags=["scenes"])


@router.get("")
def overview(request: Request) -> dict[str, Any]:
    """Summarise this node's tables by department (names and counts only, no records)."""
    departments: dict[str, dict[str, Any]] = {}
    for dataset in node_service.list_datasets(engine=request.app.state.engine):
        entry = departments.setdefault(dataset.department, {"tables": 0, "rows": 0})
        entry["tables"] += 1
        entry["rows"] += dataset.rows
    return {"departments": departments}


@hookimpl
def citybrain_routes(app: FastAPI) -> None:
    """Add the overview route."""
    app.include_router(router)


@hookimpl
def citybrain_dashboard_panels() -> list[dict[str, Any]]:
    """Offer the overview as a dashboard panel."""
    return [
        {
            "id": "overview",
            "title_zh": "数据概览",
            "title_en": "Data overview",
            "data_url": "/scenes/overview",
        }
    ]
