"""VMM's compliance workflow on real apt hosts: a baseline, a scan, an exemption, a remediation
without restart (PendingReboot), a remediation that restarts (Compliant), and standalone hosts on
the Pacemaker cluster (no maintenance, roles where they were). Each step through the real `cau`
command; what the hosts have is checked with dpkg-query."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cau_lab import Lab
from tests.lab.support import NEW, OLD, START, cau, versions

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def ok(result: subprocess.CompletedProcess[str], *codes: int) -> subprocess.CompletedProcess[str]:
    assert result.returncode in (codes or (0,)), result.stdout + result.stderr
    return result


def statuses(view: dict[str, Any]) -> dict[str, dict[str, str]]:
    """node -> update key -> status, over every baseline."""
    return {
        n["node"]: {u["update"]: u["status"] for b in n["baselines"] for u in b["updates"]}
        for n in view["nodes"]
    }


def compliance(lab: Lab, home: Path, *args: str) -> dict[str, Any]:
    result = ok(cau(lab, home, "compliance", lab.cluster, "--output", "json", *args), 0, 3)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_baseline_scan_exempt_remediate_without_restart_then_with_it(fresh: Lab, tmp_path: Path) -> None:
    lab, home = fresh, tmp_path
    ok(cau(lab, home, "baseline", "create", "lab-security", "--description", "labpkg 1.1 and the lab archive",
           "--package", "labpkg>=1.1", "--origin", "cau-lab"))  # fmt: skip
    ok(cau(lab, home, "baseline", "assign", "lab-security", "--cluster", lab.cluster))
    assert {n["status"] for n in compliance(lab, home)["nodes"]} == {"Unknown"}  # never scanned

    view = compliance(lab, home, "--scan")
    assert view["status"] == "NonCompliant"
    rows = {n["node"]: {u["update"]: u for b in n["baselines"] for u in b["updates"]} for n in view["nodes"]}
    labpkg = rows["node1"]["apt:labpkg"]
    assert (labpkg["status"], labpkg["installed"], labpkg["required"], labpkg["available"]) == (
        "NonCompliant",
        OLD["labpkg"],
        "1.1",
        NEW["labpkg"],
    )
    assert rows["node1"]["apt:labtool"]["status"] == "NonCompliant"  # from the origin rule

    ok(cau(lab, home, "exemption", "add", "apt:labtool", "--node", "node2", "--reason", "app team: not yet"))
    assert statuses(compliance(lab, home))["node2"]["apt:labtool"] == "Exempt"

    # remediate the cluster without restarting: installed, PendingReboot, the exemption kept out
    before = {n: lab.boot_id(n) for n in lab.nodes}
    result = ok(cau(lab, home, "remediate", lab.cluster, "--no-restart", "--output", "json"))
    report = json.loads(result.stdout)
    assert report["status"] == "Succeeded"
    assert {n: lab.boot_id(n) for n in lab.nodes} == before
    for node in lab.nodes:
        have = versions(lab, node)
        assert have["labpkg"] == "1.1" and have["labrelease"] == "1.1", node
        assert have["labtool"] == ("1.0" if node == "node2" else "1.1"), node
        assert "labextra" not in have or have["labextra"] == "1.0"  # second-order: not in the plan
    after = statuses(compliance(lab, home))  # the run's end scanned again
    assert {s["apt:labpkg"] for s in after.values()} == {"PendingReboot"}
    assert after["node2"]["apt:labtool"] == "Exempt"
    # what labrelease 1.1 brought (the extra repository) is NonCompliant now: a second-order update
    assert {s.get("apt:labextra") for s in after.values()} == {"NonCompliant"}

    # remediate again, restarting: the restart is done, the second-order update installed
    result = ok(cau(lab, home, "remediate", lab.cluster, "--output", "json"))
    assert json.loads(result.stdout)["status"] == "Succeeded"
    assert all(lab.boot_id(n) != before[n] for n in lab.nodes)
    final = compliance(lab, home)
    assert final["status"] == "Compliant", statuses(final)
    assert statuses(final)["node2"]["apt:labtool"] == "Exempt" and versions(lab, "node2")["labtool"] == "1.0"
    # nothing left: remediate says so and changes nothing
    refused = cau(lab, home, "remediate", lab.cluster)
    assert refused.returncode != 0 and "nothing to remediate" in refused.stderr + refused.stdout

    csv_out = ok(cau(lab, home, "compliance", lab.cluster, "--output", "csv")).stdout.splitlines()
    assert csv_out[0].startswith("cluster,node,node_status") and any(
        "apt:labtool" in line and "Exempt" in line for line in csv_out
    )


def test_a_standalone_host_is_refused_with_its_roles_and_remediated_in_place_when_forced(
    clean_pcmk_lab: Lab, tmp_path: Path
) -> None:
    lab, home = clean_pcmk_lab, tmp_path
    ok(cau(lab, home, "baseline", "create", "labpkg", "--package", "labpkg>=1.1"))
    ok(cau(lab, home, "baseline", "assign", "labpkg", "--cluster", lab.cluster))
    assert compliance(lab, home, "--scan")["status"] == "NonCompliant"

    refused = cau(lab, home, "remediate", lab.cluster, "--nodes", "node1")
    said = refused.stderr + refused.stdout
    assert refused.returncode != 0 and "node1 is remediated as a standalone host" in said and "vm1" in said
    assert versions(lab, "node1")["labpkg"] == OLD["labpkg"]

    result = ok(
        cau(
            lab,
            home,
            "remediate",
            lab.cluster,
            "--nodes",
            "node1",
            "--force",
            "--no-restart",
            "--output",
            "json",
        )
    )
    nodes = {n["name"]: n for n in json.loads(result.stdout)["nodes"]}
    assert nodes["node1"]["maintenance_seconds"] == 0 and nodes["node1"]["updates"]
    assert nodes["node2"]["updates"] == [] and nodes["node3"]["updates"] == []
    assert versions(lab, "node1")["labpkg"] == "1.1"
    assert versions(lab, "node2")["labpkg"] == OLD["labpkg"]
    # its roles stayed: nothing moved, nothing put in standby
    assert lab.pacemaker.locations() == START
    assert not any(s.standby for s in lab.pacemaker.state().nodes.values())
