"""Run reports as CSV (Export-CauReport -Format CSV): one row per run, or one per node and update,
or (availability) one per run and role: what cau's probes measured or the cluster reported.

Update titles and messages come from remote package managers and scripts: a cell that a
spreadsheet would read as a formula (=, +, -, @, tab, CR first) gets a leading apostrophe.
Timestamps are ISO 8601 in UTC; numbers are written as numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from cau.reports.model import NodeReport, RunReport, UpdateReport

__all__ = ["AVAILABILITY_COLUMNS", "DETAILED_COLUMNS", "SUMMARY_COLUMNS", "render_csv"]

SUMMARY_COLUMNS: tuple[str, ...] = (
    "run_id",
    "cluster",
    "status",
    "started",
    "finished",
    "duration_seconds",
    "nodes",
    "nodes_succeeded",
    "nodes_failed",
    "updates_installed",
    "updates_failed",
    "error_id",
    "message",
    # after the documented columns, so that readers by position are not disturbed:
    "nodes_partially_failed",
    "nodes_canceled",
    "outages",
    "min_availability_percent",
    "started_by",  # who asked for the run; empty when unknown (a run from before it was recorded)
)

AVAILABILITY_COLUMNS: tuple[str, ...] = (
    "run_id",
    "cluster",
    "role",
    "measured_by",  # probe | provider
    "probes_sent",
    "probes_failed",
    "probes_late",
    "response_ms_p50",
    "response_ms_p99",
    "response_ms_max",
    "outages",
    "downtime_seconds",
    "availability_percent",
    "worst_outage_seconds",
    "worst_outage_during",  # node / step of the worst outage, e.g. "node2 / enter_maintenance"
    "downtime_by_step",  # "node2 / enter_maintenance=1.2; node2 / failback=0.4"
)

DETAILED_COLUMNS: tuple[str, ...] = (
    "run_id",
    "cluster",
    "run_status",
    "node",
    "node_status",
    "node_error_id",
    "maintenance_seconds",
    "restarts",
    "update_id",
    "update_title",
    "plugin",
    "update_status",
    "attempts",
    "restart_required",
    "error_code",
    "message",
    # after the documented columns:
    "node_message",
    "update_started",
    "update_finished",
)

_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

Cell = str | int | float | bool | datetime | None


def _text(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_PREFIXES) else value


def _timestamp(value: datetime) -> str:
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cell(value: Cell) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _timestamp(value)
    if isinstance(value, str):
        return _text(value)
    return value


def _summary_row(r: RunReport) -> Sequence[Cell]:
    return (
        r.run_id,
        r.cluster,
        r.status or r.state,
        r.started,
        r.finished,
        r.duration_seconds,
        len(r.nodes),
        r.count("Succeeded"),
        r.count("Failed"),
        r.updates_installed,
        r.updates_failed,
        r.error_id,
        r.message,
        r.count("PartiallyFailed"),
        r.count("Canceled"),
        len(r.outages),
        min((a.availability_percent for a in r.availability), default=None),
        r.started_by,
    )


def _availability_rows(r: RunReport) -> Iterable[Sequence[Cell]]:
    for a in r.availability:
        probe = a.measured == "probe"
        yield (
            r.run_id,
            r.cluster,
            a.role,
            a.measured,
            a.probes_sent if probe else None,
            a.probes_failed if probe else None,
            a.probes_late if probe else None,
            a.response_ms_p50,
            a.response_ms_p99,
            a.response_ms_max,
            a.outages,
            a.downtime_seconds,
            a.availability_percent,
            a.worst_outage_seconds,
            a.worst_outage_during,
            "; ".join(f"{s.label}={s.seconds:g}" for s in a.downtime_by_step),
        )


def _detailed_rows(r: RunReport) -> Iterable[Sequence[Cell]]:
    for n in r.nodes:
        updates: list[UpdateReport | None] = list(n.updates) or ([] if n.held_updates else [None])
        for u in updates:
            yield _detailed_row(r, n, u)
        for h in n.held_updates:  # not installed on purpose: status "Held" / "KeptBack", no failure
            status = "Held" if h.reason == "held" else "KeptBack"
            held = UpdateReport(
                id=h.id, title=h.title, plugin=h.plugin, status=status, attempts=0, message=h.reason
            )
            yield _detailed_row(r, n, held)


def _detailed_row(r: RunReport, n: NodeReport, u: UpdateReport | None) -> Sequence[Cell]:
    node_part: tuple[Cell, ...] = (
        r.run_id,
        r.cluster,
        r.status or r.state,
        n.name,
        n.status or n.state,
        n.error_id,
        n.maintenance_seconds,
        n.restarts,
    )
    if u is None:
        return (*node_part, None, None, None, None, None, None, None, n.message, n.message, None, None)
    return (
        *node_part,
        u.id,
        u.title,
        u.plugin,
        u.status,
        u.attempts,
        u.restart_required,
        u.error_code,
        u.message,
        n.message,
        u.started,
        u.finished,
    )


def render_csv(reports: list[RunReport], *, detailed: bool, availability: bool = False) -> str:
    """CSV text with a header row: a row per run, or (detailed) a row per run, node and update, or
    (availability) a row per run and role."""
    out = io.StringIO()
    writer = csv.writer(out)
    if availability:
        writer.writerow(AVAILABILITY_COLUMNS)
        rows: Iterable[Sequence[Cell]] = (row for r in reports for row in _availability_rows(r))
    elif detailed:
        writer.writerow(DETAILED_COLUMNS)
        rows = (row for r in reports for row in _detailed_rows(r))
    else:
        writer.writerow(SUMMARY_COLUMNS)
        rows = (_summary_row(r) for r in reports)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return out.getvalue()
