"""`cau sandbox show | reset`: the built-in simulated cluster."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape

from cau.cli import common
from cau.cli.common import OutputFormat, OutputOpt
from cau.cli.errors import reported
from cau.cli.render_text import when
from cau.domain.durations import format_duration

sandbox_app = typer.Typer(help="The built-in simulated cluster.", no_args_is_help=True)


@sandbox_app.command("reset")
def sandbox_reset(
    ctx: typer.Context,
    cluster: Annotated[str, typer.Argument()] = "sandbox",
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Put a sandbox cluster back to its initial state (old versions, roles at home)."""
    svc = common.service(ctx)
    with reported(output is OutputFormat.JSON):
        asyncio.run(svc.reset_sandbox(cluster))
    if output is OutputFormat.JSON:
        common.print_json({"cluster": cluster, "reset": True})
        return
    common.console().print(f"sandbox cluster '{cluster}' reset")


@sandbox_app.command("show")
def sandbox_show(
    ctx: typer.Context,
    cluster: Annotated[str, typer.Argument()] = "sandbox",
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Show a sandbox cluster: nodes, where roles run, installed updates, outages."""
    svc = common.service(ctx)
    with reported(output is OutputFormat.JSON):
        view = asyncio.run(svc.sandbox_view(cluster))
    if output is OutputFormat.JSON:
        common.print_json(view)
        return
    from rich.table import Table

    console = common.console()
    t = Table(
        show_edge=False,
        pad_edge=False,
        header_style="bold",
        title=f"sandbox cluster '{cluster}'",
        title_justify="left",
    )
    for col in ("node", "state", "maintenance", "roles", "installed", "restarts"):
        t.add_column(col, overflow="fold")
    for n in view.nodes:
        t.add_row(
            n.name,
            n.state + (" (restart pending)" if n.pending_restart else ""),
            "yes" if n.in_maintenance else "",
            ", ".join(n.roles),
            str(len(n.installed)),
            str(n.restarts),
        )
    console.print(t)
    for v in view.violations:
        console.print(f"[red]violation: {escape(v.kind)}: {escape(v.detail)}[/]")
    for o in view.outages:
        if o.ended is None:
            console.print(
                f"[yellow]{escape(o.role)} is down: {escape(o.reason)} (since {when(o.started)})[/]"
            )
    total = sum(((o.ended or datetime.now(UTC)) - o.started).total_seconds() for o in view.outages)
    console.print(
        f"[dim]{len(view.outages)} recorded outage(s), {format_duration(total)} of role downtime[/]"
    )
