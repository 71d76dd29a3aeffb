"""The default store: one SQLite file in WAL mode, shared safely by several cau processes."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cau.domain.results import RunState, Status
from cau.errors import ConfigError, LockHeld
from cau.journal.events import EVENT_SCHEMA, EventPayload, JournalEvent, load_payload, payload_data
from cau.store.base import (
    SCHEMA_VERSION,
    LockInfo,
    LockOwner,
    ReportQuery,
    RunRecord,
)

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
CREATE TABLE IF NOT EXISTS profiles (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    options TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    updated_by TEXT NOT NULL
);
"""


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN ourselves, so every write is its own short
        # transaction and an intent is on disk before the action it announces.
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _migrate(self) -> None:
        # CREATE ... IF NOT EXISTS is idempotent; executescript commits on its own.
        self._db.executescript(_SCHEMA)
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(journal)")}
        if "schema" not in columns:  # schema 3: events written before it are event schema 1
            self._db.execute("ALTER TABLE journal ADD COLUMN schema INTEGER NOT NULL DEFAULT 1")
        with self._tx():
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
                    json.dumps(run.profile),
                    run.error_id,
                    run.message,
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
            profile=json.loads(row["profile"]),
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
                    message,
                    run_id,
                ),
            )

    def request_stop(self, run_id: str, *, by: str, reason: str) -> None:
        with self._tx():
            self._db.execute(
                "UPDATE runs SET stop_requested=1, stop_requested_by=?, stop_reason=? WHERE run_id=?",
                (by, reason, run_id),
            )

    def save_report(self, run_id: str, report: dict[str, Any]) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO reports (run_id, report) VALUES (?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET report=excluded.report",
                (run_id, json.dumps(report)),
            )

    def get_report(self, run_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT report FROM reports WHERE run_id=?", (run_id,)).fetchone()
        return None if row is None else dict(json.loads(row["report"]))

    # journal ---------------------------------------------------------------------------------

    def append(
        self, run_id: str, payload: EventPayload, ts: datetime, *, node: str | None = None
    ) -> JournalEvent:
        data = json.dumps(payload_data(payload))
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
        """Take the cluster lock. A live holder refuses; a holder that is provably dead (same host,
        process gone) or whose lease expired is replaced, and so is any holder with `force`."""
        with self._tx():
            row = self._db.execute("SELECT * FROM locks WHERE cluster=?", (cluster,)).fetchone()
            recovered_from: str | None = None
            if row is not None:
                held = self._lock(row)
                if held.owner.id != owner.id:
                    dead = held.owner.provably_dead() or held.lease_expires <= now
                    if not (dead or force):
                        raise LockHeld(
                            f"cluster '{cluster}' is being updated by {held.owner}"
                            + (f", run {held.run_id}" if held.run_id else "")
                            + f", since {held.acquired:%Y-%m-%d %H:%M:%S} UTC"
                            f" (lease until {held.lease_expires:%H:%M:%S} UTC)",
                            owner=str(held.owner),
                            hint=f"wait for it, or stop it with `cau stop {cluster}`; if that coordinator "
                            "is dead, `cau run --force-recovery` takes its lock over",
                        )
                    recovered_from = str(held.owner)
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
