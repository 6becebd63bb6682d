"""The lifecycle of a case: states, named transitions and who may fire them (no storage)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from citybrain.core.errors import Conflict, Forbidden
from citybrain.governance.principal import BUREAU_ORG, Principal, Role


class State(StrEnum):
    """States of a case; captured to resolved are open."""

    captured = "captured"
    verified = "verified"
    registered = "registered"
    dispatched = "dispatched"
    handling = "handling"
    handled = "handled"
    resolved = "resolved"
    closed = "closed"
    rated = "rated"
    evaluated = "evaluated"
    discarded = "discarded"


OPEN_STATES = frozenset(
    {
        State.captured,
        State.verified,
        State.registered,
        State.dispatched,
        State.handling,
        State.handled,
        State.resolved,
    }
)
FINISHED_STATES = frozenset(set(State) - OPEN_STATES)
WITH_DEPARTMENT = frozenset({State.dispatched, State.handling})


class Actor(StrEnum):
    """Who may fire a transition."""

    centre = "centre"  # the operations centre of the node
    department = "department"  # the department the case is dispatched to
    reporter = "reporter"  # the citizen or worker who reported it


@dataclass(frozen=True, slots=True)
class Transition:
    """A named transition: the states it leaves, the state it reaches, who fires it."""

    name: str
    sources: frozenset[State]
    target: State | None  # None: the case stays in its state (urge, extend, escalate)
    actors: frozenset[Actor]
    needs_note: bool = False


def _t(
    name: str,
    sources: set[State] | frozenset[State],
    target: State | None,
    *actors: Actor,
    note: bool = False,
) -> Transition:
    return Transition(name, frozenset(sources), target, frozenset(actors), note)


C, D, R = Actor.centre, Actor.department, Actor.reporter
TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in (
        _t("verify", {State.captured}, State.verified, C),
        _t("discard", {State.captured, State.verified}, State.discarded, C, note=True),
        _t("create_case", {State.verified}, State.registered, C),
        _t("dispatch", {State.registered}, State.dispatched, C),
        _t("handle", {State.dispatched}, State.handling, D),
        _t("feedback", {State.handling}, State.handled, D, note=True),
        _t("accept_result", {State.handled}, State.resolved, C),
        _t("reject_result", {State.handled}, State.handling, C, note=True),
        _t("close", {State.resolved}, State.closed, C),
        _t("rate", {State.closed}, State.rated, R),
        _t("call_back", {State.closed}, State.rated, C),
        _t("evaluate", {State.rated}, State.evaluated, C),
        _t("urge", WITH_DEPARTMENT, None, C),
        _t("return", WITH_DEPARTMENT, State.registered, D, C, note=True),
        _t("reassign", WITH_DEPARTMENT, State.dispatched, C),
        _t("extend", WITH_DEPARTMENT, None, D, C, note=True),
        _t("escalate", OPEN_STATES, None, C),
    )
}
CAPTURE = "capture"
MAX_EXTENSIONS = 2


def allowed(state: State | str) -> list[str]:
    """Return the names of the transitions that may leave a state, sorted."""
    current = State(state)
    return sorted(name for name, t in TRANSITIONS.items() if current in t.sources)


def target_of(name: str, state: State | str) -> State:
    """Return the state a transition reaches from a state, or 409 naming what is allowed."""
    current = State(state)
    transition = TRANSITIONS.get(name)
    if transition is None:
        raise Conflict(
            f"no transition {name!r}; transitions are {', '.join(sorted(TRANSITIONS))}",
            detail={"allowed": allowed(current)},
        )
    if current not in transition.sources:
        names = allowed(current)
        raise Conflict(
            f"cannot {name} a case that is {current.value}; allowed: "
            + (", ".join(names) if names else "none (the case is finished)"),
            detail={"state": current.value, "allowed": names},
        )
    return transition.target or current


def is_centre(principal: Principal) -> bool:
    """Return True for the node's operations centre (bureau operators, admins, systems)."""
    if principal.role == Role.node:
        return True
    return principal.org == BUREAU_ORG and principal.role in {
        Role.operator,
        Role.bureau_admin,
        Role.service,
    }


def actors_of(
    principal: Principal,
    *,
    department: str | None,
    reporter: str | None,
    contact_phone: str | None,
) -> set[Actor]:
    """Return the capacities in which a principal acts on a case."""
    found: set[Actor] = set()
    if is_centre(principal):
        found.add(Actor.centre)
    if (
        department
        and principal.org == department
        and principal.role in {Role.operator, Role.steward, Role.service}
    ):
        found.add(Actor.department)
    if (reporter and principal.subject == reporter) or (
        principal.role == Role.citizen and principal.phone and principal.phone == contact_phone
    ):
        found.add(Actor.reporter)
    return found


def check_actor(name: str, actors: set[Actor]) -> None:
    """Raise 403 unless one of the actors may fire the transition."""
    transition = TRANSITIONS[name]
    if not actors & transition.actors:
        who = " or ".join(sorted(a.value for a in transition.actors))
        raise Forbidden(f"only the {who} may {name} this case")
