"""Is a scheduled run due now, and was a start missed while no coordinator was up?

The daemon remembers up to when it has considered the schedule (`last_considered`). When it
comes back after being down, the starts it slept through count once (the latest of them): a
missed start still runs if the moment to run it has not passed, else it is skipped and the next
start is awaited. "Has not passed" is:

* with a maintenance window: the window in which the start would have run (the one containing
  the start, or else the first one opening after it, since a scheduled run starts only inside a
  window) is still open now;
* without a window: less than `grace` (default 1 hour) has passed since the start.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict

from cau.domain.durations import format_duration_exact
from cau.domain.schedule import Schedule
from cau.domain.window import MaintenanceWindow

DUE_SCHEMA_VERSION = 1
DEFAULT_GRACE = timedelta(hours=1)
# A start this recent was not missed: the daemon simply woke up for it.
ON_TIME = timedelta(minutes=1)


class Due(BaseModel):
    """The answer, with a sentence for the log and `cau role show`."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = DUE_SCHEMA_VERSION
    run_now: bool
    start: datetime | None = None  # the start this answer is about (the latest one passed)
    missed: bool = False  # the start passed while no coordinator was up
    missed_count: int = 0  # how many starts passed unseen (they run once, as one)
    until: datetime | None = None  # run_now: the end of its window or grace period
    next_start: datetime | None = None  # not run_now: the next start to wait for
    message: str


def due(
    schedule: Schedule,
    last_considered: datetime,
    now: datetime,
    window: MaintenanceWindow | None = None,
    *,
    grace: timedelta = DEFAULT_GRACE,
) -> Due:
    """What to do at `now` about the starts in (last_considered, now]."""
    if last_considered.tzinfo is None or now.tzinfo is None:
        raise ValueError("due() needs aware datetimes (UTC)")
    passed = schedule.starts_between(last_considered, now)
    upcoming = schedule.next_starts(now, 1)
    next_start = upcoming[0] if upcoming else None

    def at(t: datetime) -> str:
        return _when(schedule, t, now)

    if not passed:
        text = f"next start {at(next_start)}" if next_start else "no start left (a one-off schedule has run)"
        return Due(run_now=False, next_start=next_start, message=text)
    start = passed[-1]
    missed = now - start >= ON_TIME
    if window is not None:
        slot = window.open_at_or_after(start)
        until = slot[1] if slot and slot[0] <= now < slot[1] else None
        within = f"within the window until {at(until)}" if until else ""
        too_late = "its window has closed" if slot is None or now >= slot[1] else "outside the window"
    else:
        until = start + grace if now < start + grace else None
        within = f"within the grace period until {at(until)}" if until else ""
        too_late = f"more than {format_duration_exact(grace)} late"
    what = f"the {at(start)} start"
    if len(passed) > 1:
        what = f"{len(passed)} starts, the last {at(start)}"
    if until is not None:
        head = f"missed {what} (coordinator down); running now" if missed else f"{what} is due; running now"
        return Due(
            run_now=True,
            start=start,
            missed=missed,
            missed_count=len(passed) if missed else 0,
            until=until,
            message=f"{head}, {within}",
        )
    after = f"next start {at(next_start)}" if next_start else "no start left"
    return Due(
        run_now=False,
        start=start,
        missed=True,
        missed_count=len(passed),
        next_start=next_start,
        message=f"missed {what} (coordinator down), {too_late}; skipped, {after}",
    )


def _when(schedule: Schedule, t: datetime, now: datetime) -> str:
    """A time in the schedule's zone; the date too unless it is `now`'s date there."""
    local = schedule.local(t)
    if local.date() == schedule.local(now).date():
        return f"{local:%H:%M}"
    return f"{local:%Y-%m-%d %H:%M} {schedule.tz}"
