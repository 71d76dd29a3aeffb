"""Maintenance windows and missed starts, on calendars checked by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cau.domain.due import due
from cau.domain.schedule import Schedule, ScheduleError
from cau.domain.window import MaintenanceWindow


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


NIGHTLY = MaintenanceWindow.parse("daily@01:00 for 4h in Europe/Berlin")  # 00:00-04:00 UTC in winter


def test_contains_is_half_open() -> None:
    assert NIGHTLY.contains(utc(2027, 1, 5, 0, 0))  # 01:00 Berlin, the opening
    assert NIGHTLY.contains(utc(2027, 1, 5, 3, 59))
    assert not NIGHTLY.contains(utc(2027, 1, 5, 4, 0))  # 05:00 Berlin, the end
    assert not NIGHTLY.contains(utc(2027, 1, 4, 23, 59))


def test_current_end_and_next_open() -> None:
    t = utc(2027, 1, 5, 2, 0)
    assert NIGHTLY.current(t) == (utc(2027, 1, 5, 0, 0), utc(2027, 1, 5, 4, 0))
    assert NIGHTLY.end_of(t) == utc(2027, 1, 5, 4, 0)
    assert NIGHTLY.next_open(t) == utc(2027, 1, 6, 0, 0)
    outside = utc(2027, 1, 5, 12, 0)
    assert NIGHTLY.current(outside) is None and NIGHTLY.end_of(outside) is None
    assert NIGHTLY.next_open(outside) == utc(2027, 1, 6, 0, 0)


def test_window_across_the_spring_forward_night_ends_four_real_hours_later() -> None:
    # 2027-03-28 01:00 CET = 00:00 UTC; four hours later is 04:00 UTC = 06:00 CEST
    assert NIGHTLY.current(utc(2027, 3, 28, 3, 30)) == (utc(2027, 3, 28, 0, 0), utc(2027, 3, 28, 4, 0))
    # the next night opens at 01:00 CEST = 23:00 UTC
    assert NIGHTLY.next_open(utc(2027, 3, 28, 4, 0)) == utc(2027, 3, 28, 23, 0)


def test_weekend_window() -> None:
    w = MaintenanceWindow.parse("weekly:sat,sun@22:00 for 6h")
    # 2027-01-09 is a Saturday
    assert w.current(utc(2027, 1, 10, 1, 0)) == (utc(2027, 1, 9, 22, 0), utc(2027, 1, 10, 4, 0))
    # Sunday's window runs into Monday until 04:00
    assert w.end_of(utc(2027, 1, 11, 1, 0)) == utc(2027, 1, 11, 4, 0)
    assert not w.contains(utc(2027, 1, 11, 4, 0))
    assert w.next_open(utc(2027, 1, 11, 4, 0)) == utc(2027, 1, 16, 22, 0)


def test_spec_and_describe() -> None:
    assert NIGHTLY.spec() == "daily@01:00 for 4h in Europe/Berlin"
    assert MaintenanceWindow.parse(NIGHTLY.spec()) == NIGHTLY
    assert NIGHTLY.describe() == "every day at 01:00 Europe/Berlin, for 4h"


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("daily@01:00", "needs its length"),
        ("daily@01:00 for soon", "'soon' is not a duration"),
        ("daily@01:00 for 25h", "would overlap"),
        ("weekly:sat,sun@22:00 for 1d1h", "would overlap"),
        ("daily@01:00 for 0s", "more than zero"),
    ],
)
def test_window_errors(spec: str, named: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        MaintenanceWindow.parse(spec)
    assert named in str(caught.value) and spec in str(caught.value)
    assert caught.value.hint is not None and "for 4h" in caught.value.hint


def test_a_daily_window_of_a_whole_day_is_allowed() -> None:
    # the spring-forward day is 23 hours long, but on the wall clock openings are a day apart
    w = MaintenanceWindow.parse("daily@01:00 for 24h in Europe/Berlin")
    assert w.contains(utc(2027, 3, 28, 12, 0))


# --- missed starts -------------------------------------------------------------------------------

EARLY = Schedule.parse("daily@03:00 in Europe/Berlin")  # 02:00 UTC in winter


def test_a_start_missed_while_down_runs_when_still_in_its_window() -> None:
    d = due(EARLY, last_considered=utc(2027, 1, 5, 1, 0), now=utc(2027, 1, 5, 3, 0), window=NIGHTLY)
    assert d.run_now and d.missed and d.start == utc(2027, 1, 5, 2, 0)
    assert d.until == utc(2027, 1, 5, 4, 0)
    assert d.message == (
        "missed the 03:00 start (coordinator down); running now, within the window until 05:00"
    )


def test_a_start_missed_past_its_window_waits_for_the_next() -> None:
    d = due(EARLY, last_considered=utc(2027, 1, 5, 1, 0), now=utc(2027, 1, 5, 9, 0), window=NIGHTLY)
    assert not d.run_now and d.missed and d.next_start == utc(2027, 1, 6, 2, 0)
    assert d.message == (
        "missed the 03:00 start (coordinator down), its window has closed; "
        "skipped, next start 2027-01-06 03:00 Europe/Berlin"
    )


def test_several_missed_starts_run_once() -> None:
    d = due(EARLY, last_considered=utc(2027, 1, 1, 12, 0), now=utc(2027, 1, 5, 2, 30), window=NIGHTLY)
    assert d.run_now and d.missed_count == 4 and d.start == utc(2027, 1, 5, 2, 0)
    assert d.message.startswith("missed 4 starts, the last 03:00 (coordinator down); running now")


def test_without_a_window_a_grace_period_applies() -> None:
    inside = due(EARLY, utc(2027, 1, 5, 1, 0), utc(2027, 1, 5, 2, 40), grace=timedelta(hours=1))
    assert inside.run_now and inside.until == utc(2027, 1, 5, 3, 0)
    assert inside.message.endswith("running now, within the grace period until 04:00")
    late = due(EARLY, utc(2027, 1, 5, 1, 0), utc(2027, 1, 5, 3, 0), grace=timedelta(hours=1))
    assert not late.run_now
    assert late.message == (
        "missed the 03:00 start (coordinator down), more than 1h late; "
        "skipped, next start 2027-01-06 03:00 Europe/Berlin"
    )


def test_a_start_on_time_is_due_not_missed() -> None:
    d = due(EARLY, utc(2027, 1, 5, 1, 59), utc(2027, 1, 5, 2, 0, 5), window=NIGHTLY)
    assert d.run_now and not d.missed
    assert d.message == "the 03:00 start is due; running now, within the window until 05:00"


def test_nothing_due_says_when_the_next_start_is() -> None:
    d = due(EARLY, utc(2027, 1, 5, 2, 30), utc(2027, 1, 5, 12, 0), window=NIGHTLY)
    assert not d.run_now and not d.missed and d.next_start == utc(2027, 1, 6, 2, 0)
    assert d.message == "next start 2027-01-06 03:00 Europe/Berlin"


def test_a_start_outside_every_window_runs_in_the_next_window() -> None:
    # starts at 12:00 Berlin; the window is 01:00-05:00: the start runs in the following night
    noon = Schedule.parse("daily@12:00 in Europe/Berlin")
    d = due(noon, utc(2027, 1, 5, 10, 0), utc(2027, 1, 6, 1, 0), window=NIGHTLY)
    assert d.run_now and d.until == utc(2027, 1, 6, 4, 0)
