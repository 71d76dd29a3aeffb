"""The REST API, /api/v1. Its OpenAPI document is at /api/v1/openapi.json (browse it at /api/docs)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from cau import __version__
from cau.domain.access import Role
from cau.domain.results import RunState
from cau.errors import NotFound
from cau.readiness import ReadinessReport
from cau.reports.model import RunReport
from cau.store.access import Principal, TokenInfo
from cau.views import ClusterScan, PluginView, RoleView, SessionView
from cau.web import ops
from cau.web.auth import SESSION_COOKIE, admin, context, identify, operator, viewer
from cau.web.errors import ApiError
from cau.web.models import (
    PROFILE_NAME,
    AuditView,
    ClusterDetail,
    ClusterSummary,
    ErrorBody,
    Health,
    Me,
    PasswordSet,
    ProfileBody,
    ProfileCreate,
    ProfileValidation,
    ProfileView,
    RoleBody,
    RoleChange,
    RunStarted,
    RunSummary,
    ScanRequest,
    SignIn,
    StartRun,
    StopRequest,
    StopResult,
    TokenCreate,
    TokenCreated,
    UserView,
)
from cau.web.signin import sign_in

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "The body is not JSON, or the cluster's configuration is invalid"),
        (401, "No credentials, or an unknown or revoked token"),
        (403, "The role is too low, or a browser request came without its CSRF token"),
        (404, "No such cluster, run, profile, token, user or session"),
        (409, "Conflict: the cluster is locked by a coordinator, a preflight refused, a name exists"),
        (422, "Invalid input: `fields` names each bad field"),
    )
}
router = APIRouter(prefix="/api/v1", responses=_ERRORS)
# Routes that ask the cluster's manager (a ProviderError: crm_mon failed, a node did not answer).
_PROVIDER_ERROR: dict[int | str, dict[str, Any]] = {
    502: {"model": ErrorBody, "description": "The cluster's manager or a node answered with an error"}
}

Viewer = Annotated[Principal, Depends(viewer)]
Operator = Annotated[Principal, Depends(operator)]
Admin = Annotated[Principal, Depends(admin)]

_POLL_SECONDS = 0.25
_KEEPALIVE_SECONDS = 15.0
_MAX_SEQ = 2**63 - 1  # a journal seq is an SQLite INTEGER: a larger one cannot even be asked for


class ExportFormat(StrEnum):
    HTML = "html"
    CSV = "csv"
    JSON = "json"


def _utc(value: datetime | None, field: str) -> datetime | None:
    """A query's date in UTC (without an offset it is UTC already). Near year 1 or 9999 an
    offset can carry a date out of the range UTC dates have: that is bad input, said as such."""
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


# --- health, identity, sign-in ---------------------------------------------------------------------


@router.get("/health", response_model=Health, tags=["meta"])
async def health() -> Health:
    return Health(ok=True, version=__version__)


@router.get("/me", response_model=Me, tags=["auth"])
async def me(who: Viewer) -> Me:
    return Me(name=who.name, role=who.role, via=who.via)


@router.post(
    "/session",
    response_model=Me,
    tags=["auth"],
    responses={
        429: {
            "model": ErrorBody,
            "description": "Too many failed sign-ins for this account or from this address "
            "(docs/security.md); `Retry-After` says when to try again",
        }
    },
)
async def create_session(request: Request, response: Response, body: SignIn) -> Me:
    """Browser sign-in: sets an HttpOnly, SameSite=Strict session cookie (Secure over https)."""
    who = sign_in(request, response, body)
    response.headers["X-CSRF-Token"] = who.csrf or ""
    return Me(name=who.name, role=who.role, via=who.via)


@router.delete("/session", status_code=204, tags=["auth"])
async def end_session(request: Request, who: Viewer) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        context(request).access.end_session(cookie)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- clusters, preview, runs -----------------------------------------------------------------------


@router.get("/clusters", response_model=list[ClusterSummary], tags=["clusters"])
async def list_clusters(request: Request, _who: Viewer) -> list[ClusterSummary]:
    return await ops.clusters(context(request))


@router.get("/clusters/{cluster}", response_model=ClusterDetail, tags=["clusters"])
async def get_cluster(request: Request, cluster: str, _who: Viewer) -> ClusterDetail:
    return await ops.cluster_detail(context(request), cluster)


@router.get(
    "/clusters/{cluster}/check",
    response_model=ReadinessReport,
    tags=["clusters"],
    responses=_PROVIDER_ERROR,
)
async def check_cluster(
    request: Request,
    cluster: str,
    _who: Operator,  # it runs commands on every node, as a preview's scan does
    profile: Annotated[
        str | None,
        Query(pattern=PROFILE_NAME, description="A stored profile's name; else the cluster's default"),
    ] = None,
) -> ReadinessReport:
    """The readiness rules (Test-CauSetup, `cau check`): each pass, warning, fail or
    not-applicable, with its impact and fix. It reads the cluster and changes nothing."""
    ctx = context(request)
    return await ctx.svc.check(cluster, stored=ops.stored_profile_options(ctx, profile))


@router.post(
    "/clusters/{cluster}/scan", response_model=ClusterScan, tags=["clusters"], responses=_PROVIDER_ERROR
)
async def scan(request: Request, cluster: str, who: Operator, body: ScanRequest | None = None) -> ClusterScan:
    """Preview the updates applicable to each node (Invoke-CauScan); changes nothing."""
    return await ops.preview(context(request), cluster, body.profile if body else None)


@router.post(
    "/clusters/{cluster}/runs",
    response_model=RunStarted,
    status_code=202,
    tags=["runs"],
    responses=_PROVIDER_ERROR,
)
async def start_run(request: Request, cluster: str, who: Operator, body: StartRun) -> RunStarted:
    """Start an Updating Run (Invoke-CauRun), or resume the cluster's unfinished one."""
    return await ops.start_run(context(request), who, cluster, body.profile, body.options)


