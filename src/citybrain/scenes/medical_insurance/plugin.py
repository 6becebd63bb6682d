"""Medical-insurance supervision scene plugin: routes and dashboard panels."""

from __future__ import annotations
