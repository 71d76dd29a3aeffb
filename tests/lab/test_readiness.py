"""`cau check` on real hosts: readiness rules broken on purpose, each on another host, in one
check, which must fail (or warn) exactly those rules on exactly those hosts; a run is then refused
by the same rules with their fixes, changing nothing. Everything broken is undone in `finally`.
On the Pacemaker lab: a node whose Pacemaker is stopped fails the cluster-manager rule."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cau_lab import Lab
from cau_lab.repo import PackageSpec
from tests.lab.support import OLD, cau, versions

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PRE = "/usr/local/sbin/cau-pre.sh"
OTHER_SOURCE = "/etc/apt/sources.list.d/cau-check-other.list"
AUTO = "/etc/apt/apt.conf.d/20auto-upgrades"
INTERRUPTED = "/var/lib/dpkg/updates/0001"
MARKER = "/var/lib/cau/maintenance"
ENABLED = 'APT::Periodic::Update-Package-Lists "1";\\nAPT::Periodic::Unattended-Upgrade "1";\\n'


def check(lab: Lab, home: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = cau(lab, home, "check", lab.cluster, "--output", "json", *args)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def findings(report: dict[str, Any], outcome: str) -> set[tuple[str, tuple[str, ...]]]:
    return {(r["rule"], tuple(r["nodes"])) for r in report["results"] if r["outcome"] == outcome}


@pytest.fixture
def broken(fresh: Lab) -> Iterator[Lab]:
    """node1: unattended-upgrades installed and enabled; node2: another apt source, and in
    maintenance (not by cau); node3: dpkg interrupted; node4: lacks the pre-update script the
    others have."""
    lab = fresh
    lab.repos.main.add(
        PackageSpec(
            "unattended-upgrades",
            "1.0",
            description="stands in for Debian's unattended-upgrades",
            files={"/usr/bin/unattended-upgrade": "#!/bin/sh\nexit 0\n"},
        )
    )
    try:
        done = lab.exec(
            "node1",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unattended-upgrades"
            f" && printf '{ENABLED}' > {AUTO}",
        )
        assert done.returncode == 0, done.stderr
        assert (
            lab.exec(
                "node2", f"echo 'deb [trusted=yes] http://10.77.200.1:9/debian ./' > {OTHER_SOURCE}"
            ).returncode
            == 0
        )
        assert lab.exec("node2", f"mkdir -p /var/lib/cau && date -u > {MARKER}").returncode == 0
        assert lab.exec("node3", f"touch {INTERRUPTED}").returncode == 0
        for node in ("node1", "node2", "node3"):
            put = lab.exec(
                node, f"mkdir -p /usr/local/sbin && printf '#!/bin/sh\\nexit 0\\n' > {PRE} && chmod +x {PRE}"
            )
            assert put.returncode == 0, put.stderr
        yield lab
    finally:
        lab.exec("node1", f"rm -f {AUTO}; DEBIAN_FRONTEND=noninteractive dpkg --purge unattended-upgrades")
        lab.repos.main.remove("unattended-upgrades")
        lab.exec("node2", f"rm -f {OTHER_SOURCE} {MARKER}")
        lab.exec("node3", f"rm -f {INTERRUPTED}")
        for node in lab.nodes:
            lab.exec(node, f"rm -f {PRE}")


def test_check_fails_exactly_the_broken_rules_on_their_hosts_and_a_run_is_refused(
    broken: Lab, tmp_path: Path
) -> None:
    lab = broken
    profile = tmp_path / "pre.toml"
    profile.write_text(f'pre_update_script = "{PRE}"\n')
    code, report = check(lab, tmp_path, "--profile", str(profile))
    assert code == 4, report
    assert findings(report, "fail") == {
        ("no-automatic-updates", ("node1",)),
        ("nodes-in-maintenance", ("node2",)),
        ("package-manager-healthy", ("node3",)),
        ("scripts-identical", ("node4",)),
    }
    assert findings(report, "warning") == {("same-update-sources", ("node2",))}
    by_rule = {r["rule"]: r for r in report["results"] if r["outcome"] in ("fail", "warning")}
    assert (
        'APT::Periodic::Unattended-Upgrade "1" with unattended-upgrades installed'
        in by_rule["no-automatic-updates"]["detail"]
    )
    assert "http://10.77.200.1:9/debian" in by_rule["same-update-sources"]["detail"]
    assert "dpkg --configure -a" in by_rule["package-manager-healthy"]["fix"]
    assert f"copy {PRE} to node4" in by_rule["scripts-identical"]["fix"]
    # the rest was really checked on the hosts, and passed
    passed = {r["rule"] for r in report["results"] if r["outcome"] == "pass"}
    assert {"nodes-reachable", "privilege", "disk-space", "same-proxy", "plugins-ready"} <= passed

    # the run's preflight is the same rules: refused, each fix named, nothing changed
    run = cau(lab, tmp_path, "run", lab.cluster, "--profile", str(profile), "--output", "json")
    error = json.loads(run.stdout)["error"]
    assert run.returncode == 1 and error["code"] == "preflight_refused", run.stdout
    for fix in ("dpkg --configure -a", 'APT::Periodic::Unattended-Upgrade "0"', f"copy {PRE} to node4"):
        assert fix in error["message"], error["message"]
    assert all(versions(lab, n) == OLD for n in lab.nodes)


def test_a_clean_lab_is_ready(fresh: Lab, tmp_path: Path) -> None:
    code, report = check(fresh, tmp_path)
    assert code == 0, [r for r in report["results"] if r["outcome"] in ("fail", "warning")]
    assert {r["rule"]: r["outcome"] for r in report["results"]}["no-automatic-updates"] == "pass"


def test_a_node_whose_pacemaker_is_stopped_fails_the_cluster_manager_rule(
    clean_pcmk_lab: Lab, tmp_path: Path
) -> None:
    lab = clean_pcmk_lab
    try:
        lab.exec("node3", "systemctl stop pacemaker", check=True)
        lab.pacemaker.wait(lambda s: "node3" not in s.online, timeout=60, node="node1")
        code, report = check(lab, tmp_path)
        assert code == 4
        assert ("cluster-manager", ("node3",)) in findings(report, "fail")
        (found,) = [r for r in report["results"] if r["rule"] == "cluster-manager"]
        assert "systemctl start corosync pacemaker" in found["fix"]
    finally:
        lab.exec("node3", "systemctl start pacemaker", check=False)
        lab.pacemaker.restore()
