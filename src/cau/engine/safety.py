"""Around the maintenance gate: health gates and Alertmanager silences (cau.engine.gate.GateHooks).

    before a drain   wait until the node's health gates are green and stable (or pause the run)
    admitted         the node's silence is created (intent journaled first)
    after a return   wait for the node's health gates again, then its silence is expired
    while running    the gates are watched; a red one holds the next admission
    start / stop     the run's silences are reconciled with what Alertmanager shows: a node in
                     maintenance keeps (or gets) its silence, any other loses it

The coordinator makes one RunSafety per run (and per resume); with neither gates nor an
Alertmanager it does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from cau.alerts import Alertmanager, SilenceKeeper
from cau.domain.gates import AlertmanagerSpec, GateSpec
from cau.domain.profile import RunProfile
from cau.domain.results import ErrorId
from cau.gates.check import GateChecks
from cau.gates.monitor import GateMonitor, Phase, WaitStopped
from cau.journal.events import EventPayload, JournalEvent
from cau.journal.progress import RunProgress
from cau.ports import Clock, ClusterProvider
from cau.probes.spec import ProbeSpec


@dataclass(frozen=True)
class SafetyConfig:
    """What a run's safety needs from the configuration: the cluster's gates and the profile's,
    and the cluster's Alertmanager. `http_transport`: tests give an httpx MockTransport."""

    gates: Sequence[GateSpec] = ()
    alertmanager: AlertmanagerSpec | None = None
    http_transport: httpx.AsyncBaseTransport | None = field(default=None, compare=False)
    probes: Sequence[ProbeSpec] = ()  # the cluster's probes, for probe gates


class SafetyContext(Protocol):
    """What RunSafety needs of the coordinator."""

    run_id: str
    cluster: str
    provider: ClusterProvider
    profile: RunProfile
    clock: Clock
    secrets: Mapping[str, str]
    progress: RunProgress

    async def journal(self, payload: EventPayload, *, node: str | None = None) -> JournalEvent: ...

    def note(self, payload: EventPayload, *, node: str | None = None) -> None: ...

    @property
    def stop_reason(self) -> ErrorId | None: ...


class RunSafety:
    def __init__(self, ctx: SafetyContext, config: SafetyConfig | None) -> None:
        config = config or SafetyConfig()
        self.ctx = ctx
        self.monitor: GateMonitor | None = None
        self.silences: SilenceKeeper | None = None
        self._watch: asyncio.Task[None] | None = None
        self._renewal: asyncio.Task[None] | None = None
        if config.gates:
            checks = GateChecks(
                provider=ctx.provider,
                run_id=ctx.run_id,
                secrets=ctx.secrets,
                http_transport=config.http_transport,
                probes=config.probes,
            )
            self.monitor = GateMonitor(
                config.gates,
                checks.evaluate,
                ctx.clock,
                lambda payload, node: ctx.note(payload, node=node),
                stopping=lambda: ctx.stop_reason is not None,
            )
        if config.alertmanager is not None:

            async def journal(payload: EventPayload, node: str | None) -> JournalEvent:
                return await ctx.journal(payload, node=node)

            self.silences = SilenceKeeper(
                Alertmanager(config.alertmanager, ctx.secrets, config.http_transport),
                run_id=ctx.run_id,
                cluster=ctx.cluster,
                clock=ctx.clock,
                lasts=config.alertmanager.ends_after(ctx.profile.reboot_timeout),
                journal=journal,
            )

    def _in_maintenance(self) -> set[str]:
        """Nodes cau holds in maintenance, by the journal (left there by a failed return too)."""
        return {n.name for n in self.ctx.progress.nodes.values() if n.maintenance_intended}

    # --- the run's life --------------------------------------------------------------------------

    async def start(self) -> None:
        """A coordinator takes the run: silences as the journal says nodes are, the watch on."""
        if self.silences is not None:
            await self.silences.reconcile(self._in_maintenance(), create=True)
            self._renewal = asyncio.get_running_loop().create_task(self._renew(), name="cau-silences")
        if self.monitor is not None:
            # nodes that returned before a resume are watched again
            for _, node, _event in self.ctx.progress.gate_changes:
                done = node is not None and self.ctx.progress.node(node).result is not None
                if done and node is not None:
                    self.monitor.watch_node(node)
            self._watch = asyncio.get_running_loop().create_task(self.monitor.watch(), name="cau-gates")

    async def stop(self, *, reconcile: bool) -> None:
        """The coordinator stops acting (the run ends, pauses or is handed over; with `reconcile`
        False it was killed: nothing more is done)."""
        for task in (self._watch, self._renewal):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._watch = self._renewal = None
        if reconcile and self.silences is not None:
            await self.silences.reconcile(self._in_maintenance(), create=False)

    async def _renew(self) -> None:
        """Keep the silences of nodes in maintenance from running out (until cancelled)."""
        assert self.silences is not None
        every = max(self.silences.lasts.total_seconds() / 4, 60.0)
        while True:
            await self.ctx.clock.sleep(every)
            await self.silences.renew(self._in_maintenance())

    # --- GateHooks -------------------------------------------------------------------------------

    async def _wait(self, node: str, phase: Phase) -> None:
        if self.monitor is None:
            return
        try:
            await self.monitor.wait(node, phase)
        except WaitStopped:
            if phase == "admission":
                from cau.engine.node import NodeEnd  # the node's pipeline ends it: not drained

                reason = self.ctx.stop_reason or ErrorId.STOPPED_BY_OPERATOR
                raise NodeEnd(reason, "the run is stopping") from None

    async def before_admission(self, node: str) -> None:
        await self._wait(node, "admission")

    def red_gates(self, node: str) -> list[str]:
        return self.monitor.red(node) if self.monitor is not None else []

    async def admitted(self, node: str) -> None:
        if self.silences is not None:
            await self.silences.create(node)

    async def returned(self, node: str) -> None:
        if self.monitor is not None:
            self.monitor.watch_node(node)  # its gates hold other admissions from now on
        await self._wait(node, "return")
        if self.silences is not None:
            await self.silences.expire(node)
