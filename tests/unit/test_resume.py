"""A coordinator stopped at any point resumes by replaying its journal and observing the cluster:
no update installed twice, no node restarted twice, nothing left in maintenance, roles back home."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cau.clock import VirtualClock, run_virtual
from cau.domain.profile import build_profile
from cau.journal.events import EventKind
from cau.service import Service
from tests.support import finished, installs, spec, write_cluster

ROLES = [
    {"name": "vm", "kind": "live", "owner": "n1", "preferred_owners": ["n1"], "cpu": 2, "memory_gb": 2},
    {"name": "sql", "kind": "failover", "owner": "n2", "preferred_owners": ["n2"], "cpu": 2, "memory_gb": 2},
    {"name": "pin", "kind": "pinned", "owner": "n3", "cpu": 1, "memory_gb": 1},
]
UPDATES = [
    {"id": "kernel", "restart": True, "install_seconds": 40},
    {"id": "libc", "install_seconds": 20},
    {"id": "agent", "after": ["libc"], "install_seconds": 5},  # second-order
]


def _svc(home: Path, config: Path, hour: int) -> Service:
    return Service(home, config, clock=VirtualClock(datetime(2026, 11, 1, hour, 0, tzinfo=UTC)))


def _interrupted_run(home: Path, config: Path, cut: int) -> str | None:
    """Start a run and cancel its coordinator right after journal event number `cut`.
    Returns the run id, or None if the run finished first."""

    async def main() -> str | None:
        svc = _svc(home, config, 2)
        me = asyncio.current_task()
        seen = 0
        run_ids: list[str] = []

        def on_event(ev: Any) -> None:
            nonlocal seen
            seen += 1
            run_ids.append(ev.run_id)
            if seen == cut and me is not None:
                me.cancel()

        try:
            await svc.run("c1", build_profile(None, {}), on_event=on_event)
        except asyncio.CancelledError:
            return run_ids[0]
        finally:
            svc.close()
        return None

    return run_virtual(main())


def _resume(home: Path, config: Path):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        svc = _svc(home, config, 3)  # the next coordinator comes an hour later
        try:
            return await svc.run("c1", build_profile(None, {}))
        finally:
            svc.close()

    return finished(home, "c1", run_virtual(main()))


def _event_count(tmp: Path, config: Path) -> int:
    async def main() -> int:
        svc = _svc(tmp, config, 2)
        out = await svc.run("c1", build_profile(None, {}))
        n = len(await svc.store.events(out.run_id))
        svc.close()
        return n

    return run_virtual(main())


@pytest.mark.slow
def test_resume_after_interruption_at_every_journal_event(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(3, roles=ROLES, updates=UPDATES))
    total = _event_count(tmp_path / "probe", config)
    assert total > 60
    for cut in range(2, total):
        home = tmp_path / f"cut{cut}"
        first = _interrupted_run(home, config, cut)
        if first is None:
            continue
        svc = Service(home)
        journal_ended = any(e.kind is EventKind.RUN_FINISHED for e in asyncio.run(svc.store.events(first)))
        svc.close()
        done = _resume(home, config)
        report = done.report
        where = f"interrupted after event {cut}"
        assert report.status == "Succeeded", (where, report.message)
        # every node has every update, each installed exactly once
        got = installs(done.events)
        assert sorted(got) == sorted(set(got)), where
        for name in ("n1", "n2", "n3"):
            assert sorted(done.state["nodes"][name]["installed"]) == ["agent", "kernel", "libc"], where
            assert done.state["nodes"][name]["restarts"] == 1, where  # never restarted twice
            assert not done.state["nodes"][name]["in_maintenance"], where
        assert {r: v["owner"] for r, v in done.state["roles"].items()} == {
            "vm": "n1",
            "sql": "n2",
            "pin": "n3",
        }
        assert done.state["violations"] == [], where
        # every step begun was finished (an intent without its outcome is work left half-done:
        # e.g. a failback killed half-way that the resumed run never finished)
        begun = {(e.node, e.key) for e in done.events if e.kind is EventKind.INTENT}
        ended = {(e.node, e.key) for e in done.events if e.kind is EventKind.OUTCOME}
        assert begun == ended, (where, sorted(begun - ended))
        if done.outcome.run_id == first:
            coordinators = [e for e in done.events if e.kind is EventKind.COORDINATOR]
            # a journal that already ended is only saved (record and report), not run again
            assert len(coordinators) == (1 if journal_ended else 2), where
        else:
            # interrupted after it had finished: that run is complete, with its report
            svc = Service(home)
            record = asyncio.run(svc.store.get_run(first))
            assert record is not None and record.status is not None, where
            assert asyncio.run(svc.store.get_report(first)) is not None, where
            svc.close()


@pytest.mark.parametrize("cut", [30, 45])
def test_resumed_run_keeps_its_original_options(tmp_path: Path, cut: int) -> None:
    config = write_cluster(tmp_path, spec(3, roles=ROLES, updates=UPDATES))

    async def first() -> None:
        svc = _svc(tmp_path, config, 2)
        me = asyncio.current_task()
        seen = 0

        def on_event(_ev: object) -> None:
            nonlocal seen
            seen += 1
            if seen == cut and me is not None:
                me.cancel()

        with contextlib.suppress(asyncio.CancelledError):
            await svc.run("c1", build_profile(None, {"failback_mode": "none"}), on_event=on_event)
        svc.close()

    run_virtual(first())
    notices: list[str] = []

    async def second():  # type: ignore[no-untyped-def]
        svc = _svc(tmp_path, config, 3)
        out = await svc.run(
            "c1",
            build_profile(None, {"failback_mode": "immediate"}),
            on_notice=notices.append,
            profile_given=True,
        )
        svc.close()
        return out

    out = run_virtual(second())
    assert out.report.profile["failback_mode"] == "none"
    assert any("resuming run" in n for n in notices)
    assert any("ignored" in n for n in notices)


def test_a_stop_requested_while_no_coordinator_runs_takes_effect_on_resume(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(3, roles=ROLES, updates=UPDATES))
    first = _interrupted_run(tmp_path, config, 30)  # n1 is in the middle of its update
    assert first is not None
    svc = _svc(tmp_path, config, 3)
    asyncio.run(svc.stop("c1", by="tester", reason="maintenance window closed"))
    svc.close()
    done = _resume(tmp_path, config)
    assert done.outcome.run_id == first
    assert done.report.status == "Canceled" and "maintenance window closed" in (done.report.message or "")
    assert not any(n["in_maintenance"] for n in done.state["nodes"].values())
    assert [n.status for n in done.report.nodes][1:] == ["Canceled", "Canceled"]


def test_nodes_canceled_before_starting_stay_finished_across_a_resume(tmp_path: Path) -> None:
    # A stopped run cancels the nodes it never started, one journal event each; a coordinator
    # killed among those events must not cancel them a second time when the run resumes.
    config = write_cluster(tmp_path, spec(3, roles=ROLES, updates=UPDATES))
    first = _interrupted_run(tmp_path, config, 30)
    assert first is not None
    svc = _svc(tmp_path, config, 3)
    asyncio.run(svc.stop("c1", by="tester", reason="window closed"))
    svc.close()

    async def killed_after_n2_is_canceled() -> None:
        svc = _svc(tmp_path, config, 3)
        me = asyncio.current_task()

        def on_event(ev: Any) -> None:
            if ev.kind is EventKind.NODE_FINISHED and ev.node == "n2" and me is not None:
                me.cancel()

        with contextlib.suppress(asyncio.CancelledError):
            await svc.run("c1", build_profile(None, {}), on_event=on_event)
        svc.close()

    run_virtual(killed_after_n2_is_canceled())
    done = _resume(tmp_path, config)
    assert done.outcome.run_id == first
    finished_nodes = [e.node for e in done.events if e.kind is EventKind.NODE_FINISHED]
    assert sorted(finished_nodes) == ["n1", "n2", "n3"]
    assert done.report.status == "Canceled"


def test_the_first_reason_to_stop_stays_the_reason_after_a_resume(tmp_path: Path) -> None:
    # The failure budget stopped the run; its coordinator died; an operator then asked it to stop
    # too. The resumed run ends Failed for the budget, not Canceled by the operator.
    bad = [{"id": "bad", "install_seconds": 5, "fail_installs": {"*": 9}}]
    config = write_cluster(tmp_path, spec(3, roles=ROLES, updates=bad))
    profile = build_profile(None, {"max_failed_nodes": 0, "max_retries_per_node": 0})

    async def killed_once_the_budget_stops_it() -> None:
        svc = _svc(tmp_path, config, 2)
        me = asyncio.current_task()

        def on_event(ev: Any) -> None:
            if ev.kind is EventKind.STOP_REQUESTED and me is not None:
                me.cancel()

        with contextlib.suppress(asyncio.CancelledError):
            await svc.run("c1", profile, on_event=on_event)
        svc.close()

    run_virtual(killed_once_the_budget_stops_it())
    svc = _svc(tmp_path, config, 3)
    asyncio.run(svc.stop("c1", by="tester", reason="going home"))
    svc.close()
    done = _resume(tmp_path, config)
    assert (done.report.status, done.report.error_id) == ("Failed", "MaxFailedNodesExceeded")
    stops = [e for e in done.events if e.kind is EventKind.STOP_REQUESTED]
    assert [s.data["error_id"] for s in stops] == ["MaxFailedNodesExceeded"]


def test_a_node_stopped_between_passes_says_it_was_stopped(tmp_path: Path) -> None:
    # n1's first pass installs kernel and libc; "agent" needs a second pass, which the stop
    # prevents: n1 was stopped with agent still to install, not "failed after all retries".
    from cau.domain.results import ErrorId
    from cau.engine.coordinator import Coordinator
    from tests.support import run_cluster

    config = write_cluster(tmp_path, spec(3, roles=ROLES, updates=UPDATES))
    coordinators: list[Coordinator] = []

    def on_event(ev: Any) -> None:
        if ev.kind is EventKind.OUTCOME and ev.node == "n1" and ev.key == "install/1/sandbox":
            coordinators[0].request_stop(ErrorId.STOPPED_BY_OPERATOR, "stopped by tester", by="tester")

    async def on_coordinator(coordinator: Coordinator) -> None:
        coordinators.append(coordinator)

    done = run_cluster(tmp_path, config, on_event=on_event, on_coordinator=on_coordinator)
    n1 = {n.name: n for n in done.outcome.report.nodes}["n1"]
    assert n1.status == "Canceled" and n1.error_id == "StoppedByOperator", (n1.status, n1.message)
    assert "stopped" in (n1.message or "") and "agent" in (n1.message or "")
    assert "after all retries" not in (n1.message or "")
    assert not done.state["nodes"]["n1"]["in_maintenance"]


def test_a_node_found_in_maintenance_is_left_there_without_a_word_of_leaving_or_failback(
    tmp_path: Path,
) -> None:
    from cau.journal.events import Progress, WarningEvent
    from tests.support import node, run_cluster

    nodes = [node("n1", in_maintenance=True), node("n2"), node("n3")]
    config = write_cluster(tmp_path, spec(nodes, updates=UPDATES))
    done = run_cluster(tmp_path, config, allow_nodes_in_maintenance=True)
    assert done.outcome.report.status == "Succeeded", done.outcome.report.message
    assert done.state["nodes"]["n1"]["in_maintenance"]  # as the run found it
    said = [e.payload for e in done.events if e.node == "n1"]
    lines = [p.message for p in said if isinstance(p, Progress | WarningEvent)]
    assert "leaving maintenance" not in lines and "staying in maintenance, as before the run" in lines
    assert not any("failed back" in line or "failing roles back" in line for line in lines), lines


def test_a_resumed_run_keeps_who_started_it_and_records_who_resumed_it(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(3, roles=ROLES, updates=UPDATES))

    async def first() -> None:
        svc = _svc(tmp_path, config, 2)
        me = asyncio.current_task()
        seen = 0

        def on_event(_ev: object) -> None:
            nonlocal seen
            seen += 1
            if seen == 30 and me is not None:
                me.cancel()

        with contextlib.suppress(asyncio.CancelledError):
            await svc.run("c1", build_profile(None, {}), on_event=on_event, actor="alice@ops1 (cli)")
        svc.close()

    run_virtual(first())

    async def second():  # type: ignore[no-untyped-def]
        svc = _svc(tmp_path, config, 3)
        try:
            return await svc.run("c1", build_profile(None, {}), actor="token:night-shift")
        finally:
            svc.close()

    report = run_virtual(second()).report
    assert report.status == "Succeeded"
    assert report.started_by == "alice@ops1 (cli)"
    assert [(c.resumed, c.by) for c in report.coordinators] == [
        (False, "alice@ops1 (cli)"),
        (True, "token:night-shift"),
    ]
