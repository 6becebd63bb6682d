"""The verifiable lottery: a committed seed and one number per child derived from it.

Before the draw the county publishes sha256(seed) (the commitment); after the draw it reveals
the seed. A child's lottery number is the first 8 bytes of HMAC-SHA256(seed, child pseudonym)
read as an unsigned big-endian integer, so anyone holding the published inputs and the seed
recomputes every number, and nobody could have chosen the seed after seeing the applications
without changing its hash. Lower numbers win.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence

import numpy as np

from citybrain.core.errors import Conflict, Unprocessable
from citybrain.scenes.enrollment.models import U64

SEED_BYTES = 32
_SHA256_BLOCK = 64
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def new_seed() -> str:
    """A fresh secret seed, 32 random bytes as lowercase hex."""
    return secrets.token_hex(SEED_BYTES)


def check_seed(seed: str) -> bytes:
    """Refuse anything but 64 lowercase hex digits; return the seed's bytes."""
    if not isinstance(seed, str) or not _HEX64.match(seed):
        raise Unprocessable(
            "a lottery seed is 64 lowercase hex digits (32 bytes)",
            detail={"field": "seed", "reason": "not 64 lowercase hex digits"},
        )
    return bytes.fromhex(seed)


def commitment(seed: str) -> str:
    """The published commitment of a seed: sha256 of its hex text."""
    check_seed(seed)
    return hashlib.sha256(seed.encode("ascii")).hexdigest()


def check_reveal(seed: str, committed: str) -> None:
    """Refuse a revealed seed that does not match the commitment published before the draw."""
    if commitment(seed) != committed:
        raise Conflict(
            "the revealed seed does not match the commitment published before the draw "
            f"(sha256 of the seed is {commitment(seed)[:16]}..., committed {committed[:16]}...)",
            detail={"field": "seed", "reason": "sha256(seed) != commitment"},
        )


def lottery_number(seed: str, child: str) -> int:
    """One child's lottery number (lower wins)."""
    digest = hmac.digest(check_seed(seed), child.encode("utf-8"), "sha256")
    return int.from_bytes(digest[:8], "big")


def lottery_numbers(seed: str, children: Sequence[str]) -> U64:
    """Lottery numbers of many children, in their order."""
    key = check_seed(seed)
    # HMAC by its definition, H(K^opad || H(K^ipad || m)), from the two keyed states hashed
    # once: copying a state is cheaper than hmac.digest's key set-up for every child
    block = key.ljust(_SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block)).copy
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in block)).copy

    def first8(child: str) -> bytes:
        i = inner()
        i.update(child.encode("utf-8"))
        o = outer()
        o.update(i.digest())
        return o.digest()[:8]

    # 8 bytes per child, read at once as big-endian integers (no Python int per child)
    packed = b"".join(first8(child) for child in children)
    numbers: U64 = np.frombuffer(packed, dtype=">u8").astype(np.uint64)
    return numbers
