"""A year of medical-insurance care for one county: settlements with items, and injected abuse.

Vectorised over all insured persons of a county. Each person's events of the year (outpatient
visits, pharmacy purchases, at most one admission) are at least `MIN_GAP_DAYS` apart, so
clean care never looks like abuse by construction; abuse is then injected per pattern into
disjoint sets of persons at a configurable rate, and institution-level fraud is given to a
share of providers. Labels go to their own tables (written under OUT/labels/<city>/), never
next to what the detectors read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from citybrain.synth.province import _DRUG_STEMS, catalogues

Array = np.ndarray[Any, Any]
Tables = dict[tuple[str, str], pa.Table]
LABELS = "_labels"  # department key of label tables: the writer puts them under OUT/labels/

# the tables of the year of care the synth writes into each node's medical_security folder
CARE_TABLES = (
    "settlements",
    "settlement_items",
    "visits",
    "admissions",
    "prescriptions",
    "dispensing",
)
YEAR_START = date(2025, 9, 1)  # the year of care ends the day before the reference day
YEAR_DAYS = 365
BASE_S = (YEAR_START.toordinal() - date(1970, 1, 1).toordinal()) * 86400
MIN_GAP_DAYS = 12  # between a person's events: longer than any rule's short window
VISIT_S = 30 * 60
DAY = 86400
HOUR = 3600

PATTERNS = (
    "duplicate_charge",
    "over_price",
    "unbundled_charge",
    "restricted_item",
    "over_quantity",
    "repeated_dispensing",
    "split_admission",
    "bed_hanging",
    "time_conflict",
    "voucher_lending",
    "cash_out",
)


@dataclass(frozen=True)
class CareOptions:
    """What to generate: the catalogue seed, abuse rates per pattern, provider fraud share."""

    catalogue_seed: int
    abuse_rates: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PATTERNS, 0.01))
    fraud_share: float = 0.08
    share: float = 1.0  # share of insured persons whose year of care is generated

    def rate(self, pattern: str) -> float:
        """The abuse rate of one pattern (share of eligible persons)."""
        return self.abuse_rates.get(pattern, 0.0)


def parse_rates(text: str) -> dict[str, float]:
    """Read `0.01` (every pattern) or `over_price=0.02,cash_out=0.005` (others 0.01)."""
    text = text.strip()
    try:
        if "=" not in text:
            value = float(text)
            rates = dict.fromkeys(PATTERNS, value)
        else:
            rates = dict.fromkeys(PATTERNS, 0.01)
            for part in text.split(","):
                name, _, raw = part.partition("=")
                name = name.strip()
                if name not in PATTERNS:
                    raise ValueError(f"unknown pattern {name!r}; known: {', '.join(PATTERNS)}")
                rates[name] = float(raw)
    except ValueError as exc:
        raise ValueError(f"bad abuse rate {text!r}: {exc}") from None
    for name, value in rates.items():
        if not 0 <= value <= 0.05:
            raise ValueError(f"abuse rate of {name} must be in [0, 0.05], got {value}")
    return rates


# --- diagnoses and the catalogue -----------------------------------------------------------

# (ICD-10, stems of _DRUG_STEMS prescribed, sex (0 any, 1 men, 2 women), min age, max age, weight)
OUTPATIENT_DX: list[tuple[str, list[int], int, int, int, float]] = [
    ("J06.9", [0, 2, 13, 8], 0, 13, 130, 20.0),
    ("J06.9", [23, 0, 13, 12], 0, 0, 12, 30.0),
    ("J20.9", [10, 8, 22, 1], 0, 0, 130, 8.0),
    ("I10", [4, 6, 17, 5], 0, 35, 130, 18.0),
    ("E11.9", [3, 9, 15, 5], 0, 35, 130, 10.0),
    ("K29.7", [7, 16, 12, 15], 0, 13, 130, 8.0),
    ("M54.5", [2, 15, 14, 8], 0, 18, 130, 7.0),
    ("I25.1", [11, 14, 5, 6], 0, 45, 130, 6.0),
    ("N40", [20, 21, 4, 2], 1, 45, 130, 4.0),
    ("N76.0", [0, 1, 10, 12], 2, 16, 130, 4.0),
    ("O26.9", [19, 15, 12, 7], 2, 20, 40, 3.0),
    ("N18.5", [9, 3, 6, 15], 0, 30, 130, 0.8),
]
INPATIENT_DX: list[tuple[str, list[int], int, int, int, float]] = [
    ("K35.8", [1, 10, 2, 7], 0, 5, 130, 10.0),
    ("I63.9", [11, 14, 5, 6], 0, 45, 130, 20.0),
    ("J18.9", [1, 10, 0, 8], 0, 0, 130, 30.0),
    ("I25.1", [11, 5, 14, 4], 0, 45, 130, 20.0),
    ("E11.9", [9, 3, 15, 5], 0, 35, 130, 10.0),
]
CONSULT_HOSPITAL = "FW00001"
CONSULT_CLINIC = "FW00000"
BED, NURSING, INFUSION = "FW00002", "FW00003", "FW00012"
TESTS = ["FW00004", "FW00005", "FW00006", "FW00007"]
PSA, GYN, PRENATAL = "FW00008", "FW00009", "FW00010"
DIALYSIS, APPENDECTOMY = "FW00014", "FW00015"
INFUSION_SET = "HC0005"

_CONSUMABLES = [
    ("HC0001", "一次性手术包", "包", 80.0),
    ("HC0002", "可吸收缝合线", "根", 45.0),
    ("HC0003", "透析器", "个", 120.0),
    ("HC0004", "血液透析管路", "套", 60.0),
    ("HC0005", "一次性输液器", "套", 3.5),
    ("HC0006", "一次性注射器", "支", 1.2),
    ("HC0007", "医用棉签", "包", 2.0),
    ("HC0008", "留置针", "支", 12.0),
]
# packages whose price includes these consumables (charging them apart is unbundling)
BUNDLES = {APPENDECTOMY: ["HC0001", "HC0002"], DIALYSIS: ["HC0003", "HC0004"]}


def consumable_tables() -> Tables:
    """The consumables catalogue and the packages with the items their price includes."""
    consumables = pa.table(
        {
            "code": pa.array([c[0] for c in _CONSUMABLES], pa.string()),
            "name": pa.array([c[1] for c in _CONSUMABLES], pa.string()),
            "unit": pa.array([c[2] for c in _CONSUMABLES], pa.string()),
            "standard_price": pa.array([c[3] for c in _CONSUMABLES], pa.float64()),
            "category": pa.array(["乙"] * len(_CONSUMABLES), pa.string()),
            "gender": pa.array([None] * len(_CONSUMABLES), pa.string()),
            "max_age": pa.array([None] * len(_CONSUMABLES), pa.int32()),
        }
    )
    pairs = [(p, c) for p, cs in sorted(BUNDLES.items()) for c in cs]
    bundles = pa.table(
        {
            "package_code": pa.array([p for p, _ in pairs], pa.string()),
            "component_code": pa.array([c for _, c in pairs], pa.string()),
        }
    )
    return {
        ("medical_security", "consumable_catalogue"): consumables,
        ("medical_security", "service_bundles"): bundles,
    }


@dataclass(frozen=True)
class _Catalogue:
    codes: Array  # every code, drugs then services then consumables
    kind: Array  # 0 drug, 1 service, 2 consumable
    price: Array
    max_q: Array  # 0 when no limit
    index: dict[str, int]


@lru_cache(maxsize=4)
def _catalogue(seed: int) -> _Catalogue:
    tables = catalogues(seed)
    drugs = tables[("medical_security", "drug_catalogue")]
    services = tables[("medical_security", "service_catalogue")]
    cons = consumable_tables()[("medical_security", "consumable_catalogue")]
    codes = drugs["code"].to_pylist() + services["code"].to_pylist() + cons["code"].to_pylist()
    kind = [0] * drugs.num_rows + [1] * services.num_rows + [2] * cons.num_rows
    price = (
        drugs["standard_price"].to_pylist()
        + services["standard_price"].to_pylist()
        + cons["standard_price"].to_pylist()
    )
    max_q = [int(q) for q in drugs["max_quantity_per_visit"].to_pylist()] + [0] * (
        services.num_rows + cons.num_rows
    )
    return _Catalogue(
        codes=np.asarray(codes, dtype=object),
        kind=np.asarray(kind, dtype=np.int8),
        price=np.asarray(price, dtype=float),
        max_q=np.asarray(max_q, dtype=np.int64),
        index={c: i for i, c in enumerate(codes)},
    )


def _drug(stem: Array, pack: Array) -> Array:
    """Catalogue index of a drug: two packages per stem, drugs first."""
    result: Array = stem * 2 + pack
    return result


# --- events and lines ----------------------------------------------------------------------


@dataclass
class _Care:
    """Column arrays of events (one per settlement) and lines (one per item)."""

    person: Array
    inst: Array  # index into the institution arrays
    kind: Array  # 0 outpatient, 1 inpatient, 2 pharmacy
    start: Array  # seconds since 1970, local time
    end: Array
    dx: Array  # diagnosis code (object)
    county: Array  # county code of the institution (object)
    l_ev: Array
    l_code: Array  # catalogue index
    l_qty: Array
    l_price: Array
    l_day: Array  # service date as seconds at local midnight
    labels: list[tuple[int, str]] = field(default_factory=list)
    # additions wait here and join the arrays once (appending one by one would be quadratic)
    _events: list[dict[str, Array]] = field(default_factory=list)
    _lines: list[tuple[Array, Array, Array, Array, Array]] = field(default_factory=list)
    _count: int = -1

    def add_events(self, **cols: Array) -> Array:
        """Append events (joined at `flush`) and return their indices."""
        if self._count < 0:
            self._count = len(self.person)
        first = self._count
        self._count += len(cols["person"])
        self._events.append(cols)
        return np.arange(first, self._count)

    def add_lines(self, ev: Array, code: Array, qty: Array, price: Array, day: Array) -> None:
        """Append item lines (joined at `flush`)."""
        self._lines.append((ev, code, qty, price, day))

    def flush(self) -> None:
        """Join the waiting events and lines to the arrays."""
        if self._events:
            for name in self._events[0]:
                parts = [getattr(self, name)] + [e[name] for e in self._events]
                setattr(self, name, np.concatenate(parts))
        if self._lines:
            cols = list(zip(*self._lines, strict=True))
            self.l_ev = np.concatenate([self.l_ev, *cols[0]])
            self.l_code = np.concatenate([self.l_code, *cols[1]])
            self.l_qty = np.concatenate([self.l_qty, *cols[2]])
            self.l_price = np.concatenate([self.l_price, *cols[3]])
            self.l_day = np.concatenate([self.l_day, *cols[4]])
        self._events, self._lines, self._count = [], [], -1


@dataclass(frozen=True)
class Institutions:
    """The county's designated institutions as arrays (plus remote ones appended on use)."""

    ids: Array
    kind: Array  # object: hospital/clinic/pharmacy
    grade: Array
    county: Array

    @staticmethod
    def of(table: pa.Table) -> Institutions:
        """From the designated_institutions table."""
        return Institutions(
            ids=np.asarray(table["institution_id"].to_pylist(), dtype=object),
            kind=np.asarray(table["kind"].to_pylist(), dtype=object),
            grade=np.asarray(table["grade"].to_pylist(), dtype=object),
            county=np.asarray(table["county_code"].to_pylist(), dtype=object),
        )


