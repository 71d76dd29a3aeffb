"""A run's forecast before it starts (the service's glue around cau.domain.estimate): the
cluster's past runs from the store, the batches from the snapshot, the predicted duration, and
whether it fits its stop_after and window."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from cau.domain.batches import form_batches
from cau.domain.cluster import ClusterSnapshot
from cau.domain.estimate import HISTORY_RUNS, CycleSample, DurationModel, node_class, overruns, plan_run
from cau.domain.planning import domain_ranks, run_order
from cau.domain.profile import DrainPolicy, RunProfile
from cau.domain.results import RunState
from cau.domain.runs import ReportQuery
from cau.journal.progress import replay
from cau.journal.timings import cycle_samples
from cau.ports import Store
from cau.views import RunForecast


async def history(store: Store, cluster: str, runs: int = HISTORY_RUNS) -> list[CycleSample]:
    """The node cycles of the cluster's last finished runs, newest run first."""
    records = await store.list_runs(ReportQuery(cluster=cluster, states=(RunState.FINISHED,), last=runs))
    samples: list[CycleSample] = []
    for record in reversed(records):
        samples += cycle_samples(replay(await store.events(record.run_id)))
    return samples


def forecast(
    cluster: str,
    snapshot: ClusterSnapshot,
    profile: RunProfile,
    samples: Sequence[CycleSample],
    plugins: Sequence[str],
    now: datetime,
    *,
    store_members: Collection[str] = (),
    one_gate: bool = True,
    order: Sequence[str] | None = None,
) -> RunForecast:
    """The forecast of a run of `profile` on the cluster as `snapshot` shows it, starting `now`.
    `order`: the order the run will take (`run_order`), when the caller has it already."""
    order = list(order) if order is not None else run_order(snapshot, profile)
    if profile.update_selection is not None:  # a remediation: the nodes not named are bypassed
        order = [n for n in order if n in profile.update_selection]
    max_parallel = None if profile.max_parallel_nodes == "auto" else int(profile.max_parallel_nodes)
    max_failed = profile.effective_max_failed(len(snapshot.nodes))
    ranks = domain_ranks(snapshot, profile)
    batches = form_batches(
        snapshot,
        order,
        move=profile.move,
        max_parallel=max_parallel,
        max_failed=max_failed,
        store_members=store_members,
        limits=profile.disruption_limits,
        domain_ranks=ranks,
    )
    model = DurationModel(samples, {n.name: node_class(n) for n in snapshot.nodes})
    plan = plan_run(
        model,
        order,
        plugins,
        slots=batches.typical,
        in_progress=batches.in_progress_limit,
        drains=profile.drain is not DrainPolicy.NEVER,
        one_gate=one_gate,
        domain_ranks=ranks,
        # As the coordinator starts the next node ahead of its turn (cau.engine.coordinator):
        # a fixed max_parallel_nodes, no pre-update script, and a failure budget that would
        # survive the failure of every node in progress.
        ahead=max_parallel is not None
        and not profile.pre_update_script
        and batches.in_progress_limit <= max_failed,
    )
    return RunForecast(
        cluster=cluster,
        predicted_seconds=plan.predicted_seconds,
        plus_minus_seconds=plan.predicted_seconds * plan.spread,
        basis=plan.basis,
        history_runs=plan.history_runs,
        batches=batches.batches,
        in_progress_limit=batches.in_progress_limit,
        plan=plan,
        overruns=overruns(
            plan.predicted_seconds, now, stop_after=profile.stop_after, window=profile.maintenance_window
        ),
        on_overrun=profile.on_overrun,
    )
