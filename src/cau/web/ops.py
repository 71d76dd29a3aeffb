"""What the API routes and the dashboard pages both show and do, on top of `Service`.

The pages render these same views server-side, and every action of the dashboard is a call to the
API from the page's script, so the two can never disagree (nor with the CLI: all is `Service`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cau.domain.access import Role
from cau.domain.profile import RunProfile, build_profile
from cau.domain.results import RunState
from cau.domain.runs import ReportQuery, RunRecord
from cau.errors import CauError, NotFound, ProfileError
from cau.redact import mask_data
from cau.reports.model import RunReport
from cau.store.access import Principal
from cau.views import ClusterScan
from cau.web.context import WebContext
from cau.web.errors import ApiError, from_profile_error
from cau.web.models import (
    ClusterDetail,
    ClusterSummary,
    NodeView,
    ProfileValidation,
    ProfileView,
    RoleView,
    RunOptions,
    RunStarted,
    RunSummary,
    StopResult,
)


async def run_summary(ctx: WebContext, record: RunRecord, report: RunReport | None = None) -> RunSummary:
    report = report or await ctx.svc.run_report(record)
    # an unfinished run that no live coordinator drives (cau.lease): starting a run resumes it
    interrupted = record.state is RunState.RUNNING and not await ctx.svc.driven(record)
    return RunSummary(
        run_id=record.run_id,
        cluster=record.cluster,
        state=record.state.value,
        status=record.status.value if record.status else None,
        started=report.started,
        finished=report.finished,
        duration_seconds=report.duration_seconds,
        nodes_total=len(report.nodes),
        nodes_succeeded=report.count("Succeeded"),
        nodes_failed=report.count("Failed"),
        error_id=report.error_id,
        message=report.message,
        stop_requested=record.stop_requested,
        interrupted=interrupted,
        predicted_seconds=report.predicted_seconds,
        eta=report.eta,
    )


async def _runs_of(ctx: WebContext, cluster: str) -> tuple[RunRecord | None, RunRecord | None]:
    active = await ctx.svc.active_run(cluster)
    finished = await ctx.svc.runs(ReportQuery(cluster=cluster, states=(RunState.FINISHED,), last=1))
    return active, (finished[0] if finished else None)


async def clusters(ctx: WebContext) -> list[ClusterSummary]:
    out = []
    for name in ctx.svc.config.names():
        active, last = await _runs_of(ctx, name)
        out.append(
            ClusterSummary(
                name=name,
                provider=ctx.svc.config.cluster(name).provider,
                active_run=await run_summary(ctx, active) if active else None,
                last_run=await run_summary(ctx, last) if last else None,
            )
        )
    return out


async def cluster_detail(ctx: WebContext, name: str) -> ClusterDetail:
    cfg = ctx.svc.config.cluster(name)
    active, last = await _runs_of(ctx, name)
    current = active or last
    report = await ctx.svc.run_report(current) if current else None
    node_reports = {n.name: n for n in report.nodes} if report else {}
    last_scan = ctx.scans.get(name)
    scanned_at = last_scan.scanned if last_scan else None
    pending = {s.node: [u.id for u in s.updates] for s in (last_scan.nodes if last_scan else [])}
    nodes: list[NodeView] = []
    roles: list[RoleView] = []
    error = None
    status = await ctx.svc.status(name)
    try:
        provider = ctx.svc.open_provider(name)
        try:
            snap = await provider.discover()
        finally:
            await provider.close()
    except CauError as exc:
        error = str(exc)
    else:
        for n in snap.nodes:
            nr = node_reports.get(n.name)
            nodes.append(
                NodeView(
                    name=n.name,
                    state=n.state.value,
                    in_maintenance=n.in_maintenance,
                    roles=[r.name for r in snap.roles_on(n.name)],
                    pending_updates=pending.get(n.name) if scanned_at else None,
                    last_result=(nr.status if nr and nr.status else (nr.state if nr else None)),
                    current_step=nr.current_step if nr and active else None,
                )
            )
        roles = [
            RoleView(
                name=r.name,
                kind=r.kind.value,
                owner=r.owner,
                instances=list(r.instances),
                preferred_owners=list(r.preferred_owners),
            )
            for r in snap.roles
        ]
    return ClusterDetail(
        name=name,
        provider=cfg.provider,
        active_run=await run_summary(ctx, active) if active else None,
        last_run=await run_summary(ctx, last) if last else None,
        nodes=nodes,
        roles=roles,
        discover_error=error,
        preview_at=scanned_at,
        coordinator=str(status.lock.owner) if status.lock is not None else None,
    )


def stored_profile_options(ctx: WebContext, name: str | None) -> dict[str, Any] | None:
    if name is None:
        return None
    found = ctx.access.get_profile(name)
    if found is None:
        raise ApiError(
            422,
            "unknown_profile",
            f"no stored profile '{name}'",
            fields=[{"field": "profile", "message": "unknown profile"}],
        )
    return found.options


def build_run_profile(ctx: WebContext, cluster: str, profile: str | None, options: RunOptions) -> RunProfile:
    overrides = options.model_dump(mode="json", exclude_none=True)
    try:
        return ctx.svc.profile(cluster, None, overrides, stored=stored_profile_options(ctx, profile))
    except ProfileError as exc:
        raise from_profile_error(exc) from exc


async def preview(ctx: WebContext, cluster: str, profile: str | None) -> ClusterScan:
    run_profile = build_run_profile(ctx, cluster, profile, RunOptions())
    result = await ctx.svc.scan(cluster, run_profile)
    ctx.scans[cluster] = result
    return result


async def start_run(
    ctx: WebContext, who: Principal, cluster: str, profile: str | None, options: RunOptions
) -> RunStarted:
    ctx.svc.config.cluster(cluster)
    run_profile = build_run_profile(ctx, cluster, profile, options)
    given = profile is not None or bool(options.model_dump(exclude_none=True))
    detail = {"profile": profile, "options": options.model_dump(mode="json", exclude_none=True)}
    try:
        await refuse_scripts_on_this_host(ctx, cluster, run_profile)
        run_id, resumed = await ctx.worker.start(cluster, run_profile, profile_given=given, actor=who.name)
    except (CauError, ApiError) as exc:
        ctx.access.audit(who.name, "run.start.refused", cluster, {**detail, "error": str(exc)})
        raise
    ctx.access.audit(
        who.name, "run.resume" if resumed else "run.start", cluster, {**detail, "run_id": run_id}
    )
    job = ctx.worker.jobs[cluster]
    return RunStarted(run_id=run_id, cluster=cluster, resumed=resumed, notices=list(job.notices))


async def refuse_scripts_on_this_host(ctx: WebContext, cluster: str, profile: RunProfile) -> None:
    """A simulated cluster's "nodes" run their scripts on this machine: under `cau serve` a web
    admin would run commands as the server's user. Refused unless the server's operator allowed
    it when starting it (`cau serve --allow-local-scripts`). A run to resume keeps its own profile."""
    if ctx.settings.allow_local_scripts:
        return
    active = await ctx.svc.active_run(cluster)
    effective = active.profile if active is not None else profile
    # a health gate's command on the coordinator runs on this server whatever the cluster
    local_gates = [g.name for g in effective.health_gates if getattr(g, "on", None) == "coordinator"]
    if local_gates:
        raise ApiError(
            409,
            "local_scripts_refused",
            f"health gate(s) {', '.join(local_gates)} run a command on the coordinator: on this "
            "server, as its user",
            hint="the server's operator can allow it: `cau serve --allow-local-scripts`",
        )
    provider = ctx.svc.registry.providers.get(ctx.svc.config.cluster(cluster).provider)
    if provider is None or not getattr(provider.obj, "simulated", False):
        return
    node_gates = [g.name for g in effective.health_gates if g.runs_commands]
    if effective.pre_update_script or effective.post_update_script or node_gates:
        raise ApiError(
            409,
            "local_scripts_refused",
            f"the nodes of '{cluster}' are simulated: their pre/post-update scripts would run on this "
            "server, as its user",
            hint="the server's operator can allow it: `cau serve --allow-local-scripts`",
        )


async def stop_run(ctx: WebContext, who: Principal, run_id: str, reason: str) -> StopResult:
    record = await ctx.svc.find_run(run_id)
    if record.state is RunState.FINISHED:
        raise ApiError(409, "run_finished", f"run {record.run_id} has already finished")
    record = await ctx.svc.stop(record.cluster, by=who.name, reason=reason)  # audited there
    return StopResult(run_id=record.run_id, stop_requested=True, state=record.state.value)


async def jobs(ctx: WebContext, *, limit: int = 50) -> tuple[list[RunSummary], list[RunSummary]]:
    """Runs in progress (or paused/interrupted), and recent finished runs, across clusters."""
    records = await ctx.svc.runs(ReportQuery(last=limit))
    active = [await run_summary(ctx, r) for r in records if r.state is not RunState.FINISHED]
    recent = [await run_summary(ctx, r) for r in reversed(records) if r.state is RunState.FINISHED]
    return active, recent


async def reports(
    ctx: WebContext, cluster: str | None, since: datetime | None, until: datetime | None, limit: int
) -> list[tuple[RunRecord, RunReport]]:
    if cluster is not None:
        ctx.svc.config.cluster(cluster)
    records = await ctx.svc.runs(ReportQuery(cluster=cluster, since=since, until=until, last=limit))
    return [(r, await ctx.svc.run_report(r)) for r in reversed(records)]


async def report(ctx: WebContext, run_id: str) -> tuple[RunRecord, RunReport]:
    record = await ctx.svc.find_run(run_id)
    return record, await ctx.svc.run_report(record)


def validate_profile(options: dict[str, Any]) -> ProfileValidation:
    try:
        effective = build_profile(None, None, base=options)
    except ProfileError as exc:
        fields = from_profile_error(exc).fields
        return ProfileValidation(valid=False, effective=None, problems=fields)
    return ProfileValidation(valid=True, effective=effective.model_dump(mode="json"))


# What a viewer sees of a stored profile: scripts and plug-in arguments are commands and
# parameters that may carry credentials (a secret's value itself is masked for everyone).
HIDDEN_FROM_VIEWERS = "(hidden: operators and admins see it)"
_SENSITIVE = ("pre_update_script", "post_update_script", "plugins", "health_gates")


def _for_viewer(options: dict[str, Any]) -> dict[str, Any]:
    shown = dict(options)
    for key in _SENSITIVE:
        if shown.get(key) is None:
            continue
        if key == "plugins":
            shown[key] = [
                {"name": p.get("name"), "args": HIDDEN_FROM_VIEWERS} if isinstance(p, dict) else p
                for p in shown[key]
            ]
        else:
            shown[key] = HIDDEN_FROM_VIEWERS
    return shown


def profile_view(ctx: WebContext, name: str, role: Role) -> ProfileView:
    """A stored profile as `role` may see it: every secret's value masked, and for viewers the
    scripts and plug-in arguments hidden."""
    found = ctx.access.get_profile(name)
    if found is None:
        raise NotFound(f"no stored profile '{name}'")
    check = validate_profile(found.options)
    options, effective = mask_data(found.options), mask_data(check.effective or {})
    if not role.allows(Role.OPERATOR):
        options, effective = _for_viewer(options), _for_viewer(effective)
    return ProfileView(
        name=found.name,
        description=found.description,
        options=options,
        effective=effective,
        created=found.created,
        updated=found.updated,
        updated_by=found.updated_by,
    )


def require_valid_profile(options: dict[str, Any]) -> None:
    check = validate_profile(options)
    if not check.valid:
        message = "; ".join(f"{p['field']}: {p['message']}" for p in check.problems)
        raise ApiError(422, "invalid_profile", f"invalid run profile: {message}", fields=check.problems)
