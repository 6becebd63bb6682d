"""Figures the synthetic province is calibrated on; sources are listed in docs/synth.md."""

from __future__ import annotations

import csv
from importlib import resources

TOTAL_POPULATION = 101_527_453  # Shandong, 7th national census (2020)
AS_OF = (2026, 9, 1)  # reference date of the synthetic records: the start of a school year

# Five-year age shares of Shandong in 2020 (0-4 ... 85+), approximated so that 0-14 is 18.8 %
# and 65+ is 15.1 % as the census bulletin reports.
AGE_BINS = [
    5.6,
    6.9,
    6.3,
    4.9,
    4.6,
    6.0,
    8.6,
    7.0,
    6.3,
    8.1,
    8.7,
    7.5,
    5.4,
    5.8,
    4.0,
    2.5,
    1.5,
    1.0,
]

# Household sizes 1..6 (mean about 2.6 persons, census 2020: 2.62 in Shandong family households).
HOUSEHOLD_SIZES = [1, 2, 3, 4, 5, 6]
HOUSEHOLD_SIZE_SHARES = [0.25, 0.30, 0.21, 0.13, 0.07, 0.04]

# Density factor of urban districts (区) against counties and county-level cities when a city's
# population is split across its counties in proportion to area x factor.
DISTRICT_DENSITY_FACTOR = 4.0

MIGRANT_HOUSEHOLD_SHARE = 0.08  # households living here with hukou in another county
HOME_OWNERSHIP = 0.72  # local households owning their home
MIGRANT_HOME_OWNERSHIP = 0.25
SECOND_HOME_SHARE = 0.10
INSURED_SHARE = 0.96  # basic medical insurance coverage
EMPLOYED_SHARE = 0.66  # people aged 18-59 paying into social insurance
PRIMARY_CLASS_SIZE = 45
JUNIOR_CLASS_SIZE = 50
SCHOOL_CAPACITY_MARGIN = 1.15  # seats per child of the entry cohort
PRIVATE_SCHOOL_SHARE = 0.1

SURNAMES = [
    ("王", 8.0),
    ("张", 7.5),
    ("李", 7.3),
    ("刘", 5.8),
    ("孙", 3.2),
    ("杨", 2.8),
    ("陈", 2.6),
    ("赵", 2.4),
    ("高", 2.1),
    ("徐", 2.0),
    ("马", 1.9),
    ("于", 1.9),
    ("郭", 1.5),
    ("宋", 1.4),
    ("韩", 1.3),
    ("吴", 1.2),
    ("孔", 0.6),
    ("颜", 0.3),
    ("曹", 1.1),
    ("田", 1.0),
    ("董", 1.0),
    ("周", 1.0),
    ("朱", 1.0),
    ("胡", 0.9),
    ("林", 0.8),
    ("何", 0.6),
    ("邢", 0.5),
    ("冯", 0.9),
    ("魏", 0.9),
    ("薛", 0.6),
    ("姜", 1.2),
    ("崔", 0.8),
    ("谭", 0.4),
    ("程", 0.6),
    ("袁", 0.5),
]
GIVEN_MALE = list("伟强磊军勇涛斌超明刚平辉鹏华飞鑫波宁凯浩宇俊杰晨博文志建国庆")
GIVEN_FEMALE = list("芳娜敏静丽艳娟霞秀英玲红梅洁燕琳雪晶颖婷慧欣怡萌悦佳倩楠")
ETHNICITY = [("汉族", 0.993), ("回族", 0.005), ("满族", 0.001), ("蒙古族", 0.001)]


def city_populations() -> dict[str, int]:
    """Return the 2020 census population of each city, from the package's copy of the table."""
    text = resources.files("citybrain.synth").joinpath("shandong_cities.csv").read_text("utf-8")
    return {row["code"]: int(row["population_2020"]) for row in csv.DictReader(text.splitlines())}
