"""Build a run report from the run's record and its journal (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from cau.domain.planning import Block
from cau.domain.results import RunState
from cau.domain.runs import RunRecord
from cau.domain.updates import UpdateOutcome, UpdateResult
from cau.journal.events import (
    EnterOutcome,
    ExitOutcome,
    FailbackOutcome,
    InstallOutcome,
    RestartOutcome,
    ScanOutcome,
    ScriptOutcome,
    Step,
    StepOutcome,
)
from cau.journal.progress import NodeProgress, RunProgress
from cau.journal.timings import run_eta
from cau.ports import RoleOutage
from cau.reports.availability import (
    attribute,
    fold_probe_events,
    probe_outage_reports,
    role_availability,
)
from cau.reports.model import (
    CoordinatorReport,
    GateWaitReport,
    HeldUpdateReport,
    MoveReport,
    NodeReport,
    OutageReport,
    PauseReport,
    ReadinessNote,
    RunReport,
    StepReport,
    UpdateReport,
)


def _step_message(outcome: StepOutcome | None) -> str:
    if outcome is None:
        return ""
    if outcome.message:
        return outcome.message
    if isinstance(outcome, ScriptOutcome) and outcome.stderr:
        return outcome.stderr
    if isinstance(outcome, InstallOutcome):  # say which updates failed and why
        failed = [r for r in outcome.results if r.outcome is UpdateOutcome.FAILED]
        return "; ".join(f"{r.title or r.update_id}: {r.message or 'failed'}" for r in failed)
    return ""


def _node_report(node: NodeProgress, end: datetime) -> NodeReport:
    steps = [
        StepReport(
            step=s.step.value,
            key=s.key,
            started=s.started,
            finished=s.finished,
            ok=None if s.outcome is None else s.outcome.ok,
            message=_step_message(s.outcome),
        )
        for s in node.steps.values()
    ]
    enters = node.steps_of(Step.ENTER_MAINTENANCE)
    exits = [s for s in node.steps_of(Step.EXIT_MAINTENANCE) if s.ok]
    maint_start = enters[0].started if enters else None
    maint_seconds = 0.0
    if maint_start is not None:
        maint_end = exits[-1].finished if exits and exits[-1].finished else (node.finished or end)
        maint_seconds = max(0.0, (maint_end - maint_start).total_seconds())
    restarts = [
        s.outcome for s in node.steps_of(Step.RESTART) if isinstance(s.outcome, RestartOutcome) and s.ok
    ]
    boot_ids = [r.boot_id for r in restarts if r.boot_id]
    moved = [
        role
        for s in node.steps_of(Step.FAILBACK)
        if isinstance(s.outcome, FailbackOutcome) and s.ok
        for role in s.outcome.moved
    ]
    result = node.result
    if result is not None:
        raw = list(result.results)
        attempts = dict(result.attempts)
        held = list(result.held)
    else:  # in progress: what the install steps have returned so far, the last scan's held ones
        latest: dict[str, UpdateResult] = {}
        attempts = {}
        for s in node.steps_of(Step.INSTALL):
            for r in s.outcome.results if isinstance(s.outcome, InstallOutcome) else []:
                latest[r.update_id] = r
                attempts[r.update_id] = attempts.get(r.update_id, 0) + 1
        raw = list(latest.values())
        scans = [
            s.outcome
            for s in node.steps_of(Step.SCAN, Step.RESCAN)
            if isinstance(s.outcome, ScanOutcome) and s.ok
        ]
        held = scans[-1].all_held if scans else []
    updates = [
        UpdateReport(
            id=r.update_id,
            title=r.title,
            plugin=r.plugin,
            status=r.outcome.value,
            restart_required=r.restart_required,
            error_code=r.error_code,
            message=r.message,
            attempts=int(attempts.get(r.update_id, 1)),
            started=r.started,
            finished=r.finished,
            details=r.details,
        )
        for r in raw
    ]
    if node.status is not None:
        state = "done"
    elif node.waiting_block == Block.PARALLEL_LIMIT.value:
        state = "waiting"  # started ahead of its turn (scanned, staged): nothing done to it yet
    else:
        state = "running" if node.started else "pending"
    return NodeReport(
        name=node.name,
        status=node.status.value if node.status else None,
        state=state,
        current_step=node.current,
        detail=node.detail,
        waiting=node.waiting,
        gate_waits=[
            GateWaitReport(
                ended=t,
                phase=w.phase,
                outcome=w.outcome,
                seconds=round(w.seconds, 3),
                gates=list(w.gates),
                answer=w.answer,
            )
            for t, w in node.gate_waits
        ],
        error_id=result.error_id.value if result is not None and result.error_id else None,
        message=result.message if result is not None else "",
        started=node.started,
        finished=node.finished,
        maintenance_started=maint_start,
        maintenance_seconds=round(maint_seconds, 3),
        restarts=len(restarts),
        boot_ids=boot_ids,
        succeeded_count=sum(1 for u in updates if u.status == "Succeeded"),
        failed_count=sum(1 for u in updates if u.status == "Failed"),
        updates=updates,
        remaining_updates=list(result.remaining) if result is not None else [],
        held_updates=[
            HeldUpdateReport(id=h.id, title=h.title, plugin=h.plugin, reason=h.reason, details=h.details)
            for h in held
        ],
        roles_failed_back=moved,
        transient_errors=list(result.transient_errors) if result is not None else [],
        left_in_maintenance=node.left_in_maintenance,
        pending_restart=result.pending_restart if result is not None else False,
        steps=steps,
    )


# A probe sees a move's interruption up to its interval and timeout after the move's command
# returned: its outages that start this long after still count for the move.
_MOVE_SLACK = timedelta(seconds=1.5)


def _moves(
    progress: RunProgress, order: Sequence[str], outages: Sequence[OutageReport], probed: set[str]
) -> list[MoveReport]:
    """Every role move journaled with a node's steps, with the probe outages of its role (a role
    in `probed`) that overlap it: failed checks and seconds down. In the order they started."""
    out: list[MoveReport] = []
    for name in order:
        node = progress.nodes.get(name)
        if node is None:
            continue
        for s in node.steps_of(Step.ENTER_MAINTENANCE, Step.EXIT_MAINTENANCE, Step.FAILBACK):
            if not isinstance(s.outcome, EnterOutcome | ExitOutcome | FailbackOutcome):
                continue
            for m in s.outcome.moves:
                end = m.started + timedelta(seconds=m.seconds) + _MOVE_SLACK
                during = [
                    o
                    for o in outages
                    if o.source == "probe"
                    and o.role == m.role
                    and o.started <= end
                    and (o.ended or end) >= m.started
                ]
                measured = m.role in probed
                out.append(
                    MoveReport(
                        node=name,
                        step=s.key,
                        role=m.role,
                        method=m.method,
                        from_node=m.from_node,
                        to_node=m.to_node,
                        started=m.started,
                        seconds=round(m.seconds, 3),
                        ok=m.ok,
                        message=m.message,
                        reported_seconds=m.reported_seconds,
                        downtime_ms=m.downtime_ms,
                        data_bytes=m.data_bytes,
                        probe_failed_checks=sum(o.failed_checks for o in during) if measured else None,
                        probe_down_seconds=round(sum(o.seconds for o in during), 3) if measured else None,
                    )
                )
    return sorted(out, key=lambda m: m.started)


def build_report(
    run: RunRecord,
    progress: RunProgress,
    *,
    now: datetime,
    outages: Sequence[RoleOutage] = (),
) -> RunReport:
    started = progress.created_at or run.created
    finished = progress.finished_at if progress.finished is not None else run.finished
    end = finished or now
    order = progress.order or list(progress.nodes)
    nodes = [_node_report(progress.nodes[name], end) for name in order if name in progress.nodes]
    clipped = []
    for o in outages:
        o_start = max(o.started, started)
        o_end = min(o.ended or end, end)
        if o_end < o_start:
            continue
        clipped.append(
            OutageReport(
                role=o.role,
                node=o.node,
                reason=o.reason,
                started=o_start,
                ended=o.ended,
                seconds=round((o_end - o_start).total_seconds(), 3),
            )
        )
    # A role with a probe is measured by its probe; the others keep what the provider reported.
    figures = fold_probe_events(
        progress.probe_events, progress.probe_times, running=progress.finished is None
    )
    probed = {f.role for f in figures}
    clipped = [o for o in clipped if o.role not in probed] + probe_outage_reports(figures, started, end)
    clipped = attribute(sorted(clipped, key=lambda o: o.started), nodes, end)
    created = progress.created
    roles = list(dict.fromkeys([*(created.roles if created else {}), *(f.role for f in figures)]))
    span = (end - started).total_seconds()
    fin = progress.finished
    paused = progress.paused
    error_id = (
        (fin.error_id.value if fin is not None and fin.error_id else None)
        or run.error_id
        or (paused.error_id.value if paused is not None else None)
    )
    return RunReport(
        run_id=run.run_id,
        cluster=run.cluster,
        provider=run.provider,
        status=(fin.status.value if fin is not None else None) or (run.status.value if run.status else None),
        state=run.state.value,
        error_id=error_id,
        message=(fin.message if fin is not None else None)
        or run.message
        or (paused.message if paused else None),
        started=started,
        finished=finished,
        duration_seconds=round((end - started).total_seconds(), 3),
        started_by=created.started_by if created else None,
        coordinators=[
            CoordinatorReport(ts=c.ts, owner=c.owner, resumed=c.resumed, by=c.by, node=c.node)
            for c in progress.coordinators
        ],
        pauses=[
            PauseReport(ts=ts, error_id=p.error_id.value, message=p.message) for ts, p in progress.pauses
        ],
        profile=dict(created.profile) if created else dict(run.profile),
        plugins=[p.name for p in created.plugins] if created else [],
        max_failed_nodes=progress.max_failed,
        nodes=nodes,
        warnings=[msg for _, msg in progress.warnings],
        readiness=[
            ReadinessNote(
                rule=r.rule, title=r.title, nodes=list(r.nodes), impact=r.impact, fix=r.fix, detail=r.detail
            )
            for r in progress.readiness
        ],
        outages=clipped,
        availability=[role_availability(r, clipped, figures, span) for r in roles],
        moves=_moves(progress, order, clipped, probed),
        predicted_seconds=progress.forecast.plan.predicted_seconds if progress.forecast else None,
        # while a coordinator may be driving it (a paused run waits for someone, or its window)
        eta=run_eta(progress, now) if run.state is RunState.RUNNING else None,
    )
