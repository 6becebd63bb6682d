"""Seat allocation: student-proposing deferred acceptance with single tie-breaking, then overflow.

Stage 1 is deferred acceptance in rounds over arrays: every free child proposes to its next
school, each school that received proposals keeps its best `capacity` among the new and the
held children (one sort per round by school, priority rank, lottery rank) and rejects the rest.
With strict priorities (rank, then one lottery number per child) this gives the unique
child-optimal stable matching, so the result does not depend on the order of proposals.

Stage 2 (统筹) offers children placed nowhere a seat at the nearest public school of their
market with seats left. Children are served in the order of their best priority rank, then
lottery, each taking the nearest open seat (a serial dictatorship), computed in vector steps
between the moments a school fills.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from citybrain.core.errors import Unprocessable
from citybrain.scenes.enrollment.models import (
    F64,
    I32,
    UNPLACED,
    BoolArray,
    Instance,
    IntArray,
    Overflow,
    Result,
    Stage,
)

# lottery ranks and priority ranks pack into one int64 sort key per (child, school) entry
_MAX_PRIORITY = 1 << 14
_NO_CUTOFF = np.iinfo(np.int64).max


def check_instance(instance: Instance) -> None:
    """Refuse an inconsistent instance with the reason (sizes, school indices, duplicates)."""
    n, m = instance.n_students, instance.n_schools
    if instance.lottery.shape[0] != n:
        raise Unprocessable(
            f"{instance.lottery.shape[0]} lottery numbers for {n} children",
            detail={"field": "lottery", "reason": "one lottery number per child"},
        )
    nnz = int(instance.pref_ptr[-1]) if n >= 0 else 0
    if instance.pref_school.shape[0] != nnz or instance.pref_priority.shape[0] != nnz:
        raise Unprocessable(
            "rankings and priorities differ in length",
            detail={"field": "pref_priority", "reason": "one priority per ranked school"},
        )
    if nnz and (instance.pref_school.min() < 0 or instance.pref_school.max() >= m):
        raise Unprocessable(
            "a ranking names a school that is not in the instance",
            detail={"field": "pref_school", "reason": f"school indices are 0..{m - 1}"},
        )
    if (instance.capacity < 0).any():
        raise Unprocessable(
            "a school has a negative capacity",
            detail={"field": "capacity", "reason": "capacities are >= 0"},
        )
    if nnz and (instance.pref_priority.min() < 0 or instance.pref_priority.max() >= _MAX_PRIORITY):
        raise Unprocessable(
            "a priority rank is out of range",
            detail={"field": "pref_priority", "reason": f"ranks are 0..{_MAX_PRIORITY - 1}"},
        )
    if _has_duplicate_choice(instance.pref_ptr, instance.pref_school, m):
        raise Unprocessable(
            "a child ranks the same school twice",
            detail={"field": "pref_school", "reason": "each school at most once per ranking"},
        )


def _has_duplicate_choice(pref_ptr: IntArray, pref_school: I32, m: int) -> bool:
    """Whether some child lists a school twice (rankings are short: compare neighbours)."""
    lengths = np.diff(pref_ptr)
    longest = int(lengths.max()) if lengths.shape[0] else 0
    if longest > 8:
        owner = np.repeat(np.arange(lengths.shape[0], dtype=np.int64), lengths)
        pairs = np.sort(owner * max(m, 1) + pref_school)
        return bool((pairs[1:] == pairs[:-1]).any())
    owner = np.repeat(np.arange(lengths.shape[0], dtype=np.int32), lengths)
    for gap in range(1, longest):
        same = (owner[gap:] == owner[:-gap]) & (pref_school[gap:] == pref_school[:-gap])
        if same.any():
            return True
    return False


def lottery_ranks(lottery: np.ndarray) -> IntArray:
    """Rank of each child's lottery number (0 = best); equal numbers fall back to the index."""
    order = np.argsort(lottery)
    ordered = lottery[order]
    if (ordered[1:] == ordered[:-1]).any():
        order = np.argsort(lottery, kind="stable")  # equal numbers keep index order
    ranks = np.empty(lottery.shape[0], dtype=np.int64)
    ranks[order] = np.arange(lottery.shape[0], dtype=np.int64)
    return ranks


