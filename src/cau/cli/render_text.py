"""Text views of runs, reports and scans for the terminal (rich)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cau.domain.durations import format_duration
from cau.journal.events import Step
from cau.reports.model import NodeReport, RunReport
from cau.views import RunForecast

STATUS_STYLE = {
    "Succeeded": "bold green",
    "PartiallyFailed": "bold yellow",
    "Failed": "bold red",
    "Canceled": "bold bright_black",
}

STEP_LABEL: dict[str, str] = {
    Step.PRE_SCRIPT: "pre-update script",
    Step.SCAN: "scanning",
    Step.STAGE: "downloading",
    Step.ENTER_MAINTENANCE: "entering maintenance",
    Step.INSTALL: "installing",
    Step.RESTART: "restarting",
    Step.RESCAN: "rescanning",
    Step.EXIT_MAINTENANCE: "leaving maintenance",
    Step.FAILBACK: "failing back",
    Step.POST_SCRIPT: "post-update script",
    "done": "done",
}


def status_text(status: str | None, state: str = "") -> Text:
    if status:
        return Text(status, style=STATUS_STYLE.get(status, ""))
    if state == "running":
        return Text("Running", style="bold cyan")
    if state == "waiting":  # scanned ahead, for its turn
        return Text("Waiting", style="cyan")
    if state == "Paused":
        return Text("Paused", style="bold magenta")
    return Text("Pending", style="dim")


def when(ts: datetime | None) -> str:
    return "-" if ts is None else ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def node_flags(node: NodeReport) -> str:
    flags = []
    if node.left_in_maintenance:
        flags.append("LEFT IN MAINTENANCE")
    if node.pending_restart:
        flags.append("pending restart")
    return ", ".join(flags)


def nodes_table(report: RunReport, *, live: bool = False) -> Table:
    table = Table(show_edge=False, pad_edge=False, expand=False, header_style="bold")
    table.add_column("node")
    table.add_column("status")
    table.add_column("step" if live else "restarts", justify="left" if live else "right")
    table.add_column("updates ok/failed", justify="right")
    table.add_column("in maintenance", justify="right")
    table.add_column("detail", overflow="fold", max_width=70)
    for node in report.nodes:
        if live:
            step = (
                ""
                if node.state == "done"
                else STEP_LABEL.get(node.current_step or "", node.current_step or "")
            )
            detail = (node.waiting and f"waiting: {node.waiting}") or node.detail
            if node.state == "done":
                detail = node.message
        else:
            step = str(node.restarts)
            detail = node.message
        flags = node_flags(node)
        if flags:
            detail = f"{flags}; {detail}" if detail else flags
        table.add_row(
            node.name,
            status_text(node.status, node.state),
            step,
            f"{node.succeeded_count}/{node.failed_count}",
            format_duration(node.maintenance_seconds) if node.maintenance_started else "-",
            detail or "",
        )
    return table


def run_headline(report: RunReport) -> Text:
    line = Text()
    line.append(f"Run {report.run_id} on {report.cluster}: ")
    if report.status is None:
        running = report.state == "Running"
        line.append("Running" if running else report.state, style="bold cyan" if running else "bold magenta")
    else:
        line.append_text(status_text(report.status))
    line.append(f"  {format_duration(report.duration_seconds)}")
    if report.status is not None:
        parts = [
            f"{report.count(s)} {s}"
            for s in ("Succeeded", "PartiallyFailed", "Failed", "Canceled")
            if report.count(s)
        ]
        line.append("  " + ", ".join(parts))
        line.append(f"; {report.updates_installed} update(s) installed")
        if report.updates_failed:
            line.append(f", {report.updates_failed} failed", style="red")
        restarts = sum(n.restarts for n in report.nodes)
        line.append(f", {restarts} restart(s)")
    return line


def _downtime(seconds: float) -> str:
    """Downtime to the millisecond when it is short: a 50 ms probe outage is not "0.0s"."""
    if 0 < seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return format_duration(seconds)


def availability_table(report: RunReport) -> Table:
    """Per role: measured by cau's probes (sent, failed, late) or reported by the cluster."""
    measured = any(a.measured == "probe" for a in report.availability)
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("role")
    if measured:
        table.add_column("measured by")
        table.add_column("probes", justify="right")
        table.add_column("failed", justify="right")
        table.add_column("late", justify="right")
    table.add_column("outages", justify="right")
    table.add_column("downtime", justify="right")
    table.add_column("available", justify="right")
    table.add_column("worst outage", overflow="fold", max_width=60)
    for a in report.availability:
        probe = a.measured == "probe"
        worst = ""
        if a.outages:
            worst = f"{_downtime(a.worst_outage_seconds)} during {a.worst_outage_during}"
        cells = [a.role]
        if measured:
            cells += [
                "probe" if probe else "cluster",
                str(a.probes_sent) if probe else "-",
                str(a.probes_failed) if probe else "-",
                str(a.probes_late) if probe else "-",
            ]
        cells += [
            str(a.outages),
            _downtime(a.downtime_seconds),
            f"{a.availability_percent:.2f}%",
            worst,
        ]
        table.add_row(*cells, style="" if a.outages == 0 else "yellow")
    return table