def _pick_dx(
    rng: np.random.Generator,
    table: list[tuple[str, list[int], int, int, int, float]],
    male: Array,
    age: Array,
) -> Array:
    """Draw a diagnosis row for each event among those fitting the person's sex and age."""
    sex_ok = np.stack(
        [
            (s == 0) | ((s == 1) & (male == 1)) | ((s == 2) & (male == 0))
            for _, _, s, _, _, _ in table
        ],
        axis=1,
    )
    age_ok = np.stack([(age >= lo) & (age <= hi) for _, _, _, lo, hi, _ in table], axis=1)
    w = np.asarray([r[5] for r in table])[None, :] * (sex_ok & age_ok)
    w[w.sum(axis=1) == 0, 0] = 1.0  # nobody is left without a diagnosis
    cum = np.cumsum(w, axis=1)
    u = rng.random(len(male)) * cum[:, -1]
    picked: Array = (cum < u[:, None]).sum(axis=1)
    return picked


def _event_days(rng: np.random.Generator, counts: Array) -> tuple[Array, Array]:
    """Days of each person's events, sorted and at least MIN_GAP_DAYS apart."""
    person = np.repeat(np.arange(len(counts)), counts)
    span = YEAR_DAYS - (counts[person] - 1) * MIN_GAP_DAYS
    u = rng.random(len(person)) * span
    order = np.lexsort((u, person))
    person, u = person[order], u[order]
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rank = np.arange(len(person)) - np.repeat(starts, counts)
    return person, (np.floor(u) + rank * MIN_GAP_DAYS).astype(np.int64)


