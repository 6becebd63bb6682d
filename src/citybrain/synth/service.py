"""Generate the synthetic province county by county into one folder per node."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from citybrain.core.errors import BadInput
from citybrain.geo import service as geo
from citybrain.geo.models import AdminUnit, Level
from citybrain.synth import figures as fig
from citybrain.synth.county import CountyPlan, Tables, generate_county
from citybrain.synth.medical import LABELS, CareOptions, consumable_tables
from citybrain.synth.models import FileRecord, SynthSummary
from citybrain.synth.province import catalogues

GENERATOR = "citybrain-synth/1"
PROVINCE = "370000"
Progress = Callable[[str, int, int], None]


def _largest_remainder(total: int, weights: list[float]) -> list[int]:
    """Split an integer total in proportion to weights, summing exactly to the total."""
    w = np.asarray(weights, dtype=float)
    raw = total * w / w.sum()
    base = np.floor(raw).astype(int)
    short = total - int(base.sum())
    order = np.argsort(-(raw - base), kind="stable")
    base[order[:short]] += 1
    return [int(x) for x in base]


def county_weight(county: AdminUnit) -> float:
    """Weight of a county when its city's population is split: area, denser in urban districts."""
    factor = fig.DISTRICT_DENSITY_FACTOR if county.name_zh.endswith("区") else 1.0
    return county.area_km2 * factor


FAR_KM = 250.0  # a city this far away cannot be reached within the hour of voucher lending


def _far_counties() -> dict[str, tuple[str, ...]]:
    """For each city, the counties of the cities at least FAR_KM away."""
    from citybrain.scenes.medical_insurance.rules import haversine_km

    cities = geo.list_units(Level.city)
    far: dict[str, tuple[str, ...]] = {}
    for a in cities:
        far[a.code] = tuple(
            c.code
            for b in cities
            if haversine_km(a.centroid_lon, a.centroid_lat, b.centroid_lon, b.centroid_lat)
            >= FAR_KM
            for c in geo.list_units(Level.county, b.code)
        )
    return far


