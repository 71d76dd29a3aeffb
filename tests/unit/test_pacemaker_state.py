"""Golden-file tests: real crm_mon and CIB outputs captured from the lab's Pacemaker 2.1.5
cluster (tests/fixtures/pacemaker/, see capture.sh there) parsed into what cau decides on."""

from __future__ import annotations

from pathlib import Path

import pytest

from cau.domain.cluster import RoleKind
from cau.errors import ProviderError
from cau.providers.pacemaker import node_labels, roles_from
from cau.providers.pacemaker_state import (
    ClusterConfig,
    ClusterStatus,
    SimulatedAction,
    drain_stops,
    health_problems,
    parse_cib,
    parse_crm_mon,
    parse_simulation,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "pacemaker"


def mon(state: str) -> ClusterStatus:
    return parse_crm_mon((FIXTURES / f"{state}.crm_mon.xml").read_text())


def cib(state: str) -> ClusterConfig:
    return parse_cib((FIXTURES / f"{state}.cib.xml").read_text())


def test_all_online_nodes_dc_quorum_and_where_each_resource_runs() -> None:
    status = mon("all-online")
    assert [n.name for n in status.nodes] == ["node1", "node2", "node3"]
    assert all(n.online and not n.standby and not n.maintenance for n in status.nodes)
    assert status.dc == "node1" and status.with_quorum
    assert [n.name for n in status.nodes if n.is_dc] == ["node1"]
    assert not status.stonith_enabled and not status.maintenance_mode
    by_id = {r.id: r for r in status.resources}
    assert set(by_id) == {"vm1", "web", "web-clone"}  # top-level resources: what cau moves
    assert by_id["vm1"].kind == "primitive" and by_id["vm1"].nodes == ("node1",)
    assert by_id["web"].kind == "group" and by_id["web"].nodes == ("node2",)
    assert by_id["web"].members == ("web-ip", "web-server")
    assert by_id["web-clone"].kind == "clone"
    assert sorted(by_id["web-clone"].nodes) == ["node1", "node2", "node3"]
    assert status.active_on("node1") == ["vm1", "web-clone"]
    assert health_problems(status) == []


def test_cib_meta_attributes_stickiness_and_migration() -> None:
    config = cib("all-online")
    assert config.allows_migration("vm1")
    assert not config.allows_migration("web")  # a group of non-migratable members fails over
    assert config.kinds == {"vm1": "primitive", "web": "group", "web-clone": "clone"}
    assert config.stickiness("vm1") == "100"  # from rsc_defaults
    assert config.target_role("vm1") is None
    assert config.cau_constraints() == []


def test_standby_node_has_nothing_running_and_its_clone_instance_stopped() -> None:
    status = mon("standby-node2")
    node2 = status.node("node2")
    assert node2 is not None and node2.standby and node2.online and node2.resources_running == 0
    assert status.active_on("node2") == []
    assert status.resource("web") is not None and status.resource("web").nodes == ("node3",)  # type: ignore[union-attr]
    assert sorted(status.resource("web-clone").nodes) == ["node1", "node3"]  # type: ignore[union-attr]
    assert cib("standby-node2").node_attributes["node2"] == {"standby": "on"}


def test_a_live_migrations_source_counts_as_active_until_its_stop_has_run() -> None:
    # Captured with record-pending=false, where the window lasts the source's whole stop:
    # crm_mon already shows vm1 Started on node2 only, but node1's newest vm1 operation is the
    # migrate_to (no stop yet), and the server still runs there.
    status = mon("migrated-vm1-source-not-stopped")
    assert status.resource("vm1").nodes == ("node2",)  # type: ignore[union-attr]
    assert status.leaving == {"node1": frozenset({"vm1"})}
    assert status.active_on("node1") == ["vm1"]  # node1 is in standby: not drained yet
    assert "vm1" in status.active_on("node2")
    assert status.left_behind_on("vm1") == ["node1"] and status.left_behind_on("web") == []
    # the same history on a node that is offline counts for nothing: it runs nothing
    text = (FIXTURES / "migrated-vm1-source-not-stopped.crm_mon.xml").read_text()
    node1 = next(line for line in text.splitlines() if '<node name="node1"' in line and "online=" in line)
    offline = parse_crm_mon(text.replace(node1, node1.replace('online="true"', 'online="false"')))
    assert offline.leaving == {}


def test_a_migration_in_flight_shows_the_resource_stopped_yet_still_on_its_source() -> None:
    # The same setting, mid-migration: crm_mon calls vm1 Stopped (active nowhere) between its
    # migrate_to on node1 and its migrate_from on node2. Still on node1 for the drain, and not
    # yet started anywhere else.
    status = mon("migrating-vm1-pending-off")
    assert status.resource("vm1").nodes == ()  # type: ignore[union-attr]
    assert status.active_on("node1") == ["vm1"]


@pytest.mark.parametrize(
    "state",
    [
        "all-online",
        "standby-node2",
        "node1-offline",
        "ban-vm1-cli-ban",
        "move-web-cli-prefer",
        "node3-maintenance",
        "resource-failed",
        "target-role-stopped",
        "no-quorum",
    ],
)
def test_finished_migrations_and_plain_states_leave_nothing_behind(state: str) -> None:
    # ban-vm1-cli-ban: vm1 live-migrated node1 -> node2 and the transition finished (its stop
    # on node1 is newer than its migrate_to there)
    assert mon(state).leaving == {}


def test_offline_node_runs_nothing_and_the_dc_moved() -> None:
    status = mon("node1-offline")
    node1 = status.node("node1")
    assert node1 is not None and not node1.online and not node1.unclean
    assert status.dc == "node2" and status.with_quorum
    assert status.active_on("node1") == []
    assert status.resource("vm1").nodes != ("node1",)  # type: ignore[union-attr]


def test_node_maintenance_attribute() -> None:
    status = mon("node3-maintenance")
    node3 = status.node("node3")
    assert node3 is not None and node3.maintenance and not node3.standby
    assert cib("node3-maintenance").node_attributes["node3"].get("maintenance") == "on"


def test_failed_action_makes_the_cluster_unhealthy_and_names_the_resource() -> None:
    status = mon("resource-failed")
    assert [(f.resource, f.node, f.task) for f in status.failures] == [("web-local", "node3", "monitor")]
    problems = health_problems(status)
    assert any("web-local on node3" in p and "monitor" in p for p in problems), problems


def test_operator_move_and_ban_constraints_are_not_preferences() -> None:
    moved = cib("move-web-cli-prefer")
    assert [(c.id, c.resource, c.node, c.score) for c in moved.locations] == [
        ("cli-prefer-web", "web", "node3", "INFINITY")
    ]
    assert moved.preferred_nodes("web") == ()  # a temporary move, not a location preference
    assert mon("move-web-cli-prefer").resource("web").nodes == ("node3",)  # type: ignore[union-attr]
    banned = cib("ban-vm1-cli-ban")
    assert banned.locations[0].score == "-INFINITY" and banned.cau_constraints() == []


def test_scored_location_constraints_order_preferred_owners() -> None:
    text = (FIXTURES / "all-online.cib.xml").read_text()
    extra = (
        '<rsc_location id="web-likes-node3" rsc="web" node="node3" score="50"/>'
        '<rsc_location id="web-loves-node1" rsc="web" node="node1" score="INFINITY"/>'
        '<rsc_location id="cau-prefer-web-on-node2" rsc="web" node="node2" score="INFINITY"/>'
    )
    text = text.replace("<constraints/>", f"<constraints>{extra}</constraints>")
    config = parse_cib(text)
    assert config.preferred_nodes("web") == ("node1", "node3")
    assert [c.id for c in config.cau_constraints()] == ["cau-prefer-web-on-node2"]


def test_roles_live_failover_clone_with_owners() -> None:
    roles = {r.name: r for r in roles_from(mon("all-online"), cib("all-online"))}
    assert roles["vm1"].kind is RoleKind.LIVE and roles["vm1"].owner == "node1"
    assert roles["web"].kind is RoleKind.FAILOVER and roles["web"].owner == "node2"
    assert roles["web-clone"].kind is RoleKind.CLONE
    assert sorted(roles["web-clone"].instances) == ["node1", "node2", "node3"]
    standby = {r.name: r for r in roles_from(mon("standby-node2"), cib("standby-node2"))}
    assert standby["web"].owner == "node3" and "node2" not in standby["web-clone"].instances


def test_a_clone_expects_one_instance_per_node_or_its_clone_max() -> None:
    # disruption budgets in percent count from the instances a clone should run
    roles = {r.name: r for r in roles_from(mon("standby-node2"), cib("standby-node2"))}
    assert roles["web-clone"].expected_instances == 3  # Pacemaker's default: one per node
    text = (FIXTURES / "all-online.cib.xml").read_text()
    capped = text.replace(
        '<nvpair id="web-clone-meta-interleave" name="interleave" value="true"/>',
        '<nvpair id="web-clone-meta-interleave" name="interleave" value="true"/>'
        '<nvpair id="web-clone-meta-max" name="clone-max" value="2"/>',
    )
    assert capped != text
    roles = {r.name: r for r in roles_from(mon("all-online"), parse_cib(capped))}
    assert roles["web-clone"].expected_instances == 2


@pytest.mark.parametrize("text", ["", "error: Could not connect to the CIB", "<pacemaker-result"])
def test_unreadable_output_is_a_provider_error(text: str) -> None:
    with pytest.raises(ProviderError):
        parse_crm_mon(text)


def test_crm_mon_error_status_is_reported() -> None:
    text = (
        '<pacemaker-result api-version="2.25"><status code="102" message="Not connected"/></pacemaker-result>'
    )
    with pytest.raises(ProviderError, match="Not connected"):
        parse_crm_mon(text)


# --- crm_simulate: would a drain stop anything? ---------------------------------------------------


def simulated(state: str) -> list[SimulatedAction]:
    return parse_simulation((FIXTURES / f"{state}.simulate.xml").read_text())


def test_simulated_standby_moves_the_group_and_stops_only_the_nodes_clone_instance() -> None:
    actions = simulated("simulate-standby-node2")
    assert [(a.action, a.resource, a.source, a.dest, a.node) for a in actions] == [
        ("move", "web-ip", "node2", "node3", None),
        ("move", "web-server", "node2", "node3", None),
        ("stop", "web-local:1", None, None, "node2"),
    ]
    assert drain_stops(actions, mon("all-online"), cib("all-online"), "node2") == []


def test_simulated_standby_live_migrates_vm1() -> None:
    actions = simulated("simulate-standby-node1")
    assert (
        actions[0].action,
        actions[0].resource,
        actions[0].source,
        actions[0].dest,
    ) == ("migrate", "vm1", "node1", "node2")
    assert drain_stops(actions, mon("all-online"), cib("all-online"), "node1") == []


def test_a_resource_banned_from_every_other_node_would_stop_and_its_bans_are_named() -> None:
    stops = drain_stops(simulated("web-banned-standby-node2"), mon("web-banned"), cib("web-banned"), "node2")
    assert len(stops) == 1, stops
    assert stops[0].startswith("web would stop on node2, not move")
    assert "ban-web-node1 (web -INFINITY on node1)" in stops[0]
    assert "ban-web-node3 (web -INFINITY on node3)" in stops[0]


def test_a_rule_and_a_colocation_are_named_for_what_they_would_stop() -> None:
    stops = drain_stops(
        simulated("web-rule-colocation-standby-node2"),
        mon("web-rule-colocation"),
        cib("web-rule-colocation"),
        "node2",
    )
    by_role = {line.split(" ", 1)[0]: line for line in stops}
    assert sorted(by_role) == ["vm1", "web"]
    assert "web-only-node2 (web -INFINITY by a rule)" in by_role["web"]
    assert "vm1-with-web (vm1 with web, INFINITY)" in by_role["vm1"]


def test_save_mode_stops_the_saved_resources_on_purpose_and_nothing_else() -> None:
    actions = simulated("simulate-save-node2")
    assert {a.primitive for a in actions if a.action == "stop"} == {"web-ip", "web-server", "web-local"}
    assert drain_stops(actions, mon("all-online"), cib("all-online"), "node2", saved=["web"]) == []
    # the same stops without saving web are a stop the drain would cause
    assert drain_stops(actions, mon("all-online"), cib("all-online"), "node2")[0].startswith("web would stop")


def test_a_failed_simulation_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="crm_simulate failed: Invalid"):
        parse_simulation('<pacemaker-result><status code="65" message="Invalid data"/></pacemaker-result>')


