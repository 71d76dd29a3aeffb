"""The one rule of cluster locks: is the coordinator that holds a lock still alive?

A lock is held by a coordinator process. Its holder is gone when its lease expired (it renews
every tenth of the lease while it works) or, sooner, when it ran on this host and its process is
gone (PID plus the kernel's start time, so a reused PID is not mistaken for it). Every backend's
`acquire_lock` decides with `take_over()`, and everything that shows whether a run is being
driven (`cau status`, `cau stop --wait`, the dashboard) asks `holder_state()`.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from cau.domain.runs import LockInfo, LockOwner
from cau.errors import LockHeld


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of a process (field 22 of /proc/PID/stat), to detect PID reuse."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def this_process(label: str = "cau run") -> LockOwner:
    pid = os.getpid()
    return LockOwner(socket.gethostname(), pid, _process_start_time(pid), label)


def provably_dead(owner: LockOwner) -> bool:
    """True only when `owner` ran on this host and that process is gone."""
    if owner.host != socket.gethostname():
        return False
    current = _process_start_time(owner.pid)
    return current is None or (owner.started is not None and current != owner.started)


class Holder(StrEnum):
    NONE = "none"  # no lock
    ALIVE = "alive"  # a coordinator holds it and works
    EXPIRED = "expired"  # its lease ran out: it stopped renewing (dead, hung or cut off)
    DEAD = "dead"  # it ran on this host and its process is gone


def holder_state(lock: LockInfo | None, now: datetime) -> Holder:
    if lock is None:
        return Holder.NONE
    if provably_dead(lock.owner):
        return Holder.DEAD
    if lock.lease_expires <= now:
        return Holder.EXPIRED
    return Holder.ALIVE


def driving(lock: LockInfo | None, run_id: str, now: datetime) -> bool:
    """Whether a live coordinator holds the lock for this run."""
    return lock is not None and lock.run_id == run_id and holder_state(lock, now) is Holder.ALIVE


def take_over(held: LockInfo | None, me: LockOwner, now: datetime, *, force: bool) -> str | None:
    """May `me` take the lock `held`? Returns the previous owner it is taken over from (None when
    there was none, or it was `me`); raises LockHeld while a live coordinator holds it, unless
    `force` (`--force-recovery`: the operator knows that coordinator is dead)."""
    if held is None or held.owner.id == me.id:
        return None
    if holder_state(held, now) is Holder.ALIVE and not force:
        raise LockHeld(
            f"cluster '{held.cluster}' is being updated by {held.owner}"
            + (f", run {held.run_id}" if held.run_id else "")
            + f", since {held.acquired:%Y-%m-%d %H:%M:%S} UTC"
            f" (lease until {held.lease_expires:%H:%M:%S} UTC)",
            owner=str(held.owner),
            hint=f"wait for it, or stop it with `cau stop {held.cluster}`; if that coordinator "
            "is dead, `cau run --force-recovery` takes its lock over",
        )
    return str(held.owner)
