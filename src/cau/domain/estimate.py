"""How long a run will take: predicted from past runs' step durations, before and during a run (pure).

A node's cycle has five phases, measured in past runs' journals (intent to outcome of their steps,
as the metrics' step durations; cau.journal.timings reads them):

    prepare  pre-update script, scan, staging (downloads)          in progress, not in maintenance
    enter    entering maintenance (the drain)                       through the maintenance gate
    work     installs (per plug-in), restart, rescans, and between  holding a maintenance slot
    leave    leaving maintenance and failback                       through the maintenance gate
    after    back in service to done (health gates, post script)

The time a node waits at the gate for quorum or capacity is not part of its cycle: the schedule
below decides it. Each part of a cycle (the phases, and the work's installs per plug-in) is the
median of the last runs of the same node; without them, of its node class (nodes of the same
size: `node_class`); without those, of the cluster's; without any history, a rough default
(`DEFAULTS`), and the prediction says so.

The run's duration is then a schedule of those cycles as the coordinator rolls through the
nodes: in cau's order, at most `in_progress` nodes in progress at once (max_parallel_nodes and
the failure budget), at most `slots` in maintenance at once (the batches the cluster can spare,
cau.domain.batches), drains and failbacks one at a time through the gate. With one node at a time
it is the sum of the cycles; with batches, about the sum over batches of each batch's slowest
cycle, overlapped where a batch's nodes finish at different times. The live ETA is the same
schedule from where each node is now, with the cycles scaled by the run's own pace so far (its
finished nodes' cycles against their predicted ones).
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cau.domain.cluster import Node
from cau.domain.durations import format_duration
from cau.domain.window import MaintenanceWindow

Phase = Literal["prepare", "enter", "work", "leave", "after"]
PHASES: tuple[Phase, ...] = ("prepare", "enter", "work", "leave", "after")
INSTALL = "install:"  # a component's key: install:<plug-in>

# Rough defaults (seconds) when the cluster has no history: a scan and download, a drain, each
# plug-in's installs, a restart and rescan, a failback, and the checks after.
DEFAULTS: dict[str, float] = {
    "prepare": 60.0,
    "enter": 60.0,
    "install": 180.0,
    "work": 180.0,
    "leave": 60.0,
    "after": 10.0,
}
HISTORY_RUNS = 5  # the newest runs a node's durations are the median of


class Basis(StrEnum):
    """What a prediction rests on, from the best to the roughest."""

    NODE = "node"  # the same node's past runs
    CLASS = "class"  # nodes of its class
    CLUSTER = "cluster"  # the cluster's nodes
    DEFAULT = "default"  # no history: rough defaults

    @property
    def rank(self) -> int:
        return list(Basis).index(self)

    @property
    def spread(self) -> float:
        """The ± of a prediction on this basis, as a fraction of it (a stated rule of thumb)."""
        return {Basis.NODE: 0.15, Basis.CLASS: 0.25, Basis.CLUSTER: 0.3, Basis.DEFAULT: 0.5}[self]


def node_class(node: Node) -> str:
    """A node's class: its size (cpu and memory). Nodes of one size are usually one kind of
    machine, so they drain, install and restart alike."""
    return f"{node.capacity.cpu:g}cpu/{node.capacity.memory_gb:g}GB"


class CycleSample(BaseModel):
    """One node's cycle in one past run: its components' seconds (only those it went through)."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    node: str
    components: dict[str, float] = Field(description="prepare, enter, install:<plug-in>, work, leave, after")


class NodePlan(BaseModel):
    """A node's predicted cycle, by phase (seconds)."""

    model_config = ConfigDict(frozen=True)

    node: str
    prepare: float
    enter: float
    work: float
    leave: float
    after: float
    drains: bool = True  # goes through maintenance (drain != never)
    basis: Basis = Basis.DEFAULT  # the roughest basis of its parts
    # its failure domain's place in a domain_order (cau.domain.planning.domain_rank): it starts
    # only once no node of a lower rank is at work (0 for every node without a domain_order)
    domain_rank: int = 0

    @property
    def cycle(self) -> float:
        return self.prepare + self.enter + self.work + self.leave + self.after

    def seconds(self, phase: Phase) -> float:
        value: float = getattr(self, phase)
        return value


