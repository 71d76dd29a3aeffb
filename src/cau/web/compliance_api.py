"""Compliance in the REST API (VMM's workflow, cau.compliance): the compliance view and scans of a
cluster, baselines, groups of clusters, exemptions, and remediation, which starts an Updating Run
of the NonCompliant updates in the background like POST /clusters/{cluster}/runs does.

Who may do what (cau.domain.access):
- viewer: read the compliance views, baselines, groups and exemptions, export a view;
- operator: scan, remediate (VMM lets delegated administrators scan and remediate, and use
  baselines they may not change);
- admin: create, change and delete baselines and groups, and exempt updates or remove
  exemptions. An exemption changes what "compliant" means (the update is Exempt and never
  installed by a remediation), so it is policy like a baseline, not an operation.

Every change is audited by the service (cau.compliance.service), as the caller; a remediation is
audited here (`remediate`, or `remediate.refused` with why), like a run's start.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from cau.compliance.export import compliance_csv
from cau.compliance.service import NothingToRemediate, RemediationPlan, StandaloneHostHasRoles
from cau.compliance.view import ClusterCompliance
from cau.domain.compliance import (
    Baseline,
    BaselineRule,
    ClusterGroup,
    Exemption,
    Scope,
    ScopeKind,
    split_key,
)
from cau.errors import CauError, NotFound
from cau.web import ops
from cau.web.api import Admin, Operator, Viewer
from cau.web.auth import context
from cau.web.errors import ApiError
from cau.web.models import PROFILE_NAME, ErrorBody, RunOptions, ScanRequest

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "The body is not JSON, or the cluster's configuration is invalid"),
        (401, "No credentials, or an unknown or revoked token"),
        (403, "The role is too low, or a browser request came without its CSRF token"),
        (404, "No such cluster, baseline, rule, assignment, cluster group or exemption"),
        (
            409,
            "Conflict: a name exists; or a remediation is refused (nothing NonCompliant to install, "
            "a standalone host runs roles and `force` is false, a run is in progress or the cluster "
            "is locked, a preflight refused)",
        ),
        (422, "Invalid input: `fields` names each bad field"),
    )
}
_PROVIDER_ERROR: dict[int | str, dict[str, Any]] = {
    502: {"model": ErrorBody, "description": "The cluster's manager or a node answered with an error"}
}
router = APIRouter(prefix="/api/v1", responses=_ERRORS)

NameParam = Annotated[str, Path(pattern=PROFILE_NAME, description="letters, digits, '.', '_', '-'")]


class ScopeBody(BaseModel):
    """Where a baseline applies or an exemption holds: a cluster, a node (by its name, in
    whatever cluster: an assignment follows the node) or a named group of clusters."""

    model_config = ConfigDict(extra="forbid")

    kind: ScopeKind
    name: str = Field(min_length=1, max_length=253)

    def scope(self) -> Scope:
        return Scope(kind=self.kind, name=self.name)


class BaselineCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=PROFILE_NAME)
    description: str = Field("", max_length=500)
    rules: list[BaselineRule] = Field(default_factory=list, max_length=500)


class RulesAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[BaselineRule] = Field(min_length=1, max_length=500)


class GroupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clusters: list[str] = Field(max_length=1000, description="Its clusters, replacing those it had")


class ExemptionCreate(BaseModel):
    """VMM's Create Exemption, with its notes: who (the caller), why, until when."""

    model_config = ConfigDict(extra="forbid")

    update: str = Field(max_length=300, description="An update key (apt:openssl), or a rule's key")
    scope: ScopeBody
    reason: str = Field(min_length=1, max_length=500, description="Why, for how long, whom to ask")
    baseline: str | None = Field(None, description="Only in this baseline (default: every baseline)")
    until: datetime | None = Field(None, description="When it expires (UTC unless it says)")

    @field_validator("update")
    @classmethod
    def _update_key(cls, value: str) -> str:
        split_key(value)
        return value


