"""The dashboard's pages: server-rendered from the same views as the API (`cau.web.ops`); their
actions are calls to the API from `static/app.js`, with the session cookie and the CSRF token."""

from __future__ import annotations

import hmac
import json
import secrets
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from cau.domain.access import Role
from cau.errors import CauError, ConfigError, NotFound
from cau.reports.render_html import (
    STEP_KINDS,
    Badge,
    _dur,
    _node_counts,
    build_timeline,
    format_clock,
    format_utc,
    node_badge,
    render_html_fragment,
    report_stylesheet,
    status_badge,
)
from cau.store.access import Principal
from cau.views import RoleView
from cau.web import ops
from cau.web.auth import CSRF_FIELD, SESSION_COOKIE, _check_csrf, context, identify
from cau.web.errors import ApiError, from_cau_error
from cau.web.models import SignIn
from cau.web.signin import sign_in
from cau.web.swagger import SWAGGER_UI_CSS, SWAGGER_UI_JS

router = APIRouter(include_in_schema=False)


def run_badge(item: Any) -> Badge:
    """For a report or a run summary: how it ended, or that it is going."""
    if item.status is not None:
        return status_badge(item.status)
    if item.state == "Paused":
        return Badge("Paused", "prog")
    if getattr(item, "interrupted", False):
        return Badge("Interrupted: Apply resumes it", "warn")
    return Badge("In progress", "prog")


def badge(b: Badge) -> Markup:
    return Markup('<span class="badge {}">{}</span>').format(b.css, b.label)


def state_badge(state: str) -> Badge:
    return Badge(state, {"up": "ok", "down": "bad"}.get(state, "muted"))


def json_text(value: Any, indent: int | None = None) -> str:
    """A value as JSON for people to read (and autoescaped like any text): Jinja's `tojson` is for
    scripts, and writes a quote as \\u0027 and a non-ASCII letter as \\u00e9."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


@lru_cache(maxsize=1)
def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("cau.web", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dur"] = _dur
    env.filters["utc"] = format_utc
    env.filters["clock"] = format_clock
    env.filters["ts"] = lambda value: format_utc(value).removesuffix(" UTC")  # under a "(UTC)" heading
    env.filters["json_text"] = json_text
    env.globals.update(
        badge=badge,
        run_badge=run_badge,
        node_badge=node_badge,
        status_badge=status_badge,
        state_badge=state_badge,
        step_kinds=STEP_KINDS,
    )
    return env


def render(name: str, who: Principal | None, http_status: int = 200, **data: Any) -> HTMLResponse:
    html = _env().get_template(name).render(who=who, **data)
    return HTMLResponse(html, status_code=http_status, headers={"Cache-Control": "no-store"})


class _SignInNeeded(Exception):
    def __init__(self, target: str) -> None:
        self.target = target


def _who(request: Request, role: Role = Role.VIEWER) -> Principal:
    try:
        who = identify(request)
    except ApiError:
        who = None
    if who is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise _SignInNeeded(target)
    if not who.role.allows(role):
        raise ApiError(
            403, "forbidden", f"this page needs the {role.value} role; {who.name} is {who.role.value}"
        )
    return who


def page_error(request: Request, exc: Exception) -> Response:
    """Pages answer errors with a page (the API answers JSON)."""
    if isinstance(exc, _SignInNeeded):
        return RedirectResponse("/login?" + urlencode({"next": exc.target}), status_code=303)
    error = from_cau_error(exc) if isinstance(exc, CauError) else exc
    assert isinstance(error, ApiError)
    try:
        who = identify(request)
    except ApiError:
        who = None
    titles = {403: "Not allowed", 404: "Not found"}
    return render(
        "error.html.j2",
        who,
        error.status,
        status=error.status,
        title=titles.get(error.status, "Error"),
        message=error.message,
    )


# --- sign-in -----------------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    # Only a path on this site: never an absolute URL (an open redirect) nor a scheme-relative one.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/clusters"
    return target


LOGIN_CSRF_COOKIE = "cau_login_csrf"


def _login_form(request: Request, target: str, error: str | None, http_status: int = 200) -> Response:
    """The sign-in page, with a fresh CSRF token both in the form and in a SameSite=Strict cookie:
    a form posted from another site comes without the cookie and is refused (no login CSRF)."""
    token = secrets.token_urlsafe(24)
    response = render("login.html.j2", None, http_status, next=target, error=error, login_csrf=token)
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=context(request).settings.secure_cookies or request.url.scheme == "https",
        path="/login",
    )
    return response


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    return _login_form(request, _safe_next(next), None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    field = {k: v for k, v in form.items() if isinstance(v, str)}
    target = _safe_next(field.get("next"))
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    sent = field.get(CSRF_FIELD)
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        return _login_form(request, target, "The sign-in form expired; please sign in again.", 403)
    body = SignIn(
        token=field.get("token") or None,
        name=field.get("name") or None,
        password=field.get("password") or None,
    )
    response = RedirectResponse(target, status_code=303)
    try:
        sign_in(request, response, body)
    except ApiError as exc:
        page = _login_form(request, target, exc.message, exc.status)
        page.headers.update(exc.headers)  # a throttled sign-in's Retry-After
        return page
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    who = _who(request)
    await _check_csrf(request, who)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        context(request).access.end_session(cookie)
        context(request).access.audit(who.name, "signout", "dashboard", {})
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- pages -------------------------------------------------------------------------------------------


@router.get("/")
async def home(request: Request) -> Response:
    _who(request)
    return RedirectResponse("/clusters", status_code=303)


@router.get("/clusters")
async def clusters_page(request: Request) -> Response:
    who = _who(request)
    return render("clusters.html.j2", who, section="clusters", clusters=await ops.clusters(context(request)))


@router.get("/clusters/{cluster}")
async def cluster_page(request: Request, cluster: str) -> Response:
    who = _who(request)
    ctx = context(request)
    detail = await ops.cluster_detail(ctx, cluster)
    try:
        role: RoleView | None = await ctx.svc.roles.show(cluster, check=False)
        can_host = True
    except NotFound:
        role, can_host = None, True
    except ConfigError:  # the provider cannot host a clustered role: remote-updating only
        role, can_host = None, False
    from cau.web.compliance_pages import age, cluster_summary, compliance_badge  # it builds on this module

    compliance = await cluster_summary(request, cluster)
    return render(
        "cluster.html.j2",
        who,
        section="clusters",
        c=detail,
        role=role,
        can_host_role=can_host,
        profiles=ctx.access.list_profiles(),
        can_operate=who.role.allows(Role.OPERATOR),
        is_admin=who.role.allows(Role.ADMIN),
        compliance=compliance,
        compliance_age=age(compliance) if compliance is not None else "",
        cbadge=compliance_badge,
    )


async def _panel_data(request: Request, run_id: str) -> dict[str, Any]:
    _record, report = await ops.report(context(request), run_id)
    return {"r": report, "t": build_timeline(report), "counts": _node_counts(report)}


@router.get("/runs/{run_id}")
async def run_page(request: Request, run_id: str) -> Response:
    who = _who(request)
    data = await _panel_data(request, run_id)
    live = data["r"].state == "Running"
    return render(
        "run.html.j2", who, section="jobs", live=live, can_operate=who.role.allows(Role.OPERATOR), **data
    )


@router.get("/runs/{run_id}/panel")
async def run_panel(request: Request, run_id: str) -> Response:
    """The live view's nodes table and timeline, refreshed by the page as journal events arrive."""
    who = _who(request)
    return render("_panel_page.html.j2", who, **(await _panel_data(request, run_id)))


