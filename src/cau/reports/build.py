"""Build a run report from the run's record and its journal (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cau.engine.codec import load_held, load_results
from cau.engine.replay import NodeProgress, RunProgress
from cau.ports import RoleOutage
from cau.reports.availability import (
    attribute,
    fold_probe_events,
    probe_outage_reports,
    role_availability,
)
from cau.reports.model import (
    HeldUpdateReport,
    NodeReport,
    OutageReport,
    RunReport,
    StepReport,
    UpdateReport,
)
from cau.store.base import RunRecord


def _step_message(outcome: dict[str, Any] | None) -> str:
    if not outcome:
        return ""
    for key in ("message", "stderr"):
        value = outcome.get(key)
        if value:
            return str(value)
    failed = [r for r in outcome.get("results") or [] if r.get("outcome") == "Failed"]
    if failed:  # an install step: say which updates failed and why
        return "; ".join(
            f"{r.get('title') or r.get('update_id')}: {r.get('message') or 'failed'}" for r in failed
        )
    return ""


def _node_report(node: NodeProgress, end: datetime) -> NodeReport:
    steps = [
        StepReport(
            step=s.step,
            key=s.key,
            started=s.started,
            finished=s.finished,
            ok=None if s.outcome is None else bool(s.outcome.get("ok")),
            message=_step_message(s.outcome),
        )
        for s in node.steps.values()
    ]
    enters = node.steps_of("enter_maintenance")
    exits = [s for s in node.steps_of("exit_maintenance") if s.ok]
    maint_start = enters[0].started if enters else None
    maint_seconds = 0.0
    if maint_start is not None:
        maint_end = exits[-1].finished if exits and exits[-1].finished else (node.finished or end)
        maint_seconds = max(0.0, (maint_end - maint_start).total_seconds())
    restarts = [s for s in node.steps_of("restart") if s.ok and s.outcome]
    boot_ids = [str(s.outcome["boot_id"]) for s in restarts if s.outcome and s.outcome.get("boot_id")]
    failback = [s for s in node.steps_of("failback") if s.ok and s.outcome]
    moved = [str(r) for s in failback if s.outcome for r in s.outcome.get("moved", [])]

    result = node.result
    if node.status is not None:
        raw = load_results(result.get("results"))
        attempts = dict(result.get("attempts", {}))
    else:  # in progress: what the install steps have returned so far
        latest: dict[str, object] = {}
        attempts = {}
        for s in node.steps_of("install"):
            for r in load_results((s.outcome or {}).get("results")):
                latest[r.update_id] = r
                attempts[r.update_id] = attempts.get(r.update_id, 0) + 1
        raw = list(latest.values())  # type: ignore[arg-type]
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
        held = load_held(result.get("held"))
    else:  # in progress: as the last scan saw them
        scans = [s for s in node.steps.values() if s.step in ("scan", "rescan") and s.ok and s.outcome]
        held = (
            [h for v in (scans[-1].outcome or {}).get("held", {}).values() for h in load_held(v)]
            if scans
            else []
        )
    state = "done" if node.status is not None else ("running" if node.started else "pending")
    return NodeReport(
        name=node.name,
        status=node.status.value if node.status else None,
        state=state,
        current_step=node.current,
        detail=node.detail,
        waiting=node.waiting,
        error_id=result.get("error_id"),
        message=str(result.get("message") or ""),
        started=node.started,
        finished=node.finished,
        maintenance_started=maint_start,
        maintenance_seconds=round(maint_seconds, 3),
        restarts=len(restarts),
        boot_ids=boot_ids,
        succeeded_count=sum(1 for u in updates if u.status == "Succeeded"),
        failed_count=sum(1 for u in updates if u.status == "Failed"),
        updates=updates,
        remaining_updates=list(result.get("remaining", [])),
        held_updates=[
            HeldUpdateReport(id=h.id, title=h.title, plugin=h.plugin, reason=h.reason, details=h.details)
            for h in held
        ],
        roles_failed_back=moved,
        transient_errors=list(result.get("transient_errors", [])),
        left_in_maintenance=bool(result.get("left_in_maintenance")),
        pending_restart=bool(result.get("pending_restart")),
        steps=steps,
    )


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
    figures = fold_probe_events(progress.probe_events, running=progress.finished is None)
    probed = {f.role for f in figures}
    clipped = [o for o in clipped if o.role not in probed] + probe_outage_reports(figures, started, end)
    clipped = attribute(sorted(clipped, key=lambda o: o.started), nodes, end)
    roles = list(dict.fromkeys([*progress.created.get("roles", {}).keys(), *(f.role for f in figures)]))
    span = (end - started).total_seconds()
    finished_data = progress.finished or {}
    return RunReport(
        run_id=run.run_id,
        cluster=run.cluster,
        provider=run.provider,
        status=finished_data.get("status") or (run.status.value if run.status else None),
        state=run.state.value,
        error_id=finished_data.get("error_id") or run.error_id or (progress.paused or {}).get("error_id"),
        message=finished_data.get("message") or run.message or (progress.paused or {}).get("message"),
        started=started,
        finished=finished,
        duration_seconds=round((end - started).total_seconds(), 3),
        coordinators=progress.coordinators,
        profile=dict(progress.created.get("profile", run.profile)),
        plugins=[p["name"] if isinstance(p, dict) else str(p) for p in progress.created.get("plugins", [])],
        max_failed_nodes=int(progress.created.get("max_failed", 0)),
        nodes=nodes,
        warnings=[msg for _, msg in progress.warnings],
        outages=clipped,
        availability=[role_availability(r, clipped, figures, span) for r in roles],
    )
