"""The PyPI package `matching` as an oracle: identical matchings on small instances.

`matching`'s HospitalResident game, solved resident-optimal, with each school's preference
list being its applicants ordered by priority rank and then lottery number (the lottery applied
as strict preferences), gives the unique child-optimal stable matching; CityBrain's
array-based deferred acceptance must give exactly the same one.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from matching.games import HospitalResident  # type: ignore[import-untyped]

from citybrain.scenes.enrollment.allocation import allocate
from citybrain.scenes.enrollment.models import Instance


def _random(rng: np.random.Generator, n: int, m: int, classes: int) -> Instance:
    prefs = [
        [int(s) for s in rng.choice(m, size=int(rng.integers(1, min(m, 4) + 1)), replace=False)]
        for _ in range(n)
    ]
    return Instance.from_lists(
        school_ids=[f"S{j}" for j in range(m)],
        capacity=[int(c) for c in rng.integers(0, max(2, 2 * n // m), m)],
        preferences=prefs,
        priorities=[[int(x) for x in rng.integers(0, classes, len(p))] for p in prefs],
        lottery=[int(x) for x in rng.integers(0, 2**63, n)],
    )


def _oracle(inst: Instance) -> dict[str, str]:
    """Child -> school as `matching` solves it (schools without seats are left out)."""
    residents: dict[str, list[str]] = {}
    applicants: dict[str, list[tuple[int, int, str]]] = {}
    for child in range(inst.n_students):
        ranked = [s for s in inst.preferences_of(child) if inst.capacity[s] > 0]
        if ranked:
            residents[f"c{child}"] = [inst.school_ids[s] for s in ranked]
        for s in ranked:
            prio = inst.priority_of(child, s)
            assert prio is not None
            applicants.setdefault(inst.school_ids[s], []).append(
                (prio, int(inst.lottery[child]), f"c{child}")
            )
    hospitals = {s: [c for _, _, c in sorted(v)] for s, v in applicants.items()}
    capacity = {s: int(inst.capacity[inst.school_ids.index(s)]) for s in hospitals}
    if not residents:
        return {}
    game = HospitalResident.create_from_dictionaries(residents, hospitals, capacity)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solved = game.solve(optimal="resident")
    assert game.check_stability()
    return {r.name: h.name for h, rs in solved.items() for r in rs}


def _ours(inst: Instance) -> dict[str, str]:
    result = allocate(inst)
    return {f"c{i}": inst.school_ids[s] for i, s in enumerate(result.assigned.tolist()) if s >= 0}


@pytest.mark.parametrize("seed", range(40))
def test_identical_matchings_on_small_random_instances(seed: int) -> None:
    rng = np.random.default_rng(seed)
    inst = _random(rng, int(rng.integers(1, 60)), int(rng.integers(1, 8)), int(rng.integers(1, 5)))
    assert _ours(inst) == _oracle(inst)


def test_identical_matching_on_a_county_sized_instance() -> None:
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    inst = _random(np.random.default_rng(99), 1500, 12, 4)
    ours = _ours(inst)
    assert len(ours) > 1000  # most children are placed: a real comparison
    assert ours == _oracle(inst)
