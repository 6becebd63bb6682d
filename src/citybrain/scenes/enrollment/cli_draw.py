"""`citybrain enrollment rules|draw|verify`: county rules, running a draw, verifying one.

Thin callers of rules.py and draw.py. `draw sample` writes sample applications over a
county's real schools and zones (from the synthetic education tables; no personal records are
read) so a draw can be tried without a season; the season service builds the real inputs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from citybrain.core.errors import BadInput, NotFound
from citybrain.geo import service as geo
from citybrain.scenes.enrollment import draw as draws
from citybrain.scenes.enrollment import lottery
from citybrain.scenes.enrollment.models import DrawApplication, DrawChoice
from citybrain.scenes.enrollment.rules import (
    CountyRules,
    default_rules_for,
    load_county_rules,
    read_education_tables,
)

rules_app = typer.Typer(no_args_is_help=True, help="County enrollment rules (YAML).")
draw_app = typer.Typer(no_args_is_help=True, help="Run and publish a verifiable draw.")
SYNTH = typer.Option(
    None, "--synth", help="synth output (or a node's data folder) with the education tables"
)
SEED_FILE = typer.Option(
    None, "--seed-file", help="where the secret seed is kept (default DIR.seed)"
)
# class shares of the sample applications: first class, second, third, fourth
SAMPLE_CLASSES = [0.60, 0.20, 0.12, 0.08]


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the scene's command group."""
    app.add_typer(rules_app, name="rules")
    app.add_typer(draw_app, name="draw")
    app.command("verify")(verify)


def _rules(county: str, synth: Path | None) -> CountyRules:
    if synth is None:
        return default_rules_for(county)
    schools, zones = read_education_tables(synth, county)
    return default_rules_for(county, schools, zones)


@rules_app.command("check")
def check(
    file: Path = typer.Argument(..., help="the county's rules YAML"), synth: Path | None = SYNTH
) -> None:
    """Check a rules file (over the defaults and the county's tables); exit 2 with every problem."""
    tables = None
    if synth is not None:
        head = _county_of(file)
        tables = read_education_tables(synth, head)
    rules = load_county_rules(
        file, schools=tables[0] if tables else None, zones=tables[1] if tables else None
    )
    levels = ", ".join(f"{g.level.value} 1 at {g.entry_age}" for g in rules.grades)
    multi = sum(1 for z in rules.zones if z.kind == "multi")
    typer.echo(
        f"ok: county {rules.county}, season {rules.year} ({rules.calendar.open} to "
        f"{rules.calendar.deadline}, draw {rules.calendar.draw}); {levels}; "
        f"{len(rules.priority_classes)} priority classes; {len(rules.schools)} schools, "
        f"{len(rules.zones)} zones ({multi} multi-school)"
    )
    typer.echo(f"rules sha256 {rules.sha256()}")


def _county_of(file: Path) -> str:
    if not file.is_file():
        raise NotFound(f"there is no rules file {file}")
    for line in file.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "county":
            return value.strip().strip("'\"")
    raise BadInput(f"{file} names no county")


@rules_app.command("show")
def show(
    county: str = typer.Option(..., "--county", help="county code, e.g. 370102"),
    synth: Path | None = SYNTH,
) -> None:
    """Print a county's effective default rules as YAML (a starting point for its own file)."""
    typer.echo(_rules(county, synth).to_yaml(), nl=False)


@draw_app.command("sample")
def sample(
    county: str = typer.Option(..., "--county", help="county code"),
    synth: Path = typer.Option(..., "--synth", help="synth output with the education tables"),
    out: Path = typer.Option(..., "--out", help="the draw's folder (created)"),
    children: int | None = typer.Option(
        None, min=1, help="applications per grade (default: seats / 1.15)"
    ),
    seed: int = typer.Option(1, help="seed of the sample applications"),
) -> None:
    """Write sample applications over a county's schools and zones, ready to commit."""
    rules = _rules(county, synth)
    rng = np.random.default_rng([seed, int(county)])
    apps: list[DrawApplication] = []
    for grade in rules.grades:
        zones = [z for z in rules.zones if z.level == grade.level]
        private = rules.private_schools_of(grade.level)
        seats = sum(s.capacity for s in rules.schools if s.level == grade.level)
        n = children or max(1, int(seats / 1.15))
        if not zones:
            continue
        for i in range(n):
            zone = zones[int(rng.integers(len(zones)))]
            community = zone.community_codes[int(rng.integers(len(zone.community_codes)))]
            unit = geo.get_unit(community)
            klass = int(rng.choice(len(SAMPLE_CLASSES), p=SAMPLE_CLASSES))
            sibling = bool(rng.random() < 0.03)
            order = list(rng.permutation(zone.school_ids))
            choices = [DrawChoice(str(sid), klass, sibling) for sid in order]
            if private and rng.random() < 0.10:
                pick = private[int(rng.integers(len(private)))]
                choices.insert(0, DrawChoice(pick.school_id, 0, False))
            apps.append(
                DrawApplication(
                    child=f"sample-{grade.level.value}-{i:06d}",
                    level=grade.level,
                    choices=choices,
                    lon=unit.centroid_lon + float(rng.normal(0, 0.005)),
                    lat=unit.centroid_lat + float(rng.normal(0, 0.005)),
                )
            )
    digest = draws.prepare(out, draws.build_inputs(rules, apps))
    typer.echo(f"{len(apps):,} sample applications for {county} in {out}; inputs sha256 {digest}")


