"""`cau check` (Test-CauSetup): the readiness rules, each pass / warning / fail / not-applicable
with its impact and fix; nothing changes. Exit code: 0 when every rule passes (or does not
apply), 3 when some only warn, 4 when one fails (a run would be refused)."""

from __future__ import annotations

import asyncio

import typer
from rich.markup import escape

from cau.cli import common
from cau.cli.common import ClusterArg, OutputFormat, OutputOpt
from cau.cli.errors import Exit, reported
from cau.readiness import Outcome, ReadinessReport

_STYLE = {
    Outcome.PASS: ("green", "pass"),
    Outcome.WARNING: ("yellow", "WARN"),
    Outcome.FAIL: ("red", "FAIL"),
    Outcome.NOT_APPLICABLE: ("dim", "n/a "),
}


def check(
    ctx: typer.Context,
    cluster: ClusterArg,
    profile: common.ProfileOpt = None,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Check the cluster's readiness for an Updating Run (nothing is changed).

    Exit code 0: ready; 3: warnings only; 4: a rule fails (a run would be refused)."""
    json_out = output is OutputFormat.JSON
    svc = common.service(ctx)
    with reported(json_out):
        report = asyncio.run(svc.check(cluster, profile_file=profile))
    if json_out:
        common.print_json(report)
    else:
        _print_text(report)
    raise typer.Exit(exit_code(report))


def exit_code(report: ReadinessReport) -> int:
    if report.failures:
        return Exit.FAILED
    if report.warnings:
        return Exit.PARTIALLY_FAILED
    return Exit.OK


def _print_text(report: ReadinessReport) -> None:
    out = common.console()
    out.print(f"[bold]Readiness of {escape(report.cluster)}[/] ({report.checked_at:%Y-%m-%d %H:%M:%S} UTC)")
    for r in report.results:
        style, label = _STYLE[r.outcome]
        where = f" [{', '.join(r.nodes)}]" if r.nodes and r.outcome is not Outcome.PASS else ""
        out.print(f"[{style}]{label}[/] {escape(f'{r.rule}{where}: {r.detail or r.title}')}")
        if r.outcome in (Outcome.WARNING, Outcome.FAIL):
            if r.impact:
                out.print(f"     [dim]impact:[/] {escape(r.impact)}")
            if r.fix:
                out.print(f"     [dim]fix:[/] {escape(r.fix)}")
    fails, warns = len(report.failures), len(report.warnings)
    if fails:
        out.print(f"[red]{fails} failure(s), {warns} warning(s): a run would be refused[/]")
    elif warns:
        out.print(f"[yellow]{warns} warning(s): a run would start and record them[/]")
    else:
        out.print("[green]ready: every rule passes[/]")
