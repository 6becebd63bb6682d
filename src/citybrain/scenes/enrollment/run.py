"""Running the season after the deadline: close, commit the draws, draw, publish.

- close: no more applications (appeals may still be decided).
- commit: per county, the pseudonymous inputs are written (`draw.prepare`) and a secret seed
  is committed (`draw.commit`); the commitments are public from then on
  (`GET /api/enrollment/seasons/{id}`). The seeds are kept in DATA_DIR/enrollment/seeds,
  outside the published folders, until the draw.
- draw: each county's seed is revealed and the draw runs (`draw.publish`: results, school
  lists with masked names, in DATA_DIR/enrollment/draws/<season>/<county>); the placements
  are written back to the applications in one transaction.
- publish: parents see their results and get a notice.

Children without a priority class are not left out: they rank their zone's schools in a
class after the last one, so they take the seats left, and the overflow stage (统筹) offers
the rest a seat at the nearest public school with room.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select, update

from citybrain.core.errors import Conflict
from citybrain.governance.principal import Principal
from citybrain.scenes.enrollment import draw, lottery
from citybrain.scenes.enrollment import season as seasons
from citybrain.scenes.enrollment.models import DrawApplication, DrawChoice, Level
from citybrain.scenes.enrollment.store import (
    enrollment_appeals,
    enrollment_applications,
    enrollment_notices,
)


def draws_dir(data_dir: Path, season_id: str) -> Path:
    """Return the folder of a season's published draws."""
    return data_dir / "enrollment" / "draws" / season_id


def _seed_path(data_dir: Path, season_id: str, county: str) -> Path:
    return data_dir / "enrollment" / "seeds" / season_id / f"{county}.seed"


def close(
    *, engine: Engine, data_dir: Path, principal: Principal, season_id: str
) -> seasons.SeasonRead:
    """Close the season to applications."""
    return seasons.move(
        engine=engine,
        data_dir=data_dir,
        principal=principal,
        season_id=season_id,
        source="open",
        target="closed",
        stamp="closed_at",
    )


def _applications(engine: Engine, season_id: str, county: str) -> list[Any]:
    cols = enrollment_applications.c
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(
                    cols.id,
                    cols.child,
                    cols.child_name,
                    cols.level,
                    cols.choices,
                    cols.priority_class,
                    cols.sibling,
                    cols.lon,
                    cols.lat,
                ).where(cols.season_id == season_id, cols.county_code == county)
            )
        )


