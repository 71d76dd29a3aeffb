"""What the etcd store keeps, and under which keys: one pydantic model per kind of value, each
stored as JSON with the store's schema version.

    <prefix>schema                         StoreMeta      the store's schema version
    <prefix>runs/<run id>                  StoredRun      a run record
    <prefix>reports/<run id>               StoredReport   its report
    <prefix>journal/<run id>/<seq>         StoredEvent    one journal event, seq zero-padded
    <prefix>locks/<cluster>                StoredLock     a cluster's lock
    <prefix>roles/<cluster>                StoredRole     a cluster's clustered role
    <prefix>docs/<kind>/<key>              (the model)    a document (cau.domain.documents)

Run ids and cluster names are percent-encoded in keys, so no name holds a `/` and one run's
journal range never takes in another's (`a/` and `a/b/...`). The zero-padded seq makes the keys'
order the journal's order: a range over `journal/<run id>/` reads it in order, from any seq on.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, JsonValue

from cau.domain.profile import RunProfile
from cau.domain.results import RunState, Status
from cau.domain.role import ClusterRole
from cau.domain.runs import LockInfo, LockOwner, RunRecord
from cau.journal.events import EVENT_SCHEMA
from cau.reports.model import RunReport

# 1: the first etcd store (runs, reports, journals, cluster locks)
ETCD_SCHEMA = 1
SEQ_DIGITS = 12


class Keys:
    """The store's keys under one installation's prefix (e.g. `/cau/`)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _key(self, *parts: str) -> bytes:
        return (self.prefix + "/".join(parts)).encode()

    @staticmethod
    def _name(name: str) -> str:
        return quote(name, safe="")

    @property
    def schema(self) -> bytes:
        return self._key("schema")

    def run(self, run_id: str) -> bytes:
        return self._key("runs", self._name(run_id))

    def runs(self, id_prefix: str = "") -> bytes:
        # quote() works character by character: the encoded prefix is a prefix of the encoded id
        return self._key("runs", self._name(id_prefix))

    def report(self, run_id: str) -> bytes:
        return self._key("reports", self._name(run_id))

    def journal(self, run_id: str) -> bytes:
        return self._key("journal", self._name(run_id), "")

    def event(self, run_id: str, seq: int) -> bytes:
        return self.journal(run_id) + f"{seq:0{SEQ_DIGITS}d}".encode()

    @staticmethod
    def seq_of(key: bytes) -> int:
        return int(key.rsplit(b"/", 1)[1])

    def lock(self, cluster: str) -> bytes:
        return self._key("locks", self._name(cluster))

    def role(self, cluster: str) -> bytes:
        return self._key("roles", self._name(cluster))

    @property
    def roles(self) -> bytes:
        return self._key("roles", "")

    def document(self, kind: str, key: str) -> bytes:
        return self._key("docs", self._name(kind), self._name(key))

    def documents(self, kind: str) -> bytes:
        return self._key("docs", self._name(kind), "")


class _Stored(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: int = ETCD_SCHEMA


class StoreMeta(_Stored):
    pass


class StoredRun(_Stored):
    run_id: str
    cluster: str
    provider: str
    state: RunState
    created: datetime
    profile: RunProfile  # as cau.store.masking left it
    owner: str | None = None
    status: Status | None = None
    finished: datetime | None = None
    error_id: str | None = None
    message: str | None = None
    stop_requested: bool = False
    stop_requested_by: str | None = None
    stop_reason: str | None = None

    @classmethod
    def of(cls, run: RunRecord) -> StoredRun:
        return cls.model_validate(
            {name: getattr(run, name) for name in RunRecord.__dataclass_fields__}, from_attributes=False
        )

    def record(self) -> RunRecord:
        return RunRecord(**{name: getattr(self, name) for name in RunRecord.__dataclass_fields__})


class StoredReport(_Stored):
    report: RunReport


class StoredRole(_Stored):
    role: ClusterRole  # itself versioned (cau.domain.role)


class StoredEvent(_Stored):
    seq: int
    ts: datetime
    kind: str
    node: str | None
    step: str | None
    key: str | None
    data: dict[str, JsonValue]  # cau.journal.events.payload_data, masked
    event_schema: int = EVENT_SCHEMA
    # Which append wrote it: an append whose answer was lost (an endpoint failing after etcd
    # committed it) finds its own event on retrying, instead of appending it twice.
    writer: str


class StoredLock(_Stored):
    cluster: str
    owner_host: str
    owner_pid: int
    owner_started: str | None
    owner_label: str
    run_id: str | None
    acquired: datetime
    lease_expires: datetime
    recovered_from: str | None = None

    @classmethod
    def of(cls, info: LockInfo) -> StoredLock:
        return cls(
            cluster=info.cluster,
            owner_host=info.owner.host,
            owner_pid=info.owner.pid,
            owner_started=info.owner.started,
            owner_label=info.owner.label,
            run_id=info.run_id,
            acquired=info.acquired,
            lease_expires=info.lease_expires,
            recovered_from=info.recovered_from,
        )

    def info(self) -> LockInfo:
        return LockInfo(
            cluster=self.cluster,
            owner=LockOwner(self.owner_host, self.owner_pid, self.owner_started, self.owner_label),
            run_id=self.run_id,
            acquired=self.acquired,
            lease_expires=self.lease_expires,
            recovered_from=self.recovered_from,
        )

    def held_by(self, owner: LockOwner, *, same_start: bool = True) -> bool:
        """The owner's process (host, pid and, unless told otherwise, its start time)."""
        return (self.owner_host, self.owner_pid) == (owner.host, owner.pid) and (
            not same_start or (self.owner_started or "") == (owner.started or "")
        )