class RunPlan(BaseModel):
    """A run's prediction: every node's cycle and the schedule's limits. Journaled when the run
    starts (cau.journal.events.ForecastMade), so the live ETA needs nothing but the journal."""

    model_config = ConfigDict(frozen=True)

    nodes: list[NodePlan] = Field(description="in cau's order")
    slots: int = Field(1, description="nodes in maintenance at once")
    in_progress: int = Field(1, description="nodes in progress at once")
    predicted_seconds: float = 0.0
    basis: Basis = Basis.DEFAULT
    history_runs: int = Field(0, description="past runs the prediction learnt from")
    one_gate: bool = Field(
        True, description="drains and failbacks pass the gate one at a time (False: they overlap)"
    )
    ahead: bool = Field(
        False,
        description="the next node scans and stages ahead of its turn, while the nodes in "
        "progress work (a fixed max_parallel_nodes; cau.engine.coordinator)",
    )

    @property
    def spread(self) -> float:
        return self.basis.spread

    @property
    def rough(self) -> bool:
        return self.basis is Basis.DEFAULT

    def node(self, name: str) -> NodePlan | None:
        return next((n for n in self.nodes if n.node == name), None)


# --- the duration model ----------------------------------------------------------------------


@dataclass
class DurationModel:
    """Past cycles of one cluster's nodes (newest run first), and each node's class."""

    samples: Sequence[CycleSample]
    classes: Mapping[str, str] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return len({s.run_id for s in self.samples})

    def _values(self, key: str, nodes: Iterable[str] | None) -> list[float]:
        wanted = None if nodes is None else set(nodes)
        per_node: dict[str, list[float]] = {}
        for s in self.samples:
            if (wanted is None or s.node in wanted) and key in s.components:
                per_node.setdefault(s.node, []).append(s.components[key])
        # each node's median of its newest runs, so one node's many runs do not outweigh the others
        return [statistics.median(v[:HISTORY_RUNS]) for v in per_node.values()]

    def component(self, node: str, key: str) -> tuple[float, Basis]:
        own = self._values(key, [node])
        if own:
            return own[0], Basis.NODE
        cls = self.classes.get(node)
        if cls is not None:
            same = self._values(key, [n for n, c in self.classes.items() if c == cls and n != node])
            if same:
                return statistics.median(same), Basis.CLASS
        everyone = self._values(key, None)
        if everyone:
            return statistics.median(everyone), Basis.CLUSTER
        default = DEFAULTS["install" if key.startswith(INSTALL) else key]
        return default, Basis.DEFAULT

    def predict(self, node: str, plugins: Sequence[str], *, drains: bool = True) -> NodePlan:
        parts: dict[str, float] = {}
        bases: list[Basis] = []
        keys = ["prepare", "work", "after", *(f"{INSTALL}{p}" for p in plugins)]
        if drains:
            keys += ["enter", "leave"]
        for key in keys:
            parts[key], basis = self.component(node, key)
            bases.append(basis)
        installs = sum(v for k, v in parts.items() if k.startswith(INSTALL))
        return NodePlan(
            node=node,
            prepare=parts["prepare"],
            enter=parts.get("enter", 0.0),
            work=parts["work"] + installs,
            leave=parts.get("leave", 0.0),
            after=parts["after"],
            drains=drains,
            basis=max(bases, key=lambda b: b.rank),
        )


def plan_run(
    model: DurationModel,
    order: Sequence[str],
    plugins: Sequence[str],
    *,
    slots: int,
    in_progress: int,
    drains: bool = True,
    one_gate: bool = True,
    domain_ranks: Mapping[str, int] | None = None,
    ahead: bool = False,
) -> RunPlan:
    ranks = domain_ranks or {}
    nodes = [
        model.predict(n, plugins, drains=drains).model_copy(update={"domain_rank": ranks.get(n, 0)})
        for n in order
    ]
    jobs = [_Job(n.node, _phases(n), rank=n.domain_rank) for n in nodes]
    total = schedule(
        jobs, pending_from=0, slots=slots, in_progress=in_progress, one_gate=one_gate, ahead=ahead
    )
    basis = max((n.basis for n in nodes), key=lambda b: b.rank, default=Basis.DEFAULT)
    return RunPlan(
        nodes=nodes,
        slots=max(1, slots),
        in_progress=max(1, in_progress),
        predicted_seconds=total,
        basis=basis,
        history_runs=model.runs,
        one_gate=one_gate,
        ahead=ahead,
    )


# --- the schedule ----------------------------------------------------------------------------

_GATED: frozenset[str] = frozenset({"enter", "leave"})


@dataclass
class _Job:
    name: str
    phases: deque[list[float | str]]  # [phase, seconds left], the first is the current one
    holds: bool = False  # holds a maintenance slot
    running: bool = False  # its current phase is under way (a gated one: it has the gate)
    rank: int = 0  # its domain_rank: it starts once no job of a lower rank is active
    # It has its turn: it counts as in progress. A job started ahead (scan-ahead) prepares
    # without one, and waits for one before anything past its preparation.
    turn: bool = True


def _phases(plan: NodePlan, start: Phase = "prepare", elapsed: float = 0.0) -> deque[list[float | str]]:
    out: deque[list[float | str]] = deque()
    for phase in PHASES[PHASES.index(start) :]:
        if phase in _GATED and not plan.drains:
            continue
        seconds = plan.seconds(phase)
        if phase == start:
            seconds = max(seconds - elapsed, 0.0)
        out.append([phase, seconds])
    return out


