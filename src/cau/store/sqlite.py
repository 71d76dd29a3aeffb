"""The default store: one SQLite file in WAL mode, shared safely by several cau processes.

`SqliteStore` is the `cau.ports.Store` the engine and the services use: its calls run on one
thread of their own (SQLite's calls block), so a slow disk never stalls the event loop, the
engine or the probes. `SqliteFile` is the synchronous file underneath, which the access records
(`cau.store.access`) share through a connection of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, ParamSpec, TypeVar

from pydantic import BaseModel, ConfigDict

from cau.clock import VirtualTimeLoop
from cau.domain.documents import D, Document
from cau.domain.profile import RunProfile
from cau.domain.results import RunState, Status
from cau.domain.role import ClusterRole
from cau.domain.runs import LockInfo, LockOwner, ReportQuery, RunRecord
from cau.errors import ConfigError
from cau.journal.events import EVENT_SCHEMA, EventPayload, JournalEvent, load_payload
from cau.lease import take_over
from cau.ports import StoreContext
from cau.reports.model import RunReport
from cau.store.masking import masked_event, masked_json, masked_text

# 2: API tokens, users, browser sessions, audit trail, stored profiles; 3: typed journal events
# (each event's event schema, cau.journal.events.EVENT_SCHEMA); 4: web sessions record the token
# they signed in with (revoking it ends them); 5: web sessions have a public handle (an admin lists
# and ends them by it, never by their secret) and the client address they signed in from; 6: the
# clustered role of self-updating mode, per cluster (cau.domain.role); 7: documents (compliance's
# baselines, groups, exemptions, scans: cau.domain.documents)
SCHEMA_VERSION = 7

P = ParamSpec("P")
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    cluster TEXT NOT NULL,
    provider TEXT NOT NULL,
    state TEXT NOT NULL,
    status TEXT,
    created TEXT NOT NULL,
    finished TEXT,
    owner TEXT,
    profile TEXT NOT NULL,
    error_id TEXT,
    message TEXT,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    stop_requested_by TEXT,
    stop_reason TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_cluster ON runs (cluster, created);
CREATE TABLE IF NOT EXISTS journal (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    node TEXT,
    step TEXT,
    key TEXT,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
-- schema 3: journal.schema (added by _migrate to older stores), the event schema of each event
CREATE TABLE IF NOT EXISTS reports (
    run_id TEXT PRIMARY KEY REFERENCES runs (run_id),
    report TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS locks (
    cluster TEXT PRIMARY KEY,
    owner_host TEXT NOT NULL,
    owner_pid INTEGER NOT NULL,
    owner_started TEXT,
    owner_label TEXT NOT NULL,
    run_id TEXT,
    acquired TEXT NOT NULL,
    lease_expires TEXT NOT NULL,
    recovered_from TEXT
);
-- schema 2: the web dashboard and REST API (tokens, browser sign-in, audit, stored profiles).
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created TEXT NOT NULL,
    created_by TEXT NOT NULL,
    last_used TEXT,
    revoked TEXT
);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS web_sessions (
    session_hash TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    role TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_ts ON audit (ts);
CREATE TABLE IF NOT EXISTS roles (
    cluster TEXT PRIMARY KEY,
    schema INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    schema INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS profiles (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    options TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    updated_by TEXT NOT NULL
);
"""


@functools.lru_cache(maxsize=64)
def _profile(text: str) -> RunProfile:
    """A run's profile from its stored JSON. The row is read afresh every time; only the parsing of
    the same text is not done again (a coordinator reads its run's record at every poll, to see a
    stop request, and validating the profile was most of that). A profile is frozen, and nothing
    changes its lists in place, so the one object can be shared."""
    return RunProfile.model_validate_json(text)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _while_locked(action: Callable[[], None], timeout: float = 30.0) -> None:
    """Do `action`, again while the file is locked by another process (up to `timeout`)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _private_file(path: Path) -> None:
    """The store holds hashes of tokens and passwords, the audit trail and every journal: its
    folder and files are its owner's only. SQLite creates the -wal and -shm files with the
    database's own mode; a store made by an older release is tightened too."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)


