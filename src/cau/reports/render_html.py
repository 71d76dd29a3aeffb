"""Run reports as one self-contained HTML page (Export-CauReport -Format HTML).

Everything is inline (CSS, the SVG timeline), nothing is fetched, no script is needed. Node names,
messages and script output are untrusted text: the template autoescapes all of it.
The geometry of the timeline is computed here, typed and testable; the template only draws it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from cau import __version__
from cau.domain.durations import format_duration
from cau.journal.events import Step
from cau.reports.model import MoveReport, NodeReport, OutageReport, RunReport, StepReport

__all__ = ["STEP_KINDS", "StepKind", "render_html", "render_html_fragment", "report_stylesheet"]


# --- statuses --------------------------------------------------------------------------------------

_STATUS_CLASS = {
    "Succeeded": "ok",
    "PartiallyFailed": "warn",
    "Failed": "bad",
    "Canceled": "muted",
}
_STATUS_LABEL = {"PartiallyFailed": "Partially failed"}
_NODE_STATUSES = ("Succeeded", "PartiallyFailed", "Failed", "Canceled")


@dataclass(frozen=True)
class Badge:
    label: str
    css: str  # ok | warn | bad | muted | prog


def status_badge(status: str | None) -> Badge:
    if status is None:
        return Badge("-", "muted")
    return Badge(_STATUS_LABEL.get(status, status), _STATUS_CLASS.get(status, "muted"))


def run_badge(report: RunReport) -> Badge:
    if report.status is not None:
        return status_badge(report.status)
    if report.state == "Paused":
        return Badge("Paused", "prog")
    return Badge("In progress", "prog")


def node_badge(node: NodeReport) -> Badge:
    if node.status is not None:
        return status_badge(node.status)
    if node.state == "running":
        label = f"Running: {node.current_step}" if node.current_step else "Running"
        return Badge(label, "prog")
    if node.state == "waiting":  # scanned ahead, for its turn
        return Badge("Waiting: its turn", "muted")
    return Badge("Pending", "muted")


# --- time ------------------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def format_utc(value: datetime | None) -> str:
    if value is None:
        return "-"
    return _utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_clock(value: datetime | None) -> str:
    if value is None:
        return "-"
    return _utc(value).strftime("%H:%M:%S")


def format_offset(seconds: float, *, hours: bool = False) -> str:
    """Time since the start of the run: +0:30, +12:05, or +1:02:00 when the run is long."""
    whole = max(0, round(seconds))
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    if hours or h:
        return f"+{h}:{m:02d}:{s:02d}"
    return f"+{m}:{s:02d}"


def since(value: datetime, start: datetime) -> str:
    return format_offset((_utc(value) - _utc(start)).total_seconds())


def fold(text: str, limit: int = 300, lines: int = 4) -> str:
    """The head of a long message (script output): at most `limit` characters and `lines` lines."""
    return "\n".join(text.split("\n")[:lines])[:limit]


def _dur(value: timedelta | float | None) -> str:
    return format_duration(value)


# --- the timeline ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepKind:
    key: str
    label: str
    color: str
    steps: tuple[Step, ...]


STEP_KINDS: tuple[StepKind, ...] = (
    StepKind("scan", "Scan / rescan", "#94a3b8", (Step.SCAN, Step.RESCAN)),
    StepKind("stage", "Stage (download)", "#22d3ee", (Step.STAGE,)),
    StepKind("script", "Pre / post script", "#c084fc", (Step.PRE_SCRIPT, Step.POST_SCRIPT)),
    StepKind("enter", "Enter maintenance (drain)", "#f59e0b", (Step.ENTER_MAINTENANCE,)),
    StepKind("install", "Install", "#2563eb", (Step.INSTALL,)),
    StepKind("restart", "Restart", "#334155", (Step.RESTART,)),
    StepKind("exit", "Exit maintenance", "#84cc16", (Step.EXIT_MAINTENANCE,)),
    StepKind("failback", "Failback", "#10b981", (Step.FAILBACK,)),
)
_OTHER_KIND = StepKind("other", "Other", "#a8a29e", ())
_KIND_OF_STEP: dict[str, StepKind] = {step: kind for kind in STEP_KINDS for step in kind.steps}


def step_kind(step: str) -> StepKind:
    return _KIND_OF_STEP.get(step, _OTHER_KIND)


# Layout, in SVG user units (the SVG is drawn 1:1 up to the page width, and scales down below it).
_WIDTH = 1040.0
_LABEL_W = 140.0
_RIGHT_PAD = 24.0
_AXIS_H = 30.0
_LANE_H = 30.0
_BAR_H = 16.0
_ROLE_GAP = 22.0
_ROLE_LANE_H = 18.0
_ROLE_MARK_H = 8.0
_BOTTOM_PAD = 10.0
_MIN_BAR_W = 2.0
_NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
_MAX_TICKS = 8
_LABEL_CHARS = 16


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    color: str
    css: str  # "" | "failed" | "open"
    tip: str


@dataclass
class Lane:
    name: str
    label: str  # shortened for the label column; the full name is in `name`
    y: float  # top of the lane
    h: float
    band: Bar | None = None  # time in maintenance
    bars: list[Bar] = field(default_factory=list)
    measured: bool = False  # a role lane measured by cau's probes (up where no bar is)

    @property
    def mid(self) -> float:
        return round(self.y + self.h / 2, 1)


@dataclass
class Timeline:
    width: float
    height: float
    plot_x0: float
    plot_x1: float
    axis_y: float
    ticks: list[Tick]
    nodes: list[Lane]
    roles: list[Lane]
    roles_y: float  # top of the role-outage area (a separator line is drawn there)
    now_x: float | None  # the run is still going: where "now" is
    kinds: list[StepKind]  # the step kinds that appear, for the legend
    has_failed: bool
    has_band: bool
    span_seconds: float


def _short(name: str, limit: int = _LABEL_CHARS) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _tick_step(span: float) -> int:
    for step in _NICE_STEPS:
        if span / step <= _MAX_TICKS:
            return step
    return max(86400, int(span / _MAX_TICKS / 86400 + 1) * 86400)


def _step_tip(node: str, s: StepReport, seconds: float) -> str:
    state = {True: "ok", False: "FAILED", None: "running" if s.finished is None else "interrupted"}[s.ok]
    key = f" ({s.key})" if s.key != s.step else ""
    tip = f"{node}: {s.step}{key}, {format_duration(seconds)}, {state}"
    if s.message:
        tip += f"\n{s.message[:500]}"
    return tip


def short_seconds(seconds: float) -> str:
    """A duration for people, to the millisecond when short: a 50 ms probe outage is not "0.1s"."""
    if 0 < seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return format_duration(seconds)


def outage_tip(o: OutageReport) -> str:
    where = f" on {o.node}" if o.node else ""
    ongoing = "" if o.ended is not None else " (not over when the report was made)"
    tip = f"{o.role} down{where}: {short_seconds(o.seconds)}{ongoing}"
    tip += f"\nduring {o.attribution}"
    if o.source == "probe":
        tip += f"\nmeasured by probe {o.probe}: {o.failed_checks} failed check(s)"
        tip += "".join(f"\n  {e}" for e in o.errors[:5])
    else:
        tip += f"\nreported by the cluster: {o.reason}"
    return tip


def move_tip(m: MoveReport) -> str:
    """A role move's figures: cau's timing, the cluster software's, and what the probes saw."""
    where = " → ".join(x for x in (m.from_node, m.to_node) if x)
    parts = [f"{m.role}: {m.method} {where}, {short_seconds(m.seconds)}" + ("" if m.ok else " (failed)")]
    reported = []
    if m.reported_seconds is not None:
        reported.append(f"{short_seconds(m.reported_seconds)}")
    if m.downtime_ms is not None:
        reported.append(f"downtime {m.downtime_ms:g} ms")
    if m.data_bytes is not None:
        reported.append(f"{m.data_bytes / 1024**2:.1f} MiB sent")
    if reported:
        parts.append("reported: " + ", ".join(reported))
    if m.probe_failed_checks is not None:
        parts.append(f"probes: {m.probe_failed_checks} failed")
    return "; ".join(parts)


