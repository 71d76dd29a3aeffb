"""Runs with a maintenance window, in virtual time: no node enters maintenance outside it, a run
longer than a window pauses at its end with nothing in maintenance, and the next `cau run` in the
next window resumes it where it stopped."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cau.clock import VirtualClock, run_virtual
from cau.domain.profile import build_profile
from cau.domain.window import MaintenanceWindow
from cau.engine.coordinator import RunOutcome
from cau.errors import ProfileError
from cau.journal.events import EventKind, JournalEvent
from cau.service import Service
from tests.support import finished, installs, spec, write_cluster

# Each node takes about three minutes (scan 5s, installs 60s + 20s, a 60s restart, drain and
# failback): a five-minute window holds one or two nodes of four.
WINDOW = "daily@02:00 for 5m"
DAY1 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)  # the window is open from 02:00 to 02:05 UTC


def _run(home: Path, config: Path, at: datetime, **options: object) -> RunOutcome:
    async def main() -> RunOutcome:
        svc = Service(home, config, clock=VirtualClock(at))
        try:
            return await svc.run("c1", build_profile(None, {"window": WINDOW, **options}))
        finally:
            svc.close()

    return run_virtual(main())


def _events(home: Path, run_id: str) -> list[JournalEvent]:
    svc = Service(home)
    try:
        return asyncio.run(svc.store.events(run_id))
    finally:
        svc.close()


def _in_maintenance(home: Path, config: Path) -> list[str]:
    import json

    state = json.loads((home / "sandbox" / "c1.json").read_text())
    return [name for name, n in state["nodes"].items() if n["in_maintenance"]]


def _entries(events: list[JournalEvent]) -> list[tuple[str, datetime]]:
    """(node, when) of every attempt to enter maintenance (the intent is journaled just before)."""
    return [
        (e.node, e.ts)
        for e in events
        if e.kind is EventKind.INTENT and e.step == "enter_maintenance" and e.node is not None
    ]


def _resume_daily(
    home: Path, config: Path, first: RunOutcome, **options: object
) -> tuple[list[RunOutcome], list[JournalEvent]]:
    """After `first` (at DAY1 02:00), `cau run` at 02:00 each next day until the run finishes."""
    outcomes = [first]
    day = DAY1
    while outcomes[-1].report is None:
        assert len(outcomes) < 10, outcomes[-1]
        day += timedelta(days=1)
        outcomes.append(_run(home, config, day, **options))
    return outcomes, _events(home, first.run_id)


def test_a_run_longer_than_its_window_pauses_at_the_end_and_resumes_in_the_next(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(4))
    first = _run(tmp_path, config, DAY1)
    # the window closed with nodes still to do: paused, not finished, nothing in maintenance
    assert first.state.value == "Paused" and first.error_id == "OutsideMaintenanceWindow"
    assert first.message is not None
    assert "daily@02:00 for 5m in UTC" in first.message
    assert "opens next at 2026-11-02 02:00 UTC" in first.message
    assert _in_maintenance(tmp_path, config) == []
    after_day1 = _events(tmp_path, first.run_id)
    done_day1 = {e.node for e in after_day1 if e.kind is EventKind.NODE_FINISHED}
    assert done_day1 and len(done_day1) < 4
    assert not any(e.kind is EventKind.RUN_FINISHED for e in after_day1)

    outcomes, events = _resume_daily(tmp_path, config, first)
    done = finished(tmp_path, "c1", outcomes[-1])
    report = done.report
    assert report.status == "Succeeded" and [n.status for n in report.nodes] == ["Succeeded"] * 4
    # every update installed exactly once on every node, every node restarted once
    assert sorted(Counter(installs(events)).values()) == [1] * 8
    assert all(n.restarts == 1 for n in report.nodes)
    # no node started, nor entered maintenance, outside a window
    window = MaintenanceWindow.parse(WINDOW)
    for node, ts in _entries(events):
        assert window.contains(ts), (node, ts)
    started = [(e.node, e.ts) for e in events if e.kind is EventKind.NODE_STARTED]
    assert len(started) == 4 and all(window.contains(ts) for _, ts in started), started
    # nodes finished in the first window were not scanned again
    scans = Counter(e.node for e in events if e.kind is EventKind.INTENT and e.step == "scan")
    scans_day1 = Counter(e.node for e in after_day1 if e.kind is EventKind.INTENT and e.step == "scan")
    for node in done_day1:
        assert scans[node] == scans_day1[node], node
    # the report shows each pause, naming the window and the next opening, and each resume
    assert len(report.pauses) == len(outcomes) - 1 >= 1
    assert all(p.error_id == "OutsideMaintenanceWindow" for p in report.pauses)
    assert "opens next at 2026-11-02 02:00 UTC" in report.pauses[0].message
    assert sum(1 for c in report.coordinators if c.resumed) == len(outcomes) - 1
    assert _in_maintenance(tmp_path, config) == []


def test_cau_run_while_the_window_is_closed_says_when_it_opens_and_changes_nothing(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(4))
    first = _run(tmp_path, config, DAY1)
    assert first.state.value == "Paused"
    before = _events(tmp_path, first.run_id)
    noon = _run(tmp_path, config, DAY1 + timedelta(hours=10))
    assert noon.state.value == "Paused" and noon.error_id == "OutsideMaintenanceWindow"
    assert noon.run_id == first.run_id
    assert noon.message is not None and "opens next at 2026-11-02 02:00 UTC" in noon.message
    assert len(_events(tmp_path, first.run_id)) == len(before)  # not one event more


def test_a_new_run_outside_its_window_starts_no_node(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(3))
    out = _run(tmp_path, config, DAY1 + timedelta(hours=1))
    assert out.state.value == "Paused" and out.error_id == "OutsideMaintenanceWindow"
    events = _events(tmp_path, out.run_id)
    assert not any(e.kind is EventKind.NODE_STARTED for e in events)
    assert [e.kind for e in events][-1] is EventKind.RUN_PAUSED
    # in its window the same run goes ahead (three nodes: this window and the next)
    later, _ = _resume_daily(tmp_path, config, out)
    assert {o.run_id for o in later} == {out.run_id}
    assert later[-1].report is not None and later[-1].report.status == "Succeeded"


def test_a_node_waiting_at_the_gate_when_the_window_closes_does_not_go_in(tmp_path: Path) -> None:
    # Two nodes start together; scanning takes 200s, so the second waits at the gate (quorum lets
    # one of four go down at a time) until the first is back, after 02:05: it must wait for the
    # next window, where it goes on from its recorded scan.
    config = write_cluster(tmp_path, spec(4, scan_seconds=200))
    first = _run(tmp_path, config, DAY1, max_parallel_nodes=2)
    assert first.state.value == "Paused"
    day1 = _events(tmp_path, first.run_id)
    waited = [e.node for e in day1 if e.kind is EventKind.WAITING]
    assert waited, "a node should have waited at the gate"
    stopped = waited[0]
    assert stopped not in {n for n, _ in _entries(day1)}  # never went in
    assert not any(e.kind is EventKind.NODE_FINISHED and e.node == stopped for e in day1)
    assert _in_maintenance(tmp_path, config) == []

    outcomes, events = _resume_daily(tmp_path, config, first, max_parallel_nodes=2)
    report = finished(tmp_path, "c1", outcomes[-1]).report
    assert report.status == "Succeeded"
    window = MaintenanceWindow.parse(WINDOW)
    assert all(window.contains(ts) for _, ts in _entries(events))
    # its scan of the first day was used, not repeated before it installed
    first_scan = [e for e in events if e.kind is EventKind.INTENT and e.step == "scan" and e.node == stopped]
    assert first_scan[0].ts < DAY1 + timedelta(minutes=5)
    assert sorted(Counter(installs(events)).values()) == [1] * 8


def test_the_window_is_a_run_option_with_its_help(tmp_path: Path) -> None:
    from cau.domain.profile import PER_RUN_OPTIONS, RunProfile

    assert "window" in PER_RUN_OPTIONS
    assert "e.g. 'daily@01:00 for 4h in Europe/Berlin'" in (
        RunProfile.model_fields["window"].description or ""
    )


def test_profile_window_option_is_checked_and_canonical() -> None:
    p = build_profile(None, {"window": "daily@01:00 for 240m in Europe/Berlin"})
    assert p.window == "daily@01:00 for 4h in Europe/Berlin"
    assert p.maintenance_window == MaintenanceWindow.parse("daily@01:00 for 4h in Europe/Berlin")
    with pytest.raises(ProfileError) as caught:
        build_profile(None, {"window": "daily@1am for 4h"})
    assert "window" in str(caught.value) and "'1am' is not a time of day" in str(caught.value)
    assert "--window" in str(caught.value)


def test_a_run_stopped_while_it_waits_for_its_window_ends_at_once(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(4))
    first = _run(tmp_path, config, DAY1)
    assert first.state.value == "Paused"

    async def stop_then_run() -> RunOutcome:
        svc = Service(tmp_path, config, clock=VirtualClock(DAY1 + timedelta(hours=10)))
        try:
            await svc.stop("c1", by="tester", reason="change freeze")
            return await svc.run("c1", build_profile(None, {}))
        finally:
            svc.close()

    out = run_virtual(stop_then_run())
    report = finished(tmp_path, "c1", out).report
    assert out.state.value == "Finished" and report.status == "Canceled"
    assert report.error_id == "StoppedByOperator" and "change freeze" in (report.message or "")
    statuses = [n.status for n in report.nodes]
    assert "Succeeded" in statuses and "Canceled" in statuses
    events = _events(tmp_path, out.run_id)
    window = MaintenanceWindow.parse(WINDOW)
    assert all(window.contains(ts) for _, ts in _entries(events))  # the stop put no node in
    assert _in_maintenance(tmp_path, config) == []


def test_installing_in_service_does_not_begin_after_the_window(tmp_path: Path) -> None:
    # drain when-restart-needed installs before draining. The first node's scan ends at 02:05:10,
    # after the window: it installs nothing until the next window.
    config = write_cluster(tmp_path, spec(3, scan_seconds=310))
    first = _run(tmp_path, config, DAY1, drain="when-restart-needed")
    assert first.state.value == "Paused"
    assert not any(e.step == "install" for e in _events(tmp_path, first.run_id))
    outcomes, events = _resume_daily(tmp_path, config, first, drain="when-restart-needed")
    assert finished(tmp_path, "c1", outcomes[-1]).report.status == "Succeeded"
    window = MaintenanceWindow.parse(WINDOW)
    install_starts = [e.ts for e in events if e.kind is EventKind.INTENT and e.step == "install"]
    assert install_starts and all(window.contains(ts) for ts in install_starts)
    assert sorted(Counter(installs(events)).values()) == [1] * 6