class SqliteFile:
    """The store's SQLite file, synchronously: one connection, short transactions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        _private_file(path)
        # isolation_level=None: we issue BEGIN ourselves, so every write is its own short
        # transaction and an intent is on disk before the action it announces.
        # check_same_thread=False: SqliteStore opens it on the event loop's thread and uses it on
        # its own worker thread only (never two threads at once).
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        # Several processes open the store at once (a coordinator creating it, `cau status`
        # beside it): switching a new file to WAL can answer "locked" at once, without waiting.
        _while_locked(self._wal)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        _while_locked(self._migrate)

    def _wal(self) -> None:
        if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self._db.execute("PRAGMA journal_mode=WAL")

    def _migrate(self) -> None:
        # One transaction: two processes opening a new or older store never both migrate it.
        with self._tx():
            for statement in _SCHEMA.split(";"):  # CREATE ... IF NOT EXISTS: idempotent
                if statement.strip():
                    self._db.execute(statement)
            columns = {r["name"] for r in self._db.execute("PRAGMA table_info(journal)")}
            if "schema" not in columns:  # schema 3: events written before it are event schema 1
                self._db.execute("ALTER TABLE journal ADD COLUMN schema INTEGER NOT NULL DEFAULT 1")
            sessions = {r["name"] for r in self._db.execute("PRAGMA table_info(web_sessions)")}
            if "token_id" not in sessions:  # schema 4: a session knows the token it signed in with
                self._db.execute("ALTER TABLE web_sessions ADD COLUMN token_id TEXT")
            if "handle" not in sessions:  # schema 5: a public handle, and where it signed in from
                self._db.execute("ALTER TABLE web_sessions ADD COLUMN handle TEXT")
                self._db.execute("ALTER TABLE web_sessions ADD COLUMN client TEXT")
                # sessions of before get a random handle too (the client they came from is unknown)
                self._db.execute("UPDATE web_sessions SET handle=lower(hex(randomblob(6)))")
            self._db.execute(
                "CREATE UNIQUE INDEX IF NOT EXISTS web_sessions_by_handle ON web_sessions (handle)"
            )
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            elif int(row["value"]) < SCHEMA_VERSION:
                # Older stores: every table added since is created above (IF NOT EXISTS); the
                # columns added since are added here. Old rows keep what they were written as.
                self._db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
            elif int(row["value"]) > SCHEMA_VERSION:
                raise ConfigError(
                    f"the store {self.path} has schema version {row['value']}, newer than this cau "
                    f"understands ({SCHEMA_VERSION})",
                    hint="upgrade cau, or point --data-dir at another store",
                )

    @contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """For stores of other kinds of records kept in the same file (see `cau.store.access`)."""
        return self._db

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        return self._tx()

    # runs ------------------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO runs (run_id, cluster, provider, state, status, created, finished, owner,"
                " profile, error_id, message) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run.run_id,
                    run.cluster,
                    run.provider,
                    run.state.value,
                    run.status.value if run.status else None,
                    _ts(run.created),
                    _ts(run.finished),
                    run.owner,
                    masked_json(run.profile),
                    run.error_id,
                    masked_text(run.message),
                ),
            )

    @staticmethod
    def _run(row: sqlite3.Row) -> RunRecord:
        created = _dt(row["created"])
        assert created is not None
        return RunRecord(
            run_id=row["run_id"],
            cluster=row["cluster"],
            provider=row["provider"],
            state=RunState(row["state"]),
            created=created,
            profile=_profile(row["profile"]),
            owner=row["owner"],
            status=Status(row["status"]) if row["status"] else None,
            finished=_dt(row["finished"]),
            error_id=row["error_id"],
            message=row["message"],
            stop_requested=bool(row["stop_requested"]),
            stop_requested_by=row["stop_requested_by"],
            stop_reason=row["stop_reason"],
        )

    def get_run(self, run_id: str) -> RunRecord | None:
        row = self._db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return None if row is None else self._run(row)

    def find_runs(self, prefix: str) -> list[RunRecord]:
        rows = self._db.execute(
            "SELECT * FROM runs WHERE run_id LIKE ? ORDER BY created", (prefix + "%",)
        ).fetchall()
        return [self._run(r) for r in rows]

    def active_run(self, cluster: str) -> RunRecord | None:
        row = self._db.execute(
            "SELECT * FROM runs WHERE cluster=? AND state != ? ORDER BY created DESC LIMIT 1",
            (cluster, RunState.FINISHED.value),
        ).fetchone()
        return None if row is None else self._run(row)

    def list_runs(self, query: ReportQuery) -> list[RunRecord]:
        sql = "SELECT * FROM runs WHERE 1=1"
        args: list[Any] = []
        if query.cluster is not None:
            sql += " AND cluster=?"
            args.append(query.cluster)
        if query.since is not None:
            sql += " AND created >= ?"
            args.append(_ts(query.since))
        if query.until is not None:
            sql += " AND created <= ?"
            args.append(_ts(query.until))
        if query.states:
            sql += f" AND state IN ({','.join('?' * len(query.states))})"
            args.extend(s.value for s in query.states)
        sql += " ORDER BY created DESC"
        if query.last is not None:
            sql += " LIMIT ?"
            args.append(query.last)
        rows = self._db.execute(sql, args).fetchall()
        return [self._run(r) for r in reversed(rows)]

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
    ) -> None:
        with self._tx():
            self._db.execute(
                "UPDATE runs SET state=?, owner=COALESCE(?, owner), status=?, finished=?, error_id=?,"
                " message=? WHERE run_id=?",
                (
                    state.value,
                    owner,
                    status.value if status else None,
                    _ts(finished),
                    error_id,
                    masked_text(message),
                    run_id,
                ),
            )

    def request_stop(self, run_id: str, *, by: str, reason: str) -> None:
        with self._tx():
            self._db.execute(
                "UPDATE runs SET stop_requested=1, stop_requested_by=?, stop_reason=? WHERE run_id=?",
                (by, masked_text(reason), run_id),
            )

    def save_report(self, run_id: str, report: RunReport) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO reports (run_id, report) VALUES (?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET report=excluded.report",
                (run_id, masked_json(report)),
            )

    def get_report(self, run_id: str) -> RunReport | None:
        row = self._db.execute("SELECT report FROM reports WHERE run_id=?", (run_id,)).fetchone()
        return None if row is None else RunReport.model_validate_json(row["report"])

    # journal ---------------------------------------------------------------------------------

    def append(
        self, run_id: str, payload: EventPayload, ts: datetime, *, node: str | None = None
    ) -> JournalEvent:
        payload, masked = masked_event(payload)  # the last net for secrets (cau.store.masking)
        data = json.dumps(masked)
        with self._tx():
            row = self._db.execute(
                "INSERT INTO journal (run_id, seq, ts, kind, node, step, key, data, schema) VALUES"
                " (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM journal WHERE run_id=?), ?,?,?,?,?,?,?)"
                " RETURNING seq",
                (
                    run_id,
                    run_id,
                    _ts(ts),
                    payload.kind.value,
                    node,
                    getattr(payload, "step", None),
                    getattr(payload, "key", None),
                    data,
                    EVENT_SCHEMA,
                ),
            ).fetchone()
        return JournalEvent.of(run_id, row["seq"], ts, node, payload)

    def events(self, run_id: str, after_seq: int = 0) -> list[JournalEvent]:
        rows = self._db.execute(
            "SELECT * FROM journal WHERE run_id=? AND seq>? ORDER BY seq", (run_id, after_seq)
        ).fetchall()
        return [
            JournalEvent(
                run_id=r["run_id"],
                seq=r["seq"],
                ts=datetime.fromisoformat(r["ts"]),
                node=r["node"],
                payload=load_payload(
                    r["kind"], r["step"], r["key"], json.loads(r["data"]), schema=r["schema"]
                ),
            )
            for r in rows
        ]

    # cluster lock ----------------------------------------------------------------------------

    @staticmethod
    def _lock(row: sqlite3.Row) -> LockInfo:
        acquired = _dt(row["acquired"])
        expires = _dt(row["lease_expires"])
        assert acquired is not None and expires is not None
        return LockInfo(
            cluster=row["cluster"],
            owner=LockOwner(row["owner_host"], row["owner_pid"], row["owner_started"], row["owner_label"]),
            run_id=row["run_id"],
            acquired=acquired,
            lease_expires=expires,
            recovered_from=row["recovered_from"],
        )

    def get_lock(self, cluster: str) -> LockInfo | None:
        row = self._db.execute("SELECT * FROM locks WHERE cluster=?", (cluster,)).fetchone()
        return None if row is None else self._lock(row)

    # the clustered role (self-updating mode) ------------------------------------------------------

    def get_role(self, cluster: str) -> ClusterRole | None:
        row = self._db.execute("SELECT data FROM roles WHERE cluster=?", (cluster,)).fetchone()
        return None if row is None else ClusterRole.model_validate_json(row["data"])

    def list_roles(self) -> list[ClusterRole]:
        rows = self._db.execute("SELECT data FROM roles ORDER BY cluster").fetchall()
        return [ClusterRole.model_validate_json(r["data"]) for r in rows]

    def put_role(self, role: ClusterRole) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO roles (cluster, schema, data) VALUES (?, ?, ?)"
                " ON CONFLICT (cluster) DO UPDATE SET schema=excluded.schema, data=excluded.data",
                (role.cluster, role.schema_version, masked_json(role)),
            )

    def delete_role(self, cluster: str) -> bool:
        with self._tx():
            return self._db.execute("DELETE FROM roles WHERE cluster=?", (cluster,)).rowcount > 0

    # documents (cau.domain.documents) ---------------------------------------------------------------

    def get_document(self, model: type[D], key: str) -> D | None:
        row = self._db.execute(
            "SELECT data FROM documents WHERE kind=? AND key=?", (model.kind, key)
        ).fetchone()
        return None if row is None else model.model_validate_json(row["data"])

    def list_documents(self, model: type[D]) -> list[D]:
        rows = self._db.execute("SELECT data FROM documents WHERE kind=? ORDER BY key", (model.kind,))
        return [model.model_validate_json(r["data"]) for r in rows.fetchall()]

    def put_document(self, document: Document) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO documents (kind, key, schema, data) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (kind, key) DO UPDATE SET schema=excluded.schema, data=excluded.data",
                (document.kind, document.key, document.schema_version, masked_json(document)),
            )

    def delete_document(self, model: type[Document], key: str) -> bool:
        with self._tx():
            cur = self._db.execute("DELETE FROM documents WHERE kind=? AND key=?", (model.kind, key))
            return cur.rowcount > 0

    def acquire_lock(
        self,
        cluster: str,
        owner: LockOwner,
        *,
        run_id: str | None,
        now: datetime,
        lease_seconds: float,
        force: bool = False,
    ) -> LockInfo:
        """Take the cluster lock: refused while a live coordinator holds it (cau.lease)."""
        with self._tx():
            row = self._db.execute("SELECT * FROM locks WHERE cluster=?", (cluster,)).fetchone()
            recovered_from = take_over(None if row is None else self._lock(row), owner, now, force=force)
            expires = now + timedelta(seconds=lease_seconds)
            self._db.execute(
                "INSERT INTO locks (cluster, owner_host, owner_pid, owner_started, owner_label, run_id,"
                " acquired, lease_expires, recovered_from) VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (cluster) DO UPDATE SET owner_host=excluded.owner_host,"
                " owner_pid=excluded.owner_pid, owner_started=excluded.owner_started,"
                " owner_label=excluded.owner_label, run_id=excluded.run_id, acquired=excluded.acquired,"
                " lease_expires=excluded.lease_expires, recovered_from=excluded.recovered_from",
                (
                    cluster,
                    owner.host,
                    owner.pid,
                    owner.started,
                    owner.label,
                    run_id,
                    _ts(now),
                    _ts(expires),
                    recovered_from,
                ),
            )
        info = self.get_lock(cluster)
        assert info is not None
        return info

    def set_lock_run(self, cluster: str, owner: LockOwner, run_id: str) -> None:
        with self._tx():
            self._db.execute(
                "UPDATE locks SET run_id=? WHERE cluster=? AND owner_host=? AND owner_pid=?",
                (run_id, cluster, owner.host, owner.pid),
            )

    def renew_lock(self, cluster: str, owner: LockOwner, *, now: datetime, lease_seconds: float) -> bool:
        with self._tx():
            cur = self._db.execute(
                "UPDATE locks SET lease_expires=? WHERE cluster=? AND owner_host=? AND owner_pid=?"
                " AND COALESCE(owner_started, '') = COALESCE(?, '')",
                (_ts(now + timedelta(seconds=lease_seconds)), cluster, owner.host, owner.pid, owner.started),
            )
            return cur.rowcount == 1

    def release_lock(self, cluster: str, owner: LockOwner) -> None:
        with self._tx():
            self._db.execute(
                "DELETE FROM locks WHERE cluster=? AND owner_host=? AND owner_pid=?"
                " AND COALESCE(owner_started, '') = COALESCE(?, '')",
                (cluster, owner.host, owner.pid, owner.started),
            )


class SqliteOptions(BaseModel):
    """Where the file is: by default `cau.db` in the installation's data directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = None


