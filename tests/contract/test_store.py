"""The store contract: what every `cau.ports.Store` backend must do, run against each backend.

A backend joins by adding a factory to BACKENDS: `make(request, tmp_path) -> opener`, where
`opener()` opens one more handle on the same store (another connection, as another cau process
would). Every backend registered under `cau.stores` must have one. Covers the journal (append and
replay order, every kind of event read back as written, concurrent appenders), runs (records,
queries, states, stop requests), reports, and the cluster lock (acquire, renew, expire, take-over
on purpose, a dead owner on this host, release): the tests taking `opener` run on every backend.

Last, SQLite only and not part of the contract: the browser sessions of the access records
(`cau.store.access`), which live in the local SQLite file whatever store keeps the runs. Those
tests open the file themselves and never take `opener`, so no backend is skipped."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from pydantic import BaseModel

from cau.domain.access import Role
from cau.domain.compliance import (
    Baseline,
    Finding,
    FindingState,
    NodeComplianceScan,
    PackageRule,
    Scope,
    ScopeKind,
)
from cau.domain.profile import build_profile
from cau.domain.results import ErrorId, RunState, Status
from cau.domain.role import ClusterRole, UpdateRequest
from cau.domain.runs import LockOwner, ReportQuery, RunRecord
from cau.domain.updates import HeldUpdate, Update, UpdateOutcome, UpdateResult
from cau.errors import LockHeld
from cau.journal.events import (
    Coordinator,
    EventPayload,
    HandOver,
    InstallIntent,
    InstallOutcome,
    JournalEvent,
    NodeFinished,
    ProbeSummary,
    Progress,
    RunCreated,
    RunPaused,
    ScanOutcome,
    Step,
    WarningEvent,
)
from cau.lease import _process_start_time, this_process
from cau.ports import Store
from cau.redact import forget_secrets, register_secrets
from cau.registry import Registry
from cau.reports.model import NodeReport, RunReport
from cau.store.access import AccessStore, hash_password, secret_hash
from cau.store.etcd import EtcdOptions, EtcdStore
from cau.store.sqlite import SqliteFile, SqliteStore
from tests.support_etcd import EtcdCluster

T = TypeVar("T")
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
Opener = Callable[[], Store]


def _sqlite(request: pytest.FixtureRequest, tmp: Path) -> Opener:
    return lambda: SqliteStore(tmp / "cau.db")


def _etcd(request: pytest.FixtureRequest, tmp: Path) -> Opener:
    # one real 3-member cluster for the session (tests/conftest.py); each test its own prefix
    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
    options = EtcdOptions(endpoints=cluster.endpoints, prefix=f"/cau-test/{uuid.uuid4().hex}/")
    return lambda: EtcdStore(options)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Opener]] = {"sqlite": _sqlite, "etcd": _etcd}
# Backends that start processes (a real etcd cluster): `slow`, left out by `./dev fast`.
SLOW = {"etcd"}


@pytest.fixture(
    params=[pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in sorted(BACKENDS)]
)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return BACKENDS[request.param](request, tmp_path)


def test_every_registered_store_passes_this_contract() -> None:
    """Stores are found like any adapter (entry points), and each one is tested here."""
    stores = Registry.discover().stores
    assert {"sqlite", "etcd"} <= set(stores)
    assert all(stores[n].ok and stores[n].distribution == "cau" for n in ("sqlite", "etcd"))
    assert set(stores) <= set(BACKENDS)  # a newly registered store without a factory here fails
    for name, entry in stores.items():
        assert entry.obj.name == name and issubclass(entry.obj.Options, BaseModel)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def run(main: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(main())  # type: ignore[arg-type]


def record(run_id: str, cluster: str = "c", created: datetime = NOW, **kw: object) -> RunRecord:
    profile = build_profile(None, {"max_retries_per_node": 2, "pre_update_script": "echo $SECRET_TOKEN"})
    return RunRecord(run_id, cluster, "sandbox", RunState.RUNNING, created, profile, **kw)  # type: ignore[arg-type]


def sample_events() -> list[tuple[str | None, EventPayload]]:
    """One event of several kinds, with the nested values a journal holds."""
    update = Update("kernel", "Linux kernel", "apt", needs_restart=True, details={"from": "1", "to": "2"})
    result = UpdateResult(
        "kernel", "Linux kernel", "apt", UpdateOutcome.FAILED, error_code=100, message="dpkg failed",
        started=NOW, finished=NOW + timedelta(seconds=3), details={"after": "2 (half-configured)"},
    )  # fmt: skip
    held = HeldUpdate("labpkg", "labpkg 1.0 -> 1.1: held", "apt", "held", {"from": "1.0", "to": "1.1"})
    return [
        (None, RunCreated(order=["n1", "n2"], max_failed=1, provider="sandbox")),
        ("n1", InstallIntent(key="install/1/apt", plugin="apt", pass_no=1, updates=[update])),
        ("n1", InstallOutcome(key="install/1/apt", ok=False, results=[result])),
        ("n1", ScanOutcome(step=Step.RESCAN, key="rescan/1", ok=True, held={"apt": [held]}, count=0)),
        ("n1", NodeFinished(status=Status.PARTIALLY_FAILED, results=[result], attempts={"kernel": 2})),
        (None, ProbeSummary(probe="web", role="web", session="s1", sent=10, ok=9, failed=1, p50_ms=1.5)),
        (None, RunPaused(error_id=ErrorId.INTERNAL_ERROR, message="boom", traceback="...")),
        (None, WarningEvent(message="a warning")),
        (None, Coordinator(owner="cau run pid 1 on h", resumed=True, by="token:ci", node="n2")),
        (None, HandOver(stage="moved", from_node="n2", to_node="n3")),
    ]


# --- the journal ----------------------------------------------------------------------------------


def test_events_come_back_as_written_in_order(opener: Opener) -> None:
    async def main() -> tuple[list[JournalEvent], list[JournalEvent], list[JournalEvent]]:
        store = opener()
        await store.create_run(record("r1"))
        written = [await store.append("r1", p, NOW + timedelta(seconds=i), node=n) for i, (n, p) in
                   enumerate(sample_events())]  # fmt: skip
        other = opener()  # another handle on the same store, as another process would open it
        try:
            return written, await other.events("r1"), await other.events("r1", after_seq=3)
        finally:
            await other.close()
            await store.close()

    written, read, tail = run(main)
    assert [e.seq for e in written] == list(range(1, len(sample_events()) + 1))
    assert read == written  # payloads, nodes, times and sequence numbers: all as written
    assert [e.seq for e in tail] == list(range(4, len(sample_events()) + 1))


def test_journals_of_runs_are_separate(opener: Opener) -> None:
    async def main() -> tuple[list[int], list[int]]:
        store = opener()
        try:
            for rid in ("a", "b"):
                await store.create_run(record(rid))
            for i in range(3):
                await store.append("a", Progress(message=f"a{i}"), NOW)
                await store.append("b", Progress(message=f"b{i}"), NOW)
            return [e.seq for e in await store.events("a")], [e.seq for e in await store.events("b")]
        finally:
            await store.close()

    assert run(main) == ([1, 2, 3], [1, 2, 3])


def test_concurrent_appenders_never_share_or_skip_a_sequence_number(opener: Opener) -> None:
    """Two handles (two processes, in effect) appending at once, 100 events each."""

    async def main() -> list[JournalEvent]:
        first, second = opener(), opener()
        try:
            await first.create_run(record("r1"))

            async def many(store: Store, who: str) -> None:
                for i in range(100):
                    await store.append("r1", Progress(message=f"{who}{i}"), NOW)

            await asyncio.gather(many(first, "x"), many(second, "y"))
            return await first.events("r1")
        finally:
            await first.close()
            await second.close()

    events = run(main)
    assert [e.seq for e in events] == list(range(1, 201))
    messages = [e.payload.message for e in events if isinstance(e.payload, Progress)]
    for who in ("x", "y"):  # each appender's events in the order it wrote them
        assert [m for m in messages if m.startswith(who)] == [f"{who}{i}" for i in range(100)]


# --- runs and reports -------------------------------------------------------------------------------


def test_runs_are_recorded_queried_and_stopped(opener: Opener) -> None:
    async def main() -> None:
        store = opener()
        try:
            await store.create_run(record("20261120-a", created=NOW - timedelta(days=2)))
            await store.create_run(record("20261121-b", created=NOW - timedelta(days=1)))
            await store.create_run(record("20261122-c", cluster="other", created=NOW))
            got = await store.get_run("20261121-b")
            assert got is not None and got.profile == record("x").profile  # the profile, unredacted
            assert got.profile.pre_update_script == "echo $SECRET_TOKEN"
            assert await store.get_run("nope") is None
            assert [r.run_id for r in await store.find_runs("2026112")] == [
                "20261120-a",
                "20261121-b",
                "20261122-c",
            ]
            active = await store.active_run("c")
            assert active is not None and active.run_id == "20261121-b"  # the newest unfinished
            await store.set_run_state(
                "20261121-b", RunState.FINISHED, status=Status.FAILED, finished=NOW, error_id="X", message="m"
            )
            done = await store.get_run("20261121-b")
            assert done is not None and (done.state, done.status, done.finished) == (
                RunState.FINISHED,
                Status.FAILED,
                NOW,
            )
            assert (done.error_id, done.message) == ("X", "m")
            active = await store.active_run("c")
            assert active is not None and active.run_id == "20261120-a"
            ids = [r.run_id for r in await store.list_runs(ReportQuery(cluster="c"))]
            assert ids == ["20261120-a", "20261121-b"]  # oldest first
            assert [r.run_id for r in await store.list_runs(ReportQuery(last=1))] == ["20261122-c"]
            since = await store.list_runs(ReportQuery(since=NOW - timedelta(hours=36)))
            assert [r.run_id for r in since] == ["20261121-b", "20261122-c"]
            until = await store.list_runs(ReportQuery(until=NOW - timedelta(hours=36)))
            assert [r.run_id for r in until] == ["20261120-a"]
            finished = await store.list_runs(ReportQuery(states=(RunState.FINISHED,)))
            assert [r.run_id for r in finished] == ["20261121-b"]
            await store.request_stop("20261120-a", by="alice@h", reason="change freeze")
            stopped = await store.get_run("20261120-a")
            assert stopped is not None and stopped.stop_requested
            assert (stopped.stop_requested_by, stopped.stop_reason) == ("alice@h", "change freeze")
        finally:
            await store.close()

    run(main)


def test_a_stop_request_is_not_lost_to_state_changes_written_at_the_same_time(opener: Opener) -> None:
    """`cau stop` from one process while the coordinator, in another, records state changes."""

    async def main() -> list[RunRecord | None]:
        coordinator, cli = opener(), opener()
        try:
            got = []
            for i in range(10):
                await coordinator.create_run(record(f"r{i}"))
                changes = [
                    coordinator.set_run_state(f"r{i}", RunState.RUNNING, owner=f"o{n}", message=f"m{n}")
                    for n in range(3)
                ]
                await asyncio.gather(*changes, cli.request_stop(f"r{i}", by="alice@h", reason="freeze"))
                got.append(await cli.get_run(f"r{i}"))
            return got
        finally:
            await coordinator.close()
            await cli.close()

    for got in run(main):
        assert got is not None and got.stop_requested and got.stop_requested_by == "alice@h"
        assert got.owner in {"o0", "o1", "o2"} and got.message == f"m{got.owner[1]}"  # one write, whole


def test_a_report_is_saved_and_replaced(opener: Opener) -> None:
    async def main() -> tuple[RunReport | None, RunReport | None, RunReport | None]:
        store = opener()
        try:
            await store.create_run(record("r1"))
            before = await store.get_report("r1")
            node = NodeReport(name="n1", status=None, state="running")
            first = RunReport(
                run_id="r1",
                cluster="c",
                provider="sandbox",
                status=None,
                state="Running",
                started=NOW,
                nodes=[node],
            )
            await store.save_report("r1", first)
            saved = await store.get_report("r1")
            await store.save_report(
                "r1", first.model_copy(update={"status": "Succeeded", "state": "Finished"})
            )
            return before, saved, await store.get_report("r1")
        finally:
            await store.close()

    before, saved, replaced = run(main)
    assert before is None
    assert saved is not None and saved.nodes[0].name == "n1" and saved.status is None
    assert replaced is not None and (replaced.status, replaced.state) == ("Succeeded", "Finished")


# --- secrets -----------------------------------------------------------------------------------------

CANARY = "cau-canary-9Z/q?p@ss"  # URL-unsafe characters on purpose


@pytest.fixture
def canary() -> Iterator[str]:
    """A secret cau was given (cau.secrets registers every declared one), forgotten afterwards."""
    forget_secrets()
    register_secrets([CANARY])
    try:
        yield CANARY
    finally:
        forget_secrets()


def test_a_secret_s_value_never_reaches_the_store(opener: Opener, canary: str) -> None:
    """Whatever holds the value — a profile, a message, a stop reason, an event, a report — the
    store keeps it masked (cau.store.masking), as another handle reading it back shows."""

    Stored = tuple[RunRecord | None, RunRecord | None, list[JournalEvent], RunReport | None, JournalEvent]

    async def main() -> Stored:
        store, other = opener(), opener()
        try:
            profile = build_profile(None, {"pre_update_script": f"login --password '{canary}'"})
            run = RunRecord("r1", "c", "sandbox", RunState.RUNNING, NOW, profile, message=f"m {canary}")
            await store.create_run(run)
            returned = await store.append("r1", Progress(message=f"said {canary}"), NOW, node="n1")
            await store.request_stop("r1", by="alice@h", reason=f"because {canary}")
            created = await other.get_run("r1")
            await store.set_run_state("r1", RunState.PAUSED, message=f"paused: {canary}")
            report = RunReport(run_id="r1", cluster="c", provider="sandbox", status=None,
                               state=f"Paused {canary}", started=NOW, nodes=[])  # fmt: skip
            await store.save_report("r1", report)
            return (
                created,
                await other.get_run("r1"),
                await other.events("r1"),
                await other.get_report("r1"),
                returned,
            )
        finally:
            await store.close()
            await other.close()

    created, stored, events, report, returned = run(main)
    assert created is not None and stored is not None and report is not None
    assert created.profile.pre_update_script == "login --password '***'"
    assert (created.message, created.stop_reason) == ("m ***", "because ***")
    assert stored.message == "paused: ***"
    assert [e.payload for e in events] == [Progress(message="said ***")] == [returned.payload]
    assert report.state == "Paused ***"
    assert canary not in repr((created, stored, events, report))


# --- the cluster lock ---------------------------------------------------------------------------------


def _owner(pid: int) -> LockOwner:
    return LockOwner(socket.gethostname(), pid, _process_start_time(pid))


def test_a_live_owner_keeps_the_lock_and_is_named_until_taken_over_on_purpose(opener: Opener) -> None:
    async def main() -> None:
        store = opener()
        try:
            holder = _owner(os.getppid())  # a process alive for the whole test
            await store.acquire_lock("c", holder, run_id="r1", now=NOW, lease_seconds=300)
            me = this_process()
            with pytest.raises(LockHeld) as err:
                await store.acquire_lock("c", me, run_id=None, now=at(10), lease_seconds=300)
            assert f"pid {os.getppid()}" in str(err.value) and "run r1" in str(err.value)
            assert "--force-recovery" in (err.value.hint or "")
            taken = await store.acquire_lock("c", me, run_id=None, now=NOW, lease_seconds=300, force=True)
            assert taken.owner.id == me.id and taken.recovered_from == str(holder)
            assert not await store.renew_lock("c", holder, now=NOW, lease_seconds=300)  # it lost
        finally:
            await store.close()

    run(main)


def test_a_dead_owner_on_this_host_loses_the_lock(opener: Opener) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    dead = _owner(proc.pid)
    proc.wait()

    async def main() -> None:
        store = opener()
        try:
            await store.acquire_lock("c", dead, run_id="r1", now=NOW, lease_seconds=300)
            taken = await store.acquire_lock("c", this_process(), run_id=None, now=NOW, lease_seconds=300)
            assert taken.recovered_from == str(dead)
        finally:
            await store.close()

    run(main)


def test_an_owner_elsewhere_keeps_the_lock_while_it_renews_and_loses_it_when_its_lease_expires(
    opener: Opener,
) -> None:
    async def main() -> None:
        store, other = opener(), opener()
        try:
            remote = LockOwner("other-host", 4242, "123")
            await store.acquire_lock("c", remote, run_id=None, now=NOW, lease_seconds=300)
            me = this_process()
            with pytest.raises(LockHeld, match="other-host"):
                await other.acquire_lock("c", me, run_id=None, now=at(299), lease_seconds=300)
            assert await store.renew_lock("c", remote, now=at(200), lease_seconds=300)
            with pytest.raises(LockHeld):
                await other.acquire_lock("c", me, run_id=None, now=at(400), lease_seconds=300)
            taken = await other.acquire_lock("c", me, run_id=None, now=at(501), lease_seconds=300)
            assert taken.owner.id == me.id and taken.recovered_from == str(remote)
            assert not await store.renew_lock("c", remote, now=NOW, lease_seconds=300)  # it learns it lost
            await other.set_lock_run("c", me, "r9")
            lock = await store.get_lock("c")
            assert lock is not None and lock.run_id == "r9" and lock.owner.id == me.id
        finally:
            await store.close()
            await other.close()

    run(main)


def test_of_two_coordinators_taking_a_free_lock_at_once_exactly_one_gets_it(opener: Opener) -> None:
    async def main() -> list[tuple[list[str], str | None]]:
        first, second = opener(), opener()
        a, b = LockOwner("host-a", 1, "1"), LockOwner("host-b", 2, "2")
        try:
            out = []
            for i in range(10):
                tries = [
                    store.acquire_lock(f"c{i}", who, run_id=None, now=NOW, lease_seconds=300)
                    for store, who in ((first, a), (second, b))
                ]
                results = await asyncio.gather(*tries, return_exceptions=True)
                winners = [r.owner.id for r in results if not isinstance(r, BaseException)]
                assert all(isinstance(r, LockHeld) for r in results if isinstance(r, BaseException))
                lock = await first.get_lock(f"c{i}")
                out.append((winners, None if lock is None else lock.owner.id))
            return out
        finally:
            await first.close()
            await second.close()

    for winners, holder in run(main):
        assert len(winners) == 1 and holder == winners[0]


def test_the_lock_is_released_only_by_its_owner_and_kept_by_a_second_acquire_of_it(opener: Opener) -> None:
    async def main() -> None:
        store = opener()
        try:
            me = this_process()
            await store.acquire_lock("c", me, run_id=None, now=NOW, lease_seconds=300)
            again = await store.acquire_lock("c", me, run_id="r1", now=NOW, lease_seconds=300)
            assert again.recovered_from is None  # re-acquiring one's own lock is no take-over
            await store.release_lock("c", LockOwner("other-host", 1, None))
            assert await store.get_lock("c") is not None
            await store.release_lock("c", me)
            assert await store.get_lock("c") is None
            assert await store.get_lock("other-cluster") is None
        finally:
            await store.close()

    run(main)


# --- the clustered role (self-updating mode) ---------------------------------------------------------


def test_a_cluster_s_role_is_stored_replaced_listed_and_deleted_seen_from_another_handle(
    opener: Opener,
) -> None:
    role = ClusterRole(
        cluster="c", profile="monthly", options={"max_retries_per_node": 2}, created=NOW, updated=NOW,
        updated_by="token:admin",
    )  # fmt: skip

    async def main() -> None:
        store, other = opener(), opener()
        try:
            assert await store.get_role("c") is None and await store.list_roles() == []
            await store.put_role(role)
            assert await other.get_role("c") == role
            asked = role.model_copy(update={"update_requested": UpdateRequest(at=at(5), by="ops@h (cli)")})
            await other.put_role(asked)
            await store.put_role(role.model_copy(update={"cluster": "a"}))
            assert [r.cluster for r in await store.list_roles()] == ["a", "c"]
            assert (await store.get_role("c")) == asked
            assert await store.delete_role("c") is True
            assert await other.delete_role("c") is False
            assert await other.get_role("c") is None
        finally:
            await store.close()
            await other.close()

    run(main)


# --- documents (compliance's baselines, groups, exemptions, scans) ---------------------------------


def test_documents_are_kept_by_kind_and_key_replaced_listed_and_deleted_seen_from_another_handle(
    opener: Opener, canary: str
) -> None:
    base = Baseline(
        name="security", description=f"token {canary}",
        rules=(PackageRule(name="openssl", min_version="3.0.15-1"),),
        scopes=(Scope(kind=ScopeKind.CLUSTER, name="c/1"),), created=NOW, updated=NOW, updated_by="ops",
    )  # fmt: skip
    scan = NodeComplianceScan(
        cluster="c/1", node="n1", scanned_at=NOW, baselines={"security": 1},
        findings=(Finding(baseline="security", rule="apt:openssl", update="apt:openssl", title="openssl",
                          state=FindingState.MISSING, installed="3.0.11-1", required="3.0.15-1"),),
    )  # fmt: skip

    async def main() -> None:
        store, other = opener(), opener()
        try:
            assert await store.get_document(Baseline, "security") is None
            assert await store.list_documents(Baseline) == []
            await store.put_document(base)
            await store.put_document(base.model_copy(update={"name": "all", "description": ""}))
            await store.put_document(scan)
            seen = await other.get_document(Baseline, "security")
            assert seen is not None and seen.rules == base.rules and seen.scopes == base.scopes
            assert canary not in seen.description  # masked like everything a store keeps
            # one kind's records only, ordered by key; a key with a '/' is one key
            assert [b.name for b in await other.list_documents(Baseline)] == ["all", "security"]
            assert await other.list_documents(NodeComplianceScan) == [scan]
            assert await store.get_document(NodeComplianceScan, "c/1/n1") == scan
            await other.put_document(base.model_copy(update={"revision": 2}))
            again = await store.get_document(Baseline, "security")
            assert again is not None and again.revision == 2
            assert await store.delete_document(Baseline, "security") is True
            assert await other.delete_document(Baseline, "security") is False
            assert [b.name for b in await other.list_documents(Baseline)] == ["all"]
            assert await store.get_document(NodeComplianceScan, "c/1/n1") == scan
        finally:
            await store.close()
            await other.close()

    run(main)


# --- SQLite only, not the Store contract: browser sessions (cau.store.access, in the local file) -----


def _access(tmp_path: Path) -> AccessStore:
    """One more connection to the store's file, as `cau serve` and a `cau session` command each have."""
    return AccessStore(SqliteFile(tmp_path / "cau.db"))


