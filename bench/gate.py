"""Gate overhead: 100,000 records read under a grant (masked, row-filtered) against the gate off.

A residents table of 200,000 rows in two counties; the Education Bureau's grant covers one
county and masks ID numbers, names and phones. The gated read pages through its 100,000
rows with the records service (10 pages of 10,000). The reference reads the same 100,000 rows
with the same function, the same filter expressed as a plain filter, and the gate replaced by
a pass-through (no decision, no masks, no audit record), in the same process and run.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report  # noqa: E402
from citybrain.core.db import create_engine_for, upgrade  # noqa: E402
from citybrain.governance import gate  # noqa: E402
from citybrain.governance.principal import Principal, Role  # noqa: E402
from citybrain.governance.sharing import service as sharing  # noqa: E402
from citybrain.governance.sharing.models import AccessRequestCreate  # noqa: E402
from citybrain.hub.tables import service as tables  # noqa: E402
from citybrain.hub.tables.files import FileFormat  # noqa: E402
from citybrain.hub.tables.models import TableSpec  # noqa: E402

ROWS = int(os.environ.get("CITYBRAIN_BENCH_GATE_ROWS", "200000"))
REPEAT = int(os.environ.get("CITYBRAIN_BENCH_REPEAT", "5"))
PAGE = 10_000
SPEC = TableSpec.model_validate(
    {
        "department": "public_security",
        "name": "residents",
        "primary_key": ["person_id"],
        "columns": [
            {"name": "person_id", "type": "string"},
            {"name": "id_number", "type": "string"},
            {"name": "name", "type": "string"},
            {"name": "phone", "type": "string"},
            {"name": "household_id", "type": "string"},
            {"name": "residence_county", "type": "string"},
        ],
    }
)
FIELDS = ["person_id", "id_number", "name", "phone", "household_id", "residence_county"]


def _table(rows: int) -> bytes:
    rng = np.random.default_rng(1)
    digits = rng.integers(0, 10_000, rows)
    surnames = np.array(list("王李张刘陈杨黄赵吴周"))
    given = np.array(list("伟芳娜敏静丽强磊军洋"))
    table = pa.table(
        {
            "person_id": [f"P{i:09d}" for i in range(rows)],
            "id_number": [f"370102199{i % 10}0101{d:04d}" for i, d in enumerate(digits)],
            "name": [
                s + g + g2
                for s, g, g2 in zip(
                    surnames[rng.integers(0, 10, rows)],
                    given[rng.integers(0, 10, rows)],
                    given[rng.integers(0, 10, rows)],
                    strict=True,
                )
            ],
            "phone": [f"138{d:04d}{i % 10000:04d}" for i, d in enumerate(digits)],
            "household_id": [f"H{i // 3:09d}" for i in range(rows)],
            "residence_county": np.where(np.arange(rows) % 2 == 0, "370102", "370103").tolist(),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _read_all(engine: Any, data_dir: Path, principal: Principal, filters: list[str] | None) -> int:
    count, after = 0, None
    while True:
        page = tables.read_records(
            engine=engine,
            data_dir=data_dir,
            principal=principal,
            department="public_security",
            name="residents",
            filters=filters,
            after=after,
            limit=PAGE,
        )
        count += len(page.records)
        after = page.next_after
        if not after:
            return count


class _GateOff:
    """Replace the gate with a pass-through for the reference read."""

    def __enter__(self) -> None:
        self.saved = (gate.authorize_read, gate.record_read)

        def allow(*, principal: Principal, dataset_id: str, **_: Any) -> gate.ReadDecision:
            return gate.ReadDecision(dataset_id, principal, "owner", None)

        gate.authorize_read = allow  # type: ignore[assignment]
        gate.record_read = lambda **_: None  # type: ignore[assignment]

    def __exit__(self, *_: object) -> None:
        gate.authorize_read, gate.record_read = self.saved  # type: ignore[assignment]


def main() -> None:
    """Build the table and the grant, then time both reads alternately."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("CITYBRAIN_BENCH_DIR")) as tmp:
        data = Path(tmp)
        engine = create_engine_for(f"sqlite:///{data / 'citybrain.db'}")
        upgrade(engine)
        tables.register_table(engine=engine, data_dir=data, spec=SPEC)
        tables.load_file(
            engine=engine,
            data_dir=data,
            department="public_security",
            name="residents",
            data=_table(ROWS),
            fmt=FileFormat.parquet,
            source="bench.parquet",
        )
        education = Principal(subject="bench", org="education", role=Role.steward, issuer="b")
        owner = Principal(subject="bench", org="public_security", role=Role.steward, issuer="b")
        bureau = Principal(subject="bench", org="bureau", role=Role.bureau_admin, issuer="b")
        request = sharing.create_request(
            engine=engine,
            data_dir=data,
            principal=education,
            body=AccessRequestCreate(
                dataset_id="public_security/residents",
                fields=FIELDS,
                row_scope={"residence_county": ["370102"]},
                purpose="enrollment",
                legal_basis="Compulsory Education Law, art. 12",
                duration_days=30,
            ),
        )
        sharing.approve(engine=engine, data_dir=data, principal=owner, request_id=request.id)
        sharing.approve(engine=engine, data_dir=data, principal=bureau, request_id=request.id)
        gated_s: list[float] = []
        off_s: list[float] = []
        rows = (0, 0)
        for _ in range(REPEAT):
            start = time.perf_counter()
            gated_rows = _read_all(engine, data, education, None)
            gated_s.append(time.perf_counter() - start)
            with _GateOff():
                start = time.perf_counter()
                off_rows = _read_all(engine, data, owner, ["residence_county==370102"])
                off_s.append(time.perf_counter() - start)
            rows = (gated_rows, off_rows)
        assert rows[0] == rows[1] == ROWS // 2, rows
        sample = tables.read_records(
            engine=engine,
            data_dir=data,
            principal=education,
            department="public_security",
            name="residents",
            limit=1,
        ).records[0]
        assert "*" in sample["id_number"], "the gated read masks"
    gated, off = statistics.median(gated_s), statistics.median(off_s)
    report(
        "gate",
        {
            "rows_read": rows[0],
            "pages": rows[0] // PAGE,
            "gated_read_s_median": round(gated, 3),
            "gated_rows_per_s": round(rows[0] / gated),
            "samples_gated_s": [round(s, 3) for s in gated_s],
            "target": "gated / gate off < 1.3",
        },
        {
            "gate_off_read_s_median": round(off, 3),
            "samples_gate_off_s": [round(s, 3) for s in off_s],
        },
        round(gated / off, 3),
    )


if __name__ == "__main__":
    main()