def build_timeline(report: RunReport) -> Timeline | None:
    """Lanes of bars, one lane per node (and per role that had an outage); None if nothing ran yet."""
    start = _utc(report.started)
    end = start + timedelta(seconds=max(report.duration_seconds, 0.0))
    for node in report.nodes:
        for s in node.steps:
            end = max(end, _utc(s.finished or s.started))
    if not any(n.steps for n in report.nodes):
        return None
    span = max((end - start).total_seconds(), 1e-3)
    x0, x1 = _LABEL_W, _WIDTH - _RIGHT_PAD
    scale = (x1 - x0) / span

    def x_of(t: datetime) -> float:
        return round(x0 + min(max((_utc(t) - start).total_seconds(), 0.0), span) * scale, 1)

    def bar(y: float, h: float, t0: datetime, t1: datetime, color: str, css: str, tip: str) -> Bar:
        left, right = x_of(t0), x_of(t1)
        width = max(round(right - left, 1), _MIN_BAR_W)
        left = min(left, x1 - width)
        return Bar(left, round(y, 1), width, h, color, css, tip)

    step = _tick_step(span)
    long_run = span >= 3600
    ticks = [
        Tick(round(x0 + k * step * scale, 1), format_offset(k * step, hours=long_run))
        for k in range(int(span // step) + 1)
    ]

    seen_kinds: set[str] = set()
    has_failed = has_band = False
    lanes: list[Lane] = []
    y = _AXIS_H
    for node in report.nodes:
        lane = Lane(node.name, _short(node.name), y, _LANE_H)
        if node.maintenance_started is not None:
            m0 = _utc(node.maintenance_started)
            m1 = m0 + timedelta(seconds=node.maintenance_seconds)
            tip = f"{node.name}: in maintenance {format_duration(node.maintenance_seconds)}"
            if node.left_in_maintenance:
                tip += " (left in maintenance)"
            lane.band = bar(y + 2, _LANE_H - 4, m0, m1, "", "band", tip)
            has_band = True
        bar_y = y + (_LANE_H - _BAR_H) / 2
        for s in node.steps:
            kind = step_kind(s.step)
            seen_kinds.add(kind.key)
            s_end = _utc(s.finished) if s.finished is not None else end
            seconds = max((s_end - _utc(s.started)).total_seconds(), 0.0)
            css = "failed" if s.ok is False else ("open" if s.ok is None else "")
            has_failed = has_failed or s.ok is False
            lane.bars.append(
                bar(bar_y, _BAR_H, s.started, s_end, kind.color, css, _step_tip(node.name, s, seconds))
            )
        lane.bars.sort(key=lambda b: -b.w)  # short steps (an instant exit_maintenance) drawn on top
        lanes.append(lane)
        y += _LANE_H

    roles: list[Lane] = []
    roles_y = y
    # Roles with an outage, and every role cau's probes measured (a clean lane is news too).
    probed = {a.role for a in report.availability if a.measured == "probe"}
    named = [
        *(o.role for o in report.outages),
        *(a.role for a in report.availability if a.role in probed),
        *(m.role for m in report.moves),
    ]
    outage_roles = list(dict.fromkeys(named))
    if outage_roles:
        y += _ROLE_GAP
        for role in outage_roles:
            lane = Lane(role, _short(role), y, _ROLE_LANE_H, measured=role in probed)
            mark_y = y + (_ROLE_LANE_H - _ROLE_MARK_H) / 2
            for m in report.moves:  # under the outages: an interruption shows over its move
                if m.role == role:
                    m_start = _utc(m.started)
                    m_end = m_start + timedelta(seconds=m.seconds)
                    css = "move" if m.ok else "move failed"
                    lane.bars.append(bar(mark_y, _ROLE_MARK_H, m_start, m_end, "#7c3aed", css, move_tip(m)))
            for o in report.outages:
                if o.role != role:
                    continue
                o_start = _utc(o.started)
                o_end = o_start + timedelta(seconds=o.seconds)
                css = "outage probe" if o.source == "probe" else "outage"
                lane.bars.append(bar(mark_y, _ROLE_MARK_H, o_start, o_end, "#dc2626", css, outage_tip(o)))
            roles.append(lane)
            y += _ROLE_LANE_H

    return Timeline(
        width=_WIDTH,
        height=round(y + _BOTTOM_PAD, 1),
        plot_x0=x0,
        plot_x1=x1,
        axis_y=_AXIS_H,
        ticks=ticks,
        nodes=lanes,
        roles=roles,
        roles_y=roles_y,
        now_x=round(x1, 1) if report.finished is None else None,
        kinds=[k for k in (*STEP_KINDS, _OTHER_KIND) if k.key in seen_kinds],
        has_failed=has_failed,
        has_band=has_band,
        span_seconds=span,
    )


# --- the page --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Count:
    label: str
    value: int
    css: str


@dataclass
class RunView:
    report: RunReport
    anchor: str
    badge: Badge
    node_counts: list[Count]
    timeline: Timeline | None
    open_updates: bool  # expand every node's update table (few enough rows)
    profile: list[tuple[str, str]]
    show_error_code: bool  # the update tables only get these columns when some update has one
    show_update_message: bool


def _node_counts(report: RunReport) -> list[Count]:
    counts = [
        Count(_STATUS_LABEL.get(s, s), report.count(s), _STATUS_CLASS[s])
        for s in _NODE_STATUSES
        if report.count(s)
    ]
    running = sum(1 for n in report.nodes if n.status is None and n.state == "running")
    waiting = sum(1 for n in report.nodes if n.status is None and n.state == "waiting")
    pending = sum(1 for n in report.nodes if n.status is None and n.state not in ("running", "waiting"))
    if running:
        counts.append(Count("Running", running, "prog"))
    if waiting:
        counts.append(Count("Waiting", waiting, "muted"))
    if pending:
        counts.append(Count("Pending", pending, "muted"))
    return counts


def _profile_rows(profile: dict[str, object]) -> list[tuple[str, str]]:
    rows = []
    for key, value in profile.items():
        if value is None or value == [] or value == {}:
            continue
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, list | tuple):
            text = ", ".join(str(v) for v in value)
        else:
            text = str(value)
        rows.append((key.replace("_", " "), text))
    return rows


def _anchor(report: RunReport, index: int) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in report.run_id)
    return f"run-{index}-{safe}"


