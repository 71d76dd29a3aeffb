"""The order of a parallel run (cau.domain.packing): the nodes of the tightest failure domains and
disruption budgets first, in waves the limits let out together."""

from __future__ import annotations

from cau.domain.cluster import Capacity, ClusterSnapshot, Node, NodeState, Role, RoleKind
from cau.domain.disruption import DisruptionBudget, DisruptionLimits
from cau.domain.packing import Limit, in_waves, limits_of
from cau.domain.planning import run_order
from cau.domain.profile import build_profile


def cluster(
    racks: int = 4, *, leader: str | None = None, sites: dict[str, str] | None = None
) -> ClusterSnapshot:
    """n1..n8 in `racks` racks, taking turns (n1 rack1, n2 rack2...); a license server pinned on
    each of n5..n8, so CAU's order (fewest roles first) takes those four last."""
    nodes = tuple(
        Node(
            f"n{i}",
            NodeState.UP,
            capacity=Capacity(16, 64),
            failure_domain=f"rack{(i - 1) % racks + 1}",
            leader=f"n{i}" == leader,
            labels={"site": sites[f"n{i}"]} if sites else {},
        )
        for i in range(1, 9)
    )
    roles = tuple(Role(f"license-{i}", RoleKind.PINNED, owner=f"n{i + 4}") for i in range(1, 5))
    return ClusterSnapshot("c", nodes, roles, min_online=5)


LICENSES = ["license-*=3"]  # three of the four keep running: their nodes go one at a time


def test_the_limits_are_the_domains_and_the_nodes_each_budget_would_lose_an_instance_on() -> None:
    limits = DisruptionLimits(budgets=(DisruptionBudget.model_validate(LICENSES[0]),))
    found = limits_of(cluster(), limits, roles_move=True)
    assert [(x.name, x.room, sorted(x.nodes)) for x in found] == [
        ("domain rack1", 1, ["n1", "n5"]),
        ("domain rack2", 1, ["n2", "n6"]),
        ("domain rack3", 1, ["n3", "n7"]),
        ("domain rack4", 1, ["n4", "n8"]),
        ("disruption budget license-* (min_available 3)", 1, ["n5", "n6", "n7", "n8"]),
    ]


def test_a_parallel_run_spreads_a_chain_over_its_waves_a_serial_one_keeps_caus_order() -> None:
    snap = cluster()
    parallel = build_profile(None, {"max_parallel_nodes": "auto", "disruption_budgets": LICENSES})
    serial = build_profile(None, {"max_parallel_nodes": 1, "disruption_budgets": LICENSES})
    # four waves of two (the budget's chain is four long): one license server's node in each
    assert run_order(snap, parallel) == ["n5", "n2", "n7", "n4", "n6", "n1", "n8", "n3"]
    assert run_order(snap, serial) == ["n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8"]
    # no budget: the racks take turns, as before
    assert run_order(snap, build_profile(None, {"max_parallel_nodes": "auto"})) == [
        "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8",
    ]  # fmt: skip


def test_the_explicit_order_comes_first_and_the_leader_last() -> None:
    snap = cluster(leader="n5")
    profile = build_profile(
        None, {"max_parallel_nodes": "auto", "disruption_budgets": LICENSES, "node_order": ["n3", "n1"]}
    )
    order = run_order(snap, profile)
    assert order[:2] == ["n3", "n1"] and order[-1] == "n5" and sorted(order) == sorted(snap.node_names)


def test_a_domain_order_keeps_each_domain_whole_and_waves_within_it() -> None:
    sites = {f"n{i}": "paris" if i in (1, 2, 5, 6) else "berlin" for i in range(1, 9)}
    profile = build_profile(
        None,
        {
            "max_parallel_nodes": "auto",
            "disruption_budgets": LICENSES,
            "domain_label": "site",
            "domain_order": ["berlin", "paris"],
        },
    )
    order = run_order(cluster(sites=sites), profile)
    assert set(order[:4]) == {"n3", "n4", "n7", "n8"} and set(order[4:]) == {"n1", "n2", "n5", "n6"}


def test_nodes_no_limit_names_share_the_waves_rather_than_fill_the_first() -> None:
    chain = Limit("budget", 1, frozenset({"a", "b", "c"}))
    order = ["x1", "x2", "x3", "x4", "x5", "x6", "a", "b", "c"]
    # three waves (the chain's length) of three: a chain node first in each
    assert in_waves(order, [chain]) == ["a", "x1", "x2", "b", "x3", "x4", "c", "x5", "x6"]
    assert in_waves(order, []) == order
