"""Measured availability in the report: the probes' journal events folded into outages and
counts, and every outage attributed to the nodes' steps that were in progress at the time (pure).

A probe's numbers survive a coordinator crash because they are in the journal: each coordinator
(a "session") journals transitions and cumulative counts; the report adds the sessions up. An
outage that was still going on when a coordinator died ends, in the report, at the last moment it
was known to be down, and says so.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cau.journal.events import ProbeDown, ProbeSummary, ProbeUp
from cau.reports.model import NodeReport, OutageReport, RoleAvailability, StepRef

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
    sessions: dict[str, ProbeSummary] = field(default_factory=dict)  # the last summary of each
    outages: list[ProbeOutage] = field(default_factory=list)

    def total(self, counter: Callable[[ProbeSummary], int]) -> int:
        return sum(counter(s) for s in self.sessions.values())

    @property
    def p50_ms(self) -> float | None:
        # across sessions: weighted by answers (an approximation)
        values = [(s.p50_ms, s.ok) for s in self.sessions.values() if s.p50_ms is not None]
        weight = sum(w for _, w in values)
        if not values or not weight:
            return None
        return round(sum(v * w for v, w in values) / weight, 3)

    @property
    def p99_ms(self) -> float | None:
        values = [s.p99_ms for s in self.sessions.values() if s.p99_ms is not None]
        return max(values) if values else None  # across sessions: the worst one

    @property
    def max_ms(self) -> float | None:
        values = [s.max_ms for s in self.sessions.values() if s.max_ms is not None]
        return max(values) if values else None


def fold_probe_events(
    events: Sequence[ProbeDown | ProbeUp | ProbeSummary], times: Sequence[datetime], *, running: bool = False
) -> list[ProbeFigures]:
    """`events` with the times they were journaled at (`times`). An outage never closed is going
    on (up to the end of the run, or now) when the probe's last coordinator ended measuring with
    it (its final summary) or, `running`, is still measuring; otherwise a later coordinator took
    over (after a crash or a pause) and the outage ends at the last moment it was known to be down."""
    probes: dict[str, ProbeFigures] = {}
    latest: dict[str, str] = {}  # probe -> the session of its last event
    open_downs: dict[tuple[str, str, datetime], tuple[datetime, ProbeDown]] = {}
    last_seen: dict[tuple[str, str], tuple[datetime, ProbeSummary]] = {}  # (probe, session)
    for ev, at in zip(events, times, strict=True):
        if not ev.probe:
            continue
        fig = probes.setdefault(ev.probe, ProbeFigures(ev.probe, ev.role or ev.probe))
        latest[ev.probe] = ev.session
        match ev:
            case ProbeDown():
                open_downs[(ev.probe, ev.session, ev.started)] = (at, ev)
            case ProbeUp():
                open_downs.pop((ev.probe, ev.session, ev.started), None)
                fig.outages.append(ProbeOutage(ev.started, ev.ended, ev.failed_checks, list(ev.errors)))
            case ProbeSummary():
                fig.sessions[ev.session] = ev
                fig.targets = list(ev.targets) or fig.targets
                fig.interval_ms = ev.interval_ms if ev.interval_ms is not None else fig.interval_ms
                last_seen[(ev.probe, ev.session)] = (at, ev)
    # Outages never closed by a probe_up: still down at the end, or cut short by a crash.
    for (name, session, started), (at, down_event) in open_downs.items():
        seen_at, summary = last_seen.get((name, session), (at, None))
        down = summary.down if summary is not None else None
        errors = list(down.errors) if down is not None and down.errors else [down_event.error or "failed"]
        failed_checks = down.failed_checks if down is not None and down.failed_checks else 1
        if session == latest[name] and ((summary is not None and summary.final) or running):
            outage = ProbeOutage(started, None, failed_checks, errors)
        else:
            outage = ProbeOutage(started, max(seen_at, started), failed_checks, [*errors, INTERRUPTED])
        probes[name].outages.append(outage)
    for fig in probes.values():
        fig.outages.sort(key=lambda o: o.started)
    return list(probes.values())


# --- attribution -------------------------------------------------------------------------------


class StepIndex:
    """Every node's steps by start time, so finding the steps during an outage costs the steps
    near it, not every step of the run (a report of a large run has one outage per move)."""

    def __init__(self, nodes: Sequence[NodeReport], run_end: datetime) -> None:
        # (started, node's position, step's position, finished): the positions keep the
        # answer in the order reports always gave (node by node, steps as they came).
        spans = sorted(
            (s.started, i, j, s.finished or run_end)
            for i, node in enumerate(nodes)
            for j, s in enumerate(node.steps)
        )
        self._starts = [span[0] for span in spans]
        self._spans = spans
        self._nodes = nodes
        self._longest = max((f - st for st, _, _, f in spans), default=timedelta(0))

    def during(self, start: datetime, end: datetime) -> list[StepRef]:
        """The steps of every node that overlap [start, end], with the overlap in seconds."""
        # A step overlapping [start, end] started at most `longest` before `start`, and no later
        # than `end`.
        lo_i = bisect.bisect_left(self._starts, start - self._longest)
        hi_i = bisect.bisect_right(self._starts, end)
        found: list[tuple[int, int, StepRef]] = []
        for started, i, j, s_end in self._spans[lo_i:hi_i]:
            lo, hi = max(start, started), min(end, s_end)
            if hi > lo or (start == end and started <= start <= s_end):
                node = self._nodes[i]
                seconds = round(max(0.0, (hi - lo).total_seconds()), 3)
                found.append((i, j, StepRef(node=node.name, step=node.steps[j].step, seconds=seconds)))
        found.sort(key=lambda f: (f[0], f[1]))
        # One entry per node and step kind (a step retried twice during one outage is one entry).
        merged: dict[tuple[str, str], StepRef] = {}
        for _, _, ref in found:
            key = (ref.node, ref.step)
            if key in merged:
                merged[key] = StepRef(
                    node=ref.node, step=ref.step, seconds=round(merged[key].seconds + ref.seconds, 3)
                )
            else:
                merged[key] = ref
        return list(merged.values())  # node by node, each node's steps in the order they started


def attribute(
    outages: Sequence[OutageReport], nodes: Sequence[NodeReport], run_end: datetime
) -> list[OutageReport]:
    index = StepIndex(nodes, run_end)
    out = []
    for o in outages:
        end = o.ended or run_end
        out.append(o.model_copy(update={"during": index.during(o.started, min(end, run_end))}))
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
            "probes_sent": sum(f.total(lambda s: s.sent) for f in figs),
            "probes_ok": sum(f.total(lambda s: s.ok) for f in figs),
            "probes_failed": sum(f.total(lambda s: s.failed) for f in figs),
            "probes_late": sum(f.total(lambda s: s.late) for f in figs),
            "response_ms_p50": max(p50) if p50 else None,
            "response_ms_p99": max(p99) if p99 else None,
            "response_ms_max": max(mx) if mx else None,
        }
    )
