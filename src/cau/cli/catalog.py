"""`cau plugins` (Get-CauPlugin) and `cau profile validate`: what is installed, what a profile means."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from cau.cli import common
from cau.cli.common import OutputFormat, OutputOpt
from cau.cli.errors import Exit, reported

profile_app = typer.Typer(help="Updating Run Profiles.", no_args_is_help=True)


def plugins(ctx: typer.Context, output: OutputOpt = OutputFormat.TEXT) -> None:
    """List the installed plug-ins and providers (and any that failed to load)."""
    views = common.service(ctx).plugins()
    if output is OutputFormat.JSON:
        common.print_json(views)
        return
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    for col in ("kind", "name", "from", "status", "description"):
        table.add_column(col, overflow="fold")
    for e in views:
        state = "[green]ok[/]" if e.ok else f"[red]failed to load: {e.error}[/]"
        table.add_row(e.kind, e.name, f"{e.distribution or '?'} {e.version or ''}", state, e.summary)
    common.console().print(table)
    if any(not e.ok for e in views):
        raise typer.Exit(Exit.ERROR)


@profile_app.command("validate")
def profile_validate(path: Path, output: OutputOpt = OutputFormat.TEXT) -> None:
    """Check a profile file; print its effective options (defaults included)."""
    from cau.domain.profile import build_profile

    json_out = output is OutputFormat.JSON
    with reported(json_out):
        prof = build_profile(path)
    if json_out:
        common.print_json({"valid": True, "profile": prof.model_dump(mode="json")})
        return
    import tomli_w

    Console(stderr=True).print(f"[green]{escape(str(path))}: valid[/]")
    sys.stdout.write(tomli_w.dumps({k: v for k, v in prof.model_dump(mode="json").items() if v is not None}))
