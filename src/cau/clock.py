"""Clocks: the real one, and a virtual-time event loop in which an hour of waiting takes no time.

`VirtualTimeLoop` is an ordinary asyncio loop whose `time()` is virtual: when every task is waiting
on a timer and no real I/O is ready, it jumps straight to the next timer instead of sleeping. All
asyncio timers (sleep, wait_for, timeouts) then run on virtual time, and so does `VirtualClock`.
Work that really happens outside the loop (a subprocess, a thread) freezes virtual time while it
runs: wrap it in `hold_virtual_time()`.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

T = TypeVar("T")


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class _VirtualSelector(selectors.BaseSelector):
    def __init__(self) -> None:
        self._real = selectors.DefaultSelector()
        self.loop: VirtualTimeLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        loop = self.loop
        if loop is None or loop.holds > 0:
            # Real work is under way outside the loop: wait for it in real time, virtual time frozen.
            return self._real.select(0.05 if timeout is None else min(timeout, 0.05))
        if timeout is None:
            return self._real.select(None)
        loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = 0.0
        self.holds = 0

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += seconds


@contextmanager
def hold_virtual_time() -> Iterator[None]:
    """Freeze virtual time while real work outside the loop runs (no-op on a normal loop)."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualTimeLoop):
        yield
        return
    loop.holds += 1
    try:
        yield
    finally:
        loop.holds -= 1


class VirtualClock:
    """A clock reading the running loop's time from a fixed start; virtual on a VirtualTimeLoop."""

    def __init__(self, start: datetime | None = None) -> None:
        self._start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._origin: float | None = None

    def _loop_time(self) -> float:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if isinstance(loop, VirtualTimeLoop):
            return now  # starts at 0 with the loop
        if self._origin is None:
            self._origin = now
        return now - self._origin

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._loop_time())

    def monotonic(self) -> float:
        return self._loop_time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a fresh VirtualTimeLoop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
