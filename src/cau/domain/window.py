"""Maintenance windows: the times in which nodes may be taken out of service.

A window is a schedule of openings (`cau.domain.schedule`) and a length. Its compact form is the
schedule's followed by ` for LENGTH`, then optionally ` in ZONE` and ` from DATE`:

    daily@01:00 for 4h in Europe/Berlin
    weekly:sat,sun@22:00 for 6h
    monthly:last-tue@03:00 for 2h in Europe/Berlin from 2027-01-01

Windows are half-open: a window opening at 01:00 for 4h contains 01:00 and not 05:00. Windows
must not overlap (the length is at most the shortest time between two openings) so that "the
window's end" is one instant.
"""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cau.domain.durations import Duration, format_duration_exact, parse_duration
from cau.domain.schedule import Kind, Schedule, ScheduleError, _agree, _date, _split_words, parse_recurrence

WINDOW_SCHEMA_VERSION: Literal[1] = 1
WINDOW_EXAMPLE = "daily@01:00 for 4h in Europe/Berlin"


class MaintenanceWindow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = WINDOW_SCHEMA_VERSION
    opens: Schedule = Field(description="when the window opens")
    length: Duration = Field(description="how long it stays open, e.g. 4h")

    @model_validator(mode="after")
    def _sane_length(self) -> MaintenanceWindow:
        if self.length <= timedelta(0):
            raise ValueError("a window's length must be more than zero")
        if self.opens.kind is not Kind.ONCE:
            # the shortest time between two openings of a weekday-based schedule is a day at most
            # a week apart; check the real gaps over a year of openings
            shortest = _shortest_gap(self.opens)
            if shortest is not None and self.length > shortest:
                raise ValueError(
                    f"windows of {format_duration_exact(self.length)} would overlap: openings are "
                    f"as little as {format_duration_exact(shortest)} apart"
                )
        return self

    @classmethod
    def parse(cls, text: str, *, tz: str | None = None, start: date | str | None = None) -> MaintenanceWindow:
        try:
            return cls._parse(text, tz=tz, start=start)
        except ScheduleError as exc:
            if exc.window:
                raise
            raise ScheduleError(text, exc.problem, window=True) from None

    @classmethod
    def _parse(cls, text: str, *, tz: str | None, start: date | str | None) -> MaintenanceWindow:
        recurrence, extra = _split_words(text, allowed=("for", "in", "from"))
        if "for" not in extra:
            raise ScheduleError(text, f"a window needs its length: '... for 4h', e.g. '{WINDOW_EXAMPLE}'")
        try:
            length = parse_duration(extra["for"])
        except ValueError as exc:
            raise ScheduleError(text, f"length: {exc}") from None
        zone_name = _agree(text, "time zone", extra.get("in"), tz)
        start_text = _agree(text, "start date", extra.get("from"), None if start is None else str(start))
        opens = parse_recurrence(
            text, recurrence, tz=zone_name or "UTC", start=_date(text, start_text) if start_text else None
        )
        try:
            return cls(opens=opens, length=length)
        except ValueError as exc:
            errors = getattr(exc, "errors", None)
            problem = str(errors()[0]["msg"]).removeprefix("Value error, ") if callable(errors) else str(exc)
            raise ScheduleError(text, problem) from None

    def spec(self) -> str:
        head, _, tail = self.opens.spec().partition(" ")
        return f"{head} for {format_duration_exact(self.length)} {tail}"

    def describe(self) -> str:
        return f"{self.opens.describe()}, for {format_duration_exact(self.length)}"

    # --- where an instant falls ------------------------------------------------------------------

    def current(self, t: datetime) -> tuple[datetime, datetime] | None:
        """The window (opening, end) that contains `t`, or None."""
        # the one opening in (t - length, t], if any: windows do not overlap
        starts = self.opens.next_starts(t - self.length, 1)
        if starts and starts[0] <= t:
            return starts[0], starts[0] + self.length
        return None

    def contains(self, t: datetime) -> bool:
        return self.current(t) is not None

    def end_of(self, t: datetime) -> datetime | None:
        """When the window that contains `t` ends (None outside a window)."""
        window = self.current(t)
        return window[1] if window else None

    def next_open(self, t: datetime) -> datetime | None:
        """The next opening after `t` (None when a one-off window has passed)."""
        starts = self.opens.next_starts(t, 1)
        return starts[0] if starts else None

    def open_at_or_after(self, t: datetime) -> tuple[datetime, datetime] | None:
        """The window that contains `t`, else the next one."""
        now = self.current(t)
        if now is not None:
            return now
        opening = self.next_open(t)
        return (opening, opening + self.length) if opening else None


def _shortest_gap(schedule: Schedule) -> timedelta | None:
    """The shortest time between two openings on the wall clock (a day shortened by a change to
    summer time does not make a 24-hour daily window overlap)."""
    first = schedule.start or date(2000, 1, 3)
    starts = list(itertools.islice(schedule.local_starts(first), 60))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    return min(gaps) if gaps else None