def care_year(
    rng: np.random.Generator,
    *,
    county: str,
    person_ids: Array,
    male: Array,
    age: Array,
    institutions: Institutions,
    same_city_counties: list[str],
    far_counties: list[str],
    options: CareOptions,
) -> Tables:
    """Settlements, items, visits, admissions, prescriptions and dispensing, and labels."""
    cat = _catalogue(options.catalogue_seed)
    n = len(person_ids)
    hosp = np.flatnonzero(institutions.kind == "hospital")
    clin = np.flatnonzero(institutions.kind == "clinic")
    pharm = np.flatnonzero(institutions.kind == "pharmacy")
    fraud = rng.random(len(institutions.ids)) < options.fraud_share
    # visits grow with age and for small children; about 5.4 settlements a person-year
    old = age >= 65
    outpatient = rng.poisson(np.where(old, 4.5, np.where(age <= 6, 3.5, 2.4)))
    pharmacy = rng.poisson(np.where(old, 3.0, 1.6))
    admitted = rng.random(n) < np.where(old, 0.30, np.where(age <= 6, 0.12, 0.10))
    counts = np.minimum(outpatient + pharmacy + admitted, 24)
    person, day = _event_days(rng, counts)
    m = len(person)
    is_pharm = rng.random(m) < (pharmacy / np.maximum(outpatient + pharmacy, 1))[person]
    kind = np.where(is_pharm, 2, 0)
    # one event of an admitted person becomes the admission
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    adm_person = np.flatnonzero(admitted & (counts > 0))
    adm_event = starts[adm_person] + rng.integers(0, counts[adm_person])
    kind[adm_event] = 1
    kind[(kind == 1) & (day >= YEAR_DAYS - 1)] = 0  # no admission on the year's last day
    # institutions: hospitals weighted by grade, clinics, pharmacies
    hw = np.asarray([{"三级": 4.0, "二级": 2.0}.get(g, 1.0) for g in institutions.grade[hosp]])
    # every county has hospitals, clinics and pharmacies (see county._institutions)
    inst = np.where(
        kind == 2,
        pharm[rng.integers(0, len(pharm), m)],
        np.where(
            (kind == 1) | (rng.random(m) < 0.55),
            hosp[rng.choice(len(hosp), size=m, p=hw / hw.sum())],
            clin[rng.integers(0, len(clin), m)],
        ),
    )
    los = rng.integers(3, 9, m) + np.where(fraud[inst], 2, 0)
    los = np.maximum(1, np.minimum(los, YEAR_DAYS - 1 - day))
    minute = rng.integers(8 * 60, 16 * 60 + 30, m)
    start = BASE_S + day * DAY + minute * 60
    end = np.where(
        kind == 1, BASE_S + (day + los) * DAY + rng.integers(9, 11, m) * HOUR, start + VISIT_S
    )
    pmale, page = male[person], age[person]
    out_dx = _pick_dx(rng, OUTPATIENT_DX, pmale, page)
    in_dx = _pick_dx(rng, INPATIENT_DX, pmale, page)
    dx_code = np.where(
        kind == 1,
        np.asarray([r[0] for r in INPATIENT_DX], dtype=object)[in_dx],
        np.asarray([r[0] for r in OUTPATIENT_DX], dtype=object)[out_dx],
    )
    care = _Care(
        person=person,
        inst=inst.astype(np.int64),
        kind=kind,
        start=start,
        end=end,
        dx=dx_code,
        county=institutions.county[inst],
        l_ev=np.zeros(0, np.int64),
        l_code=np.zeros(0, np.int64),
        l_qty=np.zeros(0, float),
        l_price=np.zeros(0, float),
        l_day=np.zeros(0, np.int64),
    )
    _outpatient_lines(rng, care, cat, np.flatnonzero(kind != 1), out_dx, institutions)
    _inpatient_lines(rng, care, cat, np.flatnonzero(kind == 1), in_dx, day, los)
    care.flush()
    # provider fraud: prices close to the standard and one more test where there is room
    _price(rng, care, cat, fraud)
    inst_tables = _Ctx(institutions, same_city_counties, far_counties, county)
    _inject(rng, care, cat, options, inst_tables, male, age, hosp, clin, pharm)
    care.flush()
    return _tables(care, cat, person_ids, male, age, inst_tables, fraud)


