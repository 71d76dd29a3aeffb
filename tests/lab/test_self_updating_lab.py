"""`cau lab up --pacemaker --self-updating`: the environment of self-updating mode on real hosts:
an etcd member on every host (the run store), this machine's cau installed on every host, and
/etc/cau/cau.toml there naming the etcd store and the cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from cau_lab import Lab
from cau_lab.config import LabError
from tests.lab.support import cau

pytestmark = [pytest.mark.lab, pytest.mark.slow]

HOST_CAU = "cau --config /etc/cau/cau.toml"


def etcdctl(lab: Lab, node: str, *args: str) -> str:
    """etcdctl inside a host: it talks to that host's own member (127.0.0.1:2379)."""
    return lab.exec(node, ["etcdctl", *args], check=True, timeout=30).stdout


def local_value(lab: Lab, node: str, key: str) -> str:
    """The key's value as that host's member holds it (a serializable read: no quorum asked)."""
    return etcdctl(lab, node, "get", "--consistency=s", "--print-value-only", key).strip()


def test_every_member_is_healthy_and_a_key_written_through_one_is_read_through_another(su_lab: Lab) -> None:
    assert su_lab.etcd_health() == dict.fromkeys(su_lab.nodes)
    members = etcdctl(su_lab, "node2", "member", "list", "--write-out=json")
    assert sorted(m["name"] for m in json.loads(members)["members"]) == su_lab.nodes
    key = f"/lab-test/{uuid.uuid4().hex}"
    etcdctl(su_lab, "node1", "put", key, "written through node1")
    assert etcdctl(su_lab, "node3", "get", "--print-value-only", key).strip() == "written through node1"


def test_cau_on_every_host_is_this_machines(su_lab: Lab) -> None:
    here = subprocess.run(
        [sys.executable, "-m", "cau", "plugins", "--output", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    mine = json.loads(here.stdout)
    assert {(p["kind"], p["name"]) for p in mine} >= {("provider", "pacemaker"), ("plug-in", "apt")}
    for node in su_lab.nodes:
        # the way self-updating's readiness check asks: over ssh, `cau` on the PATH
        there = su_lab.ssh(node, "cau plugins --output json", timeout=60)
        assert there.returncode == 0, there.stderr
        assert json.loads(there.stdout) == mine, node


def test_cau_on_a_host_uses_the_etcd_store_and_reaches_every_node(su_lab: Lab, tmp_path: Path) -> None:
    status = su_lab.exec("node1", f"{HOST_CAU} status lab --output json", timeout=60)
    assert status.returncode == 0, status.stderr
    on_node = json.loads(status.stdout)
    assert on_node["cluster"] == "lab" and on_node["active"] is False
    # the machine, with the lab's clusters.toml, reads the same store
    here = cau(su_lab, tmp_path, "--config", str(su_lab.config_path), "status", "lab", "--output", "json")
    assert here.returncode == 0, here.stderr
    assert json.loads(here.stdout) == on_node
    # the coordinator's way to the nodes (itself included): ssh as root with /etc/cau's key,
    # the host keys checked against /etc/cau/known_hosts
    scan = su_lab.exec("node1", f"{HOST_CAU} scan lab --output json", timeout=120)
    assert scan.returncode == 0, scan.stderr + scan.stdout
    reached = {n["node"]: n["reachable"] for n in json.loads(scan.stdout)["nodes"]}
    assert reached == dict.fromkeys(su_lab.nodes, True)


def test_a_member_comes_back_with_its_data_after_a_hard_power_off(su_lab: Lab) -> None:
    before = f"/lab-test/{uuid.uuid4().hex}"
    etcdctl(su_lab, "node1", "put", before, "before the power cut")
    assert local_value(su_lab, "node3", before) == "before the power cut"
    su_lab.kill("node3")
    during = f"/lab-test/{uuid.uuid4().hex}"
    # 2 of 3 members: a quorum. If node3 led, the others elect a new leader first (about a
    # second; more on a busy machine): a write in between times out, as etcd's clients see it,
    # and is tried again, as they do.
    deadline = time.monotonic() + 20
    while True:
        try:
            etcdctl(su_lab, "node1", "put", during, "while node3 was off")
            break
        except LabError as exc:
            waiting = ("timed out", "leader", "deadline exceeded")  # what etcd says meanwhile
            if not any(w in str(exc) for w in waiting) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    su_lab.boot("node3")
    su_lab.wait_etcd_healthy(["node3"], timeout=30)
    assert local_value(su_lab, "node3", before) == "before the power cut"  # kept on its disk
    assert local_value(su_lab, "node3", during) == "while node3 was off"  # caught up


def test_restore_starts_every_member_again_and_empties_the_store(su_lab: Lab) -> None:
    etcdctl(su_lab, "node1", "put", "/lab-test/left-behind", "x")
    su_lab.exec("node2", "systemctl stop etcd", check=True)
    assert su_lab.etcd_health()["node2"] is not None
    su_lab.restore()
    assert su_lab.etcd_health() == dict.fromkeys(su_lab.nodes)
    assert etcdctl(su_lab, "node2", "get", "", "--from-key", "--keys-only").strip() == ""