def deferred_acceptance(
    pref_ptr: IntArray, pref_school: I32, entry_key: IntArray, capacity: I32
) -> tuple[I32, IntArray, int]:
    """Child-proposing DA over CSR rankings; entry_key orders children at a school (lower wins).

    Returns the school holding each child (-1 for none), the ranking entry it holds, and the
    number of rounds.
    """
    n = pref_ptr.shape[0] - 1
    m = capacity.shape[0]
    ends = pref_ptr[1:]
    next_k = pref_ptr[:-1].copy()
    held = np.full(n, UNPLACED, dtype=np.int32)
    held_k = np.full(n, -1, dtype=np.int64)
    span = int(entry_key.max()) + 1 if entry_key.shape[0] else 1
    # a full school's worst held key: a proposal beyond it is refused without a sort
    cutoff = np.where(capacity > 0, _NO_CUTOFF, -1).astype(np.int64)
    free = np.flatnonzero(next_k < ends)
    rounds = 0
    touched = np.zeros(m, dtype=bool)
    while free.shape[0]:
        rounds += 1
        k = next_k[free]
        schools = pref_school[k].astype(np.int64)
        bounced = entry_key[k] > cutoff[schools]
        refused = free[bounced]
        next_k[refused] += 1
        free, k, schools = free[~bounced], k[~bounced], schools[~bounced]
        out = refused
        if free.shape[0]:
            out = np.concatenate(
                (
                    refused,
                    _merge(
                        free,
                        k,
                        schools,
                        held,
                        held_k,
                        touched,
                        entry_key,
                        span,
                        capacity,
                        cutoff,
                        next_k,
                    ),
                )
            )
        free = out[next_k[out] < ends[out]]
    return held, held_k, rounds


def _merge(
    free: IntArray,
    k: IntArray,
    schools: IntArray,
    held: I32,
    held_k: IntArray,
    touched: BoolArray,
    entry_key: IntArray,
    span: int,
    capacity: I32,
    cutoff: IntArray,
    next_k: IntArray,
) -> IntArray:
    """One round at the schools that received proposals: keep the best, return the rejected."""
    touched[schools] = True
    # children already held at a school that receives proposals compete again
    holders = np.flatnonzero(held >= 0)
    holders = holders[touched[held[holders]]]
    touched[schools] = False
    cand = np.concatenate((free, holders))
    cand_k = np.concatenate((k, held_k[holders]))
    cand_s = np.concatenate((schools, held[holders].astype(np.int64)))
    keys = entry_key[cand_k]
    # keys are unique (one lottery rank per child), so an unstable sort is exact
    order = np.argsort(cand_s * span + keys)
    cand, cand_k, cand_s, keys = cand[order], cand_k[order], cand_s[order], keys[order]
    # position of each candidate inside its school's group
    starts = np.flatnonzero(np.r_[True, cand_s[1:] != cand_s[:-1]])
    sizes = np.diff(np.r_[starts, cand.shape[0]])
    group = np.repeat(starts, sizes)
    seats = capacity[cand_s]
    keep = (np.arange(cand.shape[0]) - group) < seats
    held[cand[keep]] = cand_s[keep].astype(np.int32)
    held_k[cand[keep]] = cand_k[keep]
    school_of_group = cand_s[starts]
    full = sizes >= capacity[school_of_group]
    last = starts[full] + capacity[school_of_group[full]] - 1
    cutoff[school_of_group[full]] = keys[last]
    out = cand[~keep]
    held[out] = UNPLACED
    held_k[out] = -1
    next_k[out] = cand_k[~keep] + 1
    return out


def allocate(instance: Instance) -> Result:
    """Allocate seats: DA over the children's rankings, then overflow to the nearest seats."""
    check_instance(instance)
    n = instance.n_students
    ranks = lottery_ranks(instance.lottery)
    owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(instance.pref_ptr))
    entry_key = instance.pref_priority.astype(np.int64) * max(n, 1) + ranks[owner]
    held, held_k, rounds = deferred_acceptance(
        instance.pref_ptr, instance.pref_school, entry_key, instance.capacity
    )
    stage = np.where(held >= 0, Stage.choice, Stage.none).astype(np.int8)
    choice = np.where(held >= 0, held_k - instance.pref_ptr[:-1], -1).astype(np.int16)
    if instance.overflow is not None:
        _overflow(instance, instance.overflow, held, stage, ranks)
    return Result(assigned=held, stage=stage, choice=choice, rounds=rounds)


def _best_priority(instance: Instance) -> IntArray:
    """Each child's best priority rank over its ranking (children with none come last)."""
    best = np.full(instance.n_students, _MAX_PRIORITY, dtype=np.int64)
    lengths = np.diff(instance.pref_ptr)
    some = lengths > 0
    if some.any():
        # reduceat over the CSR rows; rows that are empty would read their neighbour's entry
        mins = np.minimum.reduceat(instance.pref_priority, instance.pref_ptr[:-1][some])
        best[some] = mins
    return best