@router.post("/clusters/{cluster}/stop", response_model=StopResult, tags=["runs"])
async def stop_cluster(request: Request, cluster: str, who: Operator, body: StopRequest) -> StopResult:
    ctx = context(request)
    ctx.svc.config.cluster(cluster)
    active = await ctx.svc.active_run(cluster)
    if active is None:
        raise NotFound(f"no Updating Run is in progress on cluster '{cluster}'")
    return await ops.stop_run(ctx, who, active.run_id, body.reason)


@router.get(
    "/clusters/{cluster}/debug-trace",
    tags=["clusters"],
    response_class=Response,
    responses={
        200: {
            "content": {"application/zip": {}},
            "description": "The zip; its manifest.json lists every file, where it came from and what"
            " could not be collected (also counted in the X-Cau-Missing header)",
        }
    },
)
async def debug_trace(request: Request, cluster: str, who: Admin, run: str | None = None) -> Response:
    """Save-CauDebugTrace: the run's journal and report (`run`, else the newest), cau's versions
    and log, the config and each node's package-manager and cluster state, secrets masked, in
    one zip. Admin only (it holds the nodes' logs); audited."""
    bundle = await context(request).svc.debug_trace(cluster, run or None, by=who.name)
    manifest = bundle.manifest
    return Response(
        bundle.zip_bytes(),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{manifest.folder}.zip"',
            "X-Cau-Missing": str(len(manifest.missing)),
        },
    )


# --- self-updating mode: the clustered role (cau.selfupdating) -----------------------------------------


@router.get("/clusters/{cluster}/role", response_model=RoleView, tags=["self-updating"])
async def get_role(request: Request, cluster: str, _who: Viewer) -> RoleView:
    """The cluster's clustered role: where its coordinator runs, its profile, its run."""
    return await context(request).svc.roles.show(cluster)


@router.post("/clusters/{cluster}/role", response_model=RoleView, status_code=201, tags=["self-updating"])
async def add_role(request: Request, cluster: str, who: Admin, body: RoleBody) -> RoleView:
    return await context(request).svc.roles.add(
        cluster, profile=body.profile, options=dict(body.options), enabled=body.enabled, by=who.name,
        schedule=body.schedule, tz=body.tz, start=body.start,
    )  # fmt: skip


