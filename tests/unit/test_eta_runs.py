"""The ETA on a sandbox cluster in virtual time: a forecast learnt from the first run, the live
ETA in `cau status`'s report, and a run that cannot fit refused or warned about."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from cau.cli.render_text import forecast_text, run_summary
from cau.clock import run_virtual
from cau.domain.estimate import Basis
from cau.domain.profile import build_profile
from cau.domain.results import RunState
from cau.domain.runs import ReportQuery
from cau.errors import PreflightError
from cau.journal.events import EventKind
from cau.journal.progress import replay
from cau.reports.build import build_report
from cau.views import RunForecast
from tests.support import run_cluster, service, spec, write_cluster


def text(renderable: object) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def preview(home: Path, config: Path, **profile: object) -> RunForecast:
    async def go() -> RunForecast:
        svc = service(home, config)
        try:
            return await svc.preview_run("c1", build_profile(None, dict(profile)))
        finally:
            svc.close()

    return run_virtual(go())


def test_the_second_run_is_predicted_from_the_first_and_shows_a_live_eta(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(4))
    rough = preview(tmp_path, config)
    assert rough.basis is Basis.DEFAULT and "rough" in text(forecast_text(rough))
    first = run_cluster(tmp_path, config)
    assert first.report.predicted_seconds == pytest.approx(rough.predicted_seconds)
    (tmp_path / "sandbox" / "c1.json").unlink()  # the cluster as it was, the store with its history

    learnt = preview(tmp_path, config)
    shown = text(forecast_text(learnt))
    assert learnt.basis is Basis.NODE and learnt.history_runs == 1
    assert "from 1 past run(s)" in shown and "1. n" in shown and "4. n" in shown
    second = run_cluster(tmp_path, config)
    took = second.report.duration_seconds
    assert abs(second.report.predicted_seconds - took) <= 0.2 * took

    # `cau status` half-way through the second run: its report carries an ETA near the real end
    run = second.outcome
    created = next(e.ts for e in second.events if e.kind is EventKind.RUN_CREATED)
    end = max(e.ts for e in second.events)
    middle = created + (end - created) / 2
    svc = service(tmp_path, config)
    try:
        record = asyncio.run(svc.get_run(run.run_id))
    finally:
        svc.close()
    assert record is not None
    running = replace(record, state=RunState.RUNNING, status=None, finished=None)
    partial = replay(e for e in second.events if e.ts <= middle)
    report = build_report(running, partial, now=middle)
    assert report.eta is not None and report.eta.basis is Basis.NODE
    assert abs((report.eta.eta - end).total_seconds()) <= 0.2 * took
    assert "ETA " in text(run_summary(report))
    assert second.report.eta is None  # finished: no ETA, the prediction against what it took
    assert "predicted" in text(run_summary(second.report))


def test_a_run_that_cannot_fit_is_refused_or_warned_as_the_profile_says(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(3))
    run_cluster(tmp_path, config)
    (tmp_path / "sandbox" / "c1.json").unlink()
    predicted = preview(tmp_path, config).predicted_seconds
    too_short = f"{int(predicted // 2)}s"

    async def refused() -> None:
        svc = service(tmp_path, config)
        try:
            await svc.run("c1", build_profile(None, {"stop_after": too_short, "on_overrun": "refuse"}))
        finally:
            svc.close()

    with pytest.raises(PreflightError, match="stop_after") as caught:
        run_virtual(refused())
    assert "predicted to take" in str(caught.value) and "on_overrun = refuse" in str(caught.value)
    assert "nothing was changed" in (caught.value.hint or "")
    svc = service(tmp_path, config)
    try:
        assert len(asyncio.run(svc.runs(ReportQuery(cluster="c1")))) == 1  # no run was created
    finally:
        svc.close()
    state = json.loads((tmp_path / "sandbox" / "c1.json").read_text())  # the cluster was not touched
    assert all(not n["in_maintenance"] and not n["installed"] for n in state["nodes"].values())

    warned = run_cluster(tmp_path, config, stop_after=too_short)  # on_overrun = warn, the default
    assert any("predicted to take" in w and "stop_after" in w for w in warned.report.warnings)
