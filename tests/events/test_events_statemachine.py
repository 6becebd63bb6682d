"""The case lifecycle: every legal and illegal transition, pure and through the store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from citybrain.core.db import create_engine_for, upgrade
from citybrain.core.errors import BadInput, Conflict, Forbidden, NotFound
from citybrain.events import service
from citybrain.events.models import CaseCreate, TransitionRequest
from citybrain.events.statemachine import (
    MAX_EXTENSIONS,
    TRANSITIONS,
    Actor,
    State,
    actors_of,
    allowed,
    check_actor,
    target_of,
)
from citybrain.governance.principal import Principal, Role

CENTRE = Principal(subject="op1", org="bureau", role=Role.operator, issuer="370000")
REPORTER = Principal(subject="worker7", org="civil_affairs", role=Role.operator, issuer="370000")
NOW = datetime(2025, 3, 3, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("name", sorted(TRANSITIONS))
def test_every_pair_of_state_and_transition(state: State, name: str) -> None:
    transition = TRANSITIONS[name]
    if state in transition.sources:
        assert target_of(name, state) == (transition.target or state)
        assert name in allowed(state)
    else:
        with pytest.raises(Conflict) as caught:
            target_of(name, state)
        assert caught.value.status == 409
        assert caught.value.detail["allowed"] == allowed(state)
        for other in allowed(state):
            assert other in caught.value.message


def test_unknown_transition_and_finished_states() -> None:
    with pytest.raises(Conflict):
        target_of("teleport", State.captured)
    assert allowed(State.evaluated) == [] and allowed(State.discarded) == []
    with pytest.raises(Conflict, match="none"):
        target_of("close", State.evaluated)


def test_who_may_act() -> None:
    dept = Principal(subject="h", org="transport", role=Role.operator, issuer="370000")
    citizen = Principal(
        subject="citizen:13800138000",
        org="citizens",
        role=Role.citizen,
        issuer="370000",
        phone="13800138000",
    )
    assert actors_of(CENTRE, department="transport", reporter="x", contact_phone=None) == {
        Actor.centre
    }
    assert actors_of(dept, department="transport", reporter="x", contact_phone=None) == {
        Actor.department
    }
    assert actors_of(
        citizen, department="transport", reporter="x", contact_phone="13800138000"
    ) == {Actor.reporter}
    for name in ("verify", "dispatch", "close"):
        with pytest.raises(Forbidden):
            check_actor(name, {Actor.department})
    with pytest.raises(Forbidden):
        check_actor("handle", {Actor.centre})
    with pytest.raises(Forbidden):
        check_actor("rate", {Actor.centre, Actor.department})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, Path]:
    data = tmp_path_factory.mktemp("events_sm")
    engine = create_engine_for(f"sqlite:///{data / 'citybrain.db'}")
    upgrade(engine)
    return engine, data


def _new_case(engine: Engine, data: Path) -> str:
    body = CaseCreate(event_type="road_damage", description="路面塌陷了", lon=117.05, lat=36.67)
    case = service.report_case(
        engine=engine, data_dir=data, node_code="370000", principal=REPORTER, body=body, now=NOW
    )
    return case.id


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(sorted(TRANSITIONS)), min_size=1, max_size=14))
def test_random_paths_through_the_store(store: tuple[Engine, Path], names: list[str]) -> None:
    engine, data = store
    case_id = _new_case(engine, data)
    state, department, extensions, escalated = State.captured, "city_management", 0, False
    for name in names:
        transition = TRANSITIONS[name]
        if Actor.centre in transition.actors:
            who = CENTRE
        elif Actor.department in transition.actors:
            who = Principal(subject="h", org=department, role=Role.operator, issuer="370000")
        else:
            who = REPORTER
        new_department = "transport" if department != "transport" else "city_management"
        body = TransitionRequest(note="因为", rating=4, days=1, department=new_department)
        legal = state in transition.sources
        blocked = (name == "extend" and extensions >= MAX_EXTENSIONS) or (
            name == "escalate" and escalated
        )
        if not legal or blocked:
            with pytest.raises(Conflict):
                service.transition(
                    engine=engine,
                    data_dir=data,
                    case_id=case_id,
                    name=name,
                    principal=who,
                    body=body,
                    now=NOW,
                )
            continue
        case = service.transition(
            engine=engine,
            data_dir=data,
            case_id=case_id,
            name=name,
            principal=who,
            body=body,
            now=NOW,
        )
        state = transition.target or state
        if name in {"dispatch", "reassign"}:
            department = new_department
        extensions += name == "extend"
        escalated = escalated or name == "escalate"
        assert case.state == state.value and case.department == department
        assert case.allowed_transitions == allowed(state)
    steps = service.timeline(engine=engine, case_id=case_id)
    assert steps[-1].to_state == state.value
    for before, after in zip(steps, steps[1:], strict=False):
        assert after.from_state == before.to_state


def test_transition_rules_through_the_store(store: tuple[Engine, Path]) -> None:
    engine, data = store
    case_id = _new_case(engine, data)

    def fire(name: str, who: Principal = CENTRE, **kw: object) -> object:
        return service.transition(
            engine=engine,
            data_dir=data,
            case_id=case_id,
            name=name,
            principal=who,
            body=TransitionRequest(**kw),
            now=NOW,
        )

    with pytest.raises(Conflict, match="allowed: discard, escalate, verify"):
        fire("close")
    with pytest.raises(BadInput):
        fire("discard")  # needs a note
    fire("verify")
    fire("create_case")
    handler = Principal(subject="h", org="city_management", role=Role.operator, issuer="370000")
    with pytest.raises(Conflict):
        fire("handle", handler)  # not dispatched yet: the state forbids it first
    with pytest.raises(Forbidden):
        fire("dispatch", handler)
    fire("dispatch")
    other = Principal(subject="o", org="transport", role=Role.operator, issuer="370000")
    with pytest.raises(NotFound):
        fire("handle", other)  # another department does not see the case
    fire("handle", handler)
    with pytest.raises(BadInput):
        fire("reassign", department="city_management")
    with pytest.raises(NotFound):
        service.transition(
            engine=engine, data_dir=data, case_id="EVNOPE", name="verify", principal=CENTRE, now=NOW
        )