@draw_app.command("prepare")
def prepare(
    rules_file: Path = typer.Option(..., "--rules", help="the county's rules YAML"),
    applications: Path = typer.Option(..., "--applications", help="JSON lines, one child a line"),
    out: Path = typer.Option(..., "--out", help="the draw's folder (created)"),
    synth: Path | None = SYNTH,
) -> None:
    """Write a draw's inputs from a rules file and pseudonymous applications (JSON lines)."""
    tables = read_education_tables(synth, _county_of(rules_file)) if synth is not None else None
    rules = load_county_rules(
        rules_file, schools=tables[0] if tables else None, zones=tables[1] if tables else None
    )
    if not applications.is_file():
        raise NotFound(f"there is no applications file {applications}")
    apps = []
    for number, line in enumerate(applications.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            apps.append(draws.parse_application(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"{applications} line {number}: not an application ({exc})") from None
    digest = draws.prepare(out, draws.build_inputs(rules, apps))
    typer.echo(f"{len(apps):,} applications in {out}; inputs sha256 {digest}")


def _seed_path(folder: Path, seed_file: Path | None) -> Path:
    return seed_file or folder.with_name(folder.name + ".seed")


@draw_app.command("commit")
def commit(
    folder: Path = typer.Argument(..., help="the draw's folder"), seed_file: Path | None = SEED_FILE
) -> None:
    """Draw the secret seed, keep it outside the folder and print the commitment to publish."""
    path = _seed_path(folder, seed_file)
    if not folder.is_dir():
        raise NotFound(f"there is no draw folder {folder}: prepare the draw first")
    if path.exists():
        raise BadInput(f"{path} exists already: a seed is never drawn twice for one draw")
    # the seed is kept before the commitment is written: a commitment without its seed would
    # leave a draw that can never run
    seed = lottery.new_seed()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(seed + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        made = draws.commit(folder, seed=seed)
    except BaseException:
        path.unlink()
        raise
    typer.echo(f"commitment (publish before the draw): {made.seed_sha256}")
    typer.echo(f"inputs sha256: {made.inputs_sha256}")
    typer.echo(f"secret seed kept in {path} until the draw")


@draw_app.command("run")
def run(
    folder: Path = typer.Argument(..., help="the draw's folder"), seed_file: Path | None = SEED_FILE
) -> None:
    """Reveal the seed, run the draw and publish the results into the folder."""
    path = _seed_path(folder, seed_file)
    if not path.is_file():
        raise NotFound(f"there is no seed file {path}: commit the draw first")
    summary = draws.publish(folder, path.read_text(encoding="utf-8").strip())
    typer.echo(
        f"published: {summary.children:,} children, {summary.by_choice:,} placed by their ranking, "
        f"{summary.by_overflow:,} by overflow, {summary.unplaced:,} unplaced"
    )
    typer.echo(
        f"seed revealed in {folder / draws.SEED}; "
        f"anyone can check it: citybrain enrollment verify {folder}"
    )


@draw_app.command("results")
def results(folder: Path = typer.Argument(..., help="a published draw's folder")) -> None:
    """Print each school's seats, applicants and admitted children of a published draw."""
    table = Table("school", "name", "level", "ownership", "seats", "applicants", "admitted", "left")
    for school in draws.read_school_lists(folder):
        table.add_row(
            school["school_id"],
            school["name"],
            school["level"],
            school["ownership"],
            str(school["capacity"]),
            str(school["applicants"]),
            str(len(school["admitted"])),
            str(school["seats_left"]),
        )
    Console().print(table)


def verify(
    folder: Path = typer.Argument(..., help="a published draw's folder"),
    commitment: str | None = typer.Option(
        None, "--commitment", help="the commitment published before the draw, to compare"
    ),
) -> None:
    """Re-run a published draw from its folder; exit 1 naming what does not hold."""
    report = draws.verify(folder, commitment)
    if report.ok:
        typer.echo(
            f"verified: {report.children:,} children, {report.schools:,} schools; the seed matches "
            f"commitment {report.seed_sha256} and the re-run gives the published result"
        )
        return
    err = Console(stderr=True, soft_wrap=True)
    for problem in report.problems:
        err.print(f"[red]tampered or incomplete:[/red] {escape(problem)}", highlight=False)
    raise typer.Exit(code=1)
