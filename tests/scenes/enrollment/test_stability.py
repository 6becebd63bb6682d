"""Stability of the allocation on random instances (hypothesis).

Properties of the child-optimal stable matching under strict priorities (priority rank, then
one lottery number per child): capacities hold, every child sits at a school it ranked, no
child prefers a school that admitted a child it beats there (no justified envy, inside a class
by the lottery), no seat stays empty at a school a child would rather have (non-wasteful), the
result does not depend on the order of the children, and the overflow stage never leaves a
child out while a public school of its market has seats.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.scenes.enrollment.allocation import _nearest_with_seats, allocate
from citybrain.scenes.enrollment.models import Instance, Overflow, Stage


@st.composite
def instances(draw: st.DrawFn, with_overflow: bool = False) -> Instance:
    """A random market: up to 6 schools, 40 children, short rankings, few classes."""
    m = draw(st.integers(1, 6))
    n = draw(st.integers(0, 40))
    capacity = draw(st.lists(st.integers(0, 8), min_size=m, max_size=m))
    prefs = [
        draw(st.lists(st.integers(0, m - 1), unique=True, max_size=min(m, 4))) for _ in range(n)
    ]
    prios = [draw(st.lists(st.integers(0, 3), min_size=len(p), max_size=len(p))) for p in prefs]
    # lottery numbers may collide: ties fall back to the child's index, still strict
    lottery = draw(st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n))
    overflow = None
    if with_overflow:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        overflow = Overflow(
            school_xy=rng.random((m, 2)),
            student_xy=rng.random((n, 2)),
            school_takes_overflow=rng.random(m) < 0.8,
            student_market=rng.integers(0, 2, n).astype(np.int32),
            school_market=rng.integers(0, 2, m).astype(np.int32),
            student_wants_overflow=rng.random(n) < 0.9,
        )
    return Instance.from_lists(
        school_ids=[f"S{j}" for j in range(m)],
        capacity=capacity,
        preferences=prefs,
        priorities=prios,
        lottery=lottery,
        overflow=overflow,
    )


def _key(inst: Instance, child: int, school: int) -> tuple[int, int, int]:
    """How a school orders its applicants: priority rank, lottery number, then index."""
    prio = inst.priority_of(child, school)
    assert prio is not None
    return (prio, int(inst.lottery[child]), child)


def _check_stable(inst: Instance, assigned: list[int]) -> None:
    filled = np.bincount([a for a in assigned if a >= 0], minlength=inst.n_schools)
    assert (filled <= inst.capacity).all(), "a school takes more children than it has seats"
    for child in range(inst.n_students):
        ranking = inst.preferences_of(child)
        here = assigned[child]
        assert here == -1 or here in ranking, "a child sits at a school it did not rank"
        better = ranking if here == -1 else ranking[: ranking.index(here)]
        for school in better:
            admitted = [c for c in range(inst.n_students) if assigned[c] == school]
            assert len(admitted) == inst.capacity[school], (
                f"school {school} has an empty seat that child {child} wanted"
            )
            mine = _key(inst, child, school)
            for other in admitted:
                assert _key(inst, other, school) < mine, (
                    f"child {child} beats child {other} at school {school} but was refused"
                )


@settings(max_examples=300, deadline=None)
@given(instances())
def test_the_allocation_is_stable_and_non_wasteful(inst: Instance) -> None:
    result = allocate(inst)
    _check_stable(inst, result.assigned.tolist())
    for child in range(inst.n_students):
        if result.assigned[child] >= 0:
            ranking = inst.preferences_of(child)
            assert result.choice[child] == ranking.index(int(result.assigned[child]))


@settings(max_examples=100, deadline=None)
@given(instances(), st.randoms(use_true_random=False))
def test_the_order_of_the_children_does_not_matter(inst: Instance, rnd: object) -> None:
    order = list(range(inst.n_students))
    rnd.shuffle(order)  # type: ignore[attr-defined]
    # equal lottery numbers fall back to the index; make them distinct so order cannot leak in
    distinct = np.argsort(np.argsort(inst.lottery, kind="stable"), kind="stable")
    base = Instance.from_lists(
        school_ids=inst.school_ids,
        capacity=inst.capacity.tolist(),
        preferences=[inst.preferences_of(c) for c in range(inst.n_students)],
        priorities=[
            [inst.priority_of(c, s) or 0 for s in inst.preferences_of(c)]
            for c in range(inst.n_students)
        ],
        lottery=[int(x) for x in distinct],
    )
    shuffled = Instance.from_lists(
        school_ids=inst.school_ids,
        capacity=inst.capacity.tolist(),
        preferences=[base.preferences_of(c) for c in order],
        priorities=[[base.priority_of(c, s) or 0 for s in base.preferences_of(c)] for c in order],
        lottery=[int(base.lottery[c]) for c in order],
    )
    a = allocate(base).assigned
    b = allocate(shuffled).assigned
    assert [int(b[order.index(c)]) for c in range(inst.n_students)] == a.tolist()


@settings(max_examples=200, deadline=None)
@given(instances(with_overflow=True))
def test_overflow_leaves_nobody_out_while_public_seats_remain(inst: Instance) -> None:
    over = inst.overflow
    assert over is not None
    result = allocate(inst)
    assigned = result.assigned.tolist()
    filled = np.bincount([a for a in assigned if a >= 0], minlength=inst.n_schools)
    assert (filled <= inst.capacity).all()
    # the first stage alone is stable over the children's own rankings
    first = [a if s == Stage.choice else -1 for a, s in zip(assigned, result.stage, strict=True)]
    _check_stable(inst, first)
    for child in range(inst.n_students):
        school = assigned[child]
        if result.stage[child] == Stage.overflow:
            assert over.school_takes_overflow[school]
            assert over.school_market[school] == over.student_market[child]
        if school == -1 and over.student_wants_overflow[child]:
            same = over.school_market == over.student_market[child]
            open_seats = same & over.school_takes_overflow & (filled < inst.capacity)
            assert not open_seats.any(), f"child {child} left out beside empty public seats"


def _serial_dictatorship(dist: np.ndarray, order_key: np.ndarray, seats: np.ndarray) -> list[int]:
    """The overflow rule written plainly: in order, each child takes the nearest open seat."""
    left = seats.tolist()
    got = [-1] * dist.shape[0]
    for child in np.argsort(order_key, kind="stable").tolist():
        for school in np.argsort(dist[child], kind="stable").tolist():
            if left[school] > 0:
                left[school] -= 1
                got[child] = school
                break
    return got


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 8),
    st.integers(0, 2**32 - 1),
)
def test_overflow_is_the_serial_dictatorship_by_distance(n: int, m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    dist = rng.random((n, m))
    order_key = rng.permutation(n).astype(np.int64)
    seats = rng.integers(0, 6, m).astype(np.int32)
    got = _nearest_with_seats(dist, order_key, seats)
    assert got.tolist() == _serial_dictatorship(dist, order_key, seats)
