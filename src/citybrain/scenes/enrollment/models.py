"""Data classes shared by the enrollment scene: an allocation instance, its result, a draw's inputs.

How to call the allocation (for the service and the draw):

    from citybrain.scenes.enrollment.allocation import allocate
    from citybrain.scenes.enrollment.models import Instance, Result

    instance = Instance.from_lists(
        school_ids=["S1", "S2"], capacity=[45, 45],
        preferences=[[0, 1], [1], ...],        # school indices per child, best first
        priorities=[[0, 0], [2], ...],         # priority rank at each listed school, 0 = best
        lottery=[123, 456, ...],               # one number per child, lower wins
    )
    result: Result = allocate(instance)        # result.assigned[i] = school index or -1

Priority ranks come from the county rules (`rules.priority_rank`): the class order, with
sibling priority folded in, so a lower rank always wins and the lottery breaks ties inside a
rank. Several independent markets (counties, levels) may share one instance: a child only lists
schools of its own market, and the overflow stage only looks inside `student_market`.

`DrawApplication` / `DrawInputs` are the published, pseudonymous inputs of a draw
(`draw.py` turns them into an `Instance`); `Placement` is one published line of its result.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I16 = npt.NDArray[np.int16]
I8 = npt.NDArray[np.int8]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

UNPLACED = -1


class Level(StrEnum):
    """Entry grade of compulsory education."""

    primary = "primary"  # primary school, grade 1
    junior = "junior"  # junior secondary school, grade 1


class Stage(IntEnum):
    """How a child got its seat."""

    none = 0  # not placed
    choice = 1  # deferred acceptance over the child's own ranking
    overflow = 2  # 统筹: the nearest public school with seats left


@dataclass(frozen=True)
class Overflow:
    """What the overflow stage needs: where schools and children are, who takes overflow."""

    school_xy: F64  # (n_schools, 2) lon, lat
    student_xy: F64  # (n_students, 2) lon, lat of the address basis
    school_takes_overflow: BoolArray  # public schools take overflow, private ones do not
    student_market: I32  # market index of each child (county x level)
    school_market: I32  # market index of each school
    student_wants_overflow: BoolArray  # a child placed nowhere is offered a seat if True


@dataclass(frozen=True)
class Instance:
    """An allocation problem in arrays: schools, capacities, rankings (CSR), priorities, lottery."""

    school_ids: list[str]
    capacity: I32  # seats per school
    pref_ptr: IntArray  # child i ranks pref_school[pref_ptr[i]:pref_ptr[i+1]], best first
    pref_school: I32
    pref_priority: I16  # priority rank of the child at that school; lower wins
    lottery: U64  # one number per child; lower wins inside a priority rank
    overflow: Overflow | None = None

    @property
    def n_students(self) -> int:
        """Number of children."""
        return int(self.pref_ptr.shape[0] - 1)

    @property
    def n_schools(self) -> int:
        """Number of schools."""
        return int(self.capacity.shape[0])

    @classmethod
    def from_lists(
        cls,
        *,
        school_ids: list[str],
        capacity: list[int],
        preferences: list[list[int]],
        priorities: list[list[int]],
        lottery: list[int],
        overflow: Overflow | None = None,
    ) -> Instance:
        """Build an instance from plain lists (small cases, tests, the service)."""
        lengths = np.fromiter((len(p) for p in preferences), dtype=np.int64, count=len(preferences))
        ptr = np.zeros(len(preferences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=ptr[1:])
        flat = [s for p in preferences for s in p]
        flat_prio = [r for p in priorities for r in p]
        return cls(
            school_ids=list(school_ids),
            capacity=np.asarray(capacity, dtype=np.int32),
            pref_ptr=ptr,
            pref_school=np.asarray(flat, dtype=np.int32),
            pref_priority=np.asarray(flat_prio, dtype=np.int16),
            lottery=np.asarray(lottery, dtype=np.uint64),
            overflow=overflow,
        )

    def preferences_of(self, child: int) -> list[int]:
        """School indices child ranks, best first."""
        return [int(s) for s in self.pref_school[self.pref_ptr[child] : self.pref_ptr[child + 1]]]

    def priority_of(self, child: int, school: int) -> int | None:
        """Priority rank of child at school, or None when the child did not list it."""
        lo, hi = int(self.pref_ptr[child]), int(self.pref_ptr[child + 1])
        for k in range(lo, hi):
            if int(self.pref_school[k]) == school:
                return int(self.pref_priority[k])
        return None


@dataclass(frozen=True)
class Result:
    """Outcome of an allocation: a school index per child (or -1), how, and at which choice."""

    assigned: I32  # school index, UNPLACED when none
    stage: I8  # Stage value per child
    choice: I16  # position of the assigned school in the child's ranking, -1 otherwise
    rounds: int  # proposal rounds of deferred acceptance

    def admitted(self, school: int) -> list[int]:
        """Children placed at a school."""
        return [int(i) for i in np.flatnonzero(self.assigned == school)]

    def filled(self, n_schools: int) -> I32:
        """Seats taken per school."""
        placed = self.assigned[self.assigned >= 0]
        return np.bincount(placed, minlength=n_schools).astype(np.int32)


@dataclass(frozen=True)
class DrawChoice:
    """One school a child ranks, with the child's priority class there and sibling priority."""

    school_id: str
    priority_class: int  # index into the county's class order (0 = first class)
    sibling: bool = False


@dataclass(frozen=True)
class DrawApplication:
    """A child's application as published for a draw: a pseudonym, never a name or ID number."""

    child: str  # pseudonym of the child
    level: Level
    choices: list[DrawChoice]
    lon: float  # the address basis, for the overflow stage
    lat: float
    overflow: bool = True  # accepts a seat at the nearest school with seats if placed nowhere

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form, as written to applications.jsonl."""
        return {
            "child": self.child,
            "level": self.level.value,
            "choices": [
                {"school_id": c.school_id, "class": c.priority_class, "sibling": c.sibling}
                for c in self.choices
            ],
            "lon": self.lon,
            "lat": self.lat,
            "overflow": self.overflow,
        }


@dataclass(frozen=True)
class DrawSchool:
    """A school as published for a draw."""

    school_id: str
    name: str
    level: Level
    ownership: str  # public or private
    capacity: int
    lon: float
    lat: float


@dataclass(frozen=True)
class DrawInputs:
    """Everything a draw depends on besides the seed; published before the draw."""

    county: str
    year: int
    rules_sha256: str
    sibling_first: bool  # sibling priority lifts a child to the front of its class
    schools: list[DrawSchool]
    applications: list[DrawApplication]
    overflow: bool = True  # the overflow stage (统筹) runs after the children's choices


@dataclass(frozen=True)
class Placement:
    """One child's published result."""

    child: str
    level: Level
    school_id: str | None
    stage: Stage
    choice: int  # 0-based position in the ranking, -1 for overflow or unplaced
    lottery: int