class SqliteStore:
    """The store, asynchronously: every call runs on the store's own thread (see the module).
    Registered under `cau.stores` as `sqlite`."""

    name: ClassVar[str] = "sqlite"
    Options: ClassVar[type[BaseModel]] = SqliteOptions

    @classmethod
    def open(cls, options: BaseModel, ctx: StoreContext) -> SqliteStore:
        path = SqliteOptions.model_validate(options.model_dump()).path
        return cls(path or ctx.data_dir / "cau.db")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = SqliteFile(path)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cau-store")

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        if isinstance(loop, VirtualTimeLoop):
            # A simulation (tests, benchmarks): a store call takes no virtual time, and running it
            # in line keeps the interleaving of tasks a function of virtual time alone, not of
            # when a thread happens to finish (a property test must replay the same way twice).
            return fn(*args, **kwargs)
        return await loop.run_in_executor(self._thread, lambda: fn(*args, **kwargs))

    async def close(self) -> None:
        await self._call(self._file.close)
        self._thread.shutdown(wait=False)

    def close_now(self) -> None:
        """Close from outside any event loop (a command ending): waits for the calls in flight."""
        self._thread.shutdown(wait=True)
        self._file.close()

    # runs
    async def create_run(self, run: RunRecord) -> None:
        await self._call(self._file.create_run, run)

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await self._call(self._file.get_run, run_id)

    async def find_runs(self, prefix: str) -> list[RunRecord]:
        return await self._call(self._file.find_runs, prefix)

    async def active_run(self, cluster: str) -> RunRecord | None:
        return await self._call(self._file.active_run, cluster)

    async def list_runs(self, query: ReportQuery) -> list[RunRecord]:
        return await self._call(self._file.list_runs, query)

    async def set_run_state(
        self,
        run_id: str,
        state: RunState,
        *,
        owner: str | None = None,
        status: Status | None = None,
        finished: datetime | None = None,
        error_id: str | None = None,
        message: str | None = None,
    ) -> None:
        await self._call(
            self._file.set_run_state,
            run_id,
            state,
            owner=owner,
            status=status,
            finished=finished,
            error_id=error_id,
            message=message,
        )

    async def request_stop(self, run_id: str, *, by: str, reason: str) -> None:
        await self._call(self._file.request_stop, run_id, by=by, reason=reason)

    async def save_report(self, run_id: str, report: RunReport) -> None:
        await self._call(self._file.save_report, run_id, report)

    async def get_report(self, run_id: str) -> RunReport | None:
        return await self._call(self._file.get_report, run_id)

    # journal
    async def append(
        self, run_id: str, payload: EventPayload, ts: datetime, *, node: str | None = None
    ) -> JournalEvent:
        return await self._call(self._file.append, run_id, payload, ts, node=node)

    async def events(self, run_id: str, after_seq: int = 0) -> list[JournalEvent]:
        return await self._call(self._file.events, run_id, after_seq)

    # cluster locks
    async def acquire_lock(
        self,
        cluster: str,
        owner: LockOwner,
        *,
        run_id: str | None,
        now: datetime,
        lease_seconds: float,
        force: bool = False,
    ) -> LockInfo:
        return await self._call(
            self._file.acquire_lock,
            cluster,
            owner,
            run_id=run_id,
            now=now,
            lease_seconds=lease_seconds,
            force=force,
        )

    async def set_lock_run(self, cluster: str, owner: LockOwner, run_id: str) -> None:
        await self._call(self._file.set_lock_run, cluster, owner, run_id)

    async def renew_lock(
        self, cluster: str, owner: LockOwner, *, now: datetime, lease_seconds: float
    ) -> bool:
        return await self._call(self._file.renew_lock, cluster, owner, now=now, lease_seconds=lease_seconds)

    async def release_lock(self, cluster: str, owner: LockOwner) -> None:
        await self._call(self._file.release_lock, cluster, owner)

    async def get_lock(self, cluster: str) -> LockInfo | None:
        return await self._call(self._file.get_lock, cluster)

    async def get_role(self, cluster: str) -> ClusterRole | None:
        return await self._call(self._file.get_role, cluster)

    async def list_roles(self) -> list[ClusterRole]:
        return await self._call(self._file.list_roles)

    async def put_role(self, role: ClusterRole) -> None:
        await self._call(self._file.put_role, role)

    async def delete_role(self, cluster: str) -> bool:
        return await self._call(self._file.delete_role, cluster)

    async def get_document(self, model: type[D], key: str) -> D | None:
        return await self._call(self._file.get_document, model, key)

    async def list_documents(self, model: type[D]) -> list[D]:
        return await self._call(self._file.list_documents, model)

    async def put_document(self, document: Document) -> None:
        await self._call(self._file.put_document, document)

    async def delete_document(self, model: type[Document], key: str) -> bool:
        return await self._call(self._file.delete_document, model, key)
