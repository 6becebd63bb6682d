"""A county's enrollment plan as the service uses it: the county's rules, indexed.

The rules are `rules.default_rules_for` (the province's default policy, the county's own
file, and the schools and catchment zones of the Education Bureau's tables, which the scene
reads through the gate as their owner).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pyarrow as pa
from sqlalchemy import Engine

from citybrain.core.errors import NotFound
from citybrain.scenes.enrollment import rules as county_rules
from citybrain.scenes.enrollment import sources
from citybrain.scenes.enrollment.household import education
from citybrain.scenes.enrollment.models import Level
from citybrain.scenes.enrollment.rules import CountyRules, School, Zone

__all__ = ["CountyPlan", "School", "Zone", "county_plan", "entry_level"]


@dataclass(frozen=True)
class CountyPlan:
    """One county's rules with the look-ups a submission needs."""

    rules: CountyRules
    zones: dict[str, Zone] = field(default_factory=dict)
    schools: dict[str, School] = field(default_factory=dict)
    community_zone: dict[tuple[str, Level], str] = field(default_factory=dict)

    @classmethod
    def of(cls, rules: CountyRules) -> CountyPlan:
        """Index a county's rules."""
        zones = {z.zone_id: z for z in rules.zones}
        community_zone = {
            (c, Level(z.level)): z.zone_id for z in rules.zones for c in z.community_codes
        }
        return cls(
            rules=rules,
            zones=zones,
            schools={s.school_id: s for s in rules.schools},
            community_zone=community_zone,
        )

    @property
    def county(self) -> str:
        """The county's code."""
        return self.rules.county

    @property
    def classes(self) -> list[tuple[str, list[str]]]:
        """The priority classes in order: (name, criteria)."""
        return [(c.name, list(c.requires)) for c in self.rules.priority_classes]

    @property
    def criteria(self) -> list[str]:
        """Every criterion some class needs."""
        return sorted({c for _, needed in self.classes for c in needed})

    @property
    def insurance_months(self) -> int:
        """Months of social insurance the migrant class requires."""
        return self.rules.social_insurance_min_months

    def zone_of_community(self, community: str | None, level: Level) -> Zone | None:
        """Return the zone of a level a community lies in."""
        zone_id = self.community_zone.get((community or "", level))
        return self.zones.get(zone_id) if zone_id else None

    def private_schools(self, level: Level) -> list[School]:
        """Private schools of the level (公民同招: they enrol at the same time, by lottery)."""
        return list(self.rules.private_schools_of(level))

    def entry_level(self, birth: date, year: int) -> Level | None:
        """Return the grade a child born on `birth` enters in September of `year`."""
        return entry_level(birth, year, {Level(g.level): g.entry_age for g in self.rules.grades})


def entry_level(birth: date, year: int, ages: dict[Level, int]) -> Level | None:
    """Return the entry grade for a birth date: aged `age` by 31 August of `year`."""
    for level, age in ages.items():
        if date(year - age - 1, 9, 1) <= birth <= date(year - age, 8, 31):
            return level
    return None


def _table(engine: Engine, data_dir: Path, code: str, dataset: str, county: str) -> pa.Table:
    rows = sources.gated_rows(
        engine=engine,
        data_dir=data_dir,
        principal=education(code),
        dataset=dataset,
        where="county_code = ?",
        params=[county],
        purpose=f"enrollment: the rules of county {county}",
    )
    for row in rows:
        # the hub keeps list columns as comma-separated text; the rules take lists
        for column in ("school_ids", "community_codes"):
            value = row.get(column)
            if isinstance(value, str):
                row[column] = [v for v in value.split(",") if v]
    return pa.Table.from_pylist(rows)


def county_plan(*, engine: Engine, data_dir: Path, code: str, county: str) -> CountyPlan:
    """Build a county's plan from its rules and the education tables of this node."""
    schools = _table(engine, data_dir, code, "education/schools", county)
    zones = _table(engine, data_dir, code, "education/catchment_zones", county)
    if zones.num_rows == 0:
        raise NotFound(f"county {county} has no catchment zones on this node")
    return CountyPlan.of(county_rules.default_rules_for(county, schools, zones))
