"""When a self-updating run starts: CAU's schedule parameter sets, in an IANA time zone.

The recurrences are python-dateutil's rrule; this module only maps CAU's options onto it and
turns local wall-clock times into instants.

Kinds (CAU's parameter sets, §3.2 of the feature reference):

* monthly: on given weekdays of given weeks of the month. A "week" is the weekday's occurrence in
  the month (the 2nd Tuesday is Patch Tuesday); `last` is the last one (CAU's WeeksOfMonth = 5).
* weekly: every N weeks (1 = every week, 2 = every other week) on given weekdays. Weeks run Monday
  to Sunday and are counted from the week of the first start on or after the start date, so
  "every other Wednesday from Friday 2027-01-01" starts on Wednesday 2027-01-06.
* daily: every day.
* once: a single start (CAU's RunOnce).

The compact form (for the self-updating role's `--schedule`, and `cau run --window` before ` for`):

    monthly:WEEKS-DAYS@HH:MM     monthly:last-tue@03:00   monthly:2nd,4th-tue,thu@03:00
    weekly:DAYS@HH:MM            weekly:sat,sun@22:00
    weekly/N:DAYS@HH:MM          weekly/2:wed@22:00       (every other Wednesday)
    daily@HH:MM                  daily@01:30
    once:YYYY-MM-DDTHH:MM        once:2027-01-05T03:00

WEEKS are 1st 2nd 3rd 4th last (or 1 2 3 4 5, CAU's numbers, 5 = last); DAYS are mon tue wed thu
fri sat sun, comma-separated. The time zone and the start date come with `--tz` and `--start`, or in
the text itself: `monthly:last-tue@03:00 in Europe/Berlin from 2027-01-01`. The time zone defaults
to UTC; without a start date the schedule applies from the first matching day (an every-N-weeks
schedule with N > 1 needs one: it says which weeks).

Daylight saving (the rule, for every kind):

* A start time that does not exist that day (clocks jump from 02:00 to 03:00 and the start is
  02:30) runs once, as far after the jump as it was into the gap: 02:30 runs at 03:30 local time.
  This is Python's own reading of such a time (PEP 495, fold=0: the offset before the change), so
  the starts of one day keep their order and their distance from the night's earlier starts.
* A start time that exists twice (clocks fall back from 03:00 to 02:00 and the start is 02:30)
  runs once, at its first occurrence (still on summer time).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import rrule
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cau.errors import ConfigError

SCHEDULE_SCHEMA_VERSION: Literal[1] = 1

EXAMPLES = (
    "monthly:last-tue@03:00, monthly:2nd-tue,thu@03:00, weekly:sat@22:00, "
    "weekly/2:wed@22:00, daily@01:30, once:2027-01-05T03:00"
)

WINDOW_EXAMPLES = "daily@01:00 for 4h in Europe/Berlin, weekly:sat,sun@22:00 for 6h"


class ScheduleError(ConfigError):
    """A schedule (or window) text that cannot be read: names the bad part, shows valid ones."""

    def __init__(self, text: str, problem: str, *, window: bool = False) -> None:
        self.text = text
        self.problem = problem
        self.window = window
        what = "window" if window else "schedule"
        examples = WINDOW_EXAMPLES if window else EXAMPLES
        super().__init__(f"{what} '{text}': {problem}", hint=f"valid {what}s: {examples}")


class Kind(StrEnum):
    MONTHLY = "monthly"
    WEEKLY = "weekly"
    DAILY = "daily"
    ONCE = "once"


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"

    @property
    def rrule_day(self) -> rrule.weekday:
        return rrule.weekdays[list(Weekday).index(self)]

    @property
    def full_name(self) -> str:
        return _DAY_NAMES[self]


_DAY_NAMES = {
    Weekday.MON: "Monday",
    Weekday.TUE: "Tuesday",
    Weekday.WED: "Wednesday",
    Weekday.THU: "Thursday",
    Weekday.FRI: "Friday",
    Weekday.SAT: "Saturday",
    Weekday.SUN: "Sunday",
}
LAST_WEEK = 5  # CAU's WeeksOfMonth: 5 is the last week of the month
_WEEK_WORDS = {"1st": 1, "2nd": 2, "3rd": 3, "4th": 4, "last": LAST_WEEK}
_WEEK_NAMES = {n: w for w, n in _WEEK_WORDS.items()}


class Schedule(BaseModel):
    """A recurring (or one-off) start time. Stored with the self-updating role."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEDULE_SCHEMA_VERSION
    kind: Kind
    days: list[Weekday] = Field(default_factory=list, description="monthly and weekly: the weekdays")
    weeks: list[int] = Field(
        default_factory=list, description="monthly: the weekday's occurrences, 1..4 and 5 = last"
    )
    interval: int = Field(1, ge=1, le=52, description="weekly: every N weeks")
    at: time = Field(description="local time of day (once: with the date in `on`)")
    on: date | None = Field(None, description="once: the date")
    start: date | None = Field(None, description="the first date a start may fall on")
    tz: str = Field("UTC", description="IANA time zone of `at`, e.g. Europe/Berlin")

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zone(value)
        return value

    @field_validator("at")
    @classmethod
    def _minutes(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("the time of day is local to `tz`; give it without an offset")
        return value.replace(second=0, microsecond=0)

    @model_validator(mode="after")
    def _complete(self) -> Schedule:
        if self.kind in (Kind.MONTHLY, Kind.WEEKLY) and not self.days:
            raise ValueError(f"a {self.kind} schedule needs at least one weekday")
        if self.kind is Kind.MONTHLY:
            if not self.weeks:
                raise ValueError("a monthly schedule needs the weeks (1st, 2nd, 3rd, 4th, last)")
            bad = [w for w in self.weeks if not 1 <= w <= LAST_WEEK]
            if bad:
                raise ValueError(f"weeks of the month are 1..4 and 5 (last), not {bad}")
        elif self.weeks:
            raise ValueError("weeks of the month belong to a monthly schedule")
        if self.kind is Kind.ONCE and self.on is None:
            raise ValueError("a once schedule needs its date (`on`)")
        if self.kind is Kind.WEEKLY and self.interval > 1 and self.start is None:
            raise ValueError(
                f"every {self.interval} weeks needs a start date to say which weeks "
                "(--start 2027-01-06, or ' from 2027-01-06' after the schedule)"
            )
        if self.kind is not Kind.WEEKLY and self.interval != 1:
            raise ValueError("an interval in weeks belongs to a weekly schedule")
        return self

    # --- parsing and printing ------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, *, tz: str | None = None, start: date | str | None = None) -> Schedule:
        """Read the compact form (see the module's docstring); `tz` and `start` are the separate
        flags, which the text may also carry (` in ZONE`, ` from DATE`) but not contradict."""
        recurrence, extra = _split_words(text, allowed=("in", "from"))
        zone_name = _agree(text, "time zone", extra.get("in"), tz)
        start_text = _agree(text, "start date", extra.get("from"), start if start is None else str(start))
        return parse_recurrence(
            text, recurrence, tz=zone_name or "UTC", start=_date(text, start_text) if start_text else None
        )

    def spec(self) -> str:
        """The compact form, with its zone and start: `Schedule.parse(s.spec()) == s`."""
        at = f"{self.at:%H:%M}"
        days = ",".join(d.value for d in self.days)
        if self.kind is Kind.MONTHLY:
            head = f"monthly:{','.join(_WEEK_NAMES[w] for w in self.weeks)}-{days}@{at}"
        elif self.kind is Kind.WEEKLY:
            head = f"weekly{f'/{self.interval}' if self.interval > 1 else ''}:{days}@{at}"
        elif self.kind is Kind.DAILY:
            head = f"daily@{at}"
        else:
            assert self.on is not None
            head = f"once:{self.on.isoformat()}T{at}"
        return head + f" in {self.tz}" + (f" from {self.start.isoformat()}" if self.start else "")

    def describe(self) -> str:
        """For people: 'the last Tuesday of every month at 03:00 Europe/Berlin'."""
        at = f"at {self.at:%H:%M} {self.tz}"
        days = _and([d.full_name for d in self.days])  # empty for daily and once
        since = f" (from {self.start.isoformat()})" if self.start else ""
        if self.kind is Kind.MONTHLY:
            weeks = _and([_WEEK_NAMES[w] for w in sorted(self.weeks)])
            return f"the {weeks} {days} of every month {at}{since}"
        if self.kind is Kind.WEEKLY:
            every = {1: "every", 2: "every other"}.get(self.interval, f"every {self.interval} weeks on")
            return f"{every} {days} {at}{since}"
        if self.kind is Kind.DAILY:
            return f"every day {at}{since}"
        assert self.on is not None
        return f"once, on {self.on.isoformat()} {at}"

    # --- the starts ----------------------------------------------------------------------------

    @property
    def zone(self) -> ZoneInfo:
        return zone(self.tz)

    def _rule(self, near: date) -> rrule.rrule:
        """The local starts; those before `near` may be left out (rrule walks from its dtstart,
        so the walk begins near the question unless the phase depends on the start date)."""
        first_day = self.start or near
        if self.kind is not Kind.ONCE and not (self.kind is Kind.WEEKLY and self.interval > 1):
            first_day = max(first_day, near)  # no phase: monthly, weekly, daily
        begin = datetime.combine(first_day, self.at)
        days = [d.rrule_day for d in self.days]
        if self.kind is Kind.MONTHLY:
            # rrule's nth weekday: TU(+2) is the 2nd Tuesday, TU(-1) the last one
            by = [d(-1 if w == LAST_WEEK else w) for d in days for w in self.weeks]
            return rrule.rrule(rrule.MONTHLY, dtstart=begin, byweekday=by)
        if self.kind is Kind.WEEKLY:
            # Count weeks from the week of the first start, not of the start date: rrule would
            # count from the start date's week and skip a first Wednesday that falls after it.
            first = rrule.rrule(rrule.WEEKLY, dtstart=begin, byweekday=days, wkst=rrule.MO)[0]
            return rrule.rrule(
                rrule.WEEKLY, dtstart=first, interval=self.interval, byweekday=days, wkst=rrule.MO
            )
        if self.kind is Kind.DAILY:
            return rrule.rrule(rrule.DAILY, dtstart=begin)
        assert self.on is not None
        return rrule.rrule(rrule.DAILY, dtstart=datetime.combine(self.on, self.at), count=1)

    def local_starts(self, near: date) -> Iterator[datetime]:
        """The starts as local wall-clock times (naive), from `near` on."""
        return iter(self._rule(near).xafter(datetime.combine(near, time()), inc=True))

    def to_instant(self, local: datetime) -> datetime:
        """A local wall-clock start as an instant (UTC), by the module's daylight-saving rule."""
        # fold=0: a time in a gap takes the offset from before the change (02:30 -> 03:30), a
        # time that happens twice its first occurrence.
        return local.replace(tzinfo=self.zone, fold=0).astimezone(UTC)

    def next_starts(self, after: datetime, count: int = 1) -> list[datetime]:
        """The next `count` starts strictly after `after` (aware), as UTC instants, in order."""
        if after.tzinfo is None:
            raise ValueError("next_starts needs an aware datetime (UTC), not a naive one")
        # Local wall-clock times map to instants with a shift of at most the gap: begin a day
        # early in local time and keep what falls after `after`.
        local_after = after.astimezone(self.zone).replace(tzinfo=None) - timedelta(days=1)
        starts: list[datetime] = []
        for local in self._rule(local_after.date()).xafter(local_after, inc=True):
            instant = self.to_instant(local)
            if instant > after:
                starts.append(instant)
                if len(starts) >= count:
                    break
        return starts

    def starts_between(self, after: datetime, until: datetime) -> list[datetime]:
        """The starts in (after, until], in order."""
        found: list[datetime] = []
        cursor = after
        while True:
            batch = self.next_starts(cursor, 32)
            found.extend(s for s in batch if s <= until)
            if len(batch) < 32 or batch[-1] > until:
                return found
            cursor = batch[-1]

    def local(self, instant: datetime) -> datetime:
        return instant.astimezone(self.zone)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone '{name}' (an IANA name such as Europe/Berlin or UTC)") from None


def parse_recurrence(text: str, recurrence: str, *, tz: str, start: date | None) -> Schedule:
    """The recurrence part (`monthly:last-tue@03:00`) of `text`, which errors quote."""
    head, at_sign, clock = recurrence.partition("@")
    kind_text, _, rest = head.partition(":")
    kind_text, slash, every = kind_text.partition("/")
    kind_text = kind_text.strip().lower()
    try:
        kind = Kind(kind_text)
    except ValueError:
        raise ScheduleError(text, f"'{kind_text}' is not a kind (monthly, weekly, daily or once)") from None
    interval = 1
    if slash:
        if kind is not Kind.WEEKLY or not every.isdigit() or int(every) < 1:
            raise ScheduleError(text, f"'/{every}' is not an interval: only weekly/N takes one (N >= 1)")
        interval = int(every)
    if kind is Kind.ONCE:
        if at_sign:
            raise ScheduleError(text, "once takes a date and time: once:2027-01-05T03:00")
        day_text, _, clock = rest.partition("T")
        on = _date(text, day_text)
        return _build(text, kind=kind, at=_clock(text, clock), on=on, tz=tz, start=start)
    if not at_sign:
        raise ScheduleError(text, "no time of day: end it with @HH:MM, e.g. daily@03:00")
    at = _clock(text, clock)
    if kind is Kind.DAILY:
        if rest:
            raise ScheduleError(text, f"daily takes no days ('{rest}'): daily@03:00")
        return _build(text, kind=kind, at=at, tz=tz, start=start)
    if kind is Kind.WEEKLY:
        return _build(text, kind=kind, at=at, days=_days(text, rest), interval=interval, tz=tz, start=start)
    weeks_text, dash, days_text = rest.partition("-")
    if not dash:
        raise ScheduleError(text, f"'{rest}' needs WEEKS-DAYS, e.g. monthly:last-tue@03:00")
    weeks = []
    for word in _items(weeks_text):
        number = _WEEK_WORDS.get(word) or (int(word) if word.isdigit() else None)
        if number is None or not 1 <= number <= LAST_WEEK:
            raise ScheduleError(text, f"'{word}' is not a week of the month (1st, 2nd, 3rd, 4th, last)")
        weeks.append(number)
    return _build(text, kind=kind, at=at, days=_days(text, days_text), weeks=weeks, tz=tz, start=start)


def _build(text: str, **fields: object) -> Schedule:
    try:
        return Schedule.model_validate(fields)
    except ValueError as exc:
        raise ScheduleError(text, _first_error(exc)) from None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first["msg"]).removeprefix("Value error, ")
    return str(exc)


