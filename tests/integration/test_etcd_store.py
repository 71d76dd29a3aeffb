"""What is particular to the etcd store (the contract every store keeps is in
tests/contract/test_store.py): it goes on through the loss of one etcd member of three (the
leader, and the endpoint it was talking to), and with two of three gone it fails within its
timeout with an error naming the endpoints and the lost quorum, never hanging; an append whose
answer was lost is not appended twice; a store written by a newer cau is refused; it is found
through the `cau.stores` entry point.

The member-killing test has a 3-member cluster of its own (tests/support_etcd.py); the others
share the session's (tests/conftest.py), each under a key prefix of its own."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cau.errors import ConfigError, StoreUnavailable
from cau.journal.events import Progress
from cau.lease import this_process
from cau.ports import StoreContext
from cau.registry import Registry
from cau.store.etcd import EtcdOptions, EtcdStore
from cau.store.etcd_gateway import b64
from tests.contract.test_store import record
from tests.support_etcd import EtcdCluster

pytestmark = pytest.mark.slow

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TIMEOUT = 3.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path / "etcd")
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def test_the_store_goes_on_without_one_member_and_fails_clearly_without_quorum(cluster: EtcdCluster) -> None:
    leader = cluster.leader()
    # the store talks to the leader first: losing it loses both its endpoint and raft's leader
    endpoints = [leader.endpoint] + [e for e in cluster.endpoints if e != leader.endpoint]
    store = EtcdStore(
        EtcdOptions(endpoints=endpoints, prefix=f"/cau-test/{uuid.uuid4().hex}/", timeout=TIMEOUT)
    )
    me = this_process()

    async def main() -> tuple[list[int], float, float, StoreUnavailable, StoreUnavailable]:
        try:
            await store.create_run(record("r1"))
            for i in range(3):
                await store.append("r1", Progress(message=f"before {i}"), NOW)
            await store.acquire_lock("c", me, run_id="r1", now=NOW, lease_seconds=60)

            cluster.kill(leader)  # SIGKILL, by PID
            started = time.monotonic()
            await store.append("r1", Progress(message="after 0"), NOW)
            first_after = time.monotonic() - started
            for i in range(1, 3):
                await store.append("r1", Progress(message=f"after {i}"), NOW)
            assert await store.renew_lock("c", me, now=NOW + timedelta(seconds=6), lease_seconds=60)
            lock = await store.get_lock("c")
            assert lock is not None and lock.lease_expires == NOW + timedelta(seconds=66)
            seqs = [e.seq for e in await store.events("r1")]

            cluster.kill(next(m for m in cluster.members if m.alive))  # 1 of 3 left: no quorum
            errors = []
            started = time.monotonic()
            for call in (
                store.append("r1", Progress(message="lost"), NOW),
                store.renew_lock("c", me, now=NOW + timedelta(seconds=12), lease_seconds=60),
            ):
                with pytest.raises(StoreUnavailable) as err:
                    await call
                errors.append(err.value)
            return seqs, first_after, (time.monotonic() - started) / 2, errors[0], errors[1]
        finally:
            await store.close()

    seqs, first_after, failing, append_error, renew_error = asyncio.run(main())
    assert seqs == [1, 2, 3, 4, 5, 6]  # nothing lost, nothing twice
    assert first_after < TIMEOUT  # a new leader, and another endpoint, within one call's time
    assert failing < TIMEOUT + 1  # each call fails within its timeout: no hang
    for error in (append_error, renew_error):
        assert "no quorum" in str(error)
        assert all(e in str(error) for e in cluster.endpoints)  # which endpoints, and what each said
        assert "cannot connect" in str(error)  # the two members killed
        # the one left says it has no leader, or (busy machine, its election not over yet) stays
        # silent: either way named, and within the call's time
        assert "etcdserver: no leader" in str(error) or "no answer in time" in str(error)
        assert error.hint is not None and "majority of the etcd members" in error.hint


def _options(cluster: EtcdCluster, **kw: object) -> EtcdOptions:
    return EtcdOptions.model_validate(
        {"endpoints": cluster.endpoints, "prefix": f"/cau-test/{uuid.uuid4().hex}/", **kw}
    )


class _AnswerLost(httpx.AsyncBaseTransport):
    """etcd gets the first transaction and commits it; its answer never comes back (the endpoint
    died right after, a network cut): the client sees a timeout."""

    def __init__(self) -> None:
        self._real = httpx.AsyncHTTPTransport()
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._real.handle_async_request(request)
        if request.url.path == "/v3/kv/txn" and self.lost == 0 and b"request_put" in request.content:
            await response.aread()
            self.lost += 1
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response

    async def aclose(self) -> None:
        await self._real.aclose()


def test_an_append_whose_answer_was_lost_is_not_appended_twice(etcd_cluster: EtcdCluster) -> None:
    async def main() -> tuple[list[int], list[int], int]:
        setup = EtcdStore(_options(etcd_cluster))
        await setup.create_run(record("r1"))
        store = EtcdStore(setup.options)
        lossy = _AnswerLost()
        # the fault, injected where requests leave: this loop's client of the store's gateway
        store._etcd._http = httpx.AsyncClient(transport=lossy)
        store._etcd._loop = asyncio.get_running_loop()
        try:
            returned = [(await store.append("r1", Progress(message=f"e{i}"), NOW)).seq for i in range(2)]
            return returned, [e.seq for e in await setup.events("r1")], lossy.lost
        finally:
            await store.close()
            await setup.close()

    returned, stored, lost = asyncio.run(main())
    assert lost == 1  # the fault did happen
    assert returned == stored == [1, 2]


def test_a_journal_longer_than_a_page_reads_whole_and_in_order(
    etcd_cluster: EtcdCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EtcdStore, "page", 4)  # 4 keys per range request instead of hundreds

    async def main() -> tuple[list[int], list[int], list[str]]:
        store = EtcdStore(_options(etcd_cluster))
        try:
            await store.create_run(record("r1"))
            for i in range(11):
                await store.append("r1", Progress(message=f"e{i}"), NOW)
            whole = await store.events("r1")
            tail = [e.seq for e in await store.events("r1", after_seq=5)]
            return (
                [e.seq for e in whole],
                tail,
                [e.payload.message for e in whole if isinstance(e.payload, Progress)],
            )
        finally:
            await store.close()

    whole, tail, messages = asyncio.run(main())
    assert whole == list(range(1, 12)) and tail == list(range(6, 12))
    assert messages == [f"e{i}" for i in range(11)]


def test_a_store_written_by_a_newer_cau_is_refused(etcd_cluster: EtcdCluster) -> None:
    options = _options(etcd_cluster)
    key = (options.prefix + "schema").encode()
    httpx.post(
        f"{etcd_cluster.endpoints[0]}/v3/kv/put",
        json={"key": b64(key), "value": b64(b'{"schema_version": 99}')},
    )

    async def main() -> None:
        store = EtcdStore(options)
        try:
            await store.get_run("r1")
        finally:
            await store.close()

    with pytest.raises(ConfigError, match="schema version 99, newer than this cau understands") as err:
        asyncio.run(main())
    assert options.prefix in str(err.value) and etcd_cluster.endpoints[0] in str(err.value)


def test_the_etcd_store_is_opened_through_its_entry_point(etcd_cluster: EtcdCluster, tmp_path: Path) -> None:
    factory = Registry.discover().store("etcd")
    options = factory.Options.model_validate({"endpoints": etcd_cluster.endpoints, "prefix": "/cau-test/ep/"})

    async def main() -> str | None:
        store = factory.open(options, StoreContext(data_dir=tmp_path))
        try:
            await store.create_run(record(f"r-{uuid.uuid4().hex}"))
            runs = await store.find_runs("r-")
            return runs[-1].provider if runs else None
        finally:
            await store.close()

    assert asyncio.run(main()) == "sandbox"


def test_one_store_handle_serves_one_event_loop_after_another(
    etcd_cluster: EtcdCluster, tmp_path: Path
) -> None:
    """The CLI runs each step in its own asyncio.run (`cau stop`: the run, then its lock): a
    connection kept alive from the first loop must not be used in the next (found on the lab:
    `cau stop` failed with "Event loop is closed")."""
    factory = Registry.discover().store("etcd")
    options = factory.Options.model_validate(
        {"endpoints": etcd_cluster.endpoints, "prefix": "/cau-test/loops/"}
    )
    store = factory.open(options, StoreContext(data_dir=tmp_path))
    run_id = f"r-{uuid.uuid4().hex}"
    asyncio.run(store.create_run(record(run_id)))
    for _ in range(3):
        assert asyncio.run(store.get_run(run_id)) is not None
        assert asyncio.run(store.get_lock("c")) is None
    asyncio.run(store.close())