def test_sessions_are_listed_by_a_public_handle_and_ended_by_it_from_another_process(tmp_path: Path) -> None:
    server, cli = _access(tmp_path), _access(tmp_path)
    try:
        _, secret = server.create_token("laptop", Role.ADMIN, by="test")
        token = server.check_token(secret)
        assert token is not None
        server.set_password("alice", Role.OPERATOR, "correct horse battery")
        alice = server.check_password("alice", "correct horse battery")
        assert alice is not None
        by_token, _ = server.create_session(token, client="192.0.2.7")
        by_password, signed_in = server.create_session(alice, client="198.51.100.3")
        listed = cli.list_sessions()
        assert [(s.name, s.role, s.via, s.client) for s in listed] == [
            ("token:laptop", Role.ADMIN, "token", "192.0.2.7"),
            ("alice", Role.OPERATOR, "password", "198.51.100.3"),
        ]
        assert listed[0].token_id == token.token_id and listed[1].token_id is None
        assert all(s.signed_in < s.expires for s in listed)
        assert listed[1].handle == signed_in.session  # the session knows its own handle
        # a handle is no part of a secret: neither the cookie nor what the store keeps of it
        for s in listed:
            for cookie in (by_token, by_password):
                assert s.handle not in cookie and s.handle not in secret_hash(cookie)
        ended = cli.end_session_by_handle(listed[1].handle)
        assert ended is not None and ended.name == "alice"
        assert server.check_session(by_password) is None  # the server sees it ended at once
        assert server.check_session(by_token) is not None  # the other one is untouched
        assert cli.end_session_by_handle(listed[1].handle) is None
        assert cli.end_session_by_handle("nope") is None
        assert [s.name for s in cli.list_sessions()] == ["token:laptop"]
    finally:
        server.close()
        cli.close()


