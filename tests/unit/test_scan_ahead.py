"""A serial run scans and stages the next node while the one before it restarts and fails back,
and gives it its turn (anything that changes the node) only after that one finished, the
failure budget checked, as a start would be. In virtual time on the sandbox."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cau.clock import VirtualClock, run_virtual
from cau.domain.profile import build_profile
from cau.domain.results import ErrorId, RunState
from cau.domain.runs import RunRecord
from cau.engine.coordinator import Coordinator
from cau.journal.events import EventKind, JournalEvent
from cau.journal.progress import replay
from cau.reports.build import build_report
from cau.service import Service
from tests.support import finished, max_concurrent_maintenance, run_cluster, spec, write_cluster

ROLES = [
    {"name": "vm", "kind": "live", "owner": "n1", "preferred_owners": ["n1"], "cpu": 2, "memory_gb": 2},
    {"name": "sql", "kind": "failover", "owner": "n2", "preferred_owners": ["n2"], "cpu": 2, "memory_gb": 2},
]
UPDATES = [{"id": "kernel", "restart": True, "install_seconds": 40}, {"id": "libc", "install_seconds": 20}]
TURN = "parallel-limit"  # the block a node scanned ahead waits with, for its turn


def _first(events: list[JournalEvent], kind: EventKind, node: str, step: str | None = None) -> int:
    return next(
        i
        for i, e in enumerate(events)
        if e.kind is kind and e.node == node and (step is None or e.step == step)
    )


def _node_state(events: list[JournalEvent], node: str) -> str:
    """The node's state in a report built from the journal up to these events."""
    progress = replay(events)
    run = RunRecord(
        run_id=events[0].run_id,
        cluster="c1",
        provider="sandbox",
        state=RunState.RUNNING,
        created=events[0].ts,
        profile=build_profile(None, {}),
    )
    report = build_report(run, progress, now=events[-1].ts)
    return next(n.state for n in report.nodes if n.name == node)


def _order(events: list[JournalEvent]) -> list[str]:
    return [e.node for e in events if e.kind is EventKind.NODE_FINISHED and e.node]


def _changes(events: list[JournalEvent], node: str) -> list[str]:
    """The steps of `node` that change it (anything but scan and staging)."""
    return [
        str(e.step)
        for e in events
        if e.kind is EventKind.INTENT and e.node == node and e.step not in ("scan", "stage")
    ]


def test_the_next_node_is_scanned_while_the_one_before_restarts_and_changed_only_after_it(
    tmp_path: Path,
) -> None:
    config = write_cluster(tmp_path, spec(4, roles=ROLES, updates=UPDATES))
    done = run_cluster(tmp_path, config, max_failed_nodes=1)
    assert done.report.status == "Succeeded"
    events = done.events
    order = _order(events)
    for before, after in itertools.pairwise(order):
        before_done = _first(events, EventKind.NODE_FINISHED, before)
        # scanned and staged ahead, while `before` was still at work ...
        assert _first(events, EventKind.INTENT, after, "scan") < before_done
        assert _first(events, EventKind.OUTCOME, after, "stage") < before_done
        # ... and nothing that changes it before `before` finished
        assert _first(events, EventKind.INTENT, after, "enter_maintenance") > before_done
        # it said so, and the report showed it waiting, not running, until its turn
        said = _first(events, EventKind.WAITING, after)
        assert events[said].data["block"] == TURN and "its turn" in events[said].data["reason"]
        assert said < before_done
        assert _node_state(events[: said + 1], after) == "waiting"
        assert _node_state(events[: before_done + 1], after) == "waiting"
    assert max_concurrent_maintenance(events) == 1
    assert done.state["violations"] == []

    # the same cluster with nothing started ahead (a budget of 0 failed nodes) takes longer
    slow_home = tmp_path / "budget0"
    slow_home.mkdir()
    slow = run_cluster(
        slow_home, write_cluster(slow_home, spec(4, roles=ROLES, updates=UPDATES)), max_failed_nodes=0
    )
    assert slow.report.status == "Succeeded"
    assert done.report.duration_seconds < slow.report.duration_seconds - 3 * 5  # 3 scans of 5 s saved


