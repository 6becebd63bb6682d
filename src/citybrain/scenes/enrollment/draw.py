"""Running and publishing a draw, and verifying a published one from its folder alone.

A draw goes through three steps, each leaving files in the draw's folder:

1. prepare: the pseudonymous inputs (inputs.json: county, year, rules hash, schools and
   capacities; applications.jsonl: one child a line with its ranked schools, class there and
   sibling flag, the address point for overflow). Names never go into these files.
2. commit: a secret seed is drawn and commitment.json records sha256(seed) and the hash of
   the inputs; the county publishes the commitment before the draw. The seed is returned to
   the caller, who keeps it secret (the CLI writes it next to the folder, never inside).
3. publish: the seed is checked against the commitment, the draw runs, and seed.txt,
   result.jsonl (every child's school), schools/<id>.json (each school's admitted children
   with masked names) and summary.json are written; summary.json last, as the mark of a
   complete publication.

`verify` re-runs the draw from the folder and names what does not hold: a seed that does not
match its commitment, inputs changed after the commitment, or a result that differs from the
re-run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from citybrain.core.errors import Conflict, NotFound, Unprocessable
from citybrain.governance.masking import MaskKind, mask_text
from citybrain.scenes.enrollment import lottery
from citybrain.scenes.enrollment.allocation import allocate
from citybrain.scenes.enrollment.models import (
    U64,
    DrawApplication,
    DrawChoice,
    DrawInputs,
    DrawSchool,
    Instance,
    Level,
    Overflow,
    Placement,
    Stage,
)
from citybrain.scenes.enrollment.rules import CountyRules, Ownership

INPUTS = "inputs.json"
APPLICATIONS = "applications.jsonl"
COMMITMENT = "commitment.json"
SEED = "seed.txt"
RESULT = "result.jsonl"
SCHOOLS = "schools"
SUMMARY = "summary.json"
FORMAT = "citybrain-enrollment-draw/1"


@dataclass(frozen=True)
class Commitment:
    """What is published before the draw, and the seed kept secret until after it."""

    seed: str
    seed_sha256: str
    inputs_sha256: str


@dataclass(frozen=True)
class DrawSummary:
    """Counts of a published draw."""

    county: str
    year: int
    children: int
    placed: int
    by_choice: int
    by_overflow: int
    unplaced: int
    seed_sha256: str
    inputs_sha256: str

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form (summary.json)."""
        return dict(self.__dict__)


@dataclass
class VerifyReport:
    """Outcome of re-running a published draw."""

    folder: Path
    problems: list[str] = field(default_factory=list)
    children: int = 0
    schools: int = 0
    seed_sha256: str = ""

    @property
    def ok(self) -> bool:
        """True when every check held."""
        return not self.problems


# --- inputs --------------------------------------------------------------------------------------


def draw_schools(rules: CountyRules) -> list[DrawSchool]:
    """The schools of a county's rules as a draw publishes them."""
    return [
        DrawSchool(
            school_id=s.school_id,
            name=s.name,
            level=s.level,
            ownership=s.ownership.value,
            capacity=s.capacity,
            lon=s.lon,
            lat=s.lat,
        )
        for s in rules.schools
    ]


def build_inputs(rules: CountyRules, applications: Iterable[DrawApplication]) -> DrawInputs:
    """A draw's inputs from the county's rules and the pseudonymous applications."""
    inputs = DrawInputs(
        county=rules.county,
        year=rules.year,
        rules_sha256=rules.sha256(),
        sibling_first=rules.sibling_priority.enabled,
        schools=draw_schools(rules),
        applications=sorted(applications, key=lambda a: (a.level.value, a.child)),
        overflow=rules.overflow.enabled,
    )
    _check_inputs(inputs)
    return inputs


def _bad(field_name: str, reason: str) -> Unprocessable:
    return Unprocessable(
        f"draw inputs: {field_name}: {reason}", detail={"field": field_name, "reason": reason}
    )