class RemediateBody(BaseModel):
    """VMM's Update Remediation dialog: the baselines and updates ticked, the cluster's options
    (`options.no_restart`, `options.allow_nodes_in_maintenance`, `options.move`: live | save) and
    any other run option, as POST /clusters/{cluster}/runs takes them (scripts only from a stored
    profile). `nodes`: remediate these hosts as standalone hosts instead (no maintenance, their
    roles are not moved), refused for a host with roles unless `force`."""

    model_config = ConfigDict(extra="forbid")

    baselines: list[str] | None = Field(None, description="Only these baselines (default: all that apply)")
    exclude: list[str] = Field(
        default_factory=list, max_length=10000, description="Update keys (or rule keys) unticked"
    )
    nodes: list[str] | None = Field(None, min_length=1, description="Standalone hosts to remediate")
    force: StrictBool = Field(False, description="With `nodes`: also hosts that run roles (they go down)")
    scan: StrictBool = Field(False, description="Scan the nodes first (else: their last scan)")
    profile: str | None = Field(
        None, pattern=PROFILE_NAME, description="A stored profile's name; else the cluster's default"
    )
    options: RunOptions = RunOptions()


class RemediationStarted(BaseModel):
    run_id: str
    cluster: str
    plan: RemediationPlan
    warnings: list[str] = []
    notices: list[str] = []


class ExportFormat(StrEnum):
    CSV = "csv"
    JSON = "json"