def commit(
    *, engine: Engine, data_dir: Path, code: str, principal: Principal, season_id: str
) -> seasons.SeasonRead:
    """Write each county's draw inputs and commit a secret seed; publish the commitments."""
    seasons.require_staff(principal)
    season = seasons.get_season(engine=engine, season_id=season_id)
    if season.status != "closed":
        raise Conflict(f"the season {season_id} is {season.status}; close it before the draw")
    with engine.connect() as conn:
        pending = conn.execute(
            select(enrollment_appeals.c.id).where(
                enrollment_appeals.c.season_id == season_id,
                enrollment_appeals.c.status == "pending",
            )
        ).first()
    if pending is not None:
        raise Conflict(f"appeal {pending.id} is still pending: decide every appeal before the draw")
    draws: dict[str, Any] = {}
    for county in season.counties:
        plan = seasons.plan_of(engine=engine, data_dir=data_dir, code=code, county=county)
        last = len(plan.classes)  # no class: after every class, before nobody
        private = {s.school_id for level in Level for s in plan.private_schools(level)}
        entries = []
        for row in _applications(engine, season_id, county):
            klass = last if row.priority_class is None else int(row.priority_class)
            entries.append(
                DrawApplication(
                    child=row.child,
                    level=Level(row.level),
                    choices=[
                        # 公民同招: a private school draws every applicant by lottery alone
                        DrawChoice(s, 0 if s in private else klass, bool(row.sibling))
                        for s in row.choices
                    ],
                    lon=float(row.lon),
                    lat=float(row.lat),
                )
            )
        folder = draws_dir(data_dir, season_id) / county
        seed_file = _seed_path(data_dir, season_id, county)
        if (folder / draw.COMMITMENT).exists() and seed_file.exists():
            # committed by an earlier run of this step that stopped part-way: keep it
            committed = draw.read_commitment(folder)
            draws[county] = {
                "folder": str(folder.relative_to(data_dir)),
                **committed,
                "children": len(entries),
            }
            continue
        draw.prepare(folder, draw.build_inputs(plan.rules, entries))
        # the seed is on disk before the commitment exists: a crash in between cannot leave
        # a commitment whose seed is lost
        seed = lottery.new_seed()
        seed_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(seed_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(seed + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            made = draw.commit(folder, seed)
        except Exception:
            seed_file.unlink(missing_ok=True)
            raise
        draws[county] = {
            "folder": str(folder.relative_to(data_dir)),
            "seed_sha256": made.seed_sha256,
            "inputs_sha256": made.inputs_sha256,
            "children": len(entries),
        }
    return seasons.move(
        engine=engine,
        data_dir=data_dir,
        principal=principal,
        season_id=season_id,
        source="closed",
        target="committed",
        stamp=None,
        draws=draws,
    )


def run_draw(
    *, engine: Engine, data_dir: Path, principal: Principal, season_id: str
) -> seasons.SeasonRead:
    """Reveal each county's seed, run its draw, and write the placements back."""
    seasons.require_staff(principal)
    season = seasons.get_season(engine=engine, season_id=season_id)
    if season.status != "committed":
        raise Conflict(
            f"the season {season_id} is {season.status}; commit the draws first "
            "(citybrain enrollment season commit)"
        )
    draws = dict(season.draws)
    moment = datetime.now(UTC)
    for county in season.counties:
        folder = data_dir / draws[county]["folder"]
        if not (folder / draw.SUMMARY).exists():
            seed = _seed_path(data_dir, season_id, county).read_text().strip()
            names = {r.child: r.child_name for r in _applications(engine, season_id, county)}
            draw.publish(folder, seed, names)
        placements = draw.read_result(folder)
        with engine.begin() as conn:
            for p in placements:
                conn.execute(
                    update(enrollment_applications)
                    .where(
                        enrollment_applications.c.season_id == season_id,
                        enrollment_applications.c.child == p["child"],
                    )
                    .values(
                        school_id=p["school_id"],
                        stage=p["stage"],
                        status="placed" if p["school_id"] else "unplaced",
                        updated_at=moment,
                    )
                )
        summary = draw.read_commitment(folder)
        draws[county] = {
            **draws[county],
            **summary,
            "placed": sum(1 for p in placements if p["school_id"]),
            "unplaced": sum(1 for p in placements if not p["school_id"]),
        }
    return seasons.move(
        engine=engine,
        data_dir=data_dir,
        principal=principal,
        season_id=season_id,
        source="committed",
        target="drawn",
        stamp="drawn_at",
        draws=draws,
    )


def publish(
    *, engine: Engine, data_dir: Path, principal: Principal, season_id: str
) -> seasons.SeasonRead:
    """Make the results visible to the parents and tell each of them."""
    seasons.require_staff(principal)
    season = seasons.get_season(engine=engine, season_id=season_id)
    if season.status != "drawn":
        raise Conflict(f"the season {season_id} is {season.status}; run the draw first")
    moment = datetime.now(UTC)
    names = {
        school_id: school.name
        for county in season.counties
        for school_id, school in seasons.plan_of(
            engine=engine, data_dir=data_dir, code=season.node_code, county=county
        ).schools.items()
    }
    cols = enrollment_applications.c
    with engine.begin() as conn:
        rows = conn.execute(
            select(cols.id, cols.parent_phone, cols.school_id, cols.stage).where(
                cols.season_id == season_id
            )
        ).all()
        if rows:
            conn.execute(
                insert(enrollment_notices),
                [
                    {
                        "application_id": r.id,
                        "parent_phone": r.parent_phone,
                        "kind": "result",
                        "message": (
                            f"录取结果已公布：{names.get(r.school_id, r.school_id)}"
                            + ("（统筹安排）" if r.stage == "overflow" else "")
                            if r.school_id
                            else "录取结果已公布：暂未安排学位，教育局将联系您统筹安排"
                        ),
                        "created_at": moment,
                    }
                    for r in rows
                ],
            )
    return seasons.move(
        engine=engine,
        data_dir=data_dir,
        principal=principal,
        season_id=season_id,
        source="drawn",
        target="published",
        stamp="published_at",
    )
