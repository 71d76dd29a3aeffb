"""A 2-node Pacemaker cluster, the commonest kind: Corosync's `two_node` keeps it quorate on one
vote, so cau may restart one node while the other serves. Counting a strict majority of one vote
per node would refuse to update it at all; cau asks Corosync (corosync-quorumtool) instead."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cau_lab import Lab, LabConfig
from tests.lab.conftest import running_lab
from tests.lab.support import NEW, NOTHING_LEFT, availability, cau_leftovers, run_json, versions

pytestmark = [pytest.mark.lab, pytest.mark.slow]

STATE_DIR = Path(os.environ.get("CAU_LAB_PCMK2_TEST_STATE_DIR", "/var/tmp/cau-lab-pcmk2-test"))


@pytest.fixture(scope="module")
def two_node_lab() -> Iterator[Lab]:
    yield from running_lab(
        LabConfig(
            state_dir=STATE_DIR,
            name="caulab2",
            subnet="10.77.202.0/24",
            nodes=2,
            pacemaker=True,
            reboot_delay=1.0,
        )
    )


def test_a_two_node_cluster_is_updated_one_node_at_a_time_and_stays_quorate(
    two_node_lab: Lab, tmp_path: Path
) -> None:
    lab = two_node_lab
    assert "2Node" in lab.exec("node1", "corosync-quorumtool -s").stdout
    before = {n: lab.boot_id(n) for n in lab.nodes}

    code, report, err = run_json(lab, tmp_path)
    assert code == 0, err
    assert report["status"] == "Succeeded"
    for node in lab.nodes:
        assert versions(lab, node) == NEW, node
        assert lab.boot_id(node) != before[node], node
    avail = availability(report)
    for o in report["outages"]:  # shown when an assertion below fails: when, during what, why
        steps = ", ".join(f"{d['node']}/{d['step']}" for d in o["during"]) or "between steps"
        failed = f"{o['failed_checks']} failed"
        print(f"{o['role']} {o['started']} {o['seconds']:.3f} s, {failed}: {steps} {o['errors'][:2]}")
    assert avail["vm1"]["probes_failed"] == 0  # live-migrated to the other node and back
    assert avail["web-clone"]["probes_failed"] == 0
    state = lab.pacemaker.state()
    assert state.quorum and state.online == ["node1", "node2"]
    assert lab.pacemaker.locations() == {"vm1": ["node1"], "web": ["node2"], "web-clone": ["node1", "node2"]}
    assert cau_leftovers(lab) == NOTHING_LEFT
