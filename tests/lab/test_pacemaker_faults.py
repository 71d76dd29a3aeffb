"""An operator's bad days on a real Pacemaker cluster: a resource the cluster's own rules keep
from moving, a drain that fails half-way, a coordinator killed at every step boundary of a node,
and one lost together with its journal. Each time cau must keep the roles available and leave
nothing of its own in the cluster."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cau_lab import Lab
from tests.lab.support import (
    NEW,
    NOTHING_LEFT,
    OLD,
    START,
    availability,
    cau,
    cau_leftovers,
    config_with,
    env,
    journal,
    only_updates_on,
    run_json,
    run_watched,
    unfinished_steps,
    versions,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def ban(lab: Lab, rid: str, *nodes: str) -> None:
    for node in nodes:
        lab.pacemaker.exec(
            "node1",
            "cibadmin --create -o constraints -X "
            f'\'<rsc_location id="ban-{rid}-{node}" rsc="{rid}" node="{node}" score="-INFINITY"/>\'',
        )


def test_a_resource_that_can_run_nowhere_else_is_never_stopped_and_its_node_not_updated(
    clean_pcmk_lab: Lab, tmp_path: Path
) -> None:
    lab = clean_pcmk_lab
    pm = lab.pacemaker
    ban(lab, "web", "node1", "node3")  # web may run on node2 only
    only_updates_on(lab, ["node2"])

    def standby() -> str | None:
        return "standby" if pm.state().nodes["node2"].standby else None

    proc, seen = run_watched(lab, tmp_path, standby, "--node-order", "node2")
    report = json.loads(proc.stdout)
    node2 = {n["name"]: n for n in report["nodes"]}["node2"]
    assert proc.returncode == 3, proc.stderr  # PartiallyFailed: node2 could not be updated
    assert node2["status"] == "Failed" and node2["error_id"] == "DrainWouldStopRoles"
    # the refusal names the resource and the constraints that hold it
    assert "web would stop" in node2["message"]
    assert "ban-web-node1" in node2["message"] and "ban-web-node3" in node2["message"]
    assert seen == []  # node2 was never put in standby
    assert versions(lab, "node2") == OLD
    web = availability(report)["web"]
    assert web["probes_sent"] > 0 and web["probes_failed"] == 0  # web never stopped
    assert pm.locations() == START
    assert cau_leftovers(lab) == NOTHING_LEFT


def test_a_failed_drain_is_undone_and_a_resource_it_stopped_never_counts_as_moved(
    clean_pcmk_lab: Lab, tmp_path: Path
) -> None:
    # web-server cannot start on node1 or node3 (the scheduler cannot know that): draining node2
    # stops web. The first attempt times out; the node must leave standby (web starts again on
    # node2) before anything else, and no later attempt may take "web is gone from node2" for
    # "web moved".
    lab = clean_pcmk_lab
    for node in ("node1", "node3"):
        lab.exec(node, "mkdir -p /etc/labvm && touch /etc/labvm/fail-start-web-server")
    only_updates_on(lab, ["node2"])
    config = config_with(lab, tmp_path / "clusters.toml", drain_timeout="15s")
    code, report, _ = run_json(
        lab, tmp_path, "--node-order", "node2", "--max-retries-per-node", "1", config=config
    )
    node2 = {n["name"]: n for n in report["nodes"]}["node2"]
    summary = {k: node2[k] for k in ("status", "error_id", "message", "transient_errors")}
    assert code != 0 and node2["status"] == "Failed", (summary, [s["key"] for s in node2["steps"]])
    assert any("enter maintenance attempt 1" in t and "web" in t for t in node2["transient_errors"])
    keys = [s["key"] for s in node2["steps"]]
    assert "exit_maintenance/undo-1" in keys  # out of standby before anything else
    assert not any(k.startswith(("install", "restart")) for k in keys)
    assert versions(lab, "node2") == OLD  # never updated with web stopped
    lab.pacemaker.wait(lambda s: s.locations("web") == ["node2"], timeout=60)
    assert cau_leftovers(lab)["standby"] == [] and cau_leftovers(lab)["constraints"] == []


# One node's cycle, every step boundary: the coordinator is SIGKILLed right after each of these
# journal events in turn (the next `cau run` resumes and is killed at the next one).
BOUNDARIES = [
    f"{when}:{key}"
    for key in ("enter_maintenance/1", "install/1/apt", "restart/1", "exit_maintenance/1", "failback")
    for when in ("intent", "outcome")
]


def kill_when_a_cau_constraint_appears(lab: Lab, home: Path) -> bool:
    """`cau run`, SIGKILLed as soon as a cau-prefer constraint is in the CIB (mid-failback)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cau", "run", lab.cluster],
        env=env(lab, home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if cau_leftovers(lab)["constraints"]:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                return True
            time.sleep(0.1)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_killed_at_every_step_boundary_of_a_node_the_run_resumes_and_leaves_nothing_behind(
    clean_pcmk_lab: Lab, tmp_path: Path
) -> None:
    lab = clean_pcmk_lab
    pm = lab.pacemaker
    only_updates_on(lab, ["node2"])  # web's node: a failover group, moved off and failed back
    for node in lab.nodes:  # a slow stop widens the failback's move, to kill it half-way
        lab.exec(node, "mkdir -p /etc/labvm && echo 1 > /etc/labvm/stop-delay")
    boot = lab.boot_id("node2")
    started = time.monotonic()
    kills = 0
    for point in BOUNDARIES:
        if point == "outcome:failback":
            # between the failback's intent and outcome: its cau-prefer constraint is in the CIB
            assert kill_when_a_cau_constraint_appears(lab, tmp_path), "no failback to kill"
            kills += 1
        killed = cau(lab, tmp_path, "run", lab.cluster, environ={"CAU_TEST_CRASH_AFTER": f"{point}@node2"})
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
        kills += 1
    code, report, err = run_json(lab, tmp_path)  # the last coordinator finishes the run
    elapsed = time.monotonic() - started
    assert code == 0, err
    assert report["status"] == "Succeeded"
    assert len(report["coordinators"]) == kills + 1 == len(BOUNDARIES) + 2
    node2 = {n["name"]: n for n in report["nodes"]}["node2"]
    assert node2["status"] == "Succeeded" and node2["restarts"] == 1
    assert lab.boot_id("node2") != boot and len(node2["boot_ids"]) == 1  # restarted exactly once
    assert versions(lab, "node2") == NEW
    assert unfinished_steps(journal(tmp_path, report["run_id"])) == []
    assert pm.locations() == START  # web failed back to node2 (failback immediate)
    assert cau_leftovers(lab) == NOTHING_LEFT
    print(f"{kills} kills (SIGKILL) and resumes in one node's cycle: {elapsed:.1f} s")


def test_what_a_coordinator_lost_with_its_journal_left_is_found_and_removed(
    clean_pcmk_lab: Lab, tmp_path: Path
) -> None:
    lab = clean_pcmk_lab
    pm = lab.pacemaker
    only_updates_on(lab, ["node2"])
    for node in lab.nodes:
        lab.exec(node, "mkdir -p /etc/labvm && echo 1 > /etc/labvm/stop-delay")
    lost = tmp_path / "lost"
    assert kill_when_a_cau_constraint_appears(lab, lost)
    shutil.rmtree(lost)  # the coordinator's machine is gone, and its journal with it
    left = cau_leftovers(lab)["constraints"]
    assert left == ["cau-prefer-web-on-node2"]

    home = tmp_path / "new"
    code, _, err = run_json(lab, home)  # a new run refuses, and says the way out
    assert code == 1 and f"cau cleanup {lab.cluster}" in err, err
    nothing = cau(lab, home, "node", "resume", lab.cluster, "node1")
    assert nothing.returncode == 1 and "nothing to undo" in nothing.stderr + nothing.stdout
    assert cau_leftovers(lab)["constraints"] == left  # node1's resume touched nothing

    resumed = cau(lab, home, "node", "resume", lab.cluster, "node2", "--output", "json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["cleaned"] == [
        "removed location constraint cau-prefer-web-on-node2 (web INFINITY on node2)"
    ]
    cleanup = cau(lab, home, "cleanup", lab.cluster)
    assert cleanup.returncode == 0 and "nothing of cau's left" in cleanup.stdout, cleanup.stderr
    assert cau_leftovers(lab) == NOTHING_LEFT
    pm.wait(lambda s: s.locations("web") == ["node2"], timeout=60)
    code, report, err = run_json(lab, home)  # and a run works again
    assert code == 0 and report["status"] == "Succeeded", err
    assert pm.locations() == START
