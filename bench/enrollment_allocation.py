"""Enrollment allocation: 2.6 million applicants across the province, and 16,000 against `matching`.

The province instance is built from the real county list in citybrain.geo: each county's
entry cohorts (primary 1 at age 6, junior 1 at age 12) follow the synthetic population split
(citybrain.synth.service.plan at scale 1.0, one-year shares of the census age bins), scaled
so the province has 2.6 million applicants; schools are sized and counted as the synth does
(classes of 45 or 50, 1.15 seats per child, 4 or 6 classes per school, 10 % private), placed
at random points of the county; every child lives at a random point, its zone is that of the
nearest public school, a quarter of the zones merge two neighbouring schools (the child ranks
both), one child in ten puts a private school first (公民同招, lottery only), priority classes
are drawn in the shares 60/20/12/8 %, siblings 3 %. Every county is its own market; the run
uses two processes (the machine has two cores). Figures: median seconds of three runs.

The comparison solves one 16,000-child county-sized instance with CityBrain's DA and with
the PyPI package `matching` (HospitalResident, resident-optimal, the lottery applied as
strict school preferences; recursion limit raised), checks the matchings are identical and
prints the ratio. The lottery numbers of 2.6 million pseudonyms (HMAC-SHA256 each) are timed
apart: a draw computes them before it allocates. `matching` runs once (it takes tens of
seconds); CityBrain three times.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report, timed  # noqa: E402
from citybrain.geo import service as geo  # noqa: E402
from citybrain.scenes.enrollment.allocation import allocate, allocate_markets  # noqa: E402
from citybrain.scenes.enrollment.lottery import lottery_numbers, new_seed  # noqa: E402
from citybrain.scenes.enrollment.models import Instance, Overflow, Result  # noqa: E402
from citybrain.synth import figures as fig  # noqa: E402
from citybrain.synth.service import plan  # noqa: E402

TOTAL = int(os.environ.get("CITYBRAIN_BENCH_ENROLLMENT_TOTAL", "2600000"))
ORACLE_N = int(os.environ.get("CITYBRAIN_BENCH_ENROLLMENT_ORACLE", "16000"))
REPEAT = int(os.environ.get("CITYBRAIN_BENCH_REPEAT", "3"))
WORKERS = 2
CLASS_SHARES = [0.60, 0.20, 0.12, 0.08]
# (level, entry age, class size, classes per school)
LEVELS = [
    ("primary", 6, fig.PRIMARY_CLASS_SIZE, 4),
    ("junior", 12, fig.JUNIOR_CLASS_SIZE, 6),
]


def _age_share(age: int) -> float:
    """Share of the population at one year of age (the five-year census bin spread evenly)."""
    return fig.AGE_BINS[age // 5] / 5 / 100


def _market(
    rng: np.random.Generator, code: str, cohort: int, class_size: int, per_school: int
) -> dict[str, Any]:
    """One county and level: schools, zones, children and their rankings."""
    classes = max(1, int(np.ceil(cohort * fig.SCHOOL_CAPACITY_MARGIN / class_size)))
    n_schools = max(1, int(np.ceil(classes / per_school)))
    seats = np.full(n_schools, classes // n_schools)
    seats[: classes % n_schools] += 1
    capacity = (seats * class_size).astype(np.int32)
    private = rng.random(n_schools) < fig.PRIVATE_SCHOOL_SHARE
    private[0] = False
    school_xy = geo.sample_points(code, n_schools, rng)
    kid_xy = geo.sample_points(code, cohort, rng)
    public = np.flatnonzero(~private)
    # zone = nearest public school; a quarter of the zones merge with the next school's zone
    nearest = np.empty(cohort, dtype=np.int64)
    for lo in range(0, cohort, 20_000):
        d = ((kid_xy[lo : lo + 20_000, None, :] - school_xy[None, public, :]) ** 2).sum(-1)
        nearest[lo : lo + 20_000] = public[np.argmin(d, axis=1)]
    partner = np.full(n_schools, -1, dtype=np.int64)
    order = list(public)
    i = 0
    while i < len(order) - 1:
        if rng.random() < 0.25:
            partner[order[i]], partner[order[i + 1]] = order[i + 1], order[i]
            i += 2
        else:
            i += 1
    wants_private = (rng.random(cohort) < 0.10) & private.any()
    # a county without a private school draws a dummy that nobody uses
    private_ids = np.flatnonzero(private) if private.any() else np.zeros(1, dtype=np.int64)
    counts = np.ones(cohort, dtype=np.int64) + (partner[nearest] >= 0) + wants_private
    pick = private_ids[rng.integers(0, len(private_ids), cohort)]
    first_other = rng.random(cohort) < 0.5
    ptr = np.zeros(cohort + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    school = np.empty(int(ptr[-1]), dtype=np.int32)
    prio = np.empty(int(ptr[-1]), dtype=np.int16)
    klass = rng.choice(len(CLASS_SHARES), size=cohort, p=CLASS_SHARES).astype(np.int16)
    sibling = rng.random(cohort) < 0.03
    pos = ptr[:-1].copy()
    # private school first (lottery only: everyone in class 0), then the zone schools
    sel = np.flatnonzero(wants_private)
    school[pos[sel]] = pick[sel]
    prio[pos[sel]] = 1 - sibling[sel]
    pos[sel] += 1
    multi = partner[nearest] >= 0
    a = np.where(multi & first_other, partner[nearest], nearest)
    b = np.where(multi & first_other, nearest, partner[nearest])
    rank = klass * 2 + (1 - sibling)
    school[pos] = a
    prio[pos] = rank
    pos += 1
    sel = np.flatnonzero(multi)
    school[pos[sel]] = b[sel]
    prio[pos[sel]] = rank[sel]
    return {
        "capacity": capacity,
        "ptr": ptr,
        "school": school,
        "prio": prio,
        "school_xy": school_xy,
        "kid_xy": kid_xy,
        "public": ~private,
    }


def province_instances(total: int, seed: int = 7) -> list[Instance]:
    """One instance per county (both entry grades as two markets), 2.6 million children in all."""
    plans = plan(scale=1.0, seed=seed)
    raw = {p.county.code: [p.people * _age_share(age) for _, age, _, _ in LEVELS] for p in plans}
    factor = total / sum(sum(v) for v in raw.values())
    rng = np.random.default_rng(seed)
    instances: list[Instance] = []
    for code in sorted(raw):
        parts = [
            _market(rng, code, max(1, int(round(c * factor))), size, per)
            for c, (_, _, size, per) in zip(raw[code], LEVELS, strict=True)
        ]
        instances.append(_join(parts, rng))
    return instances


def _join(parts: list[dict[str, Any]], rng: np.random.Generator) -> Instance:
    """Put the markets of one county into one instance (school indices offset per market)."""
    offset_s, offset_k = 0, 0
    ptrs, schools, prios, caps, sxy, kxy, pub, smarket, kmarket = ([] for _ in range(9))
    for m, part in enumerate(parts):
        n_kids = part["ptr"].shape[0] - 1
        ptrs.append(part["ptr"][1:] + offset_k)
        schools.append(part["school"] + offset_s)
        prios.append(part["prio"])
        caps.append(part["capacity"])
        sxy.append(part["school_xy"])
        kxy.append(part["kid_xy"])
        pub.append(part["public"])
        smarket.append(np.full(part["capacity"].shape[0], m, dtype=np.int32))
        kmarket.append(np.full(n_kids, m, dtype=np.int32))
        offset_s += part["capacity"].shape[0]
        offset_k += int(part["ptr"][-1])
    n = sum(len(k) for k in kmarket)
    return Instance(
        school_ids=[f"S{i}" for i in range(offset_s)],
        capacity=np.concatenate(caps),
        pref_ptr=np.concatenate([np.zeros(1, dtype=np.int64), *ptrs]),
        pref_school=np.concatenate(schools).astype(np.int32),
        pref_priority=np.concatenate(prios).astype(np.int16),
        lottery=rng.integers(0, 2**63, n, dtype=np.uint64),
        overflow=Overflow(
            school_xy=np.concatenate(sxy),
            student_xy=np.concatenate(kxy),
            school_takes_overflow=np.concatenate(pub),
            student_market=np.concatenate(kmarket),
            school_market=np.concatenate(smarket),
            student_wants_overflow=np.ones(n, dtype=bool),
        ),
    )


def oracle_instance(n: int, seed: int = 11) -> Instance:
    """A county-sized instance of n children without the overflow stage (`matching` has none)."""
    rng = np.random.default_rng(seed)
    county = "370102"
    part = _market(rng, county, n, fig.PRIMARY_CLASS_SIZE, 4)
    return Instance(
        school_ids=[f"S{i}" for i in range(part["capacity"].shape[0])],
        capacity=part["capacity"],
        pref_ptr=part["ptr"],
        pref_school=part["school"],
        pref_priority=part["prio"],
        lottery=rng.integers(0, 2**63, n, dtype=np.uint64),
    )


def solve_with_matching(instance: Instance) -> dict[int, int]:
    """Solve with `matching` (resident-optimal HR, lottery as strict school preferences)."""
    from matching.games import HospitalResident  # type: ignore[import-untyped]

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20 * instance.n_students + 10_000))
    resident_prefs: dict[int, list[int]] = {}
    applicants: dict[int, list[tuple[int, int, int]]] = {}
    for child in range(instance.n_students):
        ranked = [s for s in instance.preferences_of(child) if instance.capacity[s] > 0]
        if not ranked:
            continue
        resident_prefs[child] = ranked
        for s in ranked:
            prio = instance.priority_of(child, s)
            assert prio is not None
            applicants.setdefault(s, []).append((prio, int(instance.lottery[child]), child))
    hospital_prefs = {s: [c for _, _, c in sorted(v)] for s, v in applicants.items()}
    capacities = {s: int(instance.capacity[s]) for s in hospital_prefs}
    game = HospitalResident.create_from_dictionaries(resident_prefs, hospital_prefs, capacities)
    matching = game.solve(optimal="resident")
    return {int(r.name): int(h.name) for h, rs in matching.items() for r in rs}


def as_dict(result: Result) -> dict[int, int]:
    """Child -> school of an allocation's placed children."""
    return {int(i): int(s) for i, s in enumerate(result.assigned) if s >= 0}


