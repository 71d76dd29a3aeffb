"""Property tests: Updating Runs over random sandbox clusters keep cau's promises.

Each example builds a random cluster (2-9 nodes, random capacity and votes, roles of every kind,
updates with restarts and second-order chains), injects random faults (a node that never returns,
installs and migrations that fail, nodes down or already in maintenance) and runs a random profile
to the end in virtual time. The promises checked:

* never more nodes in maintenance at once than `max_parallel_nodes`; never a restart that loses
  quorum, a drain without room or a restart of a node still hosting live roles (checked live, and
  by the sandbox's own `violations`); no node ever over capacity after a role move;
* failure domains and disruption budgets (random racks and sites, limits, domain orders, budgets
  over clones, groups of roles and globs): never more nodes of a domain out of service than its
  limit, never fewer instances of a budget's roles running than it keeps (or than ran at the
  start, when it was short already), checked after every drain, restart and role move;
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

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cau.clock import VirtualClock, VirtualTimeLoop, run_virtual
from cau.domain.profile import build_profile
from cau.domain.results import RunState
from cau.domain.runs import ReportQuery, RunRecord
from cau.engine.coordinator import RunOutcome
from cau.errors import NotFound, PreflightError
from cau.journal.events import EventKind, JournalEvent
from cau.service import Service

from .strategies import (
    CLUSTER,
    Case,
    Observer,
    cases,
    check_compliance,
    check_final_state,
    check_journal,
    check_unchanged,
    read_state,
    tight_cases,
    write_cluster,
)

SETTINGS = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)


def paused_detail(events: list[JournalEvent]) -> str:
    paused = [e for e in events if e.kind is EventKind.RUN_PAUSED]
    return paused[-1].data.get("traceback", "") if paused else ""


def journal_listing(events: list[JournalEvent]) -> str:
    """The journal, one event a line: what a failing example's message shows."""
    return "\n".join(f"{e.seq:4d} {e.node or '-':4} {e.kind.value} {e.step or ''} {e.flat()}" for e in events)


def run_case(case: Case) -> None:
    profile = build_profile(None, case.profile)
    initially = {n["name"] for n in case.spec["nodes"] if n.get("in_maintenance")}
    observer = Observer.for_profile(profile, initially)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        config = write_cluster(data_dir, case.spec)
        svc = Service(data_dir, config_path=config, clock=VirtualClock())
        try:
            with observer.watching():
                try:
                    out: RunOutcome | None = run_virtual(
                        svc.run(CLUSTER, profile, on_event=observer.on_event)
                    )
                except PreflightError as exc:
                    note(f"preflight refused: {exc}")
                    event("preflight refused")
                    out = None
            state = read_state(data_dir)
            if out is None:
                assert asyncio.run(svc.store.list_runs(ReportQuery(cluster=CLUSTER))) == []
                assert check_unchanged(case.spec, state) == []
                assert observer.restarts == observer.moves == 0
                return
            events = asyncio.run(svc.store.events(out.run_id))
        finally:
            svc.close()
    note(f"outcome: {out.state} {out.status} {out.error_id} {out.message}")
    event(f"run {out.status} {out.error_id or ''}".strip())
    event(f"peak in maintenance: {observer.peak_in_maintenance}")
    assert out.state is RunState.FINISHED, f"the run did not finish: {out.message}\n{paused_detail(events)}"
    assert out.report is not None
    if any(n.left_in_maintenance for n in out.report.nodes):
        event("a node was left in maintenance")
    for block in sorted({str(e.data.get("block")) for e in events if e.kind is EventKind.WAITING}):
        event(f"a node waited for {block}")
    for error in sorted({n.error_id for n in out.report.nodes if n.error_id}):
        event(f"a node ended with {error}")
    problems = observer.problems + check_journal(events) + check_final_state(case.spec, state, events)
    problems += check_compliance(case.spec, state, events, profile.no_restart)
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


@settings(SETTINGS, max_examples=30)
@given(case=cases(min_nodes=5, max_nodes=9, max_roles=12, faults=False))
def test_fault_free_bigger_clusters(case: Case) -> None:
    """Without injected faults, on 5-9 nodes (more parallel batches): the same promises."""
    run_case(case)


