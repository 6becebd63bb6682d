"""Trees from YAML, validated; values to scores by bands, scores to stars, weighted groups."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from citybrain.core.errors import BadInput, NotFound
from citybrain.decisions.indicators.models import (
    ROLLUP,
    Bands,
    Direction,
    Group,
    Item,
    Tree,
    UnitValue,
)

ROOT = "*"  # the item code under which a tree's overall score is stored
_TOLERANCE = 0.01


@dataclass(frozen=True)
class Node:
    """A group or item placed in its tree: level, parent and effective weight share (0-1)."""

    code: str
    level: int
    parent: str  # ROOT for level-1 groups
    share: float  # effective weight as a share of the parent (siblings sum to 1)
    group: Group | None = None
    item: Item | None = None


def _fail(tree: str, message: str) -> BadInput:
    return BadInput(f"indicator tree {tree}: {message}")


def _shares(tree: str, where: str, weights: list[float | None], expected: float) -> list[float]:
    """Fill unknown weights with equal shares of what is left; return shares summing to 1."""
    for w in weights:
        if w is not None and w < 0:
            raise _fail(tree, f"a weight under {where} is negative ({w})")
    declared = sum(w for w in weights if w is not None)
    unknown = sum(1 for w in weights if w is None)
    if unknown == 0:
        if abs(declared - expected) > _TOLERANCE and not (declared == 0 and expected == 0):
            raise _fail(tree, f"the weights under {where} sum to {declared:g}, not {expected:g}")
        total = declared
        filled = [float(w or 0.0) for w in weights]
    else:
        left = expected - declared
        if left <= _TOLERANCE:
            raise _fail(
                tree,
                f"the weights under {where} sum to {declared:g} and leave nothing of "
                f"{expected:g} for the {unknown} without a weight",
            )
        filled = [float(w) if w is not None else left / unknown for w in weights]
        total = expected
    if total <= 0:
        return [1.0 / len(weights)] * len(weights) if weights else []
    return [w / total for w in filled]


def check_bands(tree: str, item: Item) -> None:
    """Refuse bands out of order, scores outside 0-100, or scores against the direction."""
    if item.bands is None:
        return
    points = item.bands.points
    where = f"item {item.code}"
    if item.bands.kind == "linear" and len(points) < 2:
        raise _fail(tree, f"{where}: linear bands need at least two points")
    values = [p[0] for p in points]
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise _fail(tree, f"{where}: band values must be strictly ascending, got {values}")
    scores = [p[1] for p in points]
    if any(s < 0 or s > 100 for s in scores):
        raise _fail(tree, f"{where}: band scores must lie in 0-100, got {scores}")
    pairs = list(zip(scores, scores[1:], strict=False))
    if item.direction is Direction.higher_better and any(b < a for a, b in pairs):
        raise _fail(tree, f"{where} is higher_better but its band scores fall: {scores}")
    if item.direction is Direction.lower_better and any(b > a for a, b in pairs):
        raise _fail(tree, f"{where} is lower_better but its band scores rise: {scores}")


def walk(tree: Tree) -> Iterator[Node]:
    """Yield every group and item of a tree, parents first, with effective shares."""
    basis_total = tree.weight_basis == "total"

    def visit(parent: Group | None, level: int) -> Iterator[Node]:
        groups = tree.groups if parent is None else parent.groups
        items: list[Item] = [] if parent is None else parent.items
        where = "the tree" if parent is None else f"group {parent.code}"
        if groups and items:
            raise _fail(tree.id, f"{where} holds both groups and items; put items in a group")
        if groups:
            if basis_total:
                expected = 100.0 if parent is None else (parent.weight or 0.0)
                if parent is not None and parent.weight is None:
                    # the parent's own weight is unknown: its children share it equally
                    expected = (
                        100.0
                        if all(g.weight is None for g in groups)
                        else sum(g.weight or 0.0 for g in groups)
                    )
            else:
                expected = 100.0
            shares = _shares(tree.id, where, [g.weight for g in groups], expected)
            for g, share in zip(groups, shares, strict=True):
                yield Node(g.code, level, ROOT if parent is None else parent.code, share, group=g)
                yield from visit(g, level + 1)
        if items:
            assert parent is not None
            shares = _shares(tree.id, where, [i.weight for i in items], 100.0)
            for it, share in zip(items, shares, strict=True):
                yield Node(it.code, level, parent.code, share, item=it)

    yield from visit(None, 1)


def validate_tree(tree: Tree) -> dict[str, Node]:
    """Check codes, weights, bands, directions, roll-ups and stars; return nodes by code."""
    nodes: dict[str, Node] = {}
    for node in walk(tree):
        if node.code in nodes or node.code == ROOT:
            raise _fail(tree.id, f"the code {node.code} appears twice")
        if node.level > 3:
            raise _fail(
                tree.id, f"{node.code} is at level {node.level}; trees have two levels of groups"
            )
        nodes[node.code] = node
    for node in nodes.values():
        item = node.item
        if item is None:
            continue
        check_bands(tree.id, item)
        match = ROLLUP.match(item.rollup)
        if match is None:
            raise _fail(
                tree.id,
                f"item {item.code}: rollup is sum, mean or weighted_mean(ITEM), "
                f"not {item.rollup!r}",
            )
        weight_item = match.group(2)
        weight_node = nodes.get(weight_item) if weight_item is not None else None
        if weight_item is not None and (weight_node is None or weight_node.item is None):
            raise _fail(tree.id, f"item {item.code}: rollup weight {weight_item} is not an item")
        if item.target is not None and item.target <= 0:
            raise _fail(tree.id, f"item {item.code}: a target must be positive")
    mins = [s[0] for s in tree.stars]
    stars = [s[1] for s in tree.stars]
    if not tree.stars or any(b >= a for a, b in zip(mins, mins[1:], strict=False)):
        raise _fail(tree.id, "stars are (minimum score, stars) pairs, highest minimum first")
    if any(s < 1 or s > 5 for s in stars) or min(mins) > 0:
        raise _fail(tree.id, "stars run 1 to 5 and the last minimum must be 0 or less")
    return nodes


def parse_tree(data: Any, *, origin: str = "tree") -> Tree:
    """Validate a parsed YAML document as a tree; BadInput names what is wrong."""
    if not isinstance(data, dict):
        raise BadInput(f"{origin}: an indicator tree is a mapping")
    try:
        tree = Tree.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadInput(f"{origin}: {where}: {first['msg']}") from None
    validate_tree(tree)
    return tree


def load_tree_file(path: Path) -> Tree:
    """Read and validate one tree file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BadInput(f"{path.name}: not readable YAML ({str(exc).splitlines()[0]})") from None
    return parse_tree(data, origin=path.name)