@router.get("/jobs")
async def jobs_page(request: Request) -> Response:
    who = _who(request)
    active, recent = await ops.jobs(context(request))
    return render("jobs.html.j2", who, section="jobs", active=active, recent=recent)


def _date(text: str | None, field: str, *, end: bool = False) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(422, "invalid_input", f"{field}: expected a date like 2026-11-01") from None
    if end and len(text) == 10:  # a day given as "until" means the whole day
        value = value.replace(hour=23, minute=59, second=59)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@router.get("/reports")
async def reports_page(
    request: Request, cluster: str | None = None, since: str | None = None, until: str | None = None
) -> Response:
    who = _who(request)
    ctx = context(request)
    cluster = cluster or None
    rows = await ops.reports(ctx, cluster, _date(since, "since"), _date(until, "until", end=True), 200)
    query = urlencode({k: v for k, v in {"cluster": cluster, "since": since, "until": until}.items() if v})
    return render(
        "reports.html.j2",
        who,
        section="reports",
        rows=[await ops.run_summary(ctx, rec, rep) for rec, rep in rows],
        cluster_names=ctx.svc.config.names(),
        cluster=cluster,
        since=since,
        until=until,
        query=query,
    )


@router.get("/reports/{run_id}")
async def report_page(request: Request, run_id: str) -> Response:
    """The detailed report, part of the page (the export's sections, escaped the same way)."""
    who = _who(request)
    _record, report = await ops.report(context(request), run_id)
    return render("report.html.j2", who, section="reports", r=report, detail=render_html_fragment(report))


@router.get("/static/report.css")
async def report_css() -> Response:
    """The report's stylesheet lives with the report renderer (an export inlines it)."""
    return Response(report_stylesheet(), media_type="text/css")


@router.get("/profiles")
async def profiles_page(request: Request) -> Response:
    who = _who(request)
    ctx = context(request)
    profiles = ctx.access.list_profiles()
    return render(
        "profiles.html.j2", who, section="profiles", profiles=profiles, is_admin=who.role.allows(Role.ADMIN)
    )


@router.get("/profiles/new")
async def profile_new(request: Request) -> Response:
    who = _who(request, Role.ADMIN)
    return render("profile.html.j2", who, section="profiles", p=None, is_admin=True)


@router.get("/profiles/{name}")
async def profile_page(request: Request, name: str, saved: int = 0) -> Response:
    who = _who(request)
    view = ops.profile_view(context(request), name, who.role)
    return render(
        "profile.html.j2",
        who,
        section="profiles",
        p=view,
        is_admin=who.role.allows(Role.ADMIN),
        flash="Saved." if saved else None,
    )


@router.get("/api/docs")
async def api_docs(request: Request) -> Response:
    """The OpenAPI explorer: for those signed in, like the document it reads."""
    who = _who(request)
    return render(
        "api_docs.html.j2",
        who,
        openapi_url=request.app.openapi_url,
        swagger_js=SWAGGER_UI_JS,
        swagger_css=SWAGGER_UI_CSS,
    )


@router.get("/favicon.ico")
async def favicon() -> Response:
    """Pages link /static/favicon.svg; browsers and tools that ask for /favicon.ico find it too."""
    return RedirectResponse("/static/favicon.svg", status_code=308)


@router.get("/admin")
async def admin_page(request: Request) -> Response:
    who = _who(request, Role.ADMIN)
    access = context(request).access
    return render(
        "admin.html.j2",
        who,
        section="admin",
        tokens=access.list_tokens(),
        users=access.list_users(),
        sessions=access.list_sessions(),
        audit=access.audit_entries(limit=200),
    )


__all__ = ["_SignInNeeded", "page_error", "router"]
