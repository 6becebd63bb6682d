"""What the dashboard's summary answers: one call for the whole screen."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from citybrain.events.models import CaseRead
from citybrain.node.models import NodeSummary


class ChildState(BaseModel):
    """A child unit of this node, whether its node talks to us, and its latest tree total."""

    code: str
    name_zh: str
    name_en: str
    level: str
    state: str  # ok, stale, never (registered, no contact yet) or absent (no node)
    last_contact_at: datetime | None
    url: str | None
    total: dict[str, Any]  # {value, score, stars, status} of the tree for this unit


class DashboardSummary(BaseModel):
    """The node, its children with state and indicator totals, event counts, newest cases."""

    node: NodeSummary
    tree: str
    period: str | None
    own_total: dict[str, Any]
    children: list[ChildState]
    events_by_state: dict[str, int]
    events_open: int
    events_overdue: int
    cases: list[CaseRead]
    generated_at: datetime


class PanelRead(BaseModel):
    """A scene plugin's dashboard panel: where its data lives and what it is called."""

    id: str
    plugin: str
    title_zh: str
    title_en: str
    data_url: str
