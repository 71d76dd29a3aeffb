"""Replay a run's journal into its progress: pure, used to resume, to show status and to report.

Progress is always derived from the journal (what was intended, what came out), never kept as a
separate cursor that could drift from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cau.domain.results import Status
from cau.store.base import EventKind, JournalEvent


@dataclass
class StepRecord:
    key: str
    step: str
    started: datetime
    intent: dict[str, Any]
    finished: datetime | None = None
    outcome: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def ok(self) -> bool:
        return bool(self.outcome and self.outcome.get("ok"))


@dataclass
class NodeProgress:
    name: str
    started: datetime | None = None
    finished: datetime | None = None
    status: Status | None = None
    result: dict[str, Any] = field(default_factory=dict)  # node_finished data
    steps: dict[str, StepRecord] = field(default_factory=dict)
    current: str | None = None  # the step in hand (intent without outcome), or the last one
    detail: str = ""  # the last progress line
    waiting: str | None = None

    @property
    def in_flight(self) -> bool:
        return self.started is not None and self.status is None

    def steps_of(self, step: str) -> list[StepRecord]:
        return [s for s in self.steps.values() if s.step == step]

    @property
    def maintenance_intended(self) -> bool:
        """cau asked (or began to ask) for maintenance and has not successfully taken it back
        since (a failed drain is undone before its retry, which asks again): in journal order."""
        held = False
        for s in self.steps.values():
            if s.step == "enter_maintenance":
                held = True
            elif s.step == "exit_maintenance" and s.ok:
                held = False
        return held

    @property
    def prior(self) -> dict[str, Any] | None:
        """The node's state before maintenance, as recorded in the first enter intent."""
        for s in self.steps.values():
            if s.step == "enter_maintenance" and "prior" in s.intent:
                prior: dict[str, Any] = s.intent["prior"]
                return prior
        return None


@dataclass
class RunProgress:
    run_id: str
    created: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    nodes: dict[str, NodeProgress] = field(default_factory=dict)
    coordinators: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[tuple[datetime, str]] = field(default_factory=list)
    stop: dict[str, Any] | None = None
    paused: dict[str, Any] | None = None
    finished: dict[str, Any] | None = None
    finished_at: datetime | None = None
    last_seq: int = 0
    probe_events: list[JournalEvent] = field(default_factory=list)  # folded by the report

    @property
    def order(self) -> list[str]:
        return list(self.created.get("order", []))

    def count(self, *statuses: Status) -> int:
        return sum(1 for n in self.nodes.values() if n.status in statuses)

    @property
    def failed_nodes(self) -> int:
        """Nodes on which updating failed, what max_failed_nodes bounds: Failed ones, and
        PartiallyFailed ones (an update or a script failed there). A bad update must stop at the
        budget, not roll through the cluster node by node."""
        return self.count(Status.FAILED, Status.PARTIALLY_FAILED)


_PROBE_EVENTS = frozenset({EventKind.PROBE_DOWN, EventKind.PROBE_UP, EventKind.PROBE_SUMMARY})


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
    kind = ev.kind
    if kind is EventKind.RUN_CREATED:
        progress.created = ev.data
        progress.created_at = ev.ts
        for name in ev.data.get("order", []):
            progress.nodes.setdefault(name, NodeProgress(name))
        return
    if kind is EventKind.COORDINATOR:
        progress.coordinators.append({"ts": ev.ts.isoformat(), **ev.data})
        progress.paused = None
        return
    if kind is EventKind.WARNING:
        progress.warnings.append((ev.ts, str(ev.data.get("message", ""))))
        return
    if kind is EventKind.STOP_REQUESTED:
        progress.stop = {"ts": ev.ts.isoformat(), **ev.data}
        return
    if kind is EventKind.RUN_PAUSED:
        progress.paused = {"ts": ev.ts.isoformat(), **ev.data}
        return
    if kind is EventKind.RUN_FINISHED:
        progress.finished = ev.data
        progress.finished_at = ev.ts
        return
    if kind in _PROBE_EVENTS:
        progress.probe_events.append(ev)
        return
    if ev.node is None:
        return
    node = progress.nodes.setdefault(ev.node, NodeProgress(ev.node))
    if kind is EventKind.NODE_STARTED:
        node.started = node.started or ev.ts
    elif kind is EventKind.INTENT and ev.key is not None:
        node.steps[ev.key] = StepRecord(ev.key, ev.step or ev.key, ev.ts, ev.data)
        node.current = ev.step
        node.waiting = None
    elif kind is EventKind.OUTCOME and ev.key is not None:
        rec = node.steps.get(ev.key)
        if rec is None:  # an outcome without intent (should not happen): keep it anyway
            rec = node.steps[ev.key] = StepRecord(ev.key, ev.step or ev.key, ev.ts, {})
        rec.outcome = ev.data
        rec.finished = ev.ts
    elif kind is EventKind.PROGRESS:
        node.detail = str(ev.data.get("message", ""))
    elif kind is EventKind.WAITING:
        node.waiting = str(ev.data.get("reason", ""))
    elif kind is EventKind.NODE_FINISHED:
        node.finished = ev.ts
        node.status = Status(ev.data["status"])
        node.result = ev.data
        node.current = "done"
        node.detail = str(ev.data.get("message") or "")
        node.waiting = None
