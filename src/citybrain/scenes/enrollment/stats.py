"""Statistics of a season per county and for the node, and their roll-up to the province.

Only counts leave a node. A city answers `GET /api/enrollment/stats/export` to its parent's
node token (the same peer tokens the indicator roll-up uses); the province asks every
trusted child in parallel within a deadline, keeps each child's last answer in
`enrollment_child_stats` (a city that is down keeps its last figures, marked with the time
they were fetched) and sums them.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, delete, insert, select

from citybrain.core.config import Settings
from citybrain.core.errors import Forbidden, NotFound
from citybrain.federation import trust
from citybrain.federation.children import ask_children
from citybrain.federation.models import Relation
from citybrain.geo import service as geo
from citybrain.governance.audit import service as audit
from citybrain.governance.principal import Principal, Role
from citybrain.scenes.enrollment import season as seasons
from citybrain.scenes.enrollment.store import (
    enrollment_appeals,
    enrollment_applications,
    enrollment_child_stats,
)

DEADLINE = 5.0
COUNTS = ("applications", "eligible", "not_eligible", "placed", "unplaced", "seats", "demand")


def require_reader(principal: Principal) -> None:
    """Statistics are for government principals and peer nodes (no personal data in them)."""
    if not principal.is_government and principal.role not in (Role.node, Role.auditor):
        raise Forbidden("enrollment statistics are for government staff")


def _name(code: str) -> str:
    try:
        return geo.get_unit(code).name_zh
    except Exception:  # a code outside the real list (tests) keeps its number as its name
        return code


def _empty(code: str) -> dict[str, Any]:
    return {
        "code": code,
        "name": _name(code),
        **{k: 0 for k in COUNTS},
        "levels": {},
        "classes": {},
        "criteria": {},
        "appeals": {"pending": 0, "upheld": 0, "dismissed": 0},
        "schools": [],
    }


def county_stats(
    *, engine: Engine, data_dir: Path, code: str, season: seasons.SeasonRead
) -> list[dict[str, Any]]:
    """Count one season's applications per county: classes, pass rates, seats, appeals."""
    out = {county: _empty(county) for county in season.counties}
    demand: dict[str, Counter[str]] = defaultdict(Counter)
    listed: dict[str, Counter[str]] = defaultdict(Counter)
    placed: dict[str, Counter[str]] = defaultdict(Counter)
    cols = enrollment_applications.c
    query = select(
        cols.county_code,
        cols.level,
        cols.status,
        cols.class_name,
        cols.checks,
        cols.choices,
        cols.school_id,
    ).where(cols.season_id == season.id)
    with engine.connect() as conn:
        for row in conn.execute(query):
            entry = out.setdefault(row.county_code, _empty(row.county_code))
            entry["applications"] += 1
            entry["levels"][row.level] = entry["levels"].get(row.level, 0) + 1
            if row.class_name:
                entry["eligible"] += 1
                entry["classes"][row.class_name] = entry["classes"].get(row.class_name, 0) + 1
            else:
                entry["not_eligible"] += 1
            for criterion, ok in dict(row.checks).items():
                tally = entry["criteria"].setdefault(criterion, {"asked": 0, "yes": 0})
                tally["asked"] += 1
                tally["yes"] += int(bool(ok))
            choices = list(row.choices)
            if choices:
                demand[row.county_code][choices[0]] += 1
            for school in choices:
                listed[row.county_code][school] += 1
            if row.status == "placed" and row.school_id:
                entry["placed"] += 1
                placed[row.county_code][row.school_id] += 1
            elif row.status == "unplaced":
                entry["unplaced"] += 1
        appeals = conn.execute(
            select(enrollment_appeals.c.county_code, enrollment_appeals.c.status).where(
                enrollment_appeals.c.season_id == season.id
            )
        ).all()
    for county, status in appeals:
        entry = out.setdefault(county, _empty(county))
        entry["appeals"][status] = entry["appeals"].get(status, 0) + 1
    for county, entry in out.items():
        for tally in entry["criteria"].values():
            tally["rate"] = round(tally["yes"] / tally["asked"], 4) if tally["asked"] else None
        try:
            plan = seasons.plan_of(engine=engine, data_dir=data_dir, code=code, county=county)
        except NotFound:
            continue
        for school in plan.schools.values():
            first = demand[county][school.school_id]
            entry["schools"].append(
                {
                    "school_id": school.school_id,
                    "name": school.name,
                    "level": school.level,
                    "ownership": school.ownership,
                    "capacity": school.capacity,
                    "first_choice": first,
                    "applicants": listed[county][school.school_id],
                    "placed": placed[county][school.school_id],
                }
            )
            entry["seats"] += school.capacity
            entry["demand"] += first
    return [out[c] for c in sorted(out)]


