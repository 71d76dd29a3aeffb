"""Human durations: "90s", "15m", "1h30m", "2d", plain seconds, or ISO 8601 ("PT15M")."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_ISO = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$", re.IGNORECASE)


def parse_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("a duration is text with a unit, like '90s', '15m', '1h30m'")
    text = str(value).strip().lower().replace(" ", "")
    if not text:
        raise ValueError("empty duration")
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        # A bare number is ambiguous: CAU's own options count minutes, most tools seconds.
        if float(text) == 0:
            return timedelta(0)
        raise ValueError(
            f"'{value}' has no unit: write {text}m for minutes or {text}s for seconds "
            "(examples: 90s, 15m, 1h30m, 2d)"
        )
    iso = _ISO.match(text.upper())
    if iso and any(iso.groups()):
        days, hours, minutes, seconds = (float(g) if g else 0.0 for g in iso.groups())
        return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"'{value}' is not a duration (examples: 90s, 15m, 1h30m, 2d)")
    return timedelta(seconds=total)


def format_duration(delta: timedelta | float | None) -> str:
    """Compact, exact-enough text for people: 4s, 2m05s, 1h02m."""
    if delta is None:
        return "-"
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _serialize(delta: timedelta) -> str:
    return format_duration_exact(delta)


def format_duration_exact(delta: timedelta) -> str:
    """A lossless text form that parse_duration reads back (used when profiles are saved)."""
    seconds = delta.total_seconds()
    if seconds == int(seconds):
        whole = int(seconds)
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if whole and whole % size == 0:
                return f"{whole // size}{unit}"
        return f"{whole}s"
    return f"{seconds}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(_serialize, return_type=str)]
