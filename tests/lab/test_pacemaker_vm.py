"""An Updating Run of a Pacemaker cluster whose vm1 is a real virtual machine (`cau lab up
--pacemaker --vm-hosts`): an ocf:heartbeat:VirtualDomain resource with allow-migrate=true, so
the `pacemaker` provider's drain and failback of node1 are real QEMU live migrations that
Pacemaker runs (virsh migrate on the source), and the guest's answer shows whether it kept its
state (its boot id, and a request counter in its RAM).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cau_lab import Lab
from tests.lab.support import (
    NOTHING_LEFT,
    START,
    availability,
    cau_leftovers,
    run_json,
    switch_over_failures,
    updated_and_restarted,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]

# VirtualDomain's log lines (in pacemaker.log, on the source host) of each live migration
MIGRATED = re.compile(r"^(\S+ \S+ [\d:.]+) .*VirtualDomain\(vm1\).*vm1: live migration to (\S+) succeeded")
STARTED = re.compile(r"^(\S+ \S+ [\d:.]+) .*VirtualDomain\(vm1\).*vm1: Starting live migration to (\S+) ")
TOOK = re.compile(r"vm1 migrate_to \(.*execution time ([\d.]+m?s)\)")


def migration_log(lab: Lab) -> dict[str, list[str]]:
    """Each host's log lines of vm1's live migrations (started, its time, succeeded), so far."""
    out = {}
    for node in lab.nodes:
        text = lab.exec(node, "cat /var/log/pacemaker/pacemaker.log 2>/dev/null").stdout
        out[node] = [
            line
            for line in text.splitlines()
            if MIGRATED.search(line) or STARTED.search(line) or TOOK.search(line)
        ]
    return out


def test_a_live_run_moves_the_real_vm1_away_and_back_live_with_its_state(
    clean_pcmk_vm_lab: Lab, tmp_path: Path
) -> None:
    lab = clean_pcmk_vm_lab
    pm = lab.pacemaker
    boots = {n: lab.boot_id(n) for n in lab.nodes}
    assert pm.locations() == START
    assert lab.guest_locations() == {"vm1": {"node1": "running"}}
    before = lab.guest_answer("vm1")
    log_before = migration_log(lab)
    jobs_before = lab.outgoing_migrations()

    code, report, err = run_json(lab, tmp_path)
    assert code == 0, err
    assert report["status"] == "Succeeded", report.get("message")
    updated_and_restarted(lab, boots)

    # the guest was live-migrated, never restarted: the same boot, its counter went on
    after = lab.guest_answer("vm1")
    trouble = lab.guest_kernel_trouble()
    assert trouble == [], "vm1's kernel broke:\n" + "\n".join(trouble)
    assert after.boot == before.boot, f"vm1 restarted: boot {before.boot} -> {after.boot}"
    assert after.count > before.count, f"vm1's counter went back: {before.count} -> {after.count}"
    # failback immediate: back on node1 (and nowhere else: the domain is transient)
    assert pm.locations() == START
    assert lab.guest_locations() == {"vm1": {"node1": "running"}}
    assert cau_leftovers(lab) == NOTHING_LEFT

    # vm1's live migrations during the run, from VirtualDomain's log on each source host
    new = {n: lines[len(log_before[n]) :] for n, lines in migration_log(lab).items()}
    moves = [(n, m.group(2)) for n, lines in new.items() for line in lines if (m := MIGRATED.search(line))]
    print("\nvm1's live migrations (source -> target), VirtualDomain's log:")
    for node, lines in new.items():
        for line in lines:
            print(f"  {node}: {line[:200]}")
    outages = [o for o in report["outages"] if o["role"] == "vm1" and o["source"] == "probe"]
    print("vm1's outages (cau's 50 ms probe):")
    for o in outages:
        steps = ", ".join(f"{d['node']}/{d['step']}" for d in o["during"]) or "between steps"
        print(
            f"  {o['started']} {o['seconds']:.3f} s, {o['failed_checks']} failed: {steps} {o['errors'][:2]}"
        )
    # away from node1 before its update, back after it (a node that was not vm1's moved nothing)
    assert len(moves) == 2 and moves[0][0] == "node1" and moves[-1][1] == "node1", moves
    # libvirt's own figures of each, from its job-completed event on the source host
    jobs = [j for j in lab.outgoing_migrations() if j not in jobs_before and j.guest == "vm1"]
    print(
        "libvirt's figures: "
        + ", ".join(f"{j.node} {j.elapsed_ms} ms, downtime {j.downtime_ms} ms" for j in jobs)
    )
    assert [j.node for j in jobs] == [source for source, _ in moves], jobs
    # each live migration of vm1 is at most one outage of its probe: a connection attempt that
    # reaches the guest while it is paused at the switch-over waits for TCP's SYN retransmit (1 s)
    assert len(outages) <= len(moves), outages
    failed = sorted([o["failed_checks"] for o in outages] + [0] * (len(moves) - len(outages)))
    # no more failed probes than the switch-overs explain (QEMU's downtime, 10-160 ms here under
    # TCG on 2 cores, over its 50 ms limit at times: 0-3 each)
    assert sum(failed) <= sum(switch_over_failures(j.downtime_ms) for j in jobs), (failed, jobs)
    avail = availability(report)
    assert avail["vm1"]["measured"] == "probe" and avail["vm1"]["probes_sent"] > 100
    assert avail["vm1"]["probes_failed"] == sum(failed)
    assert avail["web-clone"]["probes_failed"] == 0  # a clone instance elsewhere always answered
