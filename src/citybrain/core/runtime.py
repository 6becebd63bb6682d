"""Process settings of a serving node: the garbage collector's schedule."""

from __future__ import annotations

import gc

# allocations between two young collections (Python's default is 700): a batch of 1,000
# entities makes some 100,000 containers that live until its commit, and every young
# collection walked those made so far again (with the default, about a tenth of a batch
# upsert's CPU). 200,000 took 4 % less CPU again but no more entities a second, and a young
# collection then walks up to that many objects at once: a pause in the latency of others
YOUNG_THRESHOLD = 10_000
MIDDLE_THRESHOLD = 50
OLD_THRESHOLD = 100


def tune_gc() -> None:
    """Collect less often, and never walk what the node loaded at start (modules, caches).

    Objects alive now move to the permanent generation (gc.freeze): a full collection then
    walks only what the node made since. Reference counting still frees all of it that is
    not cyclic; only cyclic garbage made before the freeze would stay.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