def schedule(
    jobs: list[_Job],
    *,
    pending_from: int,
    slots: int,
    in_progress: int,
    one_gate: bool = True,
    ahead: bool = False,
) -> float:
    """Seconds until every job is done: jobs[:pending_from] are in progress now (as they are),
    the others start in order while fewer than `in_progress` are and none of a lower domain
    rank is active (a domain_order's barrier); at most `slots` hold maintenance (one alone is
    always let in); entering and leaving take the gate one at a time (`one_gate`), or overlap
    (planned drains, cau.engine.gate). With `ahead`, one more job starts when none of those in
    progress may: it prepares, then waits for its turn, which it gets before any job after it."""
    slots, in_progress = max(1, slots), max(1, in_progress)
    active = jobs[:pending_from]
    pending = deque(jobs[pending_from:])
    gate: _Job | None = next((j for j in active if j.running and j.phases and j.phases[0][0] in _GATED), None)
    holders = sum(1 for j in active if j.holds)
    for job in active:
        if job.phases and job.phases[0][0] not in _GATED:
            job.running = True
    t = 0.0
    while True:
        active = [j for j in active if j.phases]
        working = sum(1 for j in active if j.turn)
        # A job started ahead gets the next turn, prepared or not (the coordinator gives it first).
        for job in active:
            if not job.turn and working < in_progress and all(j.rank >= job.rank for j in active if j.turn):
                job.turn, working = True, working + 1
                job.running = job.phases[0][0] not in _GATED
        while (
            pending
            and working < in_progress
            and all(j.turn for j in active)
            and all(j.rank >= pending[0].rank for j in active)
        ):
            job = pending.popleft()
            job.running = job.phases[0][0] not in _GATED if job.phases else False
            if job.phases:
                active.append(job)
                working += 1
        if ahead and pending and all(j.turn for j in active):
            job = pending.popleft()
            job.turn = False
            job.running = bool(job.phases) and job.phases[0][0] == "prepare"
            if job.phases:
                active.append(job)
        if not active:
            return t
        while not one_gate:  # planned drains: every leave and every admitted enter goes now
            ready = next(
                (
                    j
                    for j in active
                    if not j.running
                    and j.turn
                    and (
                        j.phases[0][0] == "leave"
                        or (j.phases[0][0] == "enter" and (holders < slots or holders == 0))
                    )
                ),
                None,
            )
            if ready is None:
                break
            ready.running = True
            if ready.phases[0][0] == "enter":
                ready.holds, holders = True, holders + 1
        if one_gate and gate is None:
            leaving = next((j for j in active if not j.running and j.phases[0][0] == "leave"), None)
            entering = next(
                (
                    j
                    for j in active
                    if not j.running
                    and j.turn
                    and j.phases[0][0] == "enter"
                    and (holders < slots or holders == 0)
                ),
                None,
            )
            gate = leaving or entering
            if gate is not None:
                gate.running = True
                if gate is entering:
                    gate.holds, holders = True, holders + 1
        running = [j for j in active if j.running]
        if not running:
            return t  # cannot happen: a job waits only for a gate some running job will free
        step = min(float(j.phases[0][1]) for j in running)
        t += step
        for job in running:
            job.phases[0][1] = float(job.phases[0][1]) - step
            while job.phases and float(job.phases[0][1]) <= 1e-9 and job.running:
                phase = job.phases.popleft()[0]
                if phase in _GATED:
                    gate = None
                if phase == "leave":
                    job.holds, holders = False, holders - 1
                job.running = bool(job.phases) and job.phases[0][0] not in _GATED and job.turn


# --- during a run ----------------------------------------------------------------------------

Position = Literal["pending", "prepare", "waiting", "enter", "work", "leave", "after", "done"]


@dataclass(frozen=True)
class NodeNow:
    """Where a node of a run is now: its phase (waiting: prepared, waiting at the gate), and for
    how long it has been in it."""

    node: str
    position: Position
    elapsed: float = 0.0


class Eta(BaseModel):
    """When a run in progress should end."""

    model_config = ConfigDict(frozen=True)

    eta: datetime = Field(description="when the run should end")
    remaining_seconds: float
    plus_minus_seconds: float = Field(description="the prediction's margin (±)")
    predicted_seconds: float = Field(description="the whole run's duration as predicted at its start")
    basis: Basis = Field(description="node | class | cluster (history) or default (no history: rough)")

    @property
    def rough(self) -> bool:
        return self.basis is Basis.DEFAULT

    def line(self, zone: str = "UTC") -> str:
        """`ETA 14:05 UTC (±6m, 40m left)`, for people."""
        rough = ", rough: no history" if self.rough else ""
        return (
            f"ETA {self.eta:%H:%M} {zone} (±{format_duration(self.plus_minus_seconds)}, "
            f"{format_duration(self.remaining_seconds)} left{rough})"
        )


