"""Working days in China: public holidays and adjusted working days (调休), from holidays.yaml."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta, timezone
from functools import cache
from importlib import resources

import yaml

# China has one time zone and no daylight saving: deadlines are counted in UTC+8
CHINA = timezone(timedelta(hours=8), "CST")
log = logging.getLogger(__name__)
_warned: set[int] = set()


@cache
def _schedules() -> dict[int, tuple[frozenset[date], frozenset[date]]]:
    """Load the holidays and adjusted working days of every year in the data file."""
    raw = yaml.safe_load(
        resources.files("citybrain.events").joinpath("holidays.yaml").read_text(encoding="utf-8")
    )
    years: dict[int, tuple[frozenset[date], frozenset[date]]] = {}
    for year, spec in raw.items():
        off: set[date] = set()
        for item in spec.get("holidays", []):
            first, last = (item[0], item[1]) if isinstance(item, list) else (item, item)
            day = first
            while day <= last:
                off.add(day)
                day += timedelta(days=1)
        years[int(year)] = (frozenset(off), frozenset(spec.get("workdays", [])))
    return years


def known_years() -> list[int]:
    """Return the years whose official schedule is in the data file."""
    return sorted(_schedules())


def is_working_day(day: date) -> bool:
    """Return True when the day is a working day (weekday not on holiday, or an adjusted day)."""
    schedule = _schedules().get(day.year)
    if schedule is None:
        if day.year not in _warned:
            _warned.add(day.year)
            log.warning("events calendar has no schedule for %s; counting plain weekends", day.year)
        return day.weekday() < 5
    holidays, workdays = schedule
    if day in workdays:
        return True
    return day.weekday() < 5 and day not in holidays


def _local(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(CHINA)


def add_working_days(start: datetime | date, n: int) -> datetime | date:
    """Return the same clock time on the n-th working day after start (start itself excluded)."""
    if n < 0:
        raise ValueError("n must be zero or more working days")
    if isinstance(start, datetime):
        local = _local(start)
        day = _add_days(local.date(), n)
        return datetime.combine(day, local.timetz()).astimezone(start.tzinfo or UTC)
    return _add_days(start, n)


def _add_days(day: date, n: int) -> date:
    while n > 0:
        day += timedelta(days=1)
        if is_working_day(day):
            n -= 1
    return day


def working_days_between(start: datetime | date, end: datetime | date) -> int:
    """Count the working days d with start < d <= end (negative when end is before start)."""
    a = _local(start).date() if isinstance(start, datetime) else start
    b = _local(end).date() if isinstance(end, datetime) else end
    if b < a:
        return -working_days_between(b, a)
    count, day = 0, a
    while day < b:
        day += timedelta(days=1)
        count += is_working_day(day)
    return count


def working_hours_between(start: datetime, end: datetime) -> float:
    """Return the hours of [start, end] that fall on working days (China time)."""
    a, b = _local(start), _local(end)
    if b <= a:
        return 0.0
    total, day = 0.0, a.date()
    while day <= b.date():
        if is_working_day(day):
            day_start = datetime.combine(day, time(0), CHINA)
            lo = max(a, day_start)
            hi = min(b, day_start + timedelta(days=1))
            if hi > lo:
                total += (hi - lo).total_seconds() / 3600
        day += timedelta(days=1)
    return total
