"""Record ids: the format, no repeats, and a forked child does not repeat its parent."""

from __future__ import annotations

import os

from citybrain.core.ids import record_id


def test_ids_have_the_prefix_and_20_hex_digits_and_do_not_repeat() -> None:
    ids = [record_id("S") for _ in range(100_000)]
    assert all(len(i) == 21 and i[0] == "S" and int(i[1:], 16) >= 0 for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its next id and leave at once
        os.write(write, record_id("X").encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert child != record_id("X")