def _outpatient_lines(
    rng: np.random.Generator,
    care: _Care,
    cat: _Catalogue,
    ev: Array,
    dx: Array,
    inst: Institutions,
) -> None:
    """Consultation, tests, special services and one to three drugs per visit or purchase."""
    d = dx[ev]
    k = care.kind[ev]
    visit = k == 0
    hospital = inst.kind[care.inst[ev]] == "hospital"
    consult = np.where(hospital, cat.index[CONSULT_HOSPITAL], cat.index[CONSULT_CLINIC])
    codes = [consult[visit]]
    evs = [ev[visit]]
    fraud_extra = rng.random(len(ev))
    test = rng.integers(0, 4, len(ev))
    has_test = visit & (rng.random(len(ev)) < np.where(hospital, 0.35, 0.1))
    test_idx = np.asarray([cat.index[t] for t in TESTS])
    codes.append(test_idx[test[has_test]])
    evs.append(ev[has_test])
    # a second, different test at some visits (fraudulent providers add it more often)
    second = visit & (fraud_extra < 0.05)
    codes.append(test_idx[(test[second] + 1 + rng.integers(0, 3, int(second.sum()))) % 4])
    evs.append(ev[second])
    specials = {
        "N40": (PSA, 0.3),
        "N76.0": (GYN, 1.0),
        "O26.9": (PRENATAL, 1.0),
        "N18.5": (DIALYSIS, 1.0),
    }
    dx_codes = np.asarray([r[0] for r in OUTPATIENT_DX], dtype=object)[d]
    for dx_name, (service, p) in specials.items():
        sel = visit & (dx_codes == dx_name) & (rng.random(len(ev)) < p)
        codes.append(np.full(int(sel.sum()), cat.index[service]))
        evs.append(ev[sel])
    infuse = visit & np.isin(dx_codes, ["J06.9", "J20.9"]) & (rng.random(len(ev)) < 0.1)
    codes += [
        np.full(int(infuse.sum()), cat.index[INFUSION]),
        np.full(int(infuse.sum()), cat.index[INFUSION_SET]),
    ]
    evs += [ev[infuse], ev[infuse]]
    stems = np.asarray([r[1] for r in OUTPATIENT_DX])[d]  # (events, 4)
    n_drugs = np.where(
        k == 2,
        rng.integers(1, 3, len(ev)),
        rng.choice([0, 1, 2, 3], len(ev), p=[0.1, 0.35, 0.35, 0.2]),
    )
    offset = rng.integers(0, 4, len(ev))
    for j in range(3):
        sel = n_drugs > j
        stem = stems[sel, (offset[sel] + j) % 4]
        codes.append(_drug(stem, rng.integers(0, 2, int(sel.sum()))))
        evs.append(ev[sel])
    code = np.concatenate(codes).astype(np.int64)
    lev = np.concatenate(evs).astype(np.int64)
    qty = np.ones(len(code))
    drug = cat.kind[code] == 0
    limit = cat.max_q[code[drug]]
    qty[drug] = np.maximum(1, (limit * rng.uniform(0.15, 0.8, int(drug.sum()))).astype(np.int64))
    day = (care.start[lev] - BASE_S) // DAY * DAY + BASE_S
    care.add_lines(lev, code, qty, np.zeros(len(code)), day)


def _inpatient_lines(
    rng: np.random.Generator,
    care: _Care,
    cat: _Catalogue,
    ev: Array,
    dx: Array,
    day: Array,
    los: Array,
) -> None:
    """Every inpatient day: bed, nursing, drugs and sometimes an infusion; tests and surgery."""
    days = los[ev]
    lev = np.repeat(ev, days)
    first = np.r_[0, np.cumsum(days)[:-1]]
    j = np.arange(len(lev)) - np.repeat(first, days)
    date_s = BASE_S + (day[lev] + j) * DAY
    stems = np.asarray([r[1] for r in INPATIENT_DX])[dx[lev]]
    off = rng.integers(0, 4, len(lev))
    parts: list[tuple[Array, Array, Array, Array]] = []

    def add(sel: Array, code: Array, qty: Array) -> None:
        parts.append((lev[sel], code, qty, date_s[sel]))

    everyone = np.ones(len(lev), dtype=bool)
    add(everyone, np.full(len(lev), cat.index[BED]), np.ones(len(lev)))
    add(everyone, np.full(len(lev), cat.index[NURSING]), np.ones(len(lev)))
    rows = np.arange(len(lev))
    add(
        everyone,
        _drug(stems[rows, off % 4], np.zeros(len(lev), np.int64)),
        rng.integers(1, 4, len(lev)).astype(float),
    )
    two = rng.random(len(lev)) < 0.5
    add(
        two,
        _drug(stems[rows[two], (off[two] + 1) % 4], np.zeros(int(two.sum()), np.int64)),
        rng.integers(1, 4, int(two.sum())).astype(float),
    )
    inf = rng.random(len(lev)) < 0.5
    add(inf, np.full(int(inf.sum()), cat.index[INFUSION]), np.ones(int(inf.sum())))
    add(inf, np.full(int(inf.sum()), cat.index[INFUSION_SET]), np.ones(int(inf.sum())))
    first_day = j == 0
    add(
        first_day, np.full(int(first_day.sum()), cat.index[TESTS[0]]), np.ones(int(first_day.sum()))
    )
    add(
        first_day, np.full(int(first_day.sum()), cat.index[TESTS[2]]), np.ones(int(first_day.sum()))
    )
    dx_codes = np.asarray([r[0] for r in INPATIENT_DX], dtype=object)[dx[lev]]
    surgery = (dx_codes == "K35.8") & (j == np.minimum(1, days[np.searchsorted(ev, lev)] - 1))
    add(surgery, np.full(int(surgery.sum()), cat.index[APPENDECTOMY]), np.ones(int(surgery.sum())))
    care.add_lines(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]).astype(np.int64),
        np.concatenate([p[2] for p in parts]),
        np.zeros(sum(len(p[0]) for p in parts)),
        np.concatenate([p[3] for p in parts]),
    )


