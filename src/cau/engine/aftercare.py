"""After a run: take a node it left in maintenance out again (`cau node resume`), with the very
code the run uses to leave maintenance and fail roles back, journaled in that run's journal."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cau.domain.profile import RunProfile
from cau.domain.results import ErrorId
from cau.engine.gate import MaintenanceGate
from cau.engine.node import NodeRun, PluginBinding, prior_from_record
from cau.engine.writer import JournalWriter
from cau.journal.events import EventPayload, JournalEvent, WarningEvent
from cau.journal.progress import NodeProgress, RunProgress, replay
from cau.ports import Clock, ClusterProvider, Store


@dataclass
class _AfterRun:
    """The RunContext of a finished run, for one node's maintenance exit and failback."""

    run_id: str
    cluster: str
    provider: ClusterProvider
    profile: RunProfile
    clock: Clock
    store: Store
    data_dir: Path
    progress: RunProgress
    gate: MaintenanceGate = field(init=False)
    writer: JournalWriter = field(init=False)
    plugins: list[PluginBinding] = field(default_factory=list)
    secrets: Mapping[str, str] = field(default_factory=dict)  # no script or plug-in runs here

    def __post_init__(self) -> None:
        self.gate = MaintenanceGate(self.provider, self.profile.move, lambda _n, _a: None)
        self.writer = JournalWriter(self.store, self.run_id, self.clock, self.progress)

    async def journal(self, payload: EventPayload, *, node: str | None = None) -> JournalEvent:
        return await self.writer.record(payload, node=node)

    def note(self, payload: EventPayload, *, node: str | None = None) -> None:
        self.writer.note(payload, node=node)

    @property
    def stop_reason(self) -> ErrorId | None:
        return None

    def node_progress(self, node: str) -> NodeProgress:
        return self.progress.node(node)

    async def take_turn(self, node: str) -> None:
        return None  # only exit and failback run here: nothing waits for a turn


async def take_out_of_maintenance(
    *,
    store: Store,
    run_id: str,
    cluster: str,
    provider: ClusterProvider,
    profile: RunProfile,
    clock: Clock,
    data_dir: Path,
    node: str,
    by: str,
) -> list[str] | None:
    """Leave the maintenance run `run_id` left `node` in, using the prior state it recorded, and
    fail its roles back per the run's failback mode. The roles moved back, or None when the node
    could not leave maintenance (it stays so, journaled)."""
    progress = replay(await store.events(run_id))
    ctx = _AfterRun(run_id, cluster, provider, profile, clock, store, data_dir, progress)
    entry = progress.node(node)
    run = NodeRun(ctx, node)
    prior = prior_from_record(node, entry.prior)
    try:
        if not await run.exit(prior, by=by):
            return None
        moved = await run.failback(prior)
        if entry.result is not None:
            await ctx.journal(entry.result.model_copy(update={"left_in_maintenance": False}), node=node)
        await ctx.journal(
            WarningEvent(
                message=f"{node}: taken out of maintenance by {by} (`cau node resume`); "
                f"roles failed back: {', '.join(moved) or 'none'}"
            ),
            node=node,
        )
        return moved
    finally:
        await ctx.writer.close()