def started_line(report: RunReport) -> Text:
    """When and by whom the run was started, and who resumed it."""
    line = Text(f"  started {when(report.started)} UTC by {report.started_by or 'unknown'}", style="dim")
    resumers = [c.by for c in report.coordinators if c.resumed and c.by]
    if resumers:
        line.append(f"; resumed by {', '.join(dict.fromkeys(resumers))}")
    return line


def timing_line(report: RunReport) -> Text | None:
    """A run in progress: its ETA; a finished one: what was predicted against what it took."""
    if report.eta is not None:
        predicted = format_duration(report.eta.predicted_seconds)
        return Text(f"  {report.eta.line()}; predicted at the start: {predicted}", style="bold")
    if report.predicted_seconds is not None and report.finished is not None:
        return Text(
            f"  predicted {format_duration(report.predicted_seconds)}, "
            f"took {format_duration(report.duration_seconds)}",
            style="dim",
        )
    return None


def forecast_text(forecast: RunForecast) -> RenderableType:
    """A run's forecast for people (`cau run --dry-run`, `cau scan`)."""
    parts: list[RenderableType] = [
        Text(f"Forecast for '{forecast.cluster}': {forecast.headline()}", style="bold")
    ]
    limit = forecast.in_progress_limit
    parts.append(Text(f"  batches (nodes in maintenance together; at most {limit} in progress at once):"))
    cycles = {n.node: n for n in forecast.plan.nodes}
    for i, batch in enumerate(forecast.batches, 1):
        names = ", ".join(
            f"{n} ({format_duration(cycles[n].cycle)})" if n in cycles else n for n in batch.nodes
        )
        line = Text(f"    {i}. {names}")
        if batch.refused:
            line.append(f"  refused by the gate: {batch.refused}", style="red")
        elif batch.limited_by:
            line.append(f"  [next one waits: {batch.limited_by}]", style="dim")
        parts.append(line)
    for overrun in forecast.overruns:
        style = "red" if forecast.on_overrun.value == "refuse" else "yellow"
        action = (
            "a run would be refused" if forecast.on_overrun.value == "refuse" else "a run would start, warned"
        )
        parts.append(
            Text(
                f"  does not fit: {overrun.message} (on_overrun = {forecast.on_overrun.value}: {action})",
                style=style,
            )
        )
    if forecast.rough:
        parts.append(
            Text(
                "  rough: no past run of this cluster to learn from; the next run's forecast uses this one's",
                style="dim",
            )
        )
    return Group(*parts)


