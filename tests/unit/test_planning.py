"""Pure decisions: node order, placement of drained roles, admission to maintenance, run status."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cau.domain.cluster import Capacity, ClusterSnapshot, Node, NodeState, Role, RoleKind, VoteQuorum
from cau.domain.placement import place_roles
from cau.domain.planning import Block, admit_to_maintenance, may_start, order_nodes
from cau.domain.profile import MoveMethod
from cau.domain.results import ErrorId, Status, node_status, run_status


def cluster(
    n: int = 4, cpu: float = 10, down: tuple[str, ...] = (), roles: tuple[Role, ...] = ()
) -> ClusterSnapshot:
    nodes = tuple(
        Node(f"n{i}", NodeState.DOWN if f"n{i}" in down else NodeState.UP, capacity=Capacity(cpu, 100))
        for i in range(1, n + 1)
    )
    return ClusterSnapshot("c", nodes, roles)


def vm(
    name: str, owner: str, cpu: float, kind: RoleKind = RoleKind.LIVE, prefer: tuple[str, ...] = ()
) -> Role:
    return Role(name, kind, Capacity(cpu, 1), owner=owner, preferred_owners=prefer)


def test_order_is_fewest_roles_first_then_explicit_order_first() -> None:
    snap = cluster(3, roles=(vm("a", "n1", 1), vm("b", "n1", 1), vm("c", "n2", 1)))
    assert order_nodes(snap) == ["n3", "n2", "n1"]
    assert order_nodes(snap, ["n1"]) == ["n1", "n3", "n2"]


def test_clone_instances_count_as_roles_on_each_node() -> None:
    clone = Role("dns", RoleKind.CLONE, Capacity(1, 1), instances=("n1", "n2"))
    snap = cluster(3, roles=(clone,))
    assert order_nodes(snap) == ["n3", "n1", "n2"]


def test_placement_prefers_preferred_owner_then_most_free() -> None:
    snap = cluster(3, roles=(vm("a", "n1", 4, prefer=("n1", "n3")), vm("x", "n2", 1)))
    assert place_roles(snap, ["n1"]).moves == {"a": "n3"}
    snap = cluster(3, roles=(vm("a", "n1", 4), vm("x", "n2", 1)))
    assert place_roles(snap, ["n1"]).moves == {"a": "n3"}  # n3 has the most free cpu


def test_placement_reports_what_does_not_fit() -> None:
    snap = cluster(2, cpu=10, roles=(vm("big", "n1", 8), vm("other", "n2", 5)))
    placement = place_roles(snap, ["n1"])
    assert not placement.feasible
    assert "big" in placement.explain() and "8 cpu" in placement.explain()


def test_only_live_and_failover_roles_need_a_new_home() -> None:
    roles = (
        vm("pin", "n1", 9, RoleKind.PINNED),
        Role("dns", RoleKind.CLONE, Capacity(9, 1), instances=("n1", "n2")),
    )
    assert place_roles(cluster(2, roles=roles), ["n1"]).feasible


def test_quorum_blocks_a_second_node_in_a_four_node_cluster() -> None:
    snap = cluster(4)
    assert admit_to_maintenance(snap, "n1", set(), MoveMethod.LIVE).admitted
    second = admit_to_maintenance(snap, "n2", {"n1"}, MoveMethod.LIVE)
    assert not second.admitted and second.block is Block.QUORUM
    assert second.block.error_id is ErrorId.QUORUM_AT_RISK
    assert admit_to_maintenance(cluster(5), "n2", {"n1"}, MoveMethod.LIVE).admitted


def test_a_down_node_counts_against_quorum() -> None:
    snap = cluster(3, down=("n3",))
    admission = admit_to_maintenance(snap, "n1", set(), MoveMethod.LIVE)
    assert not admission.admitted and "1 of 3 votes" in admission.reason


def test_capacity_blocks_unless_roles_are_saved_in_place() -> None:
    roles = (*tuple(vm(f"vm{i}", f"n{i}", 6) for i in range(1, 5)), vm("small", "n5", 3))
    snap = cluster(5, cpu=10, roles=roles)  # n1..n4 have 4 cpu free, n5 has 7
    assert admit_to_maintenance(snap, "n1", set(), MoveMethod.LIVE).admitted  # vm1 fits on n5
    both = admit_to_maintenance(snap, "n2", {"n1"}, MoveMethod.LIVE)  # vm1 and vm2 cannot both go to n5
    assert not both.admitted and both.block is Block.CAPACITY and "vm" in both.reason
    assert admit_to_maintenance(snap, "n2", {"n1"}, MoveMethod.SAVE).admitted


def test_may_start_keeps_the_failure_budget() -> None:
    assert may_start(in_flight=0, failed=0, max_parallel=1, max_failed=0).admitted
    assert may_start(in_flight=1, failed=0, max_parallel=1, max_failed=3).block is Block.PARALLEL_LIMIT
    # 1 failed + 2 in flight could become 4 failures with a budget of 2: the 3rd may not start
    assert may_start(in_flight=2, failed=1, max_parallel=None, max_failed=2).block is Block.FAILURE_BUDGET
    assert may_start(in_flight=1, failed=1, max_parallel=None, max_failed=2).admitted


@pytest.mark.parametrize(
    ("succeeded", "failed", "error", "started", "expected"),
    [
        (3, 0, None, True, Status.SUCCEEDED),
        (0, 0, None, False, Status.SUCCEEDED),  # compliant: nothing to do
        (2, 1, ErrorId.INSTALL_FAILED, True, Status.PARTIALLY_FAILED),
        (0, 2, ErrorId.INSTALL_FAILED, True, Status.FAILED),
        (3, 0, ErrorId.NODE_DID_NOT_RETURN, True, Status.FAILED),
        (0, 0, ErrorId.STOPPED_BY_OPERATOR, False, Status.CANCELED),
        (2, 0, ErrorId.STOPPED_BY_OPERATOR, True, Status.SUCCEEDED),
        (2, 0, ErrorId.POST_UPDATE_SCRIPT_FAILED, True, Status.PARTIALLY_FAILED),
    ],
)
def test_node_status(
    succeeded: int, failed: int, error: ErrorId | None, started: bool, expected: Status
) -> None:
    assert node_status(succeeded, failed, error, work_started=started) is expected


def test_run_status() -> None:
    ok, part, bad, cxl = Status.SUCCEEDED, Status.PARTIALLY_FAILED, Status.FAILED, Status.CANCELED
    assert run_status([ok, ok], None) is ok
    assert run_status([ok, bad], None) is part
    assert run_status([bad, bad], None) is bad
    assert run_status([ok, cxl], ErrorId.STOPPED_BY_OPERATOR) is cxl
    assert run_status([ok, bad, cxl], ErrorId.MAX_FAILED_NODES_EXCEEDED) is bad


def test_min_online_replaces_vote_majority_for_plain_pools() -> None:
    base = cluster(4)
    pool = ClusterSnapshot(base.name, base.nodes, (), min_online=2)
    assert admit_to_maintenance(pool, "n2", {"n1"}, MoveMethod.LIVE).admitted  # 2 of 4 stay online
    third = admit_to_maintenance(pool, "n3", {"n1", "n2"}, MoveMethod.LIVE)
    assert not third.admitted and "fewer than min_online = 2" in third.reason
    two = cluster(2)
    assert not admit_to_maintenance(two, "n1", set(), MoveMethod.LIVE).admitted  # majority of 2 impossible
    assert admit_to_maintenance(
        ClusterSnapshot("c", two.nodes, (), min_online=1), "n1", set(), MoveMethod.LIVE
    ).admitted


def test_the_cluster_managers_own_quorum_rule_decides_when_it_reports_one() -> None:
    two = cluster(2)
    # Corosync's two_node: one vote of two is quorate, so a 2-node cluster can be updated
    two_node = ClusterSnapshot("c", two.nodes, (), vote_quorum=VoteQuorum(needed=1, basis="two_node"))
    assert two_node.has_quorum
    assert admit_to_maintenance(two_node, "n1", set(), MoveMethod.LIVE).admitted
    assert not admit_to_maintenance(two_node, "n2", {"n1"}, MoveMethod.LIVE).admitted
    # a quorum device's vote: 2 nodes + 1 device vote, 2 needed
    qdevice = ClusterSnapshot("c", two.nodes, (), vote_quorum=VoteQuorum(needed=2, device_votes=1))
    assert admit_to_maintenance(qdevice, "n1", set(), MoveMethod.LIVE).admitted
    blocked = admit_to_maintenance(qdevice, "n2", {"n1"}, MoveMethod.LIVE)
    assert not blocked.admitted
    assert blocked.reason == "taking n2 down would leave 0 of 2 votes + 1 of a quorum device (2 needed)"


def test_weighted_votes_count_per_node() -> None:
    # n1 carries 2 of 4 votes (3 needed): n1 may never go down, n2 may
    base = cluster(3)
    nodes = (replace(base.nodes[0], votes=2), *base.nodes[1:])
    snap = ClusterSnapshot("c", nodes, (), vote_quorum=VoteQuorum(needed=3, basis="expected 4"))
    refused = admit_to_maintenance(snap, "n1", set(), MoveMethod.LIVE)
    assert not refused.admitted
    assert refused.reason == "taking n1 down would leave 2 of 4 votes (3 needed, expected 4)"
    assert admit_to_maintenance(snap, "n2", set(), MoveMethod.LIVE).admitted
