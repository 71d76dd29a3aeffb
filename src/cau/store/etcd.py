"""The store on etcd v3: runs, journals, reports and cluster locks in the cluster's own replicated
key-value store, so that they survive the loss of any one node (self-updating mode, issue 12).

    store = EtcdStore(EtcdOptions(endpoints=["http://10.0.0.1:2379", ...], prefix="/cau/"))

Every write is one etcd transaction, committed on a quorum of members before it returns (the
journal's "durable when it returns"). Writes that depend on what is stored compare what they read
(the key's mod revision) and try again when another writer came first, so several cau processes
share the store as they share the SQLite file: two appenders never take the same seq, and a stop
request is never lost to a state change written at the same time. The lock's lease is cau's own
(`cau.lease`, times in the record), decided by the same rule as on every backend.

Keys and stored values: cau.store.etcd_records; talking to etcd: cau.store.etcd_gateway.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cau.domain.documents import D, Document
from cau.domain.profile import RunProfile
from cau.domain.results import RunState, Status
from cau.domain.role import ClusterRole
from cau.domain.runs import LockInfo, LockOwner, ReportQuery, RunRecord
from cau.errors import ConfigError, NameTaken, NotFound
from cau.journal.events import EventPayload, JournalEvent, load_payload
from cau.lease import take_over
from cau.ports import StoreContext
from cau.reports.model import RunReport
from cau.store.etcd_gateway import (
    Compare,
    Gateway,
    KeyValue,
    Op,
    RangeRequest,
    TlsFiles,
    TxnRequest,
    prefix_end,
)
from cau.store.etcd_records import (
    ETCD_SCHEMA,
    Keys,
    StoredEvent,
    StoredLock,
    StoredReport,
    StoredRole,
    StoredRun,
    StoreMeta,
)
from cau.store.masking import masked_event, masked_json, masked_text


class EtcdOptions(BaseModel):
    """Where the store is: the etcd cluster's client endpoints and this installation's prefix."""

    # hide_input_in_errors: an endpoint refused for holding credentials is never echoed
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    endpoints: list[str] = Field(min_length=1, description="etcd client URLs, e.g. http://10.0.0.1:2379")
    prefix: str = Field("/cau/", description="every key of this installation starts with it")
    timeout: float = Field(5.0, gt=0, description="seconds a call may take before it fails")
    # TLS (https:// endpoints): etcd's --client-cert-auth lets in only clients with a certificate
    # its --trusted-ca-file signed; anyone else on the network could otherwise write the journal.
    ca_file: Path | None = Field(None, description="CA bundle the members' certificates are checked against")
    cert_file: Path | None = Field(None, description="this client's certificate (etcd --client-cert-auth)")
    key_file: Path | None = Field(None, description="its private key (owner-only)")

    @model_validator(mode="after")
    def _tls(self) -> EtcdOptions:
        tls = self.ca_file or self.cert_file or self.key_file
        if tls and not all(e.startswith("https://") for e in self.endpoints):
            raise ValueError("ca_file, cert_file and key_file go with https:// endpoints")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        for path in (self.ca_file, self.cert_file, self.key_file):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a file")
        if self.key_file is not None and self.key_file.stat().st_mode & 0o077:
            raise ValueError(f"{self.key_file} is readable by others: chmod 600 it")
        return self

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, endpoints: list[str]) -> list[str]:
        for e in endpoints:
            if not e.startswith(("http://", "https://")):
                raise ValueError(f"'{e}' is not an etcd client URL (http://HOST:2379)")
            if "@" in e.split("//", 1)[1].split("/", 1)[0]:
                raise ValueError("an etcd endpoint with credentials in it: etcd users are not supported yet")
        return endpoints

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if not prefix.strip("/"):
            raise ValueError("the prefix must name something, e.g. /cau/")
        return prefix if prefix.endswith("/") else prefix + "/"


class EtcdStore:
    """`cau.ports.Store` on etcd (registered under `cau.stores` as `etcd`)."""

    name: ClassVar[str] = "etcd"
    Options: ClassVar[type[BaseModel]] = EtcdOptions
    page: ClassVar[int] = 500  # keys per range request: a long journal is read in pages

    def __init__(self, options: EtcdOptions) -> None:
        self.options = options
        self._keys = Keys(options.prefix)
        self._etcd = Gateway(
            options.endpoints,
            timeout=options.timeout,
            tls=TlsFiles(options.ca_file, options.cert_file, options.key_file),
        )
        self._checked = False
        self._next_seq: dict[str, int] = {}  # per run: where this handle's next append tries first

    @classmethod
    def open(cls, options: BaseModel, ctx: StoreContext) -> EtcdStore:
        return cls(EtcdOptions.model_validate(options.model_dump()))

    def __str__(self) -> str:
        return f"etcd store {self.options.prefix} at {', '.join(self.options.endpoints)}"

    async def close(self) -> None:
        await self._etcd.close()

    # plumbing ----------------------------------------------------------------------------------

    async def _ready(self) -> None:
        """Once per handle: the store's schema is one this cau reads (written if new)."""
        if self._checked:
            return
        key = self._keys.schema
        kv = await self._get(key)
        if kv is None:
            await self._txn([Compare.absent(key)], [Op.put(key, StoreMeta().model_dump_json().encode())])
            kv = await self._get(key)
            assert kv is not None
        meta = StoreMeta.model_validate_json(kv.value)
        if meta.schema_version > ETCD_SCHEMA:
            raise ConfigError(
                f"the {self} has schema version {meta.schema_version}, newer than this cau "
                f"understands ({ETCD_SCHEMA})",
                hint="upgrade cau on this host, or give it another prefix",
            )
        self._checked = True

    async def _get(self, key: bytes) -> KeyValue | None:
        kvs = (await self._etcd.range(RangeRequest.of(key))).kvs
        return kvs[0] if kvs else None

    async def _values(self, start: bytes, end: bytes) -> list[KeyValue]:
        """Every key in [start, end), in key order, read in pages at one revision (a snapshot)."""
        out: list[KeyValue] = []
        revision = 0
        while True:
            page = await self._etcd.range(RangeRequest.of(start, end, limit=self.page, revision=revision))
            out.extend(page.kvs)
            if not page.more or not page.kvs:
                return out
            revision = page.header.revision
            start = page.kvs[-1].key + b"\0"

    async def _txn(self, compare: list[Compare], success: list[Op], failure: list[Op] | None = None) -> bool:
        return (
            await self._etcd.txn(TxnRequest(compare=compare, success=success, failure=failure or []))
        ).succeeded

    async def _swap(self, key: bytes, seen: KeyValue | None, value: bytes | None) -> bool:
        """Write (or delete, for None) `key` if it is still as `seen`; False when another writer
        came first (the caller reads again and decides again)."""
        op = Op.delete(key) if value is None else Op.put(key, value)
        return await self._txn([Compare.unchanged(key, 0 if seen is None else seen.mod_revision)], [op])

    # runs --------------------------------------------------------------------------------------

    async def create_run(self, run: RunRecord) -> None:
        await self._ready()
        stored = StoredRun.of(
            replace(
                run,
                profile=RunProfile.model_validate_json(masked_json(run.profile)),
                message=masked_text(run.message),
            )
        )
        key = self._keys.run(run.run_id)
        if not await self._txn([Compare.absent(key)], [Op.put(key, stored.model_dump_json().encode())]):
            raise NameTaken(f"the {self} already has a run '{run.run_id}'")

    async def get_run(self, run_id: str) -> RunRecord | None:
        await self._ready()
        kv = await self._get(self._keys.run(run_id))
        return None if kv is None else StoredRun.model_validate_json(kv.value).record()

    async def _runs(self, id_prefix: str = "") -> list[RunRecord]:
        start = self._keys.runs(id_prefix)
        runs = [
            StoredRun.model_validate_json(kv.value).record()
            for kv in await self._values(start, prefix_end(start))
        ]
        # A store holds one installation's runs (hundreds over years): read whole, sorted here.
        return sorted(runs, key=lambda r: (r.created, r.run_id))

    async def find_runs(self, prefix: str) -> list[RunRecord]:
        await self._ready()
        return await self._runs(prefix)

    async def active_run(self, cluster: str) -> RunRecord | None:
        await self._ready()
        active = [r for r in await self._runs() if r.cluster == cluster and r.state is not RunState.FINISHED]
        return active[-1] if active else None

    async def list_runs(self, query: ReportQuery) -> list[RunRecord]:
        await self._ready()
        runs = [
            r
            for r in await self._runs()
            if (query.cluster is None or r.cluster == query.cluster)
            and (query.since is None or r.created >= query.since)
            and (query.until is None or r.created <= query.until)
            and (not query.states or r.state in query.states)
        ]
        return runs[-query.last :] if query.last is not None else runs

    async def _update_run(self, run_id: str, change: dict[str, object]) -> None:
        key = self._keys.run(run_id)
        while True:
            kv = await self._get(key)
            if kv is None:
                return  # as an UPDATE of no row: nothing to change
            stored = StoredRun.model_validate_json(kv.value).model_copy(update=change)
            if await self._swap(
                key, kv, StoredRun.model_validate(stored.model_dump()).model_dump_json().encode()
            ):
                return

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
        await self._ready()
        change: dict[str, object] = {
            "state": state,
            "status": status,
            "finished": finished,
            "error_id": error_id,
            "message": masked_text(message),
        }
        if owner is not None:  # the owner is kept unless a new one is named
            change["owner"] = owner
        await self._update_run(run_id, change)

    async def request_stop(self, run_id: str, *, by: str, reason: str) -> None:
        await self._ready()
        await self._update_run(
            run_id, {"stop_requested": True, "stop_requested_by": by, "stop_reason": masked_text(reason)}
        )

    async def save_report(self, run_id: str, report: RunReport) -> None:
        await self._ready()
        stored = StoredReport(report=RunReport.model_validate_json(masked_json(report)))
        run = self._keys.run(run_id)
        ok = await self._txn(
            [Compare.present(run)], [Op.put(self._keys.report(run_id), stored.model_dump_json().encode())]
        )
        if not ok:
            raise NotFound(f"the {self} has no run '{run_id}' to save a report of")

    async def get_report(self, run_id: str) -> RunReport | None:
        await self._ready()
        kv = await self._get(self._keys.report(run_id))
        return None if kv is None else StoredReport.model_validate_json(kv.value).report

    # journal -----------------------------------------------------------------------------------

    async def append(
        self, run_id: str, payload: EventPayload, ts: datetime, *, node: str | None = None
    ) -> JournalEvent:
        """One transaction: the event goes in at `seq` only if no event holds `seq` yet and the
        one before it is there (no gap); otherwise the same round trip answers with the journal's
        last seq, and the append tries the one after it."""
        await self._ready()
        payload, data = masked_event(payload)
        writer = uuid.uuid4().hex
        journal = self._keys.journal(run_id)
        run_key = self._keys.run(run_id)
        seq = self._next_seq.get(run_id, 1)
        while True:
            key = self._keys.event(run_id, seq)
            stored = StoredEvent(
                seq=seq,
                ts=ts,
                kind=payload.kind.value,
                node=node,
                step=getattr(payload, "step", None),
                key=getattr(payload, "key", None),
                data=data,
                writer=writer,
            )
            compare = [Compare.absent(key), Compare.present(run_key)]
            if seq > 1:
                compare.append(Compare.present(self._keys.event(run_id, seq - 1)))
            answer = await self._etcd.txn(
                TxnRequest(
                    compare=compare,
                    success=[Op.put(key, stored.model_dump_json().encode())],
                    failure=[
                        Op.range(RangeRequest.of(key)),
                        Op.range(
                            RangeRequest.of(journal, prefix_end(journal), limit=1, last=True, keys_only=True)
                        ),
                        Op.range(RangeRequest.of(run_key, keys_only=True)),
                    ],
                )
            )
            if not answer.succeeded:
                at_seq, last, run = answer.ranges()
                mine = at_seq.kvs and StoredEvent.model_validate_json(at_seq.kvs[0].value).writer == writer
                if not mine:
                    if not run.kvs:
                        raise NotFound(f"the {self} has no run '{run_id}' to append to")
                    seq = Keys.seq_of(last.kvs[0].key) + 1 if last.kvs else 1
                    continue
            self._next_seq[run_id] = seq + 1
            return JournalEvent.of(run_id, seq, ts, node, payload)

    async def events(self, run_id: str, after_seq: int = 0) -> list[JournalEvent]:
        await self._ready()
        journal = self._keys.journal(run_id)
        out = []
        for kv in await self._values(self._keys.event(run_id, after_seq + 1), prefix_end(journal)):
            e = StoredEvent.model_validate_json(kv.value)
            payload = load_payload(e.kind, e.step, e.key, e.data, schema=e.event_schema)
            out.append(JournalEvent(run_id=run_id, seq=e.seq, ts=e.ts, node=e.node, payload=payload))
        return out

    # cluster locks -------------------------------------------------------------------------------

    async def _lock(self, cluster: str) -> tuple[KeyValue | None, StoredLock | None]:
        kv = await self._get(self._keys.lock(cluster))
        return kv, None if kv is None else StoredLock.model_validate_json(kv.value)

    async def get_lock(self, cluster: str) -> LockInfo | None:
        await self._ready()
        _, lock = await self._lock(cluster)
        return None if lock is None else lock.info()

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
        """Take the cluster lock: refused while a live coordinator holds it (cau.lease)."""
        await self._ready()
        while True:
            kv, held = await self._lock(cluster)
            recovered_from = take_over(None if held is None else held.info(), owner, now, force=force)
            info = LockInfo(
                cluster, owner, run_id, now, now + timedelta(seconds=lease_seconds), recovered_from
            )
            if await self._swap(self._keys.lock(cluster), kv, StoredLock.of(info).model_dump_json().encode()):
                return info

    async def _change_lock(
        self, cluster: str, owner: LockOwner, same_start: bool, change: dict[str, object]
    ) -> bool:
        """Change (or, for an empty change, delete) the lock if `owner` holds it."""
        key = self._keys.lock(cluster)
        while True:
            kv, held = await self._lock(cluster)
            if held is None or not held.held_by(owner, same_start=same_start):
                return False
            changed = (
                StoredLock.model_validate(held.model_copy(update=change).model_dump()) if change else None
            )
            if await self._swap(key, kv, None if changed is None else changed.model_dump_json().encode()):
                return True

    async def set_lock_run(self, cluster: str, owner: LockOwner, run_id: str) -> None:
        await self._ready()
        await self._change_lock(cluster, owner, False, {"run_id": run_id})

    async def renew_lock(
        self, cluster: str, owner: LockOwner, *, now: datetime, lease_seconds: float
    ) -> bool:
        await self._ready()
        return await self._change_lock(
            cluster, owner, True, {"lease_expires": now + timedelta(seconds=lease_seconds)}
        )

    async def release_lock(self, cluster: str, owner: LockOwner) -> None:
        await self._ready()
        await self._change_lock(cluster, owner, True, {})

    # the clustered role (self-updating mode) ---------------------------------------------------------

    async def get_role(self, cluster: str) -> ClusterRole | None:
        await self._ready()
        kv = await self._get(self._keys.role(cluster))
        return None if kv is None else StoredRole.model_validate_json(kv.value).role

    async def list_roles(self) -> list[ClusterRole]:
        await self._ready()
        start = self._keys.roles
        kvs = await self._values(start, prefix_end(start))
        return sorted((StoredRole.model_validate_json(kv.value).role for kv in kvs), key=lambda r: r.cluster)

    async def put_role(self, role: ClusterRole) -> None:
        await self._ready()
        stored = StoredRole(role=ClusterRole.model_validate_json(masked_json(role)))
        await self._txn([], [Op.put(self._keys.role(role.cluster), stored.model_dump_json().encode())])

    async def delete_role(self, cluster: str) -> bool:
        await self._ready()
        key = self._keys.role(cluster)
        return await self._txn([Compare.present(key)], [Op.delete(key)])

    # documents (cau.domain.documents): each model's own JSON, with its own schema version -----------

    async def get_document(self, model: type[D], key: str) -> D | None:
        await self._ready()
        kv = await self._get(self._keys.document(model.kind, key))
        return None if kv is None else model.model_validate_json(kv.value)

    async def list_documents(self, model: type[D]) -> list[D]:
        await self._ready()
        start = self._keys.documents(model.kind)
        kvs = await self._values(start, prefix_end(start))
        return sorted((model.model_validate_json(kv.value) for kv in kvs), key=lambda d: d.key)

    async def put_document(self, document: Document) -> None:
        await self._ready()
        key = self._keys.document(document.kind, document.key)
        await self._txn([], [Op.put(key, masked_json(document).encode())])

    async def delete_document(self, model: type[Document], key: str) -> bool:
        await self._ready()
        k = self._keys.document(model.kind, key)
        return await self._txn([Compare.present(k)], [Op.delete(k)])
