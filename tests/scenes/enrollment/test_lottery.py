"""The verifiable lottery and draws: commitment, derivation, publication, checks, tampering."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from citybrain.cli import app as cli_app
from citybrain.core.errors import Conflict, NotFound, Unprocessable
from citybrain.scenes.enrollment import draw, lottery
from citybrain.scenes.enrollment.models import DrawApplication, DrawChoice, Level
from citybrain.scenes.enrollment.rules import CountyRules, validate_rules
from citybrain.synth.county import generate_county
from citybrain.synth.service import plan

SEED = "5e" * 32
NAMES = ["王小明", "李思远", "张一诺", "刘子涵", "陈可欣", "杨浩然"]


def test_commitment_is_sha256_of_the_seed_text() -> None:
    assert lottery.commitment(SEED) == hashlib.sha256(SEED.encode()).hexdigest()
    fresh = lottery.new_seed()
    assert len(fresh) == 64 and fresh != lottery.new_seed()
    lottery.check_reveal(SEED, lottery.commitment(SEED))
    with pytest.raises(Conflict, match="does not match the commitment"):
        lottery.check_reveal(fresh, lottery.commitment(SEED))


@pytest.mark.parametrize("bad", ["", "00", "5E" * 32, "zz" * 32, "5e" * 33])
def test_malformed_seeds_are_refused(bad: str) -> None:
    with pytest.raises(Unprocessable, match="64 lowercase hex digits"):
        lottery.lottery_number(bad, "child")


def test_numbers_are_hmac_sha256_of_the_pseudonym_under_the_seed() -> None:
    expected = int.from_bytes(
        hmac.new(bytes.fromhex(SEED), b"c-0001", hashlib.sha256).digest()[:8], "big"
    )
    assert lottery.lottery_number(SEED, "c-0001") == expected
    many = lottery.lottery_numbers(SEED, ["c-0001", "c-0002"])
    assert many.dtype == np.uint64 and int(many[0]) == expected
    assert int(many[1]) != expected
    assert lottery.lottery_number(lottery.new_seed(), "c-0001") != expected
    children = ["", "c-0002", "孩子-三", "x" * 200]  # empty, non-ASCII, longer than a block
    batch = lottery.lottery_numbers(SEED, children)
    for child, number in zip(children, batch.tolist(), strict=True):
        mac = hmac.new(bytes.fromhex(SEED), child.encode(), hashlib.sha256).digest()
        assert number == int.from_bytes(mac[:8], "big") == lottery.lottery_number(SEED, child)


def _rules() -> CountyRules:
    """A county with two primary zones (one multi-school), a private school and a junior school."""
    school = {"level": "primary", "ownership": "public", "lon": 117.0, "lat": 36.6}
    return validate_rules(
        {
            "county": "370112",
            "year": 2027,
            "calendar": {
                "open": "2027-06-01",
                "deadline": "2027-06-20",
                "draw": "2027-07-05",
                "publish": "2027-07-10",
            },
            "grades": [{"level": "primary", "entry_age": 6}, {"level": "junior", "entry_age": 12}],
            "priority_classes": [
                {"name": "户籍与房产", "requires": ["hukou_in_zone", "property_in_zone"]},
                {"name": "房产", "requires": ["property_in_zone"]},
            ],
            "schools": [
                {**school, "school_id": "A", "name": "甲小学", "capacity": 3},
                {**school, "school_id": "B", "name": "乙小学", "capacity": 2, "lon": 117.1},
                {**school, "school_id": "C", "name": "丙小学", "capacity": 8, "lon": 117.3},
                {
                    **school,
                    "school_id": "P",
                    "name": "实验小学",
                    "capacity": 2,
                    "ownership": "private",
                },
                {
                    **school,
                    "school_id": "P0",
                    "name": "空小学",
                    "capacity": 0,
                    "ownership": "private",
                },
                {**school, "school_id": "J", "name": "一中", "capacity": 3, "level": "junior"},
            ],
            "zones": [
                {
                    "zone_id": "Z1",
                    "level": "primary",
                    "school_ids": ["A", "B"],
                    "community_codes": ["1"],
                },
                {
                    "zone_id": "Z2",
                    "level": "primary",
                    "school_ids": ["C"],
                    "community_codes": ["2"],
                },
                {
                    "zone_id": "ZJ",
                    "level": "junior",
                    "school_ids": ["J"],
                    "community_codes": ["1", "2"],
                },
            ],
        }
    )


def _applications() -> list[DrawApplication]:
    rng = np.random.default_rng(4)
    apps = []
    for i in range(14):
        klass = int(rng.integers(0, 2))
        sibling = i == 3
        ranked = ["A", "B"] if i % 2 else ["B", "A"]
        if i % 5 == 0:
            ranked = ["P", *ranked]
        apps.append(
            DrawApplication(
                child=f"c-{i:04d}",
                level=Level.primary,
                choices=[DrawChoice(s, 0 if s == "P" else klass, sibling) for s in ranked],
                lon=117.0 + float(rng.random()) * 0.3,
                lat=36.6,
            )
        )
    apps.append(DrawApplication("c-j1", Level.junior, [DrawChoice("J", 0)], 117.0, 36.6))
    return apps


def _published(folder: Path) -> draw.DrawSummary:
    inputs = draw.build_inputs(_rules(), _applications())
    draw.prepare(folder, inputs)
    made = draw.commit(folder, seed=SEED)
    names = {a.child: NAMES[i % len(NAMES)] for i, a in enumerate(inputs.applications)}
    return draw.publish(folder, made.seed, names)


def test_a_published_draw_verifies(tmp_path: Path) -> None:
    summary = _published(tmp_path / "draw")
    assert summary.children == 15 and summary.unplaced == 0
    assert summary.by_choice == 3 + 2 + 2 + 1  # A, B, P and the junior school
    assert summary.by_overflow == 15 - 8  # to C, the only public school with seats left
    report = draw.verify(tmp_path / "draw", expected_commitment=lottery.commitment(SEED))
    assert report.ok, report.problems
    assert report.children == 15 and report.seed_sha256 == lottery.commitment(SEED)


def test_results_per_school_show_masked_names_only(tmp_path: Path) -> None:
    folder = tmp_path / "draw"
    _published(folder)
    lists = {s["school_id"]: s for s in draw.read_school_lists(folder)}
    assert lists["A"]["capacity"] == 3 and len(lists["A"]["admitted"]) == 3
    assert lists["C"]["seats_left"] == 1 and lists["C"]["applicants"] == 0  # overflow only
    shown = {row["name"] for s in lists.values() for row in s["admitted"]}
    assert shown and all(name[1:] == "*" * (len(name) - 1) for name in shown)
    everything = "".join(p.read_text(encoding="utf-8") for p in folder.rglob("*") if p.is_file())
    for name in NAMES:
        assert name not in everything  # no full name anywhere in the published folder
    # admitted lists are in priority order: class (siblings first), then lottery number
    rows = [r for r in lists["A"]["admitted"] if r["stage"] == "choice"]
    assert rows == sorted(rows, key=lambda r: (r["rank"], r["lottery"]))
    assert all(r["rank"] // 2 == r["class"] for r in rows)  # rank = 2 * class + not sibling


def test_the_same_seed_gives_the_same_result_and_another_seed_another(tmp_path: Path) -> None:
    inputs = draw.build_inputs(_rules(), _applications())
    first = draw.run(inputs, SEED)
    assert first == draw.run(inputs, SEED)
    others = [draw.run(inputs, lottery.new_seed()) for _ in range(5)]
    assert any([p.school_id for p in o] != [p.school_id for p in first] for o in others)


def test_a_private_school_admits_by_lottery_whatever_the_class() -> None:
    seed_numbers = {c: lottery.lottery_number(SEED, c) for c in ("x1", "x2", "x3")}
    best, *rest = sorted(seed_numbers, key=lambda c: seed_numbers[c])
    apps = [
        DrawApplication(c, Level.primary, [DrawChoice("P", 0 if c != best else 1)], 117.0, 36.6)
        for c in seed_numbers
    ]
    placed = {p.child: p.school_id for p in draw.run(draw.build_inputs(_rules(), apps), SEED)}
    # two seats: the best lottery number gets one although its class is worse
    assert placed[best] == "P"
    assert sorted(placed[c] for c in rest) == ["A", "P"]  # the loser overflows to A, nearest


def _spoil_line(path: Path, child: str, key: str, value: object) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        row = json.loads(line)
        if row["child"] == child:
            row[key] = value
        out.append(json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":")))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def test_a_changed_seed_is_detected(tmp_path: Path) -> None:
    folder = tmp_path / "draw"
    _published(folder)
    (folder / draw.SEED).write_text("6f" * 32 + "\n")
    report = draw.verify(folder)
    assert not report.ok
    assert any("revealed seed does not match the commitment" in p for p in report.problems)


def test_changed_inputs_are_detected(tmp_path: Path) -> None:
    folder = tmp_path / "draw"
    _published(folder)
    _spoil_line(folder / draw.APPLICATIONS, "c-0001", "choices", [{"school_id": "A", "class": 0}])
    report = draw.verify(folder)
    assert any("inputs changed after the commitment" in p for p in report.problems)


def test_a_changed_result_is_detected(tmp_path: Path) -> None:
    folder = tmp_path / "draw"
    _published(folder)
    placed = {r["child"]: r for r in draw.read_result(folder)}
    victim = next(c for c, r in placed.items() if r["school_id"] == "C")
    _spoil_line(folder / draw.RESULT, victim, "school_id", "A")
    report = draw.verify(folder)
    assert any(f"child {victim} published at A, re-run gives C" in p for p in report.problems), (
        report.problems
    )


def test_a_changed_school_list_is_detected(tmp_path: Path) -> None:
    folder = tmp_path / "draw"
    _published(folder)
    path = folder / draw.SCHOOLS / "A.json"
    body = json.loads(path.read_text(encoding="utf-8"))
    body["admitted"][0]["child"] = "c-9999"
    path.write_text(json.dumps(body), encoding="utf-8")
    report = draw.verify(folder)
    assert any("published list of A differs" in p for p in report.problems)


def test_another_commitment_than_the_published_one_is_detected(tmp_path: Path) -> None:
    folder = tmp_path / "draw"
    _published(folder)
    report = draw.verify(folder, expected_commitment="ab" * 32)
    assert any("not the one published before the draw" in p for p in report.problems)


def test_an_incomplete_folder_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "draw"
    draw.prepare(folder, draw.build_inputs(_rules(), _applications()))
    draw.commit(folder)
    report = draw.verify(folder)
    assert report.problems == [f"{folder} is not a published draw: missing seed.txt, result.jsonl"]


def test_the_order_of_steps_is_enforced(tmp_path: Path) -> None:
    folder = tmp_path / "draw"
    inputs = draw.build_inputs(_rules(), _applications())
    with pytest.raises(NotFound):
        draw.commit(folder)
    draw.prepare(folder, inputs)
    with pytest.raises(NotFound):
        draw.publish(folder, SEED)
    draw.commit(folder, seed=SEED)
    with pytest.raises(Conflict, match="committed already"):
        draw.commit(folder)
    with pytest.raises(Conflict, match="inputs cannot change"):
        draw.prepare(folder, inputs)
    with pytest.raises(Conflict, match="does not match the commitment"):
        draw.publish(folder, "6f" * 32)
    assert not (folder / draw.SEED).exists() and not (folder / draw.RESULT).exists()
    draw.publish(folder, SEED)
    with pytest.raises(Conflict, match="published already"):
        draw.publish(folder, SEED)


def test_inputs_changed_after_the_commitment_are_not_drawn(tmp_path: Path) -> None:
    folder = tmp_path / "draw"
    draw.prepare(folder, draw.build_inputs(_rules(), _applications()))
    draw.commit(folder, seed=SEED)
    _spoil_line(folder / draw.APPLICATIONS, "c-0002", "lon", 0.0)
    with pytest.raises(Conflict, match="changed after the commitment"):
        draw.publish(folder, SEED)
    assert not (folder / draw.SUMMARY).exists()


@pytest.mark.parametrize(
    ("app", "reason"),
    [
        (DrawApplication("c-0001", Level.primary, [DrawChoice("A", 0)], 0, 0), "applies twice"),
        (DrawApplication("x", Level.primary, [DrawChoice("Q", 0)], 0, 0), "unknown school Q"),
        (DrawApplication("x", Level.junior, [DrawChoice("A", 0)], 0, 0), "ranks the primary"),
        (
            DrawApplication("x", Level.primary, [DrawChoice("A", 0), DrawChoice("A", 1)], 0, 0),
            "ranks A twice",
        ),
        (DrawApplication("x", Level.primary, [DrawChoice("A", -1)], 0, 0), "negative class"),
        (DrawApplication("", Level.primary, [DrawChoice("A", 0)], 0, 0), "pseudonym is empty"),
    ],
)
def test_bad_applications_are_refused(app: DrawApplication, reason: str) -> None:
    with pytest.raises(Unprocessable, match=reason):
        draw.build_inputs(_rules(), [*_applications(), app])


def test_cli_sample_commit_run_verify_and_tamper(tmp_path: Path) -> None:
    folder = tmp_path / "draw"
    rules = tmp_path / "rules.yaml"
    rules.write_text(_rules().to_yaml(), encoding="utf-8")
    apps = tmp_path / "applications.jsonl"
    apps.write_text(
        "".join(json.dumps(a.to_json()) + "\n" for a in _applications()), encoding="utf-8"
    )
    runner = CliRunner()
    done = runner.invoke(
        cli_app,
        ["enrollment", "draw", "prepare", "--rules", str(rules), "--applications", str(apps),
         "--out", str(folder)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    done = runner.invoke(cli_app, ["enrollment", "draw", "commit", str(folder)])
    assert done.exit_code == 0, done.output
    commitment = done.output.split("publish before the draw): ")[1].split()[0]
    seed_file = tmp_path / "draw.seed"
    assert seed_file.stat().st_mode & 0o077 == 0  # the secret seed is readable by its owner only
    assert not (folder / draw.SEED).exists()
    assert runner.invoke(cli_app, ["enrollment", "draw", "commit", str(folder)]).exception
    other = tmp_path / "other.seed"
    again = runner.invoke(
        cli_app, ["enrollment", "draw", "commit", str(folder), "--seed-file", str(other)]
    )
    assert isinstance(again.exception, Conflict) and not other.exists()  # no stray seed kept
    absent = runner.invoke(cli_app, ["enrollment", "draw", "commit", str(tmp_path / "none")])
    assert isinstance(absent.exception, NotFound)
    done = runner.invoke(cli_app, ["enrollment", "draw", "run", str(folder)])
    assert done.exit_code == 0 and "published: 15 children" in done.output, done.output
    done = runner.invoke(cli_app, ["enrollment", "verify", str(folder), "--commitment", commitment])
    assert done.exit_code == 0 and "verified: 15 children" in done.output, done.output
    shown = runner.invoke(cli_app, ["enrollment", "draw", "results", str(folder)])
    assert shown.exit_code == 0 and "甲小学" in shown.output
    (folder / draw.SEED).write_text("6f" * 32 + "\n")
    done = runner.invoke(cli_app, ["enrollment", "verify", str(folder)])
    assert done.exit_code == 1
    assert "seed does not match the commitment" in " ".join(done.output.split())


def test_cli_sample_over_a_synthetic_county(tmp_path: Path) -> None:
    folder = tmp_path / "370100" / "education"
    folder.mkdir(parents=True)
    item = next(
        p for p in plan(scale=0.005, seed=2, cities=["370100"]) if p.county.code == "370112"
    )
    tables = generate_county(item, [])
    pq.write_table(tables[("education", "schools")], folder / "schools.parquet")
    pq.write_table(tables[("education", "catchment_zones")], folder / "catchment_zones.parquet")
    out = tmp_path / "draw"
    runner = CliRunner()
    done = runner.invoke(
        cli_app,
        ["enrollment", "draw", "sample", "--county", "370112", "--synth", str(tmp_path),
         "--out", str(out), "--children", "120"],
    )  # fmt: skip
    assert done.exit_code == 0 and "240 sample applications" in done.output, done.output
    assert runner.invoke(cli_app, ["enrollment", "draw", "commit", str(out)]).exit_code == 0
    assert runner.invoke(cli_app, ["enrollment", "draw", "run", str(out)]).exit_code == 0
    done = runner.invoke(cli_app, ["enrollment", "verify", str(out)])
    assert done.exit_code == 0 and "verified: 240 children" in done.output, done.output
    levels = {a.level for a in draw.read_inputs(out).applications}
    assert levels == {Level.primary, Level.junior}


def test_cli_bad_application_lines_are_refused(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(_rules().to_yaml(), encoding="utf-8")
    apps = tmp_path / "applications.jsonl"
    apps.write_text('{"child": "x"}\n', encoding="utf-8")
    done = CliRunner().invoke(
        cli_app,
        ["enrollment", "draw", "prepare", "--rules", str(rules), "--applications", str(apps),
         "--out", str(tmp_path / "d")],
    )  # fmt: skip
    assert done.exception is not None and "line 1: not an application" in str(done.exception)
    assert not (tmp_path / "d").exists()
