"""What the coordinator and the sandbox keep between decisions so that a decision's cost does not
grow with the cluster (issue 14, part 7), and when each is thrown away: every cache here must give
exactly what computing afresh would."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from cau.clock import VirtualClock, run_virtual
from cau.domain.cluster import Capacity, ClusterSnapshot, Node, Role, RoleKind
from cau.domain.disruption import DisruptionBudget, DisruptionLimits, budget_block, domain_block
from cau.domain.placement import place_roles
from cau.domain.planning import admit_to_maintenance
from cau.domain.profile import MoveMethod
from cau.domain.results import Status
from cau.engine.gate import MaintenanceGate
from cau.journal.events import EventPayload, JournalEvent, NodeFinished, RunCreated
from cau.journal.progress import apply, replay
from cau.sandbox.cluster import SandboxCluster
from cau.sandbox.provider import SandboxProvider
from cau.sandbox.spec import parse_spec
from tests.support import node, spec

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _vm(name: str, owner: str, cpu: float) -> Role:
    return Role(name, RoleKind.LIVE, Capacity(cpu, 1), owner=owner)


def _snapshot() -> ClusterSnapshot:
    nodes = tuple(
        Node(n, capacity=Capacity(10, 10), failure_domain=f"rack{i % 2}") for i, n in enumerate("abcd")
    )
    return ClusterSnapshot("c", nodes, (_vm("vm1", "a", 6), _vm("vm2", "b", 2)))


# --- the gate's projection --------------------------------------------------------------------------


def _gate(tmp_path: Path) -> MaintenanceGate:
    async def make() -> MaintenanceGate:
        data = spec([node("n1"), node("n2")])
        sim = SandboxCluster("c1", parse_spec(data, "test"), VirtualClock(), tmp_path / "c1.json")
        return MaintenanceGate(SandboxProvider("c1", sim), MoveMethod.LIVE, lambda n, a: None)

    return run_virtual(make())


def test_the_projection_is_made_again_when_a_plan_changes(tmp_path: Path) -> None:
    gate = _gate(tmp_path)
    observed = _snapshot()
    first = gate._projected(observed)
    assert gate._projected(observed) is first  # the same observation, the same plans: reused
    assert first.free("c") == Capacity(10, 10)
    gate._set_plan("a", {"vm1": "c"})  # a drain admitted: vm1's room on c is reserved
    planned = gate._projected(observed)
    assert planned.free("c") == Capacity(4, 9)
    assert planned.node("a").in_maintenance
    gate._set_plan("a", None)  # its drain is over (or failed)
    assert gate._projected(observed).free("c") == Capacity(10, 10)


def test_the_projection_is_made_again_for_a_new_observation(tmp_path: Path) -> None:
    gate = _gate(tmp_path)
    observed = _snapshot()
    gate._set_plan("a", {"vm1": "c"})
    assert gate._projected(observed).free("d") == Capacity(10, 10)
    # The cluster changed (a role started on d): an equal plan, a new observation.
    moved = replace(observed, roles=(*observed.roles, _vm("vm3", "d", 5)))
    assert gate._projected(moved).free("d") == Capacity(5, 9)


# --- a snapshot's indexes ---------------------------------------------------------------------------


def test_a_changed_snapshot_has_indexes_of_its_own() -> None:
    snap = _snapshot()
    assert snap.free("c") == Capacity(10, 10) and snap.online_votes == 4 and "a" not in snap.not_serving
    assert [n.name for n in snap.nodes_by_label("failure_domain")["rack0"]] == ["a", "c"]
    changed = replace(
        snap,
        nodes=tuple(replace(n, in_maintenance=n.name == "a") for n in snap.nodes),
        roles=(_vm("vm1", "c", 6), _vm("vm2", "b", 2)),
    )
    assert changed.free("c") == Capacity(4, 9)
    assert "a" in changed.not_serving and changed.serving == ("b", "c", "d")
    assert snap.free("c") == Capacity(10, 10) and snap.serving == ("a", "b", "c", "d")


def test_decisions_on_indexes_match_the_plain_rules() -> None:
    # quorum, domains, placement and budgets, against what the rules say written out in full
    snap = _snapshot()
    limits = DisruptionLimits(budgets=(DisruptionBudget.model_validate("vm*=2"),))
    assert domain_block(snap, "c", {"a"}, limits) is not None  # rack0 has a out already
    assert domain_block(snap, "d", {"a"}, limits) is None
    assert place_roles(snap, ["a"]).moves == {"vm1": "c"}  # the emptiest node: c (then d)
    assert budget_block(snap, "a", {"b"}, limits, roles_move=False) is not None
    assert budget_block(snap, "c", {"b"}, limits, roles_move=False) is None  # c hosts no vm
    alone = admit_to_maintenance(snap, "a", set(), MoveMethod.LIVE)
    assert alone.admitted and alone.moves == {"vm1": "c"}
    refused = admit_to_maintenance(snap, "d", {"a"}, MoveMethod.LIVE)  # 2 of 4 votes left
    assert not refused.admitted and refused.block is not None and refused.block.value == "quorum"


# --- the failure budget's count ---------------------------------------------------------------------


def _event(seq: int, payload: EventPayload, node_name: str | None = None) -> JournalEvent:
    return JournalEvent.of("r1", seq, T0, node_name, payload)


def test_failed_nodes_follow_each_nodes_last_result() -> None:
    created = RunCreated(order=["n1", "n2"], max_failed=1)
    progress = replay([_event(1, created)])
    assert progress.failed_nodes == 0
    replay_events = [
        _event(1, created),
        _event(2, NodeFinished(status=Status.FAILED, message="x"), "n1"),
        _event(3, NodeFinished(status=Status.PARTIALLY_FAILED, message="y"), "n2"),
    ]
    progress = replay(replay_events)
    assert progress.failed_nodes == 2
    # n1 finished again (`cau node resume`, a resumed run): its last result counts, once
    apply(progress, _event(4, NodeFinished(status=Status.SUCCEEDED), "n1"))
    assert progress.failed_nodes == 1
    assert progress.count(Status.SUCCEEDED) == 1
    apply(progress, _event(5, NodeFinished(status=Status.SUCCEEDED), "n1"))
    assert progress.count(Status.SUCCEEDED) == 1
    assert progress.failed_nodes == sum(
        1 for n in progress.nodes.values() if n.status in (Status.FAILED, Status.PARTIALLY_FAILED)
    )


# --- the sandbox's state file -----------------------------------------------------------------------


def _sim(tmp_path: Path) -> SandboxCluster:
    """A sandbox made (and later used) inside a virtual loop: its clock needs one."""
    data = spec(
        [node("n1", cpu=10), node("n2", cpu=10), node("n3", cpu=10)],
        roles=[
            {"name": "svc", "kind": "failover", "owner": "n1", "cpu": 2, "memory_gb": 1, "move_seconds": 10},
            {"name": "app", "kind": "pinned", "owner": "n2", "cpu": 1, "memory_gb": 1},
        ],
    )
    return SandboxCluster("c1", parse_spec(data, "test"), VirtualClock(), tmp_path / "c1.json")


def _state(tmp_path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((tmp_path / "c1.json").read_text())
    return data


def test_the_state_file_shows_every_change_once_the_call_returns(tmp_path: Path) -> None:
    async def drain_and_back() -> SandboxCluster:
        sim = _sim(tmp_path)
        await sim.enter_maintenance("n1", MoveMethod.LIVE)
        state = _state(tmp_path)
        roles = state["roles"]
        assert isinstance(roles, dict) and roles["svc"]["owner"] != "n1"  # its piece was made again
        outages = state["outages"]
        assert isinstance(outages, list) and [o["ended"] is not None for o in outages] == [True]
        await sim.enter_maintenance("n2", MoveMethod.LIVE)  # app (pinned) stops: an open outage
        outages = _state(tmp_path)["outages"]
        assert isinstance(outages, list) and outages[-1]["ended"] is None
        prior = sim.prior("n2")
        await sim.exit_maintenance("n2", replace(prior, was_in_maintenance=False))
        outages = _state(tmp_path)["outages"]
        assert isinstance(outages, list) and outages[-1]["ended"] is not None  # written once ended
        return sim

    async def read_again(sim: SandboxCluster) -> SandboxCluster:
        return SandboxCluster("c1", sim.spec, VirtualClock(), tmp_path / "c1.json")

    sim = run_virtual(drain_and_back())
    # What another process reads is what this one holds.
    again = run_virtual(read_again(sim))
    assert {n: r.owner for n, r in again.roles.items()} == {n: r.owner for n, r in sim.roles.items()}
    assert [(o.role, o.ended is None) for o in again.outages] == [
        (o.role, o.ended is None) for o in sim.outages
    ]


def test_an_unchanged_state_is_written_again_if_the_file_went(tmp_path: Path) -> None:
    async def main() -> None:
        sim = _sim(tmp_path)
        (tmp_path / "c1.json").unlink()
        sim._save()

    run_virtual(main())
    assert (tmp_path / "c1.json").exists()


def test_a_resumed_sandbox_ends_the_outage_it_found_open(tmp_path: Path) -> None:
    async def stop_app() -> SandboxCluster:
        sim = _sim(tmp_path)
        await sim.enter_maintenance("n2", MoveMethod.LIVE)
        return sim

    sim = run_virtual(stop_app())
    assert [o.ended for o in sim.outages if o.role == "app"] == [None]

    # Another process (a coordinator resumed after a SIGKILL) takes the node out of maintenance.
    async def back() -> SandboxCluster:
        resumed = SandboxCluster("c1", sim.spec, VirtualClock(), tmp_path / "c1.json")
        prior = resumed.prior("n2")
        await resumed.exit_maintenance("n2", replace(prior, was_in_maintenance=False))
        return resumed

    resumed = run_virtual(back())
    app = [o for o in resumed.outages if o.role == "app"]
    assert len(app) == 1 and app[0].ended is not None  # the loaded outage ended: not a second one
