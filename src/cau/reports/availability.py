"""Measured availability in the report: the probes' journal events folded into outages and
counts, and every outage attributed to the nodes' steps that were in progress at the time (pure).

A probe's numbers survive a coordinator crash because they are in the journal: each coordinator
(a "session") journals transitions and cumulative counts; the report adds the sessions up. An
outage that was still going on when a coordinator died ends, in the report, at the last moment it
was known to be down, and says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cau.reports.model import NodeReport, OutageReport, RoleAvailability, StepRef
from cau.store.base import EventKind, JournalEvent

INTERRUPTED = "measurement interrupted (the coordinator stopped)"


@dataclass
class ProbeOutage:
    started: datetime
    ended: datetime | None  # None: still going on when measuring ended
    failed_checks: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class ProbeFigures:
    probe: str
    role: str
    targets: list[str] = field(default_factory=list)
    interval_ms: float | None = None
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)  # the last summary of each
    outages: list[ProbeOutage] = field(default_factory=list)

    def total(self, key: str) -> int:
        return sum(int(s.get(key) or 0) for s in self.sessions.values())

    def _ms(self, key: str) -> list[tuple[float, int]]:
        return [
            (float(s[key]), int(s.get("ok") or 0)) for s in self.sessions.values() if s.get(key) is not None
        ]

    @property
    def p50_ms(self) -> float | None:
        values = self._ms("p50_ms")  # across sessions: weighted by answers (an approximation)
        weight = sum(w for _, w in values)
        if not values or not weight:
            return None
        return round(sum(v * w for v, w in values) / weight, 3)

    @property
    def p99_ms(self) -> float | None:
        values = self._ms("p99_ms")  # across sessions: the worst one
        return max(v for v, _ in values) if values else None

    @property
    def max_ms(self) -> float | None:
        values = self._ms("max_ms")
        return max(v for v, _ in values) if values else None


def _ts(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def fold_probe_events(events: Iterable[JournalEvent], *, running: bool = False) -> list[ProbeFigures]:
    """An outage never closed is going on (up to the end of the run, or now) when the probe's last
    coordinator ended measuring with it (its final summary) or, `running`, is still measuring;
    otherwise a later coordinator took over (after a crash or a pause) and the outage ends at the
    last moment it was known to be down."""
    probes: dict[str, ProbeFigures] = {}
    latest: dict[str, str] = {}  # probe -> the session of its last event
    open_downs: dict[tuple[str, str, str], JournalEvent] = {}  # (probe, session, started)
    last_seen: dict[tuple[str, str], tuple[datetime, dict[str, Any]]] = {}  # (probe, session)
    for ev in events:
        d = ev.data
        name, session = str(d.get("probe", "")), str(d.get("session", ""))
        if not name:
            continue
        fig = probes.setdefault(name, ProbeFigures(name, str(d.get("role") or name)))
        latest[name] = session
        if ev.kind is EventKind.PROBE_DOWN:
            open_downs[(name, session, str(d.get("started")))] = ev
        elif ev.kind is EventKind.PROBE_UP:
            open_downs.pop((name, session, str(d.get("started"))), None)
            started = _ts(d.get("started"))
            if started is not None:
                fig.outages.append(
                    ProbeOutage(
                        started,
                        _ts(d.get("ended")),
                        int(d.get("failed_checks") or 0),
                        [str(e) for e in d.get("errors") or []],
                    )
                )
        elif ev.kind is EventKind.PROBE_SUMMARY:
            fig.sessions[session] = d
            fig.targets = [str(t) for t in d.get("targets") or fig.targets]
            fig.interval_ms = d.get("interval_ms", fig.interval_ms)
            last_seen[(name, session)] = (ev.ts, d)
    # Outages never closed by a probe_up: still down at the end, or cut short by a crash.
    for (name, session, started_text), ev in open_downs.items():
        started = _ts(started_text)
        if started is None:
            continue
        seen_at, summary = last_seen.get((name, session), (ev.ts, {}))
        down = summary.get("down") or {}
        errors = [str(e) for e in down.get("errors") or [ev.data.get("error") or "failed"]]
        if session == latest[name] and (summary.get("final") or running):
            outage = ProbeOutage(started, None, int(down.get("failed_checks") or 1), errors)
        else:
            outage = ProbeOutage(
                started, max(seen_at, started), int(down.get("failed_checks") or 1), [*errors, INTERRUPTED]
            )
        probes[name].outages.append(outage)
    for fig in probes.values():
        fig.outages.sort(key=lambda o: o.started)
    return list(probes.values())


# --- attribution -------------------------------------------------------------------------------


def steps_during(
    nodes: Sequence[NodeReport], start: datetime, end: datetime, run_end: datetime
) -> list[StepRef]:
    """The steps of every node that overlap [start, end], with the overlap in seconds."""
    found: list[StepRef] = []
    for node in nodes:
        for s in node.steps:
            s_end = s.finished or run_end
            lo, hi = max(start, s.started), min(end, s_end)
            if hi > lo or (start == end and s.started <= start <= s_end):
                found.append(
                    StepRef(
                        node=node.name, step=s.step, seconds=round(max(0.0, (hi - lo).total_seconds()), 3)
                    )
                )
    # One entry per node and step kind (a step retried twice during one outage is one entry).
    merged: dict[tuple[str, str], StepRef] = {}
    for ref in found:
        key = (ref.node, ref.step)
        if key in merged:
            merged[key] = StepRef(
                node=ref.node, step=ref.step, seconds=round(merged[key].seconds + ref.seconds, 3)
            )
        else:
            merged[key] = ref
    return list(merged.values())  # in the order the steps started


def attribute(
    outages: Sequence[OutageReport], nodes: Sequence[NodeReport], run_end: datetime
) -> list[OutageReport]:
    out = []
    for o in outages:
        end = o.ended or run_end
        out.append(
            o.model_copy(update={"during": steps_during(nodes, o.started, min(end, run_end), run_end)})
        )
    return out


def probe_outage_reports(
    figures: Sequence[ProbeFigures], start: datetime, end: datetime
) -> list[OutageReport]:
    reports = []
    for fig in figures:
        for o in fig.outages:
            o_start = max(o.started, start)
            o_end = min(o.ended or end, end)
            if o_end < o_start:
                continue
            reports.append(
                OutageReport(
                    role=fig.role,
                    node=None,
                    reason=o.errors[0].split(" (x")[0] if o.errors else "no answer",
                    started=o_start,
                    ended=o.ended,
                    seconds=round((o_end - o_start).total_seconds(), 3),
                    source="probe",
                    probe=fig.probe,
                    errors=o.errors,
                    failed_checks=o.failed_checks,
                )
            )
    return reports


# --- per role -------------------------------------------------------------------------------------


def role_availability(
    role: str,
    outages: Sequence[OutageReport],
    figures: Sequence[ProbeFigures],
    span_seconds: float,
) -> RoleAvailability:
    """A role's availability: from its probes when it has some, else from the provider's outages
    (the caller passes only the outages of the right source)."""
    mine = [o for o in outages if o.role == role]
    down = sum(o.seconds for o in mine)
    per_step: dict[tuple[str, str], float] = {}
    between = 0.0
    for o in mine:
        for ref in o.during:
            per_step[(ref.node, ref.step)] = per_step.get((ref.node, ref.step), 0.0) + ref.seconds
        if not o.during:
            between += o.seconds
    worst = max(mine, key=lambda o: o.seconds, default=None)
    figs = [f for f in figures if f.role == role]
    availability = RoleAvailability(
        role=role,
        downtime_seconds=round(down, 3),
        outages=len(mine),
        availability_percent=round(100.0 * max(0.0, 1 - down / max(span_seconds, 1e-9)), 3),
        worst_outage_seconds=worst.seconds if worst else 0.0,
        worst_outage_during=worst.attribution if worst else "",
        downtime_by_step=[StepRef(node=n, step=s, seconds=round(v, 3)) for (n, s), v in per_step.items()],
        downtime_between_steps_seconds=round(between, 3),
    )
    if not figs:
        return availability
    p50 = [f.p50_ms for f in figs if f.p50_ms is not None]
    p99 = [f.p99_ms for f in figs if f.p99_ms is not None]
    mx = [f.max_ms for f in figs if f.max_ms is not None]
    return availability.model_copy(
        update={
            "measured": "probe",
            "probes": [f.probe for f in figs],
            "targets": [t for f in figs for t in f.targets],
            "interval_ms": min((f.interval_ms for f in figs if f.interval_ms), default=None),
            "probes_sent": sum(f.total("sent") for f in figs),
            "probes_ok": sum(f.total("ok") for f in figs),
            "probes_failed": sum(f.total("failed") for f in figs),
            "probes_late": sum(f.total("late") for f in figs),
            "response_ms_p50": max(p50) if p50 else None,
            "response_ms_p99": max(p99) if p99 else None,
            "response_ms_max": max(mx) if mx else None,
        }
    )
