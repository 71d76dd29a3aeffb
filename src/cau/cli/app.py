"""The `cau` command line: the app, its global options, and where each command lives. Its
commands mirror CAU's cmdlets:

cau run      Invoke-CauRun      cau status   Get-CauRun       cau report   Get-/Export-CauReport
cau scan     Invoke-CauScan     cau stop     Stop-CauRun      cau plugins  Get-CauPlugin
cau debug-trace  Save-CauDebugTrace
cau check    Test-CauSetup

One module per command group (cau.cli.runs, scan, check, reports, catalog, nodes, sandbox, access,
serve); each only calls the service layer (cau.service) and renders its views.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cau import __version__
from cau.cli import (
    access,
    catalog,
    check,
    compliance,
    debugtrace,
    nodes,
    reports,
    role,
    runs,
    sandbox,
    scan,
    serve,
)
from cau.cli.common import State
from cau.config import default_data_dir

app = typer.Typer(
    name="cau",
    help="Cluster-Aware Updating for Linux clusters: patch every node while the cluster keeps serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command()(runs.run)
app.command()(scan.scan)
app.command()(check.check)
app.command()(runs.status)
app.command()(runs.stop)
app.command()(reports.report)
app.command()(catalog.plugins)
app.command("cleanup")(nodes.cleanup)
app.command("serve")(serve.serve)
app.command("daemon")(role.daemon)
app.command("compliance")(compliance.compliance)
app.command("remediate")(compliance.remediate)
app.command("debug-trace")(debugtrace.debug_trace)
app.add_typer(role.role_app, name="role")
app.add_typer(compliance.baseline_app, name="baseline")
app.add_typer(compliance.exemption_app, name="exemption")
app.add_typer(sandbox.sandbox_app, name="sandbox")
app.add_typer(catalog.profile_app, name="profile")
app.add_typer(nodes.node_app, name="node")
app.add_typer(nodes.hosts_app, name="hosts")
app.add_typer(access.token_app, name="token")
app.add_typer(access.user_app, name="user")
app.add_typer(access.session_app, name="session")


def _add_command_groups() -> None:
    """Command groups other distributions add under `cau` (entry point group `cau.commands`,
    name -> a Typer app): e.g. `cau lab` from cau-lab. One that fails to load is left out with a
    warning; cau itself still works."""
    from importlib import metadata

    for ep in metadata.entry_points(group="cau.commands"):
        try:
            sub = ep.load()
        except Exception as exc:  # a broken add-on must not break cau
            print(f"cau: the '{ep.name}' commands ({ep.value}) did not load: {exc}", file=sys.stderr)
            continue
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=ep.name)


_add_command_groups()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cau {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", envvar="CAU_HOME", help="Where runs, journals and reports are kept."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", envvar="CAU_CONFIG", help="The clusters config file (TOML).")
    ] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    ctx.obj = State(data_dir or default_data_dir(), config)


def main() -> None:
    app()
