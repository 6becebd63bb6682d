"""Read CSV, JSON Lines and Parquet uploads into columns of text, noting rows that do not parse."""

from __future__ import annotations

import csv
import io
import json
from enum import StrEnum
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from citybrain.core.errors import BadInput
from citybrain.hub.tables.models import Rejection


class FileFormat(StrEnum):
    """Formats a table load accepts."""

    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


def guess_format(filename: str) -> FileFormat:
    """Infer the format from a file name's extension."""
    lower = filename.lower()
    for suffix, fmt in (
        (".csv", FileFormat.csv),
        (".jsonl", FileFormat.jsonl),
        (".ndjson", FileFormat.jsonl),
        (".parquet", FileFormat.parquet),
    ):
        if lower.endswith(suffix):
            return fmt
    raise BadInput(f"cannot tell the format of {filename!r}; use .csv, .jsonl or .parquet")


def read_source(
    data: bytes, fmt: FileFormat, columns: list[str]
) -> tuple[pa.Table, list[int], list[Rejection]]:
    """Return the rows as a table (text columns, except Parquet), their source lines, rejections."""
    if fmt is FileFormat.csv:
        return _read_csv(data, columns)
    if fmt is FileFormat.jsonl:
        return _read_jsonl(data, columns)
    return _read_parquet(data, columns)


def _check_header(found: list[str], columns: list[str]) -> None:
    missing = [c for c in columns if c not in found]
    extra = [c for c in found if c not in columns]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unknown column(s) {', '.join(extra)}")
        raise BadInput("the file does not match the table's schema: " + "; ".join(parts))


def _read_csv(data: bytes, columns: list[str]) -> tuple[pa.Table, list[int], list[Rejection]]:
    try:
        text = data.decode("utf-8-sig") if data else ""
    except UnicodeDecodeError as exc:
        raise BadInput(f"the CSV file is not UTF-8 ({exc.reason})") from None
    header_line = text.splitlines()[0] if text else ""
    if not header_line.strip():
        raise BadInput("the CSV file is empty or has no header row")
    names = [n.strip() for n in next(csv.reader([header_line]))]
    _check_header(names, columns)
    rejections: list[Rejection] = []
    body_lines = text.splitlines()[1:]
    claimed: set[int] = set()

    def invalid(row: Any) -> str:
        # ragged rows are reported and skipped; the rest of the file still loads
        if row.number is not None:
            line = row.number - 1
        else:
            # pyarrow may not know the line: find the first unclaimed line with this text
            line = next(
                (i + 1 for i, t in enumerate(body_lines) if t == row.text and i + 1 not in claimed),
                0,
            )
        claimed.add(line)
        rejections.append(
            Rejection(
                row=line,
                reason=f"expected {row.expected_columns} fields, found {row.actual_columns}",
            )
        )
        return "skip"

    try:
        table = pa_csv.read_csv(
            io.BytesIO(text.encode("utf-8")),
            read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pa_csv.ParseOptions(
                invalid_row_handler=invalid, newlines_in_values=False
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise BadInput(f"the CSV file cannot be parsed: {str(exc).splitlines()[0]}") from None
    # rows were numbered in file order; skipped ones leave gaps we can reconstruct
    skipped = sorted(r.row for r in rejections)
    lines: list[int] = []
    line = 1
    for _ in range(table.num_rows):
        while skipped and skipped[0] == line:
            skipped.pop(0)
            line += 1
        lines.append(line)
        line += 1
    return table.select(columns), lines, rejections


def _read_jsonl(data: bytes, columns: list[str]) -> tuple[pa.Table, list[int], list[Rejection]]:
    rejections: list[Rejection] = []
    values: dict[str, list[str | None]] = {c: [] for c in columns}
    lines: list[int] = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"the JSON Lines file is not UTF-8 ({exc.reason})") from None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            rejections.append(Rejection(row=number, reason=f"not JSON: {exc.msg}"))
            continue
        if not isinstance(obj, dict):
            rejections.append(Rejection(row=number, reason="a line must hold one JSON object"))
            continue
        extra = [k for k in obj if k not in values]
        if extra:
            rejections.append(Rejection(row=number, reason=f"unknown field(s) {', '.join(extra)}"))
            continue
        bad = [k for k, v in obj.items() if isinstance(v, (dict, list))]
        if bad:
            rejections.append(
                Rejection(row=number, reason=f"field(s) {', '.join(bad)} must be scalars")
            )
            continue
        for name in columns:
            value = obj.get(name)
            if isinstance(value, bool):
                values[name].append("true" if value else "false")
            else:
                values[name].append(None if value is None else str(value))
        lines.append(number)
    return pa.table({c: pa.array(values[c], pa.string()) for c in columns}), lines, rejections


def _read_parquet(data: bytes, columns: list[str]) -> tuple[pa.Table, list[int], list[Rejection]]:
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInput(f"the Parquet file cannot be read: {str(exc).splitlines()[0]}") from None
    _check_header(table.column_names, columns)
    return table.select(columns), list(range(1, table.num_rows + 1)), []
