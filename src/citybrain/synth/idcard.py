"""Resident ID numbers of GB 11643-1999: 6-digit region, birth date, sequence, check digit."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import numpy as np

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK = "10X98765432"
_SHAPE = re.compile(r"^\d{17}[\dX]$")


def check_digit(first17: str) -> str:
    """Return the check character for the first 17 digits."""
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError("the first part of an ID number is 17 digits")
    return CHECK[sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True)) % 11]


def is_valid_id_number(value: str) -> bool:
    """Return whether a string is an 18-character ID number with a real date and check digit."""
    if not isinstance(value, str) or not _SHAPE.match(value):
        return False
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    return check_digit(value[:17]) == value[17]


def id_numbers(
    region: np.ndarray[Any, Any], birth_ymd: np.ndarray[Any, Any], sequence: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """Build ID numbers for arrays of region codes, YYYYMMDD birth dates and 3-digit sequences."""
    body = (region.astype(np.int64) * 10**11 + birth_ymd.astype(np.int64) * 1000 + sequence).astype(
        np.int64
    )
    total = np.zeros(len(body), dtype=np.int64)
    rest = body.copy()
    for weight in reversed(WEIGHTS):  # the last digit pairs with the last weight
        total += (rest % 10) * weight
        rest //= 10
    checks = np.array(list(CHECK))[total % 11]
    return np.char.add(np.char.zfill(body.astype(str), 17), checks)
