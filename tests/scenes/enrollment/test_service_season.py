"""Running the season: appeals, close, commit, draw, publish; results and statistics."""

from __future__ import annotations

from typing import Any

import pytest
import test_service_setup as setup
from test_service_setup import CITY, Scene

from citybrain.scenes.enrollment import draw

synth_jinan, scene, opened = setup.synth_jinan, setup.scene, setup.opened

APPS = "/api/enrollment/applications"
SEASON = f"{CITY}-2027"


def _step(scene: Scene, step: str, who: dict[str, str] | None = None) -> Any:
    return scene.post(
        f"/api/enrollment/seasons/{SEASON}/steps", {"step": step}, who or scene.h("education")
    )


def _apply_all(scene: Scene) -> list[dict[str, Any]]:
    made = []
    for family in scene.families()[:12]:
        out = scene.post(APPS, {"child_id_number": family.child_id}, scene.parent(family.phone))
        assert out.status_code == 201, out.text
        made.append({**out.json(), "phone": family.phone})
    return made


def test_appeal_is_decided_by_a_reviewer_and_reclassifies(opened: Scene) -> None:
    apps = _apply_all(opened)
    target = next(a for a in apps if not all(a["checks"].values()))
    failed = next(c for c, ok in target["checks"].items() if not ok)
    passed = next((c for c, ok in target["checks"].items() if ok), None)
    parent = opened.parent(target["phone"])
    url = f"{APPS}/{target['id']}/appeals"
    if passed:
        nothing = opened.post(url, {"criterion": passed, "statement": "x"}, parent)
        assert nothing.status_code == 422
    assert opened.post(url, {"criterion": "flying", "statement": "x"}, parent).status_code == 422
    filed = opened.post(url, {"criterion": failed, "statement": "we own the flat"}, parent)
    assert filed.status_code == 201, filed.text
    assert opened.post(url, {"criterion": failed, "statement": "again"}, parent).status_code == 409
    # another parent cannot appeal this application, a parent cannot decide
    other = next(a for a in apps if a["phone"] != target["phone"])
    assert (
        opened.post(
            url, {"criterion": failed, "statement": "x"}, opened.parent(other["phone"])
        ).status_code
        == 404
    )
    decision = f"/api/enrollment/appeals/{filed.json()['id']}/decision"
    body = {"decision": "upheld", "reason": "certificate seen"}
    assert opened.post(decision, body, parent).status_code == 403
    # the draw cannot be committed while an appeal is pending
    assert _step(opened, "close").status_code == 200
    assert _step(opened, "commit").status_code == 409
    decided = opened.post(decision, body, opened.h("education", "operator"))
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "upheld"
    again = opened.post(decision, body, opened.h("education", "operator"))
    assert again.status_code == 409
    after = opened.get(f"{APPS}/{target['id']}", parent).json()
    assert after["checks"][failed] is True and "申诉" in after["reason"]
    notices = opened.get("/api/enrollment/notices", parent).json()
    assert {n["kind"] for n in notices} >= {"submitted", "appeal_filed", "appeal_upheld"}


def test_close_commit_draw_publish(opened: Scene) -> None:
    apps = _apply_all(opened)
    staff = opened.h("education")
    assert _step(opened, "draw").status_code == 409  # out of order
    assert _step(opened, "close", opened.parent(apps[0]["phone"])).status_code == 403
    assert _step(opened, "close").status_code == 200
    family = opened.families()[12]
    late = opened.post(APPS, {"child_id_number": family.child_id}, opened.parent(family.phone))
    assert late.status_code == 409 and "closed" in late.json()["title"]
    committed = _step(opened, "commit")
    assert committed.status_code == 200, committed.text
    draws = committed.json()["draws"]
    assert draws and all(len(d["seed_sha256"]) == 64 for d in draws.values())
    assert sum(d["children"] for d in draws.values()) == len(apps)
    drawn = _step(opened, "draw")
    assert drawn.status_code == 200, drawn.text
    # drawn but not published: the parents do not see a school yet
    first = opened.get(f"{APPS}/{apps[0]['id']}", opened.parent(apps[0]["phone"])).json()
    assert first["school_id"] is None and first["status"] in ("eligible", "not_eligible")
    assert _step(opened, "publish").status_code == 200
    seen = [opened.get(f"{APPS}/{a['id']}", opened.parent(a["phone"])).json() for a in apps]
    assert all(s["status"] in ("placed", "unplaced") for s in seen)
    assert any(s["school_id"] for s in seen)
    # every county's published draw re-runs to the same result
    for county, info in drawn.json()["draws"].items():
        report = draw.verify(opened.data / info["folder"], info["seed_sha256"])
        assert report.ok, (county, report.problems)
    notices = opened.get("/api/enrollment/notices", opened.parent(apps[0]["phone"])).json()
    assert notices[0]["kind"] == "result"
    assert _step(opened, "publish").status_code == 409
    figures = opened.get("/api/enrollment/stats", staff).json()
    assert figures["total"]["applications"] == len(apps)
    assert figures["total"]["placed"] + figures["total"]["unplaced"] == len(apps)
    assert figures["total"]["placed"] == sum(1 for s in seen if s["school_id"])
    rates = figures["total"]["criteria"]
    assert rates["hukou_in_county"]["asked"] == len(apps)
    assert all(0 <= r["rate"] <= 1 for r in rates.values())
    assert opened.get("/api/enrollment/stats", opened.parent(apps[0]["phone"])).status_code == 403


def test_a_commit_cut_short_resumes_with_the_seeds_it_kept(
    opened: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    _apply_all(opened)
    assert _step(opened, "close").status_code == 200
    real = draw.commit
    calls = {"n": 0}

    def fail_second(folder: Any, seed: str | None = None) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(folder, seed)

    monkeypatch.setattr(draw, "commit", fail_second)
    with pytest.raises(OSError):
        _step(opened, "commit")
    folders = (opened.data / "enrollment" / "draws" / SEASON).iterdir()
    first = next(p for p in folders if (p / draw.COMMITMENT).exists())
    kept = draw.read_commitment(first)["seed_sha256"]
    monkeypatch.setattr(draw, "commit", real)
    done = _step(opened, "commit")
    assert done.status_code == 200, done.text
    assert done.json()["draws"][first.name]["seed_sha256"] == kept
    assert _step(opened, "draw").status_code == 200
    report = draw.verify(first, kept)
    assert report.ok, report.problems