def _view(report: RunReport, index: int) -> RunView:
    rows = sum(len(n.updates) for n in report.nodes)
    return RunView(
        report=report,
        anchor=_anchor(report, index),
        badge=run_badge(report),
        node_counts=_node_counts(report),
        timeline=build_timeline(report),
        open_updates=rows <= 80,
        profile=_profile_rows(report.profile),
        show_error_code=any(u.error_code is not None for n in report.nodes for u in n.updates),
        show_update_message=any(u.message for n in report.nodes for u in n.updates),
    )


@lru_cache(maxsize=1)
def _environment() -> Environment:
    # select_autoescape() matches on the template's extension: name ".html.j2" explicitly, and
    # escape by default anyway, so that no template of ours ever renders untrusted text raw.
    env = Environment(
        loader=PackageLoader("cau.reports", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2", "htm", "xml"), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dur"] = _dur
    env.filters["short"] = short_seconds
    env.filters["utc"] = format_utc
    env.filters["clock"] = format_clock
    env.filters["offset"] = format_offset
    env.globals["since"] = since
    env.globals["fold"] = fold
    env.globals["node_badge"] = node_badge
    env.globals["status_badge"] = status_badge
    env.globals["step_kinds"] = STEP_KINDS
    return env


def _default_title(reports: Iterable[RunReport]) -> str:
    items = list(reports)
    if len(items) == 1:
        return f"Cluster-Aware Updating: {items[0].cluster}, {format_utc(items[0].started)[:10]}"
    clusters = sorted({r.cluster for r in items})
    where = f" on {', '.join(clusters)}" if clusters else ""
    return f"{len(items)} updating runs{where}"


def render_html(reports: list[RunReport], *, title: str | None = None) -> str:
    """One self-contained HTML page: a section per run (and a summary list when there are several)."""
    template = _environment().get_template("report.html.j2")
    return template.render(
        title=title or _default_title(reports),
        runs=[_view(r, i) for i, r in enumerate(reports, start=1)],
        version=__version__,
    )


def render_html_fragment(report: RunReport) -> Markup:
    """One run's report as markup to place in another page (the dashboard's report page): the same
    sections as the export, escaped alike, under `.cau-report`; style it with `report_stylesheet()`."""
    template = _environment().get_template("_fragment.html.j2")
    return Markup(template.render(runs=[_view(report, 1)], version=__version__))  # escaped by the template


def report_stylesheet() -> str:
    """The report's CSS (report.css), which the exported page inlines."""
    return _environment().get_template("report.css").render()
