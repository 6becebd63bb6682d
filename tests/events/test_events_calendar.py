"""Working days with China's holidays and adjusted working days (调休)."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citybrain.events import calendar as cal


def test_spring_festival_2024_and_its_adjusted_sundays() -> None:
    # 2024-02-10..17 off; Sunday 2024-02-04 and Sunday 2024-02-18 are working days
    assert cal.is_working_day(date(2024, 2, 4))
    assert not cal.is_working_day(date(2024, 2, 12))  # a Monday of the break
    assert cal.is_working_day(date(2024, 2, 18))
    # Friday 2024-02-09: next working day is the adjusted Sunday 2024-02-18
    assert cal.add_working_days(date(2024, 2, 9), 1) == date(2024, 2, 18)
    assert cal.add_working_days(date(2024, 2, 9), 2) == date(2024, 2, 19)
    assert cal.working_days_between(date(2024, 2, 9), date(2024, 2, 19)) == 2


def test_spring_festival_2025_and_2026() -> None:
    # 2025: 01-28..02-04 off, Sunday 01-26 and Saturday 02-08 worked
    assert cal.is_working_day(date(2025, 1, 26))
    assert cal.add_working_days(date(2025, 1, 27), 1) == date(2025, 2, 5)
    assert cal.add_working_days(date(2025, 2, 7), 1) == date(2025, 2, 8)
    # 2026: 02-15..23 off, Saturdays 02-14 and 02-28 worked
    assert cal.add_working_days(date(2026, 2, 13), 1) == date(2026, 2, 14)
    assert cal.add_working_days(date(2026, 2, 14), 1) == date(2026, 2, 24)
    assert cal.is_working_day(date(2026, 2, 28))


def test_national_day_adjusted_days() -> None:
    # 2025: 10-01..08 off; Sunday 09-28 and Saturday 10-11 worked
    assert cal.is_working_day(date(2025, 9, 28))
    assert cal.add_working_days(date(2025, 9, 30), 1) == date(2025, 10, 9)
    assert cal.add_working_days(date(2025, 10, 10), 1) == date(2025, 10, 11)
    # 2024: 10-01..07 off; Sunday 09-29 and Saturday 10-12 worked
    assert cal.add_working_days(date(2024, 9, 27), 1) == date(2024, 9, 29)
    assert cal.add_working_days(date(2024, 9, 30), 3) == date(2024, 10, 10)
    # 2026: 10-01..07 off; Sunday 09-20 and Saturday 10-10 worked
    assert cal.is_working_day(date(2026, 9, 20)) and cal.is_working_day(date(2026, 10, 10))
    assert cal.working_days_between(date(2026, 9, 30), date(2026, 10, 8)) == 1


def test_datetimes_keep_the_clock_time_in_china() -> None:
    # 2025-09-30 10:00 in Beijing is 02:00 UTC; one working day later: 2025-10-09 10:00 CST
    start = datetime(2025, 9, 30, 2, 0, tzinfo=UTC)
    assert cal.add_working_days(start, 1) == datetime(2025, 10, 9, 2, 0, tzinfo=UTC)
    # hours of working days only: Friday 2025-09-26 12:00 CST to Monday 09-29 12:00 CST
    # covers Friday's 12 hours, Sunday 09-28 (adjusted, 24) and Monday's 12 hours
    assert cal.working_hours_between(
        datetime(2025, 9, 26, 4, tzinfo=UTC), datetime(2025, 9, 29, 4, tzinfo=UTC)
    ) == pytest.approx(48.0)


def test_a_year_without_a_schedule_falls_back_to_weekends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert 2031 not in cal.known_years() and {2024, 2025, 2026} <= set(cal.known_years())
    with caplog.at_level(logging.WARNING, logger="citybrain.events.calendar"):
        assert cal.is_working_day(date(2031, 10, 1))  # a Wednesday: no holiday known
        assert not cal.is_working_day(date(2031, 10, 4))
    assert "no schedule for 2031" in caplog.text
    with pytest.raises(ValueError):
        cal.add_working_days(date(2025, 1, 1), -1)


@given(st.dates(date(2024, 1, 1), date(2026, 12, 20)), st.integers(0, 15))
def test_add_and_count_agree(start: date, n: int) -> None:
    end = cal.add_working_days(start, n)
    assert isinstance(end, date)
    assert cal.working_days_between(start, end) == n
    assert n == 0 or cal.is_working_day(end)
