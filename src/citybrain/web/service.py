"""The dashboard's aggregate: read the node, its children, indicators and events in one call."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from citybrain.core.config import Settings
from citybrain.decisions.indicators import service as indicators
from citybrain.events import service as events
from citybrain.events.models import event_cases
from citybrain.events.statemachine import OPEN_STATES
from citybrain.federation import service as federation
from citybrain.federation.models import Relation
from citybrain.geo import service as geo
from citybrain.governance.principal import Principal
from citybrain.node import service as node_service
from citybrain.plugins.manager import get_plugins
from citybrain.web.models import ChildState, DashboardSummary, PanelRead

NO_DATA: dict[str, Any] = {"value": None, "score": None, "stars": None, "status": "no_data"}


def _event_counts(engine: Engine, now: datetime) -> tuple[dict[str, int], int]:
    """Count the cases per state, and the open ones past their deadline."""
    open_states = [s.value for s in OPEN_STATES]
    with engine.connect() as conn:
        by_state = {
            str(state): int(n)
            for state, n in conn.execute(
                select(event_cases.c.state, func.count()).group_by(event_cases.c.state)
            )
        }
        overdue = conn.execute(
            select(func.count()).where(
                event_cases.c.state.in_(open_states),
                event_cases.c.deadline.is_not(None),
                event_cases.c.deadline < now,
            )
        ).scalar_one()
    return by_state, int(overdue)


def summary(
    *,
    engine: Engine,
    settings: Settings,
    principal: Principal,
    tree: str = "u4ssc",
    cases: int = 20,
    now: datetime | None = None,
) -> DashboardSummary:
    """Return what the one screen shows: node, children with state and totals, events."""
    moment = now or datetime.now(UTC)
    units = geo.children(settings.code)
    peers = {
        p.code: p
        for p in federation.peer_status(engine=engine, now=moment)
        if p.relation == Relation.child
    }
    compared = indicators.compare(
        engine=engine, tree=tree, units=[settings.code, *(u.code for u in units)]
    )
    totals: dict[str, Any] = next(
        (row["values"] for row in compared.rows if row["kind"] == "tree"), {}
    )
    children = []
    for unit in units:
        peer = peers.get(unit.code)
        children.append(
            ChildState(
                code=unit.code,
                name_zh=unit.name_zh,
                name_en=unit.name_en,
                level=unit.level.value,
                state=peer.state if peer else "absent",
                last_contact_at=peer.last_contact_at if peer else None,
                url=peer.url if peer else None,
                total=totals.get(unit.code, NO_DATA),
            )
        )
    by_state, overdue = _event_counts(engine, moment)
    return DashboardSummary(
        node=node_service.node_summary(engine=engine),
        tree=tree,
        period=compared.period,
        own_total=totals.get(settings.code, NO_DATA),
        children=children,
        events_by_state=by_state,
        events_open=sum(n for s, n in by_state.items() if s in {o.value for o in OPEN_STATES}),
        events_overdue=overdue,
        cases=(
            events.list_cases(engine=engine, principal=principal, limit=cases, now=moment)
            if cases > 0
            else []
        ),
        generated_at=moment,
    )


def scene_panels() -> list[PanelRead]:
    """Collect the dashboard panels of every loaded plugin; a malformed panel is left out."""
    plugins = get_plugins()
    found: list[PanelRead] = []
    for record in plugins.records:
        if not record.loaded:
            continue
        module = plugins.pm.get_plugin(record.domain)
        hook = getattr(module, "citybrain_dashboard_panels", None)
        if hook is None:
            continue
        for raw in hook() or []:
            try:
                panel = PanelRead.model_validate({**raw, "plugin": record.domain})
            except ValueError:
                continue  # one plugin's bad panel must not blank the screen
            # only the node's own paths: the page sends its token to the panel's data_url
            if panel.data_url.startswith("/") and not panel.data_url.startswith("//"):
                found.append(panel)
    return found
