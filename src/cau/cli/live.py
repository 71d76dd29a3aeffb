"""Live progress of a run: a table per node and step on a terminal, one line per event otherwise."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from cau.cli.render_text import STEP_LABEL, nodes_table, run_headline
from cau.engine.replay import RunProgress, apply, replay
from cau.reports.build import build_report
from cau.store.base import EventKind, JournalEvent, RunRecord


def describe(ev: JournalEvent) -> str | None:
    """One human line for an event worth a line, or None."""
    d = ev.data
    node = f"{ev.node}: " if ev.node else ""
    kind = ev.kind
    if kind is EventKind.COORDINATOR:
        return ("resumed by " if d.get("resumed") else "started by ") + str(d.get("owner"))
    if kind is EventKind.NODE_STARTED:
        return f"{node}started"
    if kind is EventKind.INTENT:
        label = STEP_LABEL.get(ev.step or "", ev.step or "")
        if ev.step == "install":
            ups = d.get("updates", [])
            return f"{node}installing {len(ups)} update(s) with {d.get('plugin')} (pass {d.get('pass')})"
        if ev.step == "enter_maintenance" and ev.key != "enter_maintenance/1":
            return f"{node}entering maintenance (retry {ev.key.rsplit('/', 1)[-1] if ev.key else ''})"
        return f"{node}{label}"
    if kind is EventKind.OUTCOME:
        if not d.get("ok"):
            msg = d.get("message") or d.get("stderr") or d.get("error_id") or "failed"
            return f"{node}{STEP_LABEL.get(ev.step or '', ev.step or '')} failed: {msg}"
        if ev.step in ("scan", "rescan"):
            return f"{node}{d.get('count', 0)} applicable update(s)" + (
                ", restart pending" if d.get("restart_pending") else ""
            )
        if ev.step == "restart":
            return f"{node}back (boot id {str(d.get('boot_id'))[:8]})"
        if ev.step == "failback" and d.get("moved"):
            return f"{node}roles back: {', '.join(d['moved'])}"
        return None
    if kind is EventKind.WAITING:
        return f"{node}waiting: {d.get('reason')}"
    if kind is EventKind.NODE_FINISHED:
        extra = f" - {d.get('message')}" if d.get("message") else ""
        return f"{node}{d.get('status')}{extra}"
    if kind is EventKind.WARNING:
        return f"warning: {d.get('message')}"
    if kind is EventKind.STOP_REQUESTED:
        return f"stopping: {d.get('message')}"
    if kind is EventKind.RUN_PAUSED:
        return f"PAUSED: {d.get('error_id')}: {d.get('message')}"
    if kind is EventKind.RUN_FINISHED:
        return f"run finished: {d.get('status')}" + (f" ({d.get('error_id')})" if d.get("error_id") else "")
    if kind is EventKind.PROBE_DOWN:
        return f"probe {d.get('probe')}: DOWN ({d.get('error')})"
    if kind is EventKind.PROBE_UP:
        seconds = float(d.get("seconds") or 0)
        took = f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f}s"
        return f"probe {d.get('probe')}: up again after {took} ({d.get('failed_checks')} failed check(s))"
    return None


class RunWatcher:
    """Consumes a run's journal events and shows them."""

    def __init__(
        self,
        console: Console,
        *,
        load_record: Callable[[str], RunRecord | None],
        load_events: Callable[[str], list[JournalEvent]],
        live: bool,
    ) -> None:
        self.console = console
        self._load_record = load_record
        self._load_events = load_events
        self._live_mode = live
        self._live: Live | None = None
        self.progress: RunProgress | None = None
        self.record: RunRecord | None = None
        self._recent: deque[str] = deque(maxlen=6)

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
        if self.progress is None or self.progress.run_id != ev.run_id:
            self.record = self._load_record(ev.run_id)
            self.progress = replay(self._load_events(ev.run_id))
        elif ev.seq > self.progress.last_seq:
            apply(self.progress, ev)
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
