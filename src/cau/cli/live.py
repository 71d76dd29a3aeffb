"""Live progress of a run: a table per node and step on a terminal, one line per event otherwise."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from cau.cli.render_text import STEP_LABEL, nodes_table, run_headline
from cau.domain.runs import RunRecord
from cau.journal.events import (
    Coordinator,
    EnterIntent,
    FailbackOutcome,
    InstallIntent,
    JournalEvent,
    NodeFinished,
    NodeStarted,
    ProbeDown,
    ProbeUp,
    RestartOutcome,
    RunFinished,
    RunPaused,
    ScanOutcome,
    StepIntent,
    StepOutcome,
    StopRequested,
    Waiting,
    WarningEvent,
)
from cau.journal.progress import RunProgress
from cau.reports.build import build_report


def describe(ev: JournalEvent) -> str | None:
    """One human line for an event worth a line, or None."""
    node = f"{ev.node}: " if ev.node else ""
    p = ev.payload
    match p:
        case Coordinator():
            asked = f" for {p.by}" if p.by else ""
            return ("resumed by " if p.resumed else "started by ") + p.owner + asked
        case NodeStarted():
            return f"{node}started"
        case InstallIntent():
            return f"{node}installing {len(p.updates)} update(s) with {p.plugin} (pass {p.pass_no})"
        case EnterIntent() if p.key != "enter_maintenance/1":
            return f"{node}entering maintenance (retry {p.key.rsplit('/', 1)[-1]})"
        case StepIntent():
            return f"{node}{STEP_LABEL.get(p.step, p.step)}"
        case StepOutcome() if not p.ok:
            # a script's exit status and the last line it printed (redacted when journaled)
            return f"{node}{STEP_LABEL.get(p.step, p.step)} failed: {p.failure_text()}"
        case ScanOutcome():
            return f"{node}{p.count} applicable update(s)" + (
                ", restart pending" if p.restart_pending else ""
            )
        case RestartOutcome():
            return f"{node}back (boot id {str(p.boot_id)[:8]})"
        case FailbackOutcome() if p.moved:
            return f"{node}roles back: {', '.join(p.moved)}"
        case Waiting():
            return f"{node}waiting: {p.reason}"
        case NodeFinished():
            return f"{node}{p.status}" + (f" - {p.message}" if p.message else "")
        case WarningEvent():
            return f"warning: {p.message}"
        case StopRequested():
            return f"stopping: {p.message}"
        case RunPaused():
            return f"PAUSED: {p.error_id}: {p.message}"
        case RunFinished():
            return f"run finished: {p.status}" + (f" ({p.error_id})" if p.error_id else "")
        case ProbeDown():
            return f"probe {p.probe}: DOWN ({p.error})"
        case ProbeUp():
            took = f"{p.seconds * 1000:.0f} ms" if p.seconds < 1 else f"{p.seconds:.1f}s"
            return f"probe {p.probe}: up again after {took} ({p.failed_checks} failed check(s))"
    return None


class RunWatcher:
    """Shows a run's journal events as they come: the progress table on a terminal (rebuilt from
    the run's progress, which the coordinator or the caller keeps up to date), a line each
    otherwise."""

    def __init__(self, console: Console, *, live: bool) -> None:
        self.console = console
        self._live_mode = live
        self._live: Live | None = None
        self.progress: RunProgress | None = None
        self.record: RunRecord | None = None
        self._recent: deque[str] = deque(maxlen=6)

    def attach(self, record: RunRecord, progress: RunProgress) -> None:
        """The run to show and its progress (kept up to date by whoever reads its journal)."""
        self.record, self.progress = record, progress

    def __enter__(self) -> RunWatcher:
        if self._live_mode:
            self._live = Live(
                console=self.console,
                get_renderable=self.render,
                refresh_per_second=6,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def feed(self, ev: JournalEvent) -> None:
        line = describe(ev)
        if line is None:
            return
        stamp = ev.ts.astimezone(UTC).strftime("%H:%M:%S")
        if self._live_mode:
            self._recent.append(f"{stamp} {line}")
        else:
            self.console.print(f"{stamp} {line}", highlight=False, markup=False, soft_wrap=True)

    def render(self) -> RenderableType:
        if self.progress is None or self.record is None:
            return Text("starting…", style="dim")
        report = build_report(self.record, self.progress, now=datetime.now(UTC))
        done = sum(1 for n in report.nodes if n.state == "done")
        header = run_headline(report)
        header.append(f"  [{done}/{len(report.nodes)} nodes done]", style="dim")
        recent = Text("\n".join(self._recent), style="dim")
        return Group(header, nodes_table(report, live=True), recent)
