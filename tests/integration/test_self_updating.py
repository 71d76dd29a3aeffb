"""Self-updating mode on the sandbox: the clustered role, its coordinator process on the role's
owner, and real hand-overs between processes when the owner's own turn comes."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import Cau
from tests.integration.test_cli import journal
from tests.support_etcd import EtcdCluster

pytestmark = pytest.mark.slow

CONFIG = """
[clusters.branch]
provider = "sandbox"
[clusters.branch.options]
speed = 200
[clusters.remote-only]
provider = "pacemaker"
[clusters.remote-only.options]
known_hosts = "/nonexistent"
[[clusters.remote-only.options.nodes]]
name = "n1"
host = "192.0.2.1"
"""


def _setup(cau: Cau) -> None:
    (cau.home / "clusters.toml").write_text(CONFIG)


def test_the_role_updates_its_cluster_handing_the_run_over_between_coordinator_processes(cau: Cau) -> None:
    _setup(cau)
    added = cau.json("role", "add", "branch")
    assert added["enabled"] is True and added["owner"] == "node1" and added["active_run"] is None
    asked = cau.json("role", "update-now", "branch")
    assert asked["update_requested"]["by"].endswith("(cli)")

    daemon = cau("daemon", "branch", "--exit-when-idle", "--poll", "0.2", timeout=300)
    assert daemon.returncode == 0, daemon.stdout + daemon.stderr
    assert "handed-over" in daemon.stderr

    report = cau.json("report", "branch", "--last", "--detailed")[0]
    assert report["status"] == "Succeeded"
    assert report["started_by"].endswith("(cli) via role:branch@node1")
    coordinators = report["coordinators"]
    # The journal names each coordinator and its node: the first on node1, then (each time the
    # coordinator's own node was next) a new process on another node resumed the run.
    assert coordinators[0]["node"] == "node1" and not coordinators[0]["resumed"]
    assert len(coordinators) >= 2 and all(c["resumed"] for c in coordinators[1:])
    assert len({c["owner"] for c in coordinators}) == len(coordinators)  # distinct processes
    for before, after in itertools.pairwise(coordinators):
        assert before["node"] != after["node"]
    shown = cau.json("sandbox", "show", "branch")
    for n in shown["nodes"]:  # every node updated once, nothing left in maintenance
        assert n["restarts"] == 1 and not n["in_maintenance"] and n["state"] == "up", n
    after = cau.json("role", "show", "branch")
    assert after["active_run"] is None and after["update_requested"] is None
    assert json.loads(cau("status", "branch", "--output", "json").stdout)["active"] is False


def test_between_two_coordinators_of_the_role_a_remote_run_is_refused_naming_the_role(cau: Cau) -> None:
    _setup(cau)
    cau.json("role", "add", "branch")
    cau.json("role", "update-now", "branch")
    # One pass of the coordinator on the role's owner: it updates until its own node is next.
    first = cau("daemon", "branch", "--node", "node1", "--once", timeout=300)
    assert first.returncode == 10, first.stdout + first.stderr  # handed over
    assert cau.json("role", "show", "branch")["owner"] == "node2"
    remote = cau("run", "branch")
    assert remote.returncode == 6, remote.stdout + remote.stderr  # locked
    assert "belongs to the cluster's clustered role" in remote.stderr
    assert "cau role show branch" in remote.stderr
    # A coordinator started on a node that does not own the role does nothing.
    stray = cau("daemon", "branch", "--node", "node3", "--once")
    assert stray.returncode == 11 and "runs on node2" in stray.stderr
    rest = cau("daemon", "branch", "--exit-when-idle", "--poll", "0.2", timeout=300)
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert cau.json("report", "branch", "--last")[0]["status"] == "Succeeded"
    # The role cannot be removed while its run is unfinished; afterwards it can.
    removed = cau("role", "remove", "branch")
    assert removed.returncode == 0, removed.stderr
    assert cau("role", "show", "branch").returncode == 1


def test_a_role_is_refused_where_it_cannot_run_and_nothing_is_changed(cau: Cau, tmp_path: Path) -> None:
    _setup(cau)
    # A Pacemaker cluster hosts the role through cau's agent, after checks that reach every
    # node: a node cau may not connect to refuses the role, named, with its remedy.
    pcmk = cau("role", "add", "remote-only")
    assert pcmk.returncode == 1
    assert "host key of n1" in pcmk.stderr and "cau hosts trust remote-only n1" in pcmk.stderr
    assert cau("role", "show", "remote-only").returncode == 1  # not added
    unknown_profile = cau("role", "add", "branch", "--profile", "nightly")
    assert unknown_profile.returncode == 1 and "no stored profile 'nightly'" in unknown_profile.stderr
    bad = cau("role", "add", "branch", "--options", '{"warn_after": "2h", "stop_after": "1h"}')
    assert bad.returncode == 1 and "warn_after must be shorter than stop_after" in bad.stderr
    assert cau("role", "show", "branch").returncode == 1  # none of them added it
    cau.json("role", "add", "branch", "--disabled")
    again = cau("role", "add", "branch")
    assert again.returncode == 1 and "has a clustered role already" in again.stderr
    assert cau.json("role", "enable", "branch")["enabled"] is True
    assert cau.json("role", "disable", "branch")["enabled"] is False
    # Nothing asked for: the coordinator has nothing to do and starts no run.
    idle = cau("daemon", "branch", "--node", "node1", "--once")
    assert idle.returncode == 0 and cau.json("status", "branch")["run"] is None


def test_a_coordinator_killed_mid_install_is_replaced_and_the_run_completes_once(cau: Cau) -> None:
    """A power cut of the coordinator's process in the middle of another node's update: the
    cluster (here the daemon standing in for it) starts a coordinator again on the role's owner,
    which resumes the run: completed, nothing left in maintenance, nothing installed twice."""
    _setup(cau)
    cau.json("role", "add", "branch")
    cau.json("role", "update-now", "branch")
    env = {**cau.env, "CAU_TEST_CRASH_AFTER": "outcome:install/1/sandbox@node3"}
    done = subprocess.run(
        [sys.executable, "-m", "cau", "daemon", "branch", "--exit-when-idle", "--poll", "0.2"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exited with -9" in done.stderr  # the kill did happen
    report = cau.json("report", "branch", "--last", "--detailed")[0]
    assert report["status"] == "Succeeded"
    nodes = [c["node"] for c in report["coordinators"]]
    assert len(nodes) >= 3  # the first, one after a hand-over, one after the kill at least
    shown = cau.json("sandbox", "show", "branch")
    for n in shown["nodes"]:
        assert n["restarts"] == 1 and not n["in_maintenance"] and n["state"] == "up", n
    installed = [
        (r["node"], res["update_id"])
        for r in journal(cau)
        if r["kind"] == "outcome" and r["step"] == "install"
        for res in r["data"]["results"]
        if res["outcome"] == "Succeeded" and "observed" not in res["message"]
    ]
    assert installed and len(installed) == len(set(installed))  # nothing installed twice


def test_runs_and_the_role_live_in_the_configured_etcd_store(cau: Cau, etcd_cluster: EtcdCluster) -> None:
    """`[store] kind = "etcd"`: a run's record, journal, report and the role's record are in the
    etcd cluster, where another machine configured alike sees them (here: another data dir)."""
    endpoints = json.dumps(etcd_cluster.endpoints)
    store = f'[store]\nkind = "etcd"\noptions = {{ endpoints = {endpoints}, prefix = "/t-cli/" }}\n'
    (cau.home / "clusters.toml").write_text(store + CONFIG)
    cau.json("role", "add", "branch")
    ran = cau("run", "branch", "--output", "json", timeout=300)
    # a remote run of a cluster whose role is idle is allowed (the role drives only its own runs)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    run_id = json.loads(ran.stdout)["run_id"]
    elsewhere = Cau(cau.home / "other-machine")
    elsewhere.home.mkdir()
    (elsewhere.home / "clusters.toml").write_text(store + CONFIG)
    seen = elsewhere.json("report", "branch", "--last")
    assert [(r["run_id"], r["status"]) for r in seen] == [(run_id, "Succeeded")]
    assert elsewhere.json("role", "show", "branch")["cluster"] == "branch"
    bad = Cau(cau.home / "misconfigured")
    bad.home.mkdir()
    (bad.home / "clusters.toml").write_text('[store]\nkind = "etcd"\noptions = { endpoints = [] }\n' + CONFIG)
    refused = bad("status", "branch")
    assert refused.returncode == 1 and "[store] options of the etcd store" in refused.stderr
