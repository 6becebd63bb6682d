"""The sibling feed: frames one worker publishes are queued at the others before it goes on."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from citybrain.node.siblings import MAX_FRAME, SiblingFeed


def test_frames_arrive_in_order_once_published(tmp_path: Path) -> None:
    a = SiblingFeed(tmp_path, "paid", name=1)
    b = SiblingFeed(tmp_path, "paid", name=2)
    try:
        assert a.siblings() == [2] and b.siblings() == [1]
        for n in range(50):
            a.publish(b"frame %d" % n)
        # nothing waits: what publish queued is readable at once
        drained = b.drain()
        assert drained.frames == [b"frame %d" % n for n in range(50)]
        assert drained.lost is False
        assert b.drain().frames == []
        assert a.drain().frames == []  # a publisher does not hear itself
    finally:
        a.close()
        b.close()


def test_a_late_sibling_is_found_and_a_closed_one_is_a_possible_gap(tmp_path: Path) -> None:
    a = SiblingFeed(tmp_path, "paid", name=1)
    a.publish(b"nobody listens yet")
    b = SiblingFeed(tmp_path, "paid", name=2)
    a.publish(b"first")
    assert b.drain().frames == [b"first"]
    a.publish(b"last")
    a.close()
    drained = b.drain()
    assert drained.frames == [b"last"]
    # a closed connection may mean a full queue the publisher gave up on: do not trust memory
    assert drained.lost is True
    assert b.siblings() == []
    b.close()


def test_a_sibling_that_does_not_read_is_dropped_not_waited_for(tmp_path: Path) -> None:
    a = SiblingFeed(tmp_path, "paid", name=1)
    b = SiblingFeed(tmp_path, "paid", name=2)
    try:
        big = b"x" * 60_000
        for _ in range(400):  # far more than a kernel queue holds
            a.publish(big)
        drained = b.drain()
        assert drained.lost is True
        assert 0 < len(drained.frames) < 400
        assert all(f == big for f in drained.frames)
        # the next publish connects again; later frames arrive
        a.publish(b"again")
        assert b.drain().frames == [b"again"]
    finally:
        a.close()
        b.close()


def test_the_marker_of_a_dead_worker_is_removed(tmp_path: Path) -> None:
    a = SiblingFeed(tmp_path, "paid", name=1)
    try:
        (a.folder / "99999999").touch()
        assert a.siblings() == [99999999]
        a.publish(b"hello")
        assert not (a.folder / "99999999").exists()
        assert a.siblings() == []
    finally:
        a.close()


def test_a_frame_too_large_is_refused(tmp_path: Path) -> None:
    a = SiblingFeed(tmp_path, "paid", name=1)
    try:
        with pytest.raises(ValueError, match="at most"):
            a.publish(b"x" * (MAX_FRAME + 1))
    finally:
        a.close()


def _publish_and_exit(folder: str, ready: object, count: int) -> None:
    feed = SiblingFeed(Path(folder), "paid")
    ready.wait(10)  # type: ignore[attr-defined]
    for n in range(count):
        feed.publish(b"%d" % n)
    feed.close()


def test_another_process_publishes_under_its_pid(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    mine = SiblingFeed(tmp_path, "paid")
    try:
        child = ctx.Process(target=_publish_and_exit, args=(str(tmp_path), ready, 20))
        child.start()
        ready.set()
        child.join(30)
        assert child.exitcode == 0
        drained = mine.drain()
        assert drained.frames == [b"%d" % n for n in range(20)]
    finally:
        mine.close()
