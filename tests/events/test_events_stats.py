"""Department statistics on a known small set, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine

from citybrain.core.db import create_engine_for, upgrade
from citybrain.events import service
from citybrain.events.models import CaseCreate, TransitionRequest
from citybrain.governance.principal import Principal, Role
from conftest import fresh_schema

CST = timezone(timedelta(hours=8))
CENTRE = Principal(subject="op", org="bureau", role=Role.operator, issuer="370100")
WORKER = Principal(subject="grid-9", org="civil_affairs", role=Role.operator, issuer="370100")
LIXIA = (117.05, 36.67)


def _at(month: int, day: int, hour: int = 9) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=CST)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, Path]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'citybrain.db'}"
    else:
        # a schema of its own: the session database also holds other tests' cases, which
        # would count in the statistics
        url = fresh_schema(request.getfixturevalue("postgres_url"), "stats")
    engine = create_engine_for(url)
    upgrade(engine)
    yield engine, tmp_path
    engine.dispose()


def _case(engine: Engine, data: Path, kind: str, when: datetime) -> str:
    body = CaseCreate(
        event_type=kind, description=f"stats {kind} {when}", lon=LIXIA[0], lat=LIXIA[1]
    )
    return service.report_case(
        engine=engine, data_dir=data, node_code="370100", principal=WORKER, body=body, now=when
    ).id


def _go(
    engine: Engine, data: Path, case_id: str, steps: list[tuple[str, datetime]], **kw: object
) -> None:
    for name, when in steps:
        department = service.get_case(engine=engine, case_id=case_id).department
        who = CENTRE
        if name in {"handle", "feedback", "return"}:
            who = Principal(subject="h", org=department, role=Role.operator, issuer="370100")
        service.transition(
            engine=engine,
            data_dir=data,
            case_id=case_id,
            name=name,
            principal=who,
            body=TransitionRequest(note="n", **kw),
            now=when,
        )


def test_department_stats_around_national_day(store: tuple[Engine, Path]) -> None:
    engine, data = store
    start = [("verify", _at(9, 29, 8)), ("create_case", _at(9, 29, 8))]
    # A: street lamp, dispatched Monday 09-29 09:00, 5 working days -> 10-13 (10-11 worked)
    a = _case(engine, data, "street_lamp", _at(9, 29, 7))
    _go(
        engine,
        data,
        a,
        [
            *start,
            ("dispatch", _at(9, 29)),
            ("handle", _at(9, 29, 10)),
            ("feedback", _at(10, 9)),
            ("accept_result", _at(10, 10)),
            ("close", _at(10, 10, 10)),
        ],
    )
    _go(engine, data, a, [("call_back", _at(10, 10, 11))], rating=5)
    assert service.get_case(engine=engine, case_id=a).deadline == _at(10, 13)
    # B: illegal parking (1 working day) dispatched 09-30 09:00 -> due 10-09, closed late
    b = _case(engine, data, "illegal_parking", _at(9, 29, 7))
    _go(
        engine,
        data,
        b,
        [
            *start,
            ("dispatch", _at(9, 30)),
            ("handle", _at(9, 30, 10)),
            ("feedback", _at(10, 10)),
            ("accept_result", _at(10, 10, 9)),
            ("close", _at(10, 10, 10)),
        ],
    )
    _go(engine, data, b, [("call_back", _at(10, 10, 11))], rating=2)
    # C: dispatched then returned by city management: back at the centre, not overdue
    c = _case(engine, data, "street_lamp", _at(9, 29, 7))
    _go(engine, data, c, [*start, ("dispatch", _at(10, 9)), ("return", _at(10, 9, 12))])
    # D: illegal parking dispatched 10-09 and never handled: overdue on 11-01
    d = _case(engine, data, "illegal_parking", _at(9, 29, 7))
    _go(engine, data, d, [*start, ("dispatch", _at(10, 9))])

    result = service.department_stats(
        engine=engine, start=_at(9, 1, 0), end=_at(11, 1, 0), now=_at(11, 1, 0)
    )
    rows = {r.department: r.model_dump() for r in result.departments}
    assert rows["city_management"] == {
        "department": "city_management",
        "received": 2,
        "closed": 1,
        "on_time": 1,
        "on_time_rate": 1.0,
        "avg_handling_days": 2.0,
        "satisfaction_mean": 5.0,
        "ratings": 1,
        "returns": 1,
        "overdue": 0,
    }
    assert rows["public_security"] == {
        "department": "public_security",
        "received": 2,
        "closed": 1,
        "on_time": 0,
        "on_time_rate": 0.0,
        "avg_handling_days": 2.0,
        "satisfaction_mean": 2.0,
        "ratings": 1,
        "returns": 0,
        "overdue": 1,
    }
    assert [
        x.id
        for x in service.overdue_cases(engine=engine, now=_at(11, 1, 0))
        if x.id in {a, b, c, d}
    ] == [d, c]
    # a period that holds none of it
    empty = service.department_stats(engine=engine, start=_at(1, 1), end=_at(2, 1))
    assert all(r.received == 0 and r.closed == 0 for r in empty.departments)
    with pytest.raises(Exception, match="ends before"):
        service.department_stats(engine=engine, start=_at(2, 1), end=_at(1, 1))
    # the store survives a fresh engine (a restart) with every state as it was
    again = create_engine_for(str(engine.url.render_as_string(hide_password=False)))
    assert [service.get_case(engine=again, case_id=x).state for x in (a, b, c, d)] == [
        "rated",
        "rated",
        "registered",
        "dispatched",
    ]
    again.dispose()
    assert datetime.now(UTC) > _at(11, 1)
