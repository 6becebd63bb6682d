"""Generate the departmental records of one county, vectorised, from its own random stream."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa

from citybrain.geo import service as geo
from citybrain.geo.models import AdminUnit, Level
from citybrain.synth import figures as fig
from citybrain.synth.idcard import id_numbers
from citybrain.synth.medical import CareOptions, Institutions, care_year

Array = np.ndarray[Any, Any]
Tables = dict[tuple[str, str], pa.Table]
_AS_OF = date(*fig.AS_OF)
_AS_OF_ORD = _AS_OF.toordinal()
_EPOCH_ORD = date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class CountyPlan:
    """What to generate for one county."""

    county: AdminUnit
    people: int
    seed: int
    county_index: int  # position of the county among all 136, for ID sequence slots
    care: CareOptions | None = None  # a year of medical-insurance care, None for none
    far_counties: tuple[str, ...] = ()  # counties of cities far away (voucher lending)


def _choice(rng: np.random.Generator, options: list[Any], p: list[float], n: int) -> Array:
    weights = np.asarray(p, dtype=float)
    return np.asarray(options, dtype=object)[
        rng.choice(len(options), size=n, p=weights / weights.sum())
    ]


def _ages_from_bins(rng: np.random.Generator, n: int, low: int, high: int) -> Array:
    """Draw ages in [low, high] following the census five-year shares."""
    bins = np.asarray(fig.AGE_BINS, dtype=float)
    ages = np.arange(0, 101)
    weights = np.repeat(bins / 5.0, 5)[:101] if len(bins) * 5 >= 101 else None
    if weights is None:
        weights = np.concatenate(
            [np.repeat(bins / 5.0, 5), np.full(101 - len(bins) * 5, bins[-1] / 15)]
        )
    weights = weights.copy()
    weights[(ages < low) | (ages > high)] = 0
    return rng.choice(ages, size=n, p=weights / weights.sum())


def _households(rng: np.random.Generator, people: int) -> Array:
    """Draw household sizes whose sum is exactly the number of people."""
    mean = float(np.dot(fig.HOUSEHOLD_SIZES, fig.HOUSEHOLD_SIZE_SHARES))
    sizes = rng.choice(
        fig.HOUSEHOLD_SIZES, size=int(people / mean * 1.1) + 8, p=fig.HOUSEHOLD_SIZE_SHARES
    )
    cum = np.cumsum(sizes)
    last = int(np.searchsorted(cum, people))
    sizes = sizes[: last + 1].copy()
    sizes[-1] -= int(cum[last] - people)
    return sizes[sizes > 0]


def _birth(rng: np.random.Generator, ages: Array) -> Array:
    """Birth dates (days since 1970) for ages in whole years on the reference date."""
    return (_AS_OF_ORD - _EPOCH_ORD) - ages * 365 - rng.integers(0, 365, len(ages))


def _ymd(days: Array) -> Array:
    dt = days.astype("datetime64[D]")
    y = dt.astype("datetime64[Y]").astype(int) + 1970
    m = dt.astype("datetime64[M]").astype(int) % 12 + 1
    d = (dt - dt.astype("datetime64[M]")).astype(int) + 1
    result: Array = y * 10000 + m * 100 + d
    return result


def _sequences(region: Array, ymd: Array, male: Array, migrant: Array, county_index: int) -> Array:
    """Sequence numbers unique per region and birth date, odd for men and even for women.

    A county numbers its own residents 000-599. Residents registered elsewhere take slots
    600-999 keyed by the county they live in, so two counties never hand out the same number
    for the same region and birth date (up to two such people per county, region, date, sex).
    """
    key = region.astype(np.int64) * 10**9 + ymd.astype(np.int64) * 10 + male
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_key)) + 1]
    rank = np.arange(len(key)) - np.repeat(starts, np.diff(np.r_[starts, len(key)]))
    seq = np.empty(len(key), dtype=np.int64)
    seq[order] = rank
    local = (seq % 300) * 2 + male
    slot = (300 + county_index + 136 * (seq % 2)) % 500
    return np.where(migrant, slot * 2 + male, local)


def _names(rng: np.random.Generator, surnames: Array, male: Array) -> Array:
    n = len(surnames)
    given_m = np.asarray(fig.GIVEN_MALE, dtype=object)
    given_f = np.asarray(fig.GIVEN_FEMALE, dtype=object)
    first = np.where(
        male == 1,
        given_m[rng.integers(0, len(given_m), n)],
        given_f[rng.integers(0, len(given_f), n)],
    )
    second = np.where(
        male == 1,
        given_m[rng.integers(0, len(given_m), n)],
        given_f[rng.integers(0, len(given_f), n)],
    )
    two = rng.random(n) < 0.7
    return surnames + first + np.where(two, second, "")


def _zfill(values: Array, width: int) -> Array:
    """Left-pad digit strings with zeros (numpy's zfill fails on empty arrays)."""
    if len(values) == 0:
        return np.asarray([], dtype=object)
    return np.char.zfill(values, width)


def _phones(rng: np.random.Generator, n: int) -> Array:
    prefix = np.asarray(["13", "15", "17", "18", "19"], dtype=object)[rng.integers(0, 5, n)]
    rest = rng.integers(0, 10**9, n).astype(str)
    result: Array = prefix + _zfill(rest, 9).astype(object)
    return result


def generate_county(plan: CountyPlan, other_counties: list[str]) -> Tables:
    """Generate every table of one county."""
    rng = np.random.default_rng(plan.seed)
    county = plan.county
    communities = geo.list_units(Level.community, county.code)
    streets = {u.code: u for u in geo.list_units(Level.street, county.code)}
    tables: Tables = {}

    # --- households and people -------------------------------------------------------------
    sizes = _households(rng, plan.people)
    n_hh = len(sizes)
    n = int(sizes.sum())
    hh_index = np.repeat(np.arange(n_hh), sizes)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    pos = np.arange(n) - np.repeat(starts, sizes)  # position of a member in its household
    hh_size = sizes[hh_index]
    migrant_hh = rng.random(n_hh) < fig.MIGRANT_HOUSEHOLD_SHARE
    # heads: single-person households lean old, families with children are led by 28-50 year olds
    # couples without children at home are mostly empty-nesters
    two_old = rng.random(n_hh) < 0.6
    head_age = np.where(
        sizes == 1,
        _ages_from_bins(rng, n_hh, 55, 95),
        np.where(
            sizes >= 3,
            rng.integers(27, 52, n_hh),
            np.where(
                two_old, _ages_from_bins(rng, n_hh, 58, 92), _ages_from_bins(rng, n_hh, 22, 57)
            ),
        ),
    )
    young_single = (sizes == 1) & (rng.random(n_hh) < 0.45)
    head_age[young_single] = _ages_from_bins(rng, int(young_single.sum()), 20, 54)
    relation = np.full(n, "户主", dtype=object)
    age = np.zeros(n, dtype=np.int64)
    head_of = head_age[hh_index]
    is_head = pos == 0
    spouse = (pos == 1) & ((hh_size >= 3) | (rng.random(n) < 0.8))
    child = (~is_head) & (~spouse) & ((pos <= 3) | (hh_size <= 4))
    elder = (~is_head) & (~spouse) & (~child)
    age[is_head] = head_of[is_head]
    age[spouse] = np.clip(head_of[spouse] + rng.integers(-4, 5, int(spouse.sum())), 20, 100)
    age[child] = np.clip(head_of[child] - rng.integers(22, 40, int(child.sum())), 0, 60)
    age[elder] = np.clip(head_of[elder] + rng.integers(24, 34, int(elder.sum())), 45, 100)
    relation[spouse] = "配偶"
    relation[child] = "子女"
    relation[elder] = "父母"
    male = np.where(is_head, rng.random(n) < 0.55, rng.random(n) < 0.5).astype(np.int64)
    head_male = male[starts][hh_index]
    male[spouse] = 1 - head_male[spouse]

    county_code = int(county.code)
    hukou_county = np.full(n_hh, county_code, dtype=np.int64)
    if other_counties and migrant_hh.any():
        picks = rng.integers(0, len(other_counties), int(migrant_hh.sum()))
        hukou_county[migrant_hh] = np.asarray([int(c) for c in other_counties])[picks]
    person_hukou = hukou_county[hh_index]
    born = _birth(rng, age)
    ymd = _ymd(born)
    county_index = plan.county_index
    migrant_person_all = migrant_hh[hh_index]
    ids = id_numbers(
        person_hukou, ymd, _sequences(person_hukou, ymd, male, migrant_person_all, county_index)
    )
    surname_list = [s for s, _ in fig.SURNAMES]
    surname_w = [w for _, w in fig.SURNAMES]
    hh_surname = _choice(rng, surname_list, surname_w, n_hh)
    own_surname = np.where(
        spouse | elder, _choice(rng, surname_list, surname_w, n), hh_surname[hh_index]
    )
    names = _names(rng, own_surname, male)
    phones = _phones(rng, n)
    person_id = np.char.add(f"P{county.code}-", _zfill(np.arange(n).astype(str), 8)).astype(object)
    hh_id = np.char.add(f"H{county.code}-", _zfill(np.arange(n_hh).astype(str), 7)).astype(object)

    # --- addresses inside communities ----------------------------------------------------------
    comm_codes = np.asarray([c.code for c in communities], dtype=object)
    hh_comm = rng.integers(0, len(communities), n_hh)
    lon = np.empty(n_hh)
    lat = np.empty(n_hh)
    order = np.argsort(hh_comm, kind="stable")
    counts = np.bincount(hh_comm, minlength=len(communities))
    offset = 0
    for ci, k in enumerate(counts):
        if k:
            pts = geo.sample_points(communities[ci].code, int(k), rng)
            idx = order[offset : offset + k]
            lon[idx], lat[idx] = pts[:, 0], pts[:, 1]
            offset += k
    city = geo.get_unit(county.parent or "")
    urban = np.asarray([c.name_zh.endswith("社区") for c in communities])[hh_comm]
    prefix = np.asarray(
        [
            f"山东省{city.name_zh}{county.name_zh}{streets[c.parent or ''].name_zh}{c.name_zh}"
            for c in communities
        ],
        dtype=object,
    )[hh_comm]
    building = rng.integers(1, 40, n_hh).astype(str).astype(object)
    room = (rng.integers(1, 25, n_hh) * 100 + rng.integers(1, 5, n_hh)).astype(str).astype(object)
    house = rng.integers(1, 300, n_hh).astype(str).astype(object)
    text = np.where(urban, prefix + building + "号楼" + room + "室", prefix + house + "号")
    addr_id = np.char.add(f"A{county.code}-", _zfill(np.arange(n_hh).astype(str), 7)).astype(object)
    street_codes = np.asarray([c.parent for c in communities], dtype=object)[hh_comm]

    tables[("public_security", "addresses")] = pa.table(
        {
            "address_id": pa.array(addr_id, pa.string()),
            "county_code": pa.array(np.full(n_hh, county.code, dtype=object), pa.string()),
            "street_code": pa.array(street_codes, pa.string()),
            "community_code": pa.array(comm_codes[hh_comm], pa.string()),
            "address": pa.array(text, pa.string()),
            "lon": pa.array(np.round(lon, 6), pa.float64()),
            "lat": pa.array(np.round(lat, 6), pa.float64()),
        }
    )
    tables[("public_security", "households")] = pa.table(
        {
            "household_id": pa.array(hh_id, pa.string()),
            "head_person_id": pa.array(person_id[starts], pa.string()),
            "size": pa.array(sizes.astype(np.int16), pa.int16()),
            "hukou_type": pa.array(np.where(urban, "城镇", "农村"), pa.string()),
            "hukou_county": pa.array(hukou_county.astype(str), pa.string()),
            "address_id": pa.array(addr_id, pa.string()),
            "community_code": pa.array(comm_codes[hh_comm], pa.string()),
        }
    )
    ethnic = _choice(rng, [e for e, _ in fig.ETHNICITY], [w for _, w in fig.ETHNICITY], n)
    tables[("public_security", "residents")] = pa.table(
        {
            "person_id": pa.array(person_id, pa.string()),
            "id_number": pa.array(ids, pa.string()),
            "name": pa.array(names, pa.string()),
            "sex": pa.array(np.where(male == 1, "男", "女"), pa.string()),
            "birth_date": pa.array(born.astype("datetime64[D]"), pa.date32()),
            "ethnicity": pa.array(ethnic, pa.string()),
            "household_id": pa.array(hh_id[hh_index], pa.string()),
            "relation_to_head": pa.array(relation, pa.string()),
            "hukou_county": pa.array(person_hukou.astype(str), pa.string()),
            "residence_county": pa.array(np.full(n, county.code, dtype=object), pa.string()),
            "community_code": pa.array(comm_codes[hh_comm][hh_index], pa.string()),
            "address_id": pa.array(addr_id[hh_index], pa.string()),
            "phone": pa.array(np.where(age >= 16, phones, np.asarray(None)), pa.string()),
        }
    )
    migrant_person = migrant_hh[hh_index] & (age >= 16)
    mp = np.flatnonzero(migrant_person)
    issued = (_AS_OF_ORD - _EPOCH_ORD) - rng.integers(30, 365 * 6, len(mp))
    tables[("public_security", "residence_permits")] = pa.table(
        {
            "permit_id": pa.array(
                np.char.add(f"R{county.code}-", _zfill(np.arange(len(mp)).astype(str), 7)).astype(
                    object
                ),
                pa.string(),
            ),
            "person_id": pa.array(person_id[mp], pa.string()),
            "id_number": pa.array(ids[mp], pa.string()),
            "residence_county": pa.array(np.full(len(mp), county.code, dtype=object), pa.string()),
            "address_id": pa.array(addr_id[hh_index][mp], pa.string()),
            "issued_on": pa.array(issued.astype("datetime64[D]"), pa.date32()),
            "valid_until": pa.array((issued + 365 * 5).astype("datetime64[D]"), pa.date32()),
        }
    )

    # --- property registry ---------------------------------------------------------------------
    owns = rng.random(n_hh) < np.where(migrant_hh, fig.MIGRANT_HOME_OWNERSHIP, fig.HOME_OWNERSHIP)
    owner_hh = np.flatnonzero(owns)
    second = owner_hh[rng.random(len(owner_hh)) < fig.SECOND_HOME_SHARE]
    prop_hh = np.concatenate([owner_hh, second])
    prop_addr = np.concatenate([addr_id[owner_hh], addr_id[rng.integers(0, n_hh, len(second))]])
    # the owner is the head or, for a couple, sometimes the spouse
    owner_pos = np.where((sizes[prop_hh] >= 2) & (rng.random(len(prop_hh)) < 0.3), 1, 0)
    owner = starts[prop_hh] + owner_pos
    usage = _choice(rng, ["住宅", "商住"], [0.95, 0.05], len(prop_hh))
    reg = (_AS_OF_ORD - _EPOCH_ORD) - rng.integers(60, 365 * 25, len(prop_hh))
    tables[("natural_resources", "property_registry")] = pa.table(
        {
            "property_id": pa.array(
                np.char.add(
                    f"F{county.code}-", _zfill(np.arange(len(prop_hh)).astype(str), 7)
                ).astype(object),
                pa.string(),
            ),
            "owner_person_id": pa.array(person_id[owner], pa.string()),
            "owner_id_number": pa.array(ids[owner], pa.string()),
            "address_id": pa.array(prop_addr, pa.string()),
            "area_m2": pa.array(np.round(rng.gamma(9.0, 11.0, len(prop_hh)) + 30, 1), pa.float64()),
            "registered_on": pa.array(reg.astype("datetime64[D]"), pa.date32()),
            "usage": pa.array(usage, pa.string()),
        }
    )

    # --- social insurance ---------------------------------------------------------------------
    working = np.flatnonzero((age >= 18) & (age <= 59) & (rng.random(n) < fig.EMPLOYED_SHARE))
    years = np.minimum(age[working] - 17, 40)
    months = np.minimum(rng.integers(1, 13, len(working)) + (years - 1) * 12, 480)
    months = np.maximum(1, (months * rng.uniform(0.3, 1.0, len(working))).astype(np.int64))
    lapsed = rng.random(len(working)) < 0.08
    last_12 = np.where(lapsed, rng.integers(0, 12, len(working)), np.minimum(months, 12))
    scheme = _choice(rng, ["城镇职工", "城乡居民", "灵活就业"], [0.62, 0.28, 0.10], len(working))
    employers = np.asarray(
        [
            f"{county.name_zh}{w}有限公司"
            for w in ("鲁信", "泉城", "海岱", "齐鲁", "鲁港", "岱岳", "沂蒙", "黄河")
        ],
        dtype=object,
    )[rng.integers(0, 8, len(working))]
    tables[("human_resources", "social_insurance")] = pa.table(
        {
            "person_id": pa.array(person_id[working], pa.string()),
            "id_number": pa.array(ids[working], pa.string()),
            "county_code": pa.array(np.full(len(working), county.code, dtype=object), pa.string()),
            "scheme": pa.array(scheme, pa.string()),
            "employer": pa.array(
                np.where(scheme == "城镇职工", employers, np.asarray(None)), pa.string()
            ),
            "months_contributed": pa.array(months.astype(np.int32), pa.int32()),
            "months_last_12": pa.array(last_12.astype(np.int16), pa.int16()),
            "last_paid_month": pa.array(
                np.where(
                    lapsed,
                    "2025-" + _zfill(rng.integers(1, 13, len(working)).astype(str), 2),
                    "2026-08",
                ),
                pa.string(),
            ),
        }
    )

    # --- education -------------------------------------------------------------------------------
    tables.update(_schools(rng, county, communities, age))

    # --- medical security ------------------------------------------------------------------------
    insured = np.flatnonzero(rng.random(n) < fig.INSURED_SHARE)
    employee = np.zeros(n, dtype=bool)
    employee[working[scheme == "城镇职工"]] = True
    tables[("medical_security", "insured_persons")] = pa.table(
        {
            "person_id": pa.array(person_id[insured], pa.string()),
            "id_number": pa.array(ids[insured], pa.string()),
            "scheme": pa.array(np.where(employee[insured], "职工医保", "居民医保"), pa.string()),
            "insured_county": pa.array(
                np.full(len(insured), county.code, dtype=object), pa.string()
            ),
            "status": pa.array(
                np.where(rng.random(len(insured)) < 0.98, "参保缴费", "暂停"), pa.string()
            ),
        }
    )
    institutions = _institutions(rng, county, communities, n)
    tables[("medical_security", "designated_institutions")] = institutions
    if plan.care is not None:
        # its own stream, so the year of care leaves every other table as it was
        care_rng = np.random.default_rng(np.random.SeedSequence([plan.seed, 8]))
        cared = insured[care_rng.random(len(insured)) < plan.care.share]
        tables.update(
            care_year(
                care_rng,
                county=county.code,
                person_ids=person_id[cared],
                male=male[cared],
                age=age[cared],
                institutions=Institutions.of(institutions),
                same_city_counties=[
                    c.code for c in geo.list_units(Level.county, county.parent or "")
                ],
                far_counties=list(plan.far_counties),
                options=plan.care,
            )
        )

    # --- civil affairs -------------------------------------------------------------------------
    comm_pop = np.bincount(hh_comm[hh_index], minlength=len(communities))
    tables[("civil_affairs", "communities")] = pa.table(
        {
            "community_code": pa.array([c.code for c in communities], pa.string()),
            "name": pa.array([c.name_zh for c in communities], pa.string()),
            "street_code": pa.array([c.parent for c in communities], pa.string()),
            "county_code": pa.array([county.code] * len(communities), pa.string()),
            "population": pa.array(comm_pop.astype(np.int32), pa.int32()),
            "area_km2": pa.array([c.area_km2 for c in communities], pa.float64()),
        }
    )
    alone = np.flatnonzero((hh_size == 1) & (age >= 65))
    tables[("civil_affairs", "elderly_alone")] = pa.table(
        {
            "person_id": pa.array(person_id[alone], pa.string()),
            "age": pa.array(age[alone].astype(np.int16), pa.int16()),
            "community_code": pa.array(comm_codes[hh_comm][hh_index][alone], pa.string()),
            "address_id": pa.array(addr_id[hh_index][alone], pa.string()),
        }
    )

    # --- city management -----------------------------------------------------------------------
    tables.update(_city_management(rng, county, communities, n))
    return tables


def _schools(
    rng: np.random.Generator, county: AdminUnit, communities: list[AdminUnit], age: Array
) -> Tables:
    """Schools sized to the entry cohorts, with single- and multi-school catchment zones."""
    rows: dict[str, list[Any]] = {
        k: []
        for k in (
            "school_id",
            "name",
            "county_code",
            "level",
            "ownership",
            "entry_capacity",
            "community_code",
            "lon",
            "lat",
        )
    }
    zones: dict[str, list[Any]] = {
        k: [] for k in ("zone_id", "county_code", "level", "kind", "school_ids", "community_codes")
    }
    comm_xy = np.asarray([[c.centroid_lon, c.centroid_lat] for c in communities])
    for level, entry_age, class_size, per_school, label in (
        ("primary", 6, fig.PRIMARY_CLASS_SIZE, 4, "小学"),
        ("junior", 12, fig.JUNIOR_CLASS_SIZE, 6, "中学"),
    ):
        cohort = int((age == entry_age).sum())
        classes_needed = max(1, int(np.ceil(cohort * fig.SCHOOL_CAPACITY_MARGIN / class_size)))
        n_schools = int(min(len(communities), max(1, np.ceil(classes_needed / per_school))))
        sites = np.sort(rng.choice(len(communities), size=n_schools, replace=False))
        classes = np.full(n_schools, classes_needed // n_schools)
        classes[: classes_needed % n_schools] += 1
        private = rng.random(n_schools) < fig.PRIVATE_SCHOOL_SHARE
        if n_schools > 1:
            private[0] = False  # every county keeps at least one public school
        else:
            private[:] = False
        ids = [
            f"S{county.code}{'P' if level == 'primary' else 'J'}{i:03d}" for i in range(n_schools)
        ]
        for i, site in enumerate(sites):
            comm = communities[int(site)]
            stem = comm.name_zh.removesuffix("社区").removesuffix("村")
            rows["school_id"].append(ids[i])
            rows["name"].append(f"{county.name_zh}{stem}{'实验' if private[i] else ''}{label}")
            rows["county_code"].append(county.code)
            rows["level"].append(level)
            rows["ownership"].append("private" if private[i] else "public")
            rows["entry_capacity"].append(int(classes[i] * class_size))
            rows["community_code"].append(comm.code)
            rows["lon"].append(comm.centroid_lon)
            rows["lat"].append(comm.centroid_lat)
        # each community belongs to the zone of its nearest public school
        public = [i for i in range(n_schools) if not private[i]]
        site_xy = comm_xy[sites[public]]
        nearest = np.argmin(((comm_xy[:, None, :] - site_xy[None, :, :]) ** 2).sum(-1), axis=1)
        members: dict[int, list[str]] = {}
        for ci, si in enumerate(nearest):
            members.setdefault(int(si), []).append(communities[ci].code)
        # merge neighbouring pairs into multi-school zones (about one zone in four)
        groups: list[list[int]] = []
        pending = sorted(members)
        while pending:
            first = pending.pop(0)
            if pending and rng.random() < 0.25:
                groups.append([first, pending.pop(0)])
            else:
                groups.append([first])
        for zi, group in enumerate(groups):
            zones["zone_id"].append(f"Z{county.code}{'P' if level == 'primary' else 'J'}{zi:03d}")
            zones["county_code"].append(county.code)
            zones["level"].append(level)
            zones["kind"].append("multi" if len(group) > 1 else "single")
            zones["school_ids"].append([ids[public[g]] for g in group])
            zones["community_codes"].append(sorted(c for g in group for c in members[g]))
    schools = pa.table(
        {
            "school_id": pa.array(rows["school_id"], pa.string()),
            "name": pa.array(rows["name"], pa.string()),
            "county_code": pa.array(rows["county_code"], pa.string()),
            "level": pa.array(rows["level"], pa.string()),
            "ownership": pa.array(rows["ownership"], pa.string()),
            "entry_capacity": pa.array(rows["entry_capacity"], pa.int32()),
            "community_code": pa.array(rows["community_code"], pa.string()),
            "lon": pa.array(rows["lon"], pa.float64()),
            "lat": pa.array(rows["lat"], pa.float64()),
        }
    )
    zone_table = pa.table(
        {
            "zone_id": pa.array(zones["zone_id"], pa.string()),
            "county_code": pa.array(zones["county_code"], pa.string()),
            "level": pa.array(zones["level"], pa.string()),
            "kind": pa.array(zones["kind"], pa.string()),
            "school_ids": pa.array(zones["school_ids"], pa.list_(pa.string())),
            "community_codes": pa.array(zones["community_codes"], pa.list_(pa.string())),
        }
    )
    return {("education", "schools"): schools, ("education", "catchment_zones"): zone_table}


def _institutions(
    rng: np.random.Generator, county: AdminUnit, communities: list[AdminUnit], people: int
) -> pa.Table:
    """Hospitals by grade, clinics and pharmacies, in proportion to the population."""
    kinds: list[tuple[str, str, int]] = [
        ("hospital", "三级", 1 if county.name_zh.endswith("区") and people > 2000 else 0),
        ("hospital", "二级", max(1, people // 150_000)),
        ("hospital", "一级", max(1, people // 40_000)),
        ("clinic", "未定级", max(2, people // 4_000)),
        ("pharmacy", "未定级", max(2, people // 3_000)),
    ]
    label = {"hospital": "医院", "clinic": "卫生室", "pharmacy": "大药房"}
    out: dict[str, list[Any]] = {
        k: []
        for k in (
            "institution_id",
            "name",
            "kind",
            "grade",
            "county_code",
            "community_code",
            "lon",
            "lat",
        )
    }
    for kind, grade, count in kinds:
        sites = rng.integers(0, len(communities), count)
        for i, site in enumerate(sites):
            comm = communities[int(site)]
            pt = geo.sample_points(comm.code, 1, rng)[0]
            code = {"hospital": "H", "clinic": "C", "pharmacy": "D"}[kind]
            out["institution_id"].append(f"M{county.code}{code}{grade_code(grade)}{i:04d}")
            stem = comm.name_zh.removesuffix("社区").removesuffix("村")
            prefix = f"{county.name_zh}{'人民' if grade == '三级' else ''}"
            out["name"].append(
                f"{prefix}{stem}{label[kind]}"
                if kind != "hospital"
                else f"{prefix}{stem}{grade}{label[kind]}"
            )
            out["kind"].append(kind)
            out["grade"].append(grade)
            out["county_code"].append(county.code)
            out["community_code"].append(comm.code)
            out["lon"].append(round(float(pt[0]), 6))
            out["lat"].append(round(float(pt[1]), 6))
    return pa.table(
        {
            k: pa.array(v, pa.float64() if k in ("lon", "lat") else pa.string())
            for k, v in out.items()
        }
    )


def grade_code(grade: str) -> str:
    """Return a one-letter code for a hospital grade."""
    return {"三级": "3", "二级": "2", "一级": "1"}.get(grade, "0")


DEVICE_TYPES = [
    ("AirQualityObserved", 0.15),
    ("NoiseLevelObserved", 0.1),
    ("TrafficFlowObserved", 0.15),
    ("WeatherObserved", 0.05),
    ("ParkingSpot", 0.2),
    ("Streetlight", 0.2),
    ("WasteContainer", 0.15),
]


def _city_management(
    rng: np.random.Generator, county: AdminUnit, communities: list[AdminUnit], people: int
) -> Tables:
    """Grids and their workers, IoT devices and cameras."""
    grids = geo.list_units(Level.grid, county.code)
    g_count = len(grids)
    surname_list = [s for s, _ in fig.SURNAMES]
    surname_w = [w for _, w in fig.SURNAMES]
    male = (rng.random(g_count) < 0.5).astype(np.int64)
    worker_names = _names(rng, _choice(rng, surname_list, surname_w, g_count), male)
    tables: Tables = {
        ("city_management", "grids"): pa.table(
            {
                "grid_code": pa.array([g.code for g in grids], pa.string()),
                "name": pa.array([g.name_zh for g in grids], pa.string()),
                "community_code": pa.array([g.parent for g in grids], pa.string()),
                "county_code": pa.array([county.code] * g_count, pa.string()),
                "area_km2": pa.array([g.area_km2 for g in grids], pa.float64()),
                "centroid_lon": pa.array([g.centroid_lon for g in grids], pa.float64()),
                "centroid_lat": pa.array([g.centroid_lat for g in grids], pa.float64()),
            }
        ),
        ("city_management", "grid_workers"): pa.table(
            {
                "worker_id": pa.array([f"W{g.code}" for g in grids], pa.string()),
                "grid_code": pa.array([g.code for g in grids], pa.string()),
                "name": pa.array(worker_names, pa.string()),
                "phone": pa.array(_phones(rng, g_count), pa.string()),
            }
        ),
    }
    n_dev = max(len(DEVICE_TYPES), people // 400)
    dev_type = _choice(rng, [t for t, _ in DEVICE_TYPES], [w for _, w in DEVICE_TYPES], n_dev)
    dev_type[: len(DEVICE_TYPES)] = [t for t, _ in DEVICE_TYPES]  # every county has every kind
    dev_comm = rng.integers(0, len(communities), n_dev)
    xy = np.vstack([geo.sample_points(communities[int(c)].code, 1, rng) for c in dev_comm])
    commissioned = (_AS_OF_ORD - _EPOCH_ORD) - rng.integers(30, 365 * 5, n_dev)
    tables[("city_management", "iot_devices")] = pa.table(
        {
            "device_id": pa.array(
                [f"urn:ngsi-ld:Device:{county.code}-{i:05d}" for i in range(n_dev)], pa.string()
            ),
            "type": pa.array(dev_type, pa.string()),
            "community_code": pa.array([communities[int(c)].code for c in dev_comm], pa.string()),
            "lon": pa.array(np.round(xy[:, 0], 6), pa.float64()),
            "lat": pa.array(np.round(xy[:, 1], 6), pa.float64()),
            "commissioned_on": pa.array(commissioned.astype("datetime64[D]"), pa.date32()),
        }
    )
    n_cam = max(2, people // 800)
    cam_comm = rng.integers(0, len(communities), n_cam)
    cxy = np.vstack([geo.sample_points(communities[int(c)].code, 1, rng) for c in cam_comm])
    tables[("city_management", "cameras")] = pa.table(
        {
            "camera_id": pa.array(
                [f"urn:ngsi-ld:Camera:{county.code}-{i:05d}" for i in range(n_cam)], pa.string()
            ),
            "community_code": pa.array([communities[int(c)].code for c in cam_comm], pa.string()),
            "purpose": pa.array(
                _choice(rng, ["治安", "交通", "消防", "环卫"], [0.5, 0.3, 0.1, 0.1], n_cam),
                pa.string(),
            ),
            "lon": pa.array(np.round(cxy[:, 0], 6), pa.float64()),
            "lat": pa.array(np.round(cxy[:, 1], 6), pa.float64()),
        }
    )
    return tables
