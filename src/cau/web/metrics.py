"""Prometheus metrics at /metrics.

Counts are read from the store at scrape time (so runs of `cau run` in other processes count too);
step durations are observed as the runs this server coordinates journal their outcomes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cau.domain.results import RunState
from cau.domain.runs import ReportQuery
from cau.journal.events import JournalEvent, StepIntent, StepOutcome
from cau.reports.model import RunReport
from cau.service import Service

_RECENT_RUNS = 1000  # scrape cost stays bounded on a store with a long history

_STEP_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


@dataclass
class _StoreFigures:
    """What the store says at a scrape: read asynchronously before the collector yields it."""

    by_status: dict[tuple[str, str], int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    in_maintenance: dict[str, int] = field(default_factory=dict)


async def read_figures(svc: Service) -> _StoreFigures:
    figures = _StoreFigures()
    latest: dict[str, RunReport] = {}
    for run in await svc.runs(ReportQuery(last=_RECENT_RUNS)):
        status = run.status.value if run.status else run.state.value
        figures.by_status[(run.cluster, status)] = figures.by_status.get((run.cluster, status), 0) + 1
        report = await svc.run_report(run)
        if run.state is RunState.FINISHED:
            figures.failures[run.cluster] = figures.failures.get(run.cluster, 0) + report.count("Failed")
        latest[run.cluster] = report
    for cluster, report in latest.items():
        figures.in_maintenance[cluster] = sum(
            1
            for n in report.nodes
            if n.left_in_maintenance or (n.state == "running" and n.maintenance_started is not None)
        )
    return figures


class _StoreCollector(Collector):
    def __init__(self) -> None:
        self.figures = _StoreFigures()

    def collect(self) -> Iterable[Metric]:
        by_status = self.figures.by_status
        in_maintenance = self.figures.in_maintenance
        failures = self.figures.failures
        runs_metric = GaugeMetricFamily(
            "cau_runs",
            "Updating Runs in the store by cluster and status (or state while unfinished)",
            labels=["cluster", "status"],
        )
        for (cluster, status), count in sorted(by_status.items()):
            runs_metric.add_metric([cluster, status], count)
        yield runs_metric
        maint = GaugeMetricFamily(
            "cau_nodes_in_maintenance",
            "Nodes in maintenance by cau: in an unfinished run, or left there by the last run",
            labels=["cluster"],
        )
        for cluster, count in sorted(in_maintenance.items()):
            maint.add_metric([cluster], count)
        yield maint
        failed = GaugeMetricFamily(
            "cau_node_failures",
            "Nodes that ended Failed, over the finished runs in the store",
            labels=["cluster"],
        )
        for cluster, count in sorted(failures.items()):
            failed.add_metric([cluster], count)
        yield failed


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._store = _StoreCollector()
        self.registry.register(self._store)
        self.steps = Histogram(
            "cau_step_duration_seconds",
            "Duration of run steps coordinated by this server (maintenance, install, restart, ...)",
            ["step", "ok"],
            buckets=_STEP_BUCKETS,
            registry=self.registry,
        )
        self._open: dict[tuple[str, str], datetime] = {}

    async def refresh(self, svc: Service) -> None:
        """Read the store's figures (before each scrape: the collector itself cannot wait)."""
        self._store.figures = await read_figures(svc)

    def observe(self, event: JournalEvent) -> None:
        """Fed every journal event of this server's runs: intent..outcome pairs are step durations."""
        p = event.payload
        if isinstance(p, StepIntent):
            self._open[(event.run_id, f"{event.node}/{p.key}")] = event.ts
        elif isinstance(p, StepOutcome):
            started = self._open.pop((event.run_id, f"{event.node}/{p.key}"), None)
            if started is not None:
                ok = "true" if p.ok else "false"
                self.steps.labels(p.step.value, ok).observe(max((event.ts - started).total_seconds(), 0.0))
