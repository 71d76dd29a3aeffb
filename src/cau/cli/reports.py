"""`cau report` (Get-CauReport, Export-CauReport): past runs as text, JSON, CSV or HTML."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from cau.cli import common
from cau.cli.common import ClusterArg, OutputFormat, OutputOpt
from cau.cli.errors import reported
from cau.cli.render_text import run_summary, runs_table
from cau.domain.runs import ReportQuery
from cau.errors import ConfigError
from cau.reports.model import RunReport


class ReportFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    CSV = "csv"
    HTML = "html"


def _parse_date(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} '{text}': expected a date like 2026-11-01 or 2026-11-01T08:00") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def report(
    ctx: typer.Context,
    cluster: ClusterArg,
    last: Annotated[bool, typer.Option("--last", help="Only the most recent run.")] = False,
    since: Annotated[str | None, typer.Option(help="Runs started at or after this date (UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Runs started at or before this date (UTC).")] = None,
    run_id: Annotated[str | None, typer.Option("--run", help="One run, by id (or a unique prefix).")] = None,
    detailed: Annotated[bool, typer.Option("--detailed", help="Per-node and per-update results.")] = False,
    fmt: Annotated[
        ReportFormat, typer.Option("--format", help="text, json, csv or html.")
    ] = ReportFormat.TEXT,
    availability: Annotated[
        bool, typer.Option("--availability", help="CSV: a row per run and role (probes, downtime).")
    ] = False,
    out_file: Annotated[Path | None, typer.Option("-o", "--out", help="Write to this file.")] = None,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Reports of past Updating Runs (Get-CauReport), exported as text, JSON, CSV or HTML."""
    if output is OutputFormat.JSON:
        fmt = ReportFormat.JSON
    json_out = fmt is ReportFormat.JSON
    svc = common.service(ctx)

    async def load() -> list[RunReport]:
        svc.config.cluster(cluster)
        if run_id:
            records = [await svc.find_run(run_id, cluster)]
        else:
            query = ReportQuery(
                cluster=cluster,
                since=_parse_date(since, "--since"),
                until=_parse_date(until, "--until"),
                last=1 if last else None,
            )
            records = await svc.runs(query)
        return [await svc.run_report(r) for r in records]

    with reported(json_out):
        reports = asyncio.run(load())
    text = _render_reports(reports, fmt, detailed, availability=availability)
    if out_file is not None:
        out_file.write_text(text if isinstance(text, str) else "", encoding="utf-8")
        Console(stderr=True).print(f"[dim]wrote {len(reports)} report(s) to {escape(str(out_file))}[/]")
        return
    if isinstance(text, str):
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    console = common.console()
    if not reports:
        console.print(f"No Updating Run reports for '{cluster}' in that range.")
    elif detailed:
        for r in reports:
            console.print(run_summary(r, detailed=True))
            console.print()
    else:
        console.print(runs_table(reports))


def _render_reports(
    reports: list[RunReport], fmt: ReportFormat, detailed: bool, *, availability: bool = False
) -> str | None:
    if fmt is ReportFormat.JSON:
        if detailed:
            return json.dumps([r.model_dump(mode="json") for r in reports], indent=2)
        return json.dumps([_summary(r) for r in reports], indent=2)
    if fmt is ReportFormat.CSV:
        from cau.reports.render_csv import render_csv

        return render_csv(reports, detailed=detailed, availability=availability)
    if fmt is ReportFormat.HTML:
        from cau.reports.render_html import render_html

        return render_html(reports)
    return None


def _summary(r: RunReport) -> dict[str, Any]:
    return {
        "run_id": r.run_id,
        "cluster": r.cluster,
        "status": r.status,
        "state": r.state,
        "started": r.started.isoformat(),
        "started_by": r.started_by,  # None: unknown (a run from before it was recorded)
        "finished": r.finished.isoformat() if r.finished else None,
        "duration_seconds": r.duration_seconds,
        "error_id": r.error_id,
        "message": r.message,
        "nodes": [
            {
                "name": n.name,
                "status": n.status,
                "maintenance_seconds": n.maintenance_seconds,
                "updates": [{"id": u.id, "title": u.title, "status": u.status} for u in n.updates],
            }
            for n in r.nodes
        ],
        # per role: measured by cau's probes or reported by the provider, with every outage's
        # attribution to the node steps in progress (see RoleAvailability, OutageReport)
        "availability": [a.model_dump(mode="json") for a in r.availability],
        "outages": [o.model_dump(mode="json") for o in r.outages],
    }
