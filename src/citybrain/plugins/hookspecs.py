"""Hooks a plugin (a scene or a connector) may implement; discovered through entry points."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from fastapi import FastAPI

PROJECT = "citybrain"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class CityBrainSpec:
    """The hook specifications; every hook is documented in docs/plugins.md."""

    @hookspec
    def citybrain_routes(self, app: FastAPI) -> None:
        """Add the plugin's API routes and pages to a node's app."""

    @hookspec
    def citybrain_warm(self, app: FastAPI) -> None:
        """Load what the plugin's busiest routes need before the node takes requests."""

    @hookspec
    def citybrain_dashboard_panels(self) -> list[dict[str, Any]]:
        """Return panels (id, title_zh, title_en, data_url) the dashboard shows for this plugin."""
        raise NotImplementedError
