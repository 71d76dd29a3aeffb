"""`cau scan` (Invoke-CauScan): what each node would install; nothing changes."""

from __future__ import annotations

import asyncio

import typer
from rich.markup import escape

from cau.cli import common
from cau.cli.common import ClusterArg, OutputFormat, OutputOpt
from cau.cli.errors import Exit, reported
from cau.cli.render_text import forecast_text
from cau.views import ClusterScan


def scan(
    ctx: typer.Context,
    cluster: ClusterArg,
    profile: common.ProfileOpt = None,
    plugin: common.PluginOpt = None,
    plugin_arg: common.PluginArgOpt = None,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Preview the updates applicable to each node (nothing is changed)."""
    json_out = output is OutputFormat.JSON
    svc = common.service(ctx)
    with reported(json_out):
        run_profile = svc.profile(cluster, profile, {"plugins": common.plugin_overrides(plugin, plugin_arg)})
        result = asyncio.run(svc.scan(cluster, run_profile))
    if json_out:
        common.print_json(result)
    else:
        _print_text(result)
    # Like a run's: 3 when some nodes could not be scanned, 4 when none could.
    failed = result.failed_nodes
    if failed:
        raise typer.Exit(Exit.FAILED if len(failed) == len(result.nodes) else Exit.PARTIALLY_FAILED)


def _print_text(result: ClusterScan) -> None:
    out = common.console()
    total = 0
    for s in result.nodes:
        restart = sum(1 for u in s.updates if u.needs_restart)
        head = f"[bold]{escape(s.node)}[/]: {len(s.updates)} update(s)"
        if restart:
            head += f", {restart} need a restart"
        if s.restart_pending:
            head += ", [yellow]restart pending[/]"
        out.print(head)
        for u in s.updates:
            flag = " [yellow](restart)[/]" if u.needs_restart else ""
            out.print(f"  {escape(f'{u.id:<36}')} {escape(u.title)}{flag}", highlight=False)
        for h in s.held:
            out.print(f"  [cyan]not installed, {escape(h.reason)}:[/] {escape(h.title)}", highlight=False)
        for name, err in s.errors.items():
            out.print(f"  [red]{escape(name)}: {escape(err)}[/]")
        total += len(s.updates)
    out.print(
        f"[dim]{total} update(s) on {len(result.nodes)} node(s); first-order only: second-order updates "
        "appear after these are installed.[/]"
    )
    if result.failed_nodes:
        out.print(f"[red]not scanned: {escape(', '.join(result.failed_nodes))}[/]")
    if result.forecast is not None:
        out.print(forecast_text(result.forecast))