def test_a_group_half_started_elsewhere_is_not_moved() -> None:
    status = mon("web-half-started")
    web = status.resource("web")
    assert web is not None and web.nodes == ("node1",)  # crm_mon lists it on node1 ...
    assert web.complete_on == ()  # ... but it does not run whole anywhere
    assert web.present_on == ("node1",)
    assert status.active_on("node2") == []


def test_a_member_still_starting_is_not_running_yet() -> None:
    # captured while web-server's start on node3 was under way (crm_mon: role Starting, active)
    status = mon("web-server-starting")
    web = status.resource("web")
    assert web is not None and web.nodes == ("node3",) and web.present_on == ("node3",)
    assert web.complete_on == ()  # web-ip runs on node3, web-server is only starting there
    assert status.resource("vm1").complete_on == ("node1",)  # type: ignore[union-attr]


def test_a_member_whose_start_failed_is_not_running() -> None:
    # captured just after web-server's start failed on node3: crm_mon shows it Started, active
    # and failed there until Pacemaker has stopped it
    status = mon("web-server-failed-start")
    web = status.resource("web")
    assert web is not None and web.nodes == ("node3",) and web.complete_on == ()


def test_node_attributes_are_node_labels() -> None:
    """Pacemaker node attributes (crm_attribute --node N --name site) are the nodes' labels, for
    failure domains; the cluster configuration's labels win."""
    config = cib("node-labels")
    assert config.node_attributes["node3"] == {"site": "paris", "rack": "r7"}
    assert node_labels(config, "node1", {}) == {"site": "berlin", "rack": "r1"}
    assert node_labels(config, "node2", {"rack": "r9"}) == {"site": "berlin", "rack": "r9"}
    assert node_labels(cib("all-online"), "node1", {}) == {}
