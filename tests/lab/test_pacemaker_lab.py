"""`cau lab up --pacemaker`: a real Corosync/Pacemaker cluster on the lab hosts, with real
workloads, checked the way an admin would (crm_mon, curl-like probes, the CIB)."""

from __future__ import annotations

import os
import time
import tomllib
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cau_lab import Lab
from cau_lab.cluster_state import ClusterState
from cau_lab.proc import ProcRef, mounts_under, run
from tests.lab.probe_loop import ProbeLoop

pytestmark = [pytest.mark.lab, pytest.mark.slow]

START = {"vm1": ["node1"], "web": ["node2"], "web-clone": ["node1", "node2", "node3"]}


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        return str(resp.read().decode().strip())


def url(lab: Lab, rid: str) -> str:
    return next(w.urls[0] for w in lab.pacemaker.workloads if w.id == rid)


def crm(lab: Lab, cmd: str, node: str = "node3") -> str:
    return lab.pacemaker.exec(node, cmd)


def served_number(body: str) -> int:
    # "vm1 on node2: request 17"
    return int(body.rsplit(" ", 1)[1])


# --- formation ---------------------------------------------------------------------------------


def test_cluster_forms_with_every_node_online_and_a_dc(clean_pcmk_lab: Lab) -> None:
    state = clean_pcmk_lab.pacemaker.state()
    assert state.online == ["node1", "node2", "node3"]
    assert state.dc in clean_pcmk_lab.nodes and state.quorum
    assert not any(n.standby or n.maintenance for n in state.nodes.values())
    # every node sees the same membership (the CLI runs inside each host)
    for node in clean_pcmk_lab.nodes:
        assert clean_pcmk_lab.pacemaker.state(node).online == state.online


def test_the_starting_cib_has_the_lab_settings_and_no_location_constraint(clean_pcmk_lab: Lab) -> None:
    def prop(name: str) -> str:
        return crm(clean_pcmk_lab, f"crm_attribute --type crm_config --name {name} --query --quiet").strip()

    assert prop("stonith-enabled") == "false"
    assert prop("no-quorum-policy") == "stop"
    assert prop("dc-deadtime") == "2s"
    stickiness = crm(
        clean_pcmk_lab, "crm_attribute --type rsc_defaults --name resource-stickiness --query --quiet"
    )
    assert stickiness.strip() == "100"
    assert clean_pcmk_lab.pacemaker.location_constraints() == []


def test_workloads_run_on_their_start_nodes_and_answer_on_their_addresses(clean_pcmk_lab: Lab) -> None:
    assert clean_pcmk_lab.pacemaker.locations() == START
    assert get(url(clean_pcmk_lab, "vm1")).startswith("vm1 on node1: request ")
    assert get(url(clean_pcmk_lab, "web")).startswith("web-server on node2: request ")
    clone = next(w for w in clean_pcmk_lab.pacemaker.workloads if w.id == "web-clone")
    for node, address in zip(clean_pcmk_lab.nodes, clone.urls, strict=True):
        assert get(address).startswith(f"web-local on {node}: request ")
    # vm1's address is where vm1 runs, and nowhere else
    vm_ip = url(clean_pcmk_lab, "vm1").split("/")[2]
    holders = [
        n
        for n in clean_pcmk_lab.nodes
        if clean_pcmk_lab.exec(n, f"ip -o -4 addr show to {vm_ip}/32").stdout.strip()
    ]
    assert holders == ["node1"]


def test_clusters_toml_is_for_the_pacemaker_provider_with_a_probe_per_workload(pcmk_lab: Lab) -> None:
    data = tomllib.loads(pcmk_lab.config_path.read_text())
    cluster = data["clusters"][pcmk_lab.cluster]
    assert cluster["provider"] == "pacemaker"
    assert [n["host"] for n in cluster["options"]["nodes"]] == list(pcmk_lab.addresses.values())
    probes = {p["role"]: p for p in cluster["probes"]}
    assert set(probes) == set(START)
    assert probes["vm1"]["targets"] == ["http://10.77.201.101/"]
    assert probes["web"]["targets"] == ["http://10.77.201.100/"]
    assert probes["web-clone"]["targets"] == [f"http://10.77.201.1{i}:8080/" for i in (1, 2, 3)]
    assert {p["interval"] for p in probes.values()} == {"50ms"}
    # the roles are the resource ids crm_mon shows (a primitive, a group, a clone)
    root = ET.fromstring(pcmk_lab.pacemaker.crm_mon_xml())
    shown = {el.get("id") for el in root.find("resources") or []}
    assert set(probes) <= shown
    # and every target answers
    for probe in probes.values():
        for target in probe["targets"]:
            get(target)


