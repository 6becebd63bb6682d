"""Masks for personal fields and keyed pseudonyms, in Python and as DuckDB SQL that agree.

ID-card numbers keep the first 6 and last 4 characters, phone numbers the first 3 and last
4, names keep the surname (the first character), addresses keep their first 6 characters.
A pseudonym is the first 16 hex digits of SHA-256 over a key derived per grant and the
value: joins work inside one grant and not across grants, and the value cannot be recovered.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from citybrain.governance.keys import node_key

MASK_CHAR = "*"


class MaskKind(StrEnum):
    """How a personal field is shown to someone who is not its owner."""

    none = "none"
    id_number = "id_number"
    phone = "phone"
    name = "name"
    address = "address"
    pseudonym = "pseudonym"
    hidden = "hidden"


# (characters kept at the start, characters kept at the end) of each partial mask
KEEP: dict[MaskKind, tuple[int, int]] = {
    MaskKind.id_number: (6, 4),
    MaskKind.phone: (3, 4),
    MaskKind.name: (1, 0),
    MaskKind.address: (6, 0),
}


def mask_text(kind: MaskKind, value: str) -> str:
    """Mask one string value; values too short to keep anything are masked whole."""
    if kind is MaskKind.none:
        return value
    if kind is MaskKind.hidden:
        return MASK_CHAR * 4
    head, tail = KEEP[kind]
    if len(value) <= head + tail:
        # keeping head+tail would show it all: show the head only when something is left hidden
        return value[:1] + MASK_CHAR * (len(value) - 1) if len(value) > 1 else MASK_CHAR
    return value[:head] + MASK_CHAR * (len(value) - head - tail) + value[len(value) - tail :]


def mask_sql(kind: MaskKind, column: str) -> str:
    """Return a DuckDB expression that masks a quoted column exactly as mask_text does."""
    if kind is MaskKind.none:
        return column
    if kind is MaskKind.hidden:
        return f"CASE WHEN {column} IS NULL THEN NULL ELSE '{MASK_CHAR * 4}' END"
    head, tail = KEEP[kind]
    value = f"CAST({column} AS VARCHAR)"
    n = f"length({value})"
    short = (
        f"CASE WHEN {n} > 1 THEN substr({value}, 1, 1) || repeat('{MASK_CHAR}', {n} - 1) "
        f"ELSE '{MASK_CHAR}' END"
    )
    tail_sql = f"substr({value}, {n} - {tail} + 1)" if tail else "''"
    kept = head + tail
    full = f"substr({value}, 1, {head}) || repeat('{MASK_CHAR}', {n} - {kept}) || {tail_sql}"
    return f"CASE WHEN {value} IS NULL THEN NULL WHEN {n} <= {kept} THEN {short} ELSE {full} END"


def pseudonym_key(data_dir: Path, grant_id: str) -> str:
    """Derive the pseudonym key of one grant from the node key (never stored)."""
    raw = node_key(data_dir).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return hmac.new(raw, b"pseudonym:" + grant_id.encode(), hashlib.sha256).hexdigest()


def pseudonymise(key: str, value: str) -> str:
    """Return the pseudonym of a value under a grant's key."""
    return hashlib.sha256(f"{key}|{value}".encode()).hexdigest()[:16]


def pseudonym_sql(key: str, column: str) -> str:
    """Return a DuckDB expression computing pseudonymise(key, column)."""
    # the key is hex, so it can sit in the SQL text without quoting issues
    value = f"CAST({column} AS VARCHAR)"
    digest = f"substr(sha256('{key}|' || {value}), 1, 16)"
    return f"CASE WHEN {column} IS NULL THEN NULL ELSE {digest} END"