def plan(
    *, scale: float, seed: int, cities: list[str] | None = None, care: CareOptions | None = None
) -> list[CountyPlan]:
    """Decide how many people each county gets and its independent seed."""
    populations = fig.city_populations()
    far = _far_counties() if care is not None else {}
    wanted = cities or sorted(populations)
    index = {c.code: i for i, c in enumerate(geo.list_units(Level.county))}
    plans: list[CountyPlan] = []
    for city in wanted:
        counties = geo.list_units(Level.county, city)
        city_people = int(round(populations[city] * scale))
        shares = _largest_remainder(city_people, [county_weight(c) for c in counties])
        for county, people in zip(counties, shares, strict=True):
            # the seed depends on the county alone, so --cities never changes a county's records
            entropy = np.random.SeedSequence([seed, int(county.code)]).generate_state(2)
            plans.append(
                CountyPlan(
                    county=county,
                    people=max(people, 1),
                    seed=int(entropy[0]) << 32 | int(entropy[1]),
                    county_index=index[county.code],
                    care=care,
                    far_counties=far.get(city, ()),
                )
            )
    return plans


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise BadInput(f"the output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise BadInput(f"the output folder {out} is not empty; pass --force to replace it")
        if not os.access(out, os.W_OK):
            raise BadInput(f"the output folder {out} is not writable")
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BadInput(f"cannot write to the output folder {out}: {exc.strerror}") from None


class _NodeWriter:
    """Parquet writers of one node, one per table, appended county by county as row groups."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.writers: dict[tuple[str, str], pq.ParquetWriter] = {}
        self.rows: dict[tuple[str, str], int] = {}

    def write(self, tables: Tables) -> None:
        for key, table in sorted(tables.items()):
            writer = self.writers.get(key)
            if writer is None:
                path = self.root / key[0] / f"{key[1]}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                writer = pq.ParquetWriter(path, table.schema, compression="zstd", version="2.6")
                self.writers[key] = writer
                self.rows[key] = 0
            writer.write_table(table.cast(writer.schema), row_group_size=1_000_000)
            self.rows[key] += table.num_rows

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


HOTLINE = ("bureau", "hotline_corpus")


def hotline_corpus(seed: int) -> pa.Table:
    """The labelled synthetic 12345 corpus (text, event type, phrasing) every node trains on."""
    from citybrain.events import corpus

    rows = corpus.generate(seed=seed, per_type=HOTLINE_PER_TYPE)
    return pa.table(
        {
            "text_id": pa.array([f"H{i:06d}" for i in range(len(rows))], pa.string()),
            "text": pa.array([r["text"] for r in rows], pa.string()),
            "event_type": pa.array([r["event_type"] for r in rows], pa.string()),
            "phrase": pa.array([r["phrase"] for r in rows], pa.int64()),
        }
    )


HOTLINE_PER_TYPE = 80


def _work(item: tuple[CountyPlan, list[str]]) -> Tables:
    return generate_county(item[0], item[1])


def _county_results(
    items: list[tuple[CountyPlan, list[str]]], workers: int
) -> Iterator[tuple[CountyPlan, Tables]]:
    """Yield each county's tables in plan order, with one county per worker in flight.

    Counties are independent, so they may be generated in parallel; yielding in plan order
    keeps the files independent of timing, and the bounded window keeps memory from growing
    with the number of counties waiting to be written.
    """
    if workers <= 1 or len(items) <= 1:
        for item in items:
            yield item[0], _work(item)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        window: deque[tuple[CountyPlan, Future[Tables]]] = deque()
        pending = iter(items)
        for item in pending:
            window.append((item[0], pool.submit(_work, item)))
            if len(window) >= workers:
                break
        while window:
            county_plan, future = window.popleft()
            nxt = next(pending, None)
            if nxt is not None:
                window.append((nxt[0], pool.submit(_work, nxt)))
            yield county_plan, future.result()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def generate(
    *,
    scale: float,
    seed: int,
    out: Path,
    force: bool = False,
    cities: list[str] | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    abuse_rates: dict[str, float] | None = None,
    care_share: float = 1.0,
) -> SynthSummary:
    """Generate the synthetic province into OUT/<node code>/<department>/<table>.parquet.

    A year of medical-insurance care is generated for `care_share` of the insured (0: none),
    with abuse injected at `abuse_rates`; its labels go to OUT/labels/<city>/.
    """
    if not (0 < scale <= 1):
        raise BadInput(f"--scale must be in (0, 1], got {scale}")
    if seed < 0:
        raise BadInput(f"--seed must not be negative, got {seed}")
    known = set(fig.city_populations())
    for city in cities or []:
        if city not in known:
            raise BadInput(f"{city} is not the code of a Shandong city")
    if not 0 <= care_share <= 1:
        raise BadInput(f"--care-share must be in [0, 1], got {care_share}")
    care = None
    if care_share > 0:
        care = CareOptions(catalogue_seed=seed, share=care_share)
        if abuse_rates is not None:
            care = CareOptions(catalogue_seed=seed, share=care_share, abuse_rates=abuse_rates)
    _check_out(out, force)
    plans = plan(scale=scale, seed=seed, cities=cities, care=care)
    all_counties = [c.code for c in geo.list_units(Level.county)]
    writers: dict[str, _NodeWriter] = {}
    province = _NodeWriter(out / PROVINCE)
    province.write(catalogues(seed) | consumable_tables() | {HOTLINE: hotline_corpus(seed)})
    province.close()
    n_workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    items = [(p, [c for c in all_counties if c != p.county.code]) for p in plans]
    residents = 0
    try:
        for done, (county_plan, tables) in enumerate(_county_results(items, n_workers), start=1):
            city = county_plan.county.parent or ""
            if city not in writers:
                writers[city] = _NodeWriter(out / city)
                # each city's 12345 centre trains its classifier on the labelled corpus
                writers[city].write({HOTLINE: hotline_corpus(seed)})
            writer = writers[city]
            # labels are kept apart from every node's data: OUT/labels/<city>/<table>.parquet
            labels = {(city, k[1]): t for k, t in tables.items() if k[0] == LABELS}
            if labels:
                writers.setdefault(LABELS, _NodeWriter(out / "labels")).write(labels)
            writer.write({k: t for k, t in tables.items() if k[0] != LABELS})
            residents += tables[("public_security", "residents")].num_rows
            del tables
            if progress:
                progress(county_plan.county.name_en, done, len(plans))
    finally:
        for writer in writers.values():
            writer.close()
    files = []
    for path in sorted(out.glob("*/*/*.parquet")):
        files.append(
            FileRecord(
                path=str(path.relative_to(out)),
                rows=pq.read_metadata(path).num_rows,
                sha256=_sha256(path),
            )
        )
    summary = SynthSummary(
        generator=GENERATOR, seed=seed, scale=scale, residents=residents, files=files
    )
    (out / "synth.json").write_text(
        json.dumps(summary.model_dump(), ensure_ascii=False, indent=1, sort_keys=True) + "\n",
        encoding="utf-8",
    )
    return summary


def read_table(path: Path) -> pa.Table:
    """Read one generated table (for tests and benchmarks)."""
    return pq.read_table(path)
