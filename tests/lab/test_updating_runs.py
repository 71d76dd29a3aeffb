"""Updating Runs on the lab: real hosts, real sshd, real apt and dpkg, real restarts.

Each test drives the real `cau` command against the lab's cluster config, then checks the hosts
themselves (package versions with dpkg-query, boot ids, the maintenance marker).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cau_lab import Lab
from tests.lab.support import NEW, OLD, cau, versions

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def in_maintenance(lab: Lab, node: str) -> bool:
    return lab.exec(node, "test -e /var/lib/cau/maintenance").returncode == 0


def report(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_full_run_updates_every_host_and_restarts_exactly_those_that_need_it(
    fresh: Lab, tmp_path: Path
) -> None:
    lab = fresh
    # node3 and node4 already have the restart-needing package (and were restarted since):
    for node in ("node3", "node4"):
        done = lab.exec(
            node,
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq labpkg "
            "&& rm -f /var/run/reboot-required /var/run/reboot-required.pkgs",
        )
        assert done.returncode == 0, done.stderr
    before = {n: lab.boot_id(n) for n in lab.nodes}
    assert all(versions(lab, n) == OLD for n in ("node1", "node2"))

    result = cau(lab, tmp_path, "run", "lab", "--output", "json")
    assert result.returncode == 0, result.stderr
    data = report(result)
    assert data["status"] == "Succeeded"

    for node in lab.nodes:
        assert versions(lab, node) == NEW, node  # every host from old to new, second-order included
        assert not in_maintenance(lab, node)
    after = {n: lab.boot_id(n) for n in lab.nodes}
    restarted = {n for n in lab.nodes if after[n] != before[n]}
    assert restarted == {"node1", "node2"}  # exactly the hosts whose updates asked for it

    nodes = {n["name"]: n for n in data["nodes"]}
    assert nodes["node1"]["restarts"] == 1 and nodes["node3"]["restarts"] == 0
    n1 = {u["id"]: u for u in nodes["node1"]["updates"]}
    assert set(n1) == {"labpkg", "labtool", "labrelease", "labextra"}
    assert n1["labpkg"]["restart_required"] and not n1["labtool"]["restart_required"]
    assert n1["labpkg"]["details"]["before"] == "1.0" and n1["labpkg"]["details"]["after"] == "1.1"
    # labextra only appeared after labrelease 1.1 added its repository: a second pass installed it
    passes = [s["key"] for s in nodes["node1"]["steps"] if s["step"] == "install"]
    assert passes == ["install/1/apt", "install/2/apt"]
    assert {u["id"] for u in nodes["node3"]["updates"]} == {"labtool", "labrelease", "labextra"}

    text = cau(lab, tmp_path, "report", "lab", "--last", "--detailed")
    assert "labextra" in text.stdout and "node4" in text.stdout
    again = cau(lab, tmp_path, "scan", "lab", "--output", "json")
    assert all(n["updates"] == [] for n in json.loads(again.stdout)["nodes"])


def test_host_that_never_returns_fails_and_the_run_stops_past_the_budget(fresh: Lab, tmp_path: Path) -> None:
    lab = fresh
    lab.hold("node2")  # its next restart never completes
    try:
        result = cau(
            lab,
            tmp_path,
            "run",
            "lab",
            "--node-order",
            "node2",
            "--max-failed-nodes",
            "0",
            "--reboot-timeout",
            "15s",
            "--output",
            "json",
        )
        assert result.returncode == 4, result.stderr
        data = report(result)
        assert data["status"] == "Failed" and data["error_id"] == "MaxFailedNodesExceeded"
        nodes = {n["name"]: n for n in data["nodes"]}
        assert nodes["node2"]["status"] == "Failed" and nodes["node2"]["error_id"] == "NodeDidNotReturn"
        assert nodes["node2"]["left_in_maintenance"]
        assert all(nodes[n]["status"] == "Canceled" for n in ("node1", "node3", "node4"))
        assert all(versions(lab, n) == OLD for n in ("node1", "node3", "node4"))  # untouched
        # once the host is back, the operator takes it out of the maintenance cau left it in
        lab.boot("node2")
        assert in_maintenance(lab, "node2")
        resumed = cau(lab, tmp_path, "node", "resume", "lab", "node2")
        assert resumed.returncode == 0, resumed.stderr
        assert not in_maintenance(lab, "node2")
    finally:
        lab.hold("node2", on=False)


def test_changed_host_key_is_refused_and_nothing_changes(fresh: Lab, tmp_path: Path) -> None:
    lab = fresh
    lab.exec("node4", "rm -f /etc/ssh/ssh_host_*")
    lab.reset("node4")  # boots again with a newly generated host key (a reinstalled node, or an impostor)
    lab.wait_ssh("node4")
    try:
        result = cau(lab, tmp_path, "run", "lab")
        assert result.returncode == 1
        assert "node4" in result.stderr and "has CHANGED" in result.stderr
        assert "cau hosts trust lab node4" in result.stderr
        for node in lab.nodes:
            assert versions(lab, node) == OLD and not in_maintenance(lab, node)
    finally:
        trusted = cau(lab, tmp_path, "hosts", "trust", "lab", "node4", "--replace")
        assert trusted.returncode == 0 and "replaced" in trusted.stdout


def test_failing_pre_update_script_leaves_its_host_untouched(fresh: Lab, tmp_path: Path) -> None:
    lab = fresh
    before = lab.boot_id("node3")
    result = cau(
        lab,
        tmp_path,
        "run",
        "lab",
        "--max-retries-per-node",
        "1",
        "--pre-update-script",
        'test "$(hostname)" != node3 || { echo "quorum disk busy" >&2; exit 1; }',
        "--output",
        "json",
    )
    data = report(result)
    nodes = {n["name"]: n for n in data["nodes"]}
    assert nodes["node3"]["status"] == "Failed" and nodes["node3"]["error_id"] == "PreUpdateScriptFailed"
    assert "quorum disk busy" in nodes["node3"]["message"]
    assert versions(lab, "node3") == OLD and lab.boot_id("node3") == before
    assert not in_maintenance(lab, "node3")
    assert nodes["node1"]["status"] == "Succeeded" and versions(lab, "node1") == NEW


def _hotfix_share(tmp: Path) -> Path:
    from tests.support_hotfix import CONFIG, script, write_manifest

    root = tmp / "hotfixes"
    (root / "_all").mkdir(parents=True)
    (root / "node1").mkdir()
    (root / "hotfix.toml").write_text(CONFIG)
    (root / "_all" / "fix.sh").write_text(script("/var/tmp/hotfix-trace"))
    (root / "node1" / "only.sh").write_text(script("/var/tmp/hotfix-trace", 100))  # success, restart needed
    write_manifest(root)
    root.chmod(0o755)
    profile = tmp / "hotfix-profile.toml"
    profile.write_text(f'[[plugins]]\nname = "hotfix"\nargs = {{ root = "{root}" }}\n')
    return profile


def test_hotfix_share_installs_by_rules_and_refuses_a_tampered_file(fresh: Lab, tmp_path: Path) -> None:
    lab = fresh
    for node in lab.nodes:
        lab.exec(node, "rm -f /var/tmp/hotfix-trace /var/lib/cau/hotfix-installed")
    profile = _hotfix_share(tmp_path)
    # tampered after the manifest was written: nothing may run anywhere
    fix = tmp_path / "hotfixes" / "_all" / "fix.sh"
    good = fix.read_text()
    fix.write_text(good + "echo tampered\n")
    refused = cau(lab, tmp_path / "a", "run", "lab", "--profile", str(profile), "--output", "json")
    data = report(refused)
    assert data["status"] == "Failed"
    first = next(n for n in data["nodes"] if n["status"] == "Failed")
    assert first["error_id"] == "ScanFailed" and "integrity check failed" in first["message"]
    assert all(lab.exec(n, "test -e /var/tmp/hotfix-trace").returncode != 0 for n in lab.nodes)

    fix.write_text(good)
    before = {n: lab.boot_id(n) for n in lab.nodes}
    done = cau(lab, tmp_path / "b", "run", "lab", "--profile", str(profile), "--output", "json")
    assert done.returncode == 0, done.stderr
    nodes = {n["name"]: n for n in report(done)["nodes"]}
    assert {u["id"] for u in nodes["node1"]["updates"]} == {"_all/fix.sh", "node1/only.sh"}
    assert {u["id"] for u in nodes["node2"]["updates"]} == {"_all/fix.sh"}
    for node in lab.nodes:
        ran = lab.exec(node, "cat /var/tmp/hotfix-trace").stdout.split("\n")
        expected = ["fix.sh " + node] + (["only.sh node1"] if node == "node1" else [])
        assert ran[: len(expected)] == expected
    after = {n: lab.boot_id(n) for n in lab.nodes}
    assert {n for n in lab.nodes if after[n] != before[n]} == {"node1"}  # only node1's hotfix asked