def _items(text: str) -> list[str]:
    return [item.strip().lower() for item in text.split(",") if item.strip()]


def _days(text: str, days_text: str) -> list[Weekday]:
    names = {d.value: d for d in Weekday} | {d.full_name.lower(): d for d in Weekday}
    days = []
    for word in _items(days_text):
        if word not in names:
            raise ScheduleError(text, f"'{word}' is not a weekday (mon, tue, wed, thu, fri, sat, sun)")
        days.append(names[word])
    if not days:
        raise ScheduleError(text, "no weekday given (mon, tue, wed, thu, fri, sat, sun)")
    return list(dict.fromkeys(days))


def _clock(text: str, clock: str) -> time:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", clock.strip())
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ScheduleError(text, f"'{clock}' is not a time of day (HH:MM, 00:00 to 23:59)")
    return time(int(match.group(1)), int(match.group(2)))


def _date(text: str, value: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ScheduleError(text, f"'{value}' is not a date (YYYY-MM-DD)") from None


def _split_words(text: str, *, allowed: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """`RECURRENCE [WORD VALUE]...` -> the recurrence and {word: value}."""
    parts = text.split()
    if not parts:
        raise ScheduleError(text, "empty")
    extra: dict[str, str] = {}
    rest = parts[1:]
    while rest:
        word = rest.pop(0).lower()
        if word not in allowed:
            raise ScheduleError(text, f"'{word}' is not understood here (expected {', '.join(allowed)})")
        if not rest:
            raise ScheduleError(text, f"'{word}' needs a value")
        if word in extra:
            raise ScheduleError(text, f"'{word}' is given twice")
        extra[word] = rest.pop(0)
    return parts[0], extra


def _agree(text: str, what: str, inline: str | None, flag: str | None) -> str | None:
    if inline is not None and flag is not None and inline != flag:
        raise ScheduleError(text, f"the {what} is given twice and differently ('{inline}' and '{flag}')")
    return inline if inline is not None else flag


def _and(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]
