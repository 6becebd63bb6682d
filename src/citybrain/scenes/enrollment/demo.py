"""What the demo calls at start for each city: the Education Bureau's grants and an open season."""

from __future__ import annotations

from pathlib import Path

from citybrain.core.errors import NotFound
from citybrain.geo import service as geo
from citybrain.governance.principal import Principal, Role
from citybrain.scenes.enrollment import grants
from citybrain.scenes.enrollment import season as seasons


def prepare_demo_season(
    *, data_dir: Path, code: str, database_url: str | None = None
) -> seasons.SeasonRead:
    """Grant (as owners and bureau, demo only) and open a city's season; idempotent."""
    from citybrain.app import prepare_node
    from citybrain.core.config import load_settings

    level = geo.get_unit(code).level.value
    settings = load_settings(data_dir=data_dir, code=code, level=level, database_url=database_url)
    engine = prepare_node(settings)
    try:
        try:
            return seasons.current_season(engine=engine, code=code)
        except NotFound:
            pass
        made = grants.request_grants(
            engine=engine, data_dir=data_dir, code=code, counties=seasons.counties_of(code)
        )
        grants.approve_for_demo(engine=engine, data_dir=data_dir, code=code, requests=made)
        staff = Principal(subject="user:demo", org="education", role=Role.steward, issuer=code)
        return seasons.open_season(engine=engine, data_dir=data_dir, code=code, principal=staff)
    finally:
        engine.dispose()
