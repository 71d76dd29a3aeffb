"""`cau debug-trace` (Save-CauDebugTrace): what support needs, in one zip (cau.debugtrace)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cau.cli import common
from cau.cli.common import ClusterArg, OutputFormat, OutputOpt
from cau.cli.errors import Exit, reported
from cau.debugtrace import COMMAND_TIMEOUT, write_bundle
from cau.errors import NameTaken


def debug_trace(
    ctx: typer.Context,
    cluster: ClusterArg,
    out_file: Annotated[Path, typer.Option("-o", "--out", help="The zip to write (mode 0600).")],
    run_id: Annotated[
        str | None, typer.Option("--run", help="That run (id or unique prefix); default: the newest.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the file if it exists.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds each command on a node may take.", min=1)
    ] = COMMAND_TIMEOUT,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Collect a run's journal and report, cau's versions and log, the config (secrets masked)
    and each node's package-manager and cluster state into one zip for support
    (Save-CauDebugTrace). Exit 3 when some parts could not be collected (the zip says which)."""
    json_out = output is OutputFormat.JSON
    svc = common.service(ctx)
    with reported(json_out):
        if out_file.exists() and not force:  # before collecting, which may take a while
            raise NameTaken(
                f"{out_file} exists; nothing was written", hint="--force replaces it, or choose another -o"
            )
        bundle = asyncio.run(svc.debug_trace(cluster, run_id, by=common.operator(), timeout=timeout))
        write_bundle(bundle.zip_bytes(), out_file, force=force)
    manifest = bundle.manifest
    if json_out:
        common.print_json({"file": str(out_file), "manifest": manifest.model_dump(mode="json")})
    else:
        out = common.console()
        run = f"run {manifest.run_id}" if manifest.run_id else "no run yet"
        out.print(f"wrote {escape(str(out_file))}: {len(manifest.files)} files ({escape(run)})")
        for note in manifest.notes:
            out.print(f"[dim]{escape(note)}[/]")
        for part in manifest.missing:
            where = f" (see {part.file})" if part.file else ""
            out.print(f"[yellow]missing: {escape(part.part)}: {escape(part.error)}{escape(where)}[/]")
    svc.close()
    if manifest.missing:
        raise typer.Exit(Exit.PARTIALLY_FAILED)
