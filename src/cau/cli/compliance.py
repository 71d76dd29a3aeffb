"""Compliance (VMM's workflow) on the command line: `cau baseline ...`, `cau exemption ...`,
`cau compliance CLUSTER` and `cau remediate CLUSTER`. Everything goes through the service's
compliance (cau.compliance.service), as the API does."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape

from cau.cli import common
from cau.cli.common import ClusterArg, OutputFormat, OutputOpt
from cau.cli.errors import Exit, fail, reported
from cau.cli.run_flags import with_run_option_flags
from cau.compliance.export import compliance_csv
from cau.compliance.view import ClusterCompliance
from cau.domain.compliance import (
    AdvisoryRule,
    AllUpdatesRule,
    Baseline,
    BaselineRule,
    ComplianceStatus,
    Exemption,
    HotfixRule,
    OriginRule,
    PackageRule,
    Scope,
    ScopeKind,
)
from cau.domain.validation import describe_errors
from cau.errors import ConfigError

baseline_app = typer.Typer(help="Compliance baselines: the updates nodes must have.", no_args_is_help=True)
group_app = typer.Typer(help="Named groups of clusters (a baseline scope).", no_args_is_help=True)
exemption_app = typer.Typer(
    help="Exemptions: an update kept out of compliance and remediation.", no_args_is_help=True
)
baseline_app.add_typer(group_app, name="group")

PACKAGE_SPEC = re.compile(r"^(?:(apt|dnf):)?([^<>=\s]+)\s*>=\s*(\S+)$")

PackageOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--package", help="A package at a minimum version: 'apt:openssl>=3.0.15-1' (apt: by default)."
    ),
]
OriginOpt = Annotated[
    list[str] | None,
    typer.Option("--origin", help="Every apt update from this origin, e.g. Debian-Security."),
]
AdvisoryOpt = Annotated[
    list[str] | None, typer.Option("--advisory", help="The dnf updates of an advisory id.")
]
SecurityOpt = Annotated[
    str | None,
    typer.Option("--security", help="Every dnf security update of at least this severity (Low..Critical)."),
]
HotfixOpt = Annotated[list[str] | None, typer.Option("--hotfix", help="A hotfix id.")]
AllOpt = Annotated[
    list[str] | None, typer.Option("--all", help="Everything this plug-in finds (e.g. apt, sandbox).")
]
ClusterScopeOpt = Annotated[str | None, typer.Option("--cluster", help="Scope: a cluster.")]
NodeScopeOpt = Annotated[str | None, typer.Option("--node", help="Scope: a node, in whatever cluster.")]
GroupScopeOpt = Annotated[str | None, typer.Option("--group", help="Scope: a group of clusters.")]


class ComplianceFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    CSV = "csv"


def _rules(
    package: list[str] | None,
    origin: list[str] | None,
    advisory: list[str] | None,
    security: str | None,
    hotfix: list[str] | None,
    all_of: list[str] | None,
) -> list[BaselineRule]:
    rules: list[BaselineRule] = []
    try:
        for spec in package or []:
            m = PACKAGE_SPEC.match(spec.strip())
            if m is None:
                raise ConfigError(f"--package '{spec}': write NAME>=VERSION, e.g. apt:openssl>=3.0.15-1")
            plugin, name, version = m.groups()
            rules.append(PackageRule(plugin=plugin or "apt", name=name, min_version=version))
        rules.extend(OriginRule(origin=o) for o in origin or [])
        rules.extend(AdvisoryRule(advisory=a) for a in advisory or [])
        if security is not None:
            rules.append(AdvisoryRule(min_severity=security))
        rules.extend(HotfixRule(id=h) for h in hotfix or [])
        rules.extend(AllUpdatesRule(plugin=p) for p in all_of or [])
    except ValidationError as exc:
        raise ConfigError(f"baseline rule: {describe_errors(exc)}") from exc
    return rules


def _scope(cluster: str | None, node: str | None, group: str | None) -> Scope:
    given = [
        (k, v)
        for k, v in ((ScopeKind.CLUSTER, cluster), (ScopeKind.NODE, node), (ScopeKind.GROUP, group))
        if v
    ]
    if len(given) != 1:
        raise ConfigError("give exactly one of --cluster, --node or --group")
    kind, name = given[0]
    assert name is not None
    return Scope(kind=kind, name=name)


def _print_baseline(b: Baseline) -> None:
    out = common.console()
    out.print(
        f"[bold]{escape(b.name)}[/] (revision {b.revision})"
        + (f": {escape(b.description)}" if b.description else "")
    )
    for r in b.rules:
        out.print(f"  {escape(r.key):<36} {escape(r.describe())}", highlight=False)
    if not b.rules:
        out.print("  [dim]no rules yet: cau baseline add[/]")
    where = ", ".join(str(s) for s in b.scopes) or "nowhere (cau baseline assign)"
    out.print(
        f"  [dim]assigned to: {escape(where)}; "
        f"changed {b.updated:%Y-%m-%d %H:%M} UTC by {escape(b.updated_by)}[/]"
    )


def _show(b: Baseline, output: OutputFormat) -> None:
    if output is OutputFormat.JSON:
        common.print_json(b)
    else:
        _print_baseline(b)


@baseline_app.command("create")
def baseline_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The baseline's name.")],
    description: Annotated[str, typer.Option("--description", help="What it is for.")] = "",
    package: PackageOpt = None,
    origin: OriginOpt = None,
    advisory: AdvisoryOpt = None,
    security: SecurityOpt = None,
    hotfix: HotfixOpt = None,
    all_of: AllOpt = None,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Create a baseline (with its first rules)."""
    svc = common.service(ctx)
    with reported(output is OutputFormat.JSON):
        rules = _rules(package, origin, advisory, security, hotfix, all_of)
        b = asyncio.run(
            svc.compliance.create_baseline(name, description=description, rules=rules, by=common.operator())
        )
    _show(b, output)


