"""The scene's tables on PostgreSQL: migration 0017, the unique child per season, JSON columns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from citybrain.core.db import create_engine_for, upgrade
from citybrain.scenes.enrollment.store import enrollment_applications, enrollment_seasons

pytestmark = pytest.mark.postgres


def _application(season: str, child: str) -> dict[str, object]:
    now = datetime(2027, 6, 1, 8, tzinfo=UTC)
    return {
        "id": uuid.uuid4().hex,
        "season_id": season,
        "county_code": "370102",
        "level": "primary",
        "child_id_number": child,
        "child_name": "张**",
        "child": "C" + uuid.uuid4().hex[:20],
        "parent_phone": "13800000000",
        "parent_id_number": "370102198801011234",
        "household_id": "H1",
        "basis": "hukou",
        "address_id": None,
        "zone_id": "Z370102P000",
        "choices": ["S370102P000"],
        "lon": 117.1,
        "lat": 36.6,
        "sibling": False,
        "checks": {"hukou_in_zone": True, "property_in_zone": False},
        "priority_class": 1,
        "class_name": "第二类",
        "reason": "户籍在学区",
        "status": "eligible",
        "created_at": now,
        "updated_at": now,
    }


def test_store_on_postgresql(postgres_url: str) -> None:
    engine = create_engine_for(postgres_url)
    upgrade(engine)
    season = f"T{uuid.uuid4().hex[:12]}"
    child = "37010220200901" + uuid.uuid4().hex[:4]
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(enrollment_seasons).values(
                    id=season,
                    node_code=season[:12],
                    year=2027,
                    status="open",
                    counties=["370102"],
                    opens_at=datetime(2027, 6, 1, tzinfo=UTC),
                    deadline=datetime(2027, 6, 20, tzinfo=UTC),
                    grants={"prefill": "g1"},
                    draws={},
                    opened_by="test",
                    opened_at=datetime(2027, 6, 1, tzinfo=UTC),
                )
            )
            conn.execute(insert(enrollment_applications).values(**_application(season, child)))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert(enrollment_applications).values(**_application(season, child)))
        with engine.connect() as conn:
            rows = conn.execute(
                select(enrollment_applications).where(enrollment_applications.c.season_id == season)
            ).all()
        assert len(rows) == 1
        assert rows[0].checks == {"hukou_in_zone": True, "property_in_zone": False}
        assert rows[0].choices == ["S370102P000"] and rows[0].created_at.tzinfo is not None
    finally:
        with engine.begin() as conn:
            conn.execute(
                delete(enrollment_applications).where(enrollment_applications.c.season_id == season)
            )
            conn.execute(delete(enrollment_seasons).where(enrollment_seasons.c.id == season))
        engine.dispose()