@router.patch("/clusters/{cluster}/role", response_model=RoleView, tags=["self-updating"])
async def change_role(request: Request, cluster: str, who: Admin, body: RoleChange) -> RoleView:
    options = dict(body.options) if body.options is not None else None
    return await context(request).svc.roles.set(
        cluster, by=who.name, profile=body.profile, options=options, enabled=body.enabled,
        schedule=body.schedule, tz=body.tz, start=body.start,
    )  # fmt: skip


@router.post("/clusters/{cluster}/role/update-now", response_model=RoleView, tags=["self-updating"])
async def role_update_now(request: Request, cluster: str, who: Operator) -> RoleView:
    """Ask the role's coordinator for a run now."""
    return await context(request).svc.roles.request_update(cluster, by=who.name)


@router.delete("/clusters/{cluster}/role", status_code=204, tags=["self-updating"])
async def remove_role(request: Request, cluster: str, who: Admin) -> Response:
    await context(request).svc.roles.remove(cluster, by=who.name)
    return Response(status_code=204)


@router.get("/runs", response_model=list[RunSummary], tags=["runs"])
async def list_runs(
    request: Request,
    _who: Viewer,
    cluster: str | None = None,
    active: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[RunSummary]:
    ctx = context(request)
    rows = await ops.reports(ctx, cluster or None, None, None, limit)
    out = [await ops.run_summary(ctx, rec, rep) for rec, rep in rows]
    return [r for r in out if r.state != RunState.FINISHED.value] if active else out


@router.get("/runs/{run_id}", response_model=RunReport, tags=["runs"])
async def get_run(request: Request, run_id: str, _who: Viewer) -> RunReport:
    """A run's report as of now: every node's current step, progress, results."""
    return (await ops.report(context(request), run_id))[1]


@router.post("/runs/{run_id}/stop", response_model=StopResult, tags=["runs"])
async def stop_run(request: Request, run_id: str, who: Operator, body: StopRequest) -> StopResult:
    """Stop gracefully (Stop-CauRun): the node in hand is finished or brought back, the rest canceled."""
    return await ops.stop_run(context(request), who, run_id, body.reason)


@router.get(
    "/runs/{run_id}/events",
    tags=["runs"],
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def run_events(
    request: Request,
    run_id: str,
    _who: Viewer,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    after: Annotated[int | None, Query(ge=0, le=_MAX_SEQ, description="Start after this journal seq")] = None,
) -> StreamingResponse:
    """The run's journal as Server-Sent Events (`event: journal`, `id:` the journal seq), then
    `event: end` once the run is finished or paused. Reconnect with `Last-Event-ID` to resume."""
    ctx = context(request)
    record = await ctx.svc.find_run(run_id)
    start = after or 0
    if last_event_id is not None:
        try:
            start = int(last_event_id)
            if not 0 <= start <= _MAX_SEQ:
                raise ValueError(last_event_id)
        except ValueError:
            raise ApiError(
                422,
                "invalid_input",
                "Last-Event-ID must be a journal sequence number",
                fields=[{"field": "Last-Event-ID", "message": f"an integer from 0 to {_MAX_SEQ}"}],
            ) from None
    svc = ctx.svc
    rid = record.run_id

    async def stream() -> object:
        seen = start
        idle = 0.0
        yield "retry: 2000\n\n"
        while True:
            batch = await svc.events(rid, after_seq=seen)
            for ev in batch:
                yield f"id: {ev.seq}\nevent: journal\ndata: {json.dumps(ev.flat())}\n\n"
                seen = ev.seq
            current = await svc.get_run(rid)
            if not batch and (current is None or current.state is not RunState.RUNNING):
                end = {
                    "run_id": rid,
                    "state": current.state.value if current else None,
                    "status": current.status.value if current and current.status else None,
                }
                yield f"event: end\ndata: {json.dumps(end)}\n\n"
                return
            if ctx.shutting_down or await request.is_disconnected():
                return
            idle = 0.0 if batch else idle + _POLL_SECONDS
            if idle >= _KEEPALIVE_SECONDS:
                idle = 0.0
                yield ": keepalive\n\n"
            await asyncio.sleep(_POLL_SECONDS)

    return StreamingResponse(
        stream(),  # type: ignore[arg-type]
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# --- reports ---------------------------------------------------------------------------------------


@router.get("/reports", response_model=list[RunSummary], tags=["reports"])
async def list_reports(
    request: Request,
    _who: Viewer,
    cluster: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[RunSummary]:
    """Reports of past runs (Get-CauReport), newest first, optionally in a date range (UTC)."""
    ctx = context(request)
    return [
        await ops.run_summary(ctx, rec, rep)
        for rec, rep in await ops.reports(
            ctx, cluster or None, _utc(since, "since"), _utc(until, "until"), limit
        )
    ]


@router.get("/reports/{run_id}", response_model=RunReport, tags=["reports"])
async def get_report(request: Request, run_id: str, _who: Viewer) -> RunReport:
    return (await ops.report(context(request), run_id))[1]


def export(reports: list[RunReport], fmt: ExportFormat, stem: str) -> Response:
    if fmt is ExportFormat.HTML:
        from cau.reports.render_html import render_html

        text, media = render_html(reports), "text/html; charset=utf-8"
    elif fmt is ExportFormat.CSV:
        from cau.reports.render_csv import render_csv

        text, media = render_csv(reports, detailed=True), "text/csv; charset=utf-8"
    else:
        text = json.dumps([r.model_dump(mode="json") for r in reports], indent=2)
        media = "application/json"
    return Response(
        text, media_type=media, headers={"Content-Disposition": f'attachment; filename="{stem}.{fmt.value}"'}
    )


@router.get("/reports/{run_id}/export", tags=["reports"], response_class=Response)
async def export_report(
    request: Request, run_id: str, _who: Viewer, format: ExportFormat = ExportFormat.HTML
) -> Response:
    """Export-CauReport: one run as HTML (with its timeline), CSV (per node and update) or JSON."""
    record, report = await ops.report(context(request), run_id)
    return export([report], format, f"cau-{record.cluster}-{record.run_id}")


@router.get("/export", tags=["reports"], response_class=Response)
async def export_reports(
    request: Request,
    _who: Viewer,
    cluster: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    format: ExportFormat = ExportFormat.HTML,
) -> Response:
    """Export the runs of a date range (and cluster) as one file."""
    rows = await ops.reports(
        context(request), cluster or None, _utc(since, "since"), _utc(until, "until"), 1000
    )
    return export([rep for _, rep in reversed(rows)], format, f"cau-{cluster or 'all'}-reports")


# --- profiles --------------------------------------------------------------------------------------


@router.get("/profiles", response_model=list[ProfileView], tags=["profiles"])
async def list_profiles(request: Request, who: Viewer) -> list[ProfileView]:
    ctx = context(request)
    return [ops.profile_view(ctx, p.name, who.role) for p in ctx.access.list_profiles()]


@router.post("/profiles/validate", response_model=ProfileValidation, tags=["profiles"])
async def validate_profile(request: Request, _who: Admin, body: ProfileBody) -> ProfileValidation:
    """Check options without saving: the effective profile (defaults included) or the problems.
    A step of writing a profile, so it needs what writing one needs (admin): no route takes a
    body from a role that may not act on it."""
    return ops.validate_profile(body.options)


@router.post("/profiles", response_model=ProfileView, status_code=201, tags=["profiles"])
async def create_profile(request: Request, who: Admin, body: ProfileCreate) -> ProfileView:
    ctx = context(request)
    if ctx.access.get_profile(body.name) is not None:
        raise ApiError(409, "profile_exists", f"a profile named '{body.name}' exists; PUT replaces it")
    ops.require_valid_profile(body.options)
    ctx.svc.admin.put_profile(body.name, body.description, body.options, by=who.name)
    return ops.profile_view(ctx, body.name, who.role)


@router.get("/profiles/{name}", response_model=ProfileView, tags=["profiles"])
async def get_profile(request: Request, name: str, who: Viewer) -> ProfileView:
    return ops.profile_view(context(request), name, who.role)


@router.put("/profiles/{name}", response_model=ProfileView, tags=["profiles"])
async def put_profile(
    request: Request,
    name: Annotated[str, Path(pattern=PROFILE_NAME)],
    who: Admin,
    body: ProfileBody,
) -> ProfileView:
    ctx = context(request)
    ops.require_valid_profile(body.options)
    ctx.svc.admin.put_profile(name, body.description, body.options, by=who.name)
    return ops.profile_view(ctx, name, who.role)


@router.delete("/profiles/{name}", status_code=204, tags=["profiles"])
async def delete_profile(request: Request, name: str, who: Admin) -> Response:
    ctx = context(request)
    ctx.svc.admin.delete_profile(name, by=who.name)
    return Response(status_code=204)


# --- plug-ins --------------------------------------------------------------------------------------


@router.get("/plugins", response_model=list[PluginView], tags=["plugins"])
async def list_plugins(request: Request, _who: Viewer) -> list[PluginView]:
    return context(request).svc.plugins()


# --- access: tokens, passwords, audit (admin) ----------------------------------------------------


@router.get("/tokens", response_model=list[TokenInfo], tags=["access"])
async def list_tokens(request: Request, _who: Admin) -> list[TokenInfo]:
    return context(request).svc.admin.list_tokens()


@router.post("/tokens", response_model=TokenCreated, status_code=201, tags=["access"])
async def create_token(request: Request, who: Admin, body: TokenCreate) -> TokenCreated:
    ctx = context(request)
    info, secret = ctx.svc.admin.create_token(body.name, body.role, by=who.name)
    return TokenCreated(**info.model_dump(), token=secret)


@router.delete("/tokens/{token_id}", status_code=204, tags=["access"])
async def revoke_token(request: Request, token_id: str, who: Admin) -> Response:
    ctx = context(request)
    ctx.svc.admin.revoke_token(token_id, by=who.name)
    return Response(status_code=204)


@router.get("/users", response_model=list[UserView], tags=["access"])
async def list_users(request: Request, _who: Admin) -> list[UserView]:
    return [UserView(name=n, role=r, updated=u) for n, r, u in context(request).svc.admin.list_users()]


@router.put("/users/{name}/password", response_model=UserView, tags=["access"])
async def set_password(request: Request, name: str, who: Admin, body: PasswordSet) -> UserView:
    """Set (or create a user with) a password for browser sign-in."""
    ctx = context(request)
    ctx.svc.admin.set_password(name, body.role, body.password, by=who.name)
    return next(UserView(name=n, role=r, updated=u) for n, r, u in ctx.access.list_users() if n == name)


@router.delete("/users/{name}", status_code=204, tags=["access"])
async def delete_user(request: Request, name: str, who: Admin) -> Response:
    ctx = context(request)
    ctx.svc.admin.delete_user(name, by=who.name)
    return Response(status_code=204)


@router.get("/sessions", response_model=list[SessionView], tags=["access"])
async def list_sessions(request: Request, _who: Admin) -> list[SessionView]:
    """The browser sessions in force: who, role, how and when they signed in, from where. Never
    a session's secret: each has a public handle to end it by."""
    return context(request).svc.admin.list_sessions()


@router.delete("/sessions/{handle}", status_code=204, tags=["access"])
async def end_session_of(request: Request, handle: str, who: Admin) -> Response:
    """End anyone's browser session (its next request gets 401)."""
    client = request.client.host if request.client else None
    context(request).svc.admin.end_session(handle, by=who.name, client=client)
    return Response(status_code=204)


@router.get("/audit", response_model=list[AuditView], tags=["access"])
async def audit(
    request: Request,
    _who: Admin,
    action: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[AuditView]:
    """Who started, stopped or changed what, and when (newest first)."""
    return [AuditView(**vars(e)) for e in context(request).access.audit_entries(limit=limit, action=action)]


__all__ = ["Role", "identify", "router", "sign_in"]
