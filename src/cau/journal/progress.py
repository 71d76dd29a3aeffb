"""Replay a run's journal into its progress: pure, used to resume, to show status and to report.

Progress is always derived from the journal (what was intended, what came out), never kept as a
separate cursor that could drift from it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from cau.domain.results import Status
from cau.journal.events import (
    Coordinator,
    ForecastMade,
    GateChanged,
    GateWait,
    HandOver,
    JournalEvent,
    NodeFinished,
    NodeStarted,
    PriorRecord,
    ProbeDown,
    ProbeSummary,
    ProbeUp,
    Progress,
    ReadinessWarning,
    RunCreated,
    RunFinished,
    RunPaused,
    SilenceRecord,
    Step,
    StepIntent,
    StepOutcome,
    StopRequested,
    Waiting,
    WarningEvent,
)


@dataclass
class StepRecord:
    key: str
    step: Step
    started: datetime
    intent: StepIntent
    finished: datetime | None = None
    outcome: StepOutcome | None = None

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def ok(self) -> bool:
        return self.outcome is not None and self.outcome.ok


@dataclass
class NodeProgress:
    name: str
    started: datetime | None = None
    finished: datetime | None = None
    result: NodeFinished | None = None
    steps: dict[str, StepRecord] = field(default_factory=dict)  # by key, in journal order
    current: str | None = None  # the step in hand (intent without outcome), the last one, or "done"
    detail: str = ""  # the last progress line
    waiting: str | None = None
    waiting_block: str | None = None  # why it waits (cau.domain.planning.Block), with `waiting`
    gate_waits: list[tuple[datetime, GateWait]] = field(default_factory=list)

    @property
    def status(self) -> Status | None:
        return self.result.status if self.result is not None else None

    @property
    def in_flight(self) -> bool:
        return self.started is not None and self.result is None

    @property
    def left_in_maintenance(self) -> bool:
        return self.result is not None and self.result.left_in_maintenance

    def steps_of(self, *steps: Step) -> list[StepRecord]:
        return [s for s in self.steps.values() if s.step in steps]

    def has_step(self, *steps: Step) -> bool:
        return any(s.step in steps for s in self.steps.values())

    @property
    def only_read(self) -> bool:
        """Started, and nothing done to the node but reading (scan, staging the downloads)."""
        return all(s.step in (Step.SCAN, Step.STAGE) for s in self.steps.values())

    @property
    def maintenance_intended(self) -> bool:
        """cau asked (or began to ask) for maintenance and has not successfully taken it back
        since (a failed drain is undone before its retry, which asks again): in journal order."""
        held = False
        for s in self.steps.values():
            if s.step is Step.ENTER_MAINTENANCE:
                held = True
            elif s.step is Step.EXIT_MAINTENANCE and s.ok:
                held = False
        return held

    @property
    def prior(self) -> PriorRecord | None:
        """The node's state before maintenance, as recorded in the first enter intent."""
        for s in self.steps_of(Step.ENTER_MAINTENANCE):
            prior = getattr(s.intent, "prior", None)
            if isinstance(prior, PriorRecord):
                return prior
        return None


@dataclass(frozen=True)
class CoordinatorEntry:
    ts: datetime
    owner: str
    resumed: bool
    by: str | None = None  # who asked for it (None: unknown)
    node: str | None = None  # self-updating mode: the node it ran on