@baseline_app.command("add")
def baseline_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The baseline.")],
    package: PackageOpt = None,
    origin: OriginOpt = None,
    advisory: AdvisoryOpt = None,
    security: SecurityOpt = None,
    hotfix: HotfixOpt = None,
    all_of: AllOpt = None,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Add rules (a package's new minimum replaces its old one). Its nodes are Unknown until scanned."""
    svc = common.service(ctx)
    with reported(output is OutputFormat.JSON):
        rules = _rules(package, origin, advisory, security, hotfix, all_of)
        if not rules:
            raise ConfigError(
                "nothing to add: give --package, --origin, --advisory, --security, --hotfix or --all"
            )
        b = asyncio.run(svc.compliance.add_rules(name, rules, by=common.operator()))
    _show(b, output)


@baseline_app.command("remove")
def baseline_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The baseline.")],
    rules: Annotated[list[str], typer.Argument(help="Rule keys, as `cau baseline show` lists them.")],
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Remove rules from a baseline."""
    svc = common.service(ctx)
    with reported(output is OutputFormat.JSON):
        b = asyncio.run(svc.compliance.remove_rules(name, rules, by=common.operator()))
    _show(b, output)


@baseline_app.command("show")
def baseline_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The baseline.")],
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """A baseline's rules and where it is assigned."""
    svc = common.service(ctx)
    with reported(output is OutputFormat.JSON):
        b = asyncio.run(svc.compliance.baseline(name))
    _show(b, output)


@baseline_app.command("list")
def baseline_list(ctx: typer.Context, output: OutputOpt = OutputFormat.TEXT) -> None:
    """Every baseline."""
    svc = common.service(ctx)
    with reported(output is OutputFormat.JSON):
        found = asyncio.run(svc.compliance.baselines())
    if output is OutputFormat.JSON:
        common.print_json([b.model_dump(mode="json") for b in found])
        return
    if not found:
        common.console().print("no baselines: cau baseline create NAME --package 'openssl>=3.0.15-1'")
    for b in found:
        _print_baseline(b)


@baseline_app.command("assign")
def baseline_assign(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The baseline.")],
    cluster: ClusterScopeOpt = None,
    node: NodeScopeOpt = None,
    group: GroupScopeOpt = None,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Assign to a cluster, a node or a group of clusters (a node gets its cluster's and groups')."""
    svc = common.service(ctx)
    with reported(output is OutputFormat.JSON):
        b = asyncio.run(svc.compliance.assign(name, _scope(cluster, node, group), by=common.operator()))
    _show(b, output)


@baseline_app.command("unassign")
def baseline_unassign(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The baseline.")],
    cluster: ClusterScopeOpt = None,
    node: NodeScopeOpt = None,
    group: GroupScopeOpt = None,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Take an assignment back."""
    svc = common.service(ctx)
    with reported(output is OutputFormat.JSON):
        b = asyncio.run(svc.compliance.unassign(name, _scope(cluster, node, group), by=common.operator()))
    _show(b, output)


@baseline_app.command("delete")
def baseline_delete(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The baseline.")]) -> None:
    """Delete a baseline (its assignments go with it)."""
    svc = common.service(ctx)
    with reported(False):
        asyncio.run(svc.compliance.delete_baseline(name, by=common.operator()))
    common.console().print(f"baseline {escape(name)} deleted")


@group_app.command("set")
def group_set(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The group.")],
    clusters: Annotated[list[str], typer.Argument(help="Its clusters (replacing those it had).")],
) -> None:
    """Create or replace a group of clusters."""
    svc = common.service(ctx)
    with reported(False):
        g = asyncio.run(svc.compliance.set_group(name, clusters, by=common.operator()))
    common.console().print(f"group {escape(g.name)}: {escape(', '.join(g.clusters))}")


@group_app.command("list")
def group_list(ctx: typer.Context, output: OutputOpt = OutputFormat.TEXT) -> None:
    """Every group of clusters."""
    svc = common.service(ctx)
    with reported(output is OutputFormat.JSON):
        found = asyncio.run(svc.compliance.groups())
    if output is OutputFormat.JSON:
        common.print_json([g.model_dump(mode="json") for g in found])
        return
    for g in found:
        common.console().print(f"{escape(g.name)}: {escape(', '.join(g.clusters))}")


@group_app.command("delete")
def group_delete(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The group.")]) -> None:
    """Delete a group (refused while a baseline is assigned to it)."""
    svc = common.service(ctx)
    with reported(False):
        asyncio.run(svc.compliance.delete_group(name, by=common.operator()))
    common.console().print(f"group {escape(name)} deleted")


# --- exemptions --------------------------------------------------------------------------------------


def _print_exemption(e: Exemption, now: datetime) -> None:
    state = "" if e.active(now) else " [yellow](expired)[/]"
    until = f" until {e.until:%Y-%m-%d %H:%M} UTC" if e.until else ""
    base = f" in baseline {e.baseline}" if e.baseline else ""
    common.console().print(
        f"{e.id}  {escape(e.update)} on {escape(str(e.scope))}{escape(base)}{until}{state}: "
        f"{escape(e.reason)} [dim]({escape(e.by)}, {e.created:%Y-%m-%d %H:%M} UTC)[/]"
    )


@exemption_app.command("add")
def exemption_add(
    ctx: typer.Context,
    update: Annotated[str, typer.Argument(help="The update key (apt:openssl), or a rule's key.")],
    reason: Annotated[str, typer.Option("--reason", help="Why: kept with who and when.")],
    cluster: ClusterScopeOpt = None,
    node: NodeScopeOpt = None,
    group: GroupScopeOpt = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="Only in this baseline.")] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Expiry, ISO 8601 (UTC unless it says).")
    ] = None,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Exempt an update on a node, a cluster or a group: Exempt, and never installed by remediation."""
    svc = common.service(ctx)
    with reported(output is OutputFormat.JSON):
        expiry = _when(until)
        e = asyncio.run(
            svc.compliance.exempt(
                update,
                _scope(cluster, node, group),
                reason=reason,
                by=common.operator(),
                baseline=baseline,
                until=expiry,
            )
        )
    if output is OutputFormat.JSON:
        common.print_json(e)
    else:
        _print_exemption(e, svc.clock.now())


def _when(text: str | None) -> datetime | None:
    if text is None:
        return None
    from datetime import UTC

    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--until '{text}' is not an ISO 8601 time, e.g. 2027-01-31T00:00") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@exemption_app.command("list")
def exemption_list(ctx: typer.Context, output: OutputOpt = OutputFormat.TEXT) -> None:
    """Every exemption, expired ones too."""
    svc = common.service(ctx)
    with reported(output is OutputFormat.JSON):
        found = asyncio.run(svc.compliance.exemptions())
    if output is OutputFormat.JSON:
        common.print_json([e.model_dump(mode="json") for e in found])
        return
    for e in found:
        _print_exemption(e, svc.clock.now())


@exemption_app.command("remove")
def exemption_remove(
    ctx: typer.Context, exemption: Annotated[str, typer.Argument(help="The exemption's id.")]
) -> None:
    """Remove an exemption: its update is Unknown until the next scan."""
    svc = common.service(ctx)
    with reported(False):
        e = asyncio.run(svc.compliance.remove_exemption(exemption, by=common.operator()))
    common.console().print(f"exemption {e.id} of {escape(e.update)} on {escape(str(e.scope))} removed")


# --- compliance and remediation ------------------------------------------------------------------------

STATUS_STYLE = {
    ComplianceStatus.COMPLIANT: "green",
    ComplianceStatus.EXEMPT: "cyan",
    ComplianceStatus.PENDING_REBOOT: "yellow",
    ComplianceStatus.UNKNOWN: "dim",
    ComplianceStatus.ERROR: "red",
    ComplianceStatus.NON_COMPLIANT: "red",
}


def _age(view: ClusterCompliance) -> str:
    if view.oldest_scan is None:
        return "never scanned: cau compliance CLUSTER --scan"
    seconds = (view.at - view.oldest_scan).total_seconds()
    if seconds < 120:
        age = f"{seconds:.0f} s"
    elif seconds < 7200:
        age = f"{seconds / 60:.0f} min"
    elif seconds < 172800:
        age = f"{seconds / 3600:.1f} h"
    else:
        age = f"{seconds / 86400:.0f} days"
    return f"oldest scan {view.oldest_scan:%Y-%m-%d %H:%M:%S} UTC ({age} ago)"


def print_compliance(view: ClusterCompliance) -> None:
    out = common.console()
    style = STATUS_STYLE[view.status]
    out.print(f"[bold]{escape(view.cluster)}[/]: [{style}]{view.status.value}[/] [dim]({_age(view)})[/]")
    if not view.baselines:
        out.print("[dim]no baseline applies: cau baseline assign NAME --cluster CLUSTER[/]")
    for n in view.nodes:
        st = STATUS_STYLE[n.status]
        extra = f" [red]{escape(n.error)}[/]" if n.error else ""
        out.print(f"  [bold]{escape(n.node)}[/]: [{st}]{n.status.value}[/]{extra}")
        for b in n.baselines:
            out.print(f"    {escape(b.baseline)}: [{STATUS_STYLE[b.status]}]{b.status.value}[/]")
            for u in b.updates:
                if u.status is ComplianceStatus.COMPLIANT:
                    continue
                versions = ""
                if u.installed or u.available:
                    versions = f" ({u.installed or 'absent'} -> {u.available or 'none offered'})"
                note = (
                    f" [dim]{escape(u.exemption_note or u.detail)}[/]"
                    if (u.exemption_note or u.detail)
                    else ""
                )
                out.print(
                    f"      [{STATUS_STYLE[u.status]}]{u.status.value:<13}[/] "
                    f"{escape(u.update)}{escape(versions)}{note}",
                    highlight=False,
                )
    if view.remediable:
        out.print(f"[dim]Remediate: cau remediate {escape(view.cluster)}[/]")


EXIT_BY_STATUS = {
    ComplianceStatus.COMPLIANT: 0,
    ComplianceStatus.EXEMPT: 0,
    ComplianceStatus.PENDING_REBOOT: 0,
}


def compliance(
    ctx: typer.Context,
    cluster: ClusterArg,
    scan: Annotated[bool, typer.Option("--scan", help="Scan the nodes first (else: the last scan).")] = False,
    profile: common.ProfileOpt = None,
    output: Annotated[
        ComplianceFormat, typer.Option("--output", help="text, json, or csv.")
    ] = ComplianceFormat.TEXT,
) -> None:
    """Each node's compliance with its baselines (VMM's Compliance view), from the last scan."""
    svc = common.service(ctx)
    json_out = output is not ComplianceFormat.TEXT
    with reported(json_out):
        if scan:
            view = asyncio.run(svc.compliance.scan(cluster, svc.profile(cluster, profile)))
        else:
            view = asyncio.run(svc.compliance.view(cluster))
    if output is ComplianceFormat.JSON:
        common.print_json(view)
    elif output is ComplianceFormat.CSV:
        typer.echo(compliance_csv(view), nl=False)
    else:
        print_compliance(view)
    # 0 compliant (or only waiting for a restart), 3 when something is NonCompliant, Unknown or Error
    raise typer.Exit(EXIT_BY_STATUS.get(view.status, Exit.PARTIALLY_FAILED))


@with_run_option_flags
def remediate(
    ctx: typer.Context,
    cluster: ClusterArg,
    baseline: Annotated[
        list[str] | None, typer.Option("--baseline", help="Only these baselines (repeat; default all).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="Leave this update key out (repeat).")
    ] = None,
    scan: Annotated[bool, typer.Option("--scan", help="Scan the nodes first (else: the last scan).")] = False,
    nodes: Annotated[
        str | None,
        typer.Option(
            "--nodes",
            help="Remediate these hosts as standalone hosts (n1,n2): no maintenance, roles not moved.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="With --nodes: also hosts that run roles (they go down).")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan; change nothing.")] = False,
    profile: common.ProfileOpt = None,
    speed: Annotated[
        float | None, typer.Option(help="Sandbox clusters only: simulation speed factor.")
    ] = None,
    output: OutputOpt = OutputFormat.TEXT,
    *,
    options: dict[str, Any],
) -> None:
    """Remediate a cluster (VMM): an Updating Run of its NonCompliant updates only, node by node,
    compliant nodes bypassed; every run option applies (--no-restart leaves nodes PendingReboot)."""
    from cau.cli.runs import finish_run, run_with_signals

    json_out = output is OutputFormat.JSON
    svc = common.service(ctx)
    console = common.console(stderr=json_out)
    with reported(json_out):
        base = svc.profile(cluster, profile, dict(options))
        if scan:
            view = asyncio.run(svc.compliance.scan(cluster, svc.profile(cluster, None)))
        else:
            view = asyncio.run(svc.compliance.view(cluster))
        chosen = [n.strip() for n in nodes.split(",") if n.strip()] if nodes is not None else None
        plan = svc.compliance.plan(view, baselines=baseline, exclude=exclude or (), nodes=chosen)
        for node, keys in plan.nodes.items():
            console.print(f"{escape(node)}: {escape(', '.join(keys))}", highlight=False)
        for node, why in plan.bypassed.items():
            console.print(f"[dim]{escape(node)}: bypassed, {escape(why)}[/]", highlight=False)
        for node, keys in plan.not_installable.items():
            console.print(
                f"[yellow]{escape(node)}: no source offers {escape(', '.join(keys))}[/]", highlight=False
            )
        run_profile, warnings = asyncio.run(
            svc.compliance.remediation_profile(cluster, base, plan, standalone=chosen, force=force)
        )
        for line in warnings:
            console.print(f"[yellow]warning: {escape(line)}[/]", highlight=False)
        if dry_run:
            if json_out:
                common.print_json(plan)
            return
        if speed is not None and svc.config.cluster(cluster).provider != "sandbox":
            raise ConfigError("--speed only applies to sandbox clusters")
        overrides = {"speed": speed} if speed is not None else None
        outcome = run_with_signals(svc, cluster, run_profile, console, json_out, False, overrides, True)
    if outcome is None:
        raise typer.Exit(Exit.INTERRUPTED)
    finish_run(outcome, cluster, console, json_out)


__all__ = ["baseline_app", "compliance", "compliance_csv", "exemption_app", "fail", "remediate"]
