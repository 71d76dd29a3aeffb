"""What the engine and the services keep: runs, their journals and reports, and cluster locks.

The journal is append-only: for every side effect an `intent` event is written before acting and
an `outcome` after, so a restarted coordinator resumes by replaying it and observing the cluster.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from cau.domain.results import RunState, Status
from cau.journal.events import EventPayload, JournalEvent

# 2: API tokens, users, browser sessions, audit trail, stored profiles; 3: typed journal events
# (each event's event schema, cau.journal.events.EVENT_SCHEMA)
SCHEMA_VERSION = 3


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    cluster: str
    provider: str
    state: RunState
    created: datetime
    profile: dict[str, Any]
    owner: str | None = None
    status: Status | None = None
    finished: datetime | None = None
    error_id: str | None = None
    message: str | None = None
    stop_requested: bool = False
    stop_requested_by: str | None = None
    stop_reason: str | None = None


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of a process (field 22 of /proc/PID/stat), to detect PID reuse."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


@dataclass(frozen=True)
class LockOwner:
    """Who holds (or wants) a cluster lock: a coordinator process on a host."""

    host: str
    pid: int
    started: str | None  # process start time, so a reused PID is not mistaken for the owner
    label: str = "cau run"

    @staticmethod
    def this_process(label: str = "cau run") -> LockOwner:
        pid = os.getpid()
        return LockOwner(socket.gethostname(), pid, _process_start_time(pid), label)

    @property
    def id(self) -> str:
        return f"{self.host}:{self.pid}:{self.started or '?'}"

    def __str__(self) -> str:
        return f"{self.label} (pid {self.pid} on {self.host})"

    def provably_dead(self) -> bool:
        """True only when this owner ran on this host and that process is gone."""
        if self.host != socket.gethostname():
            return False
        current = _process_start_time(self.pid)
        return current is None or (self.started is not None and current != self.started)


@dataclass(frozen=True)
class LockInfo:
    cluster: str
    owner: LockOwner
    run_id: str | None
    acquired: datetime
    lease_expires: datetime
    recovered_from: str | None = None  # the previous owner, when this lock was taken over


@dataclass
class ReportQuery:
    cluster: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    last: int | None = None
    states: tuple[RunState, ...] = field(default_factory=tuple)


class Store(Protocol):
    # runs
    def create_run(self, run: RunRecord) -> None: ...

    def get_run(self, run_id: str) -> RunRecord | None: ...

    def find_runs(self, prefix: str) -> list[RunRecord]: ...

    def active_run(self, cluster: str) -> RunRecord | None: ...

    def list_runs(self, query: ReportQuery) -> list[RunRecord]: ...

    def set_run_state(
        self,
        run_id: str,
        state: RunState,
        *,
        owner: str | None = None,
        status: Status | None = None,
        finished: datetime | None = None,
        error_id: str | None = None,
        message: str | None = None,
    ) -> None: ...

    def request_stop(self, run_id: str, *, by: str, reason: str) -> None: ...

    def save_report(self, run_id: str, report: dict[str, Any]) -> None: ...

    def get_report(self, run_id: str) -> dict[str, Any] | None: ...

    # journal
    def append(
        self, run_id: str, payload: EventPayload, ts: datetime, *, node: str | None = None
    ) -> JournalEvent: ...

    def events(self, run_id: str, after_seq: int = 0) -> list[JournalEvent]: ...

    # cluster lock
    def acquire_lock(
        self,
        cluster: str,
        owner: LockOwner,
        *,
        run_id: str | None,
        now: datetime,
        lease_seconds: float,
        force: bool = False,
    ) -> LockInfo: ...

    def set_lock_run(self, cluster: str, owner: LockOwner, run_id: str) -> None: ...

    def renew_lock(self, cluster: str, owner: LockOwner, *, now: datetime, lease_seconds: float) -> bool: ...

    def release_lock(self, cluster: str, owner: LockOwner) -> None: ...

    def get_lock(self, cluster: str) -> LockInfo | None: ...

    def close(self) -> None: ...
