"""Allocation: deferred acceptance with single tie-breaking, the overflow stage, bad instances."""

from __future__ import annotations

import numpy as np
import pytest

from citybrain.core.errors import Unprocessable
from citybrain.scenes.enrollment.allocation import allocate, allocate_markets, lottery_ranks
from citybrain.scenes.enrollment.models import UNPLACED, Instance, Overflow, Stage


def _instance(
    capacity: list[int],
    preferences: list[list[int]],
    priorities: list[list[int]] | None = None,
    lottery: list[int] | None = None,
    overflow: Overflow | None = None,
) -> Instance:
    return Instance.from_lists(
        school_ids=[f"S{j}" for j in range(len(capacity))],
        capacity=capacity,
        preferences=preferences,
        priorities=priorities or [[0] * len(p) for p in preferences],
        lottery=lottery if lottery is not None else list(range(len(preferences))),
        overflow=overflow,
    )


def test_single_school_zone_is_class_then_lottery() -> None:
    # five children, three seats: class 0 first, then the lowest lottery numbers of class 1
    inst = _instance(
        [3], [[0]] * 5, priorities=[[1], [0], [1], [1], [2]], lottery=[50, 90, 10, 70, 0]
    )
    result = allocate(inst)
    assert result.admitted(0) == [0, 1, 2]
    assert result.assigned.tolist() == [0, 0, 0, UNPLACED, UNPLACED]
    assert result.stage.tolist() == [1, 1, 1, 0, 0]


def test_deferred_acceptance_lets_a_better_child_displace_a_held_one() -> None:
    inst = _instance(
        [1, 1],
        [[0, 1], [1, 0], [1]],
        priorities=[[1, 0], [0, 0], [1]],
        lottery=[1, 2, 0],
    )
    result = allocate(inst)
    # at B: child 1 (class 0) beats child 2 (class 1); child 1 keeps B, child 0 keeps A
    assert result.assigned.tolist() == [0, 1, UNPLACED]
    assert result.choice.tolist() == [0, 0, -1]
    chain = _instance([1, 1], [[0, 1], [0], [1]], priorities=[[1, 0], [0], [1]])
    # child 1 displaces child 0 at A; child 0 then displaces child 2 at B (class 0 there)
    assert allocate(chain).assigned.tolist() == [1, 0, UNPLACED]
    assert allocate(chain).rounds >= 2


def test_lottery_breaks_ties_by_one_number_per_child() -> None:
    # single tie-breaking: the child with the better number wins at both schools
    inst = _instance([1, 1], [[0, 1], [0, 1], [0, 1]], lottery=[30, 10, 20])
    assert allocate(inst).assigned.tolist() == [UNPLACED, 0, 1]


def test_a_school_without_seats_admits_nobody() -> None:
    inst = _instance([0, 2], [[0, 1], [0]])
    assert allocate(inst).assigned.tolist() == [1, UNPLACED]


def test_an_empty_instance() -> None:
    inst = _instance([5], [])
    result = allocate(inst)
    assert result.assigned.shape == (0,) and result.rounds == 0


def _overflow_case(wants: list[bool] | None = None) -> Instance:
    # market 0: zone school S0 (1 seat), public S1 near (1 seat), public S2 far, private S3
    # next door (never overflow); market 1: S4 with seats, which market 0 must not use
    xy = [[0.0, 0.0], [0.1, 0.0], [0.5, 0.0], [0.01, 0.0], [0.02, 0.0]]
    return _instance(
        [1, 1, 5, 5, 5],
        [[0], [0], [0], []],
        priorities=[[0], [1], [1], []],
        lottery=[0, 1, 2, 3],
        overflow=Overflow(
            school_xy=np.asarray(xy),
            student_xy=np.zeros((4, 2)),
            school_takes_overflow=np.asarray([True, True, True, False, True]),
            student_market=np.zeros(4, dtype=np.int32),
            school_market=np.asarray([0, 0, 0, 0, 1], dtype=np.int32),
            student_wants_overflow=np.asarray(wants or [True] * 4),
        ),
    )


def test_overflow_places_children_left_out_at_the_nearest_public_school_with_seats() -> None:
    result = allocate(_overflow_case())
    # child 0 gets its zone school; child 1 (better lottery) the nearest public school with
    # a seat (S1), child 2 and the child who ranked nothing the next one (S2)
    assert result.assigned.tolist() == [0, 1, 2, 2]
    assert result.stage.tolist() == [Stage.choice, Stage.overflow, Stage.overflow, Stage.overflow]
    assert result.choice.tolist() == [0, -1, -1, -1]


def test_overflow_serves_children_in_priority_then_lottery_order() -> None:
    inst = _overflow_case()
    # child 2 now has the better lottery number: it gets the near seat, child 1 the far one
    swapped = Instance(
        school_ids=inst.school_ids,
        capacity=inst.capacity,
        pref_ptr=inst.pref_ptr,
        pref_school=inst.pref_school,
        pref_priority=inst.pref_priority,
        lottery=np.asarray([0, 2, 1, 3], dtype=np.uint64),
        overflow=inst.overflow,
    )
    assert allocate(swapped).assigned.tolist() == [0, 2, 1, 2]


def test_a_child_who_declines_overflow_stays_unplaced() -> None:
    result = allocate(_overflow_case([True, False, True, False]))
    assert result.assigned.tolist() == [0, UNPLACED, 1, UNPLACED]


def test_markets_in_two_processes_give_the_same_result() -> None:
    rng = np.random.default_rng(5)
    instances = []
    for _ in range(6):
        n, m = 300, 6
        prefs = [list(rng.choice(m, size=2, replace=False)) for _ in range(n)]
        instances.append(
            _instance(
                list(rng.integers(10, 60, m)),
                [[int(s) for s in p] for p in prefs],
                priorities=[[int(x) for x in rng.integers(0, 4, 2)] for _ in range(n)],
                lottery=[int(x) for x in rng.permutation(n)],
            )
        )
    one = allocate_markets(instances, workers=1)
    two = allocate_markets(instances, workers=2)
    for a, b in zip(one, two, strict=True):
        assert a.assigned.tolist() == b.assigned.tolist()


@pytest.mark.parametrize(
    ("inst", "reason"),
    [
        (_instance([1], [[0, 0]]), "the same school twice"),
        (_instance([1], [[3]]), "not in the instance"),
        (_instance([-1], [[0]]), "negative capacity"),
        (_instance([1], [[0]], priorities=[[-2]]), "priority rank is out of range"),
        (_instance([1], [[0], [0]], lottery=[1]), "1 lottery numbers for 2 children"),
    ],
)
def test_inconsistent_instances_are_refused(inst: Instance, reason: str) -> None:
    with pytest.raises(Unprocessable, match=reason):
        allocate(inst)


def test_equal_lottery_numbers_fall_back_to_the_order_of_the_children() -> None:
    ranks = lottery_ranks(np.asarray([5, 3, 5, 1, 5], dtype=np.uint64))
    assert ranks.tolist() == [2, 1, 3, 0, 4]
    inst = _instance([1], [[0], [0]], lottery=[7, 7])
    assert allocate(inst).assigned.tolist() == [0, UNPLACED]
