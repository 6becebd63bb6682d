"""What a synthetic run produced."""

from __future__ import annotations

from pydantic import BaseModel


class FileRecord(BaseModel):
    """One Parquet file of the output."""

    path: str
    rows: int
    sha256: str


class SynthSummary(BaseModel):
    """The manifest written to OUT/synth.json: inputs, row counts and file hashes."""

    generator: str
    seed: int
    scale: float
    residents: int
    files: list[FileRecord]
