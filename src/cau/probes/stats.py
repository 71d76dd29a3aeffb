"""A probe's measurements, fed with check results in the order the checks were sent (pure).

An outage is a span of consecutive failed checks: from the send time of the first failed check to
the send time of the next successful one, so one failed check of a 50 ms probe is about 50 ms of
downtime. Results must come in send order even when a late check finishes after later ones: the
monitor holds results back until every earlier check has answered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from cau.probes.check import CheckResult

MAX_ERRORS = 5  # distinct error texts kept per outage (the rest are counted as "other")
_BUCKET_BASE = 1.02  # response-time histogram: buckets 2 % wide, so memory stays bounded
_BUCKET_MIN_MS = 0.01


@dataclass
class Outage:
    started: datetime
    ended: datetime | None = None
    failed_checks: int = 0
    late_checks: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return 0.0 if self.ended is None else max(0.0, (self.ended - self.started).total_seconds())

    def add_error(self, error: str) -> None:
        if error in self.errors or len(self.errors) < MAX_ERRORS:
            self.errors[error] = self.errors.get(error, 0) + 1
        else:
            self.errors["other errors"] = self.errors.get("other errors", 0) + 1

    def error_list(self) -> list[str]:
        return [e if n == 1 else f"{e} (x{n})" for e, n in self.errors.items()]


@dataclass(frozen=True)
class Transition:
    kind: str  # "down" (an outage began) | "up" (it ended)
    outage: Outage


class ResponseTimes:
    """Percentiles of response times from a log-bucket histogram (about 2 % precision)."""

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self.count = 0
        self.max_ms = 0.0

    def add(self, ms: float) -> None:
        bucket = math.ceil(math.log(max(ms, _BUCKET_MIN_MS) / _BUCKET_MIN_MS, _BUCKET_BASE))
        self._buckets[bucket] = self._buckets.get(bucket, 0) + 1
        self.count += 1
        self.max_ms = max(self.max_ms, ms)

    def percentile(self, p: float) -> float | None:
        if not self.count:
            return None
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return min(_BUCKET_MIN_MS * _BUCKET_BASE**bucket, self.max_ms)
        return self.max_ms


class ProbeStats:
    def __init__(self) -> None:
        self.sent = 0
        self.ok = 0
        self.failed = 0
        self.late = 0
        self.times = ResponseTimes()
        self.current: Outage | None = None  # the outage going on
        self.outages: list[Outage] = []

    def record(self, sent_at: datetime, result: CheckResult) -> Transition | None:
        """Fold in one check (in send order); returns the transition it caused, if any."""
        self.sent += 1
        if result.ok:
            self.ok += 1
            self.times.add(result.seconds * 1000)
            if self.current is None:
                return None
            outage, self.current = self.current, None
            outage.ended = sent_at
            self.outages.append(outage)
            return Transition("up", outage)
        self.failed += 1
        self.late += result.late
        began = self.current is None
        if self.current is None:
            self.current = Outage(started=sent_at)
        self.current.failed_checks += 1
        self.current.late_checks += result.late
        self.current.add_error(result.error or "failed")
        return Transition("down", self.current) if began else None

    def summary(self) -> dict[str, float | int | None]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "late": self.late,
            "p50_ms": ms(self.times.percentile(50)),
            "p99_ms": ms(self.times.percentile(99)),
            "max_ms": ms(self.times.max_ms) if self.times.count else None,
        }