def main() -> None:
    """Run both measurements and save the figures."""
    start = time.perf_counter()
    instances = province_instances(TOTAL)
    build = time.perf_counter() - start
    children = sum(i.n_students for i in instances)
    schools = sum(i.n_schools for i in instances)
    results: list[Result] = []

    def province() -> None:
        results[:] = allocate_markets(instances, workers=WORKERS)

    median, samples = timed(province, REPEAT)
    # the machine is shared: CPU seconds of one process say what the work costs when wall
    # seconds are inflated by other load
    cpu0, wall0 = time.process_time(), time.perf_counter()
    alone = [allocate(i) for i in instances]
    single_cpu, single = time.process_time() - cpu0, time.perf_counter() - wall0
    same = all((a.assigned == b.assigned).all() for a, b in zip(alone, results, strict=True))
    placed = sum(int((r.assigned >= 0).sum()) for r in results)
    overflow = sum(int((r.stage == 2).sum()) for r in results)
    first = sum(int((r.choice == 0).sum()) for r in results)

    # the lottery of a draw: one HMAC-SHA256 per child pseudonym
    pseudonyms = [f"{i:016x}" for i in range(children)]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    lottery_numbers(new_seed(), pseudonyms)
    lottery_cpu, lottery_s = time.process_time() - cpu0, time.perf_counter() - wall0

    small = oracle_instance(ORACLE_N)
    ours: list[Result] = []
    ours_median, _ = timed(lambda: ours.append(allocate(small)), REPEAT)
    t0 = time.perf_counter()
    theirs = solve_with_matching(small)
    matching_s = time.perf_counter() - t0
    identical = as_dict(ours[-1]) == theirs
    if not identical:
        print("the matchings differ: CityBrain's DA and `matching` disagree", file=sys.stderr)
    ratio = matching_s / ours_median
    report(
        "enrollment_allocation",
        {
            "children": children,
            "schools": schools,
            "counties": len(instances),
            "instance_build_s": round(build, 2),
            "province_allocation_median_s": round(median, 3),
            "province_allocation_samples_s": [round(s, 3) for s in samples],
            "province_allocation_one_process_s": round(single, 3),
            "province_allocation_one_process_cpu_s": round(single_cpu, 3),
            "two_processes_same_result": same,
            "placed": placed,
            "placed_first_choice": first,
            "placed_by_overflow": overflow,
            "unplaced": children - placed,
            "target_s": 10,
            "lottery_numbers_s": round(lottery_s, 2),
            "lottery_numbers_cpu_s": round(lottery_cpu, 2),
            "oracle_children": small.n_students,
            "oracle_citybrain_median_s": round(ours_median, 4),
            "identical_matchings": identical,
        },
        {
            "matching_s": round(matching_s, 2),
            "matching_version": _matching_version(),
        },
        round(ratio, 1),
    )
    print(f"  province: {children:,} children in {median:.2f} s (target < 10 s)")
    print(f"  16k: CityBrain {ours_median * 1000:.1f} ms, matching {matching_s:.1f} s")
    if not identical or not same:
        sys.exit(1)


def _matching_version() -> str:
    import matching  # type: ignore[import-untyped]

    return str(getattr(matching, "__version__", "unknown"))


if __name__ == "__main__":
    main()