def scaled(plan: NodePlan, pace: float) -> NodePlan:
    if pace == 1.0:
        return plan
    return plan.model_copy(update={p: plan.seconds(p) * pace for p in PHASES})


def pace_of(plan: RunPlan, finished: Sequence[CycleSample]) -> float:
    """How fast this run goes against its prediction: its finished nodes' cycles over their
    predicted cycles (1.0 before any finished; bounded to 0.25 .. 4)."""
    actual = predicted = 0.0
    for sample in finished:
        node = plan.node(sample.node)
        if node is not None:
            actual += sum(sample.components.values())
            predicted += node.cycle
    if actual <= 0 or predicted <= 0:
        return 1.0
    return min(max(actual / predicted, 0.25), 4.0)


def remaining_seconds(plan: RunPlan, where: Sequence[NodeNow], pace: float = 1.0) -> float:
    """Seconds the run still needs, from where its nodes are (`where`, in the run's order), the
    predicted cycles scaled by the run's `pace` so far."""
    in_flight: list[_Job] = []
    pending: list[_Job] = []
    working = 0  # in-flight nodes that have their turn (not started ahead of it)
    for now in where:
        node = plan.node(now.node)
        if node is None or now.position == "done":
            continue
        node = scaled(node, pace)
        if now.position == "pending":
            pending.append(_Job(now.node, _phases(node), rank=node.domain_rank))
            continue
        if now.position == "waiting":
            job = _Job(now.node, _phases(node, "enter"), rank=node.domain_rank)
            job.turn = not plan.ahead or working < plan.in_progress
        else:
            job = _Job(now.node, _phases(node, now.position, now.elapsed), rank=node.domain_rank)
            job.holds = now.position in ("enter", "work", "leave") and node.drains
            job.running = bool(job.phases) and job.phases[0][0] == now.position
            if now.position == "prepare" and plan.ahead and working >= plan.in_progress:
                job.turn = False  # started ahead of its turn
        if job.phases:
            in_flight.append(job)
            working += job.turn
    return schedule(
        [*in_flight, *pending],
        pending_from=len(in_flight),
        slots=plan.slots,
        in_progress=plan.in_progress,
        one_gate=plan.one_gate,
        ahead=plan.ahead,
    )


def eta(plan: RunPlan, where: Sequence[NodeNow], now: datetime, finished: Sequence[CycleSample] = ()) -> Eta:
    """The ETA of a run in progress: the schedule from where its nodes are, at the pace its
    finished nodes (`finished`: their cycles in this run) went."""
    left = remaining_seconds(plan, where, pace_of(plan, finished))
    return Eta(
        eta=now + timedelta(seconds=left),
        remaining_seconds=left,
        plus_minus_seconds=left * plan.spread,
        predicted_seconds=plan.predicted_seconds,
        basis=plan.basis,
    )


# --- will it fit -----------------------------------------------------------------------------


class Overrun(BaseModel):
    """A predicted run longer than one of its limits."""

    model_config = ConfigDict(frozen=True)

    limit: Literal["stop_after", "window"]
    limit_seconds: float
    predicted_seconds: float
    message: str


def overruns(
    predicted_seconds: float,
    now: datetime,
    *,
    stop_after: timedelta | None,
    window: MaintenanceWindow | None,
) -> list[Overrun]:
    """The limits a run predicted to take `predicted_seconds`, starting at `now`, would exceed:
    its `stop_after`, and the end of its maintenance window (the one open now, else the next)."""
    out: list[Overrun] = []
    took = format_duration(predicted_seconds)
    if stop_after is not None and predicted_seconds > stop_after.total_seconds():
        out.append(
            Overrun(
                limit="stop_after",
                limit_seconds=stop_after.total_seconds(),
                predicted_seconds=predicted_seconds,
                message=f"the run is predicted to take {took}, longer than stop_after = "
                f"{format_duration(stop_after)}: it would be canceled before every node is updated",
            )
        )
    if window is not None:
        span = window.open_at_or_after(now)
        if span is not None:
            opening, end = span
            begin = max(opening, now)
            left = (end - begin).total_seconds()
            if predicted_seconds > left:
                local = end.astimezone(window.opens.zone)
                out.append(
                    Overrun(
                        limit="window",
                        limit_seconds=left,
                        predicted_seconds=predicted_seconds,
                        message=f"the run is predicted to take {took}, but its maintenance window "
                        f"({window.spec()}) closes at {local:%Y-%m-%d %H:%M} {window.opens.tz}, "
                        f"{format_duration(left)} after the run would start: it would pause there "
                        "and finish in a later window",
                    )
                )
    return out
