"""The engine worker of `cau serve`: Updating Runs coordinated by this process, one per cluster.

A run is `Service.run` in an asyncio task, exactly what `cau run` does, so a run started here shows
in `cau status` and the other way round (the store and its cluster lock are shared). On shutdown
every run in hand is abandoned the way a second Ctrl-C abandons `cau run`: the coordinator stops
acting, the journal says where it was, the cluster lock is released, and `cau run CLUSTER` (or
the dashboard's Apply) resumes it without repeating a step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cau.domain.profile import RunProfile
from cau.engine.coordinator import Coordinator
from cau.errors import LockHeld
from cau.journal.events import JournalEvent
from cau.service import Service

log = logging.getLogger("cau.web")


@dataclass
class Job:
    cluster: str
    task: asyncio.Task[object]
    run_id: str | None = None
    coordinator: Coordinator | None = None
    notices: list[str] = field(default_factory=list)


class RunWorker:
    def __init__(self, svc: Service, on_event: Callable[[JournalEvent], None] | None = None) -> None:
        self._svc = svc
        self._on_event = on_event
        self.jobs: dict[str, Job] = {}

    def running(self, cluster: str) -> Job | None:
        job = self.jobs.get(cluster)
        return job if job is not None and not job.task.done() else None

    async def start(
        self, cluster: str, profile: RunProfile, *, profile_given: bool, actor: str
    ) -> tuple[str, bool]:
        """Start (or resume) the cluster's run for `actor` (journaled as who started or resumed it;
        the API audits the request); returns (run id, resumed) once its coordinator has taken it,
        or raises what refused it (preflight, lock, bad plug-in arguments...)."""
        if self.running(cluster) is not None:
            job = self.jobs[cluster]
            raise LockHeld(
                f"cluster '{cluster}' is being updated by this server, run {job.run_id}",
                owner="cau serve",
                hint="watch it in the dashboard, or stop it",
            )
        resumed = await self._svc.active_run(cluster) is not None
        taken: asyncio.Future[Coordinator] = asyncio.get_running_loop().create_future()

        async def on_coordinator(coordinator: Coordinator) -> None:
            job.coordinator, job.run_id = coordinator, coordinator.run_id
            if not taken.done():
                taken.set_result(coordinator)

        task: asyncio.Task[object] = asyncio.create_task(
            self._svc.run(
                cluster,
                profile,
                on_event=self._on_event,
                on_coordinator=on_coordinator,
                on_notice=lambda message: job.notices.append(message),
                profile_given=profile_given,
                owner_label="cau serve",
                actor=actor,
                audit=False,
            ),
            name=f"cau run {cluster}",
        )
        job = Job(cluster, task)
        self.jobs[cluster] = job
        task.add_done_callback(self._finished)
        both: set[asyncio.Future[Any]] = {task, taken}
        await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        if taken.done():
            assert job.run_id is not None
            return job.run_id, resumed
        taken.cancel()
        task.result()  # raises what refused the run
        raise RuntimeError("the run ended before a coordinator took it")  # pragma: no cover

    def _finished(self, task: asyncio.Task[object]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.warning("run task %s ended with an error: %s", task.get_name(), exc)

    async def shutdown(self) -> list[str]:
        """Abandon every run in hand (resumable); returns their ids."""
        left = []
        for job in list(self.jobs.values()):
            if job.task.done():
                continue
            job.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job.task
            if job.run_id:
                left.append(job.run_id)
                log.warning(
                    "run %s on '%s' left resumable: `cau run %s` (or Apply in the dashboard) resumes it",
                    job.run_id,
                    job.cluster,
                    job.cluster,
                )
        log.warning("cau serve stopped; %d run(s) left resumable", len(left))
        return left