# --- moving workloads --------------------------------------------------------------------------


def test_vm1_live_migrates_without_losing_a_request(clean_pcmk_lab: Lab) -> None:
    lab = clean_pcmk_lab
    with ProbeLoop(url(lab, "vm1"), interval=0.05) as probe:
        time.sleep(0.5)
        crm(lab, "crm_resource --move --resource vm1 --node node2")
        lab.pacemaker.wait(lambda s: s.locations("vm1") == ["node2"] and s.all_started(), timeout=60)
        time.sleep(1.0)  # probes go on after the cluster has settled
    print(f"\nvm1 live migration: {probe.summary()}")
    assert probe.failed == [], probe.failed[:5]
    bodies = [p.body for p in probe.answered]
    assert bodies[0].startswith("vm1 on node1") and bodies[-1].startswith("vm1 on node2")
    # it was a live migration (migrate_to on the source, migrate_from on the target), not a
    # stop and start, and its state came along: the count of requests served goes on
    assert "vm1_migrate_to_0" in lab.exec("node1", "cat /var/log/pacemaker/pacemaker.log").stdout
    assert "vm1_migrate_from_0" in lab.exec("node2", "cat /var/log/pacemaker/pacemaker.log").stdout
    on1 = [served_number(b) for b in bodies if "node1" in b]
    on2 = [served_number(b) for b in bodies if "node2" in b]
    assert on2[0] > on1[-1], (on1[-3:], on2[:3])  # node2 went on counting from node1's count
    assert on2 == sorted(on2)
    assert lab.pacemaker.location_constraints() == ["cli-prefer-vm1"]


def test_vm1_migrated_away_right_after_it_came_is_not_announced_back_on_the_node_it_left(
    clean_pcmk_lab: Lab,
) -> None:
    # A node where vm1 starts or lands announces its address for 2 s (gratuitous ARPs); vm1
    # migrated away within them used to be announced back there after the handover, sending the
    # clients to a node that had dropped the address: 4-6 failed probes in a run started right
    # after the lab came up (its first drain).
    lab = clean_pcmk_lab

    def move(node: str) -> None:
        crm(lab, f"crm_resource --move --resource vm1 --node {node}")
        lab.pacemaker.wait(lambda s: s.locations("vm1") == [node] and s.all_started(), timeout=60)

    move("node2")
    # node1 stops vm1 slowly (a lab knob): it holds the address for 2.5 s after the handover,
    # long enough for any announcement of its own to reach the clients
    lab.exec("node1", "mkdir -p /etc/labvm && echo 2.5 > /etc/labvm/stop-delay")
    try:
        with ProbeLoop(url(lab, "vm1"), interval=0.05) as probe:
            move("node1")
            move("node2")  # within node1's announcements
            time.sleep(2.5)  # past them
    finally:
        lab.exec("node1", "rm -f /etc/labvm/stop-delay")
    print(f"\nvm1 migrated there and away again at once: {probe.summary()}")
    assert probe.failed == [], probe.failed[:5]
    assert probe.answered[-1].body.startswith("vm1 on node2")


def test_the_web_group_moves_with_a_short_measured_interruption(clean_pcmk_lab: Lab) -> None:
    lab = clean_pcmk_lab
    # a short timeout: the outage is measured to the probe, not to a 1 s wait
    with ProbeLoop(url(lab, "web"), interval=0.05, timeout=0.2) as probe:
        time.sleep(0.5)
        crm(lab, "crm_resource --move --resource web --node node3")
        lab.pacemaker.wait(lambda s: s.locations("web") == ["node3"] and s.all_started(), timeout=60)
        time.sleep(1.0)  # probes go on after the cluster has settled
    print(f"\nweb failover move: {probe.summary()}")
    bodies = [p.body for p in probe.answered]
    assert bodies[0].startswith("web-server on node2") and bodies[-1].startswith("web-server on node3")
    # a failover service: stopped on node2, then started on node3 (the address moves with it)
    assert probe.results[-1].ok
    assert get(url(lab, "web")).startswith("web-server on node3")


