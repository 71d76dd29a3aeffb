"""What cau left behind, undone: `cau node resume`, `cau cleanup`; and `cau hosts trust`."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.markup import escape

from cau.cli import common
from cau.cli.common import ClusterArg, OutputFormat, OutputOpt
from cau.cli.errors import reported

node_app = typer.Typer(help="One node of a cluster.", no_args_is_help=True)
hosts_app = typer.Typer(help="SSH host keys of a cluster's nodes.", no_args_is_help=True)


@node_app.command("resume")
def node_resume(
    ctx: typer.Context,
    cluster: ClusterArg,
    node: Annotated[str, typer.Argument(help="The node.")],
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Take a node out of the maintenance cau left it in (e.g. it came back after the reboot timeout)."""
    json_out = output is OutputFormat.JSON
    svc = common.service(ctx)
    with reported(json_out):
        done = asyncio.run(svc.resume_node(cluster, node, by=common.operator()))
    if json_out:
        common.print_json(done)
        return
    console = common.console()
    if done.run_id is not None:
        console.print(
            f"{node} is out of maintenance (recorded in run {done.run_id}); "
            f"roles failed back: {', '.join(done.roles_failed_back) or 'none'}"
        )
    for line in done.cleaned:
        console.print(f"{node}: {line}")
    for line in done.waiting:
        console.print(f"[yellow]{node}: {line}[/]")


def cleanup(ctx: typer.Context, cluster: ClusterArg, output: OutputOpt = OutputFormat.TEXT) -> None:
    """Undo everything cau left in a cluster: nodes it left in maintenance (once back), and what
    it finds of its own by looking (e.g. Pacemaker constraints `cau-*` of a lost coordinator)."""
    json_out = output is OutputFormat.JSON
    svc = common.service(ctx)
    with reported(json_out):
        done = asyncio.run(svc.cleanup(cluster, by=common.operator()))
    if json_out:
        common.print_json(done)
        return
    console = common.console()
    if not done.done and not done.waiting:
        console.print(f"nothing of cau's left in '{cluster}'")
    for line in done.done:
        console.print(line)
    for line in done.waiting:
        console.print(f"[yellow]{line}[/]")
    if done.waiting:
        raise typer.Exit(1)


@hosts_app.command("trust")
def hosts_trust(
    ctx: typer.Context,
    cluster: ClusterArg,
    nodes: Annotated[list[str] | None, typer.Argument(help="Nodes (default: all).")] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace a different key already recorded (a reinstalled node).")
    ] = False,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Record the host keys the nodes present now. Check the fingerprints out of band first."""
    json_out = output is OutputFormat.JSON
    svc = common.service(ctx)
    with reported(json_out):
        rows = asyncio.run(svc.trust_hosts(cluster, list(nodes or []), replace=replace))
    if json_out:
        common.print_json(rows)
        return
    console = common.console()
    for row in rows:
        console.print(f"{escape(row.node)}: {row.fingerprint} ({row.result})")
