"""The SQLite store: journal ordering, schema version, and the cluster lock with its owner."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cau.domain.results import RunState
from cau.errors import ConfigError, LockHeld
from cau.journal.events import Progress
from cau.store.base import LockOwner, ReportQuery, RunRecord
from cau.store.sqlite import SqliteStore

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _run(store: SqliteStore, run_id: str, cluster: str = "c", created: datetime = NOW) -> None:
    store.create_run(
        RunRecord(run_id, cluster, "sandbox", RunState.RUNNING, created, {"max_retries_per_node": 3})
    )


def test_journal_is_ordered_and_readable_from_a_second_connection(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "cau.db")
    _run(store, "r1")
    for i in range(5):
        store.append("r1", Progress(message=f"m{i}"), NOW, node="n1")
    other = SqliteStore(tmp_path / "cau.db")
    events = other.events("r1")
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.payload for e in other.events("r1", after_seq=3)] == [
        Progress(message="m3"),
        Progress(message="m4"),
    ]


def test_active_run_and_queries(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "cau.db")
    _run(store, "old", created=NOW - timedelta(days=3))
    store.set_run_state("old", RunState.FINISHED)
    _run(store, "new")
    active = store.active_run("c")
    assert active is not None and active.run_id == "new"
    assert [r.run_id for r in store.list_runs(ReportQuery(cluster="c"))] == ["old", "new"]
    assert [r.run_id for r in store.list_runs(ReportQuery(cluster="c", last=1))] == ["new"]
    assert [r.run_id for r in store.list_runs(ReportQuery(since=NOW - timedelta(days=1)))] == ["new"]


def test_store_written_by_a_newer_cau_is_refused(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "cau.db").close()
    db = sqlite3.connect(tmp_path / "cau.db")
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="schema version 99"):
        SqliteStore(tmp_path / "cau.db")


def _owner(pid: int, host: str | None = None) -> LockOwner:
    from cau.store.base import _process_start_time

    return LockOwner(host or socket.gethostname(), pid, _process_start_time(pid))


def test_a_live_owner_keeps_the_lock_and_is_named(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "cau.db")
    holder = _owner(os.getppid())  # a process that is alive for the whole test
    store.acquire_lock("c", holder, run_id="r1", now=NOW, lease_seconds=300)
    me = LockOwner.this_process()
    with pytest.raises(LockHeld) as err:
        store.acquire_lock("c", me, run_id=None, now=NOW + timedelta(seconds=10), lease_seconds=300)
    assert f"pid {os.getppid()}" in str(err.value) and "run r1" in str(err.value)
    assert "--force-recovery" in (err.value.hint or "")
    # on purpose, --force-recovery takes it over and says from whom
    taken = store.acquire_lock("c", me, run_id=None, now=NOW, lease_seconds=300, force=True)
    assert taken.owner.id == me.id and taken.recovered_from == str(holder)


def test_a_dead_owner_on_this_host_loses_the_lock(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    dead = _owner(proc.pid)
    proc.wait()
    store = SqliteStore(tmp_path / "cau.db")
    store.acquire_lock("c", dead, run_id="r1", now=NOW, lease_seconds=300)
    taken = store.acquire_lock("c", LockOwner.this_process(), run_id=None, now=NOW, lease_seconds=300)
    assert taken.recovered_from == str(dead)


def test_an_owner_on_another_host_keeps_the_lock_until_its_lease_expires(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "cau.db")
    remote = LockOwner("other-host", 4242, "123")
    store.acquire_lock("c", remote, run_id=None, now=NOW, lease_seconds=300)
    me = LockOwner.this_process()
    with pytest.raises(LockHeld, match="other-host"):
        store.acquire_lock("c", me, run_id=None, now=NOW + timedelta(seconds=299), lease_seconds=300)
    assert store.renew_lock("c", remote, now=NOW + timedelta(seconds=200), lease_seconds=300)
    with pytest.raises(LockHeld):
        store.acquire_lock("c", me, run_id=None, now=NOW + timedelta(seconds=400), lease_seconds=300)
    taken = store.acquire_lock("c", me, run_id=None, now=NOW + timedelta(seconds=501), lease_seconds=300)
    assert taken.owner.id == me.id
    assert not store.renew_lock("c", remote, now=NOW, lease_seconds=300)  # the old owner learns it lost


def test_release_only_by_the_owner(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "cau.db")
    me = LockOwner.this_process()
    store.acquire_lock("c", me, run_id=None, now=NOW, lease_seconds=300)
    store.release_lock("c", LockOwner("other-host", 1, None))
    assert store.get_lock("c") is not None
    store.release_lock("c", me)
    assert store.get_lock("c") is None


def test_reused_pid_is_not_mistaken_for_the_owner() -> None:
    stale = LockOwner(socket.gethostname(), os.getpid(), "1")  # our pid, but a different start time
    assert stale.provably_dead()
    assert not LockOwner.this_process().provably_dead()
    assert not LockOwner("elsewhere", 1, "1").provably_dead()