def test_standby_moves_every_resource_off_the_node(clean_pcmk_lab: Lab) -> None:
    lab = clean_pcmk_lab
    crm(lab, "crm_attribute --node node1 --name standby --update on")

    def drained(s: ClusterState) -> bool:
        where = [s.locations(rid) for rid in START]
        return all(nodes and "node1" not in nodes for nodes in where) and s.all_started()

    state = lab.pacemaker.wait(drained, timeout=60)
    assert state.nodes["node1"].standby and state.nodes["node1"].online
    assert state.locations("web-clone") == ["node2", "node3"]
    assert "vm1 on node1" not in get(url(lab, "vm1"))
    assert lab.exec("node1", "ls /run/labvm").stdout.split() == []  # no server left there


def test_a_killed_node_is_seen_offline_and_its_resources_recovered(clean_pcmk_lab: Lab) -> None:
    lab = clean_pcmk_lab
    lab.kill("node2")  # holds the web group
    state = lab.pacemaker.wait(
        lambda s: (
            not s.nodes["node2"].online and s.locations("web") not in ([], ["node2"]) and s.all_started()
        ),
        timeout=60,
        node="node1",
    )
    assert state.quorum  # 2 of 3
    assert get(url(lab, "web")).startswith("web-server on node")


def test_restore_brings_the_cluster_back_to_its_starting_state(clean_pcmk_lab: Lab) -> None:
    lab = clean_pcmk_lab
    pid = lab.exec("node1", "cat /run/labvm/web-local.pid").stdout.strip()
    lab.exec("node1", f"kill -KILL {pid}")  # a monitor failure, with a fail-count
    lab.pacemaker.wait(lambda s: bool(s.failures), timeout=30, node="node1")
    crm(lab, "crm_attribute --node node2 --name standby --update on")
    crm(lab, "crm_attribute --node node3 --name maintenance --update on")
    crm(lab, "crm_attribute --node node1 --name standby --update on --lifetime reboot")
    crm(lab, "crm_resource --move --resource vm1 --node node2")
    crm(lab, "crm_resource --ban --resource web --node node1")
    crm(lab, "crm_resource --resource web --meta --set-parameter target-role --parameter-value Stopped")
    lab.kill("node3")

    lab.restore()

    state = lab.pacemaker.state()
    assert state.online == ["node1", "node2", "node3"]
    assert not any(n.standby or n.maintenance for n in state.nodes.values())
    assert state.failures == [] and state.all_started()
    assert lab.pacemaker.locations() == START
    assert lab.pacemaker.location_constraints() == []
    assert "target-role" not in lab.pacemaker.cib(scope="resources")
    for w in lab.pacemaker.workloads:
        for target in w.urls:
            get(target)


# --- down --------------------------------------------------------------------------------------


def test_down_stops_the_cluster_and_leaves_no_process_netns_or_mount(pcmk_lab: Lab) -> None:
    lab = pcmk_lab
    lab.restore()
    cfg = lab.cfg
    refs: list[ProcRef] = []
    for node in lab.nodes:  # every process of every host, and the supervisors the lab recorded
        refs += [r for p in lab.pids(node) if (r := ProcRef.of(p)) is not None]
        for name in ("supervisor.pid", "init.pid"):
            ref = ProcRef.read(cfg.host_dir(node) / name)
            assert ref is not None and ref.alive()
            refs.append(ref)
    names = {Path(f"/proc/{r.pid}/comm").read_text().strip() for r in refs if r.alive()}
    assert {"corosync", "pacemakerd", "lab-httpd"} <= names or {"corosync", "pacemakerd"} <= names
    started = time.monotonic()
    lab.down()
    print(f"\nlab down (pacemaker stopped on every node): {time.monotonic() - started:.1f} s")
    try:
        assert [r.pid for r in refs if r.alive()] == []
        netns = run(["ip", "netns", "list"]).stdout
        assert not any(line.startswith(f"{cfg.name}-") for line in netns.splitlines())
        assert run(["ip", "link", "show", cfg.bridge], check=False).returncode != 0
        assert mounts_under(cfg.state_dir) == []
        # pacemaker was stopped, not killed: each node's log says so
        for node in lab.nodes:
            log = (cfg.host_dir(node) / "upper/var/log/pacemaker/pacemaker.log").read_text(errors="replace")
            assert "Shutdown complete" in log, node
    finally:
        lab.up(recreate=True)  # the session's lab, for any later test
    assert os.path.exists(lab.config_path)
