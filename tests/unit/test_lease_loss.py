"""A coordinator that cannot renew its lease stops acting before the lease runs out, so that the
coordinator which may take the lock over after it (self-updating mode: another node's) never acts
at the same time. Here the store stops answering this coordinator mid-run (its node cut off from
the etcd members, say); the run must stop, journal nothing more, and stay resumable."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from cau.clock import run_virtual
from cau.domain.profile import build_profile
from cau.errors import LockLost, StoreUnavailable
from cau.service import Service
from tests.support import service

LEASE = 8.0  # the sandbox run takes about 25 s of virtual time


class CutOffStore:
    """The real store, until `cut()`: from then on every renewal fails as an unreachable etcd
    would. Records (in loop time) each append and the last renewal that succeeded."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.cut_at: float | None = None
        self.renewed_at: float | None = None
        self.appended: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def cut(self) -> None:
        self.cut_at = asyncio.get_running_loop().time()

    async def renew_lock(self, *args: Any, **kwargs: Any) -> bool:
        if self.cut_at is not None:
            raise StoreUnavailable("no etcd member answers (connection refused)")
        renewed: bool = await self._inner.renew_lock(*args, **kwargs)
        self.renewed_at = asyncio.get_running_loop().time()
        return renewed

    async def append(self, *args: Any, **kwargs: Any) -> Any:
        self.appended.append(asyncio.get_running_loop().time())
        return await self._inner.append(*args, **kwargs)


def test_a_coordinator_that_cannot_renew_its_lease_stops_before_the_lease_runs_out(tmp_path: Path) -> None:
    async def main() -> tuple[CutOffStore, float, LockLost | None, Service]:
        svc = service(tmp_path / "home")
        svc.lease_seconds = LEASE
        store = CutOffStore(svc.store)
        svc._store = store  # type: ignore[assignment]
        loop = asyncio.get_running_loop()

        async def cut_later() -> None:
            await asyncio.sleep(3)  # well inside the run
            store.cut()

        cutter = asyncio.ensure_future(cut_later())
        error: LockLost | None = None
        try:
            await svc.run("sandbox", build_profile(None, {}))
        except LockLost as exc:
            error = exc
        stopped = loop.time()
        cutter.cancel()
        return store, stopped, error, svc

    store, stopped, error, svc = run_virtual(main())
    try:
        assert store.cut_at is not None, "the run ended before the store was cut off"
        assert error is not None, "the coordinator went on acting without a lease"
        assert "could not renew the lock" in str(error)
        assert store.renewed_at is not None
        # Stopped while the last lease written still held: nobody else could have taken over yet.
        assert stopped - store.renewed_at < LEASE
        assert max(store.appended) <= stopped  # nothing journaled after it stopped
        # The run is unfinished, and resumable from its journal.
        active = asyncio.run(svc.store.active_run("sandbox"))
        assert active is not None
    finally:
        svc.close()


def test_renewals_failing_for_less_than_half_the_lease_do_not_stop_the_run(tmp_path: Path) -> None:
    """A blip shorter than half the lease is ridden out: the run finishes."""
    blip = 2.0  # failed renewals in a row

    class BlipStore(CutOffStore):
        async def renew_lock(self, *args: Any, **kwargs: Any) -> bool:
            now = asyncio.get_running_loop().time()
            if self.cut_at is not None and now - self.cut_at < blip * LEASE / 10:
                raise StoreUnavailable("no etcd member answers (timeout)")
            return bool(await self._inner.renew_lock(*args, **kwargs))

    async def main() -> Any:
        svc = service(tmp_path / "home")
        svc.lease_seconds = LEASE
        store = BlipStore(svc.store)
        svc._store = store  # type: ignore[assignment]

        async def cut_later() -> None:
            await asyncio.sleep(3)
            store.cut()

        cutter = asyncio.ensure_future(cut_later())
        try:
            return await svc.run("sandbox", build_profile(None, {}))
        finally:
            cutter.cancel()
            svc.close()

    outcome = run_virtual(main())
    assert outcome.status.value == "Succeeded", outcome