def _sum(code: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    total = _empty(code)
    del total["schools"]
    for part in parts:
        for key in COUNTS:
            total[key] += int(part.get(key, 0))
        for group in ("levels", "classes", "appeals"):
            for name, n in dict(part.get(group, {})).items():
                total[group][name] = total[group].get(name, 0) + int(n)
        for criterion, tally in dict(part.get("criteria", {})).items():
            into = total["criteria"].setdefault(criterion, {"asked": 0, "yes": 0})
            into["asked"] += int(tally.get("asked", 0))
            into["yes"] += int(tally.get("yes", 0))
    for tally in total["criteria"].values():
        tally["rate"] = round(tally["yes"] / tally["asked"], 4) if tally["asked"] else None
    return total


CARDS = (
    ("applications", "报名", "Applications"),
    ("eligible", "有类别", "With a class"),
    ("not_eligible", "未满足条件", "No class"),
    ("seats", "学位", "Seats"),
    ("placed", "已录取", "Placed"),
    ("unplaced", "未安排", "Unplaced"),
)
UNIT_COLUMNS = (
    ("name", "单位", "Unit"),
    ("applications", "报名", "Applications"),
    ("eligible", "有类别", "With a class"),
    ("not_eligible", "未满足条件", "No class"),
    ("seats", "学位", "Seats"),
    ("demand", "第一志愿", "First choices"),
    ("placed", "已录取", "Placed"),
    ("unplaced", "未安排", "Unplaced"),
    ("appeals_pending", "待审申诉", "Appeals pending"),
)


def _panel(figures: dict[str, Any]) -> dict[str, Any]:
    """Add the dashboard's panel form (cards, table, bars) to a node's statistics."""
    total = figures["total"]
    figures["cards"] = [
        {"label_zh": zh, "label_en": en, "value": total[key]} for key, zh, en in CARDS
    ] + [
        {
            "label_zh": "待审申诉",
            "label_en": "Appeals pending",
            "value": total["appeals"].get("pending", 0),
        }
    ]
    figures["table"] = {
        "columns": [{"key": k, "label_zh": zh, "label_en": en} for k, zh, en in UNIT_COLUMNS],
        "rows": [
            {
                **{k: unit.get(k) for k, _zh, _en in UNIT_COLUMNS},
                "appeals_pending": unit["appeals"].get("pending", 0),
            }
            for unit in figures["units"]
        ],
    }
    figures["bars"] = {
        "label_zh": "核验通过率（%）",
        "label_en": "Verification pass rate (%)",
        "items": [
            {"name": name, "value": round(100 * (t["rate"] or 0), 1)}
            for name, t in sorted(total["criteria"].items())
        ],
    }
    return figures


def node_stats(*, engine: Engine, data_dir: Path, code: str) -> dict[str, Any]:
    """Return this node's statistics: the province's roll-up, or a city's own season."""
    if geo.get_unit(code).level.value == "province":
        return _panel(province_stats(engine=engine, code=code))
    try:
        season = seasons.current_season(engine=engine, code=code)
    except NotFound:
        return _panel({"code": code, "season": None, "total": _sum(code, []), "units": []})
    counties = county_stats(engine=engine, data_dir=data_dir, code=code, season=season)
    return _panel(
        {
            "code": code,
            "season": {"id": season.id, "year": season.year, "status": season.status},
            "total": _sum(code, counties),
            "units": counties,
        }
    )


def province_stats(*, engine: Engine, code: str) -> dict[str, Any]:
    """Sum the children's last statistics kept at the province."""
    with engine.connect() as conn:
        rows = conn.execute(select(enrollment_child_stats)).all()
    units: list[dict[str, Any]] = []
    for row in sorted(rows, key=lambda r: (r.child_code, -r.year)):
        if units and units[-1]["code"] == row.child_code:
            continue  # the newest year of each child
        total = dict(dict(row.stats).get("total") or _empty(row.child_code))
        total["season"] = dict(row.stats).get("season")
        fetched = row.fetched_at if row.fetched_at.tzinfo else row.fetched_at.replace(tzinfo=UTC)
        total["fetched_at"] = fetched.isoformat()
        units.append(total)
    return {"code": code, "season": None, "total": _sum(code, units), "units": units}


def _stats_of(peer: dict[str, Any], body: Any) -> Any:
    if not isinstance(body, dict) or body.get("code") != str(peer["code"]):
        raise RuntimeError("the answer is not this child's statistics")
    return body


def rollup(
    *,
    engine: Engine,
    settings: Settings,
    principal: Principal | None = None,
    deadline: float = DEADLINE,
    transport: httpx.AsyncBaseTransport | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Ask every trusted child for its statistics, keep the answers, return who answered."""
    peers = trust.list_peers(engine=engine, relation=Relation.child)
    answers, missing = asyncio.run(
        ask_children(
            peers=peers,
            settings=settings,
            path="/api/enrollment/stats/export",
            check=_stats_of,
            deadline=deadline,
            transport=transport,
        )
    )
    moment = now or datetime.now(UTC)
    with engine.begin() as conn:
        for child, body in answers.items():
            year = int((body.get("season") or {}).get("year") or 0)
            conn.execute(
                delete(enrollment_child_stats).where(
                    enrollment_child_stats.c.child_code == child,
                    enrollment_child_stats.c.year == year,
                )
            )
            conn.execute(
                insert(enrollment_child_stats).values(
                    child_code=child, year=year, stats=body, fetched_at=moment
                )
            )
    audit.append(
        data_dir=settings.data_dir,
        principal=principal,
        action="enrollment.stats.rollup",
        resource="enrollment/stats",
        result="ok" if not missing else "partial",
        detail={"answered": sorted(answers), "missing": missing},
    )
    return {"answered": sorted(answers), "missing": dict(sorted(missing.items()))}
