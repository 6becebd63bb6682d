"""Compulsory-education enrollment scene plugin: API routes, the parents' pages, the panel."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse

from citybrain.core.errors import NotFound
from citybrain.core.routing import APIRouter
from citybrain.plugins.hookspecs import hookimpl
from citybrain.scenes.enrollment.api import router as api_router

STATIC = Path(str(resources.files("citybrain.scenes.enrollment").joinpath("static")))
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}

# /m/ paths are public (the pages hold no data; the API behind them needs the parent's token)
pages = APIRouter(include_in_schema=False)


@pages.get("/m/enrollment", response_class=HTMLResponse)
def parent_page() -> HTMLResponse:
    """Serve the parents' phone page: sign in, children, address basis, ranking, status."""
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))


@pages.get("/m/enrollment/{name}")
def parent_asset(name: str) -> FileResponse:
    """Serve the page's script and style sheet (nothing else, nothing from outside)."""
    target = (STATIC / name).resolve()
    if target.parent != STATIC.resolve() or not target.is_file() or target.suffix not in _TYPES:
        raise NotFound(f"no enrollment page asset {name!r}")
    return FileResponse(target, media_type=_TYPES[target.suffix])


@hookimpl
def citybrain_routes(app: FastAPI) -> None:
    """Add the scene's API and its pages."""
    app.include_router(api_router)
    app.include_router(pages)


@hookimpl
def citybrain_dashboard_panels() -> list[dict[str, Any]]:
    """Offer the season's statistics as a dashboard panel."""
    return [
        {
            "id": "enrollment",
            "title_zh": "义务教育招生",
            "title_en": "Compulsory-education enrollment",
            "data_url": "/api/enrollment/stats",
        }
    ]
