"""What is particular to the SQLite store (the contract every store keeps is in
tests/contract/test_store.py): its schema version, and its calls running off the event loop."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import stat
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cau.domain.runs import LockOwner
from cau.errors import ConfigError
from cau.journal.events import Progress
from cau.lease import provably_dead, this_process
from cau.ports import StoreContext
from cau.store.sqlite import SqliteFile, SqliteOptions, SqliteStore
from tests.contract.test_store import record

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_store_written_by_a_newer_cau_is_refused(tmp_path: Path) -> None:
    SqliteFile(tmp_path / "cau.db").close()
    db = sqlite3.connect(tmp_path / "cau.db")
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="schema version 99"):
        SqliteFile(tmp_path / "cau.db")


def test_a_slow_disk_never_stalls_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While every append takes half a second (a slow or remote disk), the event loop goes on:
    the engine's other tasks and the probes keep their beat."""
    original = SqliteFile.append

    def slow_append(self: SqliteFile, *args: object, **kwargs: object) -> object:
        time.sleep(0.5)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SqliteFile, "append", slow_append)

    async def main() -> tuple[int, float]:
        store = SqliteStore(tmp_path / "cau.db")
        await store.create_run(record("r1"))
        ticks = 0

        async def beat() -> None:  # a 10 ms probe grid, say
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        beater = asyncio.create_task(beat())
        started = time.monotonic()
        for i in range(3):
            await store.append("r1", Progress(message=f"m{i}"), NOW)
        took = time.monotonic() - started
        beater.cancel()
        await store.close()
        return ticks, took

    ticks, took = asyncio.run(main())
    assert took >= 1.5
    assert ticks >= 0.5 * took / 0.01  # the loop ran (a blocking store would give ~0 ticks)


def test_reused_pid_is_not_mistaken_for_the_owner() -> None:
    stale = LockOwner(socket.gethostname(), os.getpid(), "1")  # our pid, but a different start time
    assert provably_dead(stale)
    assert not provably_dead(this_process())
    assert not provably_dead(LockOwner("elsewhere", 1, "1"))


def test_the_store_s_files_are_its_owner_s_only(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a usual umask: new files would be world-readable
    try:
        home = tmp_path / "data"
        store = SqliteFile(home / "cau.db")
        store.close()
    finally:
        os.umask(old)
    files = [p for p in home.iterdir() if p.name.startswith("cau.db")]
    assert {p.name for p in files} >= {"cau.db"}
    for p in [*files, home]:
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, (p, oct(p.stat().st_mode))
    # a store left readable by an older release is tightened when opened
    (home / "cau.db").chmod(0o644)
    SqliteFile(home / "cau.db").close()
    assert stat.S_IMODE((home / "cau.db").stat().st_mode) == 0o600


def test_a_store_migrated_by_another_process_meanwhile_is_migrated_once(tmp_path: Path) -> None:
    # Process A is adding the journal's schema column (its transaction open) when process B opens
    # the store: B must wait and find the column, not add it again ("duplicate column name").
    import threading

    from cau.store.sqlite import _SCHEMA

    path = tmp_path / "cau.db"
    a = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    a.execute("PRAGMA journal_mode=WAL")
    a.executescript(_SCHEMA)  # an older store: its journal has no schema column yet
    a.execute("BEGIN IMMEDIATE")
    a.execute("ALTER TABLE journal ADD COLUMN schema INTEGER NOT NULL DEFAULT 1")
    done = threading.Timer(0.5, lambda: a.execute("COMMIT"))
    done.start()
    try:
        SqliteFile(path).close()
    finally:
        done.join()
        a.close()
    columns = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(journal)")]
    assert columns.count("schema") == 1


def test_opened_as_a_registered_store_it_is_the_data_dir_s_file_unless_told(tmp_path: Path) -> None:
    async def main(options: SqliteOptions) -> Path:
        store = SqliteStore.open(options, StoreContext(data_dir=tmp_path))
        try:
            await store.create_run(record("r1"))
            return store.path
        finally:
            await store.close()

    assert asyncio.run(main(SqliteOptions())) == tmp_path / "cau.db"
    assert asyncio.run(main(SqliteOptions(path=tmp_path / "elsewhere.db"))) == tmp_path / "elsewhere.db"
    assert (tmp_path / "elsewhere.db").exists()