def _never_ahead(events: list[JournalEvent]) -> None:
    order = _order(events)
    for before, after in itertools.pairwise(order):
        assert _first(events, EventKind.NODE_STARTED, after) > _first(events, EventKind.NODE_FINISHED, before)


def test_nothing_starts_ahead_with_a_budget_of_no_failed_node_or_a_pre_update_script(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(3, roles=ROLES, updates=UPDATES))
    done = run_cluster(tmp_path, config, max_failed_nodes=0)
    assert done.report.status == "Succeeded"
    _never_ahead(done.events)  # if the node at work fails, the run stops: nothing else begins

    home = tmp_path / "script"
    home.mkdir()
    config = write_cluster(home, spec(3, roles=ROLES, updates=UPDATES))
    done = run_cluster(home, config, max_failed_nodes=1, pre_update_script="true")
    assert done.report.status == "Succeeded"
    _never_ahead(done.events)  # the script runs before the scan, and may change the node


def test_a_stop_asked_while_a_node_waits_for_its_turn_ends_it_before_it_changes_anything(
    tmp_path: Path,
) -> None:
    config = write_cluster(tmp_path, spec(3, roles=ROLES, updates=UPDATES))
    coordinators: list[Coordinator] = []
    waiting: list[str] = []

    def on_event(e: JournalEvent) -> None:
        if e.kind is EventKind.WAITING and e.data.get("block") == TURN and not waiting:
            waiting.append(str(e.node))
            coordinators[0].request_stop(ErrorId.STOPPED_BY_OPERATOR, "stopped by tester", by="tester")

    async def on_coordinator(coordinator: Coordinator) -> None:
        coordinators.append(coordinator)

    done = run_cluster(tmp_path, config, max_failed_nodes=1, on_event=on_event, on_coordinator=on_coordinator)
    assert waiting, "no node waited for its turn"
    (ahead,) = waiting
    node = done.node(ahead)
    assert node.status == "Canceled" and node.error_id == "StoppedByOperator", (node.status, node.message)
    assert _changes(done.events, ahead) == []  # scanned and staged, nothing more
    assert not done.state["nodes"][ahead]["in_maintenance"]
    assert done.state["violations"] == []


def test_a_coordinator_killed_while_a_node_waits_for_its_turn_resumes_it_still_waiting(
    tmp_path: Path,
) -> None:
    # five nodes: quorum and capacity would let two drain at once; only the turn keeps it serial
    config = write_cluster(tmp_path, spec(5, roles=ROLES, updates=UPDATES))

    def svc(hour: int) -> Service:
        return Service(tmp_path, config, clock=VirtualClock(datetime(2026, 11, 1, hour, 0, tzinfo=UTC)))

    async def interrupted() -> str | None:
        service = svc(2)
        me = asyncio.current_task()
        run_ids: list[str] = []

        def on_event(e: Any) -> None:
            run_ids.append(e.run_id)
            if e.kind is EventKind.WAITING and e.data.get("block") == TURN and me is not None:
                me.cancel()

        try:
            await service.run("c1", build_profile(None, {"max_failed_nodes": 1}), on_event=on_event)
        except asyncio.CancelledError:
            return run_ids[0]
        finally:
            service.close()
        return None

    assert run_virtual(interrupted()) is not None, "the run finished before a node waited for its turn"

    async def resume() -> Any:
        service = svc(3)
        try:
            return await service.run("c1", build_profile(None, {"max_failed_nodes": 1}))
        finally:
            service.close()

    done = finished(tmp_path, "c1", run_virtual(resume()))
    assert done.report.status == "Succeeded"
    events = done.events
    # the node that waited when the coordinator died was changed only after the one at work
    order = _order(events)
    for before, after in itertools.pairwise(order):
        assert _first(events, EventKind.INTENT, after, "enter_maintenance") > _first(
            events, EventKind.NODE_FINISHED, before
        )
    assert max_concurrent_maintenance(events) == 1
    assert done.state["violations"] == []
