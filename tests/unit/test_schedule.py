"""Schedules against calendars checked by hand (`python3 -m calendar 2027`), daylight-saving
changes included: Europe/Berlin changes on 2027-03-28 (02:00 CET -> 03:00 CEST) and 2027-10-31
(03:00 CEST -> 02:00 CET); America/New_York on 2027-03-14 (02:00 EST -> 03:00 EDT) and 2027-11-07
(02:00 EDT -> 01:00 EST)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cau.domain.schedule import Kind, Schedule, ScheduleError, Weekday


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def local_days(schedule: Schedule, starts: list[datetime]) -> list[date]:
    return [schedule.local(s).date() for s in starts]


def test_every_last_tuesday_of_2027() -> None:
    s = Schedule.parse("monthly:last-tue@03:00", tz="Europe/Berlin")
    starts = s.next_starts(utc(2026, 12, 31), 12)
    assert local_days(s, starts) == [
        date(2027, 1, 26),
        date(2027, 2, 23),
        date(2027, 3, 30),
        date(2027, 4, 27),
        date(2027, 5, 25),
        date(2027, 6, 29),
        date(2027, 7, 27),
        date(2027, 8, 31),
        date(2027, 9, 28),
        date(2027, 10, 26),
        date(2027, 11, 30),
        date(2027, 12, 28),
    ]
    # 03:00 Berlin: 02:00 UTC in winter, 01:00 UTC in summer
    assert starts[0] == utc(2027, 1, 26, 2, 0)
    assert starts[2] == utc(2027, 3, 30, 1, 0)
    assert all(s.local(t).hour == 3 and s.local(t).minute == 0 for t in starts)


def test_second_and_last_tuesday_and_thursday() -> None:
    s = Schedule.parse("monthly:2nd,last-tue,thu@03:00")
    # January 2027: Tuesdays 5 12 19 26, Thursdays 7 14 21 28
    assert local_days(s, s.next_starts(utc(2027, 1, 1), 4)) == [
        date(2027, 1, 12),
        date(2027, 1, 14),
        date(2027, 1, 26),
        date(2027, 1, 28),
    ]


def test_every_other_wednesday_from_a_start_date() -> None:
    # 2027-01-01 is a Friday: the first Wednesday on or after it is the 6th
    s = Schedule.parse("weekly/2:wed@22:00", start="2027-01-01")
    assert local_days(s, s.next_starts(utc(2026, 6, 1), 7)) == [
        date(2027, 1, 6),
        date(2027, 1, 20),
        date(2027, 2, 3),
        date(2027, 2, 17),
        date(2027, 3, 3),
        date(2027, 3, 17),
        date(2027, 3, 31),
    ]
    # asked from the middle: the phase stays that of the start date
    assert local_days(s, s.next_starts(utc(2027, 2, 4), 2)) == [date(2027, 2, 17), date(2027, 3, 3)]


def test_nothing_before_the_start_date() -> None:
    s = Schedule.parse("daily@01:30 from 2027-05-01")
    assert s.next_starts(utc(2027, 1, 1), 1) == [utc(2027, 5, 1, 1, 30)]


def test_once_runs_once() -> None:
    s = Schedule.parse("once:2027-01-05T03:00", tz="Europe/Berlin")
    assert s.next_starts(utc(2027, 1, 1), 3) == [utc(2027, 1, 5, 2, 0)]
    assert s.next_starts(utc(2027, 1, 5, 2, 0), 1) == []


def test_berlin_spring_forward_a_missing_0230_runs_once_at_0330() -> None:
    s = Schedule.parse("daily@02:30", tz="Europe/Berlin")
    starts = s.next_starts(utc(2027, 3, 26), 4)
    assert starts == [
        utc(2027, 3, 26, 1, 30),  # 02:30 CET
        utc(2027, 3, 27, 1, 30),
        utc(2027, 3, 28, 1, 30),  # 02:30 does not exist: 03:30 CEST
        utc(2027, 3, 29, 0, 30),  # 02:30 CEST
    ]
    assert f"{s.local(starts[2]):%H:%M}" == "03:30"


def test_berlin_fall_back_a_doubled_0230_runs_once_the_first_time() -> None:
    s = Schedule.parse("daily@02:30", tz="Europe/Berlin")
    assert s.next_starts(utc(2027, 10, 30), 3) == [
        utc(2027, 10, 30, 0, 30),  # 02:30 CEST
        utc(2027, 10, 31, 0, 30),  # the first 02:30 (CEST); not 01:30 UTC as well
        utc(2027, 11, 1, 1, 30),  # 02:30 CET
    ]


def test_new_york_spring_forward_and_fall_back() -> None:
    spring = Schedule.parse("daily@02:30", tz="America/New_York")
    assert spring.next_starts(utc(2027, 3, 13), 3) == [
        utc(2027, 3, 13, 7, 30),  # 02:30 EST
        utc(2027, 3, 14, 7, 30),  # 02:30 does not exist: 03:30 EDT
        utc(2027, 3, 15, 6, 30),  # 02:30 EDT
    ]
    fall = Schedule.parse("daily@01:30", tz="America/New_York")
    assert fall.next_starts(utc(2027, 11, 6), 3) == [
        utc(2027, 11, 6, 5, 30),  # 01:30 EDT
        utc(2027, 11, 7, 5, 30),  # the first 01:30 (EDT) only
        utc(2027, 11, 8, 6, 30),  # 01:30 EST
    ]


def test_a_start_between_the_two_0130s_is_not_run_again() -> None:
    s = Schedule.parse("daily@01:30", tz="America/New_York")
    # 06:00 UTC on 2027-11-07 is 01:00 EST, before the second 01:30: that one does not run
    assert s.next_starts(utc(2027, 11, 7, 6, 0), 1) == [utc(2027, 11, 8, 6, 30)]


@pytest.mark.parametrize(
    ("spec", "described"),
    [
        ("monthly:last-tue@03:00 in Europe/Berlin", "the last Tuesday of every month at 03:00 Europe/Berlin"),
        (
            "monthly:2nd,last-tue,thu@03:00",
            "the 2nd and last Tuesday and Thursday of every month at 03:00 UTC",
        ),
        ("weekly:sat,sun@22:00", "every Saturday and Sunday at 22:00 UTC"),
        ("weekly/2:wed@22:00 from 2027-01-01", "every other Wednesday at 22:00 UTC (from 2027-01-01)"),
        ("weekly/3:mon@22:00 from 2027-01-01", "every 3 weeks on Monday at 22:00 UTC (from 2027-01-01)"),
        ("daily@01:30 in America/New_York", "every day at 01:30 America/New_York"),
        ("once:2027-01-05T03:00 in Europe/Berlin", "once, on 2027-01-05 at 03:00 Europe/Berlin"),
    ],
)
def test_describe_and_round_trip(spec: str, described: str) -> None:
    s = Schedule.parse(spec)
    assert s.describe() == described
    assert Schedule.parse(s.spec()) == s
    assert Schedule.model_validate_json(s.model_dump_json()) == s


def test_cau_week_numbers_and_full_day_names() -> None:
    s = Schedule.parse("monthly:2,5-Tuesday@03:00")
    assert s.kind is Kind.MONTHLY and s.weeks == [2, 5] and s.days == [Weekday.TUE]


def test_flags_and_text_agree_or_are_refused() -> None:
    assert Schedule.parse("daily@01:00", tz="Europe/Berlin").tz == "Europe/Berlin"
    assert Schedule.parse("daily@01:00 in Europe/Berlin", tz="Europe/Berlin").tz == "Europe/Berlin"
    with pytest.raises(ScheduleError, match="time zone is given twice"):
        Schedule.parse("daily@01:00 in Europe/Berlin", tz="UTC")


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("monthly:lst-tue@03:00", "'lst' is not a week of the month"),
        ("monthly:tue@03:00", "needs WEEKS-DAYS"),
        ("weekly:wex@22:00", "'wex' is not a weekday"),
        ("weekly/0:wed@22:00", "'/0' is not an interval"),
        ("weekly/2:wed@22:00", "needs a start date"),
        ("daily@25:00", "'25:00' is not a time of day"),
        ("daily", "no time of day"),
        ("hourly@01:00", "'hourly' is not a kind"),
        ("once:2027-13-05T03:00", "'2027-13-05' is not a date"),
        ("daily@01:00 in Mars/Base", "unknown time zone 'Mars/Base'"),
        ("daily@01:00 at noon", "'at' is not understood"),
    ],
)
def test_errors_name_the_bad_part_and_show_a_valid_example(spec: str, named: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        Schedule.parse(spec)
    assert named in str(caught.value) and spec in str(caught.value)
    assert caught.value.hint is not None and "monthly:last-tue@03:00" in caught.value.hint


def test_next_starts_wants_an_aware_time() -> None:
    s = Schedule.parse("daily@01:00")
    with pytest.raises(ValueError, match="aware"):
        s.next_starts(datetime(2027, 1, 1), 1)


SPECS = [
    "daily@02:30",
    "daily@01:30",
    "weekly:sun@02:15",
    "weekly/2:sun,wed@02:45 from 2027-01-03",
    "monthly:last-sun@02:30",
    "monthly:1st,3rd-sat@23:59",
]
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"]


@settings(max_examples=200, deadline=None)
@given(
    spec=st.sampled_from(SPECS),
    tz=st.sampled_from(ZONES),
    after=st.datetimes(
        min_value=datetime(2026, 6, 1), max_value=datetime(2028, 6, 1), timezones=st.just(UTC)
    ),
)
def test_starts_asked_one_by_one_are_the_starts_asked_together(spec: str, tz: str, after: datetime) -> None:
    """Across any daylight-saving change (Lord Howe moves by half an hour): starts are strictly
    after `after`, in order, one per scheduled local day, and stepping through them one at a time
    neither skips nor repeats one."""
    s = Schedule.parse(spec, tz=tz)
    together = s.next_starts(after, 6)
    assert len(together) == 6 and together[0] > after
    assert all(a < b for a, b in itertools.pairwise(together))
    assert len({s.local(t).date() for t in together}) == 6  # never twice on one day
    one_by_one: list[datetime] = []
    cursor = after
    for _ in range(6):
        cursor = s.next_starts(cursor, 1)[0]
        one_by_one.append(cursor)
    assert one_by_one == together
    for t in together:  # on time, or later by the gap the clocks jumped over
        local = s.local(t)
        late = datetime.combine(local.date(), local.time()) - datetime.combine(local.date(), s.at)
        assert timedelta(0) <= late <= timedelta(hours=1), (t, local)