@settings(SETTINGS, max_examples=30)
@given(case=tight_cases())
def test_tight_capacity_parallel_drains(case: Case) -> None:
    """Identical nodes filled to 50-75 % with movable roles, several nodes in progress at once and
    failback on: capacity alone limits the batches, and no drain may ever find no room.

    Regression test for two races this found (both fixed in the gate): concurrent drains, admitted
    on one joint placement, fragmenting each other's room; and a failback, after its node had
    released the gate, taking back room that a drain admitted just then was counting on."""
    run_case(case)


@pytest.mark.slow
@settings(SETTINGS, max_examples=150)
@given(case=st.one_of(cases(), tight_cases()))
def test_many_random_runs(case: Case) -> None:
    """The same promises over many more clusters (about two minutes)."""
    run_case(case)


# --- stateful: stop, kill and resume ------------------------------------------------------------------


class StopKillResume(RuleBasedStateMachine):
    """One run on one cluster, driven in virtual time by rules that advance it, stop it, and kill
    its coordinator (cancel its task wherever it is) so that the next rule resumes it."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualTimeLoop()
        self._tmp = tempfile.TemporaryDirectory()
        self.data_dir = Path(self._tmp.name)
        self.task: asyncio.Task[RunOutcome] | None = None
        self.record: RunRecord | None = None  # the run, once finished
        self.refused = False
        self.kills = 0
        self.starts = 0
        self.svc: Service | None = None
        self._watch = contextlib.ExitStack()

    @initialize(case=cases(min_nodes=3, max_nodes=6, max_roles=8, max_updates=4, fault_percent=50))
    def setup(self, case: Case) -> None:
        self.case = case
        # Preflight refusals are the other test's business: here every run should start.
        self.profile = build_profile(None, {**case.profile, "allow_nodes_in_maintenance": True})
        initially = {n["name"] for n in case.spec["nodes"] if n.get("in_maintenance")}
        self.observer = Observer.for_profile(self.profile, initially)
        config = write_cluster(self.data_dir, case.spec)
        self.svc = Service(self.data_dir, config_path=config, clock=VirtualClock())
        self._watch.enter_context(self.observer.watching())

    # --- helpers ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def finished(self) -> bool:
        return self.record is not None or self.refused

    def _start(self) -> None:
        assert self.svc is not None
        self.starts += 1
        self.task = self.loop.create_task(
            self.svc.run(CLUSTER, self.profile, on_event=self.observer.on_event)
        )

    def _collect(self) -> None:
        """Take the result of a run task that ended (finished, refused, or killed)."""
        task = self.task
        if task is None or not task.done():
            return
        self.task = None
        if not task.cancelled():
            exc = task.exception()
            if isinstance(exc, PreflightError):
                self.refused = True
                return
            if exc is not None:
                raise exc
            outcome = task.result()
            assert outcome.state is not RunState.PAUSED, (
                f"the run paused: {outcome.message}\n"
                + paused_detail(asyncio.run(self.svc.store.events(outcome.run_id)) if self.svc else [])
            )
        # A coordinator killed right after it finished the run leaves a finished run: look.
        assert self.svc is not None
        ids = self.observer.run_ids
        assert len(ids) <= 1, f"more than one run: {ids}"
        if ids:
            record = asyncio.run(self.svc.store.get_run(next(iter(ids))))
            if record is not None and record.state is RunState.FINISHED:
                self.record = record

    def _advance(self, seconds: float) -> None:
        """Let `seconds` of virtual time pass (less if the run ends first)."""
        if self.task is not None:
            self.loop.run_until_complete(asyncio.wait([self.task], timeout=seconds))
        else:
            self.loop.run_until_complete(asyncio.sleep(seconds))
        self._collect()

    # --- rules -------------------------------------------------------------------------------------

    @rule(wait=st.integers(0, 60))
    def start_or_resume(self, wait: int) -> None:
        """`cau run`: starts the run, or resumes it after its coordinator was killed."""
        if not self.running and not self.finished:
            self._start()
        self._advance(wait)

    @rule(seconds=st.sampled_from([1, 5, 30, 60, 300]))
    def advance(self, seconds: int) -> None:
        self._advance(seconds)

    @rule(by=st.sampled_from(["alice", "bob"]))
    def stop(self, by: str) -> None:
        """`cau stop`: nodes in hand finish or come back out of maintenance, the rest are canceled.
        Also while the coordinator is dead: the stop then takes effect when the run resumes."""
        assert self.svc is not None
        if not self.finished:
            with contextlib.suppress(NotFound):  # the run may not exist yet
                asyncio.run(self.svc.stop(CLUSTER, by=by, reason="property test"))

    @rule(events=st.integers(1, 25))
    def kill_after(self, events: int) -> None:
        """The coordinator dies right after it journals `events` more events (started if need be)."""
        if self.finished:
            return
        if not self.running:
            self._start()
        task = self.task
        assert task is not None
        self.observer.kill_after(events, task.cancel)
        self.loop.run_until_complete(asyncio.wait([task], timeout=86400))
        self.observer.kill_after(None, None)
        if task.cancelled():
            self.kills += 1
        self._collect()

    @rule(seconds=st.integers(0, 900))
    def kill_at(self, seconds: int) -> None:
        """The coordinator dies `seconds` of cluster time from now (started if need be)."""
        if self.finished:
            return
        if not self.running:
            self._start()
        self._advance(seconds)
        if self.running:
            assert self.task is not None
            self.task.cancel()
            self.loop.run_until_complete(asyncio.wait([self.task]))
            self.kills += 1
            self._collect()

    @invariant()
    def promises_hold_so_far(self) -> None:
        if self.svc is None:
            return
        assert self.observer.problems == [], "\n".join(self.observer.problems)
        if (self.data_dir / "sandbox" / f"{CLUSTER}.json").exists():
            assert read_state(self.data_dir)["violations"] == []

    def teardown(self) -> None:
        try:
            if self.svc is not None:
                self._drive_to_end()
        finally:
            self._watch.close()
            if self.svc is not None:
                self.svc.close()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
            self._tmp.cleanup()

    def _drive_to_end(self) -> None:
        """Resume the run until it finishes, then check the whole journal and the cluster."""
        assert self.svc is not None
        for _ in range(3):
            if self.finished:
                break
            if not self.running:
                self._start()
            assert self.task is not None
            self.loop.run_until_complete(asyncio.wait([self.task]))
            self._collect()
        assert self.finished, "the run never finished"
        state = read_state(self.data_dir)
        event(f"kills: {min(self.kills, 3)}{'+' if self.kills > 3 else ''}")
        if self.refused:
            event("preflight refused")
            assert check_unchanged(self.case.spec, state) == []
            return
        record = self.record
        assert record is not None
        events = asyncio.run(self.svc.store.events(record.run_id))
        event(f"run {record.status} {record.error_id or ''}".strip())
        note(f"outcome: {record.state} {record.status} {record.error_id} kills={self.kills}")
        assert record.state is RunState.FINISHED, paused_detail(events)
        assert asyncio.run(self.svc.store.get_report(record.run_id)) is not None, (
            "a finished run without its report"
        )
        coordinators = [e for e in events if e.kind is EventKind.COORDINATOR]
        assert len(coordinators) <= self.starts
        problems = (
            self.observer.problems
            + check_journal(events)
            + check_final_state(self.case.spec, state, events)
            + check_compliance(self.case.spec, state, events, self.profile.no_restart)
            + [
                f"{u} really installed {k} times on {n}"
                for (n, u), k in self.observer.installs.items()
                if k > 1
            ]
        )
        assert problems == [], "\n".join(problems) + "\n" + journal_listing(events)


StopKillResume.TestCase.settings = settings(
    max_examples=70,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_stop_kill_resume = StopKillResume.TestCase


class StopKillResumeMany(StopKillResume):
    """The same machine over many more examples and longer rule sequences (about a minute)."""


StopKillResumeMany.TestCase.settings = settings(
    StopKillResume.TestCase.settings, max_examples=150, stateful_step_count=15
)
test_stop_kill_resume_many = pytest.mark.slow(StopKillResumeMany.TestCase)