def _utc(value: datetime | None, field: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ApiError(
            422,
            "invalid_input",
            f"{field} {value.isoformat()} is out of range in UTC",
            fields=[{"field": field, "message": "a date between years 1 and 9999 in UTC"}],
        ) from None


# --- the compliance view, scans, export -----------------------------------------------------------


@router.get("/compliance", response_model=list[ClusterCompliance], tags=["compliance"])
async def list_compliance(request: Request, _who: Viewer) -> list[ClusterCompliance]:
    """Every cluster's compliance from its last scans (nothing is scanned)."""
    svc = context(request).svc
    return [await svc.compliance.view(name) for name in svc.config.names()]


@router.get("/compliance/{cluster}", response_model=ClusterCompliance, tags=["compliance"])
async def get_compliance(request: Request, cluster: str, _who: Viewer) -> ClusterCompliance:
    """VMM's Compliance view (Get-SCComplianceStatus): each node's status per baseline and per
    update, from the last scans and the exemptions as they are now."""
    return await context(request).svc.compliance.view(cluster)


@router.post(
    "/compliance/{cluster}/scan",
    response_model=ClusterCompliance,
    tags=["compliance"],
    responses=_PROVIDER_ERROR,
)
async def scan_compliance(
    request: Request, cluster: str, who: Operator, body: ScanRequest | None = None
) -> ClusterCompliance:
    """Start-SCComplianceScan: scan every node against its baselines, keep and return the view.
    `profile`: a stored profile whose plug-in settings are used (else the cluster's)."""
    ctx = context(request)
    ctx.svc.config.cluster(cluster)
    profile = ops.build_run_profile(ctx, cluster, body.profile if body else None, RunOptions())
    view = await ctx.svc.compliance.scan(cluster, profile)
    ctx.access.audit(who.name, "compliance.scan", cluster, {"status": view.status.value})
    return view


@router.get("/compliance/{cluster}/export", tags=["compliance"], response_class=Response)
async def export_compliance(
    request: Request, cluster: str, _who: Viewer, format: ExportFormat = ExportFormat.CSV
) -> Response:
    """The view as a file: CSV (one row per node, baseline and update, as `cau compliance
    --output csv`) or JSON."""
    view = await context(request).svc.compliance.view(cluster)
    if format is ExportFormat.CSV:
        text, media = compliance_csv(view), "text/csv; charset=utf-8"
    else:
        text, media = json.dumps(view.model_dump(mode="json"), indent=2), "application/json"
    stem = f"cau-compliance-{cluster}-{view.at:%Y%m%dT%H%M%SZ}"
    disposition = f'attachment; filename="{stem}.{format.value}"'
    return Response(text, media_type=media, headers={"Content-Disposition": disposition})


@router.post(
    "/compliance/{cluster}/remediate",
    response_model=RemediationStarted,
    status_code=202,
    tags=["compliance"],
    responses=_PROVIDER_ERROR,
)
async def remediate(request: Request, cluster: str, who: Operator, body: RemediateBody) -> RemediationStarted:
    """Start-SCUpdateRemediation: an Updating Run of the cluster's NonCompliant updates only, node
    by node, compliant nodes bypassed, started in the background (follow it at /runs/{run_id}).
    Refused (409) when nothing NonCompliant is left to install, when a standalone host runs roles
    and `force` is false, or while the cluster has a run in progress."""
    ctx = context(request)
    svc = ctx.svc
    svc.config.cluster(cluster)
    base = ops.build_run_profile(ctx, cluster, body.profile, body.options)
    detail: dict[str, Any] = {
        "baselines": body.baselines,
        "exclude": body.exclude,
        "nodes": body.nodes,
        "force": body.force,
        "profile": body.profile,
        "options": body.options.model_dump(mode="json", exclude_none=True),
    }
    try:
        active = await svc.active_run(cluster)
        if active is not None:
            raise ApiError(
                409,
                "run_in_progress",
                f"cluster '{cluster}' has an unfinished Updating Run {active.run_id}: a remediation "
                "would resume it with its own options instead",
                hint=f"follow it at /runs/{active.run_id}, or stop it, then remediate",
            )
        view = await (svc.compliance.scan(cluster, base) if body.scan else svc.compliance.view(cluster))
        try:
            plan = svc.compliance.plan(view, baselines=body.baselines, exclude=body.exclude, nodes=body.nodes)
        except NotFound as exc:
            field = "nodes" if body.nodes is not None and "node(s)" in exc.message else "baselines"
            raise ApiError(
                422, "invalid_input", exc.message, fields=[{"field": field, "message": exc.message}]
            ) from exc
        try:
            run_profile, warnings = await svc.compliance.remediation_profile(
                cluster, base, plan, standalone=body.nodes, force=body.force
            )
        except NothingToRemediate as exc:
            raise ApiError(409, "nothing_to_remediate", exc.message, hint=exc.hint) from exc
        except StandaloneHostHasRoles as exc:
            raise ApiError(
                409,
                "standalone_host_has_roles",
                exc.message,
                hint="remediate the cluster (without `nodes`) to move its roles first, or send force: true",
            ) from exc
        await ops.refuse_scripts_on_this_host(ctx, cluster, run_profile)
        run_id, resumed = await ctx.worker.start(cluster, run_profile, profile_given=True, actor=who.name)
    except (CauError, ApiError) as exc:
        ctx.access.audit(who.name, "remediate.refused", cluster, {**detail, "error": str(exc)})
        raise
    ctx.access.audit(
        who.name,
        "remediate",
        cluster,
        {**detail, "run_id": run_id, "resumed": resumed, "plan": plan.nodes, "warnings": warnings},
    )
    job = ctx.worker.jobs[cluster]
    return RemediationStarted(
        run_id=run_id, cluster=cluster, plan=plan, warnings=warnings, notices=list(job.notices)
    )


# --- baselines ----------------------------------------------------------------------------------------


@router.get("/baselines", response_model=list[Baseline], tags=["compliance"])
async def list_baselines(request: Request, _who: Viewer) -> list[Baseline]:
    return await context(request).svc.compliance.baselines()


@router.post("/baselines", response_model=Baseline, status_code=201, tags=["compliance"])
async def create_baseline(request: Request, who: Admin, body: BaselineCreate) -> Baseline:
    """New-SCBaseline, with its first rules."""
    return await context(request).svc.compliance.create_baseline(
        body.name, description=body.description, rules=body.rules, by=who.name
    )


@router.get("/baselines/{name}", response_model=Baseline, tags=["compliance"])
async def get_baseline(request: Request, name: str, _who: Viewer) -> Baseline:
    return await context(request).svc.compliance.baseline(name)


@router.delete("/baselines/{name}", status_code=204, tags=["compliance"])
async def delete_baseline(request: Request, name: str, who: Admin) -> Response:
    """Delete a baseline (its assignments go with it)."""
    await context(request).svc.compliance.delete_baseline(name, by=who.name)
    return Response(status_code=204)


@router.post("/baselines/{name}/rules", response_model=Baseline, tags=["compliance"])
async def add_rules(request: Request, name: str, who: Admin, body: RulesAdd) -> Baseline:
    """Set-SCBaseline -AddUpdates: a package's new minimum replaces its old one. The baseline's
    revision goes up: its nodes are Unknown until scanned again."""
    return await context(request).svc.compliance.add_rules(name, body.rules, by=who.name)


@router.delete("/baselines/{name}/rules/{key}", response_model=Baseline, tags=["compliance"])
async def remove_rule(request: Request, name: str, key: str, who: Admin) -> Baseline:
    """Set-SCBaseline -RemoveUpdates: one rule, by its key (`apt:openssl`, `sandbox:*`)."""
    return await context(request).svc.compliance.remove_rules(name, [key], by=who.name)


@router.post("/baselines/{name}/assignments", response_model=Baseline, tags=["compliance"])
async def assign(request: Request, name: str, who: Admin, body: ScopeBody) -> Baseline:
    """Set-SCBaseline -AddAssignmentScope: a cluster, a node or a group of clusters."""
    return await context(request).svc.compliance.assign(name, body.scope(), by=who.name)


@router.delete("/baselines/{name}/assignments/{kind}/{scope}", response_model=Baseline, tags=["compliance"])
async def unassign(request: Request, name: str, kind: ScopeKind, scope: str, who: Admin) -> Baseline:
    """Set-SCBaseline -RemoveAssignmentScope."""
    return await context(request).svc.compliance.unassign(name, Scope(kind=kind, name=scope), by=who.name)


# --- groups of clusters -------------------------------------------------------------------------------


@router.get("/cluster-groups", response_model=list[ClusterGroup], tags=["compliance"])
async def list_groups(request: Request, _who: Viewer) -> list[ClusterGroup]:
    return await context(request).svc.compliance.groups()


@router.put("/cluster-groups/{name}", response_model=ClusterGroup, tags=["compliance"])
async def set_group(request: Request, name: NameParam, who: Admin, body: GroupBody) -> ClusterGroup:
    """Create or replace a named group of clusters (a baseline's or an exemption's scope)."""
    return await context(request).svc.compliance.set_group(name, body.clusters, by=who.name)


@router.delete("/cluster-groups/{name}", status_code=204, tags=["compliance"])
async def delete_group(request: Request, name: str, who: Admin) -> Response:
    """Refused (400) while a baseline is assigned to the group."""
    await context(request).svc.compliance.delete_group(name, by=who.name)
    return Response(status_code=204)


# --- exemptions -----------------------------------------------------------------------------------------


@router.get("/exemptions", response_model=list[Exemption], tags=["compliance"])
async def list_exemptions(request: Request, _who: Viewer) -> list[Exemption]:
    """Every exemption, expired ones too (`until` in the past)."""
    return await context(request).svc.compliance.exemptions()


@router.post("/exemptions", response_model=Exemption, status_code=201, tags=["compliance"])
async def create_exemption(request: Request, who: Admin, body: ExemptionCreate) -> Exemption:
    """Set-SCComplianceStatus -AddExemption: the update is Exempt on the scope, and never
    installed by a remediation, until the exemption expires or is removed."""
    return await context(request).svc.compliance.exempt(
        body.update,
        body.scope.scope(),
        reason=body.reason,
        by=who.name,
        baseline=body.baseline,
        until=_utc(body.until, "until"),
    )


@router.delete("/exemptions/{exemption_id}", status_code=204, tags=["compliance"])
async def remove_exemption(request: Request, exemption_id: str, who: Admin) -> Response:
    """Set-SCComplianceStatus -RemoveExemption: the update is Unknown until the next scan."""
    await context(request).svc.compliance.remove_exemption(exemption_id, by=who.name)
    return Response(status_code=204)


__all__ = ["router"]
