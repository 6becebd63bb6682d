"""Ids for records written at high rates: unique, not secret.

`uuid.uuid4` asks the kernel for randomness on every call, a system call that costs a
settlement more than its rules; these come from a generator seeded once from the kernel in
each process (and again in a forked child, which would otherwise repeat its parent's ids).
"""

from __future__ import annotations

import os
import random

_random = random.Random(os.urandom(32))


def _reseed() -> None:
    _random.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed)


def record_id(prefix: str) -> str:
    """Return prefix and 20 hex digits (80 random bits)."""
    return prefix + format(_random.getrandbits(80), "020x")
