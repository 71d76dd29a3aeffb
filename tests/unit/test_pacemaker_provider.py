"""The pacemaker provider's own code, driven without root or a lab: its nodes are scripted
transports (cau.testing) answering with the real crm_mon, CIB, crm_simulate and
corosync-quorumtool outputs of tests/fixtures (see tests/contract/scripted.py). Waits run on
virtual time: a drain timeout of minutes takes no time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cau.clock import VirtualClock, run_virtual
from cau.domain.cluster import NodeState
from cau.domain.profile import FailbackMode, MoveMethod
from cau.errors import HostKeyError, MaintenanceError, NodeUnreachable, ProviderError
from cau.ports import MaintenancePrior, ProviderContext
from cau.providers.pacemaker import PacemakerOptions, PacemakerProvider
from cau.testing import Reply
from cau.transport.ssh import SshTarget, changed_host_key
from tests.contract.scripted import CIB, CRM_MON, QUORUM, SPLIT, PacemakerCluster

READ = f"{CRM_MON}; echo {SPLIT}; {CIB}"


def standby(node: str, value: str | None = "on") -> str:
    action = "--delete" if value is None else f"--update {value}"
    return f"crm_attribute --node {node} --name standby {action}"


def prefer(rid: str, node: str) -> str:
    cid = f"cau-prefer-{rid}-on-{node}"
    xml = f'<rsc_location id="{cid}" rsc="{rid}" node="{node}" score="INFINITY"/>'
    return f"cibadmin --modify --allow-create --scope constraints --xml-text '{xml}'"


def unprefer(rid: str, node: str) -> str:
    xml = f'<rsc_location id="cau-prefer-{rid}-on-{node}"/>'
    return f"cibadmin --delete --scope constraints --xml-text '{xml}'"


def meta(rid: str, name: str, value: str | None) -> str:
    if value is None:
        return f"crm_resource --resource {rid} --meta --delete-parameter {name}"
    return f"crm_resource --resource {rid} --meta --set-parameter {name} --parameter-value {value}"


def provider(pcmk: PacemakerCluster, **options: Any) -> PacemakerProvider:
    opts = PacemakerOptions.model_validate(
        {
            "nodes": [{"name": f"node{i}", "host": f"10.77.0.1{i}"} for i in (1, 2, 3)],
            "known_hosts": "/nonexistent/known_hosts",
            "poll_interval": 0.2,
            "drain_timeout": "30s",
            "failback_timeout": "30s",
            **options,
        }
    )
    ctx = ProviderContext("lab", VirtualClock(), Path("/nonexistent"), transports=pcmk.transports)
    made = PacemakerProvider.create(opts, ctx)
    assert isinstance(made, PacemakerProvider)
    return made


async def prior_and_reset(p: PacemakerProvider, pcmk: PacemakerCluster, node: str) -> MaintenancePrior:
    prior = await p.maintenance_prior(node)
    pcmk.transports.log.clear()
    return prior


# --- drain ------------------------------------------------------------------------------------------


def test_drain_sets_standby_and_polls_until_the_nodes_roles_run_elsewhere() -> None:
    pcmk = PacemakerCluster("all-online").then(standby("node2"), "all-online", "all-online", "standby-node2")
    p = provider(pcmk)

    async def main() -> MaintenancePrior:
        prior = await prior_and_reset(p, pcmk, "node2")
        await p.enter_maintenance("node2", MoveMethod.LIVE, prior)
        return prior

    prior = run_virtual(main())
    assert prior.role_owners == {"web": "node2"} and not prior.was_in_maintenance
    assert prior.extra == {
        "standby": None,
        "pacemaker_maintenance": False,
        "target_roles": {"web": None},
        "clones": ["web-clone"],
    }
    # one look, the standby, then crm_mon until web runs whole on node3
    assert pcmk.cluster_commands() == [CRM_MON, standby("node2"), CRM_MON, CRM_MON, CRM_MON]
    assert pcmk.node_attribute("node2", "standby") == "on"


@pytest.mark.parametrize("state", ["web-half-started", "web-server-starting", "web-server-failed-start"])
def test_a_group_not_running_whole_elsewhere_is_not_drained(state: str) -> None:
    pcmk = PacemakerCluster("all-online").then(standby("node2"), state)
    p = provider(pcmk, drain_timeout="5s")

    async def main() -> None:
        prior = await p.maintenance_prior("node2")
        await p.enter_maintenance("node2", MoveMethod.LIVE, prior)

    with pytest.raises(MaintenanceError, match=r"^web did not start on another node within 5s") as caught:
        run_virtual(main())
    if state != "web-server-starting":  # its start had not failed (yet)
        assert "(failed actions: web-server on node" in str(caught.value)
    assert len([c for c in pcmk.cluster_commands() if c == CRM_MON]) > 10  # it kept looking


def test_a_group_is_drained_once_it_runs_whole_elsewhere() -> None:
    pcmk = PacemakerCluster("all-online").then(
        standby("node2"), "web-server-starting", "web-server-starting", "standby-node2"
    )
    p = provider(pcmk)

    async def main() -> None:
        prior = await p.maintenance_prior("node2")
        await p.enter_maintenance("node2", MoveMethod.LIVE, prior)

    run_virtual(main())
    assert pcmk.cluster_commands()[-3:] == [CRM_MON] * 3


def test_a_live_migration_whose_source_has_not_stopped_is_not_drained() -> None:
    # node1's drain: vm1 migrates to node2; crm_mon shows it started there while its stop on
    # node1 still runs (record-pending off): vm1 is still on node1
    pcmk = PacemakerCluster("all-online").then(
        standby("node1"), "migrating-vm1-pending-off", "migrated-vm1-source-not-stopped"
    )
    p = provider(pcmk, drain_timeout="3s")

    async def main() -> None:
        prior = await p.maintenance_prior("node1")
        assert prior.role_owners == {"vm1": "node1"}
        await p.enter_maintenance("node1", MoveMethod.LIVE, prior)

    with pytest.raises(MaintenanceError, match=r"^vm1 would not move off node1 within 3s$"):
        run_virtual(main())


def test_a_retried_drain_still_waits_for_the_roles_the_node_had_before() -> None:
    # the first attempt's standby stopped web (not moved): the retry finds it gone from node2,
    # but it must run elsewhere before the node counts as drained
    pcmk = PacemakerCluster("all-online").then(standby("node2"), "web-half-started")
    p = provider(pcmk, drain_timeout="2s")

    async def main() -> None:
        prior = await p.maintenance_prior("node2")
        pcmk.mon = ["web-half-started"]  # as the first attempt left it
        await p.enter_maintenance("node2", MoveMethod.LIVE, prior)

    with pytest.raises(MaintenanceError, match=r"^web did not start on another node"):
        run_virtual(main())


# --- the drain check: crm_simulate on a copy of the CIB ----------------------------------------------


def test_drain_problems_asks_the_scheduler_on_a_copy_with_the_node_in_standby() -> None:
    pcmk = PacemakerCluster("all-online", simulate="simulate-standby-node2")
    assert run_virtual(provider(pcmk).drain_problems("node2", MoveMethod.LIVE)) == []
    (script,) = pcmk.simulations
    assert 'CIB_file="$f" crm_attribute --node node2 --name standby --update on' in script
    assert "target-role" not in script
    assert 'crm_simulate --xml-file "$f" --run --output-as=xml; rc=$?; rm -f "$f"; exit $rc' in script
    assert pcmk.edits == []  # nothing of the live cluster changed


def test_drain_problems_names_what_would_stop_and_the_constraints_that_hold_it() -> None:
    pcmk = PacemakerCluster("web-banned", simulate="web-banned-standby-node2")
    assert run_virtual(provider(pcmk).drain_problems("node2", MoveMethod.LIVE)) == [
        "web would stop on node2, not move (constraints: ban-web-node1 (web -INFINITY on node1), "
        "ban-web-node3 (web -INFINITY on node3))"
    ]
    pcmk = PacemakerCluster("web-rule-colocation", simulate="web-rule-colocation-standby-node2")
    problems = run_virtual(provider(pcmk).drain_problems("node2", MoveMethod.LIVE))
    assert [line.split(" ", 1)[0] for line in problems] == ["vm1", "web"]
    assert "vm1-with-web (vm1 with web, INFINITY)" in problems[0]
    assert "web-only-node2 (web -INFINITY by a rule)" in problems[1]


def test_drain_problems_in_save_mode_counts_the_nodes_own_stops_as_wanted() -> None:
    pcmk = PacemakerCluster("all-online", simulate="simulate-save-node2")
    assert run_virtual(provider(pcmk).drain_problems("node2", MoveMethod.SAVE)) == []
    (script,) = pcmk.simulations
    assert (
        'CIB_file="$f" crm_resource --resource web --meta --set-parameter target-role '
        "--parameter-value Stopped >/dev/null && crm_simulate" in script
    )
    # the same scheduler answer without save: web would stop
    pcmk = PacemakerCluster("all-online", simulate="simulate-save-node2")
    problems = run_virtual(provider(pcmk).drain_problems("node2", MoveMethod.LIVE))
    assert len(problems) == 1 and problems[0].startswith("web would stop on node2")


def test_a_failed_simulation_is_a_provider_error() -> None:
    failed = Reply("", 65, "crm_simulate: Invalid data given\n")
    pcmk = PacemakerCluster("all-online", simulate=failed)
    with pytest.raises(
        ProviderError, match=r"^crm_simulate failed \(exit 65\): crm_simulate: Invalid data given$"
    ):
        run_virtual(provider(pcmk).drain_problems("node2", MoveMethod.LIVE))


# --- failback ---------------------------------------------------------------------------------------


def node2_drained_and_back() -> tuple[PacemakerCluster, PacemakerProvider, MaintenancePrior]:
    """node2 was drained (web moved to node3) and came back: web still runs on node3."""
    pcmk = PacemakerCluster("all-online")
    p = provider(pcmk, failback_timeout="4s")
    prior = run_virtual(p.maintenance_prior("node2"))
    pcmk.mon = ["move-web-cli-prefer"]  # web on node3, everything else where it was
    pcmk.transports.log.clear()
    return pcmk, p, prior


def test_failback_prefers_the_node_until_its_roles_are_back_then_removes_the_constraint() -> None:
    pcmk, p, prior = node2_drained_and_back()
    pcmk.then(prefer("web", "node2"), "move-web-cli-prefer", "all-online")
    moved = run_virtual(p.failback("node2", prior, FailbackMode.IMMEDIATE))
    assert moved == ["web"]
    assert pcmk.cluster_commands() == [
        READ,  # where its roles are, and constraints an earlier failback may have left
        prefer("web", "node2"),
        CRM_MON,  # web back? (and, at once, are node2's clone instances running again?)
        CRM_MON,
        CRM_MON,
        unprefer("web", "node2"),
    ]
    assert pcmk.constraint_ids() == []


def test_a_failback_that_times_out_still_removes_its_constraint() -> None:
    pcmk, p, prior = node2_drained_and_back()  # web never comes back
    with pytest.raises(MaintenanceError, match=r"^web did not fail back on node2 within 4s$"):
        run_virtual(p.failback("node2", prior, FailbackMode.IMMEDIATE))
    assert pcmk.cluster_commands()[-1] == unprefer("web", "node2")
    assert pcmk.constraint_ids() == []


def test_failback_first_removes_what_an_earlier_failback_left() -> None:
    pcmk, p, prior = node2_drained_and_back()
    pcmk.apply(prefer("vm1", "node2"))  # a crashed coordinator's constraint
    pcmk.mon = ["all-online"]  # web is back already
    assert run_virtual(p.failback("node2", prior, FailbackMode.IMMEDIATE)) == []
    assert pcmk.edits[-1] == unprefer("vm1", "node2") and pcmk.constraint_ids() == []


@pytest.mark.parametrize("mode", [FailbackMode.POLICY, FailbackMode.NONE])
def test_only_immediate_failback_moves_roles(mode: FailbackMode) -> None:
    pcmk, p, prior = node2_drained_and_back()
    assert run_virtual(p.failback("node2", prior, mode)) == []
    assert pcmk.edits == []


def test_no_failback_to_a_node_that_was_in_maintenance_before_cau() -> None:
    pcmk, p, prior = node2_drained_and_back()
    before = MaintenancePrior("node2", was_in_maintenance=True, role_owners=prior.role_owners)
    assert run_virtual(p.failback("node2", before, FailbackMode.IMMEDIATE)) == []
    assert pcmk.edits == []


# --- move = save ------------------------------------------------------------------------------------


def test_save_mode_stops_the_roles_in_place_and_starts_them_on_the_node_after() -> None:
    pcmk = PacemakerCluster("all-online")
    pcmk.then(standby("node2"), "standby-node2").then(standby("node2", None), "standby-node2", "all-online")
    p = provider(pcmk)

    async def enter() -> MaintenancePrior:
        prior = await prior_and_reset(p, pcmk, "node2")
        await p.enter_maintenance("node2", MoveMethod.SAVE, prior)
        return prior

    prior = run_virtual(enter())
    # marked first (a crash between the two still leaves a trace), then stopped, then standby
    assert pcmk.edits == [
        meta("web", "cau-saved-on", "node2"),
        meta("web", "target-role", "Stopped"),
        standby("node2"),
    ]
    assert pcmk.meta("web") == {"cau-saved-on": "node2", "target-role": "Stopped"}
    assert run_virtual(p.leftovers()) == [
        "web stopped on node2 by cau (move = save; meta attribute cau-saved-on)"
    ]

    pcmk.edits.clear()
    run_virtual(p.exit_maintenance("node2", prior))
    assert pcmk.edits == [
        standby("node2", None),
        prefer("web", "node2"),  # started again where it was, not wherever Pacemaker likes
        meta("web", "target-role", None),  # it had no target-role before
        meta("web", "cau-saved-on", None),
        unprefer("web", "node2"),
    ]
    assert pcmk.meta("web") == {} and pcmk.constraint_ids() == []
    assert pcmk.node_attribute("node2", "standby") is None


def test_save_mode_gives_back_the_target_role_a_resource_had() -> None:
    pcmk = PacemakerCluster("all-online")
    pcmk.apply(meta("web", "target-role", "Started"))
    pcmk.then(standby("node2"), "standby-node2").then(standby("node2", None), "all-online")
    p = provider(pcmk)

    async def main() -> None:
        prior = await p.maintenance_prior("node2")
        assert prior.extra["target_roles"] == {"web": "Started"}
        await p.enter_maintenance("node2", MoveMethod.SAVE, prior)
        await p.exit_maintenance("node2", prior)

    run_virtual(main())
    assert meta("web", "target-role", "Started") in pcmk.edits[-3:]
    assert pcmk.meta("web") == {"target-role": "Started"}


# --- leaving maintenance ------------------------------------------------------------------------------


@pytest.mark.parametrize("before", [None, "off"])
def test_exit_maintenance_gives_back_the_standby_value_the_node_had(before: str | None) -> None:
    pcmk = PacemakerCluster("all-online")
    if before is not None:
        pcmk.apply(standby("node2", before))
    pcmk.then(standby("node2"), "standby-node2").then(standby("node2", before), "move-web-cli-prefer")
    p = provider(pcmk)

    async def main() -> None:
        prior = await p.maintenance_prior("node2")
        assert prior.extra["standby"] == before
        await p.enter_maintenance("node2", MoveMethod.LIVE, prior)
        pcmk.edits.clear()
        await p.exit_maintenance("node2", prior)

    run_virtual(main())
    assert pcmk.edits == [standby("node2", before)]
    assert pcmk.node_attribute("node2", "standby") == before


@pytest.mark.parametrize("mode", list(FailbackMode))
def test_failback_waits_for_the_nodes_clone_instances_whatever_the_mode(mode: FailbackMode) -> None:
    pcmk = PacemakerCluster("all-online").then(standby("node2"), "standby-node2")
    pcmk.then(standby("node2", None), "standby-node2")  # the clone never starts there again
    p = provider(pcmk, failback_timeout="2s")

    async def main() -> None:
        prior = await p.maintenance_prior("node2")
        await p.enter_maintenance("node2", MoveMethod.LIVE, prior)
        await p.exit_maintenance("node2", prior)  # out of standby; the clones start meanwhile
        await p.failback("node2", prior, mode)

    # (immediate: web, which ran on node2, does not come back either, and is named first)
    moved = "web did not fail back on node2 within 2s; " if mode is FailbackMode.IMMEDIATE else ""
    with pytest.raises(MaintenanceError, match=f"^{moved}web-clone did not start again on node2 within 2s$"):
        run_virtual(main())


def test_a_node_in_standby_before_cau_is_left_in_standby() -> None:
    pcmk = PacemakerCluster("standby-node2")
    p = provider(pcmk)

    async def main() -> None:
        prior = await p.maintenance_prior("node2")
        assert prior.was_in_maintenance and prior.extra["standby"] == "on" and prior.role_owners == {}
        await p.exit_maintenance("node2", prior)

    run_virtual(main())
    assert pcmk.edits == [] and pcmk.node_attribute("node2", "standby") == "on"


# --- observation and quorum ---------------------------------------------------------------------------


def test_discover_counts_each_members_votes_as_corosync_does() -> None:
    pcmk = PacemakerCluster("all-online", quorum="three-nodes-node1-two-votes")
    snap = run_virtual(provider(pcmk).discover())
    assert [(n.name, n.votes, n.state, n.leader) for n in snap.nodes] == [
        ("node1", 2, NodeState.UP, True),
        ("node2", 1, NodeState.UP, False),
        ("node3", 1, NodeState.UP, False),
    ]
    assert snap.vote_quorum is not None and snap.vote_quorum.needed == 3
    assert {r.name: r.owner for r in snap.roles} == {"vm1": "node1", "web": "node2", "web-clone": None}
    # a min_online of the configuration is the rule instead of Corosync's
    assert run_virtual(provider(pcmk, min_online=2).discover()).vote_quorum is None


def test_a_node_down_or_offline_in_pacemaker_is_down() -> None:
    pcmk = PacemakerCluster("node1-offline", quorum="three-nodes-alone")
    pcmk.held.add("node1")
    snap = run_virtual(provider(pcmk).discover())
    assert [n.state for n in snap.nodes] == [NodeState.DOWN, NodeState.UP, NodeState.UP]
    assert snap.node("node1").boot_id is None


def test_discover_goes_on_without_corosyncs_quorum_and_preflight_refuses() -> None:
    pcmk = PacemakerCluster("all-online")
    pcmk.quorum = "corosync-quorumtool: Cannot initialize QUORUM service\n"
    p = provider(pcmk, allow_member_coordinator=True)
    snap = run_virtual(p.discover())
    assert snap.vote_quorum is None and [n.votes for n in snap.nodes] == [1, 1, 1]
    (problem,) = run_virtual(p.preflight())
    assert problem.startswith("cannot read Corosync's quorum")
    assert QUORUM in pcmk.cluster_commands()


def test_preflight_names_members_missing_from_the_configuration() -> None:
    pcmk = PacemakerCluster("all-online")
    opts = {"nodes": [{"name": "node1", "host": "10.77.0.11"}, {"name": "node2", "host": "10.77.0.12"}]}
    problems = run_virtual(provider(pcmk, allow_member_coordinator=True, **opts).preflight())
    assert problems == [
        "Pacemaker node(s) node3 are not in the cluster configuration: list every member (with its "
        "address) so quorum is counted right"
    ]


# --- what cau left, found by looking ------------------------------------------------------------------


def test_leftovers_and_clean_up() -> None:
    pcmk = PacemakerCluster("all-online")
    pcmk.apply(prefer("web", "node3"))
    pcmk.apply(meta("vm1", "cau-saved-on", "node1"))
    pcmk.apply(meta("vm1", "target-role", "Stopped"))
    pcmk.edits.clear()
    p = provider(pcmk)
    assert run_virtual(p.leftovers()) == [
        "location constraint cau-prefer-web-on-node3 (web INFINITY on node3)",
        "vm1 stopped on node1 by cau (move = save; meta attribute cau-saved-on)",
    ]
    assert run_virtual(p.leftovers("node2")) == []
    done, waiting = run_virtual(p.clean_up())
    assert done == [
        "removed location constraint cau-prefer-web-on-node3 (web INFINITY on node3)",
        "started vm1 again on node1",
    ]
    assert waiting == []
    assert pcmk.edits == [
        unprefer("web", "node3"),
        prefer("vm1", "node1"),
        meta("vm1", "target-role", None),
        meta("vm1", "cau-saved-on", None),
        unprefer("vm1", "node1"),
    ]
    assert run_virtual(p.leftovers()) == []


def test_clean_up_leaves_resources_stopped_while_their_node_is_in_standby() -> None:
    pcmk = PacemakerCluster("standby-node2")
    pcmk.apply(meta("web", "cau-saved-on", "node2"))
    pcmk.edits.clear()
    done, waiting = run_virtual(provider(pcmk).clean_up())
    assert done == []
    assert waiting == ["web stay stopped: node2 is in standby; run this again once it is back"]
    assert pcmk.edits == []


# --- which member runs the cluster commands -----------------------------------------------------------


def test_cluster_commands_go_to_another_member_when_one_is_not_running_pacemaker() -> None:
    pcmk = PacemakerCluster("all-online")
    pcmk.not_members.add("node1")
    p = provider(pcmk)
    status = run_virtual(p.read_status())
    assert status.dc == "node1"
    assert pcmk.transports.log == [("node1", CRM_MON), ("node2", CRM_MON)]
    run_virtual(p.read_status())  # the member that answered is asked first from then on
    assert pcmk.transports.log[-1] == ("node2", CRM_MON)


def test_a_node_that_is_down_is_skipped_and_the_node_itself_asked_last() -> None:
    pcmk = PacemakerCluster("all-online")
    pcmk.held.add("node1")
    pcmk.not_members.add("node3")
    p = provider(pcmk)
    run_virtual(p._member_run(CRM_MON, avoid="node2"))
    assert [n for n, _ in pcmk.transports.log] == ["node1", "node3", "node2"]


def test_no_member_answering_is_a_provider_error() -> None:
    pcmk = PacemakerCluster("all-online")
    pcmk.not_members.update({"node1", "node2"})
    pcmk.held.add("node3")
    with pytest.raises(
        ProviderError, match=r"no node of 'lab' answers as a running Pacemaker member \(node1: "
    ):
        run_virtual(provider(pcmk).read_status())


def test_a_command_failing_on_a_running_member_is_not_retried_elsewhere() -> None:
    pcmk = PacemakerCluster("all-online")
    p = provider(pcmk)
    pcmk.overrides.on("crm_attribute", Reply("", 105, "Error performing operation: Permission denied\n"))
    prior = MaintenancePrior("node2", was_in_maintenance=False)
    with pytest.raises(
        MaintenanceError, match=r"^putting node2 in standby failed \(exit 105\): Error performing"
    ):
        run_virtual(p.enter_maintenance("node2", MoveMethod.LIVE, prior))
    assert [n for n, c in pcmk.transports.log if c.startswith("crm_attribute")] == ["node1"]


# --- restarts -----------------------------------------------------------------------------------------


def test_wait_ready_needs_a_new_boot_and_the_node_online_in_pacemaker_again() -> None:
    pcmk = PacemakerCluster("all-online")
    p = provider(pcmk)

    async def main() -> str:
        old = await p.boot_id("node1")
        await p.restart("node1")
        pcmk.mon = ["node1-offline", "node1-offline", "all-online"]
        return await p.wait_ready("node1", previous_boot_id=old, timeout=60)

    assert run_virtual(main()) == "node1-boot-2"
    assert pcmk.cluster_commands().count(CRM_MON) == 3
    assert pcmk.transports.transports["node1"].closes >= 1  # the old connection was dropped


def test_a_node_that_never_rejoins_pacemaker_times_out() -> None:
    pcmk = PacemakerCluster("node1-offline")
    p = provider(pcmk)

    async def main() -> str:
        await p.restart("node1")
        return await p.wait_ready("node1", previous_boot_id="node1-boot-1", timeout=20)

    with pytest.raises(
        NodeUnreachable, match=r"node1 restarted \(new boot id\) but did not rejoin .* 20s \(offline"
    ):
        run_virtual(main())


def test_a_member_that_refuses_cau_is_passed_over_for_one_that_answers() -> None:
    """A member whose host key changed is not connected to; another member answers for the
    cluster (the changed node fails on its own turn, with its remedy). When every member
    refuses, the refusal itself is raised, with the command that fixes it."""
    pcmk = PacemakerCluster("all-online")
    refusal = changed_host_key(
        SshTarget(name="node1", host="10.77.0.11", known_hosts=Path("/nonexistent/kh"), cluster="lab")
    )
    pcmk.refusing["node1"] = refusal
    p = provider(pcmk)
    status = run_virtual(p.read_status())
    assert status.dc == "node1"  # what node2 said of the cluster
    assert [n for n, _ in pcmk.transports.log] == ["node1", "node2"]
    pcmk.refusing.update({"node2": refusal, "node3": refusal})
    with pytest.raises(HostKeyError) as caught:
        run_virtual(provider(pcmk).read_status())
    assert "cau hosts trust lab node1 --replace" in (caught.value.hint or "")


# --- the clustered coordinator role (self-updating mode) ------------------------------------------


def ban(node: str) -> str:
    xml = f'<rsc_location id="cau-coordinator-away" rsc="cau-coordinator" node="{node}" score="-INFINITY"/>'
    return f"cibadmin --modify --allow-create --scope constraints --xml-text '{xml}'"


def test_a_hand_over_bans_the_role_from_its_node_and_moves_one_ban_from_node_to_node() -> None:
    pcmk = PacemakerCluster("all-online")
    p = provider(pcmk)
    assert run_virtual(p.move_coordinator_role("node1")) is None  # Pacemaker chooses where
    assert run_virtual(p.move_coordinator_role("node2")) is None
    assert pcmk.edits == [ban("node1"), ban("node2")]
    assert run_virtual(p.read_config()).cau_constraints()[0].describe() == (
        "cau-coordinator-away (cau-coordinator -INFINITY on node2)"
    )


def test_the_ban_goes_when_its_node_leaves_maintenance_and_only_then() -> None:
    pcmk = PacemakerCluster("all-online").then(standby("node2"), "standby-node2")
    pcmk.then(standby("node2", None), "all-online")
    p = provider(pcmk)

    async def main() -> None:
        await p.move_coordinator_role("node2")
        prior = await p.maintenance_prior("node2")
        await p.enter_maintenance("node2", MoveMethod.LIVE, prior)
        other = await p.maintenance_prior("node1")
        pcmk.edits.clear()
        await p.exit_maintenance("node1", other)  # another node's exit leaves the ban
        assert not any("cau-coordinator-away" in e for e in pcmk.edits)
        await p.exit_maintenance("node2", prior)

    run_virtual(main())
    assert (
        pcmk.edits[-1] == "cibadmin --delete --scope constraints --xml-text "
        "'<rsc_location id=\"cau-coordinator-away\"/>'"
    )
    assert run_virtual(p.read_config()).cau_constraints() == []


def test_the_hand_over_ban_of_a_run_in_progress_is_no_leftover_for_preflight_but_cleanup_removes_it() -> None:
    pcmk = PacemakerCluster("all-online")
    pcmk.apply(ban("node1"))
    p = provider(pcmk)
    assert not any("cau-coordinator" in problem for problem in run_virtual(p.preflight()))
    assert run_virtual(p.leftovers()) == [
        "location constraint cau-coordinator-away (cau-coordinator -INFINITY on node1)"
    ]
    done, _ = run_virtual(p.clean_up())
    assert done == ["removed location constraint cau-coordinator-away (cau-coordinator -INFINITY on node1)"]


def test_the_coordinator_role_is_no_workload_to_drain_or_fail_back() -> None:
    from cau.providers.pacemaker import roles_from
    from cau.providers.pacemaker_state import ClusterStatus, PcmkResource

    status = ClusterStatus(
        nodes=(), dc=None, with_quorum=True, maintenance_mode=False, stonith_enabled=False,
        resources=(
            PcmkResource("cau-coordinator", "primitive", ("node2",), agent="ocf:cau:coordinator"),
            PcmkResource("vm1", "primitive", ("node2",)),
        ),
    )  # fmt: skip
    config = run_virtual(provider(PacemakerCluster("all-online")).read_config())
    assert [r.name for r in roles_from(status, config)] == ["vm1"]


def test_a_coordinator_on_a_member_is_refused_in_remote_mode_but_is_the_role_in_self_updating_mode() -> None:
    pcmk = PacemakerCluster("all-online")
    nodes = [
        {"name": "node1", "host": "127.0.0.1"},
        *({"name": f"node{i}", "host": f"10.77.0.1{i}"} for i in (2, 3)),
    ]
    p = provider(pcmk, nodes=nodes)
    assert any(
        "remote-updating mode: this machine is itself node node1" in x for x in run_virtual(p.preflight())
    )
    assert run_virtual(p.preflight(coordinator_node="node1")) == []


def test_the_roles_owner_counts_from_its_start_for_the_daemon_but_role_add_waits_for_started() -> None:
    from cau.providers.pacemaker_role import owner_in
    from cau.providers.pacemaker_state import ClusterStatus, PcmkResource

    def status(role: str, whole: tuple[str, ...]) -> ClusterStatus:
        res = PcmkResource("cau-coordinator", "primitive", ("node2",), whole_on=whole, role=role)
        return ClusterStatus(
            nodes=(),
            resources=(res,),
            dc=None,
            with_quorum=True,
            maintenance_mode=False,
            stonith_enabled=False,
        )

    starting = status("Starting", ())
    # the daemon the agent starts asks while its start is still running: it is the owner
    assert owner_in(starting) == "node2"
    assert owner_in(starting, started=True) is None
    assert owner_in(status("Started", ("node2",)), started=True) == "node2"
    assert owner_in(status("Stopping", ())) is None  # a hand-over under way: nobody yet
