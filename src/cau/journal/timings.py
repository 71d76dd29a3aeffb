"""Step durations read from a run's journal, for the ETA (cau.domain.estimate): each finished
node's cycle by phase in a past run, where each node of a run in progress is now, and the run's
ETA. A step's duration is its intent to its outcome, as the metrics count it."""

from __future__ import annotations

from datetime import datetime

from cau.domain.estimate import INSTALL, CycleSample, Eta, NodeNow, eta
from cau.domain.results import Status
from cau.journal.events import InstallIntent, Step
from cau.journal.progress import NodeProgress, RunProgress, StepRecord

_PREPARE = (Step.PRE_SCRIPT, Step.SCAN, Step.STAGE)
_WORK = (Step.INSTALL, Step.RESTART, Step.RESCAN)
_LEAVE = (Step.EXIT_MAINTENANCE, Step.FAILBACK)


def _seconds(a: datetime | None, b: datetime | None) -> float:
    return max((b - a).total_seconds(), 0.0) if a is not None and b is not None else 0.0


def _last_end(steps: list[StepRecord]) -> datetime | None:
    ends = [s.finished for s in steps if s.finished is not None]
    return max(ends) if ends else None


def cycle_sample(run_id: str, node: NodeProgress) -> CycleSample | None:
    """A node's cycle in a finished run, by component (only the phases it went through); None
    for a node that did not succeed (its cycle says little about the next)."""
    if node.status is not Status.SUCCEEDED or node.started is None or node.finished is None:
        return None
    prepare = node.steps_of(*_PREPARE)
    enters = node.steps_of(Step.ENTER_MAINTENANCE)
    work = node.steps_of(*_WORK)
    leaves = node.steps_of(*_LEAVE)
    parts: dict[str, float] = {}
    prepared = _last_end(prepare) or node.started
    parts["prepare"] = _seconds(node.started, prepared)
    work_start = prepared
    if enters:
        entered = _last_end(enters)
        parts["enter"] = _seconds(enters[0].started, entered)
        work_start = entered or prepared
    if work:
        work_end = leaves[0].started if leaves else _last_end(work)
        span = _seconds(work_start, work_end)
        installs: dict[str, float] = {}
        for s in node.steps_of(Step.INSTALL):
            if isinstance(s.intent, InstallIntent):
                key = INSTALL + s.intent.plugin
                installs[key] = installs.get(key, 0.0) + _seconds(s.started, s.finished)
        parts.update(installs)
        parts["work"] = max(span - sum(installs.values()), 0.0)
    back = _last_end(leaves)
    if leaves:
        parts["leave"] = _seconds(leaves[0].started, back)
    parts["after"] = _seconds(back or _last_end(work) or prepared, node.finished)
    return CycleSample(run_id=run_id, node=node.name, components=parts)


def cycle_samples(progress: RunProgress) -> list[CycleSample]:
    samples = (cycle_sample(progress.run_id, n) for n in progress.nodes.values())
    return [s for s in samples if s is not None]


def node_now(node: NodeProgress, now: datetime) -> NodeNow:
    """Where `node` of a run in progress is now."""
    if node.result is not None:
        return NodeNow(node.name, "done")
    if node.started is None:
        return NodeNow(node.name, "pending")
    leaves = node.steps_of(*_LEAVE)
    enters = node.steps_of(Step.ENTER_MAINTENANCE)
    work = node.steps_of(*_WORK)
    prepare = node.steps_of(*_PREPARE)
    if leaves:
        if all(s.done for s in leaves):
            return NodeNow(node.name, "after", _seconds(_last_end(leaves), now))
        return NodeNow(node.name, "leave", _seconds(leaves[0].started, now))
    if enters:
        if all(s.done for s in enters):
            return NodeNow(node.name, "work", _seconds(_last_end(enters), now))
        return NodeNow(node.name, "enter", _seconds(enters[0].started, now))
    if work:
        return NodeNow(node.name, "work", _seconds(_last_end(prepare) or node.started, now))
    if prepare and all(s.done for s in prepare) and node.waiting is not None:
        return NodeNow(node.name, "waiting", _seconds(_last_end(prepare), now))
    return NodeNow(node.name, "prepare", _seconds(node.started, now))


def run_eta(progress: RunProgress, now: datetime) -> Eta | None:
    """The ETA of a run in progress (None: finished, or started before forecasts were journaled)."""
    forecast = progress.forecast
    if forecast is None or progress.finished is not None or progress.created_at is None:
        return None
    where = [node_now(progress.nodes[n], now) for n in progress.order if n in progress.nodes]
    return eta(forecast.plan, where, now, cycle_samples(progress))