def _check_inputs(inputs: DrawInputs) -> None:
    """Refuse inputs the draw cannot run on, naming the application and the reason."""
    schools = {}
    for s in inputs.schools:
        if s.school_id in schools:
            raise _bad("schools", f"school {s.school_id} twice")
        if s.capacity < 0:
            raise _bad("schools", f"school {s.school_id} has a negative capacity")
        schools[s.school_id] = s
    seen: set[str] = set()
    for i, app in enumerate(inputs.applications):
        where = f"applications.{i}"
        if not app.child:
            raise _bad(where, "the child pseudonym is empty")
        if app.child in seen:
            raise _bad(where, f"child {app.child} applies twice")
        seen.add(app.child)
        listed: set[str] = set()
        for choice in app.choices:
            school = schools.get(choice.school_id)
            if school is None:
                raise _bad(where, f"child {app.child} ranks unknown school {choice.school_id}")
            if school.level != app.level:
                raise _bad(
                    where,
                    f"child {app.child} applies to {app.level.value} 1 but ranks the "
                    f"{school.level.value} school {choice.school_id}",
                )
            if choice.school_id in listed:
                raise _bad(where, f"child {app.child} ranks {choice.school_id} twice")
            if choice.priority_class < 0:
                raise _bad(where, f"child {app.child} has a negative class")
            listed.add(choice.school_id)


def _rank(inputs: DrawInputs, choice: DrawChoice, private: bool) -> int:
    """Priority rank at one school; private schools (公民同招) admit by lottery, classes aside."""
    klass = 0 if private else choice.priority_class
    if inputs.sibling_first:
        return klass * 2 + (0 if choice.sibling else 1)
    return klass


def _instance(inputs: DrawInputs, numbers: U64) -> Instance:
    """The allocation instance of a draw: one market per entry grade."""
    index = {s.school_id: i for i, s in enumerate(inputs.schools)}
    private = {s.school_id for s in inputs.schools if s.ownership == Ownership.private.value}
    levels = [Level.primary, Level.junior]
    preferences, priorities = [], []
    for app in inputs.applications:
        preferences.append([index[c.school_id] for c in app.choices])
        priorities.append([_rank(inputs, c, c.school_id in private) for c in app.choices])
    n = len(inputs.applications)
    overflow = None
    if inputs.overflow:
        overflow = Overflow(
            school_xy=np.asarray(
                [[s.lon, s.lat] for s in inputs.schools], dtype=np.float64
            ).reshape(-1, 2),
            student_xy=np.asarray(
                [[a.lon, a.lat] for a in inputs.applications], dtype=np.float64
            ).reshape(-1, 2),
            school_takes_overflow=np.asarray(
                [s.ownership == Ownership.public.value for s in inputs.schools], dtype=bool
            ),
            student_market=np.asarray(
                [levels.index(a.level) for a in inputs.applications], dtype=np.int32
            ),
            school_market=np.asarray(
                [levels.index(s.level) for s in inputs.schools], dtype=np.int32
            ),
            student_wants_overflow=np.asarray(
                [a.overflow for a in inputs.applications], dtype=bool
            ),
        )
    return Instance.from_lists(
        school_ids=[s.school_id for s in inputs.schools],
        capacity=[s.capacity for s in inputs.schools],
        preferences=preferences,
        priorities=priorities,
        lottery=[int(x) for x in numbers] if n else [],
        overflow=overflow,
    )


def run(inputs: DrawInputs, seed: str) -> list[Placement]:
    """Run a draw: lottery numbers from the seed, then the allocation; one placement per child."""
    _check_inputs(inputs)
    numbers = lottery.lottery_numbers(seed, [a.child for a in inputs.applications])
    instance = _instance(inputs, numbers)
    result = allocate(instance)
    placements = []
    for i, app in enumerate(inputs.applications):
        school = int(result.assigned[i])
        placements.append(
            Placement(
                child=app.child,
                level=app.level,
                school_id=inputs.schools[school].school_id if school >= 0 else None,
                stage=Stage(int(result.stage[i])),
                choice=int(result.choice[i]),
                lottery=int(numbers[i]),
            )
        )
    return placements


# --- files ---------------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _write(path: Path, text: str) -> None:
    """Write a file atomically: a temporary file, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inputs_sha256(folder: Path) -> str:
    """Hash of a draw's published inputs (inputs.json and applications.jsonl)."""
    parts = [_sha256_file(folder / INPUTS), _sha256_file(folder / APPLICATIONS)]
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()


