"""The journal writer of a coordinator: every event of a run goes through it, in order.

`record()` is for side effects: it returns once the event is in the store (an intent is durable
before the act it announces). `note()` is for what is not a side effect (a progress line, a
warning, a probe's transition): it queues the event behind the earlier ones and returns at once,
so neither a node's pipeline nor the probes ever wait for the store to write a line. Each event
is folded into the run's progress once written, and shown to listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from cau.engine.crash import CrashPoint
from cau.journal.events import EventPayload, JournalEvent
from cau.journal.progress import RunProgress, apply
from cau.ports import Clock, Store

log = logging.getLogger(__name__)

EventListener = Callable[[JournalEvent], None]

_Item = tuple[EventPayload, str | None, "asyncio.Future[JournalEvent] | None"]


class JournalWriter:
    def __init__(
        self,
        store: Store,
        run_id: str,
        clock: Clock,
        progress: RunProgress,
        on_event: EventListener | None = None,
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._clock = clock
        self._progress = progress
        self._on_event = on_event
        self._crash = CrashPoint.from_env()  # tests only: die right after a given journal event
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.failure: Exception | None = None  # the first write that failed

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="cau-journal")

    async def record(self, payload: EventPayload, *, node: str | None = None) -> JournalEvent:
        self.start()
        done: asyncio.Future[JournalEvent] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((payload, node, done))
        return await done

    def note(self, payload: EventPayload, *, node: str | None = None) -> None:
        self.start()
        self._queue.put_nowait((payload, node, None))

    async def flush(self) -> None:
        """Until everything queued so far is written."""
        if self._task is not None:
            await self._queue.join()

    async def close(self) -> None:
        """Write what is queued, then stop (a cancelled coordinator drops the rest: it is dead)."""
        if self._task is None:
            return
        with contextlib.suppress(asyncio.CancelledError):
            await self.flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _drain(self) -> None:
        while True:
            payload, node, done = await self._queue.get()
            try:
                event = await self._store.append(self._run_id, payload, self._clock.now(), node=node)
            except Exception as exc:
                self.failure = self.failure or exc
                if done is not None and not done.done():
                    done.set_exception(exc)
                else:
                    log.error("could not journal a %s event: %s", payload.kind.value, exc)
                self._queue.task_done()
                continue
            apply(self._progress, event)
            if self._crash is not None:
                self._crash.check(event)
            if self._on_event is not None:
                try:
                    self._on_event(event)
                except Exception:  # a listener (a screen, the dashboard) must not stop the run
                    log.exception("a journal listener failed")
            if done is not None and not done.done():
                done.set_result(event)
            self._queue.task_done()
