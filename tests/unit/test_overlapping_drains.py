"""Planned drains that overlap (cau.engine.gate): several nodes drain and fail back at once, each
admission decided on the cluster as it will be once every move in flight has landed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cau.clock import VirtualClock, run_virtual
from cau.domain.cluster import Capacity, ClusterSnapshot, Node, Role, RoleKind
from cau.domain.planning import admit_to_maintenance, project_in_flight
from cau.domain.profile import MoveMethod
from cau.engine.gate import MaintenanceGate
from cau.journal.events import EventKind
from cau.sandbox.cluster import SandboxCluster
from cau.sandbox.provider import SandboxProvider
from cau.sandbox.spec import parse_spec
from tests.support import max_concurrent_maintenance, node, run_cluster, spec, write_cluster


def _vm(name: str, owner: str, cpu: float) -> Role:
    return Role(name, RoleKind.LIVE, Capacity(cpu, 1), owner=owner)


def test_projection_counts_a_planned_role_on_its_target_and_its_source_as_in_maintenance() -> None:
    nodes = tuple(Node(n, capacity=Capacity(10, 10)) for n in ("a", "b", "c"))
    snap = ClusterSnapshot("c", nodes, (_vm("vm1", "a", 6), _vm("vm2", "b", 2)))
    projected = project_in_flight(snap, {"a": {"vm1": "c"}})
    assert projected.free("c") == Capacity(4, 9)  # vm1's room on c is reserved before it lands
    assert projected.node("a").in_maintenance
    assert snap.free("c") == Capacity(10, 10)  # the observation itself is unchanged


def test_projection_leaves_a_role_that_landed_or_went_elsewhere_as_observed() -> None:
    # vm1 was planned a -> c but is seen on b (moved elsewhere since); vm2 landed on c already;
    # a clone is never moved by a plan. Only what is still on its draining node is projected.
    nodes = tuple(Node(n, capacity=Capacity(10, 10)) for n in ("a", "b", "c"))
    clone = Role("web", RoleKind.CLONE, Capacity(1, 1), instances=("a", "b", "c"))
    roles = (_vm("vm1", "b", 3), _vm("vm2", "c", 2), _vm("vm3", "a", 1), clone)
    snap = ClusterSnapshot("c", nodes, roles)
    projected = project_in_flight(snap, {"a": {"vm1": "c", "vm2": "c", "vm3": "b", "web": "b"}})
    owners = {r.name: r.owner for r in projected.roles}
    assert owners == {"vm1": "b", "vm2": "c", "vm3": "b", "web": None}
    assert next(r for r in projected.roles if r.name == "web").instances == ("a", "b", "c")
    assert projected.free("b") == Capacity(10 - 3 - 1 - 1, 10 - 1 - 1 - 1)


def test_a_candidate_is_refused_the_room_an_in_flight_drain_reserved() -> None:
    # c is the only node with room for a 6-cpu VM; a's drain has planned vm1 there, so b's vm2
    # has nowhere to go, although c looks empty while vm1 is still on a.
    nodes = tuple(Node(n, capacity=Capacity(10, 10)) for n in ("a", "b", "c", "d", "e"))
    roles = (_vm("vm1", "a", 6), _vm("vm2", "b", 6), _vm("full-d", "d", 9), _vm("full-e", "e", 9))
    snap = ClusterSnapshot("c", nodes, roles)
    unplanned = admit_to_maintenance(snap, "b", {"a"}, MoveMethod.LIVE)
    assert not unplanned.admitted  # jointly placed: a's and b's VMs cannot both go to c
    solo = admit_to_maintenance(snap, "a", set(), MoveMethod.LIVE)
    assert solo.admitted and solo.moves == {"vm1": "c"}
    projected = project_in_flight(snap, {"a": dict(solo.moves)})
    after = admit_to_maintenance(projected, "b", {"a"}, MoveMethod.LIVE)
    assert not after.admitted and after.block is not None and "vm2" in after.reason


def _sandbox(tmp: Path, nodes: list[dict[str, Any]], roles: list[dict[str, Any]]) -> SandboxProvider:
    data = spec(nodes, roles=roles)
    sim = SandboxCluster("c1", parse_spec(data, "test"), VirtualClock(), tmp / "c1.json")
    return SandboxProvider("c1", sim)


def test_the_gate_lets_drains_overlap_but_not_onto_a_node_roles_are_still_moving_to(tmp_path: Path) -> None:
    # vm1 (on n1) takes 60 s to migrate and is planned onto n3, the emptiest node. One second
    # later n3 and n4 ask to drain. On the placement after the move n3 could go too (vm1 would
    # fit on n2), but vm1 is still on its way to it: n3 waits until n1's drain is over. n4's drain
    # (vm4 -> n2) overlaps n1's.
    nodes = [node(f"n{i}", cpu=10, memory_gb=100) for i in range(1, 8)]
    roles = [
        {"name": "vm1", "kind": "live", "owner": "n1", "cpu": 6, "memory_gb": 1, "move_seconds": 60},
        {"name": "app2", "kind": "pinned", "owner": "n2", "cpu": 3, "memory_gb": 1},
        {"name": "vm4", "kind": "live", "owner": "n4", "cpu": 1, "memory_gb": 1, "move_seconds": 30},
        *(
            {"name": f"app{i}", "kind": "pinned", "owner": f"n{i}", "cpu": 9, "memory_gb": 1}
            for i in (5, 6, 7)
        ),
    ]
    waits: list[tuple[str, str]] = []
    admitted: dict[str, float] = {}
    drained: dict[str, float] = {}

    async def main() -> tuple[ClusterSnapshot, list[dict[str, Any]]]:
        provider = _sandbox(tmp_path, nodes, roles)
        clock = provider.sim.clock
        gate = MaintenanceGate(provider, MoveMethod.LIVE, lambda n, a: waits.append((n, a.reason)), 5.0)
        assert gate.overlapping
        start = clock.now()

        async def drain(name: str, after: float) -> None:
            await clock.sleep(after)
            async with gate.draining(name):
                admitted[name] = (clock.now() - start).total_seconds()
                plan = gate.plan_for(name)
                assert plan is not None
                prior = await provider.maintenance_prior(name)
                await provider.enter_maintenance_planned(name, MoveMethod.LIVE, prior, plan)
                drained[name] = (clock.now() - start).total_seconds()

        await asyncio.gather(drain("n1", 0), drain("n3", 1), drain("n4", 1))
        return provider.sim.snapshot(), provider.sim.violations

    snap, violations = run_virtual(main())
    assert admitted["n1"] == 0 and admitted["n4"] == 1  # two drains at once
    assert drained["n4"] < drained["n1"]
    assert admitted["n3"] >= drained["n1"]  # n3 waited for vm1 to land on it
    assert any(n == "n3" and "vm1 still moving to n3" in why for n, why in waits), waits
    assert violations == []
    assert snap.roles_on("n1") == () and {r.name for r in snap.roles_on("n2")} >= {"vm1", "vm4"}
    for n in snap.nodes:
        assert snap.free(n.name).cpu >= 0, n.name


def test_a_parallel_run_journals_each_planned_drain_and_breaks_nothing(tmp_path: Path) -> None:
    nodes = [node(f"n{i}", cpu=10, memory_gb=100) for i in range(1, 7)]
    roles = [
        {"name": f"vm{i}", "kind": "live", "owner": f"n{i}", "cpu": 3, "memory_gb": 1, "move_seconds": 20}
        for i in range(1, 7)
    ]
    config = write_cluster(tmp_path, spec(nodes, roles=roles))
    done = run_cluster(tmp_path, config, max_parallel_nodes="auto")
    assert done.report.status == "Succeeded"
    assert done.state["violations"] == []
    assert max_concurrent_maintenance(done.events) == 2  # quorum: 4 of 6 votes stay up
    plans = [
        (e.node, e.data.get("plan"))
        for e in done.events
        if e.kind is EventKind.INTENT and e.step == "enter_maintenance"
    ]
    assert len(plans) == 6
    for name, plan in plans:  # each drain's plan names its own VM and another node
        assert plan is not None and list(plan) == [f"vm{name[1:]}"] and plan[f"vm{name[1:]}"] != name
    for i in range(1, 7):  # failed back
        assert done.state["roles"][f"vm{i}"]["owner"] == f"n{i}"


class _Hooks:
    """Health gates that turn red for n2 while it waits at the gate, once."""

    def __init__(self) -> None:
        self.waits: list[str] = []
        self.red_once = {"n2"}

    async def before_admission(self, node: str) -> None:
        self.waits.append(node)

    def red_gates(self, node: str) -> list[str]:
        if node in self.red_once:
            self.red_once.discard(node)
            return ["db-replica"]
        return []

    async def admitted(self, node: str) -> None:
        return None

    async def returned(self, node: str) -> None:
        return None


@pytest.mark.parametrize("move", [MoveMethod.LIVE, MoveMethod.SAVE])
def test_a_health_gate_that_turns_red_while_a_node_waits_at_the_gate_sends_it_back(
    tmp_path: Path, move: MoveMethod
) -> None:
    nodes = [node(f"n{i}") for i in range(1, 6)]
    refusals: list[tuple[str, str]] = []
    hooks = _Hooks()

    async def main() -> set[str]:
        provider = _sandbox(tmp_path, nodes, [])
        gate = MaintenanceGate(provider, move, lambda n, a: refusals.append((n, a.reason)), 5.0, hooks=hooks)
        async with gate.draining("n1"):
            pass
        async with gate.draining("n2"):
            pass
        return gate.holders

    holders = run_virtual(main())
    assert holders == {"n1", "n2"}
    assert hooks.waits == ["n1", "n2", "n2"]  # n2 waited for its gates again before it was let in
    assert ("n2", "health gate(s) turned red: db-replica") in refusals