def _inputs_json(inputs: DrawInputs) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "county": inputs.county,
        "year": inputs.year,
        "rules_sha256": inputs.rules_sha256,
        "sibling_first": inputs.sibling_first,
        "overflow": inputs.overflow,
        "schools": [
            {
                "school_id": s.school_id,
                "name": s.name,
                "level": s.level.value,
                "ownership": s.ownership,
                "capacity": s.capacity,
                "lon": s.lon,
                "lat": s.lat,
            }
            for s in inputs.schools
        ],
    }


def prepare(folder: Path, inputs: DrawInputs) -> str:
    """Write a draw's inputs into its folder; return their hash. Refused once committed."""
    _check_inputs(inputs)
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / COMMITMENT).exists():
        raise Conflict(f"the draw in {folder} is committed already: its inputs cannot change")
    lines = "".join(_dumps(a.to_json()) + "\n" for a in inputs.applications)
    _write(folder / APPLICATIONS, lines)
    _write(folder / INPUTS, json.dumps(_inputs_json(inputs), ensure_ascii=False, indent=1) + "\n")
    return inputs_sha256(folder)


def _require(folder: Path, *names: str) -> None:
    if not folder.is_dir():
        raise NotFound(f"there is no draw folder {folder}")
    for name in names:
        if not (folder / name).is_file():
            raise NotFound(f"{folder} has no {name}")


