"""Property tests: Updating Runs over random sandbox clusters keep cau's promises.

Each example builds a random cluster (2-9 nodes, random capacity and votes, roles of every kind,
updates with restarts and second-order chains), injects random faults (a node that never returns,
installs and migrations that fail, nodes down or already in maintenance) and runs a random profile
to the end in virtual time. The promises checked:

* never more nodes in maintenance at once than `max_parallel_nodes`; never a restart that loses
  quorum, a drain without room or a restart of a node still hosting live roles (checked live, and
  by the sandbox's own `violations`); no node ever over capacity after a role move;
* every node that entered maintenance left it, or is reported Failed with `left_in_maintenance`;
* no update is installed successfully twice on the same node in one run;
* the failure budget: at most max_failed + 1 failed nodes; beyond max_failed the run is Failed with
  MaxFailedNodesExceeded and no node started after the failure that exceeded it;
* every run ends Finished (a Paused run is an internal error), or refuses to start with a
  PreflightError having changed nothing.

The stateful test starts a run, stops it, kills its coordinator mid-run and resumes it, and checks
that nothing was done twice and nothing stayed in maintenance.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cau.clock import VirtualClock, VirtualTimeLoop, run_virtual
from cau.domain.profile import build_profile
from cau.domain.results import RunState
from cau.engine.coordinator import RunOutcome
from cau.errors import NotFound, PreflightError
from cau.service import Service
from cau.store.base import EventKind, JournalEvent, ReportQuery

from .strategies import (
    CLUSTER,
    Case,
    Observer,
    cases,
    check_final_state,
    check_journal,
    check_unchanged,
    read_state,
    write_cluster,
)

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)


def paused_detail(events: list[JournalEvent]) -> str:
    paused = [e for e in events if e.kind is EventKind.RUN_PAUSED]
    return paused[-1].data.get("traceback", "") if paused else ""


def run_case(case: Case) -> None:
    profile = build_profile(None, case.profile)
    max_parallel = None if profile.max_parallel_nodes == "auto" else int(profile.max_parallel_nodes)
    initially = {n["name"] for n in case.spec["nodes"] if n.get("in_maintenance")}
    observer = Observer(max_parallel, initially)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        config = write_cluster(data_dir, case.spec)
        svc = Service(data_dir, config_path=config, clock=VirtualClock())
        try:
            with observer.watching():
                try:
                    out: RunOutcome | None = run_virtual(svc.run(CLUSTER, profile, on_event=observer.on_event))
                except PreflightError as exc:
                    note(f"preflight refused: {exc}")
                    event("preflight refused")
                    out = None
            state = read_state(data_dir)
            if out is None:
                assert svc.store.list_runs(ReportQuery(cluster=CLUSTER)) == []
                assert check_unchanged(case.spec, state) == []
                assert observer.restarts == observer.moves == 0
                return
            events = svc.store.events(out.run_id)
        finally:
            svc.close()
    note(f"outcome: {out.state} {out.status} {out.error_id} {out.message}")
    event(f"run {out.status} {out.error_id or ''}".strip())
    event(f"peak in maintenance: {observer.peak_in_maintenance}")
    if any(n.left_in_maintenance for n in out.report.nodes if out.report is not None):
        event("a node was left in maintenance")
    assert out.state is RunState.FINISHED, f"the run did not finish: {out.message}\n{paused_detail(events)}"
    assert out.report is not None
    problems = observer.problems + check_journal(events) + check_final_state(case.spec, state, events)
    problems += [f"{u} really installed {k} times on {n}" for (n, u), k in observer.installs.items() if k > 1]
    # The report agrees with the journal about nodes left in maintenance.
    for node in out.report.nodes:
        if node.left_in_maintenance and node.status != "Failed":
            problems.append(f"report: {node.name} left in maintenance but {node.status}")
    assert problems == [], "\n".join(problems)


@SETTINGS
@given(case=cases())
def test_random_runs_keep_their_promises(case: Case) -> None:
    run_case(case)


@settings(SETTINGS, max_examples=40)
@given(case=cases(min_nodes=5, max_nodes=9, max_roles=12, faults=False))
def test_fault_free_runs_succeed(case: Case) -> None:
    """Without faults, every node that could be updated is, and the promises above hold too."""
    run_case(case)


# --- stateful: stop, kill and resume ------------------------------------------------------------------


class StopKillResume(RuleBasedStateMachine):
    """One run on one cluster, driven in virtual time by rules that advance, stop and kill it."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualTimeLoop()
        self._tmp = tempfile.TemporaryDirectory()
        self.data_dir = Path(self._tmp.name)
        self.task: asyncio.Task[RunOutcome] | None = None
        self.run_id: str | None = None
        self.outcome: RunOutcome | None = None
        self.refused = False
        self.kills = 0
        self.svc: Service | None = None
        self._watch: contextlib.ExitStack | None = None

    @initialize(case=cases(max_nodes=6, max_roles=8, max_updates=4))
    def setup(self, case: Case) -> None:
        self.case = case
        self.profile = build_profile(None, case.profile)
        parallel = self.profile.max_parallel_nodes
        initially = {n["name"] for n in case.spec["nodes"] if n.get("in_maintenance")}
        self.observer = Observer(None if parallel == "auto" else int(parallel), initially)
        config = write_cluster(self.data_dir, case.spec)
        self.svc = Service(self.data_dir, config_path=config, clock=VirtualClock())
        self._watch = contextlib.ExitStack()
        self._watch.enter_context(self.observer.watching())

    # helpers
    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def finished(self) -> bool:
        return self.outcome is not None or self.refused

    def _collect(self) -> None:
        """Take the result of a run task that ended (finished, refused, or killed)."""
        task = self.task
        if task is None or not task.done():
            return
        self.task = None
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, PreflightError):
            self.refused = True
            return
        if exc is not None:
            raise exc
        self.outcome = task.result()

    def _advance(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))
        self._collect()

    # rules
    @precondition(lambda self: not self.running and not self.finished)
    @rule(first_wait=st.integers(0, 300))
    def start_or_resume(self, first_wait: int) -> None:
        assert self.svc is not None
        self.task = self.loop.create_task(
            self.svc.run(CLUSTER, self.profile, on_event=self.observer.on_event)
        )
        self._advance(first_wait)

    @rule(seconds=st.sampled_from([1, 5, 30, 60, 300, 1200]))
    def advance(self, seconds: int) -> None:
        self._advance(seconds)

    @precondition(lambda self: self.running)
    @rule(by=st.sampled_from(["alice", "bob"]))
    def stop(self, by: str) -> None:
        assert self.svc is not None
        with contextlib.suppress(NotFound):  # the run may not exist yet
            self.svc.stop(CLUSTER, by=by, reason="property test")

    @precondition(lambda self: self.running)
    @rule()
    def kill(self) -> None:
        """The coordinator dies mid-run: its task is cancelled wherever it is."""
        assert self.task is not None
        self.kills += 1
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(self.task)
        self._collect()

    @invariant()
    def promises_hold_so_far(self) -> None:
        if self.svc is None:
            return
        assert self.observer.problems == [], "\n".join(self.observer.problems)
        state_file = self.data_dir / "sandbox" / f"{CLUSTER}.json"
        if state_file.exists():
            assert read_state(self.data_dir)["violations"] == []

    def teardown(self) -> None:
        try:
            if self.svc is not None:
                self._drive_to_end()
        finally:
            if self._watch is not None:
                self._watch.close()
            if self.svc is not None:
                self.svc.close()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
            self._tmp.cleanup()

    def _drive_to_end(self) -> None:
        """Resume the run until it finishes, then check the whole journal and the cluster."""
        assert self.svc is not None
        for _ in range(20):
            if self.finished:
                break
            if not self.running:
                self.task = self.loop.create_task(
                    self.svc.run(CLUSTER, self.profile, on_event=self.observer.on_event)
                )
            assert self.task is not None
            self.loop.run_until_complete(asyncio.wait([self.task]))
            self._collect()
        assert self.finished, "the run never finished"
        state = read_state(self.data_dir)
        if self.refused:
            assert check_unchanged(self.case.spec, state) == []
            return
        assert self.outcome is not None
        events = self.svc.store.events(self.outcome.run_id)
        note(f"outcome: {self.outcome.state} {self.outcome.status} {self.outcome.error_id} kills={self.kills}")
        assert self.outcome.state is RunState.FINISHED, paused_detail(events)
        problems = self.observer.problems + check_journal(events) + check_final_state(
            self.case.spec, state, events
        )
        problems += [
            f"{u} really installed {k} times on {n}" for (n, u), k in self.observer.installs.items() if k > 1
        ]
        assert problems == [], "\n".join(problems)


StopKillResume.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_stop_kill_resume = StopKillResume.TestCase