def test_sessions_out_of_force_are_neither_listed_nor_ended(tmp_path: Path) -> None:
    access = _access(tmp_path)
    try:
        info, secret = access.create_token("ci", Role.OPERATOR, by="test")
        token = access.check_token(secret)
        access.set_password("bob", Role.VIEWER, "correct horse battery")
        bob = access.check_password("bob", "correct horse battery")
        assert token is not None and bob is not None
        _, expired = access.create_session(bob, hours=-1)
        _, revoked = access.create_session(token)
        assert access.revoke_token(info.token_id)
        _, demoted = access.create_session(bob)
        access.set_password("bob", Role.VIEWER, "another long password")  # ends bob's sessions
        assert access.list_sessions() == []
        for gone in (expired, revoked, demoted):
            assert gone.session is not None and access.end_session_by_handle(gone.session) is None
    finally:
        access.close()


def test_a_schema_4_store_s_sessions_get_handles_and_stay_signed_in(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "cau.db")
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '4');"
        "CREATE TABLE users (name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL,"
        " updated TEXT NOT NULL);"
        "CREATE TABLE web_sessions (session_hash TEXT PRIMARY KEY, principal TEXT NOT NULL,"
        " role TEXT NOT NULL, csrf TEXT NOT NULL, created TEXT NOT NULL, expires TEXT NOT NULL,"
        " token_id TEXT);"
    )
    now = datetime.now(UTC)
    db.execute(
        "INSERT INTO users VALUES ('carol', 'admin', ?, ?)",
        (hash_password("x" * 12), (now - timedelta(hours=2)).isoformat()),
    )
    for cookie in ("old-cookie-1", "old-cookie-2"):
        db.execute(
            "INSERT INTO web_sessions VALUES (?, 'carol', 'admin', 'csrf', ?, ?, NULL)",
            (
                secret_hash(cookie),
                (now - timedelta(hours=1)).isoformat(),
                (now + timedelta(hours=1)).isoformat(),
            ),
        )
    db.commit()
    db.close()
    access = _access(tmp_path)
    try:
        listed = access.list_sessions()
        assert [(s.name, s.via, s.client) for s in listed] == [("carol", "password", None)] * 2
        assert len({s.handle for s in listed}) == 2  # each its own handle
        assert access.check_session("old-cookie-1") is not None  # migrating signed no one out
        ended = access.end_session_by_handle(listed[0].handle)
        assert ended is not None
        assert [access.check_session(c) is None for c in ("old-cookie-1", "old-cookie-2")].count(True) == 1
    finally:
        access.close()