def _price(rng: np.random.Generator, care: _Care, cat: _Catalogue, fraud: Array) -> None:
    """Unit prices at or below the standard; fraudulent providers charge close to it."""
    f = fraud[care.inst[care.l_ev]]
    factor = np.where(f, rng.uniform(0.97, 1.0, len(f)), rng.uniform(0.82, 0.97, len(f)))
    care.l_price = np.round(cat.price[care.l_code] * factor, 2)
    # fraudulent providers also push drug quantities towards the limit
    drug = (cat.kind[care.l_code] == 0) & f & (care.kind[care.l_ev] != 1)
    care.l_qty[drug] = np.maximum(care.l_qty[drug], np.floor(cat.max_q[care.l_code[drug]] * 0.9))


@dataclass
class _Ctx:
    inst: Institutions
    same_city: list[str]
    far: list[str]
    county: str


def _remote(ctx: _Ctx, care: _Care, county: str, kind: str) -> int:
    """Index of an institution of another county (its first clinic or pharmacy), appended."""
    letter = {"clinic": "C", "pharmacy": "D"}[kind]
    ident = f"M{county}{letter}00000"
    hits = np.flatnonzero(ctx.inst.ids == ident)
    if len(hits):
        return int(hits[0])
    ctx.inst = Institutions(
        ids=np.append(ctx.inst.ids, ident),
        kind=np.append(ctx.inst.kind, kind),
        grade=np.append(ctx.inst.grade, "未定级"),
        county=np.append(ctx.inst.county, county),
    )
    return len(ctx.inst.ids) - 1


