"""What a store keeps about runs besides their journals: the run record, a query of runs, and
the cluster lock (who coordinates a cluster, until when)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cau.domain.profile import RunProfile
from cau.domain.results import RunState, Status


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    cluster: str
    provider: str
    state: RunState
    created: datetime
    # as given, not redacted: a resumed run must run the same scripts (the journal keeps a
    # redacted copy for reports)
    profile: RunProfile
    owner: str | None = None
    status: Status | None = None
    finished: datetime | None = None
    error_id: str | None = None
    message: str | None = None
    stop_requested: bool = False
    stop_requested_by: str | None = None
    stop_reason: str | None = None


@dataclass(frozen=True)
class ReportQuery:
    cluster: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    last: int | None = None  # the newest N (still returned oldest first)
    states: tuple[RunState, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class LockOwner:
    """Who holds (or wants) a cluster lock: a coordinator process on a host."""

    host: str
    pid: int
    started: str | None  # process start time, so a reused PID is not mistaken for the owner
    label: str = "cau run"

    @property
    def id(self) -> str:
        return f"{self.host}:{self.pid}:{self.started or '?'}"

    def __str__(self) -> str:
        return f"{self.label} (pid {self.pid} on {self.host})"


@dataclass(frozen=True)
class LockInfo:
    cluster: str
    owner: LockOwner
    run_id: str | None
    acquired: datetime
    lease_expires: datetime
    recovered_from: str | None = None  # the previous owner, when this lock was taken over