@cache
def shipped_trees() -> dict[str, Tree]:
    """Return the trees shipped with CityBrain, by id."""
    out: dict[str, Tree] = {}
    folder = resources.files("citybrain.decisions.indicators").joinpath("trees")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            tree = parse_tree(yaml.safe_load(entry.read_text(encoding="utf-8")), origin=entry.name)
            out[tree.id] = tree
    return out


def get_tree(tree_id: str) -> Tree:
    """Return a shipped tree or NotFound."""
    trees = shipped_trees()
    if tree_id not in trees:
        raise NotFound(f"no indicator tree {tree_id!r}; trees: {', '.join(sorted(trees))}")
    return trees[tree_id]


def score_value(item: Item, value: float) -> tuple[float | None, dict[str, Any] | None]:
    """Return the score 0-100 of a value and the band segment it fell in (None: not scored)."""
    if item.bands is not None:
        return band_score(item.bands, value)
    if item.target is not None:
        if item.direction is Direction.higher_better:
            pct = value / item.target * 100
        else:
            pct = 100.0 if value <= 0 else item.target / value * 100
        score = max(0.0, min(100.0, pct))
        return score, {"rule": "share of target", "target": item.target, "pct_of_target": pct}
    return None, None


def band_score(bands: Bands, value: float) -> tuple[float, dict[str, Any]]:
    """Score a value by piecewise-linear points or threshold steps (clamped at the ends)."""
    points = bands.points
    if bands.kind == "thresholds":
        chosen = points[0]
        for point in points:
            if value >= point[0]:
                chosen = point
        return chosen[1], {"rule": "threshold", "from": chosen[0], "score": chosen[1]}
    if value <= points[0][0]:
        return points[0][1], {"rule": "linear", "segment": [list(points[0])], "clamped": "low"}
    if value >= points[-1][0]:
        return points[-1][1], {"rule": "linear", "segment": [list(points[-1])], "clamped": "high"}
    for (v0, s0), (v1, s1) in zip(points, points[1:], strict=False):
        if v0 <= value <= v1:
            score = s0 + (s1 - s0) * (value - v0) / (v1 - v0)
            return score, {"rule": "linear", "segment": [[v0, s0], [v1, s1]]}
    raise AssertionError("unreachable: points cover the value")  # pragma: no cover


def stars_of(tree: Tree, score: float | None) -> int | None:
    """Return the stars (1-5) of a score by the tree's rule."""
    if score is None:
        return None
    for minimum, stars in tree.stars:
        if score >= minimum:
            return stars
    return tree.stars[-1][1]


def weighted_score(children: list[tuple[float, float | None]]) -> tuple[float | None, float]:
    """Combine (share, score) pairs: the weighted mean over children with a score, and coverage.

    A child without a score (no data, failed) leaves the mean of the others, and the coverage
    (the share of the weight that had a score) says how much of the group was measured.
    """
    measured = [(w, s) for w, s in children if s is not None]
    weight = sum(w for w, _ in measured)
    if not measured or weight <= 0:
        return None, 0.0
    return sum(w * s for w, s in measured) / weight, weight


def combine(rollup: str, child_values: list[UnitValue]) -> float | None:
    """Combine children's values of an item by its roll-up rule; None when no child has one."""
    match = ROLLUP.match(rollup)
    if match is None:
        raise BadInput(f"unknown rollup {rollup!r}")
    known = [c for c in child_values if c.value is not None]
    if not known:
        return None
    if match.group(1) == "sum":
        return float(sum(c.value or 0.0 for c in known))
    if match.group(1) == "mean":
        return float(sum(c.value or 0.0 for c in known) / len(known))
    weighted = [c for c in known if c.weight is not None and c.weight > 0]
    total = sum(c.weight or 0.0 for c in weighted)
    if total <= 0:
        return None
    return float(sum((c.value or 0.0) * (c.weight or 0.0) for c in weighted) / total)
