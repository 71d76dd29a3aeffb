"""The dashboard's compliance pages (VMM's Compliance view): every cluster's status at a glance,
one cluster's nodes → baselines → updates with Scan now and the Remediate dialog, and the
baselines and exemptions admins keep. Server-rendered from the service's views; every action is a
call to the API (cau.web.compliance_api) from static/app.js, as on the other pages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from markupsafe import Markup

from cau.compliance.view import ClusterCompliance
from cau.domain.access import Role
from cau.domain.compliance import ComplianceStatus, ScopeKind
from cau.errors import CauError
from cau.web import ops
from cau.web.auth import context
from cau.web.pages import _who, render

router = APIRouter(include_in_schema=False)

_CSS = {
    ComplianceStatus.COMPLIANT: "ok",
    ComplianceStatus.EXEMPT: "muted",
    ComplianceStatus.PENDING_REBOOT: "warn",
    ComplianceStatus.UNKNOWN: "muted",
    ComplianceStatus.ERROR: "bad",
    ComplianceStatus.NON_COMPLIANT: "bad",
}


def compliance_badge(status: ComplianceStatus) -> Markup:
    return Markup('<span class="badge {}" data-compliance="{}">{}</span>').format(
        _CSS[status], status.value, status.value
    )


def age(view: ClusterCompliance) -> str:
    """How old the oldest of the nodes' last scans is, for people."""
    if view.oldest_scan is None:
        return "never scanned"
    return f"{_seconds((view.at - view.oldest_scan).total_seconds())} ago"


def _seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


@dataclass
class Offered:
    """One NonCompliant update the Remediate dialog offers (ticked at first), where it is missing."""

    key: str
    title: str
    baselines: set[str] = field(default_factory=set)
    nodes: list[str] = field(default_factory=list)


def offered(view: ClusterCompliance) -> list[Offered]:
    out: dict[str, Offered] = {}
    for n in view.nodes:
        for b in n.baselines:
            for u in b.updates:
                if u.status is not ComplianceStatus.NON_COMPLIANT:
                    continue
                o = out.setdefault(u.update, Offered(u.update, u.title))
                o.baselines.add(b.baseline)
                if n.node not in o.nodes:
                    o.nodes.append(n.node)
    return sorted(out.values(), key=lambda o: o.key)


def _common(who: Any) -> dict[str, Any]:
    return {
        "section": "compliance",
        "cbadge": compliance_badge,
        "can_operate": who.role.allows(Role.OPERATOR),
        "is_admin": who.role.allows(Role.ADMIN),
    }


@router.get("/compliance")
async def compliance_page(request: Request) -> Response:
    who = _who(request)
    svc = context(request).svc
    views = [await svc.compliance.view(name) for name in svc.config.names()]
    return render("compliance.html.j2", who, views=views, age=age, **_common(who))


@router.get("/compliance/{cluster}")
async def cluster_compliance_page(request: Request, cluster: str) -> Response:
    who = _who(request)
    ctx = context(request)
    view = await ctx.svc.compliance.view(cluster)
    detail = await ops.cluster_detail(ctx, cluster)  # each node's roles, for standalone remediation
    return render(
        "compliance_cluster.html.j2",
        who,
        v=view,
        age=age(view),
        offered=offered(view),
        roles={n.name: n.roles for n in detail.nodes},
        active_run=detail.active_run,
        profiles=ctx.access.list_profiles(),
        **_common(who),
    )


@router.get("/baselines")
async def baselines_page(request: Request) -> Response:
    who = _who(request)
    svc = context(request).svc
    return render(
        "baselines.html.j2",
        who,
        baselines=await svc.compliance.baselines(),
        groups=await svc.compliance.groups(),
        cluster_names=svc.config.names(),
        scope_kinds=[k.value for k in ScopeKind],
        **_common(who),
    )


@router.get("/exemptions")
async def exemptions_page(
    request: Request,
    update: str | None = None,
    node: str | None = None,
    cluster: str | None = None,
    baseline: str | None = None,
) -> Response:
    """The exemptions; an admin's form to add one is filled from the query (the Compliance
    view's "Exempt…" link names the update, the node and the baseline)."""
    who = _who(request)
    svc = context(request).svc
    now: datetime = svc.clock.now()
    prefill = {
        "update": update or "",
        "kind": "node" if node else "cluster" if cluster else "node",
        "name": node or cluster or "",
        "baseline": baseline or "",
    }
    return render(
        "exemptions.html.j2",
        who,
        exemptions=await svc.compliance.exemptions(),
        baselines=[b.name for b in await svc.compliance.baselines()],
        now=now,
        prefill=prefill,
        scope_kinds=[k.value for k in ScopeKind],
        **_common(who),
    )


async def cluster_summary(request: Request, cluster: str) -> ClusterCompliance | None:
    """For the cluster page: its compliance at a glance (None when it cannot be told)."""
    try:
        return await context(request).svc.compliance.view(cluster)
    except CauError:
        return None


__all__ = ["age", "cluster_summary", "compliance_badge", "router"]
