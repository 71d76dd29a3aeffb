"""The Update Coordinator: drives one Updating Run, resumable at any point.

It replays the run's journal, resumes the nodes that were in progress, then starts the others in
order while the failure budget and `max_parallel_nodes` allow; each node enters maintenance only
when the maintenance gate (quorum, capacity) admits it. A stop request (`cau stop`, StopAfter, the
failure budget) lets the nodes in hand finish or come back out of maintenance, and cancels the
rest.

A run with a maintenance window (`RunProfile.window`) starts nodes only inside it, and no node
enters maintenance outside it (the gate refuses). When the window closes, the nodes in
maintenance finish and come back; a node that had not entered maintenance stops where it is.
Then the run pauses (RunPaused, OutsideMaintenanceWindow, naming the next opening) with nothing
in maintenance. A `cau run` (or the daemon) while the window is closed says when it opens and
changes nothing; in the window it resumes the run where it stopped: finished nodes stay
finished, a stopped node carries on from its journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from cau.domain.planning import Admission, Block, domain_rank, may_start
from cau.domain.profile import RunProfile
from cau.domain.results import ErrorId, RunState, Status, run_status
from cau.engine.gate import MaintenanceGate
from cau.engine.node import NodeRun, PluginBinding, refusal
from cau.engine.safety import RunSafety, SafetyConfig
from cau.engine.writer import EventListener, JournalWriter
from cau.errors import MaintenanceError
from cau.journal.events import Coordinator as CoordinatorTook
from cau.journal.events import (
    EventPayload,
    HandOver,
    JournalEvent,
    NodeFinished,
    ProbeEvent,
    RunFinished,
    RunPaused,
    StopRequested,
    WarningEvent,
)
from cau.journal.progress import NodeProgress, RunProgress, replay
from cau.ports import (
    AvailabilitySource,
    Clock,
    ClusterProvider,
    HostsCoordinatorRole,
    ReportsAvailability,
    Store,
)
from cau.reports.build import build_report
from cau.reports.model import RunReport

__all__ = ["Coordinator", "EventListener", "RunOutcome"]


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    state: RunState
    status: Status | None
    error_id: str | None
    message: str | None
    report: RunReport | None
    # Self-updating mode: the run goes on, driven by another node's coordinator (on this node, or
    # None: whichever node's is elected next).
    handed_over: bool = False
    handed_over_to: str | None = None


class Coordinator:
    """Build it with `await Coordinator.load(...)` (it replays the run's journal)."""

    @classmethod
    async def load(
        cls,
        *,
        store: Store,
        run_id: str,
        provider: ClusterProvider,
        plugins: list[PluginBinding],
        profile: RunProfile,
        clock: Clock,
        owner: str,
        data_dir: Path,
        secrets: Mapping[str, str] | None = None,
        on_event: EventListener | None = None,
        poll_seconds: float = 1.0,
        gate_recheck_seconds: float = 30.0,
        availability: AvailabilitySource | None = None,
        requested_by: str | None = None,
        own_node: str | None = None,
        role_host: HostsCoordinatorRole | None = None,
        store_members: Collection[str] = (),
        safety: SafetyConfig | None = None,
    ) -> Coordinator:
        return cls(
            store=store,
            run_id=run_id,
            progress=replay(await store.events(run_id)),
            provider=provider,
            plugins=plugins,
            profile=profile,
            clock=clock,
            owner=owner,
            data_dir=data_dir,
            secrets=secrets,
            on_event=on_event,
            poll_seconds=poll_seconds,
            gate_recheck_seconds=gate_recheck_seconds,
            availability=availability,
            requested_by=requested_by,
            own_node=own_node,
            role_host=role_host,
            store_members=store_members,
            safety=safety,
        )

    def __init__(
        self,
        *,
        store: Store,
        run_id: str,
        progress: RunProgress,
        provider: ClusterProvider,
        plugins: list[PluginBinding],
        profile: RunProfile,
        clock: Clock,
        owner: str,
        data_dir: Path,
        secrets: Mapping[str, str] | None = None,
        on_event: EventListener | None = None,
        poll_seconds: float = 1.0,
        gate_recheck_seconds: float = 30.0,
        availability: AvailabilitySource | None = None,
        requested_by: str | None = None,  # who asked for this start or resume, for the journal
        # Self-updating mode: the cluster node this coordinator runs on. When that node's turn
        # comes, the coordinator hands the run over (cau.ports.HostsCoordinatorRole) and stops.
        own_node: str | None = None,
        role_host: HostsCoordinatorRole | None = None,
        store_members: Collection[str] = (),
        # Health gates and Alertmanager silences (cau.engine.safety), around the gate.
        safety: SafetyConfig | None = None,
    ) -> None:
        self.store = store
        self.requested_by = requested_by
        self.own_node = own_node
        # Who moves the coordinator role: the provider (a cluster's resource manager), or, for a
        # cluster without one, the store's leader election (cau.selfupdating.ElectedRole).
        self.role_host = (
            role_host
            if role_host is not None
            else (provider if isinstance(provider, HostsCoordinatorRole) else None)
        )
        self._handing_over = False
        self.run_id = run_id
        self.provider = provider
        self.cluster = provider.cluster
        self.plugins = plugins
        self.profile = profile
        self.clock = clock
        self.owner = owner
        self.data_dir = data_dir
        self.secrets: Mapping[str, str] = dict(secrets or {})
        self._poll = poll_seconds
        self.progress = progress
        self.max_failed: int = self.progress.max_failed
        self.writer = JournalWriter(store, run_id, clock, progress, on_event)
        self.safety = RunSafety(self, safety)
        self.gate = MaintenanceGate(
            provider,
            profile.move,
            self._on_gate_wait,
            gate_recheck_seconds,
            check_health=not profile.allow_unhealthy_cluster,
            window_closed=self._window_closed,
            store_members=store_members,
            hooks=self.safety,
            limits=profile.disruption_limits,
        )
        self.window = profile.maintenance_window
        self._outside_window: set[str] = set()  # nodes stopped by the window's end, not finished
        # A resumed run keeps the stop its journal holds: the first reason to stop stays the reason.
        first = progress.stop
        self._stop: tuple[ErrorId, str] | None = (first.error_id, first.message) if first else None
        self._warned = False
        self._runs: dict[str, NodeRun] = {}
        # Nodes started ahead of their turn (read-only: scan, staging), each with the event that
        # gives it its turn; an event set is a turn given. See `_schedule`.
        self._turns: dict[str, asyncio.Event] = {}
        self._at_work: dict[asyncio.Future[Any], str] = {}  # the node tasks `_schedule` runs
        self.availability = availability
        self._measuring = False  # the availability source is started and its events journaled

    # --- the context the node pipelines use ------------------------------------------------------

    async def journal(self, payload: EventPayload, *, node: str | None = None) -> JournalEvent:
        """Journal a side effect's record: durable when this returns."""
        return await self.writer.record(payload, node=node)

    def note(self, payload: EventPayload, *, node: str | None = None) -> None:
        """Journal what is not a side effect (progress, a warning), in order, without waiting."""
        self.writer.note(payload, node=node)

    @property
    def stop_reason(self) -> ErrorId | None:
        return self._stop[0] if self._stop else None

    def node_progress(self, node: str) -> NodeProgress:
        return self.progress.nodes.setdefault(node, NodeProgress(node))

    async def take_turn(self, node: str) -> None:
        turn = self._turns.get(node)
        if turn is not None and not turn.is_set():
            limit = self.profile.max_parallel_nodes
            reason = f"its turn (scanned and staged ahead; max_parallel_nodes = {limit})"
            before = self._domains_before(node, self._at_work)
            if before:
                first = ", ".join(before)
                reason = f"its turn (scanned and staged ahead): every node of {first} first (domain_order)"
            self._runs[node].on_gate_wait(Admission(False, Block.PARALLEL_LIMIT, reason))
            await turn.wait()

    def _budget_allows(self, working: int) -> bool:
        """The failure budget would let one more node start even if the nodes at work failed;
        else nothing starts ahead (with max_failed_nodes = 0, nothing starts while one works)."""
        return may_start(
            in_flight=working,
            failed=self.progress.failed_nodes,
            max_parallel=None,
            max_failed=self.max_failed,
        ).admitted

    def _waiting_turn(self, name: str) -> bool:
        turn = self._turns.get(name)
        return turn is not None and not turn.is_set()

    def _on_gate_wait(self, node: str, admission: Admission) -> None:
        run = self._runs.get(node)
        if run is not None:
            run.on_gate_wait(admission)

    # --- stopping ------------------------------------------------------------------------------

    def request_stop(self, reason: ErrorId, message: str, *, by: str = "coordinator") -> None:
        if self._stop is None:
            self._stop = (reason, message)
            self.note(StopRequested(error_id=reason, message=message, by=by))

    async def _check_limits(self) -> None:
        record = await self.store.get_run(self.run_id)
        if record is not None and record.stop_requested and self._stop is None:
            by = record.stop_requested_by or "an operator"
            self.request_stop(
                ErrorId.STOPPED_BY_OPERATOR,
                f"stopped by {by}" + (f": {record.stop_reason}" if record.stop_reason else ""),
                by=by,
            )
        started = self.progress.created_at
        if started is None:
            return
        elapsed = self.clock.now() - started
        if self.profile.warn_after is not None and elapsed >= self.profile.warn_after and not self._warned:
            self._warned = True
            if not any("has not completed after" in m for _, m in self.progress.warnings):
                self.note(
                    WarningEvent(
                        message=f"the run has not completed after {self.profile.warn_after} (warn_after)"
                    )
                )
        if self.profile.stop_after is not None and elapsed >= self.profile.stop_after:
            self.request_stop(
                ErrorId.STOP_AFTER_EXCEEDED,
                f"the run did not complete within {self.profile.stop_after} (stop_after)",
            )
        failed = self.progress.failed_nodes
        if failed > self.max_failed:
            self.request_stop(
                ErrorId.MAX_FAILED_NODES_EXCEEDED,
                f"updating failed on {failed} node(s), more than max_failed_nodes = {self.max_failed}",
            )

    # --- the run -------------------------------------------------------------------------------

    async def execute(self) -> RunOutcome:
        self.writer.start()
        try:
            return await self._execute()
        finally:
            await self.writer.close()

    async def _execute(self) -> RunOutcome:
        if self.progress.finished is not None:
            # A coordinator died between journaling the end and saving it: only the saving is left.
            return await self._save_finished()
        closed = self._window_closed()
        if closed is not None and not await self._stop_asked():
            return await self._wait_for_window(closed)
        resumed = any(n.started for n in self.progress.nodes.values())
        await self.journal(
            CoordinatorTook(owner=self.owner, resumed=resumed, by=self.requested_by, node=self.own_node)
        )
        await self.store.set_run_state(self.run_id, RunState.RUNNING, owner=self.owner)
        await self._start_measuring()
        tasks: dict[asyncio.Future[Any], str] = {}
        try:
            window_ended = await self._schedule(tasks)
            if self._handing_over:
                await self._stop_measuring(record=True)
                return await self._hand_over()
        except asyncio.CancelledError:
            # Killed or lost the lock: do nothing more. The journal says where each node is,
            # and the next coordinator resumes from there.
            await self._cancel(tasks)
            await self._stop_measuring(record=False)
            raise
        except Exception as exc:
            await self._cancel(tasks)
            await self._stop_measuring(record=True)
            return await self._pause(exc)
        if window_ended is not None:
            return await self._pause_for_window(window_ended)
        return await self._finish()

    # --- the maintenance window ------------------------------------------------------------------

    def _window_closed(self) -> str | None:
        """Why no node may start or enter maintenance now, or None (no window, or it is open)."""
        if self.window is None:
            return None
        now = self.clock.now()
        if self.window.contains(now):
            return None
        opening = self.window.next_open(now)
        when = (
            f"it opens next at {self._local(opening)}"
            if opening is not None
            else "it does not open again (a one-off window)"
        )
        return f"the maintenance window ({self.window.spec()}) is closed; {when}"

    async def _stop_asked(self) -> bool:
        """A stop asked of a run waiting for its window ends it now, not at the next opening
        (the nodes still to do are canceled; none of them enters maintenance)."""
        if self._stop is not None:
            return True
        record = await self.store.get_run(self.run_id)
        return record is not None and record.stop_requested

    def _local(self, t: datetime) -> str:
        assert self.window is not None
        return f"{t.astimezone(self.window.opens.zone):%Y-%m-%d %H:%M} {self.window.opens.tz}"

    async def _wait_for_window(self, closed: str) -> RunOutcome:
        """Started or resumed outside the window: nothing runs. A run just created is journaled
        as paused (it waits for its window); a run resumed is left exactly as it was."""
        if not self.progress.coordinators:
            await self.journal(RunPaused(error_id=ErrorId.OUTSIDE_WINDOW, message=closed))
            await self.store.set_run_state(
                self.run_id, RunState.PAUSED, error_id=ErrorId.OUTSIDE_WINDOW.value, message=closed
            )
        return RunOutcome(self.run_id, RunState.PAUSED, None, ErrorId.OUTSIDE_WINDOW.value, closed, None)

    async def _pause_for_window(self, closed: str) -> RunOutcome:
        """The window closed with nodes still to do, and nothing is in maintenance now."""
        waiting = [n for n in self.progress.order if n in self._outside_window or self._not_started(n)]
        message = f"{closed}; the run resumes there with {', '.join(waiting)}"
        await self._stop_measuring(record=True)
        await self.journal(RunPaused(error_id=ErrorId.OUTSIDE_WINDOW, message=message))
        await self.store.set_run_state(
            self.run_id, RunState.PAUSED, error_id=ErrorId.OUTSIDE_WINDOW.value, message=message
        )
        return RunOutcome(self.run_id, RunState.PAUSED, None, ErrorId.OUTSIDE_WINDOW.value, message, None)

    def _not_started(self, name: str) -> bool:
        node = self.progress.nodes[name]
        return node.started is None and node.result is None

    async def _pause(self, exc: Exception) -> RunOutcome:
        """An unexpected error: the run pauses with a reason from a closed list; `cau run` resumes.
        A node refusing cau while the cluster is observed (discovery reaches every node; a step of
        the node's own fails that node instead) is no bug: the pause names it, with its remedy."""
        failed_write = self.writer.failure
        refused = refusal(exc)
        # A named pause (a health gate's timeout) says what to do in its own message.
        named: ErrorId | None = getattr(exc, "pause_reason", None)
        reason = (
            ErrorId.STORE_UNAVAILABLE
            if failed_write is not None
            else refused or named or ErrorId.INTERNAL_ERROR
        )
        message = str(exc) if named is not None else f"{type(exc).__name__}: {exc}"
        hint = getattr(exc, "hint", None)
        if refused is not None and hint:
            message += f" ({hint})"
        if failed_write is None:
            trace = "" if refused is not None or named is not None else traceback.format_exc(limit=8)[-4000:]
            await self.journal(RunPaused(error_id=reason, message=message, traceback=trace))
        await self.store.set_run_state(self.run_id, RunState.PAUSED, error_id=reason.value, message=message)
        return RunOutcome(self.run_id, RunState.PAUSED, None, reason.value, message, None)

    # --- measured availability (optional) -------------------------------------------------------

    def _record_availability(self, event: ProbeEvent) -> None:
        if self._measuring:
            self.note(event)

    async def _start_measuring(self) -> None:
        # the health gates' watch and the run's alert silences live as long as the measuring
        await self.safety.start()
        if self.availability is None:
            return
        self._measuring = True
        try:
            await self.availability.start(self._record_availability)
        except Exception as exc:  # measuring must never break the run
            self._measuring = False
            self.note(WarningEvent(message=f"availability probes did not start: {exc}"))

    async def _stop_measuring(self, *, record: bool) -> None:
        """Stop the probes; with `record`, their final counts reach the journal first."""
        await self.safety.stop(reconcile=record)
        if self.availability is None or not self._measuring:
            return
        self._measuring = record
        try:
            await self.availability.stop()
        except asyncio.CancelledError:
            if record:
                raise
        except Exception as exc:
            if record:
                self.note(WarningEvent(message=f"availability probes did not stop cleanly: {exc}"))
        finally:
            self._measuring = False

    async def _cancel(self, tasks: dict[asyncio.Future[Any], str]) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _schedule(self, tasks: dict[asyncio.Future[Any], str]) -> str | None:
        """Run the nodes; the reason the run must wait for its next window, if it must."""
        self._at_work = tasks
        order = self.progress.order
        max_parallel = (
            None if self.profile.max_parallel_nodes == "auto" else int(self.profile.max_parallel_nodes)
        )
        # With a fixed cap, the next node may start ahead of its turn: its read-only work (the
        # scan, staging the downloads) runs while the nodes in hand restart or fail back, and it
        # waits for its turn (NodeRun._take_turn) before anything that changes the node. Its turn
        # is given here, in order, after the failure budget was checked, as a start would be.
        # Not with a pre-update script, which runs before the scan and may change the node.
        ahead = max_parallel is not None and not self.profile.pre_update_script
        # Resume first what was in progress; a node that held maintenance still holds it. One
        # that had only read (scan, staging) when the last coordinator stopped waits for its turn.
        for name in order:
            node = self.progress.nodes[name]
            if node.in_flight:
                if node.maintenance_intended:
                    self.gate.hold(name)
                self._start(name, tasks, ahead=ahead and node.only_read)
        # Not started yet; a node already finished without starting (canceled) stays finished.
        pending = [n for n in order if self._not_started(n)]
        position = {name: i for i, name in enumerate(order)}
        closed: str | None = None
        while True:
            await self._check_limits()
            closed = self._window_closed()
            while self._stop is None and closed is None:
                working = [n for n in tasks.values() if not self._waiting_turn(n)]
                # The nodes in hand waiting for their turn, in node order (from those in hand,
                # not the whole order: this loop runs at every node's change).
                waiting = sorted(
                    (n for n in tasks.values() if self._waiting_turn(n)),
                    key=lambda n: position.get(n, len(position)),
                )
                if not waiting and pending and pending[0] == self.own_node:
                    # Our own node is next: once nothing is in flight, the run is handed over
                    # (nothing started after it either, so the node order holds).
                    self._handing_over = not tasks
                    break
                admission = may_start(
                    in_flight=len(working),
                    failed=self.progress.failed_nodes,
                    max_parallel=max_parallel,
                    max_failed=self.max_failed,
                )
                if admission.admitted and waiting and not self._behind_domain(waiting[0], tasks):
                    self._turns[waiting[0]].set()
                elif (
                    admission.admitted
                    and not waiting
                    and pending
                    and not self._behind_domain(pending[0], tasks)
                ):
                    self._start(pending.pop(0), tasks)
                elif (
                    ahead
                    and pending
                    and not waiting
                    and pending[0] != self.own_node
                    and (admission.block is Block.PARALLEL_LIMIT or admission.admitted)
                    and self._budget_allows(len(working))
                ):
                    self._start(pending.pop(0), tasks, ahead=True)
                else:
                    break
            if self._stop is not None or closed is not None:
                # Stopping, or the window closed: a node waiting for its turn goes on to see it
                # (it ends before changing anything, or the gate refuses it outside the window).
                for turn in self._turns.values():
                    turn.set()
            if not tasks:
                break
            tick = asyncio.ensure_future(self.clock.sleep(self._poll))
            try:
                done, _ = await asyncio.wait({*tasks, tick}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                tick.cancel()
            for task in done:
                if task is tick:
                    continue
                name = tasks.pop(task)
                # a bug in a node's pipeline surfaces here and pauses the run
                if task.result() is None:
                    self._outside_window.add(name)  # the window closed before its maintenance
        if self._handing_over:
            return None  # the nodes not started are the next coordinator's
        if self._stop is None and (pending or self._outside_window):
            # Only a closed window ends the loop with work left and no stop: pause, do not cancel.
            closed = closed or self._window_closed()
            if closed is not None:
                return closed
        # Nodes never started (or stopped by a window's end): canceled before maintenance.
        reason = self._stop
        for name in [*pending, *sorted(self._outside_window)]:
            await self.journal(
                NodeFinished(
                    status=Status.CANCELED,
                    error_id=reason[0] if reason else None,
                    message="not started: " + (reason[1] if reason else "the run ended"),
                ),
                node=name,
            )
        return None

    async def _hand_over(self) -> RunOutcome:
        """Move the clustered coordinator role off our own node (journaled before and after) and
        stop acting: the coordinator the cluster starts on the new owner resumes the run."""
        own = self.own_node
        assert own is not None
        host = self.role_host
        if host is None:
            raise MaintenanceError(
                f"the {type(self.provider).__name__} provider cannot move a coordinator role"
            )
        await self.journal(HandOver(stage="moving", from_node=own))
        to = await host.move_coordinator_role(away_from=own)
        await self.journal(HandOver(stage="moved", from_node=own, to_node=to))
        where = f"the coordinator on {to}" if to else "the next coordinator, on another node"
        message = f"handed over to {where} ({own} is next to be updated)"
        return RunOutcome(
            self.run_id, RunState.RUNNING, None, None, message, None, handed_over=True, handed_over_to=to
        )

    def _domain(self, name: str) -> str | None:
        """The node's failure domain, as the run's opening record has it."""
        created = self.progress.created
        at_start = created.nodes.get(name) if created is not None else None
        return at_start.domain if at_start is not None else None

    def _domains_before(self, name: str, tasks: Mapping[asyncio.Future[Any], str]) -> list[str]:
        """A domain_order is CAU's site-aware updating: a node starts (or, started ahead, gets
        its turn) only once no node of a domain before its own is at work. The domains before
        the node's that still have a node at work (none: it may go)."""
        order = self.profile.domain_order
        if not order:
            return []
        rank = domain_rank(self._domain(name), order)
        found = {
            self._domain(other) or "(no domain)"
            for other in tasks.values()
            if other != name and domain_rank(self._domain(other), order) < rank
        }
        return sorted(found)

    def _behind_domain(self, name: str, tasks: Mapping[asyncio.Future[Any], str]) -> bool:
        return bool(self._domains_before(name, tasks))

    def _start(self, name: str, tasks: dict[asyncio.Future[Any], str], *, ahead: bool = False) -> None:
        if ahead:
            self._turns[name] = asyncio.Event()
        run = NodeRun(self, name)
        self._runs[name] = run
        tasks[asyncio.ensure_future(run.run())] = name

    async def _finish(self) -> RunOutcome:
        statuses = [n.status for n in self.progress.nodes.values() if n.status is not None]
        reason = self._stop
        status = run_status(statuses, reason[0] if reason else None)
        error_id = reason[0].value if reason else None
        message = reason[1] if reason else None
        if error_id is None and status is not Status.SUCCEEDED:
            failed = [n.name for n in self.progress.nodes.values() if n.status is not Status.SUCCEEDED]
            message = f"not every node succeeded: {', '.join(failed)}"
        left = [n.name for n in self.progress.nodes.values() if n.left_in_maintenance]
        if left:
            message = (message + "; " if message else "") + f"left in maintenance: {', '.join(left)}"
        await self._stop_measuring(record=True)
        await self.journal(
            RunFinished(
                status=status,
                error_id=reason[0] if reason else None,
                message=message,
                left_in_maintenance=left,
            )
        )
        return await self._save_finished()

    async def _save_finished(self) -> RunOutcome:
        """The report, then the run marked finished: a finished run always has its report (a
        coordinator killed in between leaves the run to a next one, which only saves)."""
        finished = self.progress.finished
        assert finished is not None
        await self.writer.flush()
        outages = []
        if isinstance(self.provider, ReportsAvailability) and self.progress.created_at is not None:
            outages = await self.provider.role_outages(self.progress.created_at, self.clock.now())
        now = self.progress.finished_at or self.clock.now()
        record = await self.store.get_run(self.run_id)
        assert record is not None
        error_id = finished.error_id.value if finished.error_id else None
        record = replace(
            record,
            state=RunState.FINISHED,
            status=finished.status,
            finished=now,
            error_id=error_id,
            message=finished.message,
        )
        report = build_report(record, self.progress, now=now, outages=outages)
        await self.store.save_report(self.run_id, report)
        await self.store.set_run_state(
            self.run_id,
            RunState.FINISHED,
            status=finished.status,
            finished=now,
            error_id=error_id,
            message=finished.message,
        )
        return RunOutcome(self.run_id, RunState.FINISHED, finished.status, error_id, finished.message, report)
