"""Medical-insurance supervision scene plugin: routes and dashboard panels."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from citybrain.plugins.hookspecs import hookimpl


@hookimpl
def citybrain_routes(app: FastAPI) -> None:
    """Add the scene's API routes and its phone and terminal pages."""
    from citybrain.core.fast_lane import lanes_of
    from citybrain.scenes.medical_insurance.api import pages, router, settle_answer

    app.include_router(router)
    app.include_router(pages)
    # the check before payment is served at a thousand a second: past FastAPI's own layers
    lanes_of(app)[("POST", "/api/medins/settlements")] = settle_answer


@hookimpl
def citybrain_warm(app: FastAPI) -> None:
    """Load the institutions, catalogues, rule base and replay store before the first check."""
    from citybrain.scenes.medical_insurance import settlement
    from citybrain.scenes.medical_insurance.api import scene_of

    settlement.warm(scene_of(app))


@hookimpl
def citybrain_dashboard_panels() -> list[dict[str, Any]]:
    """Offer the fund-supervision panel (this node and, at a parent, its children)."""
    return [
        {
            "id": "medical_insurance",
            "title_zh": "医保基金监管",
            "title_en": "Medical-insurance fund supervision",
            "data_url": "/api/medins/panel/dashboard",
        }
    ]