def _distance2(a: F64, b: F64) -> F64:
    """Squared distance in km-like units between rows of a and rows of b (equirectangular)."""
    cos = np.cos(np.radians(np.mean(b[:, 1]) if b.shape[0] else 36.0))
    dx = (a[:, None, 0] - b[None, :, 0]) * cos
    dy = a[:, None, 1] - b[None, :, 1]
    result: F64 = dx * dx + dy * dy
    return result


def _nearest_with_seats(dist: F64, order_key: IntArray, seats: I32) -> I32:
    """Serial dictatorship by distance: each child, in order_key order, takes the nearest seat.

    Done in steps between school closings: every child waiting picks its nearest open school;
    in order, the children before the first one who finds its pick full are final (no school
    closed before them); the schools that just filled close, the children who picked them pick
    again, and the next step starts at that first refused child.
    """
    n, per = dist.shape
    got = np.full(n, UNPLACED, dtype=np.int32)
    left = seats.astype(np.int64).copy()
    shut = left <= 0
    if shut.all():
        return got
    masked = np.where(shut, np.inf, dist)
    order = np.argsort(order_key, kind="stable")
    choice = np.argmin(masked[order], axis=1)
    start = 0
    while start < n:
        pick = choice[start:]
        # position of each waiting child among those picking the same school, in order
        by_school = np.argsort(pick.astype(np.int16 if per < 32_000 else np.int64), kind="stable")
        sorted_pick = pick[by_school]
        first = np.flatnonzero(np.r_[True, sorted_pick[1:] != sorted_pick[:-1]])
        position = np.empty(pick.shape[0], dtype=np.int64)
        position[by_school] = np.arange(pick.shape[0]) - np.repeat(
            first, np.diff(np.r_[first, pick.shape[0]])
        )
        refused = np.flatnonzero(position >= left[pick])
        stop = int(refused[0]) if refused.shape[0] else pick.shape[0]
        final = pick[:stop]
        got[order[start : start + stop]] = final.astype(np.int32)
        left -= np.bincount(final, minlength=per)
        start += stop
        if start >= n:
            break
        closed = left <= 0
        if closed.all():
            break
        masked[:, closed & ~shut] = np.inf  # only the newly closed columns
        shut = closed
        again = start + np.flatnonzero(closed[choice[start:]])
        choice[again] = np.argmin(masked[order[again]], axis=1)
    return got


def _overflow(
    instance: Instance, over: Overflow, held: I32, stage: np.ndarray, ranks: IntArray
) -> None:
    """Place children left out at the nearest overflow school of their market with seats."""
    left = np.flatnonzero((held < 0) & over.student_wants_overflow)
    if not left.shape[0]:
        return
    filled = np.bincount(held[held >= 0], minlength=instance.n_schools)
    remaining = instance.capacity.astype(np.int64) - filled
    open_school = over.school_takes_overflow & (remaining > 0)
    order_key = _best_priority(instance) * max(instance.n_students, 1) + ranks
    markets = over.student_market[left]
    for market in np.unique(markets):
        kids = left[markets == market]
        schools = np.flatnonzero(open_school & (over.school_market == market))
        if not schools.shape[0]:
            continue
        got = _nearest_with_seats(
            _distance2(over.student_xy[kids], over.school_xy[schools]),
            order_key[kids],
            remaining[schools].astype(np.int32),
        )
        placed = got >= 0
        held[kids[placed]] = schools[got[placed]].astype(np.int32)
        stage[kids[placed]] = Stage.overflow


# instances handed to forked workers by inheritance, so they are not pickled to each worker
_SHARED: Sequence[Instance] = ()


def _allocate_shared(index: int) -> Result:
    return allocate(_SHARED[index])


def allocate_markets(instances: Sequence[Instance], workers: int = 1) -> list[Result]:
    """Allocate independent markets (counties), in `workers` forked processes when more than one."""
    global _SHARED
    if workers <= 1 or len(instances) <= 1 or "fork" not in mp.get_all_start_methods():
        return [allocate(i) for i in instances]
    _SHARED = instances
    try:
        # largest markets first so the two workers finish together
        order = sorted(range(len(instances)), key=lambda i: -instances[i].n_students)
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
            done = dict(zip(order, pool.map(_allocate_shared, order), strict=True))
    finally:
        _SHARED = ()
    return [done[i] for i in range(len(instances))]
