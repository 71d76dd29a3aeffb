"""Failure domains and disruption budgets: admission, order, observation, options."""

from __future__ import annotations

import pytest

from cau.domain.cluster import Capacity, ClusterSnapshot, Node, NodeState, Role, RoleKind
from cau.domain.disruption import (
    DisruptionBudget,
    DisruptionLimits,
    budget_violations,
    count_budget,
    domain_violations,
    unknown_selectors,
)
from cau.domain.planning import Block, admit_to_maintenance, order_nodes
from cau.domain.profile import MoveMethod, build_profile
from cau.domain.results import ErrorId
from cau.errors import ProfileError

RACKS = {"n1": "r1", "n2": "r1", "n3": "r2", "n4": "r2", "n5": "r3", "n6": "r3"}


def cluster(
    racks: dict[str, str | None] | None = None,
    roles: tuple[Role, ...] = (),
    *,
    down: tuple[str, ...] = (),
    in_maintenance: tuple[str, ...] = (),
    leader: str | None = None,
    labels: dict[str, dict[str, str]] | None = None,
) -> ClusterSnapshot:
    racks = dict(RACKS) if racks is None else racks
    nodes = tuple(
        Node(
            name,
            NodeState.DOWN if name in down else NodeState.UP,
            in_maintenance=name in in_maintenance,
            capacity=Capacity(100, 100),
            failure_domain=rack,
            leader=name == leader,
            labels=(labels or {}).get(name, {}),
        )
        for name, rack in racks.items()
    )
    return ClusterSnapshot("c", nodes, roles, min_online=1)  # quorum is not what these tests are about


def admit(
    snap: ClusterSnapshot,
    candidate: str,
    holders: tuple[str, ...] = (),
    limits: DisruptionLimits | None = None,
    move: MoveMethod = MoveMethod.LIVE,
) -> Block | None:
    return admit_to_maintenance(snap, candidate, holders, move, limits=limits).block


def clone(name: str, *on: str, expected: int | None = None) -> Role:
    return Role(name, RoleKind.CLONE, instances=on, expected_instances=expected)


def role(name: str, owner: str | None, kind: RoleKind = RoleKind.LIVE) -> Role:
    return Role(name, kind, owner=owner)


def budget(text: str) -> DisruptionBudget:
    return DisruptionBudget.model_validate(text)


# --- failure domains ---------------------------------------------------------------------------------


def test_one_node_per_domain_by_default_when_nodes_have_domains() -> None:
    snap = cluster()
    assert admit(snap, "n2", ("n1",)) is Block.DOMAIN_LIMIT
    assert admit(snap, "n3", ("n1",)) is None  # another rack
    assert admit(snap, "n5", ("n1", "n3")) is None
    refused = admit_to_maintenance(snap, "n2", ("n1",), MoveMethod.LIVE)
    assert refused.reason == (
        "failure_domain r1 has 1 node(s) out of service already (n1): n2 would make 2, "
        "more than max_nodes_per_domain = 1"
    )
    assert Block.DOMAIN_LIMIT.error_id is ErrorId.FAILURE_DOMAIN_LIMIT


def test_no_domain_no_limit_and_the_limit_is_an_option() -> None:
    assert admit(cluster(dict.fromkeys(RACKS)), "n2", ("n1", "n3", "n4")) is None
    two = DisruptionLimits(max_per_domain=2)
    assert admit(cluster(), "n2", ("n1",), two) is None
    assert admit(
        cluster({"n1": "r1", "n2": "r1", "n3": "r1", "n4": "r2", "n5": "r2"}), "n3", ("n1", "n2"), two
    ) is (Block.DOMAIN_LIMIT)


def test_a_node_down_or_already_in_maintenance_counts_in_its_domain() -> None:
    assert admit(cluster(down=("n1",)), "n2") is Block.DOMAIN_LIMIT
    assert admit(cluster(in_maintenance=("n1",)), "n2") is Block.DOMAIN_LIMIT
    # ...but a node already out of service changes nothing by entering: it is admitted
    assert admit(cluster(in_maintenance=("n1", "n2")), "n2") is None


def test_the_domain_label_picks_among_the_labels() -> None:
    labels = {n: {"site": "berlin" if n in ("n1", "n2", "n3") else "paris"} for n in RACKS}
    snap = cluster(labels=labels)
    by_site = DisruptionLimits(domain_label="site")
    assert admit(snap, "n3", ("n1",), by_site) is Block.DOMAIN_LIMIT  # r2, but berlin too
    assert admit(snap, "n4", ("n1",), by_site) is None
    # a label named failure_domain wins over the node's failure_domain
    snap = cluster(labels={"n1": {"failure_domain": "x"}})
    assert admit(snap, "n2", ("n1",)) is None


def test_domains_take_turns_in_the_default_order() -> None:
    snap = cluster(leader="n1")
    assert order_nodes(snap) == ["n2", "n3", "n5", "n4", "n6", "n1"]  # the leader last
    # an explicit node order comes first
    assert order_nodes(snap, ["n6"]) == ["n6", "n2", "n3", "n5", "n4", "n1"]


def test_a_domain_order_updates_domain_after_domain() -> None:
    snap = cluster(leader="n3")
    assert order_nodes(snap, domain_order=["r2"]) == ["n4", "n3", "n1", "n2", "n5", "n6"]
    # nodes without a domain come last; the other domains by their first node
    racks: dict[str, str | None] = {**RACKS, "n7": None}
    assert order_nodes(cluster(racks), domain_order=["r3", "r1"]) == [
        "n5",
        "n6",
        "n1",
        "n2",
        "n3",
        "n4",
        "n7",
    ]