def moves_table(report: RunReport) -> Table:
    """Each role move of the run (live migrations, saved and restored states): cau's timing, the
    cluster software's own figures, and the failed probes of the role meanwhile."""
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    for name in ("role", "move", "from", "to"):
        table.add_column(name)
    for name in ("seconds", "reported", "downtime", "sent", "failed probes"):
        table.add_column(name, justify="right")
    for m in report.moves:
        table.add_row(
            m.role,
            m.method + ("" if m.ok else " (failed)"),
            m.from_node or "-",
            m.to_node or "-",
            f"{m.seconds:.2f}",
            f"{m.reported_seconds:.2f}" if m.reported_seconds is not None else "-",
            f"{m.downtime_ms:g} ms" if m.downtime_ms is not None else "-",
            f"{m.data_bytes / 2**20:.1f} MiB" if m.data_bytes is not None else "-",
            str(m.probe_failed_checks) if m.probe_failed_checks is not None else "no probe",
        )
    return table


def run_summary(report: RunReport, *, detailed: bool = False) -> RenderableType:
    parts: list[RenderableType] = [run_headline(report), started_line(report)]
    timing = timing_line(report)
    if timing is not None:
        parts.append(timing)
    if report.error_id or report.message:
        parts.append(
            Text(
                f"  {report.error_id or ''}{': ' if report.error_id and report.message else ''}"
                f"{report.message or ''}",
                style="red" if report.status != "Succeeded" else "",
            )
        )
    parts.append(nodes_table(report))
    if report.availability:
        parts.append(Text("Workload availability during the run:", style="bold"))
        parts.append(availability_table(report))
    if detailed and report.moves:
        parts.append(
            Text(
                "Role moves (the cluster software's figures, and the failed probes meanwhile):", style="bold"
            )
        )
        parts.append(moves_table(report))
    for pause in report.pauses:
        parts.append(
            Text(f"  paused {when(pause.ts)} UTC: {pause.error_id}: {pause.message}", style="magenta")
        )
    for warning in report.warnings:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    for note in report.readiness:
        where = f" ({', '.join(note.nodes)})" if note.nodes else ""
        parts.append(Text(f"readiness warning [{note.rule}]{where}: {note.detail}", style="yellow"))
        if note.fix:
            parts.append(Text(f"  fix: {note.fix}", style="dim"))
    if detailed:
        for node in report.nodes:
            parts.append(
                Text(
                    f"\n{node.name}: {node.status or node.state}"
                    f"{' - ' + node.message if node.message else ''}",
                    style="bold",
                )
            )
            if node.updates:
                t = Table(show_edge=False, pad_edge=False, header_style="bold")
                for col in ("update", "title", "plug-in", "status", "attempts", "restart", "message"):
                    t.add_column(col, overflow="fold")
                for u in node.updates:
                    t.add_row(
                        u.id,
                        u.title,
                        u.plugin,
                        status_text(u.status),
                        str(u.attempts),
                        "yes" if u.restart_required else "",
                        u.message,
                    )
                parts.append(t)
            for h in node.held_updates:
                parts.append(Text(f"  not installed, {h.reason}: {h.title}", style="cyan"))
            for err in node.transient_errors:
                parts.append(Text(f"  transient: {err}", style="yellow"))
            if node.roles_failed_back:
                parts.append(Text(f"  roles failed back: {', '.join(node.roles_failed_back)}"))
            for w in node.gate_waits:
                where = "before its drain" if w.phase == "admission" else "after its return"
                line = f"  health gates {where}: waited {format_duration(w.seconds)} for {', '.join(w.gates)}"
                line += "" if w.outcome == "passed" else f" ({w.outcome}: {w.answer})"
                parts.append(Text(line, style="yellow" if w.outcome == "timeout" else ""))
    return Group(*parts)


def runs_table(reports: Sequence[RunReport]) -> Table:
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    for col in (
        "run",
        "cluster",
        "status",
        "started (UTC)",
        "started by",
        "duration",
        "nodes ok",
        "updates",
        "error",
    ):
        table.add_column(col)
    for r in reports:
        ok = sum(1 for n in r.nodes if n.status == "Succeeded")
        table.add_row(
            r.run_id,
            r.cluster,
            status_text(r.status, r.state),
            when(r.started),
            r.started_by or "unknown",
            format_duration(r.duration_seconds),
            f"{ok}/{len(r.nodes)}",
            f"{r.updates_installed}" + (f" (+{r.updates_failed} failed)" if r.updates_failed else ""),
            r.error_id or "",
        )
    return table
