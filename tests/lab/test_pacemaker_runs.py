"""Updating Runs of a real Pacemaker/Corosync cluster (the `pacemaker` provider) on the lab.

Each test drives the real `cau` command against the lab's cluster config, then looks at the
cluster itself (crm_mon, the CIB), the hosts (package versions, boot ids) and the availability
the probes measured on the real workloads: vm1 (live-migratable), web (a failover group on a
floating address) and web-clone (on every node).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cau_lab import Lab
from cau_lab.config import LabError
from tests.lab.support import (
    NEW,
    NOTHING_LEFT,
    START,
    availability,
    cau,
    cau_leftovers,
    env,
    only_updates_on,
    run_json,
    run_watched,
    versions,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_live_run_updates_every_node_keeps_clone_and_vm_up_and_fails_everything_back(
    clean_pcmk_lab: Lab, tmp_path: Path
) -> None:
    lab = clean_pcmk_lab
    pm = lab.pacemaker
    dc = pm.state().dc
    before = {n: lab.boot_id(n) for n in lab.nodes}
    assert pm.locations() == START

    code, report, err = run_json(lab, tmp_path)
    assert code == 0, err
    assert report["status"] == "Succeeded"

    for node in lab.nodes:
        assert versions(lab, node) == NEW, node  # real apt: old -> new, second-order included
        assert lab.boot_id(node) != before[node], node  # really restarted (labpkg asks for it)
    # the DC was updated last, so the cluster changed its leader once
    assert [n["name"] for n in report["nodes"]][-1] == dc

    avail = availability(report)
    assert avail["web-clone"]["measured"] == "probe" and avail["web-clone"]["probes_sent"] > 100
    assert avail["web-clone"]["probes_failed"] == 0  # a clone instance elsewhere always answered
    assert avail["vm1"]["probes_failed"] == 0  # live migration, both ways: no request lost
    web = avail["web"]
    # the failover group is down while it moves (off node2, and back at failback): measured,
    # attributed to node2's steps, and short
    assert web["probes_failed"] > 0 and 0 < web["downtime_seconds"] < 10
    # Every outage of web happened during node2's steps. (The group answers a little after
    # Pacemaker reports it started, so the tail of the failback's outage can reach into the next
    # node's first step, or the pause between nodes, by a fraction of a second.)
    outages = [o for o in report["outages"] if o["role"] == "web"]
    assert outages and all(any(d["node"] == "node2" for d in o["during"]) for o in outages), outages
    elsewhere = [d for d in web["downtime_by_step"] if d["node"] != "node2"]
    assert all(d["seconds"] < 0.5 for d in elsewhere), elsewhere

    # failback_mode = immediate (the default): everything where it started, nothing left behind
    assert pm.locations() == START
    assert cau_leftovers(lab) == NOTHING_LEFT
    assert all(n.online for n in pm.state().nodes.values())


def test_nothing_is_installed_on_a_node_until_a_live_migrations_stop_there_has_run(
    clean_pcmk_lab: Lab, tmp_path: Path
) -> None:
    # With record-pending off (the default before Pacemaker 2.1, kept by upgraded clusters), once
    # the target's migrate_from is done crm_mon shows vm1 on node2 only, while its stop on node1
    # is still running: a drain that believed crm_mon's resource list would install beside it.
    lab = clean_pcmk_lab
    lab.pacemaker.exec("node2", "crm_attribute --type op_defaults --name record-pending --update false")
    for node in lab.nodes:  # and a stop that takes a second: the window lasts that long
        lab.exec(node, "rm -f /var/tmp/cau-at-drained; mkdir -p /etc/labvm; echo 1 > /etc/labvm/stop-delay")
    try:
        # The install records which lab servers still run on the node at that moment.
        code, report, err = run_json(
            lab,
            tmp_path,
            "--plugin",
            "command",
            "--plugin-arg",
            "command.scan=test -e /var/tmp/cau-at-drained || echo drained",
            "--plugin-arg",
            "command.install=ls /run/labvm > /var/tmp/cau-at-$update$",
        )
    finally:
        for node in lab.nodes:
            lab.exec(node, "rm -f /etc/labvm/stop-delay")
    assert code == 0, err
    assert report["status"] == "Succeeded"
    assert {n["name"]: [u["id"] for u in n["updates"]] for n in report["nodes"]} == {
        node: ["drained"] for node in lab.nodes
    }
    for node in lab.nodes:
        assert lab.exec(node, "cat /var/tmp/cau-at-drained").stdout.split() == [], node
    assert lab.pacemaker.locations() == START  # and everything came back
    assert cau_leftovers(lab) == NOTHING_LEFT


def test_save_mode_stops_the_nodes_resources_in_place_and_starts_them_there_again(
    clean_pcmk_lab: Lab, tmp_path: Path
) -> None:
    lab = clean_pcmk_lab
    pm = lab.pacemaker
    only_updates_on(lab, ["node2"])  # web's node
    code, report, err = run_json(lab, tmp_path, "--move", "save")
    assert code == 0, err
    nodes = {n["name"]: n for n in report["nodes"]}
    assert nodes["node2"]["restarts"] == 1 and nodes["node1"]["restarts"] == 0

    web = availability(report)["web"]
    # down for the whole of node2's restart (not moved elsewhere), then back on node2
    by_step = {d["step"]: d["seconds"] for d in web["downtime_by_step"] if d["node"] == "node2"}
    assert by_step.get("restart", 0) > 0.5, web
    assert web["outages"] == 1
    assert availability(report)["vm1"]["probes_failed"] == 0  # node1 was not touched
    assert pm.locations() == START
    assert cau_leftovers(lab) == NOTHING_LEFT


def test_failback_none_leaves_resources_where_they_went(clean_pcmk_lab: Lab, tmp_path: Path) -> None:
    lab = clean_pcmk_lab
    only_updates_on(lab, ["node2"])
    code, report, err = run_json(lab, tmp_path, "--failback-mode", "none")
    assert code == 0, err
    where = lab.pacemaker.locations()
    assert where["web"] != ["node2"] and where["web"] != []  # moved off and left there
    assert where["vm1"] == ["node1"]
    assert cau_leftovers(lab) == NOTHING_LEFT
    assert len(availability(report)["web"]["downtime_by_step"]) >= 1


def test_node_already_in_standby_is_refused_by_default_and_left_in_standby_when_allowed(
    clean_pcmk_lab: Lab, tmp_path: Path
) -> None:
    lab = clean_pcmk_lab
    pm = lab.pacemaker
    pm.exec("node1", "crm_attribute --node node3 --name standby --update on")
    pm.wait(lambda s: s.nodes["node3"].standby)
    before = versions(lab, "node3")

    code, _, err = run_json(lab, tmp_path)
    assert code == 1 and "node3" in err and "already in maintenance" in err, err
    assert versions(lab, "node3") == before  # refused: nothing changed anywhere
    assert versions(lab, "node1") == before

    code, report, err = run_json(lab, tmp_path, "--allow-nodes-in-maintenance")
    assert code == 0, err
    assert {n["name"]: n["status"] for n in report["nodes"]}["node3"] == "Succeeded"
    assert versions(lab, "node3") == NEW
    state = pm.state()
    assert state.nodes["node3"].standby  # left as the operator had it
    assert not state.nodes["node1"].standby and not state.nodes["node2"].standby
    assert cau_leftovers(lab)["standby"] == ["node3"]


def test_never_standbys_a_node_whose_restart_would_cost_quorum(clean_pcmk_lab: Lab, tmp_path: Path) -> None:
    lab = clean_pcmk_lab
    pm = lab.pacemaker
    lab.kill("node3")  # 2 of 3 votes left: any further restart would lose quorum
    pm.wait(lambda s: not s.nodes["node3"].online, node="node1", timeout=60)
    try:
        code, report, err = run_json(lab, tmp_path, "--max-parallel-nodes", "2")
        assert code != 0, err
        assert "QuorumAtRisk" in json.dumps(report), report
        assert cau_leftovers(lab)["standby"] == []  # not node1, not node2
        assert all(versions(lab, n)["labpkg"] == "1.0" for n in ("node1", "node2"))
        assert pm.state("node1").quorum
    finally:
        lab.boot("node3")


def test_votes_are_counted_as_corosync_counts_them(clean_pcmk_lab: Lab, tmp_path: Path) -> None:
    # node1 carries 2 of 4 votes (3 needed): restarting it would cost quorum, restarting node2 or
    # node3 would not. One vote per node would have let node1 go, and the cluster stop everything.
    lab = clean_pcmk_lab
    pm = lab.pacemaker
    pm.exec("node1", "corosync-quorumtool -v 2 -n 1")
    boot1 = lab.boot_id("node1")

    def quorate() -> bool:
        try:
            return pm.state("node1").quorum
        except LabError:  # node1 does not answer: it is being restarted, which it must not be
            return False

    try:
        assert "Quorum:           3" in pm.exec("node2", "corosync-quorumtool -s")
        done, quorum_seen = run_watched(lab, tmp_path, quorate, "--max-failed-nodes", "1")
    finally:
        pm.exec("node1", "corosync-quorumtool -v 1 -n 1; corosync-quorumtool -e 3")
    out, err = done.stdout, done.stderr
    report = json.loads(out)
    nodes = {n["name"]: n for n in report["nodes"]}
    assert nodes["node1"]["status"] != "Succeeded"
    assert "QuorumAtRisk" in json.dumps(nodes["node1"]), nodes["node1"]
    assert "2 of 4 votes (3 needed" in json.dumps(report), err
    assert lab.boot_id("node1") == boot1 and versions(lab, "node1")["labpkg"] == "1.0"
    assert quorum_seen and all(quorum_seen), quorum_seen  # never a moment without quorum
    assert cau_leftovers(lab)["standby"] == []


def test_two_at_a_time_is_held_to_one_standby_by_quorum(clean_pcmk_lab: Lab, tmp_path: Path) -> None:
    lab = clean_pcmk_lab
    pm = lab.pacemaker

    def standby() -> list[str] | None:
        try:
            state = pm.state()
        except Exception:  # the node asked may be restarting; ask again
            return None
        return sorted(n for n, s in state.nodes.items() if s.standby)

    done, seen = run_watched(lab, tmp_path, standby, "--max-parallel-nodes", "2")
    assert done.returncode == 0, done.stderr
    assert max(len(s) for s in seen) == 1  # 3 votes: two down at once would lose quorum
    assert {n for s in seen for n in s} == set(lab.nodes)
    assert json.loads(done.stdout)["status"] == "Succeeded"


def test_unhealthy_cluster_is_refused_unless_allowed(clean_pcmk_lab: Lab, tmp_path: Path) -> None:
    lab = clean_pcmk_lab
    pm = lab.pacemaker
    # a failed monitor of the clone on node3 (the agent reports "not running" once)
    pm.exec("node3", "crm_resource --resource web-local --fail --node node3")
    pm.wait(lambda s: bool(s.failures), timeout=30)
    code, _, err = run_json(lab, tmp_path)
    assert code == 1 and "not healthy" in err and "web-local" in err, err
    assert cau_leftovers(lab) == NOTHING_LEFT
    only_updates_on(lab, ["node1"])
    code, report, err = run_json(lab, tmp_path, "--allow-unhealthy-cluster")
    assert code == 0, err
    assert report["status"] == "Succeeded"


def test_coordinator_killed_mid_drain_resumes_and_leaves_nothing_behind(
    clean_pcmk_lab: Lab, tmp_path: Path
) -> None:
    lab = clean_pcmk_lab
    pm = lab.pacemaker
    proc = subprocess.Popen(
        [sys.executable, "-m", "cau", "run", lab.cluster, "--node-order", "node1"],
        env=env(lab, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # kill it as soon as node1 is in standby: the drain (a live migration) is under way
        pm.wait(lambda s: s.nodes["node1"].standby, timeout=120)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert pm.state().nodes["node1"].standby  # what the dead coordinator left

    code, report, err = run_json(lab, tmp_path)  # the same command resumes the run
    assert code == 0, err
    assert report["status"] == "Succeeded"
    for node in lab.nodes:
        assert versions(lab, node) == NEW, node
    assert pm.locations() == START
    assert cau_leftovers(lab) == NOTHING_LEFT


def test_node_that_never_returns_stays_in_standby_recorded_and_node_resume_restores_it(
    clean_pcmk_lab: Lab, tmp_path: Path
) -> None:
    lab = clean_pcmk_lab
    pm = lab.pacemaker
    lab.hold("node2")  # web's node: its restart never completes
    try:
        code, report, err = run_json(
            lab, tmp_path, "--move", "save", "--node-order", "node2", "--max-failed-nodes", "0",
            "--reboot-timeout", "15s",
        )  # fmt: skip
        assert code == 4, err
        nodes = {n["name"]: n for n in report["nodes"]}
        assert nodes["node2"]["error_id"] == "NodeDidNotReturn" and nodes["node2"]["left_in_maintenance"]
        assert "cau node resume" in json.dumps(report)  # the way out is named
        # what cau left, all of it recorded: node2 in standby, web stopped and marked as saved
        left = cau_leftovers(lab)
        assert left["standby"] == ["node2"]
        assert left["meta"] == ["cau-saved-on=node2", "target-role=Stopped"]
        assert pm.state("node1").locations("web") == []

        lab.hold("node2", on=False)
        lab.boot("node2")
        resumed = cau(lab, tmp_path, "node", "resume", lab.cluster, "node2")
        assert resumed.returncode == 0, resumed.stderr + resumed.stdout
        assert pm.locations() == START  # web started again on node2, the clone instance too
        assert cau_leftovers(lab) == NOTHING_LEFT
    finally:
        lab.hold("node2", on=False)


def test_failback_policy_lets_the_clusters_own_location_preference_bring_it_back(
    clean_pcmk_lab: Lab, tmp_path: Path
) -> None:
    lab = clean_pcmk_lab
    pm = lab.pacemaker
    # the operator prefers web on node2 more than stickiness keeps it elsewhere: 500 beats the
    # group's stickiness, 100 for each of its two members
    pm.exec(
        "node1",
        "cibadmin --create --scope constraints --xml-text "
        '\'<rsc_location id="web-likes-node2" rsc="web" node="node2" score="500"/>\'',
    )
    only_updates_on(lab, ["node2"])
    code, report, err = run_json(lab, tmp_path, "--failback-mode", "policy")
    assert code == 0, err
    node2 = {n["name"]: n for n in report["nodes"]}["node2"]
    assert node2["roles_failed_back"] == []  # cau moved nothing back ...
    pm.wait(lambda s: s.locations("web") == ["node2"], timeout=60)  # ... Pacemaker did
    assert cau_leftovers(lab) == NOTHING_LEFT


def test_pacemaker_node_attributes_are_the_failure_domains_a_run_orders_by(
    clean_pcmk_lab: Lab, tmp_path: Path
) -> None:
    # Racks set as an operator sets them, on the real cluster: node1 and node2 in r1, node3 in
    # r2. cau reads them from the CIB as the nodes' labels; a profile's domain_order then decides
    # the order of the run (site-aware updating), and its typo is named by `cau check`.
    lab = clean_pcmk_lab
    pm = lab.pacemaker
    racks = {"node1": "r1", "node2": "r1", "node3": "r2"}

    def planned(order: str) -> list[str]:
        profile = tmp_path / f"{order}.toml"
        profile.write_text(f'domain_label = "rack"\ndomain_order = {order.split(",")!r}\n'.replace("'", '"'))
        out = cau(
            lab, tmp_path, "run", lab.cluster, "--dry-run", "--profile", str(profile), "--output", "json"
        )
        assert out.returncode == 0, out.stderr + out.stdout
        return [n for batch in json.loads(out.stdout)["batches"] for n in batch["nodes"]]

    try:
        for node, rack in racks.items():
            pm.exec(node, f"crm_attribute --node {node} --name rack --update {rack}")
        # Every node of one rack before the other's (within a rack, CAU's order: the DC last).
        first, *rest = planned("r2,r1")
        assert first == "node3" and sorted(rest) == ["node1", "node2"]
        *rest, last = planned("r1,r2")
        assert last == "node3" and sorted(rest) == ["node1", "node2"]

        typo = tmp_path / "typo.toml"
        typo.write_text('domain_label = "rack"\ndomain_order = ["r2", "r9"]\n')
        checked = cau(lab, tmp_path, "check", lab.cluster, "--profile", str(typo), "--output", "json")
        [finding] = [r for r in json.loads(checked.stdout)["results"] if r["rule"] == "disruption-limits"]
        assert finding["outcome"] == "warning", finding
        assert finding["detail"] == "domain_order names rack value(s) no node has: r9"
        assert "(r1, r2)" in finding["fix"]
    finally:
        for node in racks:
            pm.exec(node, f"crm_attribute --node {node} --name rack --delete")
    assert "rack" not in pm.exec("node1", "cibadmin -Q -o nodes")
