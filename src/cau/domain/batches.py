"""The batches a run would form: which nodes could be in maintenance together, in cau's order.

A dry run's picture of the run (pure): the nodes are taken in order and each joins the current
batch while the batch stays within the run's limits (`max_parallel_nodes`, the failure budget:
max_failed_nodes + 1 nodes in progress at most) and the maintenance gate would admit it with the
batch's other nodes in maintenance (quorum, capacity and the run store's members, as
`cau.domain.planning.admit_to_maintenance` decides on the snapshot); otherwise it starts the next
batch. The coordinator itself rolls on (a node starts as soon as another finishes), so real runs
overlap batches; the batches say how many nodes the cluster can spare at once, and which.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from cau.domain.cluster import ClusterSnapshot
from cau.domain.disruption import DisruptionLimits
from cau.domain.planning import admit_to_maintenance
from cau.domain.profile import MoveMethod


class Batch(BaseModel):
    """Nodes that could be in maintenance at the same time."""

    model_config = ConfigDict(frozen=True)

    nodes: list[str]
    # Why the next node did not join this batch (the last batch: empty).
    limited_by: str = ""
    # A node no batch admits, even alone (e.g. taking it down breaks quorum): the gate refuses it.
    refused: str = ""


class BatchForecast(BaseModel):
    model_config = ConfigDict(frozen=True)

    batches: list[Batch] = Field(default_factory=list)
    in_progress_limit: int = Field(description="nodes in progress at once: max_parallel_nodes and the budget")

    @property
    def largest(self) -> int:
        return max((len(b.nodes) for b in self.batches), default=1)

    @property
    def typical(self) -> int:
        """How many nodes are in maintenance together in a full batch (the median batch size)."""
        sizes = sorted(len(b.nodes) for b in self.batches)
        return max(1, sizes[len(sizes) // 2]) if sizes else 1


def in_progress_limit(max_parallel: int | None, max_failed: int) -> int:
    """`cau.domain.planning.may_start` with no failures: how many nodes may be in progress."""
    budget = max_failed + 1
    return budget if max_parallel is None else max(1, min(max_parallel, budget))


def form_batches(
    snapshot: ClusterSnapshot,
    order: Sequence[str],
    *,
    move: MoveMethod,
    max_parallel: int | None,
    max_failed: int,
    store_members: Collection[str] = (),
    limits: DisruptionLimits | None = None,
    domain_ranks: Mapping[str, int] | None = None,
) -> BatchForecast:
    """Greedy batches of `order` (see the module's text). `max_parallel` None: "auto".
    `domain_ranks` (a domain_order's, cau.domain.planning.domain_ranks): a node of a later domain
    starts a new batch, since it starts only once every node before its domain has finished."""
    limit = in_progress_limit(max_parallel, max_failed)
    ranks = domain_ranks or {}
    batches: list[Batch] = []
    current: list[str] = []
    for name in order:
        if current:
            if ranks.get(name, 0) > max(ranks.get(n, 0) for n in current):
                batches.append(
                    Batch(nodes=current, limited_by="domain-order: the domains before it finish first")
                )
                current = []
            elif len(current) >= limit:
                batches.append(
                    Batch(nodes=current, limited_by=_limit_reason(max_parallel, max_failed, limit))
                )
                current = []
            else:
                admission = admit_to_maintenance(snapshot, name, current, move, store_members, limits)
                if admission.admitted:
                    current.append(name)
                    continue
                why = f"{admission.block.value if admission.block else 'gate'}: {admission.reason}"
                batches.append(Batch(nodes=current, limited_by=why))
                current = []
        alone = admit_to_maintenance(snapshot, name, (), move, store_members, limits)
        if not alone.admitted:
            batches.append(Batch(nodes=[name], refused=alone.reason))
            continue
        current = [name]
    if current:
        batches.append(Batch(nodes=current))
    return BatchForecast(batches=batches, in_progress_limit=limit)


def _limit_reason(max_parallel: int | None, max_failed: int, limit: int) -> str:
    if max_parallel is not None and max_parallel <= max_failed + 1:
        return f"parallel-limit: max_parallel_nodes = {max_parallel}"
    return f"failure-budget: max_failed_nodes = {max_failed} lets {limit} node(s) be in progress at once"