def _inject(
    rng: np.random.Generator,
    care: _Care,
    cat: _Catalogue,
    options: CareOptions,
    ctx: _Ctx,
    male: Array,
    age: Array,
    hosp: Array,
    clin: Array,
    pharm: Array,
) -> None:
    """Inject each pattern into its own persons; labels name the settlement to be caught."""
    n = len(male)
    used = np.zeros(n, dtype=bool)
    admitted = np.zeros(n, dtype=bool)
    admitted[care.person[care.kind == 1]] = True
    order = np.argsort(care.l_ev, kind="stable")
    l_first = np.searchsorted(care.l_ev[order], np.arange(len(care.person)))
    l_last = np.searchsorted(care.l_ev[order], np.arange(len(care.person)), side="right")

    def lines_of(e: int) -> Array:
        return order[l_first[e] : l_last[e]]

    def choose(pattern: str, events: Array) -> Array:
        """One event per chosen person among the eligible events, persons not used before."""
        rate = options.rate(pattern)
        if rate <= 0 or len(events) == 0:
            return np.zeros(0, np.int64)
        events = events[~used[care.person[events]]]
        people, first = np.unique(care.person[events], return_index=True)
        pick = rng.random(len(people)) < rate
        chosen = events[first[pick]]
        used[care.person[chosen]] = True
        return chosen

    n_ev = len(care.person)
    # duplicate charging: a service line charged twice, in the settlement or in a new one
    for e in choose("duplicate_charge", np.flatnonzero(care.kind[:n_ev] == 0)).tolist():
        line = int(lines_of(e)[0])
        if rng.random() < 0.5:
            care.add_lines(*_copy_line(care, line))
            care.labels.append((e, "duplicate_charge"))
        else:
            new = care.add_events(
                person=care.person[[e]],
                inst=care.inst[[e]],
                kind=np.asarray([0]),
                start=care.start[[e]] + HOUR,
                end=care.start[[e]] + HOUR + VISIT_S,
                dx=care.dx[[e]],
                county=care.county[[e]],
            )
            ev, code, qty, price, day = _copy_line(care, line)
            care.add_lines(new, code, qty, price, day)
            care.labels.append((int(new[0]), "duplicate_charge"))
    # above the standard price
    for e in choose("over_price", np.flatnonzero(care.kind[:n_ev] != 1)).tolist():
        line = int(lines_of(e)[-1])
        care.l_price[line] = round(float(cat.price[care.l_code[line]] * rng.uniform(1.2, 2.0)), 2)
        care.labels.append((e, "over_price"))
    # unbundling: the package's consumables charged apart
    pkg_idx = {cat.index[p]: [cat.index[c] for c in cs] for p, cs in BUNDLES.items()}
    has_pkg = np.unique(care.l_ev[np.isin(care.l_code, list(pkg_idx))])
    for e in choose("unbundled_charge", has_pkg).tolist():
        lines = lines_of(e)
        pkg_line = int(lines[np.isin(care.l_code[lines], list(pkg_idx))][0])
        comps = pkg_idx[int(care.l_code[pkg_line])]
        k = 1 + int(rng.integers(0, len(comps)))
        comp = np.asarray(comps[:k], np.int64)
        care.add_lines(
            np.full(k, e),
            comp,
            np.ones(k),
            np.round(cat.price[comp] * 0.95, 2),
            np.full(k, care.l_day[pkg_line]),
        )
        care.labels.append((e, "unbundled_charge"))
    # items restricted by sex or age
    psa, gyn = cat.index[PSA], cat.index[GYN]
    child_drug = int(_drug(np.asarray([23]), np.asarray([0]))[0])
    for e in choose("restricted_item", np.flatnonzero(care.kind[:n_ev] == 0)).tolist():
        p = care.person[e]
        rcode = (gyn if male[p] else psa) if (age[p] <= 12 or rng.random() < 0.6) else child_drug
        line = int(lines_of(e)[0])
        rqty = 1.0 if cat.kind[rcode] else 6.0
        care.add_lines(
            np.asarray([e]),
            np.asarray([rcode]),
            np.asarray([rqty]),
            np.asarray([round(float(cat.price[rcode]) * 0.9, 2)]),
            care.l_day[[line]],
        )
        care.labels.append((e, "restricted_item"))
    # over-quantity: a drug line above its limit per visit
    drug_ev = np.unique(care.l_ev[(cat.kind[care.l_code] == 0) & (care.kind != 1)[care.l_ev]])
    for e in choose("over_quantity", drug_ev).tolist():
        lines = lines_of(e)
        line = int(lines[cat.kind[care.l_code[lines]] == 0][0])
        care.l_qty[line] = float(np.ceil(cat.max_q[care.l_code[line]] * rng.uniform(1.5, 3.0)))
        care.labels.append((e, "over_quantity"))
    # repeated dispensing: the same drug again at a pharmacy 1-6 days later
    late = care.start < BASE_S + (YEAR_DAYS - 7) * DAY
    for e in choose("repeated_dispensing", drug_ev[late[drug_ev]]).tolist():
        lines = lines_of(e)
        line = int(lines[cat.kind[care.l_code[lines]] == 0][0])
        days = int(rng.integers(1, 7))
        t = (
            (care.start[e] - BASE_S) // DAY * DAY
            + BASE_S
            + days * DAY
            + int(rng.integers(9, 17)) * HOUR
        )
        new = care.add_events(
            person=care.person[[e]],
            inst=np.asarray([pharm[rng.integers(0, len(pharm))]]),
            kind=np.asarray([2]),
            start=np.asarray([t]),
            end=np.asarray([t + VISIT_S]),
            dx=care.dx[[e]],
            county=np.asarray([ctx.county], dtype=object),
        )
        _, code, qty, price, _ = _copy_line(care, line)
        care.add_lines(new, code, qty, price, np.asarray([(t - BASE_S) // DAY * DAY + BASE_S]))
        care.labels.append((int(new[0]), "repeated_dispensing"))
    inpatient = np.flatnonzero(care.kind[:n_ev] == 1)
    stay_days = (care.end[inpatient] - care.start[inpatient]) // DAY
    # split admissions: one stay cut in two with a day or two between
    for e in choose("split_admission", inpatient[stay_days >= 6]).tolist():
        lines = lines_of(e)
        first_day = care.l_day[lines].min()
        n_days = int((care.l_day[lines].max() - first_day) // DAY) + 1
        cut = int(rng.integers(2, n_days - 2))
        gap = int(rng.integers(1, 3))
        second_start = first_day + (cut + gap) * DAY + 9 * HOUR
        new = care.add_events(
            person=care.person[[e]],
            inst=care.inst[[e]],
            kind=np.asarray([1]),
            start=np.asarray([second_start]),
            end=care.end[[e]],
            dx=care.dx[[e]],
            county=care.county[[e]],
        )
        care.end[e] = first_day + cut * DAY + 10 * HOUR
        later = lines[care.l_day[lines] >= first_day + (cut + gap) * DAY]
        between = lines[
            (care.l_day[lines] >= first_day + cut * DAY)
            & (care.l_day[lines] < first_day + (cut + gap) * DAY)
        ]
        care.l_ev[later] = new[0]
        care.l_qty[between] = -1.0  # dropped below
        care.labels.append((int(new[0]), "split_admission"))
    # bed-hanging: the last days of a stay with bed and nursing only
    bed, nursing = cat.index[BED], cat.index[NURSING]
    for e in choose("bed_hanging", inpatient[stay_days >= 5]).tolist():
        lines = lines_of(e)
        last = care.l_day[lines].max()
        empty = int(rng.integers(2, 4))
        care_lines = lines[
            (care.l_day[lines] > last - empty * DAY) & ~np.isin(care.l_code[lines], [bed, nursing])
        ]
        care.l_qty[care_lines] = -1.0
        care.labels.append((e, "bed_hanging"))
    # time conflicts: a ghost admission elsewhere during a visit, or two visits at once
    visits = np.flatnonzero((care.kind[:n_ev] == 0) & ~admitted[care.person[:n_ev]])
    visits = visits[
        (care.start[visits] > BASE_S + 2 * DAY)
        & (care.start[visits] < BASE_S + (YEAR_DAYS - 3) * DAY)
    ]
    for e in choose("time_conflict", visits).tolist():
        others_h = hosp[hosp != care.inst[e]]
        others_c = np.concatenate([hosp, clin])
        others_c = others_c[others_c != care.inst[e]]
        midnight = (care.start[e] - BASE_S) // DAY * DAY + BASE_S
        if len(others_h) and rng.random() < 0.5:
            h = int(others_h[rng.integers(0, len(others_h))])
            new = care.add_events(
                person=care.person[[e]],
                inst=np.asarray([h]),
                kind=np.asarray([1]),
                start=np.asarray([midnight - DAY + 8 * HOUR]),
                end=np.asarray([midnight + DAY + 10 * HOUR]),
                dx=np.asarray(["J18.9"], dtype=object),
                county=np.asarray([ctx.county], dtype=object),
            )
            for d in (-1, 0):
                stem = _drug(np.asarray([1]), np.asarray([0]))
                for gcode, q in ((bed, 1.0), (nursing, 1.0), (int(stem[0]), 2.0)):
                    care.add_lines(
                        new,
                        np.asarray([gcode]),
                        np.asarray([q]),
                        np.asarray([round(float(cat.price[gcode]) * 0.9, 2)]),
                        np.asarray([midnight + d * DAY]),
                    )
        elif len(others_c):
            c = int(others_c[rng.integers(0, len(others_c))])
            t = care.start[e] + int(rng.integers(0, 20)) * 60
            new = _service_visit(care, cat, e, c, t, ctx.county)
        else:
            continue
        care.labels.append((int(new[0]), "time_conflict"))
    # voucher lending: a visit in a far city soon after the holder's own visit
    own = np.flatnonzero(care.kind[:n_ev] != 1)
    if ctx.far:
        for e in choose("voucher_lending", own).tolist():
            far = ctx.far[int(rng.integers(0, len(ctx.far)))]
            c = _remote(ctx, care, far, "clinic")
            t = care.end[e] + int(rng.integers(30, 90)) * 60
            new = _service_visit(care, cat, e, c, t, far)
            care.labels.append((int(new[0]), "voucher_lending"))
    # cash-out: 4-6 high-value purchases over as many pharmacies within 20 days, evenings
    # the dearest unrestricted drugs, three a purchase, never the same drug twice
    valuable = sorted(
        (i for i in range(len(_DRUG_STEMS) * 2) if i // 2 not in (18, 19, 20, 21, 23)),
        key=lambda i: -float(cat.price[i] * cat.max_q[i]),
    )[:30]
    pool = [int(p) for p in pharm] + [
        _remote(ctx, care, c, "pharmacy") for c in ctx.same_city if c != ctx.county
    ]
    candidates = np.flatnonzero((care.kind[:n_ev] != 1) & ~admitted[care.person[:n_ev]])
    candidates = candidates[care.start[candidates] < BASE_S + (YEAR_DAYS - 25) * DAY]
    if len(pool) >= 4:
        by_person = np.argsort(care.person[:n_ev], kind="stable")
        p_sorted = care.person[:n_ev][by_person]
        for e in choose("cash_out", candidates).tolist():
            k = int(rng.integers(4, min(6, len(pool)) + 1))
            places = rng.choice(pool, size=k, replace=False)
            # never a drug the person gets otherwise, or it would also be a repeat
            p = care.person[e]
            own = by_person[np.searchsorted(p_sorted, p) : np.searchsorted(p_sorted, p, "right")]
            taken = {int(c) for o in own.tolist() for c in care.l_code[lines_of(o)].tolist()}
            free = [c for c in valuable if c not in taken]
            if len(free) < 3 * k:
                continue
            codes = rng.permutation(free[: 3 * k]).reshape(k, 3)  # the dearest, spread
            offsets = np.sort(rng.choice(np.arange(1, 21), size=k, replace=False))
            base = (care.start[e] - BASE_S) // DAY * DAY + BASE_S
            for place, three_codes, off in zip(
                places.tolist(), codes.tolist(), offsets.tolist(), strict=True
            ):
                t = base + off * DAY + int(rng.integers(18 * 60, 20 * 60 + 30)) * 60
                new = care.add_events(
                    person=care.person[[e]],
                    inst=np.asarray([place]),
                    kind=np.asarray([2]),
                    start=np.asarray([t]),
                    end=np.asarray([t + VISIT_S]),
                    dx=np.asarray([""], dtype=object),
                    county=np.asarray([ctx.inst.county[place]], dtype=object),
                )
                three = np.asarray(three_codes, np.int64)
                care.add_lines(
                    np.repeat(new, 3),
                    three,
                    cat.max_q[three].astype(float),
                    np.round(cat.price[three] * 0.95, 2),
                    np.full(3, (t - BASE_S) // DAY * DAY + BASE_S),
                )
                care.labels.append((int(new[0]), "cash_out"))


def _copy_line(care: _Care, line: int) -> tuple[Array, Array, Array, Array, Array]:
    s = slice(line, line + 1)
    return care.l_ev[s], care.l_code[s], care.l_qty[s], care.l_price[s], care.l_day[s]


def _service_visit(care: _Care, cat: _Catalogue, e: int, inst: int, t: int, county: str) -> Array:
    """A visit with a consultation and a blood test only (no drugs), for the person of event e."""
    new = care.add_events(
        person=care.person[[e]],
        inst=np.asarray([inst]),
        kind=np.asarray([0]),
        start=np.asarray([t]),
        end=np.asarray([t + VISIT_S]),
        dx=care.dx[[e]],
        county=np.asarray([county], dtype=object),
    )
    codes = np.asarray([cat.index[CONSULT_CLINIC], cat.index[TESTS[0]]])
    care.add_lines(
        np.repeat(new, 2),
        codes,
        np.ones(2),
        np.round(cat.price[codes] * 0.9, 2),
        np.full(2, (t - BASE_S) // DAY * DAY + BASE_S),
    )
    return new


def _take(values: Array, index: Array) -> pa.Array:
    """Strings by index, gathered by Arrow (object arrays of millions are slow to convert)."""
    return pc.take(pa.array(values, pa.string()), pa.array(index.astype(np.int64)))


def _cities(counties: Array) -> Array:
    """City codes of county codes (the first four digits and 00)."""
    unique, inverse = np.unique(counties.astype(str), return_inverse=True)
    result: Array = np.asarray([u[:4] + "00" for u in unique], dtype=object)[inverse]
    return result


def _ids(prefix: str, values: Array, width: int) -> pa.Array:
    """Identifiers prefix + zero-padded number, built by Arrow (fast for millions)."""
    digits = pc.utf8_lpad(pc.cast(pa.array(values, pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _tables(
    care: _Care,
    cat: _Catalogue,
    person_ids: Array,
    male: Array,
    age: Array,
    ctx: _Ctx,
    fraud: Array,
) -> Tables:
    keep = care.l_qty > 0
    l_ev, l_code = care.l_ev[keep], care.l_code[keep]
    l_qty, l_price, l_day = care.l_qty[keep], care.l_price[keep], care.l_day[keep]
    settled = care.end  # every settlement is paid when its care ends
    order = np.lexsort((care.person, settled))  # settlement numbers follow payment time
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    county = ctx.county
    sid = _ids(f"S{county}-", np.arange(len(order)), 9)
    inst = ctx.inst
    ev_inst = care.inst[order]
    amount = np.round(l_qty * l_price, 2)
    total = np.bincount(rank[l_ev], weights=amount, minlength=len(order))
    ratio = np.asarray([0.5, 0.75, 0.6])[care.kind[order]]
    ev_county = care.county[order]
    settlements = pa.table(
        {
            "settlement_id": sid,
            "person_id": _take(person_ids, care.person[order]),
            "institution_id": _take(inst.ids, ev_inst),
            "institution_kind": _take(inst.kind, ev_inst),
            "institution_grade": _take(inst.grade, ev_inst),
            "city_code": pa.array(_cities(ev_county), pa.string()),
            "county_code": pa.array(ev_county, pa.string()),
            "kind": _take(np.asarray(["outpatient", "inpatient", "pharmacy"]), care.kind[order]),
            "diagnosis": pa.array(care.dx[order], pa.string()),
            "sex": _take(np.asarray(["女", "男"]), male[care.person[order]]),
            "age": pa.array(age[care.person[order]].astype(np.int16), pa.int16()),
            "start": pa.array(care.start[order], pa.timestamp("s")),
            "end": pa.array(care.end[order], pa.timestamp("s")),
            "settled_at": pa.array(settled[order], pa.timestamp("s")),
            "total": pa.array(np.round(total, 2), pa.float64()),
            "fund_paid": pa.array(np.round(total * ratio, 2), pa.float64()),
        }
    )
    l_order = np.lexsort((l_day, rank[l_ev]))
    l_rank = rank[l_ev][l_order]
    line_first = np.searchsorted(l_rank, l_rank, side="left")
    line_no = (np.arange(len(l_rank)) - line_first + 1).astype(np.int32)
    item_sid = pc.take(sid, pa.array(l_rank))
    items = pa.table(
        {
            # the first column is the key a node imports the table by
            "item_id": pc.binary_join_element_wise(
                item_sid, pc.cast(pa.array(line_no), pa.string()), "/"
            ),
            "settlement_id": item_sid,
            "line": pa.array(line_no, pa.int32()),
            "code": _take(cat.codes, l_code[l_order]),
            "kind": _take(np.asarray(["drug", "service", "consumable"]), cat.kind[l_code[l_order]]),
            "quantity": pa.array(l_qty[l_order], pa.float64()),
            "unit_price": pa.array(l_price[l_order], pa.float64()),
            "amount": pa.array(amount[l_order], pa.float64()),
            "service_date": pa.array((l_day[l_order] // DAY).astype("datetime64[D]"), pa.date32()),
        }
    )
    tables: Tables = {
        ("medical_security", "settlements"): settlements,
        ("medical_security", "settlement_items"): items,
    }
    tables.update(_views(settlements, items))
    lab_ev = np.asarray([e for e, _ in care.labels], np.int64)
    tables[(LABELS, "medical_abuse")] = pa.table(
        {
            "settlement_id": pc.take(sid, pa.array(rank[lab_ev]))
            if len(lab_ev)
            else pa.array([], pa.string()),
            "person_id": pa.array(person_ids[care.person[lab_ev]], pa.string()),
            "institution_id": pa.array(inst.ids[care.inst[lab_ev]], pa.string()),
            "pattern": pa.array([p for _, p in care.labels], pa.string()),
        }
    ).sort_by("settlement_id")
    local = len(fraud)
    tables[(LABELS, "medical_fraud_institutions")] = pa.table(
        {
            "institution_id": pa.array(inst.ids[:local], pa.string()),
            "fraud": pa.array(fraud, pa.bool_()),
        }
    )
    return tables


def _views(settlements: pa.Table, items: pa.Table) -> Tables:
    """Visits, admissions, prescriptions and dispensing: the clinical records behind settlements."""
    kind = settlements["kind"]
    base = ["settlement_id", "person_id", "institution_id", "diagnosis"]
    visits = settlements.filter(pc.equal(kind, "outpatient")).select([*base, "start"])
    visits = visits.rename_columns([*base, "visited_at"])
    admissions = settlements.filter(pc.equal(kind, "inpatient")).select([*base, "start", "end"])
    admissions = admissions.rename_columns([*base, "admitted_at", "discharged_at"])
    drugs = items.filter(pc.equal(items["kind"], "drug")).select(
        ["item_id", "settlement_id", "line", "code", "quantity", "service_date"]
    )
    outpatient_ids = visits["settlement_id"]
    pharmacy_ids = settlements.filter(pc.equal(kind, "pharmacy"))["settlement_id"]
    return {
        ("medical_security", "visits"): visits,
        ("medical_security", "admissions"): admissions,
        ("medical_security", "prescriptions"): drugs.filter(
            pc.is_in(drugs["settlement_id"], outpatient_ids)
        ),
        ("medical_security", "dispensing"): drugs.filter(
            pc.is_in(drugs["settlement_id"], pharmacy_ids)
        ),
    }
