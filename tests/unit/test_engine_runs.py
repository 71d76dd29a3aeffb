"""Updating Runs on sandbox clusters, in virtual time: each CAU behaviour as an operator sees it."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from cau.clock import run_virtual
from cau.domain.profile import build_profile
from cau.errors import PreflightError
from cau.journal.events import EventKind, JournalEvent
from tests.support import (
    Done,
    installs,
    max_concurrent_maintenance,
    node,
    run_cluster,
    service,
    spec,
    write_cluster,
)

ROLES = [
    {"name": "web", "kind": "live", "owner": "n1", "preferred_owners": ["n1"], "cpu": 4, "memory_gb": 8},
    {
        "name": "db",
        "kind": "failover",
        "owner": "n2",
        "preferred_owners": ["n2", "n3"],
        "cpu": 4,
        "memory_gb": 8,
    },
    {"name": "dns", "kind": "clone", "cpu": 1, "memory_gb": 1},
    {"name": "licence", "kind": "pinned", "owner": "n3", "cpu": 1, "memory_gb": 1},
]


def test_builtin_sandbox_run_updates_every_node(tmp_path: Path) -> None:
    done = run_cluster(tmp_path, None, "sandbox")
    report = done.report
    assert report.status == "Succeeded"
    assert {n.name for n in report.nodes} == {"node1", "node2", "node3", "node4"}
    for n in report.nodes:
        assert n.status == "Succeeded", n
        ids = {u.id for u in n.updates}
        # the second-order update only appears after libc is installed, and is installed too
        assert "cau-node-agent-1.1" in ids and "libc6-2.36-9+deb12u13" in ids
        assert n.restarts == 1 and len(n.boot_ids) == 1
        assert n.maintenance_seconds > 0 and not n.left_in_maintenance
    assert "bmc-firmware-2.14" in {u.id for u in done.node("node3").updates}
    assert done.state["violations"] == []
    # CAU's default order: the node with the fewest roles first
    assert next(n.name for n in report.nodes) == "node3"
    # failback immediate: every role is back where it started
    start = next(e for e in done.events if e.kind is EventKind.RUN_CREATED).data["roles"]
    for role, info in done.state["roles"].items():
        assert info["owner"] == start[role]["owner"], role


def test_second_run_finds_every_node_compliant_and_drains_nothing(tmp_path: Path) -> None:
    run_cluster(tmp_path, None, "sandbox")
    again = run_cluster(tmp_path, None, "sandbox")
    assert again.report.status == "Succeeded"
    assert all(n.updates == [] and n.maintenance_started is None for n in again.report.nodes)
    assert not any(e.step == "enter_maintenance" for e in again.events)


def test_node_that_never_returns_fails_and_budget_stops_the_run(tmp_path: Path) -> None:
    nodes = [node("n1"), node("n2", never_returns=True), node("n3"), node("n4")]
    config = write_cluster(tmp_path, spec(nodes, roles=ROLES))
    done = run_cluster(tmp_path, config, max_failed_nodes=0, node_order=["n2"], reboot_timeout="10m")
    n2 = done.node("n2")
    assert n2.status == "Failed" and n2.error_id == "NodeDidNotReturn"
    assert n2.left_in_maintenance  # down: cau could not take it out, and says so
    assert done.report.status == "Failed" and done.report.error_id == "MaxFailedNodesExceeded"
    # nothing else was started after the budget was exceeded
    assert {n.name: n.status for n in done.report.nodes if n.name != "n2"} == dict.fromkeys(
        ["n1", "n3", "n4"], "Canceled"
    )
    assert not any(e.kind is EventKind.NODE_STARTED and e.node != "n2" for e in done.events)
    # the reboot timeout was respected: the restart step took ~10 minutes of cluster time
    restart = next(s for s in n2.steps if s.step == "restart")
    assert restart.finished is not None
    assert 590 <= (restart.finished - restart.started).total_seconds() <= 620


def test_within_budget_a_failed_node_does_not_stop_the_run(tmp_path: Path) -> None:
    # five nodes: with n2 down for good, taking one more down still leaves 3 of 5 votes
    nodes = [node("n1"), node("n2", never_returns=True), node("n3"), node("n4"), node("n5")]
    config = write_cluster(tmp_path, spec(nodes, roles=ROLES))
    done = run_cluster(tmp_path, config, reboot_timeout="5m")  # default budget: 5 // 3 = 1
    assert done.report.status == "PartiallyFailed"
    assert done.report.max_failed_nodes == 1
    assert [n.status for n in done.report.nodes].count("Succeeded") == 4


def test_quorum_is_kept_after_a_node_failed_to_return(tmp_path: Path) -> None:
    # four nodes, n2 never returns: draining any other node would leave 2 of 4 votes
    nodes = [node("n1"), node("n2", never_returns=True), node("n3"), node("n4")]
    config = write_cluster(tmp_path, spec(nodes, roles=ROLES))
    done = run_cluster(tmp_path, config, reboot_timeout="5m", node_order=["n2"], max_failed_nodes=3)
    assert done.node("n2").error_id == "NodeDidNotReturn"
    assert {done.node(n).error_id for n in ("n1", "n3", "n4")} == {"QuorumAtRisk"}
    assert done.state["violations"] == []


def test_install_that_fails_twice_succeeds_on_retry(tmp_path: Path) -> None:
    updates = [{"id": "kernel", "restart": True, "install_seconds": 30, "fail_installs": {"n1": 2}}]
    config = write_cluster(tmp_path, spec(3, updates=updates))
    done = run_cluster(tmp_path, config, max_retries_per_node=3)
    n1 = done.node("n1")
    assert n1.status == "Succeeded"
    assert n1.updates[0].attempts == 3
    assert len(n1.transient_errors) == 2
    assert n1.restarts == 1  # restarted once, after the install that worked


def test_install_that_keeps_failing_is_reported_and_the_node_is_released(tmp_path: Path) -> None:
    updates = [
        {"id": "kernel", "restart": True, "install_seconds": 30},
        {"id": "broken-pkg", "install_seconds": 10, "fail_installs": {"n1": 99}},
    ]
    config = write_cluster(tmp_path, spec(3, updates=updates))
    done = run_cluster(tmp_path, config, max_retries_per_node=2)
    n1 = done.node("n1")
    assert n1.status == "PartiallyFailed" and n1.error_id == "InstallFailed"
    assert {u.id: u.status for u in n1.updates} == {"kernel": "Succeeded", "broken-pkg": "Failed"}
    assert next(u for u in n1.updates if u.id == "broken-pkg").attempts == 3
    assert not done.state["nodes"]["n1"]["in_maintenance"]
    assert done.report.status == "PartiallyFailed"


def test_failed_migration_is_retried(tmp_path: Path) -> None:
    roles = [dict(ROLES[0], fail_migrations=1), *ROLES[1:]]
    config = write_cluster(tmp_path, spec(3, roles=roles))
    done = run_cluster(tmp_path, config)
    assert done.report.status == "Succeeded"
    assert any("enter maintenance attempt 1" in t for t in done.node("n1").transient_errors)


def test_a_failed_drain_is_undone_before_it_is_retried(tmp_path: Path) -> None:
    roles = [dict(ROLES[0], fail_migrations=1), *ROLES[1:]]
    config = write_cluster(tmp_path, spec(3, roles=roles))
    done = run_cluster(tmp_path, config, node_order=["n1"])
    assert done.report.status == "Succeeded"
    steps = [
        (e.kind.value, e.key, bool(e.data.get("ok")))
        for e in done.events
        if e.node == "n1" and e.kind in (EventKind.INTENT, EventKind.OUTCOME)
        and (e.step or "").endswith("maintenance")
    ]  # fmt: skip
    # attempt 1 fails; n1 leaves maintenance; attempt 2 is admitted afresh and drains it
    assert steps[:6] == [
        ("intent", "enter_maintenance/1", False),
        ("outcome", "enter_maintenance/1", False),
        ("intent", "exit_maintenance/undo-1", False),
        ("outcome", "exit_maintenance/undo-1", True),
        ("intent", "enter_maintenance/2", False),
        ("outcome", "enter_maintenance/2", True),
    ]
    assert done.node("n1").restarts == 1 and not done.state["nodes"]["n1"]["in_maintenance"]
    assert done.state["roles"]["web"]["owner"] == "n1"


def test_partially_failed_nodes_count_against_the_failure_budget(tmp_path: Path) -> None:
    updates = [
        {"id": "kernel", "restart": True, "install_seconds": 30},
        {"id": "bad-pkg", "install_seconds": 10, "fail_installs": {"*": 99}},
    ]
    config = write_cluster(tmp_path, spec(3, updates=updates))
    done = run_cluster(tmp_path, config, max_failed_nodes=0, max_retries_per_node=1, node_order=["n1"])
    report = done.report
    assert done.node("n1").status == "PartiallyFailed"  # kernel installed, bad-pkg failed
    # the bad update did not roll on through the cluster: the budget (0) stopped the run
    assert report.status == "Failed" and report.error_id == "MaxFailedNodesExceeded"
    assert [done.node(n).status for n in ("n2", "n3")] == ["Canceled", "Canceled"]
    assert installs(done.events) == [("n1", "kernel")]


def test_drain_that_never_works_fails_the_node_and_undoes_the_partial_drain(tmp_path: Path) -> None:
    roles = [
        {"name": "a", "kind": "live", "owner": "n1", "cpu": 1, "memory_gb": 1},
        {"name": "b", "kind": "live", "owner": "n1", "cpu": 1, "memory_gb": 1, "fail_migrations": 99},
    ]
    config = write_cluster(tmp_path, spec(3, roles=roles))
    done = run_cluster(tmp_path, config, max_retries_per_node=1, node_order=["n1"])
    n1 = done.node("n1")
    assert n1.status == "Failed" and n1.error_id == "MaintenanceEnterFailed"
    assert "live migration of b" in n1.message
    assert not done.state["nodes"]["n1"]["in_maintenance"]
    assert done.state["roles"]["a"]["owner"] == "n1"  # moved off by the partial drain, then back
    assert not any(e.step == "install" for e in done.steps("n1", "install"))


def test_node_already_in_maintenance_is_refused_by_default(tmp_path: Path) -> None:
    nodes = [node("n1"), node("n2", in_maintenance=True), node("n3")]
    config = write_cluster(tmp_path, spec(nodes))

    async def main() -> None:
        svc = service(tmp_path, config)
        with pytest.raises(PreflightError, match="n2 already in maintenance") as err:
            await svc.run("c1", build_profile(None, {}))
        assert "nothing was changed" in (err.value.hint or "")
        assert await svc.store.active_run("c1") is None and await svc.store.get_lock("c1") is None
        svc.close()

    run_virtual(main())


def test_node_already_in_maintenance_is_updated_and_left_so_when_allowed(tmp_path: Path) -> None:
    nodes = [node("n1"), node("n2", in_maintenance=True), node("n3")]
    config = write_cluster(tmp_path, spec(nodes))
    done = run_cluster(tmp_path, config, allow_nodes_in_maintenance=True)
    assert done.report.status == "Succeeded"
    assert done.node("n2").restarts == 1
    assert done.state["nodes"]["n2"]["in_maintenance"] is True  # as it was before the run
    assert done.state["nodes"]["n1"]["in_maintenance"] is False


def test_require_all_nodes_online(tmp_path: Path) -> None:
    nodes = [node("n1"), node("n2"), node("n3"), node("n4"), node("n5", online=False)]
    config = write_cluster(tmp_path, spec(nodes))

    async def main() -> None:
        svc = service(tmp_path, config)
        with pytest.raises(PreflightError, match="n5 are not online"):
            await svc.run("c1", build_profile(None, {"require_all_nodes_online": True}))
        svc.close()

    run_virtual(main())
    # without it, the run proceeds (quorum allows: 3 of 5 votes stay up) and the offline node is reported
    done = run_cluster(tmp_path, config)
    assert done.node("n5").status == "Failed" and done.node("n5").error_id == "NodeOffline"
    assert [done.node(n).status for n in ("n1", "n2", "n3", "n4")] == ["Succeeded"] * 4


def test_quorum_keeps_a_four_node_cluster_serial_even_when_parallel_is_allowed(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(4))
    done = run_cluster(tmp_path, config, max_parallel_nodes=2)
    assert done.report.status == "Succeeded"
    assert max_concurrent_maintenance(done.events) == 1
    assert any(e.kind is EventKind.WAITING and "votes" in e.data["reason"] for e in done.events)


def test_quorum_refuses_to_take_a_node_down_when_one_is_already_down(tmp_path: Path) -> None:
    nodes = [node("n1"), node("n2"), node("n3", online=False)]
    config = write_cluster(tmp_path, spec(nodes))
    done = run_cluster(tmp_path, config, max_parallel_nodes=2, max_failed_nodes=2)
    assert done.node("n1").error_id == "QuorumAtRisk"
    assert done.node("n2").error_id == "QuorumAtRisk"
    assert not any(e.step == "enter_maintenance" for e in done.events)
    assert done.state["violations"] == []


def test_parallel_batches_respect_max_parallel_and_run_faster(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(9))
    serial = run_cluster(tmp_path / "a", config)
    parallel = run_cluster(tmp_path / "b", config, max_parallel_nodes=3)
    assert serial.report.status == parallel.report.status == "Succeeded"
    assert max_concurrent_maintenance(serial.events) == 1
    assert max_concurrent_maintenance(parallel.events) == 3
    assert parallel.report.duration_seconds < serial.report.duration_seconds / 2


def test_capacity_limits_parallel_drains(tmp_path: Path) -> None:
    # 6 nodes of 10 cpu; n1..n5 each run a 7-cpu VM, n6 is the spare. Quorum would allow two nodes
    # down at once (4 of 6 votes left), but only one 7-cpu VM has somewhere to go at a time.
    nodes = [node(f"n{i}", cpu=10, memory_gb=100) for i in range(1, 7)]
    roles = [
        {"name": f"vm{i}", "kind": "live", "owner": f"n{i}", "cpu": 7, "memory_gb": 1} for i in range(1, 6)
    ]
    config = write_cluster(tmp_path, spec(nodes, roles=roles))
    done = run_cluster(tmp_path, config, max_parallel_nodes="auto")
    assert done.report.status == "Succeeded"
    assert max_concurrent_maintenance(done.events) == 1
    assert any(e.kind is EventKind.WAITING and "no node has room" in e.data["reason"] for e in done.events)
    assert done.state["violations"] == []


def test_stop_after_cancels_gracefully(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(4))
    done = run_cluster(tmp_path, config, stop_after="4m", warn_after="2m")
    assert done.report.status == "Canceled" and done.report.error_id == "StopAfterExceeded"
    assert any("has not completed after" in w for w in done.report.warnings)
    assert not any(n["in_maintenance"] for n in done.state["nodes"].values())
    statuses = [n.status for n in done.report.nodes]
    assert "Canceled" in statuses and statuses[0] == "Succeeded"


def test_operator_stop_finishes_the_node_in_hand(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(4))

    async def main():  # type: ignore[no-untyped-def]
        svc = service(tmp_path, config)

        async def stopper() -> None:
            await asyncio.sleep(100)  # n1 is mid-way: installing or restarting
            await svc.stop("c1", by="tester", reason="change freeze")

        task = asyncio.ensure_future(stopper())
        out = await svc.run("c1", build_profile(None, {}))
        await task
        svc.close()
        return out

    from tests.support import finished

    done = finished(tmp_path, "c1", run_virtual(main()))
    assert done.report.status == "Canceled" and done.report.error_id == "StoppedByOperator"
    assert "change freeze" in (done.report.message or "")
    first = done.report.nodes[0]
    assert first.status == "Succeeded" and first.restarts == 1  # finished, not abandoned
    assert [n.status for n in done.report.nodes[1:]] == ["Canceled"] * 3
    assert not any(n["in_maintenance"] for n in done.state["nodes"].values())


def test_no_restart_leaves_nodes_pending_restart(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(3))
    done = run_cluster(tmp_path, config, no_restart=True)
    assert done.report.status == "Succeeded"
    assert all(n.pending_restart and n.restarts == 0 for n in done.report.nodes)
    assert all(n["restarts"] == 0 and n["pending_restart"] for n in done.state["nodes"].values())
    # the next run restarts them and has nothing else to install
    again = run_cluster(tmp_path, config)
    assert all(n.restarts == 1 and n.updates == [] for n in again.report.nodes)
    assert not any(n["pending_restart"] for n in again.state["nodes"].values())


def test_drain_when_restart_needed_does_not_drain_for_updates_without_restart(tmp_path: Path) -> None:
    updates = [
        {"id": "openssl", "install_seconds": 20},
        {"id": "kernel", "restart": True, "nodes": ["n1"], "install_seconds": 20},
    ]
    config = write_cluster(tmp_path, spec(3, roles=ROLES, updates=updates))
    done = run_cluster(tmp_path, config, drain="when-restart-needed")
    assert done.report.status == "Succeeded"
    assert done.steps("n1", "enter_maintenance") and done.node("n1").restarts == 1
    assert not done.steps("n2", "enter_maintenance") and not done.steps("n3", "enter_maintenance")
    # n1 installed before draining: the install intent comes before the maintenance intent
    n1 = [e.step for e in done.events if e.node == "n1" and e.kind is EventKind.INTENT]
    assert n1.index("install") < n1.index("enter_maintenance") < n1.index("restart")


def test_move_save_stops_roles_in_place(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(3, roles=ROLES))
    done = run_cluster(tmp_path, config, move="save")
    assert done.report.status == "Succeeded"
    assert all(n.roles_failed_back == [] for n in done.report.nodes)
    outages = {(o.role, o.node) for o in done.report.outages}
    assert ("web", "n1") in outages  # a live role is down when saved, unlike with live migration
    live = run_cluster(tmp_path / "live", config, move="live")
    assert "web" not in {o.role for o in live.report.outages}


@pytest.mark.parametrize(("mode", "back_home"), [("immediate", True), ("none", False), ("policy", True)])
def test_failback_modes(tmp_path: Path, mode: str, back_home: bool) -> None:
    # n1 is updated last, so nothing else moves its roles after its own failback decision
    roles = [*ROLES, {"name": "batch", "kind": "live", "owner": "n1", "cpu": 1, "memory_gb": 1}]
    config = write_cluster(tmp_path, spec(3, roles=roles))
    done = run_cluster(tmp_path, config, failback_mode=mode, node_order=["n2", "n3", "n1"])
    owners = {r: done.state["roles"][r]["owner"] for r in ("web", "batch")}
    if back_home:
        # web prefers n1 (policy brings it back); batch has no preference, so only immediate does
        assert owners["web"] == "n1"
        assert (owners["batch"] == "n1") == (mode == "immediate")
    else:
        assert "n1" not in owners.values()


def test_pre_update_script_failure_leaves_the_node_untouched(tmp_path: Path) -> None:
    log = tmp_path / "scripts.log"
    config = write_cluster(tmp_path, spec(3, roles=ROLES))
    done = run_cluster(
        tmp_path,
        config,
        pre_update_script=f'echo "pre $CAU_NODE" >> {log}; test "$CAU_NODE" != n2',
        post_update_script=f'echo "post $CAU_NODE" >> {log}',
        max_retries_per_node=1,
    )
    n2 = done.node("n2")
    assert n2.status == "Failed" and n2.error_id == "PreUpdateScriptFailed"
    assert n2.maintenance_started is None and n2.updates == [] and n2.restarts == 0
    assert done.state["nodes"]["n2"]["installed"] == []
    lines = log.read_text().split("\n")
    assert lines.count("pre n2") == 2 and "post n2" not in lines  # retried once, never updated
    assert lines.index("pre n1") < lines.index("post n1")
    assert done.node("n1").status == "Succeeded"


def test_unknown_node_in_node_order_refuses_to_start(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(3))

    async def main() -> None:
        svc = service(tmp_path, config)
        with pytest.raises(PreflightError, match="unknown node"):
            await svc.run("c1", build_profile(None, {"node_order": ["n9"]}))
        svc.close()

    run_virtual(main())


def test_journal_has_an_intent_before_every_outcome(tmp_path: Path) -> None:
    done = run_cluster(tmp_path, None, "sandbox")
    open_keys: set[tuple[str | None, str | None]] = set()
    for e in done.events:
        if e.kind is EventKind.INTENT:
            open_keys.add((e.node, e.key))
        elif e.kind is EventKind.OUTCOME:
            assert (e.node, e.key) in open_keys, e
            open_keys.discard((e.node, e.key))
    assert not open_keys
    assert sorted(installs(done.events)) == sorted(set(installs(done.events)))


def test_node_back_after_the_timeout_is_taken_out_with_node_resume(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from cau.clock import VirtualClock
    from cau.errors import NotFound
    from cau.service import Service
    from cau.views import NodeResumed

    nodes = [node("n1", restart_seconds=1200), node("n2"), node("n3")]
    config = write_cluster(tmp_path, spec(nodes, roles=ROLES))
    done = run_cluster(tmp_path, config, reboot_timeout="5m", node_order=["n1"])
    n1 = done.node("n1")
    assert n1.status == "Failed" and n1.left_in_maintenance
    assert done.state["nodes"]["n1"]["in_maintenance"] and done.state["roles"]["web"]["owner"] != "n1"
    assert any("cau node resume c1 n1" in w for w in done.report.warnings)

    async def later() -> NodeResumed:
        svc = Service(tmp_path, config, clock=VirtualClock(datetime(2026, 11, 1, 5, 0, tzinfo=UTC)))
        try:
            with pytest.raises(NotFound, match="no record"):
                await svc.resume_node("c1", "n2", by="tester")  # cau never left n2 in maintenance
            return await svc.resume_node("c1", "n1", by="tester")
        finally:
            svc.close()

    resumed = run_virtual(later())
    run_id = resumed.run_id
    assert run_id == done.outcome.run_id and resumed.roles_failed_back == ["web"]
    svc = Service(tmp_path, config)
    report = asyncio.run(svc.run_report(asyncio.run(svc.find_run(run_id))))
    svc.close()
    assert not next(n for n in report.nodes if n.name == "n1").left_in_maintenance
    assert any("taken out of maintenance by tester" in w for w in report.warnings)
    import json

    state = json.loads((tmp_path / "sandbox" / "c1.json").read_text())
    assert state["nodes"]["n1"]["in_maintenance"] is False and state["roles"]["web"]["owner"] == "n1"


def test_failure_domains_and_a_disruption_budget_shape_the_batches(tmp_path: Path) -> None:
    # six nodes in three racks; the clone dns must keep 5 of its 6 instances: one node at a time,
    # though each rack alone would allow three at once
    nodes = [node(f"n{i}", failure_domain=f"rack{(i - 1) // 2 + 1}") for i in range(1, 7)]
    config = write_cluster(tmp_path, spec(nodes, roles=[{"name": "dns", "kind": "clone", "cpu": 1}]))
    done = run_cluster(tmp_path, config, max_parallel_nodes="auto", disruption_budgets=["dns=5"])
    assert done.report.status == "Succeeded"
    assert max_concurrent_maintenance(done.events) == 1
    waits = {e.data["block"] for e in done.events if e.kind is EventKind.WAITING}
    assert "disruption-budget" in waits
    # the nodes take turns between racks
    assert [n.name for n in done.report.nodes] == ["n1", "n3", "n5", "n2", "n4", "n6"]
    # without the budget: one node per rack (quorum allows two of six votes down)
    again = tmp_path / "again"
    again.mkdir()
    done = run_cluster(again, write_cluster(again, spec(nodes)), max_parallel_nodes="auto")
    assert max_concurrent_maintenance(done.events) == 2
    # a site-aware order: every node of rack3, then rack1, then rack2
    site = tmp_path / "site"
    site.mkdir()
    ordered = run_cluster(site, write_cluster(site, spec(nodes)), domain_order=["rack3", "rack1"])
    assert [n.name for n in ordered.report.nodes] == ["n5", "n6", "n1", "n2", "n3", "n4"]


def test_a_domain_order_finishes_each_domain_before_the_next_starts_even_in_parallel(
    tmp_path: Path,
) -> None:
    # two sites of three nodes; quorum lets two of six down, two per site may be out at once:
    # a parallel run could work on both sites together. CAU's site-aware order does not: every
    # node of paris has finished before berlin's first starts, and paris's run two at a time.
    nodes = [node(f"n{i}", failure_domain="berlin" if i <= 3 else "paris") for i in range(1, 7)]
    config = write_cluster(tmp_path, spec(nodes))
    done = run_cluster(
        tmp_path,
        config,
        max_parallel_nodes="auto",
        max_nodes_per_domain=2,
        domain_order=["paris", "berlin"],
    )
    assert done.report.status == "Succeeded"
    started = {e.node: e.seq for e in done.events if e.kind is EventKind.NODE_STARTED}
    ended = {e.node: e.seq for e in done.events if e.kind is EventKind.NODE_FINISHED}
    paris, berlin = ["n4", "n5", "n6"], ["n1", "n2", "n3"]
    assert max(ended[n] for n in paris) < min(started[n] for n in berlin)
    assert max_concurrent_maintenance(done.events) == 2  # within a site, two at once


def test_a_node_scanned_ahead_waits_for_the_domains_before_its_own_and_says_so(tmp_path: Path) -> None:
    # three at a time (a fixed cap): berlin's first node is scanned ahead while paris's run, and
    # waits for its turn naming paris; it goes past its scan only once all of paris finished
    nodes = [node(f"n{i}", failure_domain="berlin" if i <= 3 else "paris") for i in range(1, 7)]
    config = write_cluster(tmp_path, spec(nodes))
    done = run_cluster(
        tmp_path,
        config,
        max_parallel_nodes=3,
        max_failed_nodes=3,
        max_nodes_per_domain=2,
        domain_order=["paris", "berlin"],
    )
    assert done.report.status == "Succeeded"
    waits = [e for e in done.events if e.kind is EventKind.WAITING and e.node in ("n1", "n2", "n3")]
    assert any("every node of paris first (domain_order)" in e.data["reason"] for e in waits), waits
    paris_end = max(
        e.seq for e in done.events if e.kind is EventKind.NODE_FINISHED and e.node in ("n4", "n5", "n6")
    )
    berlin_changes = [
        e.seq
        for e in done.events
        if e.kind is EventKind.INTENT and e.node in ("n1", "n2", "n3") and e.step == "enter_maintenance"
    ]
    assert berlin_changes and min(berlin_changes) > paris_end


def test_a_resumed_run_keeps_its_domain_order_barrier(tmp_path: Path) -> None:
    # as above, the coordinator stopped once paris's first node has finished: the next one takes
    # each node's domain from the run's opening record, and berlin still waits for all of paris
    nodes = [node(f"n{i}", failure_domain="berlin" if i <= 3 else "paris") for i in range(1, 7)]
    config = write_cluster(tmp_path, spec(nodes))
    opts = {"max_parallel_nodes": "auto", "max_nodes_per_domain": 2, "domain_order": ["paris", "berlin"]}

    async def interrupted() -> bool:
        svc = service(tmp_path, config)
        me = asyncio.current_task()

        def on_event(e: JournalEvent) -> None:
            if e.kind is EventKind.NODE_FINISHED and me is not None:
                me.cancel()

        try:
            await svc.run("c1", build_profile(None, opts), on_event=on_event)
        except asyncio.CancelledError:
            return True
        finally:
            svc.close()
        return False

    assert run_virtual(interrupted()), "the run ended before a node finished"
    done = run_cluster(tmp_path, config, **opts)
    assert done.report.status == "Succeeded"
    started = {e.node: e.seq for e in done.events if e.kind is EventKind.NODE_STARTED}
    ended = {e.node: e.seq for e in done.events if e.kind is EventKind.NODE_FINISHED}
    assert max(ended[n] for n in ["n4", "n5", "n6"]) < min(started[n] for n in ["n1", "n2", "n3"])
    assert len(done.report.coordinators) == 2 and done.report.coordinators[1].resumed


def test_a_node_no_budget_can_spare_fails_naming_the_budget(tmp_path: Path) -> None:
    roles = [{"name": "dns", "kind": "clone", "cpu": 1, "instances": ["n1", "n2"]}]
    config = write_cluster(tmp_path, spec(4, roles=roles))
    done = run_cluster(tmp_path, config, disruption_budgets=["dns=100%"], max_failed_nodes=3)
    assert done.node("n1").error_id == "DisruptionBudgetExceeded"
    assert "disruption budget dns (min_available 100%)" in (done.node("n1").message or "")
    assert done.node("n3").status == "Succeeded"


def test_a_parallel_run_starts_the_chain_of_a_tight_budget_first_and_ends_sooner(tmp_path: Path) -> None:
    # eight nodes in four racks; a license server pinned on each of n5..n8, of which three must
    # keep running: their nodes go one at a time, a chain of four. CAU's order (fewest roles
    # first) takes them last, and the run would end with them one by one.
    nodes = [node(f"n{i}", failure_domain=f"rack{(i - 1) % 4 + 1}") for i in range(1, 9)]
    roles = [{"name": f"license-{i}", "kind": "pinned", "cpu": 1, "owner": f"n{i + 4}"} for i in range(1, 5)]
    options = {"max_parallel_nodes": "auto", "disruption_budgets": ["license-*=3"]}

    def run(home: Path, **more: object) -> Done:
        home.mkdir()
        return run_cluster(home, write_cluster(home, spec(nodes, roles=roles)), **options, **more)

    caus_order = run(tmp_path / "caus-order", node_order=[f"n{i}" for i in range(1, 9)])
    waves = run(tmp_path / "waves")
    for done in (caus_order, waves):
        assert done.report.status == "Succeeded" and done.state["violations"] == []
    entered = [e.node for e in waves.events if e.kind is EventKind.INTENT and e.step == "enter_maintenance"]
    licensed = ["n5", "n6", "n7", "n8"]
    # a license server's node is among the first two to enter maintenance, and the four are spread
    # over the run rather than all at its end
    assert entered[0] in licensed or entered[1] in licensed, entered
    assert entered[-1] not in licensed or entered[-2] not in licensed, entered
    assert waves.report.duration_seconds < caus_order.report.duration_seconds, (
        waves.report.duration_seconds,
        caus_order.report.duration_seconds,
    )
    # and the budget held: no two license servers' nodes in maintenance at once
    spans = {
        n: (
            next(
                e.ts
                for e in waves.events
                if e.node == n and e.kind is EventKind.INTENT and e.step == "enter_maintenance"
            ),
            next(
                e.ts
                for e in waves.events
                if e.node == n and e.kind is EventKind.OUTCOME and e.step == "exit_maintenance"
            ),
        )
        for n in licensed
    }
    ordered = sorted(spans.values())
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ordered)), spans