def test_domain_violations_as_observed() -> None:
    assert domain_violations(cluster(in_maintenance=("n1",)), DisruptionLimits()) == []
    assert domain_violations(cluster(in_maintenance=("n1", "n2")), DisruptionLimits()) == [
        "failure_domain r1: 2 nodes out of service (n1, n2), max_nodes_per_domain = 1"
    ]
    assert domain_violations(cluster(in_maintenance=("n1", "n2")), DisruptionLimits(), allowed=2) == []


# --- disruption budgets -------------------------------------------------------------------------------


def test_a_clone_keeps_its_minimum_of_instances() -> None:
    web = clone("web", "n1", "n3", "n5")
    snap = cluster(roles=(web,))
    limits = DisruptionLimits(budgets=(budget("web=2"),))
    assert admit(snap, "n1", (), limits) is None
    refused = admit_to_maintenance(snap, "n3", ("n1",), MoveMethod.LIVE, limits=limits)
    assert refused.block is Block.DISRUPTION_BUDGET
    assert refused.reason == (
        "disruption budget web (min_available 2): taking n3 down would leave 1 of 3 instance(s) running, "
        "2 needed"
    )
    assert Block.DISRUPTION_BUDGET.error_id is ErrorId.DISRUPTION_BUDGET
    # a node hosting no instance is not held by the budget
    assert admit(snap, "n4", ("n1",), limits) is None


def test_a_percent_counts_from_the_expected_instances() -> None:
    # 4 expected, one already stopped on n1 (in maintenance): 50 % of 4 is 2, 2 run, none may stop
    snap = cluster(roles=(clone("web", "n3", "n5", expected=4),), in_maintenance=("n1",))
    limits = DisruptionLimits(budgets=(budget("web=50%"),))
    assert count_budget(snap, limits.budgets[0], ("n1",), True).required == 2
    assert admit(snap, "n3", ("n1",), limits) is Block.DISRUPTION_BUDGET
    # without expected_instances, nodes out of service count as instances: never laxer
    snap = cluster(roles=(clone("web", "n3", "n5"),), in_maintenance=("n1",))
    assert admit(snap, "n3", ("n1",), limits) is Block.DISRUPTION_BUDGET


def test_roles_that_move_stay_available_pinned_and_saved_ones_do_not() -> None:
    roles = (role("vm1", "n1"), role("vm2", "n3", RoleKind.FAILOVER), role("lic", "n5", RoleKind.PINNED))
    snap = cluster(roles=roles)
    limits = DisruptionLimits(budgets=(budget("*=3"),))
    assert admit(snap, "n1", (), limits) is None  # vm1 migrates
    assert admit(snap, "n3", (), limits) is None  # vm2 fails over
    assert admit(snap, "n5", (), limits) is Block.DISRUPTION_BUDGET  # lic stops
    assert admit(snap, "n1", (), limits, MoveMethod.SAVE) is Block.DISRUPTION_BUDGET  # saved in place


def test_a_group_of_roles_counts_together_and_globs_select() -> None:
    roles = (role("db-a", "n1", RoleKind.PINNED), role("db-b", "n3", RoleKind.PINNED), role("x", "n5"))
    limits = DisruptionLimits(budgets=(DisruptionBudget(roles=["db-*"], min_available=1),))
    snap = cluster(roles=roles)
    assert admit(snap, "n1", (), limits) is None
    assert admit(snap, "n3", ("n1",), limits) is Block.DISRUPTION_BUDGET
    assert unknown_selectors(snap, [*limits.budgets, budget("nothing-*=1")]) == ["nothing-*"]


def test_budget_violations_as_observed() -> None:
    web = clone("web", "n3", expected=3)  # n1 in maintenance, n5 down
    snap = cluster(roles=(web,), in_maintenance=("n1",), down=("n5",))
    limits = DisruptionLimits(budgets=(budget("web=2"),))
    assert budget_violations(snap, limits, True) == [
        "disruption budget web (min_available 2): 1 of 3 instance(s) running, 2 needed"
    ]
    # already short before the run: broken only below what ran then
    assert budget_violations(snap, limits, True, {"disruption budget web (min_available 2)": 1}) == []


# --- options -----------------------------------------------------------------------------------------


def test_profile_options_in_compact_and_table_form() -> None:
    profile = build_profile(
        None,
        {
            "disruption_budgets": ["web-clone=2", "db-*=50%", {"roles": ["a", "b"], "min_available": "1"}],
            "domain_order": ["berlin", "paris"],
            "domain_label": "site",
            "max_nodes_per_domain": 2,
        },
    )
    limits = profile.disruption_limits
    assert limits.domain_label == "site" and limits.max_per_domain == 2
    assert [(b.roles, b.min_available) for b in limits.budgets] == [
        (["web-clone"], 2),
        (["db-*"], "50%"),
        (["a", "b"], 1),
    ]
    assert build_profile(None, profile.to_toml_dict()) == profile  # stored and read back


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"disruption_budgets": ["web"]}, "'web': a disruption budget is ROLES=MIN"),
        ({"disruption_budgets": ["web=150%"]}, "min_available '150%': a number (2) or a percent"),
        ({"disruption_budgets": ["web=-1"]}, "min_available"),
        ({"max_nodes_per_domain": 0}, "max_nodes_per_domain"),
        ({"domain_order": ["a", "a"]}, "failure domain listed twice: a"),
    ],
)
def test_bad_options_name_what_is_wrong(options: dict[str, object], message: str) -> None:
    with pytest.raises(ProfileError) as err:
        build_profile(None, options)
    assert message in str(err.value)
