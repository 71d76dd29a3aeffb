"""Run reports as CSV (Export-CauReport -Format CSV): one row per run, or one per node and update.

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

__all__ = ["DETAILED_COLUMNS", "SUMMARY_COLUMNS", "render_csv"]

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
    )


def _detailed_rows(r: RunReport) -> Iterable[Sequence[Cell]]:
    for n in r.nodes:
        updates: list[UpdateReport | None] = list(n.updates) or [None]
        for u in updates:
            yield _detailed_row(r, n, u)


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


def render_csv(reports: list[RunReport], *, detailed: bool) -> str:
    """CSV text with a header row: a row per run, or (detailed) a row per run, node and update."""
    out = io.StringIO()
    writer = csv.writer(out)
    if detailed:
        writer.writerow(DETAILED_COLUMNS)
        rows: Iterable[Sequence[Cell]] = (row for r in reports for row in _detailed_rows(r))
    else:
        writer.writerow(SUMMARY_COLUMNS)
        rows = (_summary_row(r) for r in reports)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return out.getvalue()
