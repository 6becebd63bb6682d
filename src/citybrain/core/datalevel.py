"""Data levels of GB/T 43697-2024: core, important, and general levels 4 (highest) to 1."""

from __future__ import annotations

from enum import StrEnum


class DataLevel(StrEnum):
    """Classification level of a dataset, ordered from least to most protected."""

    general_1 = "general-1"
    general_2 = "general-2"
    general_3 = "general-3"
    general_4 = "general-4"
    important = "important"
    core = "core"

    @property
    def rank(self) -> int:
        """Return the position of this level; a higher rank needs more protection."""
        return list(DataLevel).index(self)