def read_inputs(folder: Path) -> DrawInputs:
    """Read a draw's inputs back from its folder."""
    _require(folder, INPUTS, APPLICATIONS)
    try:
        head = json.loads((folder / INPUTS).read_text(encoding="utf-8"))
        schools = [
            DrawSchool(
                school_id=str(s["school_id"]),
                name=str(s["name"]),
                level=Level(s["level"]),
                ownership=str(s["ownership"]),
                capacity=int(s["capacity"]),
                lon=float(s["lon"]),
                lat=float(s["lat"]),
            )
            for s in head["schools"]
        ]
        applications = []
        with (folder / APPLICATIONS).open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    applications.append(parse_application(json.loads(line)))
        inputs = DrawInputs(
            county=str(head["county"]),
            year=int(head["year"]),
            rules_sha256=str(head["rules_sha256"]),
            sibling_first=bool(head["sibling_first"]),
            schools=schools,
            applications=applications,
            overflow=bool(head.get("overflow", True)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise Unprocessable(
            f"the draw inputs in {folder} cannot be read: {exc!r}",
            detail={"field": INPUTS, "reason": str(exc)},
        ) from None
    _check_inputs(inputs)
    return inputs


def parse_application(raw: Mapping[str, Any]) -> DrawApplication:
    """An application from its JSON form (a line of applications.jsonl)."""
    return DrawApplication(
        child=str(raw["child"]),
        level=Level(raw["level"]),
        choices=[
            DrawChoice(
                school_id=str(c["school_id"]),
                priority_class=int(c["class"]),
                sibling=bool(c.get("sibling", False)),
            )
            for c in raw["choices"]
        ],
        lon=float(raw["lon"]),
        lat=float(raw["lat"]),
        overflow=bool(raw.get("overflow", True)),
    )


def commit(folder: Path, seed: str | None = None) -> Commitment:
    """Draw (or take) the secret seed and write the commitment; refused if one exists."""
    _require(folder, INPUTS, APPLICATIONS)
    if (folder / COMMITMENT).exists():
        raise Conflict(
            f"the draw in {folder} is committed already; a new seed after the commitment "
            "would defeat it"
        )
    secret = seed if seed is not None else lottery.new_seed()
    made = Commitment(
        seed=secret, seed_sha256=lottery.commitment(secret), inputs_sha256=inputs_sha256(folder)
    )
    record = {
        "format": FORMAT,
        "seed_sha256": made.seed_sha256,
        "inputs_sha256": made.inputs_sha256,
        "lottery": "first 8 bytes of HMAC-SHA256(seed, child) as a big-endian integer; lower wins",
    }
    _write(folder / COMMITMENT, json.dumps(record, indent=1) + "\n")
    return made


def read_commitment(folder: Path) -> dict[str, str]:
    """The commitment record of a draw."""
    _require(folder, COMMITMENT)
    try:
        raw = json.loads((folder / COMMITMENT).read_text(encoding="utf-8"))
        return {"seed_sha256": str(raw["seed_sha256"]), "inputs_sha256": str(raw["inputs_sha256"])}
    except (ValueError, KeyError, TypeError) as exc:
        raise Unprocessable(
            f"{folder / COMMITMENT} cannot be read: {exc!r}",
            detail={"field": COMMITMENT, "reason": str(exc)},
        ) from None


def _placement_json(p: Placement) -> dict[str, Any]:
    return {
        "child": p.child,
        "level": p.level.value,
        "school_id": p.school_id,
        "stage": p.stage.name,
        "choice": p.choice,
        "lottery": f"{p.lottery:016x}",
    }


def _school_files(
    inputs: DrawInputs, placements: list[Placement], names: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """Each school's published list: admitted children (masked names), in priority order."""
    by_child = {a.child: a for a in inputs.applications}
    private = {s.school_id for s in inputs.schools if s.ownership == Ownership.private.value}
    admitted: dict[str, list[dict[str, Any]]] = {s.school_id: [] for s in inputs.schools}
    applicants = {s.school_id: 0 for s in inputs.schools}
    for app in inputs.applications:
        for c in app.choices:
            applicants[c.school_id] += 1
    for p in placements:
        if p.school_id is None:
            continue
        choice = next((c for c in by_child[p.child].choices if c.school_id == p.school_id), None)
        name = names.get(p.child)
        at_private = p.school_id in private
        admitted[p.school_id].append(
            {
                "child": p.child,
                "name": mask_text(MaskKind.name, name) if name else None,
                # the class the draw used: private schools admit by lottery alone
                "class": (0 if at_private else choice.priority_class) if choice else None,
                "rank": _rank(inputs, choice, at_private) if choice else None,
                "sibling": choice.sibling if choice else False,
                "stage": p.stage.name,
                "lottery": f"{p.lottery:016x}",
            }
        )
    out = {}
    for s in inputs.schools:
        rows = sorted(
            admitted[s.school_id],
            key=lambda r: (r["stage"] != "choice", r["rank"] or 0, r["lottery"]),
        )
        out[s.school_id] = {
            "school_id": s.school_id,
            "name": s.name,
            "level": s.level.value,
            "ownership": s.ownership,
            "capacity": s.capacity,
            "applicants": applicants[s.school_id],
            "admitted": rows,
            "seats_left": s.capacity - len(rows),
        }
    return out


def publish(folder: Path, seed: str, names: Mapping[str, str] | None = None) -> DrawSummary:
    """Reveal the seed, run the draw on the committed inputs and publish the results."""
    _require(folder, INPUTS, APPLICATIONS, COMMITMENT)
    if (folder / SUMMARY).exists():
        raise Conflict(f"the draw in {folder} is published already")
    committed = read_commitment(folder)
    lottery.check_reveal(seed, committed["seed_sha256"])
    if inputs_sha256(folder) != committed["inputs_sha256"]:
        raise Conflict(
            f"the inputs in {folder} changed after the commitment: the draw is refused",
            detail={"field": "inputs_sha256", "reason": "inputs differ from the committed hash"},
        )
    inputs = read_inputs(folder)
    placements = run(inputs, seed)
    school_dir = folder / SCHOOLS
    shutil.rmtree(school_dir, ignore_errors=True)  # a publication cut short is redone whole
    school_dir.mkdir()
    for school_id, body in _school_files(inputs, placements, names or {}).items():
        _write(school_dir / f"{school_id}.json", json.dumps(body, ensure_ascii=False, indent=1))
    _write(folder / RESULT, "".join(_dumps(_placement_json(p)) + "\n" for p in placements))
    _write(folder / SEED, seed + "\n")
    summary = _summary(inputs, placements, committed)
    _write(folder / SUMMARY, json.dumps(summary.to_json(), indent=1) + "\n")
    return summary


def _summary(
    inputs: DrawInputs, placements: list[Placement], committed: Mapping[str, str]
) -> DrawSummary:
    placed = sum(1 for p in placements if p.school_id is not None)
    return DrawSummary(
        county=inputs.county,
        year=inputs.year,
        children=len(placements),
        placed=placed,
        by_choice=sum(1 for p in placements if p.stage is Stage.choice),
        by_overflow=sum(1 for p in placements if p.stage is Stage.overflow),
        unplaced=len(placements) - placed,
        seed_sha256=committed["seed_sha256"],
        inputs_sha256=committed["inputs_sha256"],
    )


def read_result(folder: Path) -> list[dict[str, Any]]:
    """The published placements of a draw."""
    _require(folder, RESULT)
    with (folder / RESULT).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_school_lists(folder: Path) -> list[dict[str, Any]]:
    """The published per-school lists of a draw, in school order."""
    _require(folder, SUMMARY)
    return [
        json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((folder / SCHOOLS).glob("*.json"))
    ]


# --- verification --------------------------------------------------------------------------------


def verify(folder: Path, expected_commitment: str | None = None) -> VerifyReport:
    """Re-run a published draw from its folder and list everything that does not hold."""
    report = VerifyReport(folder=folder)
    missing = [
        n for n in (INPUTS, APPLICATIONS, COMMITMENT, SEED, RESULT) if not (folder / n).is_file()
    ]
    if not folder.is_dir() or missing:
        report.problems.append(
            f"{folder} is not a published draw: missing {', '.join(missing) or 'the folder'}"
        )
        return report
    try:
        committed = read_commitment(folder)
        report.seed_sha256 = committed["seed_sha256"]
        seed = (folder / SEED).read_text(encoding="utf-8").strip()
        if expected_commitment is not None and expected_commitment != committed["seed_sha256"]:
            report.problems.append(
                "the commitment in the folder is not the one published before the draw "
                f"({committed['seed_sha256'][:16]}... instead of {expected_commitment[:16]}...)"
            )
        lottery.check_seed(seed)
        if lottery.commitment(seed) != committed["seed_sha256"]:
            report.problems.append(
                "the revealed seed does not match the commitment: sha256(seed) is "
                f"{lottery.commitment(seed)[:16]}..., committed {committed['seed_sha256'][:16]}..."
            )
        if inputs_sha256(folder) != committed["inputs_sha256"]:
            report.problems.append(
                "the inputs changed after the commitment: inputs.json or applications.jsonl "
                "is not what was committed"
            )
        inputs = read_inputs(folder)
        report.children, report.schools = len(inputs.applications), len(inputs.schools)
        rerun = [_placement_json(p) for p in run(inputs, seed)]
        published = read_result(folder)
    except (Unprocessable, Conflict, NotFound) as exc:
        report.problems.append(exc.message)
        return report
    except (ValueError, KeyError, TypeError) as exc:
        report.problems.append(f"the published result cannot be read: {exc!r}")
        return report
    _compare(report, rerun, published)
    _compare_schools(report, folder, rerun)
    return report


def _compare(
    report: VerifyReport, rerun: list[dict[str, Any]], published: list[dict[str, Any]]
) -> None:
    """Name the children whose published placement differs from the re-run."""
    mine = {p["child"]: p for p in rerun}
    theirs = {p.get("child"): p for p in published}
    differ = [c for c in mine if mine[c] != theirs.get(c)]
    extra = [c for c in theirs if c not in mine]
    if differ or extra:
        examples = []
        for c in differ[:3]:
            got = theirs.get(c)
            examples.append(
                f"child {c} published at {got.get('school_id') if got else 'nothing'}, "
                f"re-run gives {mine[c]['school_id']}"
                + (
                    ""
                    if not got or got.get("school_id") != mine[c]["school_id"]
                    else " (other fields differ)"
                )
            )
        report.problems.append(
            f"the published result differs from the re-run for {len(differ) + len(extra)} "
            f"child(ren): "
            + "; ".join(examples + [f"child {c} is not in the inputs" for c in extra[:3]])
        )


def _compare_schools(report: VerifyReport, folder: Path, rerun: list[dict[str, Any]]) -> None:
    """Each school's published list must hold exactly the children the re-run places there."""
    school_dir = folder / SCHOOLS
    if not school_dir.is_dir():
        report.problems.append(f"{folder} has no schools/ lists")
        return
    expected: dict[str, set[str]] = {}
    for p in rerun:
        if p["school_id"] is not None:
            expected.setdefault(p["school_id"], set()).add(p["child"])
    for path in sorted(school_dir.glob("*.json")):
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            listed = {row["child"] for row in body["admitted"]}
        except (ValueError, KeyError, TypeError) as exc:
            report.problems.append(f"{path.name} cannot be read: {exc!r}")
            continue
        want = expected.get(path.stem, set())
        if listed != want:
            report.problems.append(
                f"the published list of {path.stem} differs from the re-run "
                f"({len(listed - want)} listed wrongly, {len(want - listed)} missing)"
            )