@dataclass
class RunProgress:
    run_id: str
    created: RunCreated | None = None
    created_at: datetime | None = None
    nodes: dict[str, NodeProgress] = field(default_factory=dict)
    coordinators: list[CoordinatorEntry] = field(default_factory=list)
    handovers: list[tuple[datetime, HandOver]] = field(default_factory=list)
    warnings: list[tuple[datetime, str]] = field(default_factory=list)
    readiness: list[ReadinessWarning] = field(default_factory=list)  # the rules that warned at start
    stop: StopRequested | None = None
    paused: RunPaused | None = None  # the pause in force (None once a coordinator took over)
    pauses: list[tuple[datetime, RunPaused]] = field(default_factory=list)  # every pause, in order
    finished: RunFinished | None = None
    finished_at: datetime | None = None
    last_seq: int = 0
    probe_events: list[ProbeDown | ProbeUp | ProbeSummary] = field(default_factory=list)
    probe_times: list[datetime] = field(default_factory=list)  # when each probe event was journaled
    # health gates' transitions: (when, the node a per-node gate was evaluated for, the event)
    gate_changes: list[tuple[datetime, str | None, GateChanged]] = field(default_factory=list)
    silences: list[tuple[datetime, str | None, SilenceRecord]] = field(default_factory=list)
    forecast: ForecastMade | None = None  # the prediction made when the run started
    # How many nodes have each status: kept by `apply`, the one place a node's result is set, so
    # that the coordinator's check of the failure budget (every poll) does not count every node.
    _statuses: Counter[Status] = field(default_factory=Counter, repr=False, compare=False)

    @property
    def role_node(self) -> str | None:
        """Self-updating mode: the node of the clustered role's last coordinator; None for a run
        driven from outside the cluster (remote-updating mode)."""
        return self.coordinators[-1].node if self.coordinators else None

    @property
    def order(self) -> list[str]:
        return list(self.created.order) if self.created is not None else []

    @property
    def max_failed(self) -> int:
        return self.created.max_failed if self.created is not None else 0

    def count(self, *statuses: Status) -> int:
        return sum(self._statuses[s] for s in statuses)

    @property
    def failed_nodes(self) -> int:
        """Nodes on which updating failed, what max_failed_nodes bounds: Failed ones, and
        PartiallyFailed ones (an update or a script failed there). A bad update must stop at the
        budget, not roll through the cluster node by node."""
        return self.count(Status.FAILED, Status.PARTIALLY_FAILED)

    def node(self, name: str) -> NodeProgress:
        return self.nodes.setdefault(name, NodeProgress(name))


def replay(events: Iterable[JournalEvent]) -> RunProgress:
    progress: RunProgress | None = None
    for ev in events:
        if progress is None:
            progress = RunProgress(run_id=ev.run_id)
        apply(progress, ev)
    if progress is None:
        raise ValueError("empty journal")
    return progress


def apply(progress: RunProgress, ev: JournalEvent) -> None:
    """Fold one event into the progress (also used live, event by event)."""
    progress.last_seq = max(progress.last_seq, ev.seq)
    p = ev.payload
    match p:
        case RunCreated():
            progress.created = p
            progress.created_at = ev.ts
            for name in p.order:
                progress.node(name)
        case Coordinator():
            progress.coordinators.append(CoordinatorEntry(ev.ts, p.owner, p.resumed, p.by, p.node))
            progress.paused = None
        case WarningEvent():
            progress.warnings.append((ev.ts, p.message))
        case ReadinessWarning():
            progress.readiness.append(p)
        case StopRequested():
            progress.stop = progress.stop or p  # the first stop is the one that took effect
        case RunPaused():
            progress.paused = p
            progress.pauses.append((ev.ts, p))
        case HandOver():
            progress.handovers.append((ev.ts, p))
        case RunFinished():
            progress.finished = p
            progress.finished_at = ev.ts
        case GateChanged():
            progress.gate_changes.append((ev.ts, ev.node, p))
        case SilenceRecord():
            progress.silences.append((ev.ts, ev.node, p))
        case ForecastMade():
            progress.forecast = p
        case GateWait() if ev.node is not None:
            progress.node(ev.node).gate_waits.append((ev.ts, p))
        case ProbeDown() | ProbeUp() | ProbeSummary():
            progress.probe_events.append(p)
            progress.probe_times.append(ev.ts)
        case _ if ev.node is not None:
            node = progress.node(ev.node)
            before = node.status
            _apply_node(node, ev)
            if node.status is not before:
                if before is not None:
                    progress._statuses[before] -= 1
                if node.status is not None:
                    progress._statuses[node.status] += 1


def _apply_node(node: NodeProgress, ev: JournalEvent) -> None:
    p = ev.payload
    match p:
        case NodeStarted():
            node.started = node.started or ev.ts
        case Progress():
            node.detail = p.message
        case Waiting():
            node.waiting, node.waiting_block = p.reason, p.block
        case NodeFinished():
            node.finished = ev.ts
            node.result = p
            node.current = "done"
            node.detail = p.message
            node.waiting = node.waiting_block = None
        case StepIntent():
            node.steps[p.key] = StepRecord(p.key, p.step, ev.ts, p)
            node.current = p.step
            node.waiting = node.waiting_block = None
        case StepOutcome():
            rec = node.steps.get(p.key)
            if rec is not None:  # an outcome without its intent cannot happen: a step journals both
                rec.outcome = p
                rec.finished = ev.ts
